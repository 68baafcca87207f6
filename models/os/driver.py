"""An OS IOMMU driver: what Linux's riscv-iommu driver does, as a model.

It talks to an IOMMU only through the three doors (registers, memory, and, for
the reference model, ``process_commands``), so the same driver programs the
Python model and the RTL under cocotb.

    driver = IommuDriver(iommu, memory)
    driver.init()                          # probe, allocate DDT/CQ/FQ, enable
    dom = driver.create_domain()           # an I/O address space (PSCID + Sv39/48/57 table)
    driver.attach(0x10, dom)               # device 0x10 translates through dom
    iova = driver.map_sg(dom, frames)      # scattered frames -> one contiguous IOVA range
    driver.unmap(dom, iova, length)        # strict: IOTINVAL.VMA + IOFENCE.C before returning
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models import arch
from models.arch import Cqcsr, DdtpMode, DeviceContext, Fqcsr, Reg, Tc
from models.memory import FrameAllocator, Memory
from models.pagetable import DeviceDirectory, PageTable

PAGE = arch.PAGE_SIZE


class DriverError(Exception):
    """The IOMMU did not behave as the driver needs (a queue error, a timeout)."""


@dataclass
class Domain:
    """An I/O virtual address space: one first-stage table tagged by a PSCID."""

    pscid: int
    table: PageTable
    iova_base: int = 0x1000_0000
    next_iova: int = 0x1000_0000
    devices: set = field(default_factory=set)

    def alloc_iova(self, length: int, align: int = PAGE) -> int:
        iova = -(-self.next_iova // align) * align
        self.next_iova = iova + -(-length // PAGE) * PAGE
        return iova


class IommuDriver:
    def __init__(self, iommu, memory: Memory, alloc: FrameAllocator | None = None, *,
                 ddt_mode: DdtpMode = DdtpMode.LVL2, queue_log2: int = 6,
                 scheme: arch.Scheme = arch.SV39, deferred: bool = False):
        self.iommu, self.memory = iommu, memory
        self.alloc = alloc or FrameAllocator(memory, base=0x4000_0000, size=1 << 28)
        self.ddt_mode, self.queue_log2, self.scheme = ddt_mode, queue_log2, scheme
        self.deferred = deferred  # batch invalidations until flush() instead of per unmap
        self.pending_invalidations: list[int] = []
        self.domains: list[Domain] = []
        self.faults: list[arch.FaultRecord] = []
        self.commands_sent = 0
        self.fences = 0

    # ----------------------------------------------------------- registers
    def rd(self, reg: int, size: int | None = None) -> int:
        return self.iommu.read_register(reg, size or arch.REG_SIZE.get(reg, 8))

    def wr(self, reg: int, value: int, size: int | None = None) -> None:
        self.iommu.write_register(reg, size or arch.REG_SIZE.get(reg, 8), value)

    # ------------------------------------------------------------ bring-up
    def init(self) -> None:
        """Probe, build the DDT and the queues, then turn translation on."""
        self.capabilities = self.rd(Reg.CAPABILITIES)
        if arch.Cap.VERSION.get(self.capabilities) != 0x10:
            raise DriverError(f"unsupported IOMMU version {self.capabilities & 0xFF:#x}")
        if not arch.Cap.SV39.get(self.capabilities):
            raise DriverError("IOMMU lacks Sv39 first-stage translation")
        self.extended_dc = bool(arch.Cap.MSI_FLAT.get(self.capabilities))
        self.ddt = DeviceDirectory(self.memory, self.alloc, self.ddt_mode, self.extended_dc)

        entries = 1 << self.queue_log2
        self.cq_base = self.alloc.alloc(max(PAGE, entries * arch.COMMAND_SIZE))
        self.fq_base = self.alloc.alloc(max(PAGE, entries * arch.FAULT_RECORD_SIZE))
        self.cq_entries = self.fq_entries = entries
        log2sz_1 = self.queue_log2 - 1
        self.wr(Reg.CQB, arch.QueueBase.PPN.put(self.cq_base >> 12) | log2sz_1)
        self.wr(Reg.CQT, 0, 4)
        self.wr(Reg.CQCSR, Cqcsr.CQEN.put(1), 4)
        self.wr(Reg.FQB, arch.QueueBase.PPN.put(self.fq_base >> 12) | log2sz_1)
        self.wr(Reg.FQH, 0, 4)
        self.wr(Reg.FQCSR, Fqcsr.FQEN.put(1), 4)
        if not Cqcsr.CQON.get(self.rd(Reg.CQCSR, 4)) or not Fqcsr.FQON.get(self.rd(Reg.FQCSR, 4)):
            raise DriverError("command or fault queue did not turn on")
        self.wr(Reg.DDTP, self.ddt.ddtp())
        if arch.Ddtp.IOMMU_MODE.get(self.rd(Reg.DDTP)) != self.ddt_mode:
            raise DriverError(f"IOMMU refused DDT mode {self.ddt_mode.name}")

    # ------------------------------------------------------------- domains
    def create_domain(self, scheme: arch.Scheme | None = None) -> Domain:
        pscid = len(self.domains) + 1
        table = PageTable(self.memory, self.alloc, scheme or self.scheme)
        dom = Domain(pscid, table)
        self.domains.append(dom)
        return dom

    def attach(self, device_id: int, dom: Domain, *, dtf: bool = False, sade: bool = False):
        """Point a device's context at a domain (§3) and make the IOMMU forget the old one."""
        dc = DeviceContext(
            tc=Tc.V.put(1) | Tc.DTF.put(int(dtf)) | Tc.SADE.put(int(sade)),
            ta=arch.Ta.PSCID.put(dom.pscid),
            fsc=dom.table.atp(),
        )
        self.ddt.install(device_id, dc)
        dom.devices.add(device_id)
        # §10.3: a changed leaf DDT entry needs IODIR.INVAL_DDT, then the old PSCID's entries.
        self.submit([arch.iodir(arch.IodirFunc.INVAL_DDT, dv=True, did=device_id),
                     arch.iotinval(arch.IotinvalFunc.VMA, pscv=True, pscid=dom.pscid)],
                    fence=True)

    # ------------------------------------------------------------ mappings
    def map(self, dom: Domain, iova: int, pa: int, size: int = PAGE, **perms) -> None:
        dom.table.map(iova, pa, size, **perms)

    def map_sg(self, dom: Domain, frames: list[int], **perms) -> int:
        """Map scattered 4 KiB frames as one contiguous IOVA range (zero-copy DMA)."""
        iova = dom.alloc_iova(len(frames) * PAGE)
        dom.table.map_scattered(iova, frames, **perms)
        return iova

    def map_buffer(self, dom: Domain, length: int, page: int = PAGE, **perms) -> tuple[int, int]:
        """Allocate physically contiguous memory and map it with ``page``-sized leaves."""
        pa = self.alloc.alloc(-(-length // page) * page, align=page)
        iova = dom.alloc_iova(length, align=page)
        dom.table.map_range(iova, pa, -(-length // page) * page, size=page, **perms)
        return iova, pa

    def unmap(self, dom: Domain, iova: int, length: int) -> None:
        """Remove mappings; strict mode invalidates and fences before returning."""
        mapped = sorted(v for v in dom.table.mappings if iova <= v < iova + length)
        for va in mapped:
            dom.table.unmap(va)
            self.pending_invalidations.append(
                arch.iotinval(arch.IotinvalFunc.VMA, av=True, pscv=True, pscid=dom.pscid,
                              addr=va))
        if not self.deferred:
            self.flush()

    def flush(self) -> None:
        """Send the batched invalidations followed by one IOFENCE.C."""
        if self.pending_invalidations:
            cmds, self.pending_invalidations = self.pending_invalidations, []
            self.submit(cmds, fence=True)

    # ------------------------------------------------------ command queue
    def submit(self, commands: list[int], fence: bool = False) -> None:
        if fence:
            commands = commands + [arch.iofence_c()]
            self.fences += 1
        n = self.cq_entries
        for cmd in commands:
            tail = self.rd(Reg.CQT, 4)
            if (tail + 1) % n == self.rd(Reg.CQH, 4):
                self._run_queue()
                if (tail + 1) % n == self.rd(Reg.CQH, 4):
                    raise DriverError("command queue full and not draining")
            self.memory.write(self.cq_base + tail * arch.COMMAND_SIZE, arch.command_bytes(cmd),
                              who="os")
            self.wr(Reg.CQT, (tail + 1) % n, 4)
            self.commands_sent += 1
        self._run_queue()

    def _run_queue(self) -> None:
        if hasattr(self.iommu, "process_commands"):
            self.iommu.process_commands()
        csr = self.rd(Reg.CQCSR, 4)
        if Cqcsr.CMD_ILL.get(csr) or Cqcsr.CQMF.get(csr):
            raise DriverError(f"command queue stopped: cqcsr={csr:#x} at cqh={self.rd(Reg.CQH, 4)}")

    # -------------------------------------------------------- fault queue
    def drain_faults(self, handler=None) -> list[arch.FaultRecord]:
        """Read every new fault record, advance fqh, hand each to ``handler``."""
        got = []
        head, tail = self.rd(Reg.FQH, 4), self.rd(Reg.FQT, 4)
        while head != tail:
            raw = self.memory.read(self.fq_base + head * arch.FAULT_RECORD_SIZE,
                                   arch.FAULT_RECORD_SIZE, who="os")
            record = arch.FaultRecord.unpack(raw)
            got.append(record)
            if handler:
                handler(record)
            head = (head + 1) % self.fq_entries
        self.wr(Reg.FQH, head, 4)
        csr = self.rd(Reg.FQCSR, 4)
        if Fqcsr.FQOF.get(csr):
            self.wr(Reg.FQCSR, csr & (Fqcsr.FQEN.mask | Fqcsr.FIE.mask) | Fqcsr.FQOF.mask, 4)
        self.faults.extend(got)
        return got
