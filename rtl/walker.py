"""Page-table walkers: first stage (Sv39/48/57), G-stage (Sv39x4/48x4/57x4) and nested.

``StageWalker`` walks one stage's table for one address (digest §5.3-§5.6):

    req ─► IDLE ─► START ──Bare / address out of range──────────────────────────────► DONE ─► res
                       └─► [XLATE ─► XLATE_WAIT] ─► READ_PTE ─► WAIT_PTE ─► CHECK_PTE ──pointer──► next level
                              ▲                                  ├──leaf, A/D fine, or any fault──► DONE
                              │                                  └──leaf needs A/D ─► [XLATE ...] UPDATE_AD ─► WAIT_AD ─► CHECK_AD
                              └──────── CAS saw a different PTE: re-read that level ◄───────────────────────────────────────┘

The bracketed states exist only in a first-stage walker built for nesting: with an
active G-stage every first-stage PTE address is a GPA (§1.3, §5.7), which the walker
hands to a G-stage walker on ``gpa_req`` (an implicit read, or an implicit write for
the A/D update) before touching memory. A G-stage walker differs from a first-stage
one in what §5.7 changes: the GPA's bits above the scheme must be 0, the root is
16 KiB with an 11-bit top VPN, every access counts as User, A/D updates follow GADE,
and faults are guest-page faults with ``iotval2`` = GPA[63:2] << 2 | flags.

``PageTableWalker`` is one miss slot's walker: a first-stage walker, plus (when the
capabilities name a G-stage scheme) a G-stage walker that serves the first stage's
implicit translations and then translates the final GPA (§1.4 steps 17 and 19).

Timing: the PTE is registered as it arrives (WAIT_PTE) and checked the next cycle
(CHECK_PTE), which also computes the next level's address; the read is issued
(``mem_req.valid``) the cycle after that, so a level costs two cycles more than the
memory latency. (Checking in the cycle the response arrives made the memory response
-> permission / A/D / cause checks -> result path the IOMMU's longest, issue 7.) With
memory that answers ``L`` cycles after accepting a request (and accepts at once), a
first-stage walk with a Bare G-stage has ``res.valid`` ``levels * (L + 2) + 2`` cycles
after the request handshake (Sv39, no A/D update: ``3 * (L + 2) + 2``; START, which acts
on the request's registered verdicts, is the extra cycle); an A/D update
adds ``L + 2``. A Bare or
non-canonical request answers two cycles after it is taken. Nested walks add, per
first-stage level, a G-stage walk and two cycles of hand-over, and the final G-stage
walk plus three cycles.

Every handshake signal a walker drives (``req.ready``, ``res.valid``, ``mem_req.valid``,
``mem_resp.ready``) and its memory request payload are flip-flops, kept equal to the
state they stand for (``goto``); steps 2-7 are made on the PTE as it arrives and
CHECK_PTE decides on four registered verdicts (issue 7). None of this costs a cycle.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal, Value
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from models import arch

from . import layouts, params
from .msi import LEAF_SIZES_LOG2, MsiRequest, MsiTranslator, msi_pages_within_parts
from .walk_cache import WalkCache

__all__ = ["PTE_LAYOUT", "PageTableWalker", "StageWalker"]


#: PTE fields: v r w x u g a d rsw ppn reserved pbmt n (positions from ``arch.Pte``).
PTE_LAYOUT = layouts.dword_layout(arch.Pte)

# PTE bits [60:59] sit at the top of the ``reserved`` [60:54] field; with Svrsw60t59b
# software owns them and the walker ignores them (§5.2).
_RSW60_59 = (59 - arch.Pte.RESERVED.lo, 61 - arch.Pte.RESERVED.lo)
_PBMT_RESERVED = 3
# Svnapot (mandatory for the IOMMU): a 64 KiB page is a level-0 leaf with N=1 and
# PPN[3:0] = 1000b (§5.2).
_NAPOT_PPN_LOW = 0b1000
_NAPOT_LOG2 = 16
_VPN_BITS = 9
_PTE_BYTES_LOG2 = 3


def _vpn(iova, level: int):
    """VPN[level] of a first-stage address (§5.1): IOVA[12+9*level+8 : 12+9*level]."""
    lo = arch.PAGE_SHIFT + _VPN_BITS * level
    return iova[lo:lo + _VPN_BITS]


def _by_access(access, causes):
    """The cause among ``causes`` (a function of arch.Access) for the request's access."""
    return Mux(access == layouts.Access.EXECUTE, causes(arch.Access.EXECUTE),
               Mux(access == layouts.Access.WRITE, causes(arch.Access.WRITE),
                   causes(arch.Access.READ)))


def _or_all(values):
    """The bitwise OR of ``values`` (an iterable of Amaranth values)."""
    values = list(values)
    total = values[0]
    for value in values[1:]:
        total = total | value
    return total


def _pick_by_size(size_log2, per_size):
    """Bit k of ``per_size`` for the size ``LEAF_SIZES_LOG2[k]``; 1 for any other size
    (reporting 4 KiB is always safe), as an AND-OR of equality tests."""
    known = _or_all(size_log2 == size for size in LEAF_SIZES_LOG2)
    return _or_all((size_log2 == size) & per_size[k]
                   for k, size in enumerate(LEAF_SIZES_LOG2)) | ~known


def _pack(layout: data.StructLayout, **fields):
    """The value of a ``layout`` struct whose every field is given, as one expression.

    Driving a stream payload in one assignment (rather than field by field) keeps a
    constant field such as the memory id from becoming an empty ``always @*`` in the
    Verilog, which Verilator's lint rejects (ALWNEVER).
    """
    if set(fields) != {name for name, _ in layout}:
        raise ValueError(f"_pack needs exactly the fields {[name for name, _ in layout]}")
    parts = []
    for name, f in sorted(layout, key=lambda item: item[1].offset):
        value = Value.cast(fields[name])
        if len(value) > f.width:
            raise ValueError(f"{name} is {len(value)} bits wide, the field {f.width}")
        parts.append(value.as_unsigned() if len(value) == f.width
                     else Cat(value, C(0, f.width - len(value))))
    return Cat(*parts)


#: The walk FSM's states in declaration order: Amaranth numbers them this way in the
#: generated Verilog (``walk_state``), and the waveform save file decodes them with it.
WALKER_STATES = ("IDLE", "START", "READ_PTE", "WAIT_PTE", "CHECK_PTE", "UPDATE_AD", "WAIT_AD",
                 "DONE", "CHECK_AD", "XLATE", "XLATE_WAIT")

_FIRST_STAGE_CAPS = ((arch.SV39, arch.Cap.SV39), (arch.SV48, arch.Cap.SV48),
                     (arch.SV57, arch.Cap.SV57))
_G_STAGE_CAPS = ((arch.SV39X4_SCHEME, arch.Cap.SV39X4), (arch.SV48X4_SCHEME, arch.Cap.SV48X4),
                 (arch.SV57X4_SCHEME, arch.Cap.SV57X4))


def g_stage_schemes(capabilities: int) -> list:
    """The G-stage schemes ``capabilities`` advertises (Sv39x4/48x4/57x4)."""
    return [s for s, cap in _G_STAGE_CAPS if cap.get(capabilities)]


def _check_ids(id_bits, mem_id, capabilities):
    if not isinstance(id_bits, int) or id_bits < 1:
        raise ValueError(f"id_bits must be a positive integer, not {id_bits!r}")
    if not isinstance(mem_id, int) or not 0 <= mem_id < 1 << id_bits:
        raise ValueError(f"mem_id must be 0..{(1 << id_bits) - 1} for {id_bits} id bits, "
                         f"not {mem_id!r}")
    if not isinstance(capabilities, int) or capabilities < 0:
        raise ValueError(f"capabilities must be the register value, not {capabilities!r}")


class StageWalker(wiring.Component):
    """Walks one stage's page table for one address and returns the checked leaf or a fault.

    ``gstage=False`` (first stage) — ports:
      req:      ``layouts.WalkRequest``: ``iova``, ``access``, ``priv`` (1 = Supervisor;
                User when the request had no PID) and the ``context`` (``fs_mode``/``fs_ppn``
                = iosatp or PC.fsc, ``sade``, ``sum``; with ``nested``, ``gs_mode``/
                ``gs_ppn``/``gade`` too). Taken only when the walker is idle.
      gpa_req / gpa_res (only with ``nested``): the implicit G-stage translation of each
                PTE's GPA (``layouts.GStageRequest`` out, ``layouts.WalkResult`` back).
    ``gstage=True`` (G-stage) — ``req`` is a ``layouts.GStageRequest``.

    Both:
      res:      one ``layouts.WalkResult`` per request. ``fault``=1: ``cause`` (first stage:
                12/13/15 page fault; G-stage: 20/21/23 guest-page fault of ``orig_access``
                with ``iotval2``; 1/5/7 access fault or 274 data corruption — 265/269 for a
                G-stage walk ``in_pdt``; 272 for a mode this walker was not built for,
                which the context fetch never lets through). Otherwise ``ppn`` of the
                translated 4 KiB page (superpage and NAPOT low bits taken from the
                address), ``size_log2`` (12, 16, 21, 30, 39, 48), the leaf's
                ``r w x u g pbmt`` and ``d`` as it is in memory after any update.
      mem_req:  8-byte READs of PTEs and CAS for A/D updates, always with id ``mem_id``;
                at most one outstanding.
      mem_resp: the answer to the outstanding request; ``err`` ACCESS_FAULT or POISON.
                Ready only while a request is outstanding; ``id`` is not checked (the
                arbiter routes by id).

    ``capabilities`` (the register value) selects the schemes built, Svpbmt,
    Svrsw60t59b and AMO_HWAD (without it SADE/GADE are treated as 0).
    """

    def __init__(self, id_bits: int = 1, mem_id: int = 0,
                 capabilities: int = params.rtl_capabilities(), *, gstage: bool = False,
                 nested: bool = False):
        _check_ids(id_bits, mem_id, capabilities)
        if gstage and nested:
            raise ValueError("a G-stage walker is never nested (its PTE addresses are SPAs)")
        self.id_bits, self.mem_id, self.capabilities = id_bits, mem_id, capabilities
        self.gstage, self.nested = bool(gstage), bool(nested)
        caps = arch.Cap
        table = _G_STAGE_CAPS if gstage else _FIRST_STAGE_CAPS
        self.schemes = [s for s, cap in table if cap.get(capabilities)]
        self.svpbmt = bool(caps.SVPBMT.get(capabilities))
        self.svrsw60t59b = bool(caps.SVRSW60T59B.get(capabilities))
        self.amo_hwad = bool(caps.AMO_HWAD.get(capabilities))
        members = {
            "req": In(stream.Signature(layouts.GStageRequest if gstage
                                       else layouts.WalkRequest)),
            "res": Out(stream.Signature(layouts.WalkResult)),
            "mem_req": Out(stream.Signature(layouts.mem_request(id_bits))),
            "mem_resp": In(stream.Signature(layouts.mem_response(id_bits))),
        }
        if nested:
            members["gpa_req"] = Out(stream.Signature(layouts.GStageRequest))
            members["gpa_res"] = In(stream.Signature(layouts.WalkResult))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        max_levels = max((s.levels for s in self.schemes), default=1)
        req = self.req.payload
        gstage = self.gstage

        # ------------------------------------------------------------ walk state
        addr = Signal(layouts.IOVA_BITS)  # the IOVA (first stage) or GPA (G-stage) walked
        access = Signal(layouts.Access)  # what the leaf must allow
        orig_access = Signal(layouts.Access)  # what names the faults
        # Step 5 (§5.4) decided per request, not per PTE: a User request (always for the
        # G-stage) needs U=1; a Supervisor one may not use U=1 pages for execute, nor
        # at all without PC.ta.SUM (issue 7: two flags instead of priv/SUM/access logic
        # in front of the CHECK_PTE verdict).
        u_required = Signal()
        u_forbidden = Signal()
        ad_update = Signal()  # SADE/GADE and AMO_HWAD: set A/D instead of faulting
        iotval2_flags = Signal(2)  # G-stage: iotval2[1:0] on a guest-page fault
        in_pdt = Signal()  # G-stage walk of a PDT entry's GPA: 265/269
        level = Signal(range(max_levels))  # i of §5.3
        pte_addr = Signal(layouts.PA_BITS)  # a + VPN[i]*8 (a GPA when nested)
        pte = Signal(PTE_LAYOUT)  # the PTE the A/D update expects to find in memory
        result = Signal(layouts.WalkResult)
        # The memory request from flip-flops (issue 7: the arbiter's grant and mux sit
        # behind it): ``mem_req_valid`` is 1 exactly in READ_PTE and UPDATE_AD (``goto``
        # keeps it so), ``mem_op`` READ or CAS, and ``cas_d`` is the D bit the CAS
        # stores (PTE.D, or 1 for a write), registered with the PTE.
        mem_req_valid = Signal()
        mem_resp_ready = Signal()  # 1 exactly in WAIT_PTE and WAIT_AD
        req_ready = Signal(init=1)  # 1 exactly in IDLE (the reset state)
        res_valid = Signal()  # 1 exactly in DONE
        mem_op = Signal(layouts.MemOp)
        cas_d = Signal()
        if self.nested:
            gs_mode = Signal(4)
            gs_active = Signal()  # gs_mode != 0, registered with it
            gs_ppn = Signal(layouts.PPN_BITS)
            gade = Signal()
            pte_spa = Signal(layouts.PA_BITS)  # pte_addr through the G-stage
            xlate_write = Signal()  # the pending G-stage translation is for the A/D store
        else:
            pte_spa = pte_addr

        is_write = access == layouts.Access.WRITE
        is_exec = access == layouts.Access.EXECUTE

        if gstage:
            page_fault = _by_access(orig_access, arch.guest_page_fault_cause)
            fault_iotval2 = Cat(iotval2_flags, addr[2:])
            access_fault = Mux(in_pdt, arch.Cause.PDT_ENTRY_LOAD_ACCESS_FAULT,
                               _by_access(orig_access, arch.access_fault_cause))
            corruption = Mux(in_pdt, arch.Cause.PDT_DATA_CORRUPTION,
                             arch.Cause.PT_DATA_CORRUPTION)
        else:
            page_fault = _by_access(orig_access, arch.page_fault_cause)
            fault_iotval2 = 0
            access_fault = _by_access(orig_access, arch.access_fault_cause)
            corruption = arch.Cause.PT_DATA_CORRUPTION

        def goto(state):
            """``m.next = state``, keeping the handshake flip-flops in step with it."""
            m.next = state
            m.d.sync += [mem_req_valid.eq(state in ("READ_PTE", "UPDATE_AD")),
                         mem_resp_ready.eq(state in ("WAIT_PTE", "WAIT_AD")),
                         req_ready.eq(state == "IDLE"), res_valid.eq(state == "DONE"),
                         mem_op.eq(layouts.MemOp.CAS if state == "UPDATE_AD"
                                   else layouts.MemOp.READ)]

        def finish_with_fault(cause, iotval2=0):
            m.d.sync += [result.eq(0), result.fault.eq(1), result.cause.eq(cause),
                         result.iotval2.eq(iotval2)]
            goto("DONE")

        def read_level(entry):
            """Step 1 for the PTE at ``entry``: through the G-stage first when nested."""
            m.d.sync += pte_addr.eq(entry)
            if self.nested:
                with m.If(gs_active):
                    m.d.sync += xlate_write.eq(0)
                    goto("XLATE")
                with m.Else():
                    m.d.sync += pte_spa.eq(entry)
                    goto("READ_PTE")
            else:
                goto("READ_PTE")

        def reread_level():
            """``read_level(pte_addr)`` after a failed CAS, without reloading the PTE's
            address registers (they hold it): the CAS compare in front of their enables
            was the stage walker's longest path (issue 7)."""
            if self.nested:
                with m.If(gs_active):
                    m.d.sync += xlate_write.eq(0)
                    goto("XLATE")
                with m.Else():
                    goto("READ_PTE")
            else:
                goto("READ_PTE")

        def store_ad():
            """§5.5's store; nested, its address is an implicit write through the G-stage."""
            if self.nested:
                with m.If(gs_active):
                    m.d.sync += xlate_write.eq(1)
                    goto("XLATE")
                with m.Else():
                    goto("UPDATE_AD")
            else:
                goto("UPDATE_AD")

        # ------------------------------------------------------- memory requests
        # READ_PTE reads the PTE at pte_spa; UPDATE_AD swaps in PTE|A (|D for writes)
        # if memory still holds ``pte`` (§5.5).
        d_bit = arch.Pte.D.lo
        m.d.comb += [
            self.mem_req.valid.eq(mem_req_valid),
            self.mem_resp.ready.eq(mem_resp_ready),
            self.req.ready.eq(req_ready),
            self.res.valid.eq(res_valid),
            self.mem_req.payload.eq(_pack(
                layouts.mem_request(self.id_bits), id=self.mem_id, op=mem_op, addr=pte_spa,
                wdata=Cat(pte.as_value()[:d_bit] | arch.PTE_A, cas_d, pte.as_value()[d_bit + 1:]),
                compare=pte)),
            self.res.payload.eq(result),
        ]

        # ------------------------------------------- checks of the PTE just read
        # Steps 2-7 depend only on the PTE, ``level`` (which does not change between
        # READ_PTE and CHECK_PTE) and per-walk registers, so they are made on the PTE
        # as it arrives (``arriving``: at most four LUT levels, no decision) and only
        # their verdicts are registered with it; CHECK_PTE then combines the verdicts
        # with the memory error and decides. (Deciding in the cycle the response
        # arrives made memory response -> checks -> result the IOMMU's longest path;
        # checking everything in CHECK_PTE left seven levels there: issue 7.) The PTE
        # register was there already: the A/D update compares with it.
        resp = self.mem_resp.payload
        pte_err = Signal(layouts.MemErr)
        stop = Signal()  # START: the request needs no walk (Bare, unknown mode, out of range)
        ad_err = Signal(layouts.MemErr)  # the A/D CAS's answer (WAIT_AD -> CHECK_AD)
        ad_same = Signal()  # memory held the PTE the CAS compared with
        rd = pte
        reserved_mask = (1 << arch.Pte.RESERVED.width) - 1
        if self.svrsw60t59b:
            for bit in range(*_RSW60_59):
                reserved_mask &= ~(1 << bit)

        def pte_checks(p):
            """Steps 2-7 for the PTE ``p``: (is a pointer, the pointer faults, the leaf
            faults, the leaf needs an A/D update)."""
            # Step 2: invalid, W without R, reserved bits or encodings.
            bad_encoding = (~p.v | (p.w & ~p.r) | (p.reserved & reserved_mask).any()
                            | (p.pbmt == _PBMT_RESERVED)
                            | (p.pbmt.any() if not self.svpbmt else 0))
            is_pointer = ~p.r & ~p.w & ~p.x
            # Step 3: D, A, U, N and PBMT are reserved in a pointer; none at level 0.
            bad_pointer = p.d | p.a | p.u | p.n | p.pbmt.any() | (level == 0)
            # N is only legal on a level-0 leaf with PPN[3:0] = 1000b.
            bad_napot = p.n & ((level != 0) | (p.ppn[:4] != _NAPOT_PPN_LOW))
            # Step 4: a superpage's PPN[i-1:0] must be 0: PPN[9i-1:9i-9] at level i
            # and above.
            misaligned = _or_all((level >= i) & p.ppn[_VPN_BITS * (i - 1):_VPN_BITS * i].any()
                                 for i in range(1, max_levels)) if max_levels > 1 else 0
            # Step 5 (§5.4): User needs U=1; Supervisor may use U=1 pages for
            # read/write with SUM=1, never for execute. The G-stage's accesses are User.
            bad_privilege = (u_required & ~p.u) | (u_forbidden & p.u)
            # Step 6: the access type's permission.
            bad_permission = Mux(is_exec, ~p.x, Mux(is_write, ~p.w, ~p.r))
            bad_leaf = bad_napot | misaligned | bad_privilege | bad_permission
            # Step 7: A=0, or a write with D=0, needs an update (or faults without it).
            needs_ad = ~p.a | (is_write & ~p.d)
            return (is_pointer, bad_encoding | bad_pointer,
                    bad_encoding | bad_leaf | (needs_ad & ~ad_update), needs_ad)

        arriving = data.View(PTE_LAYOUT, resp.rdata)
        is_pointer = Signal()
        pointer_fault = Signal()  # steps 2-3 fail for a pointer
        leaf_fault = Signal()  # steps 2, 4-7 fail for a leaf (step 7: no A/D update)
        needs_ad = Signal()  # step 7: the leaf needs an A/D update
        verdicts = [is_pointer, pointer_fault, leaf_fault, needs_ad]
        napot = Signal()
        m.d.comb += napot.eq(rd.n)

        # Step 8: the translated page. Superpages take PPN[i-1:0] from VPN[i-1:0], NAPOT
        # pages PPN[3:0] from address bits [15:12].
        leaf_ppn = Signal(layouts.PPN_BITS)
        leaf_size_log2 = Signal(6)
        with m.If(napot):
            m.d.comb += [leaf_ppn.eq(Cat(addr[arch.PAGE_SHIFT:_NAPOT_LOG2], rd.ppn[4:])),
                         leaf_size_log2.eq(_NAPOT_LOG2)]
        with m.Else(), m.Switch(level):
            for i in range(max_levels):
                with m.Case(i):
                    low = _VPN_BITS * i
                    m.d.comb += [
                        leaf_ppn.eq(Cat(addr[arch.PAGE_SHIFT:arch.PAGE_SHIFT + low],
                                        rd.ppn[low:])),
                        leaf_size_log2.eq(arch.PAGE_SHIFT + low),
                    ]

        # The next level's PTE address, a = pte.PPN << 12 plus VPN[i-1]*8 (step 3);
        # below the root every VPN field is 9 bits, also in the x4 schemes.
        next_vpn = Signal(_VPN_BITS)
        with m.Switch(level):
            for i in range(1, max_levels):
                with m.Case(i):
                    m.d.comb += next_vpn.eq(_vpn(addr, i - 1))

        # ------------------------------------------------------------------- FSM
        with m.FSM(name="walk") as fsm:
            # Number the states as WALKER_STATES says (else the first mention decides).
            states = WALKER_STATES[:11 if self.nested else 9]  # XLATE* only when nested
            for name in states:
                fsm.ongoing(name)
            with m.State("IDLE"):
                # The walk registers load in every idle cycle and mean something only
                # once a request is taken; only the state change waits for ``req.valid``.
                # (Enabling them with ``req.valid`` put the requester's decision, e.g. a
                # walk cache miss, in front of ~150 register enables: issue 7.)

                def on_request(state):
                    with m.If(self.req.valid):
                        goto(state)

                if gstage:
                    walked, mode, root = req.gpa, req.gs_mode, req.gs_ppn
                    m.d.sync += [
                        addr.eq(req.gpa), access.eq(req.access),
                        orig_access.eq(req.orig_access), u_required.eq(1),
                        u_forbidden.eq(0),
                        ad_update.eq(req.gade & int(self.amo_hwad)),
                        iotval2_flags.eq(req.iotval2_flags), in_pdt.eq(req.in_pdt),
                    ]
                    req_page_fault = _by_access(req.orig_access,
                                                arch.guest_page_fault_cause)
                    req_iotval2 = Cat(req.iotval2_flags, req.gpa[2:])
                else:
                    ctx = req.context
                    walked, mode, root = req.iova, ctx.fs_mode, ctx.fs_ppn
                    m.d.sync += [
                        addr.eq(req.iova), access.eq(req.access),
                        orig_access.eq(req.access), u_required.eq(~req.priv),
                        u_forbidden.eq(req.priv & ((req.access == layouts.Access.EXECUTE)
                                                   | ~ctx.sum)),
                        ad_update.eq(ctx.sade & int(self.amo_hwad)),
                    ]
                    if self.nested:
                        m.d.sync += [gs_mode.eq(ctx.gs_mode), gs_active.eq(ctx.gs_mode != 0),
                                     gs_ppn.eq(ctx.gs_ppn),
                                     gade.eq(ctx.gade)]
                    req_page_fault = _by_access(req.access, arch.page_fault_cause)
                    req_iotval2 = 0
                # What the mode asks for, as flat signals: every register below loads
                # whatever the outcome, only the next state depends on it.
                bare = Signal()  # no translation at this stage (§5.7): the address is the output
                unknown = Signal()  # a mode this walker was not built for
                out_of_range = Signal()
                top_level = Signal.like(level)
                root_addr = Signal(layouts.PA_BITS)
                with m.Switch(mode):
                    with m.Case(arch.AtpMode.BARE):
                        m.d.comb += bare.eq(1)
                    for scheme in self.schemes:
                        with m.Case(scheme.mode):
                            if gstage:
                                # §5.7: GPA bits above the x4 scheme's width must be 0.
                                m.d.comb += out_of_range.eq(walked[scheme.va_bits:].any())
                            else:
                                # §5.1: IOVA[63:VA_BITS-1] all equal.
                                upper = walked[scheme.va_bits - 1:]
                                m.d.comb += out_of_range.eq(upper.any() & ~upper.all())
                            top = scheme.levels - 1
                            lo = arch.PAGE_SHIFT + _VPN_BITS * top
                            # The x4 root is 16 KiB: an 11-bit top VPN (its PPN[1:0] are
                            # 0, DC check 17).
                            top_vpn = walked[lo:scheme.va_bits]
                            root_ppn = root[2:] if gstage else root
                            m.d.comb += [
                                top_level.eq(top),
                                root_addr.eq(Cat(C(0, _PTE_BYTES_LOG2), top_vpn,
                                                 root_ppn)[:layouts.PA_BITS]),
                            ]
                    with m.Default():
                        # The context fetch lets no unsupported mode through (259);
                        # should one arrive anyway, say so rather than guess.
                        m.d.comb += unknown.eq(1)
                with m.If(bare):
                    m.d.sync += [
                        result.eq(0),
                        result.ppn.eq(walked[arch.PAGE_SHIFT:layouts.PA_BITS]),
                        result.size_log2.eq(arch.PAGE_SHIFT),
                        result.r.eq(1), result.w.eq(1), result.x.eq(1),
                        result.u.eq(1), result.d.eq(1),
                    ]
                with m.Else():
                    m.d.sync += [
                        result.eq(0), result.fault.eq(1),
                        result.cause.eq(Mux(unknown, arch.Cause.INTERNAL_DATAPATH_ERROR,
                                            req_page_fault)),
                        result.iotval2.eq(Mux(unknown, 0, req_iotval2)),
                    ]
                m.d.sync += [level.eq(top_level), pte_addr.eq(root_addr)]
                if self.nested:
                    # The root's SPA if the G-stage is Bare; XLATE_WAIT overwrites it if not.
                    m.d.sync += [pte_spa.eq(root_addr), xlate_write.eq(0)]
                # The mode's and the address's verdict is registered too, and acted on
                # in START: from the requester's registers (the core's miss slot)
                # through the range check and the mode into the state and the handshake
                # flip-flops was a routed critical path (issue 7). One cycle per walk.
                m.d.sync += stop.eq(bare | unknown | out_of_range)
                on_request("START")

            with m.State("START"):
                with m.If(stop):
                    goto("DONE")
                if self.nested:
                    with m.Elif(gs_active):
                        goto("XLATE")  # step 1 for the root: through the G-stage
                with m.Else():
                    goto("READ_PTE")

            if self.nested:
                gpa_req = self.gpa_req.payload
                m.d.comb += [
                    gpa_req.gpa.eq(pte_addr),
                    gpa_req.access.eq(Mux(xlate_write, layouts.Access.WRITE,
                                          layouts.Access.READ)),
                    gpa_req.orig_access.eq(orig_access),
                    # iotval2 bit 0: an implicit access; bit 1: the implicit write (§5.4).
                    gpa_req.iotval2_flags.eq(Cat(C(1, 1), xlate_write)),
                    gpa_req.in_pdt.eq(0),
                    gpa_req.gs_mode.eq(gs_mode),
                    gpa_req.gs_ppn.eq(gs_ppn),
                    gpa_req.gade.eq(gade),
                ]

            # Step 1: load the PTE at a + VPN[i]*8.
            with m.State("READ_PTE"), m.If(self.mem_req.ready):
                goto("WAIT_PTE")

            with m.State("WAIT_PTE"), m.If(self.mem_resp.valid):
                m.d.sync += [
                    pte.eq(resp.rdata), pte_err.eq(resp.err),
                    Cat(*verdicts).eq(Cat(*pte_checks(arriving))),
                    # What the A/D update will store as D (§5.5): 1 for a write.
                    cas_d.eq(arriving.d | is_write),
                ]
                goto("CHECK_PTE")

            with m.State("CHECK_PTE"):
                with m.If(pte_err == layouts.MemErr.ACCESS_FAULT):
                    finish_with_fault(access_fault)  # step 1: PMA/PMP → 1/5/7
                with m.Elif(pte_err == layouts.MemErr.POISON):
                    finish_with_fault(corruption)  # step 1: 274
                with m.Elif(Mux(is_pointer, pointer_fault, leaf_fault)):
                    finish_with_fault(page_fault, fault_iotval2)  # steps 2-7, §5.5
                with m.Elif(is_pointer):
                    m.d.sync += level.eq(level - 1)
                    read_level(Cat(C(0, _PTE_BYTES_LOG2), next_vpn, rd.ppn))
                with m.Else():
                    m.d.sync += [
                        result.eq(0),
                        result.ppn.eq(leaf_ppn),
                        result.size_log2.eq(leaf_size_log2),
                        result.r.eq(rd.r), result.w.eq(rd.w), result.x.eq(rd.x),
                        result.u.eq(rd.u), result.g.eq(rd.g),
                        # A write that passes step 7 leaves D=1 in memory.
                        result.d.eq(rd.d | is_write),
                        result.pbmt.eq(rd.pbmt),
                    ]
                    with m.If(needs_ad):
                        store_ad()
                    with m.Else():
                        goto("DONE")

            # §5.5: store PTE|A(|D) only if memory still holds the PTE we checked.
            with m.State("UPDATE_AD"), m.If(self.mem_req.ready):
                goto("WAIT_AD")

            # The CAS's answer is registered (its error, and whether memory held the PTE
            # checked) and acted on in CHECK_AD: the 64-bit compare and the error
            # checks into the state and the handshake flip-flops were a routed
            # critical path (issue 7).
            with m.State("WAIT_AD"), m.If(self.mem_resp.valid):
                m.d.sync += [ad_err.eq(resp.err), ad_same.eq(resp.rdata == pte.as_value())]
                goto("CHECK_AD")

            with m.State("CHECK_AD"):
                with m.If(ad_err == layouts.MemErr.ACCESS_FAULT):
                    finish_with_fault(access_fault)  # store PMA/PMP violation
                with m.Elif(ad_err == layouts.MemErr.POISON):
                    finish_with_fault(corruption)
                with m.Elif(~ad_same):
                    reread_level()  # the PTE changed: restart this level (step 1)
                with m.Else():
                    goto("DONE")

            with m.State("DONE"), m.If(self.res.ready):
                goto("IDLE")

            if self.nested:
                with m.State("XLATE"):
                    # §5.7: the PTE's GPA through the G-stage (implicit read or write).
                    m.d.comb += self.gpa_req.valid.eq(1)
                    with m.If(self.gpa_req.ready):
                        goto("XLATE_WAIT")

                with m.State("XLATE_WAIT"):
                    gres = self.gpa_res.payload
                    m.d.comb += self.gpa_res.ready.eq(1)
                    # Waiting, pte_spa follows the answer's page every cycle (the
                    # answer's own stays): its enable is the state, not the answer's
                    # valid, which comes from the walk cache's verdict (issue 7).
                    m.d.sync += pte_spa.eq(Cat(pte_addr[:arch.PAGE_SHIFT], gres.ppn))
                    with m.If(self.gpa_res.valid):
                        with m.If(gres.fault):
                            finish_with_fault(gres.cause, gres.iotval2)
                        with m.Else():
                            with m.If(xlate_write):
                                goto("UPDATE_AD")
                            with m.Else():
                                goto("READ_PTE")

        if tuple(fsm.encoding) != states:
            raise AssertionError(f"walk FSM encoding {tuple(fsm.encoding)} differs from "
                                 f"WALKER_STATES, which the waveform save file decodes with")
        return m


class _WalkPhase(enum.Enum, shape=3):
    IDLE = 0
    FIRST_STAGE = 1  # the first-stage walker is busy (its G-stage requests served)
    FINAL_GPA = 2  # the final GPA goes to the G-stage walker (§1.4 step 19)
    DONE = 3
    MSI = 4  # the final GPA is an interrupt-file address: MSI translation (step 18)
    CHOOSE = 5  # the first stage's leaf is registered: MSI, FINAL_GPA or DONE next


class PageTableWalker(wiring.Component):
    """One miss slot's walker: first stage, then the G-stage of the final GPA.

    Ports (the same whether or not a G-stage is built):
      req:      ``layouts.WalkRequest``; ``context.gs_mode`` Bare (or no G-stage scheme
                in ``capabilities``) is a plain first-stage walk, else a nested one.
      res:      ``layouts.WalkResult`` for the whole translation: the final SPA page,
                the smaller of the two stages' page sizes (§5.7), R/W/X of both stages
                ANDed, U and G from the first stage (U=1 when it is Bare), PBMT from the
                first stage unless it is 0 (§5.6), ``d`` = both stages' D; or the first
                fault. ``iotval2`` is nonzero only for guest-page faults.
      mem_req/mem_resp: one port, id ``mem_id``, at most one request outstanding
                (only one of the two stage walkers ever waits for memory).
      inval:    the core's invalidations (always ready): IOTINVAL.GVMA flushes the walk
                cache; an invalidation while a G-stage walk is in flight keeps its
                result out of the cache.

    ``walk_cache_entries`` (0 = none): a ``WalkCache`` of the G-stage translations of
    first-stage table pages, consulted before each implicit read's G-stage walk (a
    hit costs 3 cycles instead of a walk).

    With MSI_FLAT in ``capabilities`` (and a G-stage), a final GPA that matches the
    context's MSI address pattern (``context.msi_flat``) goes to an ``MsiTranslator``
    (rtl/msi.py) instead of the G-stage: its MSI PTE stands in for the G-stage leaf
    (R=W=U=1, X=0, 4 KiB, G=0 in the result; with MSI_MRIF an MRIF-mode PTE's MRIF and
    notice MSI too). A larger page that covers an MSI page of
    the context is reported at 4 KiB, so the IOTLB never answers for an MSI page.
    """

    def __init__(self, id_bits: int = 1, mem_id: int = 0,
                 capabilities: int = params.rtl_capabilities(), walk_cache_entries: int = 0):
        _check_ids(id_bits, mem_id, capabilities)
        if not isinstance(walk_cache_entries, int) or not 0 <= walk_cache_entries <= 64:
            raise ValueError(f"walk_cache_entries must be an integer in 0..64, not "
                             f"{walk_cache_entries!r}")
        self.id_bits, self.mem_id, self.capabilities = id_bits, mem_id, capabilities
        self.has_gstage = bool(g_stage_schemes(capabilities))
        # MSI translation needs an active G-stage (DC check 23), so only then is it built.
        self.msi_flat = self.has_gstage and bool(arch.Cap.MSI_FLAT.get(capabilities))
        self.walk_cache_entries = walk_cache_entries if self.has_gstage else 0
        super().__init__({
            "req": In(stream.Signature(layouts.WalkRequest)),
            "res": Out(stream.Signature(layouts.WalkResult)),
            "mem_req": Out(stream.Signature(layouts.mem_request(id_bits))),
            "mem_resp": In(stream.Signature(layouts.mem_response(id_bits))),
            "inval": In(stream.Signature(layouts.Invalidation)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.first_stage = fs = StageWalker(
            self.id_bits, self.mem_id, self.capabilities, nested=self.has_gstage)
        m.d.comb += self.inval.ready.eq(1)
        if not self.has_gstage:
            wiring.connect(m, wiring.flipped(self.req), fs.req)
            wiring.connect(m, fs.res, wiring.flipped(self.res))
            wiring.connect(m, fs.mem_req, wiring.flipped(self.mem_req))
            wiring.connect(m, wiring.flipped(self.mem_resp), fs.mem_resp)
            return m

        m.submodules.g_stage = gs = StageWalker(
            self.id_bits, self.mem_id, self.capabilities, gstage=True)

        # --------------------------------------------------------- memory port
        # The first stage waits while the G-stage walks, so at most one of them has a
        # request outstanding; each takes responses only while it waits for one.
        # Each requester's valid and payload are flip-flops and at most one is valid, so
        # the port is an AND-OR of them (issue 7: no state decode or priority mux in
        # front of the arbiter).
        m.d.comb += [
            fs.mem_req.ready.eq(self.mem_req.ready),
            gs.mem_req.ready.eq(self.mem_req.ready),
            fs.mem_resp.payload.eq(self.mem_resp.payload),
            gs.mem_resp.payload.eq(self.mem_resp.payload),
            fs.mem_resp.valid.eq(self.mem_resp.valid),
            gs.mem_resp.valid.eq(self.mem_resp.valid),
        ]
        requesters = [fs, gs]
        msi = None
        if self.msi_flat:
            # Step 18 runs while both stage walkers are idle: it joins the port alone.
            m.submodules.msi = msi = MsiTranslator(
                self.id_bits, self.mem_id,
                mrif=bool(arch.Cap.MSI_MRIF.get(self.capabilities)))
            m.d.comb += [
                msi.mem_req.ready.eq(self.mem_req.ready),
                msi.mem_resp.payload.eq(self.mem_resp.payload),
                msi.mem_resp.valid.eq(self.mem_resp.valid),
            ]
            requesters.append(msi)
        # Each requester's valid, ready and payload are flip-flops and at most one of
        # them is valid (or waits for a response) at a time, so the port is an AND-OR
        # of them: no state decode or priority mux in front of the arbiter (issue 7).
        payload_bits = len(self.mem_req.payload.as_value())
        m.d.comb += [
            self.mem_req.valid.eq(_or_all(r.mem_req.valid for r in requesters)),
            self.mem_req.payload.eq(_or_all(
                r.mem_req.payload.as_value() & r.mem_req.valid.replicate(payload_bits)
                for r in requesters)),
            self.mem_resp.ready.eq(_or_all(r.mem_resp.ready for r in requesters)),
        ]

        phase = Signal(_WalkPhase)
        iova = Signal(layouts.IOVA_BITS)
        access = Signal(layouts.Access)
        context = Signal(layouts.TranslationContext)
        first = Signal(layouts.WalkResult)  # the first stage's leaf
        # msi_pages_within of the final GPA, registered with ``first``.
        msi_within = Signal(len(LEAF_SIZES_LOG2))
        fs_bare = Signal()  # context.fs_mode == 0, registered with it (selects muxes)
        result = Signal(layouts.WalkResult)
        nested = context.gs_mode != 0
        # One flip-flop per phase that selects a mux (G-stage request, leaf, result),
        # kept equal to ``phase == ...`` by ``set_phase``: a select decoded from
        # ``phase`` cost a LUT level in front of ~180 bits (issue 7).
        in_phase = {p: Signal(name=f"in_{p.name.lower()}", init=p is _WalkPhase.IDLE)
                    for p in (_WalkPhase.IDLE, _WalkPhase.FINAL_GPA, _WalkPhase.MSI,
                              _WalkPhase.DONE)}

        def set_phase(value):
            m.d.sync += phase.eq(value)
            for p, flag in in_phase.items():
                m.d.sync += flag.eq(int(value is p) if isinstance(value, _WalkPhase)
                                    else value == p.value)

        # ------------------------------------------------ request → first stage
        m.d.comb += [
            fs.req.payload.eq(self.req.payload),
            fs.req.valid.eq(self.req.valid & in_phase[_WalkPhase.IDLE]),
            self.req.ready.eq(fs.req.ready & in_phase[_WalkPhase.IDLE]),
        ]
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += [iova.eq(self.req.payload.iova), access.eq(self.req.payload.access),
                         context.eq(self.req.payload.context),
                         fs_bare.eq(self.req.payload.context.fs_mode == 0)]
            set_phase(_WalkPhase.FIRST_STAGE)

        # --------------------------------------- the G-stage walker's two clients
        final = Signal(layouts.GStageRequest)
        # §1.4 step 19: the final GPA; with a Bare first stage the whole IOVA (the G-stage
        # checks its upper bits). ``final`` is built from the first stage's result as it
        # arrives and registered (``gs_request``).
        fs_gpa = Mux(fs_bare, iova, Cat(iova[:arch.PAGE_SHIFT], fs.res.payload.ppn))
        m.d.comb += [
            final.gpa.eq(fs_gpa),
            final.access.eq(access),
            final.orig_access.eq(access),
            final.iotval2_flags.eq(0),
            final.in_pdt.eq(0),
            final.gs_mode.eq(context.gs_mode),
            final.gs_ppn.eq(context.gs_ppn),
            final.gade.eq(context.gade),
        ]
        # The leaf that stands in the G-stage's place: the G-stage walker's, or (step
        # 18) the MSI PTE's.
        leaf = Signal(layouts.WalkResult)
        leaf_valid = Signal()
        m.d.comb += [leaf.eq(gs.res.payload), leaf_valid.eq(gs.res.valid)]
        # The G-stage walker's request, a register whatever the phase (issue 7: the
        # G-stage's root and range checks sit behind it): during the first stage the
        # implicit translation the walk cache is looking up or missed (``pending``),
        # then the final GPA's. Without a walk cache an implicit translation goes to
        # the G-stage the cycle it is asked for, so it takes the first stage's request
        # as it is.
        gs_request = Signal(layouts.GStageRequest)
        if self.walk_cache_entries:
            self._walk_cache(m, fs, gs, phase, context, gs_request)
            m.d.comb += gs.req.payload.eq(gs_request)
        else:
            m.d.comb += gs.req.payload.eq(Mux(in_phase[_WalkPhase.FINAL_GPA], gs_request,
                                              fs.gpa_req.payload))
        with m.If((phase == _WalkPhase.FIRST_STAGE) & fs.res.valid):
            m.d.sync += gs_request.eq(final)
        if msi is not None:
            m.d.comb += msi.req.payload.eq(_pack(
                data.Layout.cast(MsiRequest), gpa=gs_request.gpa, access=access,
                msiptp_ppn=context.msiptp_ppn, msi_mask=context.msi_mask))
            with m.If(in_phase[_WalkPhase.MSI]):
                m.d.comb += [msi.req.valid.eq(1), msi.res.ready.eq(1),
                             leaf.eq(msi.res.payload), leaf_valid.eq(msi.res.valid)]
        with m.If(in_phase[_WalkPhase.FINAL_GPA]):
            m.d.comb += [gs.req.valid.eq(1), gs.res.ready.eq(1)]
        if not self.walk_cache_entries:
            with m.Else():
                m.d.comb += [gs.req.valid.eq(fs.gpa_req.valid),
                             fs.gpa_req.ready.eq(gs.req.ready)]
                wiring.connect(m, gs.res, fs.gpa_res)

        # ------------------------------------------------------------ results
        m.d.comb += self.res.payload.eq(Mux(in_phase[_WalkPhase.DONE], result, fs.res.payload))
        with m.Switch(phase):
            with m.Case(_WalkPhase.FIRST_STAGE):
                with m.If(~nested):
                    # No G-stage: the first stage's result as it is, no extra cycle.
                    m.d.comb += [self.res.valid.eq(fs.res.valid),
                                 fs.res.ready.eq(self.res.ready)]
                    with m.If(fs.res.valid & self.res.ready):
                        set_phase(_WalkPhase.IDLE)
                with m.Else():
                    m.d.comb += fs.res.ready.eq(1)
                    with m.If(fs.res.valid):
                        m.d.sync += [first.eq(fs.res.payload), result.eq(fs.res.payload)]
                        if msi is not None:
                            # §9.1: the final GPA (as ``final.gpa`` will hold it) is an
                            # interrupt-file address (bit 0, 4 KiB): step 18 instead of
                            # step 19. The other bits wait for the leaf's size.
                            # msi_pages_within(fs_gpa) from its parts: GPA[55:12] is
                            # the leaf's PPN either way (a Bare first stage returns
                            # IOVA[55:12]); GPA[63:56] is 0 or IOVA[63:56].
                            m.d.sync += msi_within.eq(msi_pages_within_parts(
                                fs.res.payload.ppn,
                                Mux(fs_bare, iova[layouts.PA_BITS:], 0),
                                context.msi_mask, context.msi_pattern))
                        # The next phase is chosen from registers a cycle later: the MSI
                        # compare into the phase flags (which select ~180 bits of muxes)
                        # was among the routed critical paths (issue 7).
                        set_phase(_WalkPhase.CHOOSE)
            with m.Case(_WalkPhase.CHOOSE):
                next_phase = _WalkPhase.FINAL_GPA
                if msi is not None:
                    next_phase = Mux(context.msi_flat & msi_within[0],
                                     _WalkPhase.MSI, _WalkPhase.FINAL_GPA)
                set_phase(Mux(first.fault, _WalkPhase.DONE, next_phase))
            with m.Case(_WalkPhase.FINAL_GPA, _WalkPhase.MSI), m.If(leaf_valid):
                g = leaf
                smaller = Mux(fs_bare | (g.size_log2 < first.size_log2),
                              g.size_log2, first.size_log2)
                if msi is not None:
                    # §9.1 implementation note: a page covering an MSI page is 4 KiB.
                    # ``msi_within`` holds the test for every size; it is monotonic in
                    # the size, so the smaller page covers an MSI page iff both stages'
                    # pages do (a Bare first stage's "page" covers everything): two picks
                    # side by side instead of one after the size compare. (A shift by
                    # the size here, then a pick by the smaller size, were the walker's
                    # longest paths: issue 7.)
                    covers = (context.msi_flat
                              & (fs_bare | _pick_by_size(first.size_log2, msi_within))
                              & _pick_by_size(g.size_log2, msi_within))
                    smaller = Mux(covers, arch.PAGE_SHIFT, smaller)
                with m.If(g.fault):
                    m.d.sync += result.eq(g)
                with m.Else():
                    m.d.sync += [
                        result.eq(0),
                        result.ppn.eq(g.ppn),
                        result.size_log2.eq(smaller),
                        result.r.eq(first.r & g.r), result.w.eq(first.w & g.w),
                        result.x.eq(first.x & g.x),
                        # An MSI translation is never global (as the model reports it).
                        result.u.eq(first.u),
                        result.g.eq(first.g & ~in_phase[_WalkPhase.MSI]),
                        result.d.eq(first.d & g.d),
                        # §5.6: a nonzero first-stage PBMT overrides the G-stage's.
                        result.pbmt.eq(Mux(first.pbmt != 0, first.pbmt, g.pbmt)),
                        # An MRIF-mode MSI PTE: the MRIF and its notice (rtl/msi.py).
                        result.mrif.eq(g.mrif), result.mrif_offset.eq(g.mrif_offset),
                        result.notice.eq(g.notice),
                    ]
                set_phase(_WalkPhase.DONE)
            with m.Case(_WalkPhase.DONE):
                m.d.comb += self.res.valid.eq(1)
                with m.If(self.res.ready):
                    set_phase(_WalkPhase.IDLE)
        return m

    def _walk_cache(self, m, fs, gs, phase, context, pending):
        """The first stage's G-stage requests through the walk cache (FIRST_STAGE phase).

        ``pending`` is the G-stage walker's request register: taken from the first
        stage here, looked up, and handed to the G-stage walker on a miss.

        IDLE: the request is taken and looked up (the answer is registered). LOOKUP:
        the verdict. HIT: an implicit read that hits is answered from the cache. MISS:
        anything else goes to the G-stage walker (then WALK), whose successful implicit
        reads are filled in unless an invalidation came while they were in flight.
        """
        m.submodules.walk_cache = cache = WalkCache(self.walk_cache_entries)
        m.d.comb += [cache.inval.valid.eq(self.inval.valid),
                     cache.inval.payload.eq(self.inval.payload)]
        cacheable = ((pending.access == layouts.Access.READ)
                     & (pending.iotval2_flags == 0b01))
        stale = Signal()
        hit_ppn = Signal.like(cache.ppn, name="walk_cache_hit_ppn")
        in_first_stage = phase == _WalkPhase.FIRST_STAGE
        with m.FSM(name="walk_cache"):
            with m.State("IDLE"):
                m.d.comb += [
                    fs.gpa_req.ready.eq(in_first_stage),
                    # Looked up in every idle cycle: the last one before LOOKUP is
                    # the accepted request's, and the enable is a state bit, not the
                    # first stage's request logic (issue 7, timing).
                    cache.lookup_en.eq(1),
                ]
                with m.If(fs.gpa_req.valid & in_first_stage):
                    m.d.sync += [pending.eq(fs.gpa_req.payload), stale.eq(0)]
                    m.next = "LOOKUP"
            with m.State("LOOKUP"):
                # The verdict is a state of its own (HIT or MISS): the hit into the
                # first stage's result enables (through gpa_res.valid) and into the
                # G-stage's request enables (through gs.req.valid) was 5 levels after
                # the compare's register and among the routed critical paths (issue 7).
                # The hit's PPN is registered too: the cache's RAM read in front of
                # the first stage's result was 0.2 ns short of 100 MHz.
                m.d.sync += hit_ppn.eq(cache.ppn)
                with m.If(cacheable & cache.hit):
                    m.next = "HIT"
                with m.Else():
                    m.next = "MISS"
            with m.State("HIT"):
                m.d.comb += [fs.gpa_res.valid.eq(1),
                             fs.gpa_res.payload.ppn.eq(hit_ppn),
                             fs.gpa_res.payload.size_log2.eq(arch.PAGE_SHIFT)]
                with m.If(fs.gpa_res.ready):
                    m.next = "IDLE"
            with m.State("MISS"):
                m.d.comb += gs.req.valid.eq(1)
                with m.If(gs.req.ready):
                    m.next = "WALK"
            with m.State("WALK"):
                wiring.connect(m, gs.res, fs.gpa_res)
                with m.If(self.inval.valid):
                    m.d.sync += stale.eq(1)
                with m.If(gs.res.valid & fs.gpa_res.ready):
                    m.d.comb += cache.fill_en.eq(cacheable & ~gs.res.payload.fault & ~stale
                                                 & ~self.inval.valid)
                    m.next = "IDLE"
        # The lookup's tag whatever the state (only its enable is the state's): a tag
        # muxed by the state cost a LUT level in front of the compare (issue 7).
        # The fill's tag and data straight from registers, whatever the state: the cache
        # chooses its victim on the tag each cycle (issue 7, timing).
        m.d.comb += [
            cache.lookup_tag.gscid.eq(context.gscid),
            cache.lookup_tag.gpn.eq(fs.gpa_req.payload.gpa[arch.PAGE_SHIFT:]),
            cache.fill_tag.gscid.eq(context.gscid),
            cache.fill_tag.gpn.eq(pending.gpa[arch.PAGE_SHIFT:]),
            cache.fill_ppn.eq(gs.res.payload.ppn),
        ]
