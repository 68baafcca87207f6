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
                 process_id: int | None = None):
        self.name, self.device_id, self.iommu, self.memory = name, device_id, iommu, memory
        self.process_id = process_id
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
            n = min(length - done, room, PAGE - (cur & (PAGE - 1)))
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
