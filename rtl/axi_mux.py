"""Two AXI4 managers merged onto one AXI4 master port (``merge_memory_ports``).

    s0 (device DMA, translated) ─┐                 AR, AW: round robin, a burst offered
                                 ├─► m: ID = {source, ID}   is held until taken
    s1 (the IOMMU's own port)  ──┘                 W: follows the AW order (a FIFO of sources)
                                                   R, B: routed back by the ID's top bit

The source of each write burst is queued when its AW is first offered, not when
it is accepted, so the W beats may run ahead of AWREADY (a subordinate may wait for
WVALID before AWREADY, AMBA AXI A3.3.1). Both managers share address and data widths;
the narrower ID is zero-extended.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .axi import AxiSignature

_ADDRESS_FIELDS = ("addr", "len", "size", "burst", "lock", "cache", "prot", "qos")


class AxiMerge(wiring.Component):
    """``s0`` and ``s1`` (AXI4 slaves, IDs of ``id_widths``) onto ``m`` (ID one bit wider).

    write_depth: write bursts whose data may be pending (the W order FIFO).
    """

    def __init__(self, addr_width: int, data_width: int, id_widths: tuple[int, int], *,
                 write_depth: int = 4):
        self.id_width = max(id_widths)
        self.write_depth = write_depth
        super().__init__({
            "s0": In(AxiSignature(addr_width, data_width, id_widths[0])),
            "s1": In(AxiSignature(addr_width, data_width, id_widths[1])),
            "m": Out(AxiSignature(addr_width, data_width, self.id_width + 1)),
        })

    def _address_channel(self, m: Module, ax: str, order=None):
        """Round-robin AR or AW; ``order`` (a FIFO) records each AW's source."""
        src = (self.s0, self.s1)
        sig = lambda port, name: getattr(port, f"{ax}{name}")
        last = Signal(name=f"{ax}_last_granted")
        locked, held = Signal(name=f"{ax}_locked"), Signal(name=f"{ax}_held")
        grant = Signal(name=f"{ax}_grant")
        v0, v1 = sig(src[0], "valid"), sig(src[1], "valid")
        # Round robin: the source not granted last wins a tie.
        m.d.comb += grant.eq(Mux(locked, held, Mux(v0 & v1, ~last, v1)))
        valid = Mux(grant, v1, v0)
        recorded = Signal(name=f"{ax}_recorded")  # this burst's source is in ``order``
        can_offer = valid if order is None else valid & (recorded | order.w_rdy)
        ready = sig(self.m, "ready")
        m.d.comb += sig(self.m, "valid").eq(can_offer)
        for k, port in enumerate(src):
            m.d.comb += sig(port, "ready").eq((grant == k) & can_offer & ready)
        with m.If(grant):
            m.d.comb += sig(self.m, "id").eq(sig(src[1], "id") | (1 << self.id_width))
            for name in _ADDRESS_FIELDS:
                m.d.comb += sig(self.m, name).eq(sig(src[1], name))
        with m.Else():
            m.d.comb += sig(self.m, "id").eq(sig(src[0], "id"))
            for name in _ADDRESS_FIELDS:
                m.d.comb += sig(self.m, name).eq(sig(src[0], name))
        with m.If(can_offer):
            m.d.sync += [locked.eq(~ready), held.eq(grant)]
            with m.If(ready):
                m.d.sync += last.eq(grant)
        if order is not None:
            m.d.comb += [order.w_data.eq(grant), order.w_en.eq(can_offer & ~recorded)]
            with m.If(can_offer):
                m.d.sync += recorded.eq(~ready)

    def elaborate(self, platform):
        m = Module()
        s0, s1, mm = self.s0, self.s1, self.m
        top = self.id_width  # the source bit of m's IDs

        m.submodules.write_order = order = SyncFIFOBuffered(width=1, depth=self.write_depth)
        self._address_channel(m, "ar")
        self._address_channel(m, "aw", order)

        # W: beats of the oldest write burst whose source is queued.
        w_source = order.r_data[0]
        with m.If(order.r_rdy):
            for k, port in enumerate((s0, s1)):
                with m.If(w_source == k):
                    m.d.comb += [mm.wvalid.eq(port.wvalid), port.wready.eq(mm.wready),
                                 mm.wdata.eq(port.wdata), mm.wstrb.eq(port.wstrb),
                                 mm.wlast.eq(port.wlast)]
        m.d.comb += order.r_en.eq(mm.wvalid & mm.wready & mm.wlast)

        # R and B: back to the source named by the ID's top bit.
        for k, port in enumerate((s0, s1)):
            mine_r, mine_b = mm.rid[top] == k, mm.bid[top] == k
            m.d.comb += [
                port.rvalid.eq(mm.rvalid & mine_r), port.rid.eq(mm.rid[:top]),
                port.rdata.eq(mm.rdata), port.rresp.eq(mm.rresp), port.rlast.eq(mm.rlast),
                port.bvalid.eq(mm.bvalid & mine_b), port.bid.eq(mm.bid[:top]),
                port.bresp.eq(mm.bresp),
            ]
        m.d.comb += [mm.rready.eq(Mux(mm.rid[top], s1.rready, s0.rready)),
                     mm.bready.eq(Mux(mm.bid[top], s1.bready, s0.bready))]
        return m
