"""What the scenarios share: booting a platform, counting IOMMU events, a cycle model.

Everything here reaches the IOMMU only through its doors, so it works on any backend:

* ``boot`` makes the memory, gets the IOMMU from ``make_iommu`` and brings it up with
  the OS driver (``models/os/driver.py``).
* ``Counters`` reads IOTLB misses, page-table walks and DDT walks from the HPM
  counters (iohpmctr / iohpmevt, §8.10, programmed through the registers) and counts
  the walker's memory reads in the memory's access log: reads by the IOMMU that land
  in a page-table frame of one of the driver's domains. Without HPM (a backend that
  does not advertise it) the misses are estimated as the walks seen in memory: each
  walk reads its root table exactly once.
* ``CycleModel`` turns those counts into cycles for the model backend, which has no
  clock of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import arch
from models.arch import HpmEvent, Hpmevt, Reg
from models.memory import FrameAllocator, Memory
from models.os.driver import IommuDriver

from . import make_iommu

PAGE = arch.PAGE_SIZE
MIB = 1 << 20


def size_text(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1024)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


@dataclass
class Platform:
    backend: str
    memory: Memory
    iommu: object
    driver: IommuDriver
    data_alloc: FrameAllocator  # frames for applications' and devices' buffers
    counters: Counters


def boot(backend: str, *, iotlb: int = 64, log: bool = True) -> Platform:
    """Memory, an IOMMU from the backend, the OS driver brought up, counters running."""
    memory = Memory(log=log)
    iommu = make_iommu(backend, memory, iotlb_entries=iotlb)
    driver = IommuDriver(iommu, memory, FrameAllocator(memory, base=0x4000_0000, size=1 << 28))
    driver.init()
    data_alloc = FrameAllocator(memory, base=0x1_0000_0000, size=1 << 36)
    return Platform(backend, memory, iommu, driver, data_alloc, Counters(driver))


def attach_bare(driver: IommuDriver, device_id: int) -> None:
    """Give a device a device context with translation off (fsc Bare, §3.1.3): its
    addresses are physical, as on a machine without an IOMMU in its path."""
    dc = arch.DeviceContext(tc=arch.Tc.V.put(1), ta=0, fsc=0)
    driver.ddt.install(device_id, dc)
    driver.submit([arch.iodir(arch.IodirFunc.INVAL_DDT, dv=True, did=device_id)], fence=True)


def flush_iotlb(driver: IommuDriver) -> None:
    """IOTINVAL.VMA for every address space, then IOFENCE.C: the next configuration a
    scenario measures starts with a cold IOTLB."""
    driver.submit([arch.iotinval(arch.IotinvalFunc.VMA)], fence=True)


# HPM counter index -> event counted
_EVENTS = {1: HpmEvent.TLB_MISS, 2: HpmEvent.S_VS_PT_WALK, 3: HpmEvent.DDT_WALK,
           4: HpmEvent.UNTRANSLATED_REQ}


@dataclass
class Sample:
    requests: int | None  # translation requests the IOMMU saw (HPM), None without HPM
    iotlb_misses: int
    walks: int  # first-stage walks (HPM), or walks seen in memory without HPM
    ddt_walks: int | None
    walker_reads: int  # IOMMU reads of page-table frames (access log)

    def __sub__(self, other: Sample) -> Sample:
        def d(a, b):
            return None if a is None or b is None else a - b
        return Sample(d(self.requests, other.requests), self.iotlb_misses - other.iotlb_misses,
                      self.walks - other.walks, d(self.ddt_walks, other.ddt_walks),
                      self.walker_reads - other.walker_reads)


class Counters:
    """IOMMU event counts, read through the registers and the memory log."""

    def __init__(self, driver: IommuDriver):
        self.driver, self.memory = driver, driver.memory
        caps = driver.rd(Reg.CAPABILITIES)
        self.hpm = bool(arch.Cap.HPM.get(caps))
        if self.hpm:
            driver.wr(Reg.IOCOUNTINH, 0, 4)
            for n, event in _EVENTS.items():
                driver.wr(arch.iohpmevt(n), Hpmevt.EVENT_ID.put(event))
            self.hpm = all(Hpmevt.EVENT_ID.get(driver.rd(arch.iohpmevt(n))) == event
                           for n, event in _EVENTS.items())
        self._scanned = 0
        self._reads = 0
        self._root_reads = 0

    def _scan_log(self) -> None:
        """Count the IOMMU's reads of page-table frames logged since the last scan."""
        tables, roots = set(), set()
        for dom in self.driver.domains:
            tables.update(t >> 12 for t in dom.table.tables)
            roots.add(dom.table.root >> 12)
        log = self.memory.log
        for rec in log[self._scanned:]:
            if rec.op == "R" and rec.who.startswith("iommu") and rec.addr >> 12 in tables:
                self._reads += 1
                self._root_reads += rec.addr >> 12 in roots
        self._scanned = len(log)

    def drop_log(self) -> None:
        """Count what the memory log holds, then empty it (long runs)."""
        self._scan_log()
        self.memory.log.clear()
        self._scanned = 0

    def sample(self) -> Sample:
        self._scan_log()
        if self.hpm:
            ctr = {n: self.driver.rd(arch.iohpmctr(n)) for n in _EVENTS}
            return Sample(ctr[4], ctr[1], ctr[2], ctr[3], self._reads)
        return Sample(None, self._root_reads, self._root_reads, None, self._reads)


@dataclass(frozen=True)
class CycleModel:
    """Cycles of a DMA stream on the model backend (which has no clock).

    The device keeps enough reads or writes in flight that memory latency is hidden for
    data; the IOMMU looks up one translation per cycle (DESIGN.md: hits pipelined,
    their 2-cycle latency hidden). So data and lookups are two pipelined stages and the
    slower sets the pace. A miss stalls the stream for its walk: one ``mem_latency``
    per page-table read, with ``walkers`` walks overlapping (the RTL's default 4).

        cycles = max(bytes / link_bytes_per_cycle, translations) +
                 walker_reads * mem_latency / walkers
    """

    link_bytes_per_cycle: int = 16  # e.g. PCIe Gen3 x8 ~ 8 GB/s at a 500 MHz IOMMU clock
    mem_latency: int = 40  # cycles per page-table read (80 ns of DRAM at 500 MHz)
    walkers: int = 4

    def cycles(self, nbytes: int, translations: int, walker_reads: int) -> float:
        return (max(nbytes / self.link_bytes_per_cycle, translations)
                + walker_reads * self.mem_latency / self.walkers)

    def describe(self) -> str:
        return (f"{self.link_bytes_per_cycle} B/cycle link, 1 lookup/cycle, "
                f"{self.mem_latency} cycles per walk read, {self.walkers} walks in flight")


def positive(**values) -> None:
    """Raise ValueError naming every parameter that is not >= 1."""
    bad = [f"{k}={v}" for k, v in values.items() if v < 1]
    if bad:
        raise ValueError(f"{', '.join(bad)}: must be >= 1")
