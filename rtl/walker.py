"""First-stage page-table walker: one Sv39/Sv48/Sv57 walk at a time (digest §5.3-§5.6).

    req ─► IDLE ──Bare / non-canonical──────────────────────────────────► DONE ─► res
              └─► READ_PTE ─► WAIT_PTE ──pointer: next level──► READ_PTE
                     ▲           ├──leaf, A/D fine, or any fault──────► DONE
                     │           └──leaf needs A/D (SADE=1)──► UPDATE_AD ─► WAIT_AD ─► DONE
                     └──────── CAS saw a different PTE: re-read that level ◄──┘

Timing: the next level's read is computed from the response data in the cycle the
response arrives and issued (``mem_req.valid``) the next cycle, so a level costs one
cycle more than the memory latency. With memory that answers ``L`` cycles after
accepting a request (and accepts at once), ``res.valid`` rises ``levels * (L + 1) + 1``
cycles after the request handshake (Sv39, no A/D update: ``3 * (L + 1) + 1``); an A/D
update adds ``L + 1``. A Bare or non-canonical request answers the cycle after it is
taken.

The G-stage is out of scope: the core only hands over contexts whose ``gs_mode`` is
Bare, so every PTE address is an SPA and ``iotval2`` is always 0.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from models import arch

from . import layouts, params

__all__ = ["PTE_LAYOUT", "PageTableWalker"]


def _pte_layout() -> data.StructLayout:
    """The 64-bit PTE (§5.2) as a struct, every field where ``arch.Pte`` puts it."""
    fields = sorted(((name.lower(), f) for name, f in vars(arch.Pte).items()
                     if isinstance(f, arch.Field)), key=lambda item: item[1].lo)
    members, pos = {}, 0
    for name, f in fields:
        if f.lo != pos:
            raise AssertionError(f"arch.Pte leaves bits {pos}..{f.lo - 1} undescribed")
        members[name] = unsigned(f.width)
        pos = f.hi + 1
    if pos != 64:
        raise AssertionError(f"arch.Pte describes {pos} bits, not 64")
    return data.StructLayout(members)


#: PTE fields: v r w x u g a d rsw ppn reserved pbmt n (positions from ``arch.Pte``).
PTE_LAYOUT = _pte_layout()

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
WALKER_STATES = ("IDLE", "READ_PTE", "WAIT_PTE", "UPDATE_AD", "WAIT_AD", "DONE")


class PageTableWalker(wiring.Component):
    """Walks one first-stage page table per request and returns the checked leaf or a fault.

    Ports:
      req:      the walk: ``iova``, ``access``, ``priv`` (1 = Supervisor; User when the
                request had no PID) and the ``context`` (``fs_mode``/``fs_ppn`` = iosatp or
                PC.fsc, ``sade``, ``sum``). Taken only when the walker is idle.
      res:      one result per request. ``fault``=1: ``cause`` (12/13/15 page fault,
                1/5/7 access fault, 274 data corruption; 272 for an ``fs_mode`` this
                walker was not built for, which the context fetch never lets through)
                and ``iotval2``=0. Otherwise
                ``ppn`` of the translated 4 KiB page (superpage and NAPOT low bits taken
                from the IOVA), ``size_log2`` (12, 16, 21, 30, 39, 48), the leaf's
                ``r w x u g pbmt`` and ``d`` as it is in memory after any update.
      mem_req:  8-byte READs of PTEs and CAS for A/D updates, always with id ``mem_id``;
                at most one outstanding.
      mem_resp: the answer to the outstanding request; ``err`` ACCESS_FAULT or POISON.
                Ready only while a request is outstanding; ``id`` is not checked (the
                arbiter routes by id).

    ``capabilities`` (the register value) selects the schemes built (Sv39/48/57), Svpbmt,
    Svrsw60t59b and AMO_HWAD (without it SADE is treated as 0).
    """

    def __init__(self, id_bits: int = 1, mem_id: int = 0,
                 capabilities: int = params.rtl_capabilities()):
        if not isinstance(id_bits, int) or id_bits < 1:
            raise ValueError(f"id_bits must be a positive integer, not {id_bits!r}")
        if not isinstance(mem_id, int) or not 0 <= mem_id < 1 << id_bits:
            raise ValueError(f"mem_id must be 0..{(1 << id_bits) - 1} for {id_bits} id bits, "
                             f"not {mem_id!r}")
        if not isinstance(capabilities, int) or capabilities < 0:
            raise ValueError(f"capabilities must be the register value, not {capabilities!r}")
        self.id_bits, self.mem_id, self.capabilities = id_bits, mem_id, capabilities
        caps = arch.Cap
        self.schemes = [s for s, cap in ((arch.SV39, caps.SV39), (arch.SV48, caps.SV48),
                                         (arch.SV57, caps.SV57)) if cap.get(capabilities)]
        self.svpbmt = bool(caps.SVPBMT.get(capabilities))
        self.svrsw60t59b = bool(caps.SVRSW60T59B.get(capabilities))
        self.amo_hwad = bool(caps.AMO_HWAD.get(capabilities))
        super().__init__({
            "req": In(stream.Signature(layouts.WalkRequest)),
            "res": Out(stream.Signature(layouts.WalkResult)),
            "mem_req": Out(stream.Signature(layouts.mem_request(id_bits))),
            "mem_resp": In(stream.Signature(layouts.mem_response(id_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        max_levels = max((s.levels for s in self.schemes), default=1)
        req = self.req.payload

        # ------------------------------------------------------------ walk state
        iova = Signal(layouts.IOVA_BITS)
        access = Signal(layouts.Access)
        user = Signal()  # the request is User (priv = 0)
        sum_ = Signal()  # PC.ta.SUM: Supervisor may read/write U=1 pages
        sade = Signal()  # DC.tc.SADE and AMO_HWAD: set A/D in hardware instead of faulting
        level = Signal(range(max_levels))  # i of §5.3
        pte_addr = Signal(layouts.PA_BITS)  # a + VPN[i]*8
        pte = Signal(PTE_LAYOUT)  # the PTE the A/D update expects to find in memory
        result = Signal(layouts.WalkResult)

        is_write = access == layouts.Access.WRITE
        is_exec = access == layouts.Access.EXECUTE

        def finish_with_fault(cause):
            m.d.sync += [result.eq(0), result.fault.eq(1), result.cause.eq(cause)]
            m.next = "DONE"

        page_fault = _by_access(access, arch.page_fault_cause)
        access_fault = _by_access(access, arch.access_fault_cause)

        # ------------------------------------------------------- memory requests
        # READ_PTE reads the PTE at pte_addr; UPDATE_AD swaps in PTE|A (|D for writes)
        # if memory still holds ``pte`` (§5.5).
        mem_op = Signal(layouts.MemOp)
        m.d.comb += [
            self.mem_req.payload.eq(_pack(
                layouts.mem_request(self.id_bits), id=self.mem_id, op=mem_op, addr=pte_addr,
                wdata=pte.as_value() | arch.PTE_A | Mux(is_write, arch.PTE_D, 0),
                compare=pte)),
            self.res.payload.eq(result),
        ]

        # --------------------------------------------- checks of the PTE just read
        resp = self.mem_resp.payload
        rd = data.View(PTE_LAYOUT, resp.rdata)
        reserved_mask = (1 << arch.Pte.RESERVED.width) - 1
        if self.svrsw60t59b:
            for bit in range(*_RSW60_59):
                reserved_mask &= ~(1 << bit)

        # Step 2: invalid, W without R, reserved bits or encodings.
        bad_encoding = Signal()
        m.d.comb += bad_encoding.eq(
            ~rd.v | (rd.w & ~rd.r) | (rd.reserved & reserved_mask).any()
            | (rd.pbmt == _PBMT_RESERVED) | (rd.pbmt.any() if not self.svpbmt else 0))
        is_pointer = ~rd.r & ~rd.w & ~rd.x
        # Step 3: D, A, U, N and PBMT are reserved in a pointer; no pointer at level 0.
        bad_pointer = rd.d | rd.a | rd.u | rd.n | rd.pbmt.any() | (level == 0)
        # N is only legal on a level-0 leaf with PPN[3:0] = 1000b.
        napot = Signal()
        m.d.comb += napot.eq(rd.n)
        bad_napot = rd.n & ((level != 0) | (rd.ppn[:4] != _NAPOT_PPN_LOW))
        # Step 4: a superpage's PPN[i-1:0] must be 0.
        misaligned = Signal()
        with m.Switch(level):
            for i in range(1, max_levels):
                with m.Case(i):
                    m.d.comb += misaligned.eq(rd.ppn[:_VPN_BITS * i].any())
        # Step 5 (§5.4): User needs U=1; Supervisor may use U=1 pages for read/write
        # with SUM=1, never for execute.
        bad_privilege = Mux(user, ~rd.u, rd.u & (is_exec | ~sum_))
        # Step 6: the access type's permission.
        bad_permission = Mux(is_exec, ~rd.x, Mux(is_write, ~rd.w, ~rd.r))
        bad_leaf = bad_napot | misaligned | bad_privilege | bad_permission
        # Step 7: A=0, or a write with D=0, needs an update (or faults with SADE=0).
        needs_ad = ~rd.a | (is_write & ~rd.d)

        # Step 8: the translated page. Superpages take PPN[i-1:0] from VPN[i-1:0], NAPOT
        # pages PPN[3:0] from IOVA[15:12].
        leaf_ppn = Signal(layouts.PPN_BITS)
        leaf_size_log2 = Signal(6)
        with m.If(napot):
            m.d.comb += [leaf_ppn.eq(Cat(iova[arch.PAGE_SHIFT:_NAPOT_LOG2], rd.ppn[4:])),
                         leaf_size_log2.eq(_NAPOT_LOG2)]
        with m.Else():
            with m.Switch(level):
                for i in range(max_levels):
                    with m.Case(i):
                        low = _VPN_BITS * i
                        m.d.comb += [
                            leaf_ppn.eq(Cat(iova[arch.PAGE_SHIFT:arch.PAGE_SHIFT + low],
                                            rd.ppn[low:])),
                            leaf_size_log2.eq(arch.PAGE_SHIFT + low),
                        ]

        # The next level's PTE address, a = pte.PPN << 12 plus VPN[i-1]*8 (step 3).
        next_vpn = Signal(_VPN_BITS)
        with m.Switch(level):
            for i in range(1, max_levels):
                with m.Case(i):
                    m.d.comb += next_vpn.eq(_vpn(iova, i - 1))

        # ------------------------------------------------------------------- FSM
        with m.FSM(name="walk"):
            with m.State("IDLE"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    ctx = req.context
                    m.d.sync += [
                        iova.eq(req.iova),
                        access.eq(req.access),
                        user.eq(~req.priv),
                        sum_.eq(ctx.sum),
                        sade.eq(ctx.sade & int(self.amo_hwad)),
                    ]
                    with m.Switch(ctx.fs_mode):
                        with m.Case(arch.AtpMode.BARE):
                            # No first stage: the IOVA is the address (§5.7), all allowed.
                            m.d.sync += [
                                result.eq(0),
                                result.ppn.eq(req.iova[arch.PAGE_SHIFT:layouts.PA_BITS]),
                                result.size_log2.eq(arch.PAGE_SHIFT),
                                result.r.eq(1), result.w.eq(1), result.x.eq(1),
                                result.u.eq(1), result.d.eq(1),
                            ]
                            m.next = "DONE"
                        for scheme in self.schemes:
                            with m.Case(scheme.mode):
                                # §5.1: IOVA[63:VA_BITS-1] all equal, checked before any read.
                                upper = req.iova[scheme.va_bits - 1:]
                                with m.If(upper.any() & ~upper.all()):
                                    m.d.sync += [result.eq(0), result.fault.eq(1),
                                                 result.cause.eq(_by_access(
                                                     req.access, arch.page_fault_cause))]
                                    m.next = "DONE"
                                with m.Else():
                                    top = scheme.levels - 1
                                    m.d.sync += [
                                        level.eq(top),
                                        pte_addr.eq(Cat(C(0, _PTE_BYTES_LOG2),
                                                        _vpn(req.iova, top), ctx.fs_ppn)),
                                    ]
                                    m.next = "READ_PTE"
                        with m.Default():
                            # The context fetch lets no unsupported mode through (259);
                            # should one arrive anyway, say so rather than guess.
                            m.d.sync += [result.eq(0), result.fault.eq(1),
                                         result.cause.eq(arch.Cause.INTERNAL_DATAPATH_ERROR)]
                            m.next = "DONE"

            with m.State("READ_PTE"):
                # Step 1: load the PTE at a + VPN[i]*8.
                m.d.comb += [self.mem_req.valid.eq(1), mem_op.eq(layouts.MemOp.READ)]
                with m.If(self.mem_req.ready):
                    m.next = "WAIT_PTE"

            with m.State("WAIT_PTE"):
                m.d.comb += self.mem_resp.ready.eq(1)
                with m.If(self.mem_resp.valid):
                    m.d.sync += pte.eq(rd)
                    with m.If(resp.err == layouts.MemErr.ACCESS_FAULT):
                        finish_with_fault(access_fault)  # step 1: PMA/PMP → 1/5/7
                    with m.Elif(resp.err == layouts.MemErr.POISON):
                        finish_with_fault(arch.Cause.PT_DATA_CORRUPTION)  # step 1: 274
                    with m.Elif(bad_encoding | (is_pointer & bad_pointer)
                                | (~is_pointer & bad_leaf)):
                        finish_with_fault(page_fault)  # steps 2-6
                    with m.Elif(is_pointer):
                        m.d.sync += [
                            level.eq(level - 1),
                            pte_addr.eq(Cat(C(0, _PTE_BYTES_LOG2), next_vpn, rd.ppn)),
                        ]
                        m.next = "READ_PTE"
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
                        with m.If(needs_ad & ~sade):
                            finish_with_fault(page_fault)  # step 7, §5.5 with SADE=0
                        with m.Elif(needs_ad):
                            m.next = "UPDATE_AD"
                        with m.Else():
                            m.next = "DONE"

            with m.State("UPDATE_AD"):
                # §5.5: store PTE|A(|D) only if memory still holds the PTE we checked.
                m.d.comb += [self.mem_req.valid.eq(1), mem_op.eq(layouts.MemOp.CAS)]
                with m.If(self.mem_req.ready):
                    m.next = "WAIT_AD"

            with m.State("WAIT_AD"):
                m.d.comb += self.mem_resp.ready.eq(1)
                with m.If(self.mem_resp.valid):
                    with m.If(resp.err == layouts.MemErr.ACCESS_FAULT):
                        finish_with_fault(access_fault)  # store PMA/PMP violation
                    with m.Elif(resp.err == layouts.MemErr.POISON):
                        finish_with_fault(arch.Cause.PT_DATA_CORRUPTION)
                    with m.Elif(resp.rdata != pte.as_value()):
                        m.next = "READ_PTE"  # the PTE changed: restart this level (step 1)
                    with m.Else():
                        m.next = "DONE"

            with m.State("DONE"):
                m.d.comb += self.res.valid.eq(1)
                with m.If(self.res.ready):
                    m.next = "IDLE"

        return m
