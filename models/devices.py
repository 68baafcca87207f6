"""DMA-capable device models: they see only IOVAs and an IOMMU's translation door.

A DMA is split at translation boundaries exactly as an IO bridge would: each
chunk is translated (``iommu.translate``), then read or written at the
physical address in the memory model under the device's name, so the memory's
access log shows who touched what. A faulting chunk is aborted (§6.6): nothing
of it reaches memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.arch import Access
from models.memory import Memory
from models.transaction import Request, Response

PAGE = 4096


@dataclass
class DmaStats:
    dmas: int = 0
    bytes_ok: int = 0
    translations: int = 0
    aborted: int = 0
    faults: list = field(default_factory=list)  # (iova, Response)


class DmaError(Exception):
    def __init__(self, device: str, iova: int, response: Response):
        super().__init__(f"{device}: DMA at iova {iova:#x} aborted: {response}")
        self.iova, self.response = iova, response


class DmaDevice:
    """A bus-mastering device with one device_id (and optionally a PASID)."""

    def __init__(self, name: str, device_id: int, iommu, memory: Memory, *,
                 process_id: int | None = None, max_request: int = PAGE):
        if max_request < 1 or max_request & (max_request - 1) or max_request > PAGE:
            raise ValueError(f"max_request must be a power of two up to {PAGE}, "
                             f"not {max_request!r}")
        self.name, self.device_id, self.iommu, self.memory = name, device_id, iommu, memory
        self.process_id = process_id
        # Largest DMA request the device issues (a PCIe device's max payload / read request
        # size): every request is translated on its own, so it sets translations per byte.
        self.max_request = max_request
        self.stats = DmaStats()
        self._tag = 0

    def _translate(self, iova: int, access: Access) -> Response:
        self._tag = (self._tag + 1) & 0xFF
        req = Request(device_id=self.device_id, iova=iova, access=access,
                      process_id=self.process_id or 0, pv=self.process_id is not None,
                      tag=self._tag)
        self.stats.translations += 1
        return self.iommu.translate(req)

    def _chunks(self, iova: int, length: int, access: Access):
        """Yield (iova, spa, n) per translated chunk; raise DmaError on the first fault."""
        done = 0
        while done < length:
            cur = iova + done
            resp = self._translate(cur, access)
            if not resp.ok:
                self.stats.aborted += 1
                self.stats.faults.append((cur, resp))
                raise DmaError(self.name, cur, resp)
            room = resp.page_size - (cur & (resp.page_size - 1))
            n = min(length - done, room, self.max_request - (cur & (self.max_request - 1)))
            yield cur, resp.spa, n
            done += n

    def dma_write(self, iova: int, data: bytes) -> None:
        self.stats.dmas += 1
        offset = 0
        for _, spa, n in self._chunks(iova, len(data), Access.WRITE):
            self.memory.write(spa, data[offset : offset + n], who=self.name)
            offset += n
            self.stats.bytes_ok += n

    def dma_read(self, iova: int, length: int) -> bytes:
        self.stats.dmas += 1
        out = bytearray()
        for _, spa, n in self._chunks(iova, length, Access.READ):
            out += self.memory.read(spa, n, who=self.name)
            self.stats.bytes_ok += n
        return bytes(out)

    def try_dma_write(self, iova: int, data: bytes) -> bool:
        try:
            self.dma_write(iova, data)
            return True
        except DmaError:
            return False

    def try_dma_read(self, iova: int, length: int) -> bytes | None:
        try:
            return self.dma_read(iova, length)
        except DmaError:
            return None


class Nic(DmaDevice):
    """A network card that receives packets into a ring of buffers."""

    def receive(self, buffers: list[tuple[int, int]], packets: list[bytes]) -> int:
        """DMA each packet into the next buffer (iova, size); returns packets delivered."""
        delivered = 0
        for i, pkt in enumerate(packets):
            iova, size = buffers[i % len(buffers)]
            if self.try_dma_write(iova, pkt[:size]):
                delivered += 1
        return delivered


class RogueDevice(DmaDevice):
    """A buggy or malicious device: DMAs wherever it is told, granted or not."""

    def probe(self, iovas: list[int], write: bool = True) -> int:
        """Try each address; returns how many accesses got through."""
        ok = 0
        for iova in iovas:
            if write:
                ok += self.try_dma_write(iova, b"\xde\xad\xbe\xef")
            else:
                ok += self.try_dma_read(iova, 4) is not None
        return ok


# --------------------------------------------------------------------------- #
# Devices of the scenarios (sim/scenarios)
# --------------------------------------------------------------------------- #
def fill_pattern(seed: int, length: int) -> bytes:
    """Deterministic bytes that differ per ``seed``: what a device writes, so that the
    receiver can check every byte landed where it belongs."""
    block = seed.to_bytes(8, "little") + bytes(range(248))
    return (block * (length // len(block) + 1))[:length]


class StreamNic(Nic):
    """A NIC that writes a byte stream into its receive descriptors, packet by packet.

    ``segments`` is the descriptor list, ``(address, length)`` in the device's address
    space (IOVAs; physical addresses when the IOMMU passes it through). Each packet of
    up to ``mtu`` bytes is written to the current descriptor and continues in the next
    one when it runs out, as a scatter-gather NIC does.
    """

    def receive_stream(self, segments: list[tuple[int, int]], data: bytes, mtu: int) -> int:
        """Returns the bytes written; stops at the first aborted DMA."""
        seg, seg_off, done = 0, 0, 0
        while done < len(data) and seg < len(segments):
            packet = data[done : done + mtu]
            pos = 0
            while pos < len(packet) and seg < len(segments):
                addr, length = segments[seg]
                n = min(len(packet) - pos, length - seg_off)
                if not self.try_dma_write(addr + seg_off, packet[pos : pos + n]):
                    return done + pos
                pos, seg_off = pos + n, seg_off + n
                if seg_off == length:
                    seg, seg_off = seg + 1, 0
            done += pos
        return done


class Camera(DmaDevice):
    """A camera that writes each frame line by line into a buffer (one DMA per line)."""

    def __init__(self, *args, width: int, height: int, bytes_per_pixel: int = 2, **kw):
        super().__init__(*args, **kw)
        if width < 1 or height < 1 or bytes_per_pixel < 1:
            raise ValueError(f"frame {width}x{height}x{bytes_per_pixel} must be positive")
        self.width, self.height, self.bytes_per_pixel = width, height, bytes_per_pixel

    @property
    def line_bytes(self) -> int:
        return self.width * self.bytes_per_pixel

    @property
    def frame_bytes(self) -> int:
        return self.line_bytes * self.height

    def line(self, frame: int, y: int) -> bytes:
        return fill_pattern(frame << 16 | y, self.line_bytes)

    def capture(self, frame: int, buffer_iova: int) -> bool:
        """Stream one frame; False if a line's DMA was aborted (the rest is dropped)."""
        for y in range(self.height):
            if not self.try_dma_write(buffer_iova + y * self.line_bytes, self.line(frame, y)):
                return False
        return True


class SmartNic(DmaDevice):
    """A SmartNIC running an offloaded packet filter.

    It reads fixed-size packet slots from an input ring, runs ``verdict(packet)`` on
    each, copies the packets it passes to an output ring and finally writes two
    little-endian counters (passed, dropped) to a stats block. Every access is a DMA
    through the IOMMU, so a filter program that strays is stopped there.
    """

    def __init__(self, *args, verdict, **kw):
        super().__init__(*args, **kw)
        self.verdict = verdict
        self.passed = self.dropped = 0

    def run_filter(self, in_ring: int, out_ring: int, stats: int, slot: int, count: int) -> int:
        """Filter ``count`` packets; returns how many slots could not be read."""
        unreadable = 0
        for i in range(count):
            packet = self.try_dma_read(in_ring + i * slot, slot)
            if packet is None:
                unreadable += 1
                continue
            if self.verdict(packet):
                if self.try_dma_write(out_ring + self.passed * slot, packet):
                    self.passed += 1
            else:
                self.dropped += 1
        self.try_dma_write(stats, self.passed.to_bytes(8, "little")
                           + self.dropped.to_bytes(8, "little"))
        return unreadable


class RingNic(DmaDevice):
    """A NIC with registers: software posts receive buffers, the NIC fills them and
    raises its interrupt.

    Registers (8 bytes each, at ``offset`` from the NIC's MMIO base): ``RX_ADDR`` and
    ``RX_LEN`` describe the next buffer, a write to ``RX_POST`` queues it. ``irq`` is
    called with the device after each packet delivered (a wired interrupt line).
    """

    RX_ADDR, RX_LEN, RX_POST, RX_DONE = 0x00, 0x08, 0x10, 0x18
    MMIO_SIZE = PAGE

    def __init__(self, *args, irq=None, **kw):
        super().__init__(*args, **kw)
        self.irq = irq
        self.regs = {self.RX_ADDR: 0, self.RX_LEN: 0, self.RX_DONE: 0}
        self.posted: list[tuple[int, int]] = []
        self.completed: list[tuple[int, int]] = []  # (buffer address, bytes) per packet
        self.dropped = 0

    def mmio_write(self, offset: int, value: int) -> None:
        if offset == self.RX_POST:
            self.posted.append((self.regs[self.RX_ADDR], self.regs[self.RX_LEN]))
        elif offset in self.regs:
            self.regs[offset] = value

    def mmio_read(self, offset: int) -> int:
        return self.regs.get(offset, 0)

    def wire_receive(self, packet: bytes) -> bool:
        """A packet arrives from the wire: DMA it to the oldest posted buffer."""
        if not self.posted:
            self.dropped += 1
            return False
        addr, length = self.posted.pop(0)
        if len(packet) > length or not self.try_dma_write(addr, packet):
            self.dropped += 1
            return False
        self.completed.append((addr, len(packet)))
        self.regs[self.RX_DONE] += 1
        if self.irq:
            self.irq(self)
        return True
