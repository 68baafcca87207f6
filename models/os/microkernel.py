"""A microkernel that runs device drivers in user space, fenced by capabilities and
the IOMMU.

The kernel owns all physical memory and every device. A user-space driver process
gets exactly what its device needs, as capabilities:

* ``mmio``: the device's register page (the kernel forwards checked loads and stores);
* ``dma``: receive/transmit buffers: frames the kernel allocates for the process and
  maps, and only those, into the device's own IOMMU domain;
* ``irq``: the device's interrupt, which the kernel turns into a message in the
  process's inbox. The IOMMU's fault records about the device become messages too.

Anything else the process tries, a register or frame it holds no capability for, is a
capability fault raised by the kernel; anything the device then tries outside its
buffers is stopped by the IOMMU (its domain maps nothing else).

The kernel programs the IOMMU only through the OS driver (``models/os/driver.py``),
so it runs on any IOMMU backend.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from models import arch
from models.memory import FrameAllocator, Memory
from models.os.driver import Domain, IommuDriver

PAGE = arch.PAGE_SIZE


class CapabilityError(Exception):
    """A process used a register, frame or device it holds no capability for."""


@dataclass(frozen=True)
class Capability:
    kind: str  # "mmio", "dma" or "irq"
    device_id: int
    base: int = 0  # mmio: physical register base; dma: IOVA the device uses
    size: int = 0
    frames: tuple = ()  # dma: the physical frames behind the IOVA range


@dataclass(frozen=True)
class Message:
    kind: str  # "irq" or "fault"
    device_id: int
    detail: object = None  # fault: the fault record


@dataclass
class Process:
    name: str
    caps: list = field(default_factory=list)
    inbox: deque = field(default_factory=deque)

    def holds(self, kind: str, device_id: int) -> list[Capability]:
        return [c for c in self.caps if c.kind == kind and c.device_id == device_id]


class Microkernel:
    def __init__(self, driver: IommuDriver, memory: Memory, frames: FrameAllocator):
        self.driver, self.memory, self.frames = driver, memory, frames
        self.devices: dict[int, tuple[object, int, Domain]] = {}  # id -> (device, mmio, domain)
        self.processes: list[Process] = []
        self.capability_faults: list[str] = []
        self.messages_sent = 0
        self.iommu_faults: list[arch.FaultRecord] = []

    # ------------------------------------------------------------- setup
    def register_device(self, device, mmio_base: int) -> None:
        """Take a device: its own IOMMU domain, empty until buffers are granted."""
        dom = self.driver.create_domain()
        self.driver.attach(device.device_id, dom)
        self.devices[device.device_id] = (device, mmio_base, dom)
        device.irq = self._interrupt

    def spawn(self, name: str) -> Process:
        proc = Process(name)
        self.processes.append(proc)
        return proc

    def _device(self, device_id: int):
        if device_id not in self.devices:
            raise CapabilityError(f"no device {device_id:#x}")
        return self.devices[device_id]

    # -------------------------------------------------------------- grants
    def grant_mmio(self, proc: Process, device_id: int) -> Capability:
        device, base, _ = self._device(device_id)
        cap = Capability("mmio", device_id, base, device.MMIO_SIZE)
        proc.caps.append(cap)
        return cap

    def grant_dma_buffer(self, proc: Process, device_id: int, pages: int = 1) -> Capability:
        """New frames for the process, mapped for its device (and nothing else is)."""
        _, _, dom = self._device(device_id)
        frames = tuple(self.frames.alloc() for _ in range(pages))
        iova = self.driver.map_sg(dom, list(frames), r=True, w=True)
        cap = Capability("dma", device_id, iova, pages * PAGE, frames)
        proc.caps.append(cap)
        return cap

    def grant_irq(self, proc: Process, device_id: int) -> Capability:
        self._device(device_id)
        cap = Capability("irq", device_id)
        proc.caps.append(cap)
        return cap

    def granted_pages(self, proc: Process) -> int:
        return sum(-(-c.size // PAGE) for c in proc.caps if c.kind in ("mmio", "dma"))

    # ------------------------------------------------------------ syscalls
    def _fault(self, proc: Process, what: str) -> CapabilityError:
        self.capability_faults.append(f"{proc.name}: {what}")
        return CapabilityError(what)

    def _mmio_cap(self, proc: Process, addr: int) -> tuple[object, int]:
        for cap in proc.caps:
            if cap.kind == "mmio" and cap.base <= addr < cap.base + cap.size:
                device = self.devices[cap.device_id][0]
                return device, addr - cap.base
        raise self._fault(proc, f"MMIO access at {addr:#x} without a capability")

    def mmio_write(self, proc: Process, addr: int, value: int) -> None:
        device, offset = self._mmio_cap(proc, addr)
        device.mmio_write(offset, value)

    def mmio_read(self, proc: Process, addr: int) -> int:
        device, offset = self._mmio_cap(proc, addr)
        return device.mmio_read(offset)

    def _dma_cap(self, proc: Process, iova: int, length: int) -> Capability:
        for cap in proc.caps:
            if cap.kind == "dma" and cap.base <= iova and iova + length <= cap.base + cap.size:
                return cap
        raise self._fault(proc, f"buffer access at {iova:#x} (+{length}) without a capability")

    def read_buffer(self, proc: Process, iova: int, length: int) -> bytes:
        """The process reads its DMA buffer (its CPU mapping of the same frames)."""
        cap = self._dma_cap(proc, iova, length)
        out = bytearray()
        while length:
            off = iova - cap.base
            n = min(length, PAGE - off % PAGE)
            out += self.memory.read(cap.frames[off // PAGE] + off % PAGE, n, who=proc.name)
            iova, length = iova + n, length - n
        return bytes(out)

    def map_frame(self, proc: Process, device_id: int, frame: int) -> int:
        """Ask the kernel to map a physical frame for a device: only frames the process
        already holds are mappable, so a driver cannot hand its device someone else's."""
        if not proc.holds("mmio", device_id):
            raise self._fault(proc, f"map for device {device_id:#x} it does not drive")
        if not any(frame in c.frames for c in proc.caps if c.kind == "dma"):
            raise self._fault(proc, f"map of frame {frame:#x} it does not own")
        _, _, dom = self._device(device_id)
        return self.driver.map_sg(dom, [frame], r=True, w=True)

    # -------------------------------------------------------- interrupts
    def _owner(self, kind: str, device_id: int) -> Process | None:
        return next((p for p in self.processes if p.holds(kind, device_id)), None)

    def _send(self, proc: Process | None, message: Message) -> None:
        if proc is not None:
            proc.inbox.append(message)
            self.messages_sent += 1

    def _interrupt(self, device) -> None:
        self._send(self._owner("irq", device.device_id), Message("irq", device.device_id))

    def service_iommu(self) -> int:
        """Fault-queue interrupt handler: each record becomes a message to the process
        that drives the faulting device. Returns the records handled."""
        records = self.driver.drain_faults()
        for record in records:
            self.iommu_faults.append(record)
            self._send(self._owner("irq", record.device_id),
                       Message("fault", record.device_id, record))
        return len(records)
