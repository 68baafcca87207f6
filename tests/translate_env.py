"""Test helpers for models/translate.py: a memory, a DDT and an engine at known addresses.

Tables live at addresses a reader can follow by hand: the frame allocator starts at
``SPA_BASE`` and hands out 4 KiB frames in order, so the DDT root (allocated first) is
at ``SPA_BASE`` and, with a 1LVL DDT, the DC of device d is at ``SPA_BASE + d * DC_SIZE``.
Guest structures (first-stage tables and PDTs behind a G-stage) are allocated in guest
physical space ``GPA_BASE..`` backed one to one by supervisor physical frames from
``GUEST_SPA``; ``Env.guest_memory`` installs the G-stage 1 GiB leaf GPA_BASE -> GUEST_SPA
that makes ``gpa_to_spa`` true.

Little helpers build raw entries (``leaf``, ``pointer``) for tests that write tables
by hand; the ``models.pagetable`` builders are used where the layout is not the point.
"""

from __future__ import annotations

from models import arch
from models.arch import (
    Access,
    AddrType,
    DdtpMode,
    DeviceContext,
    FaultRecord,
    Iohgatp,
    Priv,
    Pte,
    Tc,
)
from models.memory import AccessFault, FrameAllocator, Memory
from models.pagetable import DeviceDirectory, PageTable, ProcessDirectory
from models.transaction import Request
from models.translate import EngineConfig, Outcome, TranslationEngine

CAPS = arch.DEFAULT_CAPABILITIES  # MSI_FLAT=1: extended (64-byte) device contexts
BASE_CAPS = arch.capabilities_value(msi_flat=False)  # base (32-byte) device contexts
SPA_BASE = 0x1000_0000  # first frame of the supervisor-physical table allocator
DID = 0x5  # default device_id
GSCID = 0x7
PSCID = 0x42
GPA_BASE = 0x8000_0000  # guest structures live here (GPA) ...
GUEST_SPA = 0x1_4000_0000  # ... backed by this 1 GiB of SPA


def gpa_to_spa(gpa: int) -> int:
    return gpa - GPA_BASE + GUEST_SPA


def leaf(pa: int, *, r=1, w=1, x=0, u=1, g=0, a=1, d=1, pbmt=0, n=0, v=1) -> int:
    """A leaf PTE for physical page ``pa`` (§5.2)."""
    return (Pte.V.put(v) | Pte.R.put(r) | Pte.W.put(w) | Pte.X.put(x) | Pte.U.put(u)
            | Pte.G.put(g) | Pte.A.put(a) | Pte.D.put(d) | Pte.PBMT.put(pbmt) | Pte.N.put(n)
            | Pte.PPN.put(pa >> 12))


def pointer(table: int, v: int = 1) -> int:
    """A non-leaf PTE / DDTE / PDTE pointing at ``table`` (§2.4, §5.2)."""
    return Pte.V.put(v) | Pte.PPN.put(table >> 12)


def record(cause, ttyp, *, iova, iotval2=0, device_id=DID, pid=0, pv=False,
           priv=False) -> FaultRecord:
    """The fault record expected for a request (§6.2)."""
    return FaultRecord(cause=int(cause), ttyp=int(ttyp), device_id=device_id,
                       process_id=pid, pv=pv, priv=priv, iotval=iova, iotval2=iotval2)


class CasRefusingMemory(Memory):
    """Memory whose compare-and-swap (the A/D update) is refused at chosen addresses,
    while plain reads there still work: a store-only PMA violation."""

    def __init__(self):
        super().__init__()
        self.refuse_cas: set[int] = set()

    def cas64(self, addr, expected, new, who=""):
        if addr in self.refuse_cas:
            raise AccessFault(addr, 8, who)
        return super().cas64(addr, expected, new, who)


class Env:
    """One memory, one DDT, one engine; ``translate`` sends one request."""

    def __init__(self, caps: int = CAPS, *, mode: DdtpMode = DdtpMode.LVL1,
                 memory: Memory | None = None, fctl: int = 0, **cache_sizes):
        self.memory = memory if memory is not None else Memory()
        self.alloc = FrameAllocator(self.memory, base=SPA_BASE, size=0x1000_0000)
        self.guest_alloc = FrameAllocator(self.memory, base=GUEST_SPA, size=0x1000_0000)
        self.caps = caps
        self.extended = bool(arch.Cap.MSI_FLAT.get(caps))
        self.ddt = DeviceDirectory(self.memory, self.alloc, mode, self.extended)
        self.engine = TranslationEngine(self.memory, EngineConfig(capabilities=caps,
                                                                  **cache_sizes))
        self.fctl = fctl

    @property
    def ddtp(self) -> int:
        return self.ddt.ddtp()

    def install(self, dc: DeviceContext, device_id: int = DID) -> int:
        return self.ddt.install(device_id, dc)

    def translate(self, iova: int, access: Access = Access.READ, *, device_id: int = DID,
                  pid: int | None = None, priv: Priv = Priv.USER,
                  addr_type: AddrType = AddrType.UNTRANSLATED, ddtp: int | None = None,
                  engine: TranslationEngine | None = None) -> Outcome:
        request = Request(device_id=device_id, iova=iova, access=access,
                          process_id=pid or 0, pv=pid is not None, priv=priv,
                          addr_type=addr_type, tag=0x5A)
        engine = engine or self.engine
        return engine.translate(request, self.ddtp if ddtp is None else ddtp, self.fctl)

    # ----------------------------------------------------------- table builders
    def page_table(self, scheme=arch.SV39) -> PageTable:
        """A table in supervisor physical memory (host first stage, or a G-stage)."""
        return PageTable(self.memory, self.alloc, scheme)

    def guest_alloc_table(self, size: int, align: int) -> int:
        """Zeroed guest memory for guest-owned tables: returns its GPA."""
        return self.guest_alloc.alloc(size, align) - GUEST_SPA + GPA_BASE

    def guest_page_table(self, scheme=arch.SV39) -> PageTable:
        """A first-stage table owned by a guest: its addresses and PPNs are GPAs."""
        return PageTable(self.memory, self.alloc, scheme, to_phys=gpa_to_spa,
                         alloc_table=self.guest_alloc_table)

    def guest_pdt(self, mode) -> ProcessDirectory:
        return ProcessDirectory(self.memory, self.alloc, mode, to_phys=gpa_to_spa,
                                alloc_table=self.guest_alloc_table)

    def guest_memory(self, gs: PageTable) -> None:
        """G-stage leaf: GPA_BASE..+1 GiB -> GUEST_SPA (where guest tables live)."""
        gs.map(GPA_BASE, GUEST_SPA, 1 << 30, r=True, w=True, x=False, u=True)


def gs_atp(gs: PageTable, gscid: int = GSCID) -> int:
    """iohgatp for a G-stage table with ``gscid``."""
    return gs.atp() | Iohgatp.GSCID.put(gscid)


TC_V = Tc.V.mask
