"""The translation core: requests in, translations (or faults) out, out of order by tag.

    request ─► IOTLB lookup (3 stages) ─► decide ──hit/Off/Bare─────────────────────────► out ─► response
                                               └─miss─► slot i: context fetch ─► walker i ─► completion ─┘   └► fault
                                                        (shared, cached)          (one per slot)

* A hit answers 5 cycles after its request was accepted (4 in the IOTLB, 1 in the
  registered output), one per cycle.
* A miss takes a free *slot* (there are ``params.walkers``); up to that many
  walks are in flight and the hits behind them keep flowing. While no slot is
  free the pipe stalls, hits too (the only way a miss blocks a hit): the decision
  to take a result is made from registers only (issue 7).
* Slot completions win the output over the hit path, so walks cannot starve.
* An invalidation marks every busy slot stale: its result is still returned
  to its requester but not filled into the IOTLB, so nothing fetched before an
  invalidation outlives it in a cache.
* Timing (issue 7): the invalidation is registered before it reaches the caches, the
  memory port leaves from the arbiter's registers, the output is a skid buffer, and
  the slot a miss takes, the slot that leaves and the IOTLB result's ready are
  registers, so no ready, slot-state or invalidation wire crosses the core in one
  cycle.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from models import arch

from . import layouts
from .context_fetch import ContextFetch
from .hpm import EventSource
from .iotlb import Fill
from .mem_arbiter import MemoryArbiter
from .params import DEFAULT, IOMMUParams
from .pick import lowest_one_hot, round_robin
from .split_iotlb import make_iotlb
from .walker import PageTableWalker

# Causes a DC with DTF=1 still reports (§6.3); everything else is suppressed.
_ALWAYS_REPORTED = sorted(int(c) for c in arch.CAUSES_REPORTED_DESPITE_DTF)


class SlotState(enum.Enum, shape=3):
    FREE = 0
    CONTEXT = 1  # waiting to be picked for the shared context fetch
    CONTEXT_WAIT = 2  # picked: its request is offered to, or served by, the context fetch
    WALK = 3  # handing the walk to this slot's walker
    WALK_WAIT = 4  # the walker is walking
    DONE = 5  # response (and maybe fault report and IOTLB fill) ready to leave


def core_ports(params: IOMMUParams) -> dict:
    """The core's signature members (also used by the testbench's stand-in DUT)."""
    tag, ids = params.tag_bits, params.mem_id_bits
    return {
        "ddtp": In(64),
        "fctl": In(32),
        "request": In(stream.Signature(layouts.translation_request(tag))),
        "response": Out(stream.Signature(layouts.translation_response(tag))),
        "fault": Out(stream.Signature(layouts.FaultReport)),
        "inval": In(stream.Signature(layouts.Invalidation)),
        "mem_req": Out(stream.Signature(layouts.mem_request(ids))),
        "mem_resp": In(stream.Signature(layouts.mem_response(ids))),
        "ev_request": Out(1),
        "ev_iotlb_miss": Out(1),
        "ev_ddt_walk": Out(1),
        "ev_pdt_walk": Out(1),
        "ev_fs_walk": Out(1),
        # Who caused the events, for the HPM's ID filters (rtl/hpm.py EventSource):
        # ev_request_src with ev_request, ev_context_src with ev_ddt_walk/ev_pdt_walk;
        # ev_walk pulses when a miss's context arrives without fault (the model's
        # TLB_MISS / S_VS_PT_WALK moment), ev_walk_src carries its GSCID/PSCID tags.
        "ev_request_src": Out(EventSource),
        "ev_context_src": Out(EventSource),
        "ev_walk": Out(1),
        "ev_walk_src": Out(EventSource),
        "busy": Out(1),
        "inval_pending": Out(1),
    }


class TranslationCore(wiring.Component):
    """IOTLB, context fetch and page-table walkers behind one request/response pair.

    Ports:
      ddtp, fctl:   configuration (from the register block), stable while translating.
      request:      translation requests (layouts.translation_request).
      response:     one per request, out of order, matched by tag; driven from a
                    register (a hit leaves 5 cycles after its request was accepted).
      fault:        fault records for the fault queue (DTF already applied).
      inval:        IOTINVAL / IODIR operands from the command queue; always ready;
                    registered before it reaches the caches.
      mem_req/resp: the IOMMU's own memory port (walks, A/D updates); mem_req is
                    driven from the memory arbiter's output register.
      ev_*:         one-cycle event pulses for the performance counters.
      busy:         a miss is in flight (until its response is on the port).
      inval_pending: a walk that began before the latest invalidation, or a hit looked
                    up before it, is still in flight (its result will reach its
                    requester, uncached); IOFENCE.C
                    waits for this to fall so that no response after the fence can
                    carry data read before an invalidation the fence covers.
    """

    def __init__(self, params: IOMMUParams = DEFAULT):
        self.params = params
        super().__init__(core_ports(params))

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = p.walkers
        request_layout = layouts.translation_request(p.tag_bits)
        response_layout = layouts.translation_response(p.tag_bits)

        m.submodules.iotlb = iotlb = make_iotlb(p, request_layout)
        m.submodules.context_fetch = ctx = ContextFetch(
            p.mem_id_bits, 0, p.dc_cache_entries, p.pc_cache_entries, p.capabilities)
        walkers = [PageTableWalker(p.mem_id_bits, i + 1, p.capabilities,
                                   walk_cache_entries=p.walk_cache_entries) for i in range(n)]
        for i, w in enumerate(walkers):
            m.submodules[f"walker{i}"] = w
        m.submodules.mem_arbiter = arb = MemoryArbiter(n + 1, p.mem_id_bits)

        # ---------------------------------------------------------- memory port
        wiring.connect(m, ctx.mem_req, arb.client_req[0])
        wiring.connect(m, arb.client_resp[0], ctx.mem_resp)
        for i, w in enumerate(walkers):
            wiring.connect(m, w.mem_req, arb.client_req[i + 1])
            wiring.connect(m, arb.client_resp[i + 1], w.mem_resp)
        # The arbiter registers each client's request and drives the port from a
        # register of its own: the port's ready (the IOMMU's own merge, then memory)
        # does not reach the walkers' state enables in the same cycle, nor their
        # requests the merge (issue 7). It replaces the register slice that followed
        # the arbiter (that slice's enables were the end of the whole IOMMU's routed
        # critical path).
        wiring.connect(m, arb.mem_req, wiring.flipped(self.mem_req))
        wiring.connect(m, wiring.flipped(self.mem_resp), arb.mem_resp)
        m.d.comb += [ctx.ddtp.eq(self.ddtp), ctx.fctl.eq(self.fctl)]

        # ------------------------------------------------------- invalidations
        # Registered once here, then broadcast to every cache. Ready when the IOTLB can
        # take one (it scans its sets, one per cycle) and none is in the register, so
        # the IOTLB always takes the registered one. The register keeps the command
        # queue's decode off the caches' valid bits and write enables (issue 7). The core's own
        # bookkeeping (stale slots and results) looks at the registered one too,
        # ``inval_seen``, the cycle the caches see it: what is busy then may have read a
        # cache before the invalidation reached it; what finished before left with the
        # data it had, as it would have a cycle earlier.
        inval_seen = Signal()  # the registered invalidation's valid
        inv = Signal(layouts.Invalidation)
        m.d.sync += inval_seen.eq(self.inval.valid & self.inval.ready)
        with m.If(self.inval.valid & self.inval.ready):
            m.d.sync += inv.eq(self.inval.payload)
        m.d.comb += [
            # iotlb.inval.ready is a flip-flop's: it falls only after an acceptance.
            self.inval.ready.eq(iotlb.inval.ready & ~inval_seen),
            iotlb.inval.valid.eq(inval_seen),
            iotlb.inval.payload.eq(inv),
            ctx.inval.valid.eq(inval_seen),
            ctx.inval.payload.eq(inv),
            # The walkers' walk caches (IOTINVAL.GVMA).
            *(w.inval.valid.eq(inval_seen) for w in walkers),
            *(w.inval.payload.eq(inv) for w in walkers),
        ]

        # ------------------------------------------------------- IOTLB lookup
        req = self.request.payload
        lookup = iotlb.lookup.payload
        m.d.comb += [
            iotlb.lookup.valid.eq(self.request.valid),
            self.request.ready.eq(iotlb.lookup.ready),
            lookup.payload.eq(req),
            lookup.key.device_id.eq(req.device_id),
            lookup.key.pv.eq(req.pv),
            lookup.key.process_id.eq(Mux_(req.pv, req.process_id)),
            lookup.key.priv.eq(req.priv & req.pv),  # no PID: always User (§1.1)
            lookup.key.vpn.eq(req.iova[12:]),
            lookup.key.access.eq(req.access),
            self.ev_request.eq(self.request.valid & self.request.ready),
        ]

        # ----------------------------------------- decide: hit, immediate, miss
        looked = iotlb.result.payload
        r = looked.payload  # the request, two cycles later
        mode = Signal(4)
        m.d.comb += mode.eq(self.ddtp[0:4])
        untranslated = r.addr_type == layouts.AddrType.UNTRANSLATED

        # The response made here (hit, Off, Bare): never an MRIF translation (those are
        # not cached), so it has no MRIF fields.
        imm_fields = {name: shape for name, shape in response_layout.members.items()
                      if name not in ("mrif", "notice")}
        imm = Signal(data.StructLayout(imm_fields))
        imm_report = Signal()
        imm_cause = Signal(layouts.CAUSE_BITS)
        is_miss = Signal()
        m.d.comb += imm.tag.eq(r.tag)
        with m.Switch(mode):
            with m.Case(arch.DdtpMode.BARE):
                with m.If(untranslated):
                    # Bare: the IOVA is the physical address (§1.4 step 2).
                    m.d.comb += [imm.spa.eq(r.iova), imm.size_log2.eq(12), imm.r.eq(1),
                                 imm.w.eq(1), imm.x.eq(1), imm.u.eq(1)]
                with m.Else():
                    m.d.comb += [imm.fault.eq(1), imm_cause.eq(arch.Cause.TRANSACTION_TYPE_DISALLOWED)]
            with m.Case(arch.DdtpMode.LVL1, arch.DdtpMode.LVL2, arch.DdtpMode.LVL3):
                with m.If(looked.hit & untranslated):
                    m.d.comb += [
                        imm.spa.eq(Cat(r.iova[0:12], looked.ppn)),
                        imm.size_log2.eq(looked.size_log2),
                        imm.r.eq(looked.r), imm.w.eq(looked.w), imm.x.eq(looked.x),
                        imm.u.eq(looked.u), imm.g.eq(looked.g), imm.pbmt.eq(looked.pbmt),
                    ]
                with m.Else():
                    m.d.comb += is_miss.eq(1)
            with m.Default():
                # Off, or a reserved mode ddtp's WARL logic should never let through.
                m.d.comb += [imm.fault.eq(1), imm_cause.eq(arch.Cause.ALL_INBOUND_DISALLOWED)]
        m.d.comb += [imm.cause.eq(imm_cause), imm_report.eq(imm.fault)]  # no DC: DTF is 0

        # ----------------------------------------------------------------- slots
        slot_state = [Signal(SlotState, name=f"slot{i}_state") for i in range(n)]
        slot_req = [Signal(request_layout, name=f"slot{i}_request") for i in range(n)]
        slot_ctx = [Signal(layouts.TranslationContext, name=f"slot{i}_context") for i in range(n)]
        slot_stale = [Signal(name=f"slot{i}_stale") for i in range(n)]
        slot_resp = [Signal(response_layout, name=f"slot{i}_response") for i in range(n)]
        slot_report = [Signal(name=f"slot{i}_report") for i in range(n)]
        slot_iotval2 = [Signal(64, name=f"slot{i}_iotval2") for i in range(n)]
        slot_fill = [Signal(name=f"slot{i}_fill") for i in range(n)]
        slot_d = [Signal(name=f"slot{i}_dirty") for i in range(n)]


        # Allocation: a miss takes the slot reserved for it, a register (``alloc``,
        # one-hot, the lowest free slot; ``alloc_ok`` when there is one). Chosen a
        # cycle ahead from the slot states, so no slot's state reaches another slot's
        # enables (the four slots' states through the lowest-free pick into every
        # slot's state enables were the whole IOMMU's routed critical path, 76 MHz,
        # issue 7). A slot freed at an edge is offered from the next.
        free = Signal(n)
        m.d.comb += free.eq(Cat(s == SlotState.FREE for s in slot_state))
        alloc = Signal(n)
        alloc_ok = Signal()

        # ------------------------------------------------------------ output
        # Two registers stand between the sources and the response port, so that
        # neither the IOTLB's hit path nor the slot states drive the port (or each
        # other's enables) through a wide mux in one cycle (issue 7, timing):
        #   completion  a finished slot's response, fault record and IOTLB fill, moved
        #               out of its slot (lowest DONE slot first) when the register is
        #               free, which frees the slot;
        #   out         the response (and its fault record) on the port, loaded from
        #               the completion register, which wins so that walks cannot
        #               starve, else from the IOTLB (hit, Off, Bare). It is a skid
        #               buffer (``out`` and ``out_skid``, as rtl/skid.py): whether it
        #               takes an entry (``out_free``) is a flip-flop, so the port's
        #               ready does not reach the IOTLB's or the slots' enables.
        m.submodules.fault_fifo = fault_fifo = SyncFIFOBuffered(
            width=data.Layout.cast(layouts.FaultReport).size, depth=4)
        m.d.comb += [
            self.fault.valid.eq(fault_fifo.r_rdy),
            self.fault.payload.eq(fault_fifo.r_data),
            fault_fifo.r_en.eq(self.fault.ready),
        ]

        out_entry = data.StructLayout({
            "resp": response_layout,
            "report": 1,  # a fault record goes to the fault queue with it
            "fault": layouts.FaultReport,
            "from_slot": 1,
            "stale": 1,  # looked up or walked before an invalidation accepted since
        })
        out_valid = Signal()
        out = Signal(out_entry)
        out_skid_valid = Signal()
        out_skid = Signal(out_entry)
        out_taken = Signal()
        out_free = Signal()  # ``out`` takes an entry at this edge (a flip-flop)
        m.d.comb += [
            self.response.valid.eq(out_valid & (~out.report | fault_fifo.w_rdy)),
            self.response.payload.eq(out.resp),
            out_taken.eq(self.response.valid & self.response.ready),
            out_free.eq(~out_skid_valid),
            fault_fifo.w_data.eq(out.fault),
            fault_fifo.w_en.eq(out_taken & out.report),
        ]

        cpl_valid = Signal()
        cpl_resp = Signal(response_layout)
        cpl_report = Signal()
        cpl_req = Signal(request_layout)
        cpl_iotval2 = Signal(64)
        cpl_fill = Signal()
        cpl_fill_payload = Signal(Fill)
        cpl_stale = Signal()
        cpl_move = Signal()  # the completion goes to ``out`` at this edge
        m.d.comb += cpl_move.eq(cpl_valid & out_free & (~cpl_fill | iotlb.fill.ready))

        # The finished slot that moves out next is a register too (``winner``, one-hot,
        # the lowest DONE slot; ``winner_ok``), chosen a cycle ahead like ``alloc``.
        done = Signal(n)
        m.d.comb += done.eq(Cat(s == SlotState.DONE for s in slot_state))
        winner = Signal(n)
        winner_ok = Signal()
        # The completion register takes a slot only while empty, and while empty its
        # ~300 bits follow the winner every cycle: their enable is ``cpl_valid``, a
        # flip-flop, not the decision whether the completion leaves and another comes
        # in at the same edge (the output skid's state through ``cpl_move`` into them
        # was 0.8 ns short of 100 MHz, issue 7). A completion then moves at most every
        # other cycle; a walk takes tens.
        take_slot = Signal()  # the winner moves to the completion register
        m.d.comb += take_slot.eq(winner_ok & ~cpl_valid)
        left = done & ~Mux(take_slot, winner, 0)  # still DONE after this edge
        m.d.sync += [winner.eq(lowest_one_hot(left)), winner_ok.eq(left.any())]
        with m.If(take_slot):
            m.d.sync += cpl_valid.eq(1)
        with m.If(~cpl_valid):
            for i in range(n):
                with m.If(winner[i]):
                    q, c, s = slot_req[i], slot_ctx[i], slot_resp[i]
                    fp = cpl_fill_payload
                    m.d.sync += [
                        cpl_resp.eq(s),
                        cpl_report.eq(slot_report[i]),
                        cpl_req.eq(q),
                        cpl_iotval2.eq(slot_iotval2[i]),
                        cpl_fill.eq(slot_fill[i] & ~inval_seen),
                        cpl_stale.eq(slot_stale[i] | inval_seen),
                        fp.key.device_id.eq(q.device_id),
                        fp.key.pv.eq(q.pv),
                        fp.key.process_id.eq(Mux_(q.pv, q.process_id)),
                        fp.key.priv.eq(q.priv & q.pv),
                        fp.key.vpn.eq(q.iova[12:]),
                        fp.gscid_valid.eq(c.gs_mode != 0),
                        fp.gscid.eq(c.gscid),
                        fp.pscid_valid.eq(c.fs_mode != 0),
                        fp.pscid.eq(c.pscid),
                        fp.ppn.eq(s.spa[12:]),
                        fp.size_log2.eq(s.size_log2),
                        fp.r.eq(s.r), fp.w.eq(s.w), fp.x.eq(s.x),
                        fp.u.eq(s.u), fp.g.eq(s.g), fp.d.eq(slot_d[i]),
                        fp.pbmt.eq(s.pbmt),
                    ]
        with m.Elif(cpl_move):
            m.d.sync += cpl_valid.eq(0)
        with m.Else():
            # Waiting: an invalidation makes the result unfit to cache (§10.2).
            with m.If(inval_seen):
                m.d.sync += [cpl_fill.eq(0), cpl_stale.eq(1)]

        # IOTLB fill from the completion as it leaves (only successful, non-stale walks).
        m.d.comb += [
            iotlb.fill.valid.eq(cpl_move & cpl_fill),
            iotlb.fill.payload.eq(cpl_fill_payload),
        ]

        # The decide stage: a miss leaves for its reserved slot, others go to ``out``.
        # The IOTLB's result is taken only when either could go (``decide_ready``, three
        # flip-flops): its ready is not behind the result's own hit, mode and address
        # type, and it is the enable of the IOTLB's result registers (the decision into
        # them was a routed critical path, issue 7). The price: while every slot is
        # busy a hit waits too (a miss would block what follows it anyway).
        take_miss = Signal()
        take_imm = Signal()
        decide_ready = Signal()
        m.d.comb += [
            decide_ready.eq(alloc_ok & out_free & ~cpl_valid),
            take_miss.eq(iotlb.result.valid & decide_ready & is_miss),
            take_imm.eq(iotlb.result.valid & decide_ready & ~is_miss),
            iotlb.result.ready.eq(decide_ready),
            self.ev_iotlb_miss.eq(take_miss),
        ]
        unclaimed = free & ~Mux(take_miss, alloc, 0)  # still free after this edge
        m.d.sync += [alloc.eq(lowest_one_hot(unclaimed)), alloc_ok.eq(unclaimed.any())]

        src_req = Signal(request_layout)
        src_iotval2 = Signal(64)
        incoming = Signal(out_entry)  # what enters the output this cycle, if anything
        out_load = Signal()
        m.d.comb += out_load.eq(cpl_move | take_imm)
        # Selected by ``cpl_valid`` (a flip-flop), not ``cpl_move``: an immediate
        # response enters only while the completion register is empty, so the two agree
        # whenever ``out_load`` is set, and the IOTLB's fill ready (in ``cpl_move``)
        # stays off the ~300 data inputs of ``out`` (issue 7).
        with m.If(cpl_valid):
            m.d.comb += [incoming.resp.eq(cpl_resp), incoming.report.eq(cpl_report),
                         incoming.from_slot.eq(1), incoming.stale.eq(cpl_stale),
                         src_req.eq(cpl_req), src_iotval2.eq(cpl_iotval2)]
        with m.Else():
            m.d.comb += [*(getattr(incoming.resp, name).eq(getattr(imm, name))
                           for name in imm_fields),
                         incoming.report.eq(imm_report), src_req.eq(r)]
        # The skid buffer: ``out`` refills from ``out_skid`` first; an entry arriving
        # while ``out`` is held waits in ``out_skid``. Every entry waiting during an
        # invalidation becomes stale.
        out_moves = ~out_valid | out_taken
        with m.If(~out_skid_valid):
            # Empty, the skid follows whatever is incoming every cycle (its contents
            # count only once ``out_skid_valid`` is set), so the enable of its ~300
            # flip-flops is one flip-flop, not the decision whether an entry enters:
            # that decision (the IOTLB's hit, the mode, the completion) into those
            # enables was the whole IOMMU's routed critical path (79.3 MHz, issue 7).
            m.d.sync += [out_skid.eq(incoming), out_skid.stale.eq(incoming.stale | inval_seen)]
        with m.Else():
            m.d.sync += out_skid.stale.eq(out_skid.stale | inval_seen)
        with m.If(out_moves):
            with m.If(out_skid_valid):
                m.d.sync += [out.eq(out_skid), out.stale.eq(out_skid.stale | inval_seen),
                             out_valid.eq(1), out_skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [out.eq(incoming), out.stale.eq(incoming.stale | inval_seen),
                             out_valid.eq(out_load)]
        with m.Else():
            m.d.sync += out.stale.eq(out.stale | inval_seen)
            with m.If(out_load):  # only while the skid is empty (``out_free``)
                m.d.sync += out_skid_valid.eq(1)  # it holds ``incoming`` from this edge

        # The fault record of whatever enters ``out`` (§6.2): no PID → PID/PRIV 0.
        report = Signal(layouts.FaultReport)
        tt = Signal(6)
        with m.Switch(src_req.addr_type):
            with m.Case(layouts.AddrType.ATS_TRANSLATION_REQUEST):
                m.d.comb += tt.eq(arch.Ttyp.PCIE_ATS_TRANSLATION_REQUEST)
            with m.Default():
                base = Mux(src_req.addr_type == layouts.AddrType.TRANSLATED, 5, 1)
                with m.Switch(src_req.access):
                    with m.Case(layouts.Access.EXECUTE):
                        m.d.comb += tt.eq(base)
                    with m.Case(layouts.Access.READ):
                        m.d.comb += tt.eq(base + 1)
                    with m.Default():
                        m.d.comb += tt.eq(base + 2)
        m.d.comb += [
            report.cause.eq(Mux(cpl_valid, cpl_resp.cause, imm.cause)),
            report.ttyp.eq(tt),
            report.device_id.eq(src_req.device_id),
            report.pv.eq(src_req.pv),
            report.process_id.eq(Mux_(src_req.pv, src_req.process_id)),
            report.priv.eq(src_req.pv & src_req.priv),
            report.iotval.eq(src_req.iova),
            report.iotval2.eq(src_iotval2),
        ]
        m.d.comb += incoming.fault.eq(report)

        m.d.comb += [
            self.busy.eq(Cat(s != SlotState.FREE for s in slot_state).any()
                         | cpl_valid | (out_valid & out.from_slot)
                         | (out_skid_valid & out_skid.from_slot)),
            self.inval_pending.eq(
                self.inval.valid | inval_seen
                | iotlb.inval_busy  # the IOTLB applies it a few cycles later
                | Cat((s != SlotState.FREE) & stale
                      for s, stale in zip(slot_state, slot_stale)).any()
                | (cpl_valid & cpl_stale) | (out_valid & out.stale)
                | (out_skid_valid & out_skid.stale)),
        ]

        # ----------------------------------------------- shared context fetch
        # The request is registered: a slot waiting for a context is picked into
        # ``ctx_req`` (off the slot-state path), then offered to the context
        # fetch, which serves one at a time. The picked slot moves on when it sees
        # itself in the register (``ctx_req_owner``), a cycle later, so its state's
        # enable comes from registers, not from the other slots' states through the
        # pick; the register takes no new pick meanwhile.
        ctx_busy = Signal()  # a context fetch is outstanding
        ctx_owner = Signal(range(max(n, 2)))  # the slot it works for
        ctx_req_valid = Signal()
        ctx_req_owner = Signal(range(max(n, 2)))
        wants_ctx = Signal(n)
        m.d.comb += wants_ctx.eq(Cat(s == SlotState.CONTEXT for s in slot_state))
        # Round-robin: with a fixed priority, a slot could wait for ever behind lower
        # slots whose misses fault at once and come back (the memory-error traffic).
        # The pick is registered (``ctx_pick_q``) and loaded only if that slot still
        # waits: the slot states through the round-robin into the ~50 payload bits
        # were a routed critical path (issue 7). A slot just picked is still CONTEXT
        # for a cycle, but the register is full then, and the check drops a pick of it
        # made meanwhile.
        ctx_pick = round_robin(m, wants_ctx, ctx_req_owner, n, "ctx_pick")
        ctx_pick_q = Signal(range(max(n, 2)))
        m.d.sync += ctx_pick_q.eq(ctx_pick)
        ctx_load = Signal()
        m.d.comb += ctx_load.eq(wants_ctx.bit_select(ctx_pick_q, 1) & ~ctx_req_valid)
        with m.If(ctx_load):
            m.d.sync += [ctx_req_valid.eq(1), ctx_req_owner.eq(ctx_pick_q)]
        with m.If(~ctx_req_valid):  # empty: the payload follows the pick (enable: one FF)
            for i in range(n):
                with m.If(ctx_pick_q == i):
                    q = slot_req[i]
                    m.d.sync += [
                        ctx.req.payload.device_id.eq(q.device_id),
                        ctx.req.payload.process_id.eq(q.process_id),
                        ctx.req.payload.pv.eq(q.pv),
                        ctx.req.payload.priv.eq(q.priv & q.pv),
                        ctx.req.payload.addr_type.eq(q.addr_type),
                        ctx.req.payload.access.eq(q.access),
                    ]
        m.d.comb += [
            ctx.req.valid.eq(ctx_req_valid & ~ctx_busy),
            ctx.res.ready.eq(1),
            self.ev_ddt_walk.eq(ctx.ddt_walk),
            self.ev_pdt_walk.eq(ctx.pdt_walk),
        ]
        with m.If(ctx.req.valid & ctx.req.ready):
            m.d.sync += [ctx_req_valid.eq(0), ctx_busy.eq(1), ctx_owner.eq(ctx_req_owner)]
        with m.If(ctx.res.valid):
            m.d.sync += ctx_busy.eq(0)

        # --------------------------------------------------- per-slot machines
        fs_walk_pulses = []
        for i in range(n):
            w = walkers[i]
            state = slot_state[i]
            q = slot_req[i]
            # Any invalidation while busy makes the slot's eventual result unfit to cache.
            with m.If(inval_seen & (state != SlotState.FREE)):
                m.d.sync += slot_stale[i].eq(1)

            m.d.comb += [
                w.req.payload.iova.eq(q.iova),
                w.req.payload.access.eq(q.access),
                w.req.payload.priv.eq(q.priv & q.pv),
                w.req.payload.context.eq(slot_ctx[i]),
                w.req.valid.eq(state == SlotState.WALK),
                w.res.ready.eq(state == SlotState.WALK_WAIT),
            ]
            fs_walk_pulses.append(w.req.valid & w.req.ready & (slot_ctx[i].fs_mode != 0))

            with m.Switch(state):
                with m.Case(SlotState.FREE):
                    # Free, the slot follows the IOTLB's result every cycle (its
                    # enable is its own state, not the decision to take the miss).
                    m.d.sync += [slot_req[i].eq(r), slot_stale[i].eq(0)]
                    with m.If(take_miss & alloc[i]):
                        m.d.sync += state.eq(SlotState.CONTEXT)
                with m.Case(SlotState.CONTEXT):
                    with m.If(ctx_req_valid & (ctx_req_owner == i)):
                        m.d.sync += state.eq(SlotState.CONTEXT_WAIT)
                with m.Case(SlotState.CONTEXT_WAIT):
                    res = ctx.res.payload
                    # Waiting, the slot follows the fetch's result (its own arrives
                    # with ``ctx.res.valid`` and ``ctx_owner`` == i, and stays).
                    # So does its response, as the fault it would be: it is kept only
                    # if the fetch faults (DONE), and WALK_WAIT rewrites it otherwise.
                    # The enables of its ~140 bits are then the state alone, not the
                    # fetch's valid, owner and fault (0.5 ns short of 100 MHz, issue 7).
                    suppressed = res.context.dtf & ~_cause_in(res.cause, _ALWAYS_REPORTED)
                    m.d.sync += [
                        slot_ctx[i].eq(res.context),
                        slot_resp[i].eq(0),
                        slot_resp[i].tag.eq(q.tag),
                        slot_resp[i].fault.eq(1),
                        slot_resp[i].cause.eq(res.cause),
                        slot_report[i].eq(~suppressed),
                        # A G-stage fault on a PDT entry's GPA (§4.5).
                        slot_iotval2[i].eq(res.iotval2),
                        slot_fill[i].eq(0),
                    ]
                    with m.If(ctx.res.valid & (ctx_owner == i)):
                        m.d.sync += state.eq(Mux(res.fault, SlotState.DONE, SlotState.WALK))
                with m.Case(SlotState.WALK), m.If(w.req.ready):
                    m.d.sync += state.eq(SlotState.WALK_WAIT)
                with m.Case(SlotState.WALK_WAIT):
                    # Waiting, the slot follows the walker's result every cycle (its
                    # own arrives with ``w.res.valid`` and stays): the enables of the
                    # ~250 result bits are the state, not the walker's valid (issue 7).
                    res = w.res.payload
                    both_bare = (slot_ctx[i].fs_mode == 0) & (slot_ctx[i].gs_mode == 0)
                    with m.If(w.res.valid):
                        m.d.sync += state.eq(SlotState.DONE)
                    m.d.sync += [
                        slot_resp[i].tag.eq(q.tag),
                        slot_resp[i].fault.eq(res.fault),
                        slot_resp[i].cause.eq(Mux_(res.fault, res.cause)),
                        # Both stages Bare: SPA = IOVA, all 64 bits (the walker's ppn
                        # holds only PAS bits). An MRIF-mode MSI: the MRIF's address.
                        slot_resp[i].spa.eq(Mux_(~res.fault, Mux(
                            both_bare, q.iova, Mux(
                                res.mrif, Cat(C(0, 9), res.mrif_offset, res.ppn),
                                Cat(q.iova[0:12], res.ppn))))),
                        slot_resp[i].mrif.eq(~res.fault & res.mrif),
                        slot_resp[i].notice.eq(Mux_(~res.fault & res.mrif, res.notice)),
                        slot_resp[i].size_log2.eq(Mux_(~res.fault, res.size_log2)),
                        slot_resp[i].r.eq(~res.fault & res.r),
                        slot_resp[i].w.eq(~res.fault & res.w),
                        slot_resp[i].x.eq(~res.fault & res.x),
                        slot_resp[i].u.eq(~res.fault & res.u),
                        slot_resp[i].g.eq(~res.fault & res.g),
                        slot_resp[i].pbmt.eq(Mux_(~res.fault, res.pbmt)),
                        slot_d[i].eq(res.d),
                        # Walk faults are translation faults: DTF suppresses them all.
                        slot_report[i].eq(res.fault & ~slot_ctx[i].dtf),
                        slot_iotval2[i].eq(res.iotval2),
                        # An identity beyond PAS does not fit an IOTLB entry, nor do an
                        # MRIF's notice fields: neither is cached (caching is optional).
                        slot_fill[i].eq(~res.fault & ~slot_stale[i] & ~inval_seen
                                        & ~res.mrif
                                        & ~(both_bare & q.iova[layouts.PA_BITS:].any())),
                    ]
                with m.Case(SlotState.DONE), m.If(take_slot & winner[i]):
                    m.d.sync += state.eq(SlotState.FREE)
            # A slot that became stale while DONE must not fill.
            with m.If(inval_seen & (state == SlotState.DONE)):
                m.d.sync += slot_fill[i].eq(0)

        m.d.comb += self.ev_fs_walk.eq(Cat(*fs_walk_pulses).any())

        # ------------------------------------------------ HPM event identities
        def event_source(src, q):
            m.d.comb += [src.eq(0),  # GSCID/PSCID tags: unknown before the context
                         src.device_id.eq(q.device_id), src.pv.eq(q.pv),
                         src.process_id.eq(Mux_(q.pv, q.process_id)),
                         src.addr_type.eq(q.addr_type)]

        event_source(self.ev_request_src, req)
        walk_ctx = ctx.res.payload.context
        for i in range(n):
            with m.If(ctx_owner == i):
                event_source(self.ev_context_src, slot_req[i])
                event_source(self.ev_walk_src, slot_req[i])
        m.d.comb += [
            self.ev_walk.eq(ctx.res.valid & ~ctx.res.payload.fault),
            self.ev_walk_src.gscid_valid.eq(walk_ctx.gs_mode != 0),
            self.ev_walk_src.gscid.eq(walk_ctx.gscid),
            self.ev_walk_src.pscid_valid.eq(walk_ctx.fs_mode != 0),
            self.ev_walk_src.pscid.eq(walk_ctx.pscid),
        ]
        return m


def Mux_(cond, value):
    """``value`` when ``cond`` else 0 (a masked field)."""
    from amaranth.hdl import Mux

    return Mux(cond, value, 0)


def _cause_in(cause, codes):
    return Cat(*(cause == c for c in codes)).any()
