"""Context fetch: device_id/process_id → the translation context (§1.4 steps 5-16).

    req ─► DC cache ──hit──► step 7 ─► PC cache ──hit──► step 15 ─► res
              │miss                        │miss            ▲
              ▼                            ▼                │
           DDT walk (§2.5) ─► DC checks   PDT walk (§4.5) ─► PC checks
              (1-3 levels, 32- or 64-byte   (PD8/PD17/PD20, 16-byte PC; with an
               DC)                          active G-stage each entry's GPA goes
                                            through a G-stage walker first)

One request at a time. The walks use a private memory port with one read in flight
(8-byte aligned READs, ``mem_id`` on every request). DDT addresses are supervisor
physical addresses; PDT addresses are GPAs when the DC's ``iohgatp`` is not Bare
(§1.3), translated as implicit reads whose faults are guest-page faults (iotval2
bit 0 set) or 265/269 (§4.5 step 2).

Capabilities honoured: Sv39/Sv48/Sv57 (first-stage modes), Sv39x4/Sv48x4/Sv57x4
(iohgatp modes), MSI_FLAT (the extended, 64-byte DC with msiptp and the MSI address
mask/pattern, §2.3, §3.6), PD8/PD17/PD20, AMO_HWAD (SADE/GADE); MSI_MRIF changes no
DC check (the walker's MSI translator takes MRIF-mode PTEs). The constructor
refuses capabilities this block does not implement (ATS, T2GPA, END, Sv32, Sv32x4,
QOSID): with them a DC would have to be accepted that this block cannot honour.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from models import arch

from . import layouts
from .context_cache import ContextCache
from .walker import StageWalker, g_stage_schemes

C = arch.Cause

# Cycles from a request's handshake to its result when the DC cache (and the PC cache,
# when one is needed) hits: LOOKUP, DC_HIT, DECIDE, then the registered result.
HIT_LATENCY = 4


def _field(word, field: arch.Field):
    """``word[field]`` as an Amaranth slice (positions from ``models.arch``)."""
    return word[field.lo : field.lo + field.width]


class DeviceContextEntry(data.Struct):
    """What the DC cache keeps of a valid, well-formed DC."""

    dtf: unsigned(1)
    sade: unsigned(1)
    gade: unsigned(1)
    pdtv: unsigned(1)
    dpe: unsigned(1)
    fsc_mode: unsigned(4)  # iosatp.MODE (PDTV=0) or pdtp.MODE (PDTV=1)
    fsc_ppn: unsigned(layouts.PPN_BITS)  # a GPA when gs_mode is not Bare
    pscid: unsigned(layouts.PSCID_BITS)  # DC.ta.PSCID
    gs_mode: unsigned(4)  # iohgatp
    gs_ppn: unsigned(layouts.PPN_BITS)
    gscid: unsigned(layouts.GSCID_BITS)
    msi_flat: unsigned(1)  # msiptp.MODE = Flat (extended DC only)
    msiptp_ppn: unsigned(layouts.PPN_BITS)
    msi_mask: unsigned(layouts.MSI_ADDR_BITS)
    msi_pattern: unsigned(layouts.MSI_ADDR_BITS)


class ProcessContextEntry(data.Struct):
    """What the PC cache keeps of a valid, well-formed PC."""

    ens: unsigned(1)
    sum: unsigned(1)
    fs_mode: unsigned(4)
    fs_ppn: unsigned(layouts.PPN_BITS)
    pscid: unsigned(layouts.PSCID_BITS)


class ProcessTag(data.Struct):
    device_id: unsigned(layouts.DEVICE_ID_BITS)
    process_id: unsigned(layouts.PROCESS_ID_BITS)


class State(enum.Enum, shape=4):
    IDLE = 0
    LOOKUP = 1  # cache results are in: Off/Bare, device_id width, DC hit or DDT walk
    WALK = 2  # a DDT or PDT walk is reading memory
    DC_CHECK = 3  # all DC dwords are in: §3.7's rules
    DECIDE = 4  # a DC was hit or fetched and accepted: step 7, then PC cache or PDT walk
    PC_CHECK = 5  # both PC dwords are in: §4.4's rules
    RESPOND = 6
    XLATE = 7  # a PDT entry's GPA is offered to the G-stage walker
    XLATE_WAIT = 8  # the G-stage walker is translating it
    DC_VERDICT = 9  # the DC's faults in priority order, the rules' result registered
    PC_VERDICT = 10  # the same for the PC
    ENTRY_CHECK = 11  # a non-leaf DDTE / PDTE is in (registered): §2.4's checks, next read
    DC_HIT = 12  # the DC cache's DC is registered: step 7's checks are computed from it


# Capabilities this block cannot honour: a DC asking for them must still be refused
# with 259, which is only right if they are not advertised.
_UNSUPPORTED_CAPS = {
    "Sv32": arch.Cap.SV32, "Sv32x4": arch.Cap.SV32X4,
    "ATS": arch.Cap.ATS, "T2GPA": arch.Cap.T2GPA, "END": arch.Cap.END,
    "QOSID": arch.Cap.QOSID,
}


class ContextFetch(wiring.Component):
    """Device and process context lookup with DDT/PDT walks and their caches.

    Ports:
      ddtp, fctl: configuration registers; must be stable while a request is in flight.
      req:        a context request (layouts.ContextRequest). ``priv`` is only looked at
                  with ``pv`` (no PID: always User). Accepted only when idle.
      res:        one result per request (layouts.ContextResult): ``fault``/``cause``,
                  or the ``context``. ``context.dtf`` is the DC's DTF whenever a valid,
                  well-formed DC was found (also on faults after that point), else 0.
      mem_req/mem_resp: the walks' memory port, one request outstanding, id ``mem_id``:
                  8-byte READs (and, with a G-stage, the G-stage walker's A/D CAS);
                  ``mem_resp.ready`` is 1 except while the G-stage walker waits.
      inval:      IODIR.INVAL_DDT / INVAL_PDT operands (IOTINVAL kinds are ignored);
                  always ready, applied to the caches in the cycle it is valid. A fetch
                  that sees one before it completes still returns its result but does
                  not fill the caches.
      ddt_walk, pdt_walk: one-cycle pulse when a DDT / PDT walk starts (HPM events 5, 6).

    Latency: a request that hits the DC cache (and the PC cache, when one is needed)
    has its result valid ``HIT_LATENCY`` (4) cycles after the request handshake
    (LOOKUP, DC_HIT, DECIDE, then the registered result). A walk issues each
    read the cycle after the previous read's response.
    """

    def __init__(self, id_bits: int, mem_id: int, dc_entries: int, pc_entries: int,
                 capabilities: int):
        if not isinstance(id_bits, int) or id_bits < 1:
            raise ValueError(f"id_bits must be a positive integer, not {id_bits!r}")
        if not isinstance(mem_id, int) or not 0 <= mem_id < 1 << id_bits:
            raise ValueError(f"mem_id {mem_id!r} does not fit {id_bits} id bits")
        for name, value in (("dc_entries", dc_entries), ("pc_entries", pc_entries)):
            if not isinstance(value, int) or not 1 <= value <= 64:
                raise ValueError(f"{name} must be an integer in 1..64, not {value!r}")
        unsupported = [name for name, f in _UNSUPPORTED_CAPS.items() if f.get(capabilities)]
        if unsupported:
            raise ValueError(f"ContextFetch does not implement {', '.join(unsupported)}; "
                             f"clear those capability bits (see params.rtl_capabilities)")
        self.id_bits, self.mem_id = id_bits, mem_id
        self.dc_entries, self.pc_entries = dc_entries, pc_entries
        self.capabilities = capabilities
        self.extended = bool(arch.Cap.MSI_FLAT.get(capabilities))  # 64-byte DC (§2.3)
        self.gstage = bool(g_stage_schemes(capabilities))
        super().__init__({
            "ddtp": In(64),
            "fctl": In(32),
            "req": In(stream.Signature(layouts.ContextRequest)),
            "res": Out(stream.Signature(layouts.ContextResult)),
            "mem_req": Out(stream.Signature(layouts.mem_request(id_bits))),
            "mem_resp": In(stream.Signature(layouts.mem_response(id_bits))),
            "inval": In(stream.Signature(layouts.Invalidation)),
            "ddt_walk": Out(1),
            "pdt_walk": Out(1),
        })

    # ------------------------------------------------------------------ checks
    def _first_stage_mode_bad(self, mode):
        """An iosatp / PC.fsc MODE that is reserved, custom or not advertised (SXL=0)."""
        caps = self.capabilities
        ok = mode == arch.AtpMode.BARE
        for field, scheme in ((arch.Cap.SV39, arch.AtpMode.SV39),
                              (arch.Cap.SV48, arch.AtpMode.SV48),
                              (arch.Cap.SV57, arch.AtpMode.SV57)):
            if field.get(caps):
                ok = ok | (mode == scheme)
        return ~ok

    def _pdtp_mode_bad(self, mode):
        caps = self.capabilities
        ok = mode == arch.PdtpMode.BARE
        for field, pd in ((arch.Cap.PD8, arch.PdtpMode.PD8), (arch.Cap.PD17, arch.PdtpMode.PD17),
                          (arch.Cap.PD20, arch.PdtpMode.PD20)):
            if field.get(caps):
                ok = ok | (mode == pd)
        return ~ok

    def _gs_mode_bad(self, mode):
        """An iohgatp.MODE that is reserved or not advertised (GXL=0, §3.3)."""
        ok = mode == arch.AtpMode.BARE
        for scheme in g_stage_schemes(self.capabilities):
            ok = ok | (mode == scheme.mode)
        return ~ok

    def _msi_address_reserved(self, value, gs_mode):
        """msi_addr_mask/pattern bits [63:52] and [51:MGPAW-12] (§3.6) that are set."""
        pas = arch.Cap.PAS.get(self.capabilities)
        reserved = Const(0, 1)
        for scheme in g_stage_schemes(self.capabilities):
            width = min(layouts.MSI_ADDR_BITS, scheme.va_bits - arch.PAGE_SHIFT)
            reserved = reserved | ((gs_mode == scheme.mode) & value[width:].any())
        # Bare (or a mode check 13/14 refuses anyway): MGPAW = PAS.
        width = min(layouts.MSI_ADDR_BITS, pas - arch.PAGE_SHIFT)
        return reserved | (self._gs_mode_bad(gs_mode) | (gs_mode == 0)) & value[width:].any()

    def _dc_misconfigured(self, tc, iohgatp, ta, fsc, msiptp=None, msi_mask=None,
                          msi_pattern=None, dc_reserved=None):
        """§3.7 for a DC with V=1, under this block's capabilities (the last four
        dwords only in the extended format): a vector with a bit set if one of its
        group of rules is broken (the DC is misconfigured if any is set)."""
        caps = self.capabilities
        T = arch.Tc
        en_ats, en_pri, t2gpa, prpr = (_field(tc, f) for f in (T.EN_ATS, T.EN_PRI, T.T2GPA,
                                                               T.PRPR))
        pdtv, dpe, sade, gade = (_field(tc, f) for f in (T.PDTV, T.DPE, T.SADE, T.GADE))
        sbe, sxl = _field(tc, T.SBE), _field(tc, T.SXL)
        fsc_mode = _field(fsc, arch.Fsc.MODE)
        gs_mode = _field(iohgatp, arch.Iohgatp.MODE)
        fctl_be = _field(self.fctl, arch.Fctl.BE)
        fctl_gxl = _field(self.fctl, arch.Fctl.GXL)
        ta_reserved = arch.Ta.RESERVED_MASK | arch.Ta.RCID.mask | arch.Ta.MCID.mask  # no QOSID
        rules = [
            # 1: reserved bits (tc [23:12], [63:32]; ta incl. RCID/MCID; fsc [59:44])
            (tc & T.RESERVED_MASK) != 0,
            (ta & ta_reserved) != 0,
            (fsc & arch.Fsc.RESERVED_MASK) != 0,
            # 2-7: no ATS, no T2GPA capability
            en_ats | en_pri | prpr | t2gpa,
            # 8: pdtp.MODE reserved/custom or without its capability
            pdtv & self._pdtp_mode_bad(fsc_mode),
            # 9-11: iosatp.MODE (SXL=0 encodings; SXL=1 is refused below)
            ~pdtv & self._first_stage_mode_bad(fsc_mode),
            # 12: DPE is reserved without a PDT
            ~pdtv & dpe,
            # 13-14: iohgatp.MODE reserved or not advertised (GXL=1 is refused below)
            self._gs_mode_bad(gs_mode),
            # 17: a G-stage root is 16 KiB aligned
            (gs_mode != 0) & _field(iohgatp, arch.Iohgatp.PPN)[:2].any(),
            # 18
            (sade | gade) & (not arch.Cap.AMO_HWAD.get(caps)),
            # 19/21: END=0, fctl.BE is not writable: SBE must equal it
            sbe != fctl_be,
            # 20: GXL is not writable (no Sv32x4): SXL must be 0 (and GXL=1 needs SXL=1)
            sxl | fctl_gxl,
        ]
        if self.extended:
            msi_mode = _field(msiptp, arch.Msiptp.MODE)
            rules += [
                # 1: reserved bits of msiptp, msi_addr_mask/pattern, dword 7
                (msiptp & arch.Msiptp.RESERVED_MASK) != 0,
                self._msi_address_reserved(msi_mask, gs_mode),
                self._msi_address_reserved(msi_pattern, gs_mode),
                dc_reserved != 0,
                # 16: msiptp.MODE must be Off or Flat
                (msi_mode != arch.MsiptpMode.OFF) & (msi_mode != arch.MsiptpMode.FLAT),
                # 23: MSI translation needs an active G-stage
                (gs_mode == 0) & (msi_mode != arch.MsiptpMode.OFF),
            ]
        # One bit per group of 4 rules: the groups are registered and ORed the next
        # cycle, so that neither cycle holds the rules and their whole OR (issue 7).
        groups = []
        for i in range(0, len(rules), 4):
            bad = Const(0, 1)
            for rule in rules[i:i + 4]:
                bad = bad | rule
            groups.append(bad)
        return Cat(groups)

    def _pc_misconfigured(self, ta, fsc):
        """§4.4 for a PC with V=1 (SXL is always 0 in an accepted DC)."""
        return (((ta & arch.PcTa.RESERVED_MASK) != 0)
                | ((fsc & arch.Fsc.RESERVED_MASK) != 0)
                | self._first_stage_mode_bad(_field(fsc, arch.Fsc.MODE)))

    # -------------------------------------------------------------- elaborate
    def elaborate(self, platform):
        m = Module()

        # A DC or PC is filled only after its lookup missed, and one request at a time
        # is served: no other fill of that tag can come between (fill_missing_only).
        m.submodules.dc_cache = dc_cache = ContextCache(
            unsigned(layouts.DEVICE_ID_BITS), DeviceContextEntry, self.dc_entries,
            fill_missing_only=True)
        m.submodules.pc_cache = pc_cache = ContextCache(
            ProcessTag, ProcessContextEntry, self.pc_entries, fill_missing_only=True)

        state = Signal(State)
        q = Signal(layouts.ContextRequest)  # the request being served
        stale = Signal()  # an invalidation was seen: do not fill the caches
        dc = Signal(DeviceContextEntry)  # the accepted DC, once known
        pc_bad = Signal()  # PC_CHECK's verdict on §4.4's rules (misconfigured)
        pdt = Signal()  # the walk in progress is a PDT walk
        level = Signal(2)  # level of the entry being read (0 = the DC / PC itself)
        dc_dwords = 8 if self.extended else 4
        dword = Signal(range(dc_dwords))  # dword of the DC / PC being read
        leaf = [Signal(64, name=f"leaf_dw{i}") for i in range(dc_dwords)]
        # The non-leaf DDTE / PDTE being checked (ENTRY_CHECK) shares leaf_dw0, unused
        # until the leaf's first dword arrives; its error flags share the leaf's.
        nonleaf = leaf[0]
        nonleaf_invalid = Signal()  # its V bit is 0
        nonleaf_reserved = Signal()  # a reserved bit of it is set (§2.4, §4.3)
        leaf_access_fault = Signal()  # a response of the entry / leaf read had an error
        leaf_poison = Signal()

        # The PID in force: 0 without pv (DPE). A register loaded with ``q``, so that the
        # PC cache's lookup and fill tags come straight from flip-flops (issue 7).
        pid = Signal(layouts.PROCESS_ID_BITS)
        supervisor = Signal()
        m.d.comb += supervisor.eq(q.priv & q.pv)

        # -------------------------------------------------------- invalidation
        inval = self.inval.payload
        m.d.comb += self.inval.ready.eq(1)
        inval_fire = Signal()
        m.d.comb += inval_fire.eq(self.inval.valid & (
            (inval.kind == layouts.InvalKind.IODIR_INVAL_DDT)
            | (inval.kind == layouts.InvalKind.IODIR_INVAL_PDT)))
        inval_ddt = inval.kind == layouts.InvalKind.IODIR_INVAL_DDT
        m.d.comb += [
            # IODIR.INVAL_DDT: DV=1 one device's DC, DV=0 all DCs.
            dc_cache.inval_en.eq(inval_fire & inval_ddt),
            dc_cache.inval_tag.eq(inval.device_id),
            dc_cache.inval_mask.eq(inval.dv.replicate(layouts.DEVICE_ID_BITS)),
            # INVAL_DDT also drops that device's PCs (all PCs with DV=0);
            # INVAL_PDT drops the PC of (device_id, process_id) (all PCs if DV=0: an
            # illegal command the queue refuses, flushed here to be safe).
            pc_cache.inval_en.eq(inval_fire),
            pc_cache.inval_tag.device_id.eq(inval.device_id),
            pc_cache.inval_tag.process_id.eq(inval.process_id),
            pc_cache.inval_mask.device_id.eq(inval.dv.replicate(layouts.DEVICE_ID_BITS)),
            pc_cache.inval_mask.process_id.eq(
                (inval.dv & ~inval_ddt).replicate(layouts.PROCESS_ID_BITS)),
        ]

        # ----------------------------------------------------------- request
        accept = Signal()
        req = self.req.payload
        m.d.comb += [
            self.req.ready.eq(state == State.IDLE),
            accept.eq(self.req.valid & self.req.ready),
            # The DC cache looks up whatever request is offered, in every idle cycle: the
            # last such lookup is the accepted request's, and the lookup's enable comes
            # from the state register, not from ``req.valid`` (issue 7).
            dc_cache.lookup_en.eq(state == State.IDLE),
            dc_cache.lookup_tag.eq(req.device_id),
            # The PC cache is looked up a cycle later, from the registered request: its
            # hit is first needed in DECIDE, and the request's PID masking and the
            # 44-bit compare in one cycle were 8 levels into its hit vector (issue 7).
            pc_cache.lookup_en.eq(state == State.LOOKUP),
            pc_cache.lookup_tag.device_id.eq(q.device_id),
            pc_cache.lookup_tag.process_id.eq(pid),
        ]
        # ddtp's mode verdicts (steps 1-5: Off, Bare, a reserved mode, a device_id wider
        # than the DDT's indexes), registered with the request, so that LOOKUP's choice
        # is one LUT of registers and the DC cache's hit (the device_id's wide zero
        # tests, the mode's decode and LOOKUP's priority in one cycle were 7-12 levels
        # into the state and the walk's registers, issue 7). ddtp is sampled as the
        # request is accepted, a cycle before LOOKUP.
        lvl1_bits, lvl2_bits = (6, 15) if self.extended else (7, 16)
        refuse_all = Signal()  # Off or a reserved mode: cause 256
        refuse_type = Signal()  # Bare (the core answers it), or a device_id too wide: 260
        with m.If(accept):
            accept_mode = _field(self.ddtp, arch.Ddtp.IOMMU_MODE)
            accept_fits = (((accept_mode != arch.DdtpMode.LVL1) | (req.device_id[lvl1_bits:] == 0))
                           & ((accept_mode != arch.DdtpMode.LVL2) | (req.device_id[lvl2_bits:] == 0)))
            accept_lvl = ((accept_mode == arch.DdtpMode.LVL1) | (accept_mode == arch.DdtpMode.LVL2)
                          | (accept_mode == arch.DdtpMode.LVL3))
            m.d.sync += [q.eq(req), stale.eq(inval_fire), state.eq(State.LOOKUP),
                         pid.eq(req.process_id & req.pv.replicate(layouts.PROCESS_ID_BITS)),
                         refuse_all.eq(~accept_lvl & (accept_mode != arch.DdtpMode.BARE)),
                         refuse_type.eq((accept_mode == arch.DdtpMode.BARE)
                                        | (accept_lvl & ~accept_fits))]
        with m.Elif(inval_fire):
            m.d.sync += stale.eq(1)

        # -------------------------------------------------------- result bus
        # Exactly one of the blocks below drives ``finish`` in a cycle; the result is
        # registered into ``res`` and held until taken.
        finish = Signal()
        out = Signal(layouts.ContextResult)
        with m.If(finish):
            m.d.sync += [self.res.valid.eq(1), state.eq(State.RESPOND)]
        # The payload register follows ``out`` until a result is valid, then holds: its
        # enable is ``~res.valid`` (a register), not ``finish``, which comes at the end of
        # the checks and would have to reach every result bit's enable (issue 7).
        with m.If(~self.res.valid):
            m.d.sync += self.res.payload.eq(out)
        with m.If(self.res.valid & self.res.ready):
            m.d.sync += [self.res.valid.eq(0), state.eq(State.IDLE)]

        def fault(cause, dtf=0, iotval2=0):
            m.d.comb += [finish.eq(1), out.fault.eq(1), out.cause.eq(cause),
                         out.context.dtf.eq(dtf), out.iotval2.eq(iotval2)]

        # ------------------------------------------------------- memory port
        # The walks' own reads (``own_valid``/``own_addr``); with a G-stage, the G-stage
        # walker's reads and A/D updates share the port (never both outstanding: the
        # PDT walk waits in XLATE_WAIT while the G-stage walks).
        own_valid = Signal()
        own_addr = Signal(layouts.PA_BITS)
        own_req = Signal(layouts.mem_request(self.id_bits))
        m.d.comb += [
            own_req.id.eq(self.mem_id),
            own_req.op.eq(layouts.MemOp.READ),
            own_req.addr.eq(own_addr),
        ]
        with m.If(own_valid & self.mem_req.ready):
            m.d.sync += own_valid.eq(0)
        if self.gstage:
            m.submodules.g_stage = gsw = StageWalker(self.id_bits, self.mem_id,
                                                     self.capabilities, gstage=True)
            xlate_wait = state == State.XLATE_WAIT
            m.d.comb += [
                self.mem_req.valid.eq(own_valid | gsw.mem_req.valid),
                self.mem_req.payload.eq(Mux(own_valid, own_req, gsw.mem_req.payload)),
                gsw.mem_req.ready.eq(self.mem_req.ready & ~own_valid),
                gsw.mem_resp.valid.eq(self.mem_resp.valid & xlate_wait),
                gsw.mem_resp.payload.eq(self.mem_resp.payload),
                self.mem_resp.ready.eq(Mux(xlate_wait, gsw.mem_resp.ready, 1)),
            ]
        else:
            m.d.comb += [self.mem_req.valid.eq(own_valid), self.mem_req.payload.eq(own_req),
                         self.mem_resp.ready.eq(1)]

        did = q.device_id
        if self.extended:
            ddi = [did[0:6], did[6:15], did[15:24]]  # extended-format DC (§2.3)
        else:
            ddi = [did[0:7], did[7:16], did[16:24]]  # base-format DC (§2.3)
        dc_log2 = 6 if self.extended else 5
        pdi = [pid[0:8], pid[8:17], pid[17:20]]  # §4.2

        def entry_address(ppn, entry_level, is_pdt):
            """Address of the entry at ``entry_level`` in the table at ``ppn``."""
            offset = Signal(12)
            with m.Switch(Cat(entry_level[:2], is_pdt)):
                for lvl in range(3):
                    with m.Case(lvl):  # DDT: 8-byte DDTEs, 32- or 64-byte DCs
                        m.d.comb += offset.eq(ddi[lvl] << (dc_log2 if lvl == 0 else 3))
                    with m.Case(lvl | 4):  # PDT: 8-byte PDTEs, 16-byte PCs
                        m.d.comb += offset.eq(pdi[lvl] << (4 if lvl == 0 else 3))
            addr = Signal(layouts.PA_BITS)
            m.d.comb += addr.eq(Cat(offset, ppn))
            return addr

        gpa = Signal(layouts.PA_BITS)  # the PDT entry's GPA being translated

        def prepare_walk(is_pdt, ppn, top_level):
            """Load a walk's registers (its first read's address too). Called in every
            cycle of a state that may start the walk, whether it does or not: the
            registers mean nothing until it does, and their enables then come from the
            state alone, not from the checks that decide (issue 7)."""
            addr = entry_address(ppn, top_level, Const(is_pdt, 1))
            m.d.sync += [
                pdt.eq(is_pdt), level.eq(top_level), dword.eq(0),
                leaf_access_fault.eq(0), leaf_poison.eq(0), own_addr.eq(addr),
            ]
            if self.gstage:
                m.d.sync += gpa.eq(addr)

        def start_walk(is_pdt, through_gs=None):
            """Start the walk ``prepare_walk`` loaded: its first read, or with a
            G-stage its first entry's GPA to translate (§4.5)."""
            m.d.sync += state.eq(State.WALK)
            if self.gstage and through_gs is not None:
                with m.If(through_gs):
                    m.d.sync += state.eq(State.XLATE)
                with m.Else():
                    m.d.sync += own_valid.eq(1)
            else:
                m.d.sync += own_valid.eq(1)
            m.d.comb += (self.pdt_walk if is_pdt else self.ddt_walk).eq(1)

        # ----------------------------------------- decisions once the DC is known
        # ``dc_now``: the accepted DC (a DC cache hit's or a fetched one), registered.
        dc_now = dc
        decide = Signal()  # step 7 onwards for the DC in dc_now
        pc_now = Signal(ProcessContextEntry)  # the PC cache's entry, or a fetched PC
        use_pc = Signal()  # finish with pc_now (step 15, 16)

        mode = _field(self.ddtp, arch.Ddtp.IOMMU_MODE)

        # Step 7's checks and steps 10-13's choice of first stage, computed in the cycle
        # before DECIDE from the DC that DECIDE will use, already in ``dc`` (a DC cache
        # hit's in DC_HIT, a fetched DC in DC_VERDICT), and registered: loaded in every
        # cycle, they are only looked at in DECIDE. From the request and the DC through
        # these checks, the PC cache's hit and the walk start into the result and the
        # memory request was 11-12 levels; computed from the DC cache's RAM read in
        # LOOKUP, they were the whole IOMMU's routed critical path (89.9 MHz, issue 7):
        # a DC cache hit takes a cycle more (DC_HIT) so that they start at ``dc``.
        pd_mode = dc.fsc_mode
        pid_fits = (((pd_mode != arch.PdtpMode.PD8) | (q.process_id[8:] == 0))
                    & ((pd_mode != arch.PdtpMode.PD17) | (q.process_id[17:] == 0)))
        decide_refuse = Signal()  # step 7 (and the PID checks of 8-9): cause 260
        decide_iosatp = Signal()  # step 10: first stage from iosatp
        decide_bare = Signal()  # steps 12, 13: first stage Bare
        m.d.sync += [
            decide_refuse.eq((q.addr_type != layouts.AddrType.UNTRANSLATED)
                             | (q.pv & ~dc.pdtv) | (q.pv & ~pid_fits)),
            decide_iosatp.eq(~dc.pdtv),
            decide_bare.eq((~q.pv & ~dc.dpe) | (dc.fsc_mode == arch.PdtpMode.BARE)),
        ]

        if self.gstage:
            # §4.5 step 2: the PDT entry's GPA through the G-stage as an implicit read;
            # its faults are the original access's guest-page faults (iotval2 = the GPA
            # with bit 0 set), 265 or 269.
            g_req = gsw.req.payload
            m.d.comb += [
                g_req.gpa.eq(gpa),
                g_req.access.eq(layouts.Access.READ),
                g_req.orig_access.eq(q.access),
                g_req.iotval2_flags.eq(0b01),
                g_req.in_pdt.eq(1),
                g_req.gs_mode.eq(dc.gs_mode),
                g_req.gs_ppn.eq(dc.gs_ppn),
                g_req.gade.eq(dc.gade),
            ]

        # The cache entries a fetched DC / PC makes, and the caches' fill tags and data,
        # straight from the dwords read: only ``fill_en`` waits for the checks, so the
        # caches' victim choice (made on the fill tag) is not behind them (issue 7).
        dc_entry = Signal(DeviceContextEntry)
        tc, iohgatp, ta, fsc = leaf[:4]
        gs_on = _field(iohgatp, arch.Iohgatp.MODE) != 0
        # All of ``dc_entry`` assigned first (the MSI fields stay 0 in the base format):
        # no constant-only process in the Verilog (ALWNEVER).
        m.d.comb += dc_entry.eq(0)
        m.d.comb += [
            dc_entry.dtf.eq(_field(tc, arch.Tc.DTF)),
            dc_entry.sade.eq(_field(tc, arch.Tc.SADE)),
            dc_entry.gade.eq(_field(tc, arch.Tc.GADE)),
            dc_entry.pdtv.eq(_field(tc, arch.Tc.PDTV)),
            dc_entry.dpe.eq(_field(tc, arch.Tc.DPE)),
            dc_entry.fsc_mode.eq(_field(fsc, arch.Fsc.MODE)),
            dc_entry.fsc_ppn.eq(_field(fsc, arch.Fsc.PPN)),
            dc_entry.pscid.eq(_field(ta, arch.Ta.PSCID)),
            dc_entry.gs_mode.eq(_field(iohgatp, arch.Iohgatp.MODE)),
            # A Bare iohgatp's PPN and GSCID mean nothing (§3.3): keep 0s, so the IOTLB
            # tags host translations with GSCID 0.
            dc_entry.gs_ppn.eq(Mux(gs_on, _field(iohgatp, arch.Iohgatp.PPN), 0)),
            dc_entry.gscid.eq(Mux(gs_on, _field(iohgatp, arch.Iohgatp.GSCID), 0)),
        ]
        if self.extended:
            msiptp, msi_mask, msi_pattern = leaf[4:7]
            m.d.comb += [
                dc_entry.msi_flat.eq(_field(msiptp, arch.Msiptp.MODE) == arch.MsiptpMode.FLAT),
                dc_entry.msiptp_ppn.eq(_field(msiptp, arch.Msiptp.PPN)),
                dc_entry.msi_mask.eq(_field(msi_mask, arch.MSI_ADDR_MASK)),
                dc_entry.msi_pattern.eq(_field(msi_pattern, arch.MSI_ADDR_MASK)),
            ]
        pc_entry = Signal(ProcessContextEntry)
        pc_ta, pc_fsc = leaf[0], leaf[1]
        m.d.comb += [
            pc_entry.ens.eq(_field(pc_ta, arch.PcTa.ENS)),
            pc_entry.sum.eq(_field(pc_ta, arch.PcTa.SUM)),
            pc_entry.pscid.eq(_field(pc_ta, arch.PcTa.PSCID)),
            pc_entry.fs_mode.eq(_field(pc_fsc, arch.Fsc.MODE)),
            pc_entry.fs_ppn.eq(_field(pc_fsc, arch.Fsc.PPN)),
            dc_cache.fill_tag.eq(did),
            dc_cache.fill_data.eq(dc_entry),
            pc_cache.fill_tag.device_id.eq(did),
            pc_cache.fill_tag.process_id.eq(pid),
            pc_cache.fill_data.eq(pc_entry),
        ]

        # §3.7's and §4.4's rules, registered in every cycle from the dwords read: they
        # are only looked at in DC_VERDICT / PC_VERDICT, the cycle after DC_CHECK /
        # PC_CHECK (the dwords do not change after the walk's last read), so their
        # registers need no enable (issue 7).
        dc_rule_groups = self._dc_misconfigured(tc, iohgatp, ta, fsc, *leaf[4:])
        dc_bad = Signal(len(dc_rule_groups))  # a group of §3.7's rules is broken
        m.d.sync += [dc_bad.eq(dc_rule_groups),
                     pc_bad.eq(self._pc_misconfigured(pc_ta, pc_fsc))]

        with m.Switch(state):
            with m.Case(State.LOOKUP):
                # The DC and the DDT walk's registers are loaded whatever the checks
                # below find; only the state, own_valid and the result wait for them.
                m.d.sync += dc.eq(dc_cache.data)
                prepare_walk(0, _field(self.ddtp, arch.Ddtp.PPN), (mode - 2)[:2])
                with m.If(refuse_all):
                    fault(C.ALL_INBOUND_DISALLOWED)  # Off, or a reserved mode
                with m.Elif(refuse_type):
                    # Bare (the core answers Bare itself), or a device_id too wide.
                    fault(C.TRANSACTION_TYPE_DISALLOWED)
                with m.Elif(dc_cache.hit):
                    # Step 7 on waits two cycles (DC_HIT, DECIDE): from the cache's
                    # select through the DC's decisions and the PC cache's hit to the
                    # result was the context fetch's longest path (issue 7).
                    m.d.sync += state.eq(State.DC_HIT)
                with m.Else():
                    start_walk(0)

            with m.Case(State.DC_HIT):
                m.d.sync += state.eq(State.DECIDE)

            with m.Case(State.WALK):
                resp = self.mem_resp.payload
                rdata = resp.rdata
                with m.If(self.mem_resp.valid):
                    with m.If(level != 0):
                        # A non-leaf DDTE / PDTE (§2.4) is registered with its V and
                        # reserved-bit tests, and acted on in ENTRY_CHECK: the tests,
                        # the fault priority and the next read's address straight from
                        # the response were the context fetch's longest path from the
                        # memory port (issue 7).
                        m.d.sync += [
                            nonleaf.eq(rdata),
                            leaf_access_fault.eq(resp.err == layouts.MemErr.ACCESS_FAULT),
                            leaf_poison.eq(resp.err == layouts.MemErr.POISON),
                            nonleaf_invalid.eq(~_field(rdata, arch.Ddte.V)),
                            nonleaf_reserved.eq((rdata & arch.Ddte.RESERVED_MASK) != 0),
                            state.eq(State.ENTRY_CHECK),
                        ]
                    with m.Else():  # a dword of the DC / PC: all are read, then checked
                        with m.Switch(dword):
                            for i in range(dc_dwords):
                                with m.Case(i):
                                    m.d.sync += leaf[i].eq(rdata)
                        with m.If(resp.err == layouts.MemErr.ACCESS_FAULT):
                            m.d.sync += leaf_access_fault.eq(1)
                        with m.If(resp.err == layouts.MemErr.POISON):
                            m.d.sync += leaf_poison.eq(1)
                        last = Mux(pdt, dword == 1, dword == dc_dwords - 1)
                        with m.If(last):
                            m.d.sync += state.eq(Mux(pdt, State.PC_CHECK, State.DC_CHECK))
                        with m.Else():
                            # The PC's second dword is in the same page as its first:
                            # its GPA needs no second translation.
                            # A DC (32 or 64 bytes) and a PC (16) are aligned to their
                            # size: the next dword's address only counts in bits [3:6]
                            # (no 56-bit carry chain in front of own_addr, issue 7).
                            m.d.sync += [
                                own_valid.eq(1),
                                own_addr[3:6].eq(own_addr[3:6] + 1),
                                dword.eq(dword + 1),
                            ]

            with m.Case(State.ENTRY_CHECK):
                # The next read's address and level are loaded whatever the checks find
                # (a walk that faults never uses them): only own_valid and the state
                # wait for the checks, not the 56 address bits' enables (issue 7).
                next_addr = entry_address(_field(nonleaf, arch.Ddte.PPN), (level - 1)[:2], pdt)
                m.d.sync += [level.eq(level - 1), own_addr.eq(next_addr)]
                if self.gstage:
                    m.d.sync += gpa.eq(next_addr)
                dtf = dc.dtf & pdt
                with m.If(leaf_access_fault):
                    fault(Mux(pdt, C.PDT_ENTRY_LOAD_ACCESS_FAULT, C.DDT_LOAD_ACCESS_FAULT), dtf)
                with m.Elif(leaf_poison):
                    fault(Mux(pdt, C.PDT_DATA_CORRUPTION, C.DDT_DATA_CORRUPTION), dtf)
                with m.Elif(nonleaf_invalid):
                    fault(Mux(pdt, C.PDT_ENTRY_NOT_VALID, C.DDT_ENTRY_NOT_VALID), dtf)
                with m.Elif(nonleaf_reserved):
                    fault(Mux(pdt, C.PDT_ENTRY_MISCONFIGURED, C.DDT_ENTRY_MISCONFIGURED), dtf)
                with m.Elif(pdt & (dc.gs_mode != 0) if self.gstage else Const(0, 1)):
                    m.d.sync += state.eq(State.XLATE)  # the PDTE's GPA, in ``gpa``
                with m.Else():
                    m.d.sync += [own_valid.eq(1), state.eq(State.WALK)]

            if self.gstage:
                with m.Case(State.XLATE):
                    m.d.comb += gsw.req.valid.eq(1)
                    with m.If(gsw.req.ready):
                        m.d.sync += state.eq(State.XLATE_WAIT)
                with m.Case(State.XLATE_WAIT):
                    m.d.comb += gsw.res.ready.eq(1)
                    g_res = gsw.res.payload
                    with m.If(gsw.res.valid):
                        with m.If(g_res.fault):
                            fault(g_res.cause, dc.dtf, g_res.iotval2)
                        with m.Else():
                            m.d.sync += [
                                state.eq(State.WALK), own_valid.eq(1),
                                own_addr.eq(Cat(gpa[:arch.PAGE_SHIFT], g_res.ppn)),
                            ]

            with m.Case(State.DC_CHECK):
                # §3.7's rules take a cycle of their own, registered in ``dc_bad``, and
                # the DC is loaded whatever they find (a refused one is never used):
                # rules, verdict, result and the DC's enables in one cycle were the
                # context fetch's longest path (issue 7).
                m.d.sync += [dc.eq(dc_entry), state.eq(State.DC_VERDICT)]

            with m.Case(State.DC_VERDICT):
                with m.If(leaf_access_fault):
                    fault(C.DDT_LOAD_ACCESS_FAULT)
                with m.Elif(leaf_poison):
                    fault(C.DDT_DATA_CORRUPTION)
                with m.Elif(~_field(tc, arch.Tc.V)):
                    fault(C.DDT_ENTRY_NOT_VALID)
                with m.Elif(dc_bad.any()):
                    fault(C.DDT_ENTRY_MISCONFIGURED)
                with m.Else():
                    m.d.comb += dc_cache.fill_en.eq(~stale & ~inval_fire)
                    m.d.sync += state.eq(State.DECIDE)

            with m.Case(State.DECIDE):
                m.d.comb += decide.eq(1)
                prepare_walk(1, dc_now.fsc_ppn, (dc_now.fsc_mode - 1)[:2])

            with m.Case(State.PC_CHECK):
                # §4.4's rules get their own cycle, as the DC's do (issue 7).
                m.d.sync += state.eq(State.PC_VERDICT)

            with m.Case(State.PC_VERDICT):
                with m.If(leaf_access_fault):
                    fault(C.PDT_ENTRY_LOAD_ACCESS_FAULT, dc_now.dtf)
                with m.Elif(leaf_poison):
                    fault(C.PDT_DATA_CORRUPTION, dc_now.dtf)
                with m.Elif(~_field(pc_ta, arch.PcTa.V)):
                    fault(C.PDT_ENTRY_NOT_VALID, dc_now.dtf)
                with m.Elif(pc_bad):
                    fault(C.PDT_ENTRY_MISCONFIGURED, dc_now.dtf)
                with m.Else():
                    m.d.comb += [
                        pc_cache.fill_en.eq(~stale & ~inval_fire),
                        pc_now.eq(pc_entry),
                        use_pc.eq(1),
                    ]

        # Step 7, then steps 10-14 (first stage from iosatp, Bare, or the PC).
        # The context's fields (all but DTF) are driven whatever the verdict, from
        # registers and selects that are registers: a fault's context is ignored (only
        # its DTF counts), and the verdict's chain (refuse, iosatp, Bare, the PC cache's
        # hit, ENS) in front of ~200 result bits was the whole IOMMU's routed critical
        # path (75.9 MHz, issue 7). Only ``finish``, the fault, cause and DTF wait for it.
        ctx = out.context
        m.d.comb += [ctx.sade.eq(dc_now.sade), ctx.gade.eq(dc_now.gade),
                     ctx.gs_mode.eq(dc_now.gs_mode), ctx.gs_ppn.eq(dc_now.gs_ppn),
                     ctx.gscid.eq(dc_now.gscid), ctx.msi_flat.eq(dc_now.msi_flat),
                     ctx.msiptp_ppn.eq(dc_now.msiptp_ppn),
                     ctx.msi_mask.eq(dc_now.msi_mask),
                     ctx.msi_pattern.eq(dc_now.msi_pattern)]
        # The first stage: from iosatp (step 10), Bare (12, 13), or the PC (15, 16): the
        # cache's in DECIDE, the fetched one in PC_VERDICT (where decide_iosatp and
        # decide_bare are 0: that DC has a PDT the request uses).
        pc_src = Signal(ProcessContextEntry)
        m.d.comb += pc_src.eq(Mux(state == State.PC_VERDICT, pc_entry, pc_cache.data))
        with m.If(decide_iosatp):
            m.d.comb += [ctx.ens.eq(1), ctx.fs_mode.eq(dc_now.fsc_mode),
                         ctx.fs_ppn.eq(dc_now.fsc_ppn), ctx.pscid.eq(dc_now.pscid)]
        with m.Elif(decide_bare):
            m.d.comb += ctx.ens.eq(1)
        with m.Else():
            m.d.comb += [ctx.ens.eq(pc_src.ens), ctx.sum.eq(pc_src.sum),
                         ctx.fs_mode.eq(pc_src.fs_mode), ctx.fs_ppn.eq(pc_src.fs_ppn),
                         ctx.pscid.eq(pc_src.pscid)]

        def succeed():
            m.d.comb += [finish.eq(1), ctx.dtf.eq(dc_now.dtf)]

        with m.If(decide):
            dtf = dc_now.dtf
            with m.If(decide_refuse):
                # Not untranslated (EN_ATS is 0 in every valid DC), or a PID without a
                # PDT, or one wider than the PDT's indexes.
                fault(C.TRANSACTION_TYPE_DISALLOWED, dtf)
            with m.Elif(decide_iosatp):  # step 10: iosatp, PSCID from DC.ta
                succeed()
            with m.Elif(decide_bare):
                succeed()  # steps 12, 13: first stage Bare
            with m.Elif(pc_cache.hit):
                m.d.comb += [pc_now.eq(pc_cache.data), use_pc.eq(1)]
            with m.Else():
                start_walk(1, dc_now.gs_mode != 0)

        with m.If(use_pc):  # steps 15, 16
            with m.If(supervisor & ~pc_now.ens):
                fault(C.TRANSACTION_TYPE_DISALLOWED, dc_now.dtf)
            with m.Else():
                succeed()
        return m

