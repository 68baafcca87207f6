"""Test helpers for models/iommu.py: a fake translation engine and queue set-up helpers.

The fake stands in for ``models.translate.TranslationEngine``: it records every call
and answers ``translate`` from a script of outcomes, so that register, queue,
interrupt and HPM behaviour is tested apart from address translation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models import arch
from models.arch import QueueBase, Reg
from models.iommu import IOMMU
from models.memory import Memory
from models.transaction import Request, Response, Status

CQ_BASE = 0x8010_0000
FQ_BASE = 0x8020_0000
MSI_TARGET = 0x8030_0000


@dataclass
class FakeOutcome:
    """Duck-typed ``models.translate.Outcome``."""

    response: Response
    record: arch.FaultRecord | None = None
    events: list[tuple] = field(default_factory=list)


class FakeEngine:
    """Records calls; ``translate`` pops scripted outcomes (default: identity success)."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.outcomes: list[FakeOutcome] = []
        self.stats: dict = {}

    def translate(self, request: Request, ddtp: int, fctl: int):
        self.calls.append(("translate", request, ddtp, fctl))
        if self.outcomes:
            return self.outcomes.pop(0)
        return FakeOutcome(Response(Status.SUCCESS, tag=request.tag, spa=request.iova,
                                    r=True, w=True))

    def iotinval_vma(self, gv, av, pscv, gscid, pscid, addr):
        self.calls.append(("iotinval_vma", gv, av, pscv, gscid, pscid, addr))

    def iotinval_gvma(self, gv, av, gscid, addr):
        self.calls.append(("iotinval_gvma", gv, av, gscid, addr))

    def iodir_inval_ddt(self, dv, did):
        self.calls.append(("iodir_inval_ddt", dv, did))

    def iodir_inval_pdt(self, did, pid):
        self.calls.append(("iodir_inval_pdt", did, pid))

    def flush_all(self):
        self.calls.append(("flush_all",))

    def invalidations(self) -> list[tuple]:
        return [c for c in self.calls if c[0] != "translate"]


def make_iommu(**kwargs) -> tuple[IOMMU, Memory, FakeEngine]:
    memory = Memory()
    engine = FakeEngine()
    return IOMMU(memory, engine=engine, **kwargs), memory, engine


def caps(**kwargs) -> int:
    """capabilities_value plus the bits it has no keyword for (nl, s, qosid, sv32x4)."""
    extra = {"nl": arch.Cap.NL, "s": arch.Cap.S, "qosid": arch.Cap.QOSID,
             "sv32x4": arch.Cap.SV32X4}
    value = 0
    for name, cap in extra.items():
        if kwargs.pop(name, False):
            value |= cap.mask
    return arch.capabilities_value(**kwargs) | value


def queue_base(addr: int, log2sz_1: int) -> int:
    return QueueBase.PPN.put(addr >> 12) | QueueBase.LOG2SZ_1.put(log2sz_1)


def enable_cq(iommu: IOMMU, base: int = CQ_BASE, log2sz_1: int = 3, cie: bool = False) -> None:
    """Software bring-up order (§8.8): cqb, cqt = 0, cqen (+ cie)."""
    iommu.write_register(Reg.CQB, 8, queue_base(base, log2sz_1))
    iommu.write_register(Reg.CQT, 4, 0)
    iommu.write_register(Reg.CQCSR, 4, arch.Cqcsr.CQEN.mask | arch.Cqcsr.CIE.put(int(cie)))
    assert arch.Cqcsr.CQON.get(iommu.read_register(Reg.CQCSR, 4))


def enable_fq(iommu: IOMMU, base: int = FQ_BASE, log2sz_1: int = 3, fie: bool = False) -> None:
    iommu.write_register(Reg.FQB, 8, queue_base(base, log2sz_1))
    iommu.write_register(Reg.FQH, 4, 0)
    iommu.write_register(Reg.FQCSR, 4, arch.Fqcsr.FQEN.mask | arch.Fqcsr.FIE.put(int(fie)))
    assert arch.Fqcsr.FQON.get(iommu.read_register(Reg.FQCSR, 4))


def submit(iommu: IOMMU, memory: Memory, *commands: int) -> None:
    """Write commands at cqt (little-endian dwords) and advance cqt past them."""
    base = QueueBase.PPN.get(iommu.read_register(Reg.CQB, 8)) << 12
    entries = 1 << (QueueBase.LOG2SZ_1.get(iommu.read_register(Reg.CQB, 8)) + 1)
    tail = iommu.read_register(Reg.CQT, 4)
    for command in commands:
        memory.write(base + tail * 16, arch.command_bytes(command), "os")
        tail = (tail + 1) % entries
    iommu.write_register(Reg.CQT, 4, tail)


def fault(cause: int = arch.Cause.READ_PAGE_FAULT, *, tag: int = 0, device_id: int = 0x12,
          iova: int = 0x4000, record: bool = True) -> FakeOutcome:
    """A faulting outcome whose record (if any) reports an Untranslated read."""
    rec = arch.FaultRecord(cause=cause, ttyp=arch.Ttyp.UNTRANSLATED_READ, device_id=device_id,
                           iotval=iova) if record else None
    return FakeOutcome(Response.fault(cause, tag=tag), rec)


def cqcsr(iommu: IOMMU) -> int:
    return iommu.read_register(Reg.CQCSR, 4)


def fqcsr(iommu: IOMMU) -> int:
    return iommu.read_register(Reg.FQCSR, 4)


def ipsr(iommu: IOMMU) -> int:
    return iommu.read_register(Reg.IPSR, 4)
