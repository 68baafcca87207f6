"""The reference translation engine of the RISC-V IOMMU v1.0: the judge for the RTL.

``TranslationEngine.translate(request, ddtp, fctl)`` follows the spec's IOVA
translation process step by step (digest §1.4, steps 1-20) and answers with an
``Outcome``: the ``Response`` for the requester, the fault record to write to the
fault queue (or None), and the HPM events the request caused. ``models/iommu.py``
owns the registers, queues and counters around it and calls the invalidation
methods when it executes IOTINVAL / IODIR commands.

What happens where (section numbers refer to ``../shared/spec/riscv-iommu-digest.md``):

* steps 1-5: ``ddtp`` mode and ``device_id`` width (§1.4, §2.3);
* step 6: the DDT walk and the device-context checks (§2.5, §3.7), ``_device_context``;
* step 7: transaction types a DC allows (§1.4), ``_check_transaction_allowed``;
* steps 8-16: where first-stage translation comes from, the PDT walk (§4),
  ``_translation_context``;
* step 17: the first-stage walk, every PTE address through the G-stage when it is
  active (§5.3-§5.5, §5.7), ``_first_stage``;
* step 18: MSI address translation (§9), ``_msi_translation``;
* step 19: the G-stage walk of the final GPA, ``_g_stage``;
* faults: the record (§6.2), DTF suppression (§6.3) and the ATS completion rules (§6.4).

Caches (§10): device contexts tagged by ``device_id``, process contexts by
(``device_id``, ``process_id``) and an IOTLB of final translations tagged by
(GSCID valid, GSCID, PSCID valid, PSCID, page, G). Entries whose V bit is 0 are never
cached; a cached entry stays in use, even if memory changed, until the matching
invalidation drops it. The engine is single-threaded and instantaneous: every walk
reads ``Memory`` at the moment ``translate`` is called.

Choices this implementation makes where the spec leaves one (also listed in
``IMPLEMENTATION_CHOICES``):

* Untranslated read-for-execute needs only X (no R) (§12.10); a PCIe ATS Translation
  Request with ``access=WRITE`` is a request with No-Write = 0, ``READ`` one with
  No-Write = 1 and ``EXECUTE`` one with Execute Requested (and No-Write = 1).
* For an ATS Translation Request a missing permission is not a fault: the completion
  grants what both stages allow (§6.4). The A bit is set as for a read; D only when
  write permission is requested and granted; with A/D update disabled a clear D bit
  denies W instead of faulting.
* MSI PTEs with ``C`` = 1 (custom) are MSI PTE misconfigured (263).
* G of a translation is the leaf PTE's G bit (a non-leaf G is not propagated).
* Translations whose page would cover an MSI page are reported and cached at 4 KiB.
* Addresses of the IOMMU's own accesses at or above 2^PAS are access faults of the
  structure being read (no early 259/267 address checks).
* Sv32 / Sv32x4 are not implemented: the engine refuses capabilities that advertise
  them. Both endiannesses are implemented (``fctl.BE``, ``DC.tc.SBE``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from . import arch
from .arch import (
    BASE_DC_SIZE,
    EXTENDED_DC_SIZE,
    MASK64,
    PAGE_SHIFT,
    PAGE_SIZE,
    PC_SIZE,
    Access,
    AddrType,
    AtpMode,
    Cap,
    Cause,
    Ddte,
    Ddtp,
    DdtpMode,
    DeviceContext,
    FaultRecord,
    Fctl,
    Fsc,
    HpmEvent,
    Iohgatp,
    MsiPte,
    MsiPteMode,
    Msiptp,
    MsiptpMode,
    PcTa,
    PdtpMode,
    Priv,
    ProcessContext,
    Pte,
    Scheme,
    Ta,
    Tc,
)
from .memory import AccessFault, DataCorruption, Memory
from .transaction import Request, Response, Status

__all__ = [
    "IMPLEMENTATION_CHOICES",
    "EngineConfig",
    "MrifTarget",
    "Outcome",
    "TranslationEngine",
]

# Names of the engine's implicit accesses in the memory access log.
WHO_DDT = "iommu.ddt"
WHO_PDT = "iommu.pdt"
WHO_FS = "iommu.fs_pt"
WHO_GS = "iommu.gs_pt"
WHO_MSI_PT = "iommu.msi_pt"

#: Choices the spec leaves to the implementation, as made here (see the module docstring).
IMPLEMENTATION_CHOICES = {
    "untranslated_execute_needs_read": False,
    "ats_nw0_is_write": True,
    "msi_pte_custom_c1": Cause.MSI_PTE_MISCONFIGURED,
    "global_from_leaf_only": True,
    "msi_overlap_page_size": PAGE_SIZE,
    "early_address_checks": False,
}

_DWORD = 8
_PTE_SIZE = 8
_VPN_BITS = 9
#: Svnapot: a 64 KiB page is a level-0 leaf with N=1 and PPN[3:0] = 1000b (§5.2).
_NAPOT_SIZE = 0x10000
_NAPOT_PPN_MASK = 0xF
_NAPOT_PPN_LOW = 0b1000
_PBMT_RESERVED = 3
#: PTE bits 60:59: reserved, or free for software with Svrsw60t59b (§5.2).
_PTE_RSW_60_59 = (1 << 60) | (1 << 59)
#: Bits a non-leaf PTE must keep at 0 (§5.2: D, A, U, N, PBMT).
_NONLEAF_RESERVED = Pte.D.mask | Pte.A.mask | Pte.U.mask | Pte.N.mask | Pte.PBMT.mask
#: A bound on A/D compare-and-swap retries; the model is single-threaded, so a retry
#: only happens when an update aliased the PTE it raced with.
_MAX_WALK_STEPS = 64
#: Leaf sizes an IOTLB entry may have: 4 KiB, NAPOT 64 KiB, 2 MiB, 1 GiB, 512 GiB, 256 TiB.
_LEAF_SIZES = tuple(sorted({arch.page_size(level) for level in range(5)} | {_NAPOT_SIZE}))

#: PCIe ATS Translation Requests: causes answered by a Success completion with R=W=0
#: and no fault record (§6.4).
_ATS_SUCCESS_CAUSES = frozenset({
    Cause.INSTRUCTION_PAGE_FAULT, Cause.READ_PAGE_FAULT, Cause.WRITE_PAGE_FAULT,
    Cause.INSTRUCTION_GUEST_PAGE_FAULT, Cause.READ_GUEST_PAGE_FAULT,
    Cause.WRITE_GUEST_PAGE_FAULT, Cause.PDT_ENTRY_NOT_VALID, Cause.MSI_PTE_NOT_VALID,
})

_REQUEST_EVENT = {
    AddrType.UNTRANSLATED: HpmEvent.UNTRANSLATED_REQ,
    AddrType.TRANSLATED: HpmEvent.TRANSLATED_REQ,
    AddrType.ATS_TRANSLATION_REQUEST: HpmEvent.ATS_TRANSLATION_REQ,
}

# Mode -> (capability bit) tables (§3.3, §3.5, §4.1).
_FS_CAPS = {AtpMode.SV39: Cap.SV39, AtpMode.SV48: Cap.SV48, AtpMode.SV57: Cap.SV57}
_GS_CAPS = {arch.SV39X4: Cap.SV39X4, arch.SV48X4: Cap.SV48X4, arch.SV57X4: Cap.SV57X4}
_PD_CAPS = {PdtpMode.PD8: Cap.PD8, PdtpMode.PD17: Cap.PD17, PdtpMode.PD20: Cap.PD20}
#: iosatp.MODE / iohgatp.MODE value 8 means Sv32 / Sv32x4 when SXL / GXL is 1.
_MODE_SV32 = 8


# --------------------------------------------------------------------------- #
# Public types
# --------------------------------------------------------------------------- #
@dataclass
class EngineConfig:
    """The implementation's choices that the engine depends on.

    ``capabilities`` is the capabilities register (what is supported); the ``*_entries``
    are cache sizes (0 = no cache). ``gtlb_entries`` is accepted and ignored (the IOTLB
    holds combined translations; there is no separate G-stage cache).
    """

    capabilities: int = arch.DEFAULT_CAPABILITIES
    ddt_cache_entries: int = 16  # device-context cache
    pdt_cache_entries: int = 16  # process-context cache
    iotlb_entries: int = 64  # IOTLB (LRU replacement)
    gtlb_entries: int = 0  # optional G-stage cache: not implemented, ignored


@dataclass(frozen=True)
class MrifTarget:
    """Where an MSI through an MRIF-mode MSI PTE goes (§9.2, §9.3 step 5).

    The engine only translates; storing the interrupt-pending bit and sending the
    notice MSI (§9.4) is left to whoever performs the write.
    """

    mrif_address: int  # the 512-byte memory-resident interrupt file
    notice_address: int  # NPPN << 12
    notice_data: int  # the 11-bit notice identity NID, zero-extended


@dataclass
class Outcome:
    """What one request produced.

    ``record`` is None when nothing faulted, when DTF suppressed the record, or for an
    ATS Translation Request answered with a Success completion. ``events`` are HPM
    events ``(arch.HpmEvent, device_id, pv, process_id, gscid_valid, gscid,
    pscid_valid, pscid)``. ``mrif`` is set for an MSI translated through an MRIF-mode
    MSI PTE; ``reason`` says in words why a request faulted (for humans and tests).
    """

    response: Response
    record: FaultRecord | None
    events: list[tuple] = field(default_factory=list)
    mrif: MrifTarget | None = None
    reason: str = ""


# --------------------------------------------------------------------------- #
# Internal types
# --------------------------------------------------------------------------- #
class _Stop(Exception):
    """Stop the translation and report ``cause`` (the spec's "stop and report")."""

    def __init__(self, cause: int, reason: str, iotval2: int = 0):
        super().__init__(f"cause {int(cause)}: {reason}")
        self.cause, self.reason, self.iotval2 = int(cause), reason, iotval2


@dataclass(frozen=True)
class _StagePerms:
    """A leaf PTE's permissions as the translation used them (D after any update)."""

    r: bool
    w: bool
    x: bool
    u: bool
    d: bool


#: What an MSI translation grants: a G-stage leaf with R=W=U=1, X=0, no A/D (§9.3).
_MSI_PERMS = _StagePerms(r=True, w=True, x=False, u=True, d=True)


@dataclass(frozen=True)
class _Translation:
    """A completed translation: what the IOTLB caches and responses are built from.

    ``va_base``/``gpa_base``/``spa_base`` are the request address, the GPA and the SPA
    of the start of the ``size``-byte page. ``fs`` / ``gs`` are the leaf permissions of
    each stage, None for a Bare stage (an MSI translation stands in for the G-stage).
    """

    va_base: int
    size: int
    gpa_base: int
    spa_base: int
    fs: _StagePerms | None = None
    gs: _StagePerms | None = None
    global_: bool = False
    pbmt: int = 0
    msi: bool = False
    mrif: MrifTarget | None = None

    def covers(self, addr: int) -> bool:
        return self.va_base == addr & ~(self.size - 1)


@dataclass(frozen=True)
class _Leaf:
    """The result of one stage's walk of one address."""

    pa_base: int
    size: int
    perms: _StagePerms
    g: bool
    pbmt: int

    def pa(self, addr: int) -> int:
        return self.pa_base | (addr & (self.size - 1))


@dataclass(frozen=True)
class _FaultKinds:
    """Which causes a walk reports: its page fault, access fault and data corruption."""

    page_fault: int
    access_fault: int
    corruption: int
    iotval2_flags: int | None = None  # G-stage: bits ORed into iotval2 = GPA[63:2]


@dataclass
class _Context:
    """Steps 8-16 resolved: what steps 17-19 translate with."""

    dc: DeviceContext
    fs_scheme: Scheme | None = None
    fs_root: int = 0
    pscid: int = 0
    gs_scheme: Scheme | None = None
    gs_root: int = 0
    gscid: int = 0
    sade: bool = False
    gade: bool = False
    sbe: bool = False  # PDT and first-stage PTE endianness
    sum: bool = False
    supervisor: bool = False  # the effective privilege (a request without PID is User)
    msi_flat: bool = False
    msiptp_ppn: int = 0
    msi_mask: int = 0
    msi_pattern: int = 0

    @property
    def tags(self) -> tuple[bool, int, bool, int]:
        """(GSCID valid, GSCID, PSCID valid, PSCID) of this context's translations."""
        gv, pv = self.gs_scheme is not None, self.fs_scheme is not None
        return gv, self.gscid if gv else 0, pv, self.pscid if pv else 0


class _Run:
    """Bookkeeping for one request: its events, DTF, and the IDs of its context."""

    def __init__(self, request: Request, fctl: int):
        self.request = request
        self.access = Access(request.access)
        self.ats = request.addr_type == AddrType.ATS_TRANSLATION_REQUEST
        self.be = bool(Fctl.BE.get(fctl))
        self.fctl = fctl
        self.dtf = False  # DC.tc.DTF once the DC is located (§6.3)
        self.t2gpa = False  # DC.tc.T2GPA: ATS completions return the GPA (§3.2)
        self.tags = (False, 0, False, 0)
        self.events: list[tuple] = []

    def event(self, event: HpmEvent) -> None:
        r = self.request
        self.events.append((event, r.device_id, bool(r.pv), r.process_id if r.pv else 0,
                            *self.tags))

    def page_faults(self) -> _FaultKinds:
        """First-stage faults, for the original access type (§5.3)."""
        return _FaultKinds(arch.page_fault_cause(self.access),
                           arch.access_fault_cause(self.access), Cause.PT_DATA_CORRUPTION)

    def guest_page_faults(self, flags: int, *, in_pdt: bool = False) -> _FaultKinds:
        """G-stage faults: guest-page faults for the original access type; while locating
        a PC the G-stage's access fault is 265 and data corruption 269 (§4.5 step 2)."""
        if in_pdt:
            return _FaultKinds(arch.guest_page_fault_cause(self.access),
                               Cause.PDT_ENTRY_LOAD_ACCESS_FAULT, Cause.PDT_DATA_CORRUPTION,
                               flags)
        return _FaultKinds(arch.guest_page_fault_cause(self.access),
                           arch.access_fault_cause(self.access), Cause.PT_DATA_CORRUPTION, flags)


def _identity(addr: int, write: bool) -> int:
    return addr


def _bswap64(value: int) -> int:
    return int.from_bytes(value.to_bytes(8, "little"), "big")


# --------------------------------------------------------------------------- #
# The engine
# --------------------------------------------------------------------------- #
class TranslationEngine:
    """Reference IOVA translation with device/process-context caches and an IOTLB."""

    def __init__(self, memory: Memory, config: EngineConfig | None = None):
        config = config if config is not None else EngineConfig()
        caps = config.capabilities
        unsupported = [name for name, cap in (("Sv32", Cap.SV32), ("Sv32x4", Cap.SV32X4))
                       if cap.get(caps)]
        if unsupported:
            raise ValueError(f"capabilities advertise {' and '.join(unsupported)}, which this "
                             f"translation engine does not implement (RV32 schemes)")
        pas = Cap.PAS.get(caps)
        if not PAGE_SHIFT < pas <= 64:
            raise ValueError(f"capabilities.PAS must be 13..64, not {pas}")
        for name in ("ddt_cache_entries", "pdt_cache_entries", "iotlb_entries", "gtlb_entries"):
            value = getattr(config, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        self.memory = memory
        self.config = config
        self.capabilities = caps
        self.extended = bool(Cap.MSI_FLAT.get(caps))  # §2.3: extended DC iff MSI_FLAT
        self.dc_size = EXTENDED_DC_SIZE if self.extended else BASE_DC_SIZE
        self.pa_limit = 1 << pas
        self._dc_cache: OrderedDict[int, DeviceContext] = OrderedDict()
        self._pc_cache: OrderedDict[tuple[int, int], ProcessContext] = OrderedDict()
        self._iotlb: OrderedDict[tuple, _Translation] = OrderedDict()
        self.stats: dict[str, int] = dict.fromkeys((
            "requests", "faults", "records", "iotlb_hits", "iotlb_misses", "ddt_cache_hits",
            "pdt_cache_hits", "ddt_walks", "pdt_walks", "fs_walks", "gs_walks", "msi_walks",
            "ad_updates", "ad_retries"), 0)

    def _has(self, cap: arch.Field) -> bool:
        return bool(cap.get(self.capabilities))

    # ================================================================ entry point
    def translate(self, req: Request, ddtp: int, fctl: int) -> Outcome:
        """Translate one request against the current ``ddtp`` and ``fctl`` (§1.4)."""
        if not isinstance(req.iova, int) or not 0 <= req.iova <= MASK64:
            raise ValueError(f"iova {req.iova!r} is not a 64-bit address")
        run = _Run(req, fctl)
        self.stats["requests"] += 1
        run.event(_REQUEST_EVENT[AddrType(req.addr_type)])
        try:
            translation = self._translate(run, ddtp)
        except _Stop as stop:
            return self._fault_outcome(run, stop)
        return Outcome(self._response(run, translation), None, run.events, translation.mrif)

    def _translate(self, run: _Run, ddtp: int) -> _Translation:
        req = run.request
        mode = Ddtp.IOMMU_MODE.get(ddtp)
        # Step 1 (ddtp.iommu_mode is WARL: a reserved mode cannot be programmed; treat
        # one like Off rather than guess).
        if mode not in (DdtpMode.BARE, DdtpMode.LVL1, DdtpMode.LVL2, DdtpMode.LVL3):
            raise _Stop(Cause.ALL_INBOUND_DISALLOWED, f"ddtp.iommu_mode is {mode} (Off)")
        # Step 2: Bare passes Untranslated requests through.
        if mode == DdtpMode.BARE:
            if req.addr_type != AddrType.UNTRANSLATED:
                raise _Stop(Cause.TRANSACTION_TYPE_DISALLOWED,
                            f"{AddrType(req.addr_type).name} request while ddtp is Bare")
            return self._pass_through(req.iova)
        mode = DdtpMode(mode)
        # Steps 3-5: the device_id must fit the DDT (§2.3).
        if not isinstance(req.device_id, int) or req.device_id < 0 or not arch.device_id_fits(
                req.device_id, mode, self.extended):
            raise _Stop(Cause.TRANSACTION_TYPE_DISALLOWED,
                        f"device_id {req.device_id:#x} is too wide for {mode.name} "
                        f"({'extended' if self.extended else 'base'} DC format)")
        # Step 6.
        dc = self._device_context(run, mode, ddtp)
        run.dtf = bool(Tc.DTF.get(dc.tc))
        run.t2gpa = bool(Tc.T2GPA.get(dc.tc))
        # Step 7.
        self._check_transaction_allowed(run, dc)
        # Step 8: a Translated request without T2GPA already carries the SPA.
        if req.addr_type == AddrType.TRANSLATED and not Tc.T2GPA.get(dc.tc):
            return self._pass_through(req.iova)
        # Steps 9-16.
        ctx = self._translation_context(run, dc)
        run.tags = ctx.tags
        # Steps 17-19.
        return self._translate_address(run, ctx)

    @staticmethod
    def _pass_through(addr: int) -> _Translation:
        """SPA = IOVA, no protection (ddtp Bare, or Translated with T2GPA=0)."""
        base = addr & ~(PAGE_SIZE - 1)
        return _Translation(va_base=base, size=PAGE_SIZE, gpa_base=base, spa_base=base)

    # ====================================================== step 6: the DDT (§2.5)
    def _device_context(self, run: _Run, mode: DdtpMode, ddtp: int) -> DeviceContext:
        device_id = run.request.device_id
        dc = self._dc_cache.get(device_id)
        if dc is not None:
            self._dc_cache.move_to_end(device_id)
            self.stats["ddt_cache_hits"] += 1
        else:
            dc = self._walk_ddt(run, mode, ddtp, device_id)
        problem = self._dc_misconfiguration(dc, run.fctl)
        if problem:
            raise _Stop(Cause.DDT_ENTRY_MISCONFIGURED, f"device context of {device_id:#x}: "
                        f"{problem}")
        if self.config.ddt_cache_entries and device_id not in self._dc_cache:
            self._insert(self._dc_cache, device_id, dc, self.config.ddt_cache_entries)
        return dc

    def _walk_ddt(self, run: _Run, mode: DdtpMode, ddtp: int, device_id: int) -> DeviceContext:
        run.event(HpmEvent.DDT_WALK)
        self.stats["ddt_walks"] += 1
        index = arch.ddi(device_id, self.extended)
        a = Ddtp.PPN.get(ddtp) << PAGE_SHIFT
        for i in range(mode.levels - 1, 0, -1):
            (ddte,) = self._load(a + index[i] * _DWORD, 1, run.be, WHO_DDT,
                                 Cause.DDT_LOAD_ACCESS_FAULT, Cause.DDT_DATA_CORRUPTION,
                                 f"DDT level-{i} entry")
            if not Ddte.V.get(ddte):
                raise _Stop(Cause.DDT_ENTRY_NOT_VALID, f"non-leaf DDT entry {ddte:#x} at level "
                            f"{i} has V=0")
            if ddte & Ddte.RESERVED_MASK:
                raise _Stop(Cause.DDT_ENTRY_MISCONFIGURED, f"non-leaf DDT entry {ddte:#x} at "
                            f"level {i} has reserved bits {ddte & Ddte.RESERVED_MASK:#x}")
            a = Ddte.PPN.get(ddte) << PAGE_SHIFT
        words = self._load(a + index[0] * self.dc_size, self.dc_size // _DWORD, run.be,
                           WHO_DDT, Cause.DDT_LOAD_ACCESS_FAULT, Cause.DDT_DATA_CORRUPTION,
                           "device context")
        dc = DeviceContext(*words)
        if not Tc.V.get(dc.tc):
            raise _Stop(Cause.DDT_ENTRY_NOT_VALID, f"device context of {device_id:#x} has V=0")
        return dc

    def _dc_misconfiguration(self, dc: DeviceContext, fctl: int) -> str | None:
        """The first §3.7 check a V=1 device context fails, in words; None if it is fine."""
        caps = self.capabilities
        tc = dc.tc
        en_ats, en_pri, t2gpa, pdtv, prpr, gade, sade, dpe, sbe, sxl = (
            f.get(tc) for f in (Tc.EN_ATS, Tc.EN_PRI, Tc.T2GPA, Tc.PDTV, Tc.PRPR, Tc.GADE,
                                Tc.SADE, Tc.DPE, Tc.SBE, Tc.SXL))
        fsc_mode, gs_mode = Fsc.MODE.get(dc.fsc), Iohgatp.MODE.get(dc.iohgatp)
        gxl, be = Fctl.GXL.get(fctl), Fctl.BE.get(fctl)
        gxl_writable = self._has(Cap.SV32X4)  # fctl.GXL is WARL, writable only with Sv32x4
        be_writable = self._has(Cap.END)
        ta_reserved = Ta.RESERVED_MASK
        if not self._has(Cap.QOSID):
            ta_reserved |= Ta.RCID.mask | Ta.MCID.mask
        msi_mode = Msiptp.MODE.get(dc.msiptp)
        # Check 1: reserved bits and encodings in every dword.
        if tc & Tc.RESERVED_MASK:
            return f"tc reserved bits {tc & Tc.RESERVED_MASK:#x} set"
        if dc.ta & ta_reserved:
            return f"ta reserved bits {dc.ta & ta_reserved:#x} set"
        if dc.fsc & Fsc.RESERVED_MASK:
            return f"fsc reserved bits {dc.fsc & Fsc.RESERVED_MASK:#x} set"
        if self.extended:
            if dc.msiptp & Msiptp.RESERVED_MASK:
                return f"msiptp reserved bits {dc.msiptp & Msiptp.RESERVED_MASK:#x} set"
            reserved = self._msi_address_reserved_mask(gs_mode, gxl)
            for name, value in (("msi_addr_mask", dc.msi_addr_mask),
                                ("msi_addr_pattern", dc.msi_addr_pattern)):
                if value & reserved:
                    return f"{name} reserved bits {value & reserved:#x} set"
            if dc.reserved:
                return f"reserved dword 7 is {dc.reserved:#x}"
        # Checks 2-7: ATS, PRI, T2GPA.
        if not self._has(Cap.ATS) and (en_ats or en_pri or prpr):
            return "EN_ATS/EN_PRI/PRPR set without capabilities.ATS"
        if not en_ats and t2gpa:
            return "T2GPA set with EN_ATS=0"
        if not en_ats and en_pri:
            return "EN_PRI set with EN_ATS=0"
        if not en_pri and prpr:
            return "PRPR set with EN_PRI=0"
        if not self._has(Cap.T2GPA) and t2gpa:
            return "T2GPA set without capabilities.T2GPA"
        if t2gpa and gs_mode == AtpMode.BARE:
            return "T2GPA set with iohgatp.MODE=Bare"
        # Checks 8-12: the first-stage context.
        if pdtv:
            if fsc_mode != PdtpMode.BARE and not (fsc_mode in _PD_CAPS
                                                   and _PD_CAPS[fsc_mode].get(caps)):
                return f"pdtp.MODE {fsc_mode} reserved or not supported"
        else:
            problem = self._fs_mode_problem(fsc_mode, sxl)
            if problem:
                return f"iosatp.MODE {problem}"
            if dpe:
                return "DPE set with PDTV=0"
        # Checks 13-15: the G-stage scheme.
        if gs_mode != AtpMode.BARE:
            if gxl:
                return f"iohgatp.MODE {gs_mode} reserved or not supported with fctl.GXL=1"
            if not (gs_mode in _GS_CAPS and _GS_CAPS[gs_mode].get(caps)):
                return f"iohgatp.MODE {gs_mode} reserved or not supported"
        # Check 16 (extended format only has msiptp).
        if self.extended and msi_mode not in (MsiptpMode.OFF, MsiptpMode.FLAT):
            return f"msiptp.MODE {msi_mode} reserved or not supported"
        # Check 17.
        if gs_mode != AtpMode.BARE and Iohgatp.PPN.get(dc.iohgatp) & 3:
            return "iohgatp.PPN not 16 KiB aligned"
        # Check 18.
        if not self._has(Cap.AMO_HWAD) and (sade or gade):
            return "SADE/GADE set without capabilities.AMO_HWAD"
        # Checks 19 and 21: SBE must equal fctl.BE unless fctl.BE is writable.
        if not be_writable and sbe != be:
            return f"SBE={sbe} differs from the fixed fctl.BE={be}"
        # Check 20: SXL legal values.
        if gxl and not sxl:
            return "SXL=0 with fctl.GXL=1"
        if not gxl and not gxl_writable and sxl:
            return "SXL=1 while fctl.GXL is hardwired to 0"
        # Check 22: the model implements all 12 bits of RCID and MCID (iommu_qosid).
        # Check 23 (recommended): MSI translation needs an active G-stage.
        if self.extended and gs_mode == AtpMode.BARE and msi_mode != MsiptpMode.OFF:
            return "msiptp.MODE is not Off while iohgatp.MODE is Bare"
        return None

    def _fs_mode_problem(self, mode: int, sxl: int) -> str | None:
        """Why ``mode`` is not a usable iosatp/PC.fsc MODE under SXL (§3.5), or None."""
        if mode == AtpMode.BARE:
            return None
        if sxl:
            if mode == _MODE_SV32:
                return None if self._has(Cap.SV32) else "Sv32 without capabilities.Sv32"
            return f"{mode} is reserved with SXL=1"
        if mode in _FS_CAPS:
            if _FS_CAPS[mode].get(self.capabilities):
                return None
            return f"{AtpMode(mode).name} without its capability bit"
        return f"{mode} is reserved or custom (not supported)"

    def _msi_address_reserved_mask(self, gs_mode: int, gxl: int) -> int:
        """msi_addr_mask/pattern bits that must be 0: [63:52] and [51:MGPAW-12] (§3.6)."""
        if gs_mode in arch.GSTAGE_SCHEMES and not gxl:
            mgpaw = arch.GSTAGE_SCHEMES[gs_mode].va_bits
        else:
            mgpaw = Cap.PAS.get(self.capabilities)
        width = max(0, min(arch.MSI_ADDR_MASK.width, mgpaw - PAGE_SHIFT))
        return MASK64 & ~((1 << width) - 1)

    # ====================================================== step 7 (§1.4)
    def _check_transaction_allowed(self, run: _Run, dc: DeviceContext) -> None:
        req = run.request
        if req.addr_type != AddrType.UNTRANSLATED and not Tc.EN_ATS.get(dc.tc):
            raise _Stop(Cause.TRANSACTION_TYPE_DISALLOWED,
                        f"{AddrType(req.addr_type).name} request with DC.tc.EN_ATS=0")
        if req.pv:
            if not Tc.PDTV.get(dc.tc):
                raise _Stop(Cause.TRANSACTION_TYPE_DISALLOWED,
                            "request with a process_id while DC.tc.PDTV=0")
            pdtp_mode = Fsc.MODE.get(dc.fsc)
            if pdtp_mode != PdtpMode.BARE and not arch.process_id_fits(
                    req.process_id, PdtpMode(pdtp_mode)):
                raise _Stop(Cause.TRANSACTION_TYPE_DISALLOWED,
                            f"process_id {req.process_id:#x} is too wide for "
                            f"{PdtpMode(pdtp_mode).name}")

    # ============================================ steps 9-16: the translation context
    def _translation_context(self, run: _Run, dc: DeviceContext) -> _Context:
        req, tc = run.request, dc.tc
        ctx = _Context(dc=dc, sade=bool(Tc.SADE.get(tc)), gade=bool(Tc.GADE.get(tc)),
                       sbe=bool(Tc.SBE.get(tc)))
        gs_mode = Iohgatp.MODE.get(dc.iohgatp)
        if gs_mode != AtpMode.BARE:
            ctx.gs_scheme = arch.GSTAGE_SCHEMES[gs_mode]
            ctx.gs_root = Iohgatp.PPN.get(dc.iohgatp) << PAGE_SHIFT
            ctx.gscid = Iohgatp.GSCID.get(dc.iohgatp)
        run.tags = ctx.tags  # G-stage walks of PDT entries count with the GSCID
        if self.extended and Msiptp.MODE.get(dc.msiptp) == MsiptpMode.FLAT:
            ctx.msi_flat = True
            ctx.msiptp_ppn = Msiptp.PPN.get(dc.msiptp)
            ctx.msi_mask = arch.MSI_ADDR_MASK.get(dc.msi_addr_mask)
            ctx.msi_pattern = arch.MSI_ADDR_MASK.get(dc.msi_addr_pattern)
        # Step 9: a Translated request with T2GPA=1 carries a GPA: first stage Bare.
        if req.addr_type == AddrType.TRANSLATED:
            return ctx
        # Step 10: no PDT: the first stage is DC.fsc (iosatp) with DC.ta.PSCID.
        if not Tc.PDTV.get(tc):
            self._set_first_stage(ctx, dc.fsc, Ta.PSCID.get(dc.ta))
            return ctx
        # Steps 11-12: without a process_id, DPE selects process 0 (still a User request).
        if req.pv:
            process_id = req.process_id
            ctx.supervisor = req.priv == Priv.SUPERVISOR
        elif Tc.DPE.get(tc):
            process_id = 0
        else:
            return ctx
        # Step 13.
        pdtp_mode = Fsc.MODE.get(dc.fsc)
        if pdtp_mode == PdtpMode.BARE:
            return ctx
        # Step 14.
        pc = self._process_context(run, ctx, PdtpMode(pdtp_mode), process_id)
        # Step 15: Supervisor requests need PC.ta.ENS.
        if ctx.supervisor and not PcTa.ENS.get(pc.ta):
            raise _Stop(Cause.TRANSACTION_TYPE_DISALLOWED,
                        "Supervisor request while PC.ta.ENS=0")
        # Step 16.
        ctx.sum = bool(PcTa.SUM.get(pc.ta))
        self._set_first_stage(ctx, pc.fsc, PcTa.PSCID.get(pc.ta))
        return ctx

    @staticmethod
    def _set_first_stage(ctx: _Context, fsc: int, pscid: int) -> None:
        mode = Fsc.MODE.get(fsc)
        if mode != AtpMode.BARE:  # a valid, supported mode: the DC/PC checks passed
            ctx.fs_scheme = arch.FIRST_STAGE_SCHEMES[mode]
            ctx.fs_root = Fsc.PPN.get(fsc) << PAGE_SHIFT
            ctx.pscid = pscid

    # ==================================================== step 14: the PDT (§4.5)
    def _process_context(self, run: _Run, ctx: _Context, mode: PdtpMode,
                         process_id: int) -> ProcessContext:
        key = (run.request.device_id, process_id)
        pc = self._pc_cache.get(key)
        if pc is not None:
            self._pc_cache.move_to_end(key)
            self.stats["pdt_cache_hits"] += 1
            return pc
        pc = self._walk_pdt(run, ctx, mode, process_id)
        if self.config.pdt_cache_entries:
            self._insert(self._pc_cache, key, pc, self.config.pdt_cache_entries)
        return pc

    def _walk_pdt(self, run: _Run, ctx: _Context, mode: PdtpMode,
                  process_id: int) -> ProcessContext:
        run.event(HpmEvent.PDT_WALK)
        self.stats["pdt_walks"] += 1
        index = arch.pdi(process_id)
        a = Fsc.PPN.get(ctx.dc.fsc) << PAGE_SHIFT
        for i in range(mode.levels - 1, -1, -1):
            entry = a + (index[i] * _DWORD if i else index[0] * PC_SIZE)
            # Step 2: with an active G-stage the entry address is a GPA, translated as an
            # implicit read; its faults are reported as guest-page faults (iotval2 bit 0).
            spa = self._implicit_g_stage(run, ctx, entry, write=False, in_pdt=True)
            if i:  # steps 3-8: a non-leaf entry
                (pdte,) = self._load(spa, 1, ctx.sbe, WHO_PDT, Cause.PDT_ENTRY_LOAD_ACCESS_FAULT,
                                     Cause.PDT_DATA_CORRUPTION, f"PDT level-{i} entry")
                if not Ddte.V.get(pdte):
                    raise _Stop(Cause.PDT_ENTRY_NOT_VALID, f"non-leaf PDT entry {pdte:#x} at "
                                f"level {i} has V=0")
                if pdte & Ddte.RESERVED_MASK:
                    raise _Stop(Cause.PDT_ENTRY_MISCONFIGURED, f"non-leaf PDT entry {pdte:#x} "
                                f"has reserved bits {pdte & Ddte.RESERVED_MASK:#x}")
                a = Ddte.PPN.get(pdte) << PAGE_SHIFT
                continue
            # Steps 9-11: the process context.
            ta, fsc = self._load(spa, PC_SIZE // _DWORD, ctx.sbe, WHO_PDT,
                                 Cause.PDT_ENTRY_LOAD_ACCESS_FAULT, Cause.PDT_DATA_CORRUPTION,
                                 "process context")
            pc = ProcessContext(ta, fsc)
            if not PcTa.V.get(ta):
                raise _Stop(Cause.PDT_ENTRY_NOT_VALID,
                            f"process context of {process_id:#x} has V=0")
            problem = self._pc_misconfiguration(pc, Tc.SXL.get(ctx.dc.tc))
            if problem:
                raise _Stop(Cause.PDT_ENTRY_MISCONFIGURED,
                            f"process context of {process_id:#x}: {problem}")
            return pc
        raise AssertionError("unreachable: the PDT walk ends at level 0")

    def _pc_misconfiguration(self, pc: ProcessContext, sxl: int) -> str | None:
        """The first §4.4 check a V=1 process context fails, in words; None if fine."""
        if pc.ta & PcTa.RESERVED_MASK:
            return f"ta reserved bits {pc.ta & PcTa.RESERVED_MASK:#x} set"
        if pc.fsc & Fsc.RESERVED_MASK:
            return f"fsc reserved bits {pc.fsc & Fsc.RESERVED_MASK:#x} set"
        problem = self._fs_mode_problem(Fsc.MODE.get(pc.fsc), sxl)
        return f"fsc.MODE {problem}" if problem else None

    # ================================================= steps 17-19 with the IOTLB
    def _translate_address(self, run: _Run, ctx: _Context) -> _Translation:
        iova = run.request.iova
        if ctx.fs_scheme is None and ctx.gs_scheme is None and not ctx.msi_flat:
            return self._pass_through(iova)  # both stages Bare: nothing to cache (§10.1)
        hit = self._iotlb_lookup(ctx, iova)
        if hit is not None and self._hit_usable(run, ctx, hit):
            self.stats["iotlb_hits"] += 1
            return hit
        self.stats["iotlb_misses"] += 1
        run.event(HpmEvent.TLB_MISS)
        translation = self._walk(run, ctx)
        # An MRIF-mode MSI translation carries the notice MSI, which an IOTLB entry
        # does not hold (the RTL's neither): it is walked each time (caching is
        # optional, §10).
        if (self.config.iotlb_entries and (ctx.fs_scheme or ctx.gs_scheme)
                and translation.mrif is None):
            self._iotlb_fill(ctx, translation)
        return translation

    def _walk(self, run: _Run, ctx: _Context) -> _Translation:
        """Steps 17-19 from memory."""
        iova = run.request.iova
        # Step 17: the first stage (VA -> GPA).
        fs_leaf = None
        gpa = iova
        if ctx.fs_scheme is not None:
            fs_leaf = self._first_stage(run, ctx, iova)
            gpa = fs_leaf.pa(iova)
        # Step 18: MSI address translation of the GPA.
        if ctx.msi_flat and self._is_msi_address(ctx, gpa):
            return self._msi_translation(run, ctx, iova, gpa, fs_leaf)
        # Step 19: the G-stage (GPA -> SPA).
        gs_leaf = None
        spa = gpa
        if ctx.gs_scheme is not None:
            gs_leaf = self._g_stage(run, ctx, gpa, run.access, run.guest_page_faults(0),
                                    explicit=True)
            spa = gs_leaf.pa(gpa)
        # The translation's size is bounded by both leaves (§5.7); a Bare stage does not
        # bound it. A page that would cover an MSI page of this device is shrunk to 4 KiB
        # (§9.1 implementation note), so the MSI page is always recognised.
        sizes = [leaf.size for leaf in (fs_leaf, gs_leaf) if leaf is not None]
        size = min(sizes) if sizes else PAGE_SIZE
        if size > PAGE_SIZE and ctx.msi_flat and self._covers_msi_page(ctx, gpa, size):
            size = PAGE_SIZE
        fs_pbmt = fs_leaf.pbmt if fs_leaf else 0
        gs_pbmt = gs_leaf.pbmt if gs_leaf else 0
        return _Translation(
            va_base=iova & ~(size - 1), size=size, gpa_base=gpa & ~(size - 1),
            spa_base=spa & ~(size - 1), fs=fs_leaf.perms if fs_leaf else None,
            gs=gs_leaf.perms if gs_leaf else None, global_=bool(fs_leaf and fs_leaf.g),
            pbmt=fs_pbmt or gs_pbmt)  # §5.6: a nonzero first-stage PBMT overrides

    # ------------------------------------------------------- step 17 (§5.3, §5.7)
    def _first_stage(self, run: _Run, ctx: _Context, iova: int) -> _Leaf:
        run.event(HpmEvent.S_VS_PT_WALK)
        self.stats["fs_walks"] += 1

        def pte_address(gpa: int, write: bool) -> int:
            # §5.7: with an active G-stage every first-stage PTE address is a GPA,
            # translated as an implicit read (or an implicit write for the A/D update).
            return self._implicit_g_stage(run, ctx, gpa, write=write, in_pdt=False)

        return self._walk_stage(
            run, ctx.fs_scheme, ctx.fs_root, iova, run.access, ats=run.ats,
            supervisor=ctx.supervisor, sum_=ctx.sum, ad_update=ctx.sade,
            big_endian=ctx.sbe, who=WHO_FS, pte_address=pte_address,
            faults=run.page_faults())

    # ------------------------------------------------------- step 19 / implicit GS
    def _g_stage(self, run: _Run, ctx: _Context, gpa: int, access: Access,
                 faults: _FaultKinds, *, explicit: bool) -> _Leaf:
        """One G-stage walk of ``gpa``; every access counts as User (§1.4 notes)."""
        run.event(HpmEvent.G_PT_WALK)
        self.stats["gs_walks"] += 1
        return self._walk_stage(
            run, ctx.gs_scheme, ctx.gs_root, gpa, access, ats=run.ats and explicit,
            supervisor=False, sum_=False, ad_update=ctx.gade, big_endian=run.be,
            who=WHO_GS, pte_address=_identity, faults=faults)

    def _implicit_g_stage(self, run: _Run, ctx: _Context, gpa: int, *, write: bool,
                          in_pdt: bool) -> int:
        """SPA of a PDT entry or first-stage PTE at ``gpa`` (identity if GS is Bare).

        Faults are reported for the original access type with iotval2 = GPA, bit 0 = 1
        (implicit access), bit 1 = 1 for the implicit write of an A/D update (§5.4).
        """
        if ctx.gs_scheme is None:
            return gpa
        flags = 0b11 if write else 0b01
        leaf = self._g_stage(run, ctx, gpa, Access.WRITE if write else Access.READ,
                             run.guest_page_faults(flags, in_pdt=in_pdt), explicit=False)
        return leaf.pa(gpa)

    # ------------------------------------------------------- one stage (§5.3-§5.5)
    def _walk_stage(self, run: _Run, scheme: Scheme, root: int, addr: int, access: Access, *,
                    ats: bool, supervisor: bool, sum_: bool, ad_update: bool,
                    big_endian: bool, who: str, pte_address: Callable[[int, bool], int],
                    faults: _FaultKinds) -> _Leaf:
        """Walk one stage's table for ``addr``; the Privileged algorithm as §5.3 states it.

        ``access`` is the access the stage checks (for an implicit G-stage access: READ,
        or WRITE for an A/D update). ``ats``: an ATS Translation Request, for which a
        missing R/W/X permission is not a fault (§6.4). ``pte_address`` maps a PTE's
        address to the SPA to access (the G-stage for a nested first stage).
        """
        gstage = scheme.gstage

        def fault(why: str) -> _Stop:
            if gstage:
                return _Stop(faults.page_fault, f"{scheme.name} walk of GPA {addr:#x}: {why}",
                             (addr & ~0b11) | faults.iotval2_flags)
            return _Stop(faults.page_fault, f"{scheme.name} walk of IOVA {addr:#x}: {why}")

        # §5.1: the address bits above the scheme's width.
        if gstage:
            if addr >> scheme.va_bits:
                raise fault(f"bits 63:{scheme.va_bits} of the GPA are not all 0")
        else:
            top = addr >> (scheme.va_bits - 1)
            if top not in (0, (1 << (65 - scheme.va_bits)) - 1):
                raise fault(f"not canonical (bits 63:{scheme.va_bits - 1} differ)")
        svpbmt = self._has(Cap.SVPBMT)
        reserved_mask = Pte.RESERVED.mask
        if self._has(Cap.SVRSW60T59B):
            reserved_mask &= ~_PTE_RSW_60_59
        write_intent = access == Access.WRITE
        a, i = root, scheme.levels - 1
        for _ in range(_MAX_WALK_STEPS):
            # Step 1: load the PTE.
            entry = a + scheme.vpn(addr, i) * _PTE_SIZE
            spa = pte_address(entry, False)
            (pte,) = self._load(spa, 1, big_endian, who, faults.access_fault,
                                faults.corruption, f"{scheme.name} level-{i} PTE")
            v, r, w, x, u, g, pte_a, d = (bool(f.get(pte)) for f in (
                Pte.V, Pte.R, Pte.W, Pte.X, Pte.U, Pte.G, Pte.A, Pte.D))
            ppn, pbmt, napot = Pte.PPN.get(pte), Pte.PBMT.get(pte), bool(Pte.N.get(pte))
            # Step 2: invalid, W without R, reserved bits or encodings.
            if not v:
                raise fault(f"level-{i} PTE {pte:#x} has V=0")
            if w and not r:
                raise fault(f"level-{i} PTE {pte:#x} has W without R (reserved)")
            if pte & reserved_mask:
                raise fault(f"level-{i} PTE {pte:#x} has reserved bits "
                            f"{pte & reserved_mask:#x}")
            if pbmt == _PBMT_RESERVED or (pbmt and not svpbmt):
                raise fault(f"level-{i} PTE {pte:#x} has a reserved PBMT {pbmt}")
            # Step 3: a pointer to the next level.
            if not r and not x:
                if pte & _NONLEAF_RESERVED:
                    raise fault(f"non-leaf level-{i} PTE {pte:#x} has D/A/U/N/PBMT set")
                i -= 1
                if i < 0:
                    raise fault("a pointer at level 0")
                a = ppn << PAGE_SHIFT
                continue
            # A leaf. Svnapot: N only on a level-0 leaf with PPN[3:0] = 1000b.
            if napot and (i != 0 or ppn & _NAPOT_PPN_MASK != _NAPOT_PPN_LOW):
                raise fault(f"level-{i} leaf {pte:#x} has an unsupported N (NAPOT) encoding")
            # Step 4: a superpage's low PPN bits must be 0.
            if i > 0 and ppn & ((1 << (_VPN_BITS * i)) - 1):
                raise fault(f"misaligned level-{i} superpage {pte:#x}")
            # Step 5: privilege. The G-stage treats every access as User (U must be 1).
            # Supervisor execute from a U page is never allowed (for ATS: X is denied).
            if not supervisor:
                if not u:
                    raise fault(f"{'G-stage' if gstage else 'User'} access to a U=0 page")
            elif u:
                if not sum_:
                    raise fault("Supervisor access to a U=1 page with SUM=0")
                if access == Access.EXECUTE and not ats:
                    raise fault("Supervisor execute from a U=1 page")
            # Step 6: the permission for the access type (an ATS Translation Request
            # gets what is allowed instead, §6.4).
            if not ats:
                allowed = {Access.READ: r, Access.WRITE: w, Access.EXECUTE: x}[access]
                if not allowed:
                    raise fault(f"{access.name} not permitted by leaf {pte:#x}")
                want_d = write_intent
            else:
                want_d = write_intent and r and w
            # Step 7: A/D (§5.5).
            if not pte_a or (want_d and not d):
                if not ad_update:
                    if not pte_a or not ats:
                        raise fault(f"leaf {pte:#x} needs A{'/D' if want_d else ''} and "
                                    f"hardware update is disabled")
                    # ATS: W is not granted while D is 0 (d stays False).
                else:
                    new = pte | Pte.A.mask | (Pte.D.mask if want_d else 0)
                    store_spa = pte_address(entry, True)
                    old = self._cas(store_spa, pte, new, big_endian, who, faults,
                                    f"{scheme.name} level-{i} PTE A/D update")
                    if old != pte:
                        self.stats["ad_retries"] += 1
                        continue  # memory changed under us: restart this level
                    self.stats["ad_updates"] += 1
                    pte_a, d = True, d or want_d
            # Step 8: the leaf's output page.
            if napot:
                size, base_ppn = _NAPOT_SIZE, ppn & ~_NAPOT_PPN_MASK
            else:
                size, base_ppn = arch.page_size(i), ppn
            return _Leaf(pa_base=base_ppn << PAGE_SHIFT, size=size,
                         perms=_StagePerms(r=r, w=w, x=x, u=u, d=d), g=g, pbmt=pbmt)
        raise RuntimeError(f"{scheme.name} walk of {addr:#x} did not finish in "
                           f"{_MAX_WALK_STEPS} steps (A/D updates kept racing)")

    # ======================================================= step 18: MSI (§9)
    @staticmethod
    def _is_msi_address(ctx: _Context, gpa: int) -> bool:
        """§9.1: (A >> 12) & ~mask == pattern & ~mask."""
        return (gpa >> PAGE_SHIFT) & ~ctx.msi_mask == ctx.msi_pattern & ~ctx.msi_mask

    @staticmethod
    def _covers_msi_page(ctx: _Context, gpa: int, size: int) -> bool:
        """Whether the ``size``-byte page around ``gpa`` contains an MSI page: the page
        numbers it covers share every bit above log2(size/4K) with ``gpa``."""
        free = (size >> PAGE_SHIFT) - 1
        return (((gpa >> PAGE_SHIFT) ^ ctx.msi_pattern) & ~ctx.msi_mask & ~free) == 0

    def _msi_translation(self, run: _Run, ctx: _Context, iova: int, gpa: int,
                         fs_leaf: _Leaf | None) -> _Translation:
        self.stats["msi_walks"] += 1
        file_number = arch.msi_extract(gpa >> PAGE_SHIFT, ctx.msi_mask)
        entry = (ctx.msiptp_ppn << PAGE_SHIFT) | (file_number * arch.MSI_PTE_SIZE)
        dw0, dw1 = self._load(entry, arch.MSI_PTE_SIZE // _DWORD, run.be, WHO_MSI_PT,
                              Cause.MSI_PTE_LOAD_ACCESS_FAULT, Cause.MSI_PT_DATA_CORRUPTION,
                              f"MSI PTE {file_number}")
        where = f"MSI PTE {file_number} ({dw0:#x}, {dw1:#x}) for GPA {gpa:#x}"
        if not MsiPte.V.get(dw0):
            raise _Stop(Cause.MSI_PTE_NOT_VALID, f"{where} has V=0")
        if MsiPte.C.get(dw0):  # custom format: this implementation defines none
            raise _Stop(Cause.MSI_PTE_MISCONFIGURED, f"{where} has C=1 (no custom formats)")
        mode = MsiPte.M.get(dw0)
        mrif = None
        if mode == MsiPteMode.BASIC:
            if dw0 & MsiPte.BASIC_RESERVED:
                raise _Stop(Cause.MSI_PTE_MISCONFIGURED, f"{where} has reserved bits set")
            spa_base = MsiPte.PPN.get(dw0) << PAGE_SHIFT
        elif mode == MsiPteMode.MRIF:
            if not self._has(Cap.MSI_MRIF):
                raise _Stop(Cause.MSI_PTE_MISCONFIGURED,
                            f"{where} is in MRIF mode without capabilities.MSI_MRIF")
            if dw0 & MsiPte.MRIF_RESERVED or dw1 & MsiPte.MRIF_DW1_RESERVED:
                raise _Stop(Cause.MSI_PTE_MISCONFIGURED, f"{where} has reserved bits set")
            nid = MsiPte.NID.get(dw1) | MsiPte.NID10.get(dw1) << MsiPte.NID.width
            mrif = MrifTarget(mrif_address=MsiPte.MRIF_ADDR.get(dw0) << 9,
                              notice_address=MsiPte.NPPN.get(dw1) << PAGE_SHIFT,
                              notice_data=nid)
            spa_base = mrif.mrif_address
        else:
            raise _Stop(Cause.MSI_PTE_MISCONFIGURED, f"{where} has the reserved mode M={mode}")
        # The MSI page acts like a G-stage leaf with R=W=U=1, X=0: execute is an
        # instruction access fault (an ATS Translation Request gets X=0 instead).
        if run.access == Access.EXECUTE and not run.ats:
            raise _Stop(Cause.INSTRUCTION_ACCESS_FAULT, f"execute from the MSI page at GPA "
                        f"{gpa:#x}")
        return _Translation(
            va_base=iova & ~(PAGE_SIZE - 1), size=PAGE_SIZE,
            gpa_base=gpa & ~(PAGE_SIZE - 1), spa_base=spa_base,
            fs=fs_leaf.perms if fs_leaf else None, gs=_MSI_PERMS,
            global_=bool(fs_leaf and fs_leaf.g), pbmt=fs_leaf.pbmt if fs_leaf else 0,
            msi=True, mrif=mrif)

    # =========================================================== the IOTLB (§10)
    @staticmethod
    def _iotlb_key(tags: tuple[bool, int, bool, int], global_: bool, size: int,
                   va_base: int) -> tuple:
        gv, gscid, pv, pscid = tags
        return (gv, gscid, pv, -1 if (pv and global_) else pscid, size, va_base)

    def _iotlb_lookup(self, ctx: _Context, iova: int) -> _Translation | None:
        if not self.config.iotlb_entries:
            return None
        tags = ctx.tags
        for size in _LEAF_SIZES:
            base = iova & ~(size - 1)
            for global_ in (False, True):
                key = self._iotlb_key(tags, global_, size, base)
                hit = self._iotlb.get(key)
                if hit is not None:
                    self._iotlb.move_to_end(key)
                    return hit
        return None

    def _iotlb_fill(self, ctx: _Context, translation: _Translation) -> None:
        key = self._iotlb_key(ctx.tags, translation.global_, translation.size,
                              translation.va_base)
        self._insert(self._iotlb, key, translation, self.config.iotlb_entries)

    def _hit_usable(self, run: _Run, ctx: _Context, hit: _Translation) -> bool:
        """Whether a cached translation answers this request as a walk would now.

        The cached leaf permissions must allow the access (privilege, R/W/X) and a write
        needs D=1 in every stage; otherwise walk again, which updates A/D or faults.
        """
        access = run.access
        fs = hit.fs
        if fs is not None:
            if not ctx.supervisor:
                if not fs.u:
                    return False
            elif fs.u and (not ctx.sum or access == Access.EXECUTE):
                return False
        for perms in (hit.fs, hit.gs):
            if perms is None:
                continue
            if run.ats:
                # The completion's permissions come from the cached leaves; only a write
                # request that would be granted W while D=0 needs a walk (to set D).
                if access == Access.WRITE and perms.r and perms.w and not perms.d:
                    return False
                continue
            if not {Access.READ: perms.r, Access.WRITE: perms.w,
                    Access.EXECUTE: perms.x}[access]:
                return False
            if access == Access.WRITE and not perms.d:
                return False
        return True

    @staticmethod
    def _insert(cache: OrderedDict, key, value, capacity: int) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > capacity:
            cache.popitem(last=False)  # least recently used

    # ============================================== invalidation (§7.3, §10.2)
    def iotinval_vma(self, gv: bool, av: bool, pscv: bool, gscid: int, pscid: int,
                     addr: int) -> None:
        """IOTINVAL.VMA: drop first-stage-derived translations per §10.2's table.

        GV=0 targets host translations (G-stage Bare), GV=1 those of GSCID; PSCV=1 keeps
        global entries and selects PSCID; AV=1 selects entries whose page holds ADDR.
        An entry of GSCID with a Bare first stage is dropped by GV=1 PSCV=0 too (a
        harmless superset).
        """
        def victim(key: tuple, entry: _Translation) -> bool:
            e_gv, e_gscid, e_pv, _, _, _ = key
            if gv != e_gv or (gv and e_gscid != gscid):
                return False
            if pscv and (not e_pv or entry.global_ or key[3] != pscid):
                return False
            return not av or entry.covers(addr)

        self._drop(victim)

    def iotinval_gvma(self, gv: bool, av: bool, gscid: int, addr: int) -> None:
        """IOTINVAL.GVMA: drop G-stage-derived translations.

        GV=0: every translation made with an active G-stage. GV=1: every translation of
        GSCID, also for AV=1: the IOTLB caches combined VA->SPA translations whose
        intermediate GPAs (including those of first-stage PTEs) it does not keep, which
        the spec allows to handle by dropping the whole GSCID (§10.2).
        """
        del av, addr  # see the docstring
        self._drop(lambda key, entry: key[0] and (not gv or key[1] == gscid))

    def iodir_inval_ddt(self, dv: bool, did: int) -> None:
        """IODIR.INVAL_DDT: DV=0 all device and process contexts; DV=1 the device
        context of DID and every process context of DID (§7.3)."""
        if not dv:
            self._dc_cache.clear()
            self._pc_cache.clear()
            return
        self._dc_cache.pop(did, None)
        for key in [k for k in self._pc_cache if k[0] == did]:
            del self._pc_cache[key]

    def iodir_inval_pdt(self, did: int, pid: int) -> None:
        """IODIR.INVAL_PDT: the process context of (DID, PID)."""
        self._pc_cache.pop((did, pid), None)

    def flush_all(self) -> None:
        """Empty every cache (e.g. reset, or a simple design's answer to any invalidation)."""
        self._dc_cache.clear()
        self._pc_cache.clear()
        self._iotlb.clear()

    def _drop(self, victim: Callable[[tuple, _Translation], bool]) -> None:
        for key in [k for k, entry in self._iotlb.items() if victim(k, entry)]:
            del self._iotlb[key]

    @property
    def iotlb_size(self) -> int:
        """Number of translations held in the IOTLB (for tests and reports)."""
        return len(self._iotlb)

    # =========================================================== memory access
    def _load(self, addr: int, dwords: int, big_endian: bool, who: str, access_cause: int,
              corruption_cause: int, what: str) -> list[int]:
        """``dwords`` 64-bit words at ``addr`` in the given byte order; a PMA/PMP refusal
        (or an address at or above 2^PAS) and poisoned data stop with the given causes."""
        size = dwords * _DWORD
        if addr + size > self.pa_limit:
            raise _Stop(access_cause, f"{what} at {addr:#x} is beyond the {self.pa_limit:#x} "
                        f"physical address limit (PAS)")
        try:
            raw = self.memory.read(addr, size, who)
        except AccessFault:
            raise _Stop(access_cause, f"access fault reading the {what} at {addr:#x}") from None
        except DataCorruption:
            raise _Stop(corruption_cause, f"poisoned {what} at {addr:#x}") from None
        order = "big" if big_endian else "little"
        return [int.from_bytes(raw[k : k + _DWORD], order) for k in range(0, size, _DWORD)]

    def _cas(self, addr: int, expected: int, new: int, big_endian: bool, who: str,
             faults: _FaultKinds, what: str) -> int:
        """Atomic compare-and-swap of a PTE (the A/D update, §5.5); returns the old PTE.

        A refused store is an access fault of the original access type."""
        if addr + _DWORD > self.pa_limit:
            raise _Stop(faults.access_fault, f"{what} at {addr:#x} is beyond PAS")
        swap = _bswap64 if big_endian else (lambda value: value)
        try:
            old = self.memory.cas64(addr, swap(expected), swap(new), who)
        except AccessFault:
            raise _Stop(faults.access_fault, f"access fault on the {what} at {addr:#x}") from None
        except DataCorruption:
            raise _Stop(faults.corruption, f"poisoned PTE at {addr:#x} during the {what}") from None
        return swap(old)

    # =========================================================== the answer
    def _response(self, run: _Run, t: _Translation) -> Response:
        """Build the success response (§1.1): permissions are what both stages allow."""
        req = run.request
        stages = [p for p in (t.fs, t.gs) if p is not None]
        r = all(p.r for p in stages)
        w = all(p.w for p in stages)
        x = all(p.x for p in stages)
        if run.ats:
            # §6.4: R as allowed; W only if requested (No-Write = 0) and D is set; X only
            # if requested and R is granted; a Supervisor gets no X from a U page.
            supervisor_u = bool(req.pv and req.priv == Priv.SUPERVISOR and t.fs and t.fs.u)
            w = req.access == Access.WRITE and r and w and all(p.d for p in stages)
            x = req.access == Access.EXECUTE and r and x and not supervisor_u
            u = t.mrif is not None  # "untranslated access only" for MRIF-mode MSI pages
            g = t.global_ and bool(req.pv) and not t.msi
            base = t.gpa_base if run.t2gpa else t.spa_base
        else:
            u = t.fs.u if t.fs is not None else True
            g = t.global_ and not t.msi
            base = t.spa_base
        spa = base | (req.iova & (t.size - 1))
        if t.mrif is not None and not (run.ats and run.t2gpa):
            spa = t.mrif.mrif_address  # the MRIF itself; the write goes through Outcome.mrif
        return Response(Status.SUCCESS, tag=req.tag, spa=spa, page_size=t.size,
                        r=r, w=w, x=x, u=u, g=g, pbmt=t.pbmt, msi=t.msi, mrif=t.mrif)

    def _fault_outcome(self, run: _Run, stop: _Stop) -> Outcome:
        req = run.request
        if run.ats and stop.cause in _ATS_SUCCESS_CAUSES:
            # §6.4: Success completion with R=W=0, no fault record.
            response = Response(Status.SUCCESS, tag=req.tag, cause=stop.cause)
            return Outcome(response, None, run.events, None, stop.reason)
        self.stats["faults"] += 1
        suppressed = run.dtf and stop.cause not in arch.CAUSES_REPORTED_DESPITE_DTF
        record = None
        if not suppressed:
            self.stats["records"] += 1
            pv = bool(req.pv)
            record = FaultRecord(
                cause=stop.cause, ttyp=arch.ttyp_of(req.addr_type, run.access),
                device_id=req.device_id, process_id=req.process_id if pv else 0, pv=pv,
                priv=pv and req.priv == Priv.SUPERVISOR, iotval=req.iova,
                iotval2=stop.iotval2)
        response = Response.fault(stop.cause, tag=req.tag, reported=record is not None)
        return Outcome(response, record, run.events, None, stop.reason)
