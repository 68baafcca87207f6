"""Hardware performance monitor (§8.10, events §10.6): iohpmcycles and N event counters.

    core ev_* pulses + EventSource ─► match (eventID, ID filters, iocountinh) ─► iohpmctrN += 1
    every cycle (unless iocountinh.CY) ────────────────────────────────────────► iohpmcycles += 1
    an OF bit going 0 -> 1 ─► ``overflow`` pulse (the ipsr.pmip source)

The core raises at most one event of each ID per cycle (one request accepted, one
context fetch, one walk decision), so a counter, which selects one event ID, adds
at most one per cycle and no event is lost.

Timing (issue 7): the events come from all over the core and the counters are 64
bits wide, so an event is counted in four registered steps: the pulses and their
sources are registered as they arrive (E), matched against every selector (M1: per
source, the raised event and its two ID filters; M2: their AND, a count strobe per
counter), and added (C). A counter therefore shows an event ``EVENT_LATENCY`` (4)
cycles after its pulse (software reads take longer than that). What
depends on the selector alone is decoded when it is written and kept in registers:
the events it counts (one-hot) and its DMASK care mask.

Register writes are registered too (W, issue 7): the strobe, the written halves and
the data arrive from the register file's decode and are applied one cycle later,
merged then with the half that is kept, so the address decode is not in front of
the counters' 64-bit adders and the selector decode. The register file holds the
next access for that cycle, so a read still sees every earlier write.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from models import arch
from models.arch import HpmEvent, Hpmevt, Iohpmcycles

from . import layouts


class EventSource(data.Struct):
    """Who caused an HPM event: the identities iohpmevtN's filters compare (§8.10).

    ``process_id`` is 0 when ``pv`` is 0. The GSCID/PSCID tags are valid only once a
    device context is known (``gscid_valid``: a G-stage is active, ``pscid_valid``: a
    first stage is active), as in ``models/translate.py``'s events.
    """

    device_id: unsigned(layouts.DEVICE_ID_BITS)
    pv: unsigned(1)
    process_id: unsigned(layouts.PROCESS_ID_BITS)
    addr_type: layouts.AddrType
    gscid_valid: unsigned(1)
    gscid: unsigned(layouts.GSCID_BITS)
    pscid_valid: unsigned(1)
    pscid: unsigned(layouts.PSCID_BITS)


#: Cycles from an event's pulse to its counter's new value (E, M1, M2, C).
EVENT_LATENCY = 4

#: Request event per address type (§10.6 ids 1-3).
_REQUEST_EVENT = {
    layouts.AddrType.UNTRANSLATED: HpmEvent.UNTRANSLATED_REQ,
    layouts.AddrType.TRANSLATED: HpmEvent.TRANSLATED_REQ,
    layouts.AddrType.ATS_TRANSLATION_REQUEST: HpmEvent.ATS_TRANSLATION_REQ,
}


def legal_event_id(value):
    """iohpmevt.eventID is WARL: ids this IOMMU does not define (reserved, custom) read 0."""
    event_id = value[Hpmevt.EVENT_ID.lo:Hpmevt.EVENT_ID.hi + 1]
    known = Cat(*(event_id == int(e) for e in HpmEvent)).any()
    return Mux(known, event_id, 0)


def did_gscid_care(selector):
    """The DID_GSCID bits iohpmevt compares: all of them, or with DMASK=1 all but those
    up to and including the lowest 0 bit of DID_GSCID (§8.10).

    Bit i is ignored when every bit below it is 1 (then the lowest 0 is at i or above):
    a prefix AND per bit, no carry chain (issue 7)."""
    width = Hpmevt.DID_GSCID.width
    want = selector[Hpmevt.DID_GSCID.lo:Hpmevt.DID_GSCID.hi + 1]
    dmask = selector[Hpmevt.DMASK.lo]
    return Cat(~(dmask & want[:i].all()) for i in range(width))


def did_gscid_match(selector, value, care):
    """iohpmevt.DID_GSCID compared with ``value`` on the bits of ``care``."""
    want = selector[Hpmevt.DID_GSCID.lo:Hpmevt.DID_GSCID.hi + 1]
    return ((value ^ want) & care) == 0


def counts_event(selector, event_id: int):
    """iohpmevt selects the event of constant ``event_id``: its eventID, and IDT=0 for an
    event without GSCID/PSCID (an IDT=1 selector for it never counts)."""
    selected = selector[Hpmevt.EVENT_ID.lo:Hpmevt.EVENT_ID.hi + 1] == event_id
    if event_id not in arch.HPM_EVENTS_WITH_IDT:
        selected = selected & ~selector[Hpmevt.IDT.lo]
    return selected


def filter_terms(selector, src, care):
    """The two ID filters of one iohpmevt selector, (PID/PSCID, DID/GSCID), each 1 when
    it passes (DID_GSCID compared on ``care``); the event counts when both do."""
    idt = selector[Hpmevt.IDT.lo]
    by_pid = selector[Hpmevt.PV_PSCV.lo]
    by_did = selector[Hpmevt.DV_GSCV.lo]
    want_pid = selector[Hpmevt.PID_PSCID.lo:Hpmevt.PID_PSCID.hi + 1]
    pid_ok = Mux(idt, src.pscid_valid & (src.pscid == want_pid),
                 src.pv & (src.process_id == want_pid))
    did_ok = Mux(idt, src.gscid_valid & did_gscid_match(selector, src.gscid, care),
                 did_gscid_match(selector, src.device_id, care))
    return ~by_pid | pid_ok, ~by_did | did_ok



class Hpm(wiring.Component):
    """iohpmcycles, iohpmctr1..N and iohpmevt1..N with their overflow rules (§8.10).

    Ports:
      inhibit:      iocountinh (bit 0 cycles, bit n counter n).
      write_cycles / write_ctr[n] / write_evt[n]: one-cycle write strobes from the
                    register file, value in ``wdata``, ``write_halves`` the 4-byte
                    halves written (bit 0 low, bit 1 high; the other half is kept).
                    The write takes effect 1 cycle after its strobe (W) and wins over
                    a count in that cycle; events pulsed in the 3 cycles before it
                    may count on top of the written value.
      cycles, ctr[n], evt[n]: the registers' values (``ctr[0]`` is iohpmctr1).
      ev_request (+ev_request_src): a request was accepted (events 1-3 by addr_type);
                    every ev_* is counted EVENT_LATENCY cycles after its pulse (see above).
      ev_ddt_walk / ev_pdt_walk (+ev_context_src): a DDT / PDT walk started (5, 6).
      ev_walk (+ev_walk_src): a miss with a known context goes to the page tables:
                    TLB_MISS (4) when a stage is active, S_VS_PT_WALK (7) when the first
                    stage is. G_PT_WALK (8) is never raised: the RTL has no G-stage.
      overflow:     an OF bit went 0 -> 1 in the previous cycle (ipsr.pmip). Registered
                    (issue 7): the 64-bit all-ones checks are not in front of ipsr.
    """

    def __init__(self, counters: int):
        if not 1 <= counters <= arch.HPM_COUNTERS_MAX:
            raise ValueError(f"counters must be 1..{arch.HPM_COUNTERS_MAX}, not {counters!r}")
        self.counters = counters
        super().__init__({
            "inhibit": In(counters + 1),
            "write_cycles": In(1),
            "write_ctr": In(counters),
            "write_evt": In(counters),
            "write_halves": In(2),
            "wdata": In(64),
            "cycles": Out(64),
            "ctr": Out(64).array(counters),
            "evt": Out(64).array(counters),
            "ev_request": In(1),
            "ev_request_src": In(EventSource),
            "ev_ddt_walk": In(1),
            "ev_pdt_walk": In(1),
            "ev_context_src": In(EventSource),
            "ev_walk": In(1),
            "ev_walk_src": In(EventSource),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        overflows = []

        # ------------------------------------------------ W: writes registered
        write_cycles = Signal(name="w_cycles")
        write_ctr = Signal(self.counters, name="w_ctr")
        write_evt = Signal(self.counters, name="w_evt")
        write_halves = Signal(2, name="w_halves")
        wdata = Signal(64, name="w_data")
        # The halves and data are registered in every cycle, beside their strobes, and
        # used only in the cycle after (a strobe's): with the OR of the strobes as
        # their enable, the register file's decode into 66 enables was 0.85 ns short
        # of 100 MHz (issue 7).
        m.d.sync += [write_cycles.eq(self.write_cycles), write_ctr.eq(self.write_ctr),
                     write_evt.eq(self.write_evt),
                     write_halves.eq(self.write_halves), wdata.eq(self.wdata)]

        def written(current):
            """``current`` with the written halves replaced (a 4-byte write keeps the other)."""
            return Cat(Mux(write_halves[0], wdata[:32], current[:32]),
                       Mux(write_halves[1], wdata[32:], current[32:]))

        # ---------------------------------------------------------- iohpmcycles
        count_width = Iohpmcycles.COUNTER.width
        counter = self.cycles[:count_width]
        of = self.cycles[Iohpmcycles.OF.lo]
        with m.If(write_cycles):
            m.d.sync += self.cycles.eq(written(self.cycles))
        with m.Elif(~self.inhibit[0]):
            wrap = counter.all()
            m.d.sync += [counter.eq(counter + 1), of.eq(of | wrap)]
        # With OF already 1 the counter just wraps (no new interrupt).
        overflows.append(~write_cycles & ~self.inhibit[0] & counter.all() & ~of)

        # ------------------------------------------------ E: events registered
        def registered(port, name):
            reg = Signal.like(port, name=name)
            m.d.sync += reg.eq(port)
            return reg

        ev_request = registered(self.ev_request, "e_request")
        request_src = registered(self.ev_request_src, "e_request_src")
        ev_ddt_walk = registered(self.ev_ddt_walk, "e_ddt_walk")
        ev_pdt_walk = registered(self.ev_pdt_walk, "e_pdt_walk")
        context_src = registered(self.ev_context_src, "e_context_src")
        ev_walk = registered(self.ev_walk, "e_walk")
        w = registered(self.ev_walk_src, "e_walk_src")
        # (valid, event id, source) for every event the core can raise.
        events = [(ev_request & (request_src.addr_type == addr_type), int(eid), request_src)
                  for addr_type, eid in _REQUEST_EVENT.items()]
        events += [
            (ev_ddt_walk, int(HpmEvent.DDT_WALK), context_src),
            (ev_pdt_walk, int(HpmEvent.PDT_WALK), context_src),
            (ev_walk & (w.gscid_valid | w.pscid_valid), int(HpmEvent.TLB_MISS), w),
            (ev_walk & w.pscid_valid, int(HpmEvent.S_VS_PT_WALK), w),
        ]
        sources = [request_src, context_src, w]

        for n in range(self.counters):
            ctr, evt = self.ctr[n], self.evt[n]
            ctr_of = evt[Hpmevt.OF.lo]
            # Decoded from the selector as it is written; the reset selector (0) counts
            # nothing and compares every DID_GSCID bit.
            counted = Signal(len(events), name=f"counted{n + 1}")
            care = Signal(Hpmevt.DID_GSCID.width, name=f"did_care{n + 1}",
                          init=(1 << Hpmevt.DID_GSCID.width) - 1)
            with m.If(write_evt[n]):
                merged = written(evt)
                new_evt = Cat(legal_event_id(merged), merged[Hpmevt.EVENT_ID.width:])
                m.d.sync += [evt.eq(new_evt), care.eq(did_gscid_care(new_evt)),
                             counted.eq(Cat(counts_event(new_evt, eid) for _, eid, _ in events))]
            # M1: this cycle's events matched against the selector, each source's
            # raised event and its two ID filters registered apart; M2: their AND.
            # (The filters' compares and their AND into one count strobe were 8
            # levels, issue 7.)
            by_source = []
            for k, src in enumerate(sources):
                raised = Cat(valid & counted[e] for e, (valid, _, s) in enumerate(events)
                             if s is src).any()
                pid_term, did_term = filter_terms(evt, src, care)
                terms = Signal(3, name=f"matched{n + 1}_{k}")
                m.d.sync += terms.eq(Cat(raised, pid_term, did_term))
                by_source.append(terms.all())
            count = Signal(name=f"count{n + 1}")
            m.d.sync += count.eq(Cat(*by_source).any() & ~self.inhibit[n + 1])
            with m.If(write_ctr[n]):
                m.d.sync += ctr.eq(written(ctr))
            with m.Elif(count):
                # iohpmctrN is 64 bits wide; its wrap sets iohpmevtN.OF (§8.10).
                wrap = ctr.all()
                m.d.sync += ctr.eq(ctr + 1)
                with m.If(wrap & ~write_evt[n]):
                    m.d.sync += ctr_of.eq(1)
            overflows.append(~write_ctr[n] & count & ctr.all() & ~ctr_of)

        m.d.sync += self.overflow.eq(Cat(*overflows).any())
        return m
