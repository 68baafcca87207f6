"""A register slice for a stream: both directions registered, one transfer per cycle.

    i ──valid/payload──► [main] ──► o          i.ready = ~skid_valid   (a flip-flop)
      ◄──ready─────────  [skid]                o.valid = main_valid    (a flip-flop)

Between two blocks a stream's ``ready`` usually runs back through every arbiter and
state machine on the way, and ends on the enables of hundreds of flip-flops; its
``valid`` and payload run forward the same way. A slice cuts both (issue 7, timing):
the producer sees a ``ready`` straight from a flip-flop, the consumer a ``valid`` and
payload straight from flip-flops. It costs one cycle of latency and no throughput: when
the consumer stalls, the transfer already promised by ``i.ready`` lands in the skid
register, and ``i.ready`` falls a cycle later.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class SkidBuffer(wiring.Component):
    """Two-entry elastic register between ``i`` and ``o`` (streams of ``shape``)."""

    def __init__(self, shape):
        self.shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        main_valid = Signal()
        main = Signal(self.shape)
        skid_valid = Signal()
        skid = Signal(self.shape)
        m.d.comb += [
            self.i.ready.eq(~skid_valid),
            self.o.valid.eq(main_valid),
            self.o.payload.eq(main),
        ]
        take_in = self.i.valid & self.i.ready
        main_free = ~main_valid | self.o.ready  # main is empty or leaves at this edge
        with m.If(main_free):
            # Refill main: the skid's older transfer first, else the one arriving.
            with m.If(skid_valid):
                m.d.sync += [main.eq(skid), main_valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [main.eq(self.i.payload), main_valid.eq(take_in)]
        with m.Elif(take_in):
            # Main is held: the arriving transfer waits in the skid register.
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
