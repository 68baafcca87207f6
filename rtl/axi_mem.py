"""The IOMMU's own memory port (walks, queues, MSIs) as an AXI4 master.

Each ``mem_req`` becomes one single-beat AXI burst with the request's id as AxID,
so reads of different walkers overlap and may complete in any order:

    READ     ─► AR (8 bytes)                         R ─► mem_resp (rdata from its lane)
    WRITE    ─► AW + W (8 bytes)                     B ─► mem_resp
    WRITE32  ─► AW + W (4 bytes, wstrb on its lane)  B ─► mem_resp
    CAS      ─► AR, compare, then AW + W if equal    R, B ─► mem_resp (rdata = old value)

A non-OKAY RRESP/BRESP is ``MemErr.ACCESS_FAULT`` (AXI4 has no poison signal, so
data corruption, cause 268/269/274, is never reported from this port).

Compare-and-swap: AXI4 has no atomic compare-and-swap, so it is a read, a compare
and a write. No other request of the IOMMU is issued between them; atomicity against
other masters (a CPU clearing a PTE between the read and the write) needs a memory
that only this port writes to page tables, or the OS to follow the spec's rule of
invalidating after changing a valid PTE (§10.5); a lost A/D update is then the
spec's benign race. Exclusive accesses (AxLOCK) are not used.

``data_width`` is 64 or wider; 8-byte transfers use the lane their address selects.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .axi import AxiSignature, Burst, Resp

_DWORD_SIZE = 3  # AxSIZE of an 8-byte transfer
_WORD_SIZE = 2  # AxSIZE of a 4-byte transfer


class AxiMemoryPort(wiring.Component):
    """``mem_req``/``mem_resp`` (layouts.mem_request/mem_response) on the AXI4 master ``m_axi``.

    id_bits: the memory port's id width (= AxID width); pa_width: AxADDR bits;
    data_width: 64..1024.
    """

    def __init__(self, id_bits: int, *, pa_width: int = layouts.PA_BITS, data_width: int = 64):
        if data_width < 64:
            raise ValueError(f"the IOMMU's memory port needs data_width >= 64, not {data_width}")
        self.id_bits, self.pa_width, self.data_width = id_bits, pa_width, data_width
        super().__init__({
            "mem_req": In(stream.Signature(layouts.mem_request(id_bits))),
            "mem_resp": Out(stream.Signature(layouts.mem_response(id_bits))),
            "m_axi": Out(AxiSignature(pa_width, data_width, id_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        a, req = self.m_axi, self.mem_req.payload
        lanes = self.data_width // 64
        lane_bits = max(lanes.bit_length() - 1, 0)

        def lane_of(addr):
            return addr[3:3 + lane_bits] if lane_bits else 0

        # ---------------------------------------------------- constant fields
        for ax in ("aw", "ar"):
            m.d.comb += [getattr(a, f"{ax}len").eq(0), getattr(a, f"{ax}burst").eq(Burst.INCR),
                         getattr(a, f"{ax}cache").eq(0b0011),  # normal, bufferable, modifiable
                         getattr(a, f"{ax}prot").eq(0b010)]  # unprivileged, non-secure, data
        m.d.comb += a.wlast.eq(1)

        # The lane each outstanding read will find its data in, by id.
        read_lane = Array(Signal(range(max(lanes, 2)), name=f"read_lane{i}")
                          for i in range(1 << self.id_bits))

        # ------------------------------------------- compare-and-swap registers
        cas_id = Signal(self.id_bits)
        cas_addr = Signal(self.pa_width)
        cas_compare = Signal(64)
        cas_new = Signal(64)
        cas_old = Signal(64)
        cas_err = Signal()
        aw_done, w_done = Signal(), Signal()  # this write's AW / W already taken

        store = Signal()  # an AW + W pair is being offered ...
        store_id = Signal(self.id_bits)
        store_addr = Signal(self.pa_width)
        store_data = Signal(64)
        store_word = Signal()  # ... of 4 bytes (WRITE32), else 8
        store_taken = Signal()  # both halves handed over (this cycle or before)
        m.d.comb += [
            a.awvalid.eq(store & ~aw_done), a.wvalid.eq(store & ~w_done),
            a.awid.eq(store_id), a.awaddr.eq(store_addr),
            a.awsize.eq(Mux(store_word, _WORD_SIZE, _DWORD_SIZE)),
            a.wdata.eq(Cat(Mux(store_word, Cat(store_data[:32], store_data[:32]), store_data)
                           for _ in range(lanes))),
            store_taken.eq(store & (aw_done | a.awready) & (w_done | a.wready)),
        ]
        strobes = Mux(store_word, Mux(store_addr[2], 0xF0, 0x0F), 0xFF)
        m.d.comb += a.wstrb.eq(strobes << (lane_of(store_addr) * 8) if lane_bits else strobes)
        with m.If(store):
            m.d.sync += [aw_done.eq((aw_done | a.awready) & ~store_taken),
                         w_done.eq((w_done | a.wready) & ~store_taken)]

        # Responses the issue FSM consumes itself (the compare-and-swap's read and write).
        cas_r = Signal()
        cas_b = Signal()
        cas_respond = Signal()
        rdata = a.rdata.word_select(read_lane[a.rid], 64) if lanes > 1 else a.rdata

        # -------------------------------------------------------------- issue
        with m.FSM():
            with m.State("ISSUE"), m.Switch(req.op):
                with m.Case(layouts.MemOp.READ):
                    m.d.comb += [a.arvalid.eq(self.mem_req.valid), a.arid.eq(req.id),
                                 a.araddr.eq(req.addr), a.arsize.eq(_DWORD_SIZE),
                                 self.mem_req.ready.eq(a.arready)]
                    with m.If(self.mem_req.valid & a.arready):
                        m.d.sync += read_lane[req.id].eq(lane_of(req.addr))
                with m.Case(layouts.MemOp.WRITE, layouts.MemOp.WRITE32):
                    m.d.comb += [store.eq(self.mem_req.valid), store_id.eq(req.id),
                                 store_addr.eq(req.addr), store_data.eq(req.wdata),
                                 store_word.eq(req.op == layouts.MemOp.WRITE32),
                                 self.mem_req.ready.eq(store_taken)]
                with m.Case(layouts.MemOp.CAS):
                    m.d.comb += self.mem_req.ready.eq(1)
                    with m.If(self.mem_req.valid):
                        m.d.sync += [cas_id.eq(req.id), cas_addr.eq(req.addr),
                                     cas_compare.eq(req.compare), cas_new.eq(req.wdata)]
                        m.next = "CAS_READ"
            with m.State("CAS_READ"):
                m.d.comb += [a.arvalid.eq(1), a.arid.eq(cas_id), a.araddr.eq(cas_addr),
                             a.arsize.eq(_DWORD_SIZE)]
                with m.If(a.arready):
                    m.d.sync += read_lane[cas_id].eq(lane_of(cas_addr))
                    m.next = "CAS_READ_WAIT"
            with m.State("CAS_READ_WAIT"):
                m.d.comb += cas_r.eq(a.rvalid & (a.rid == cas_id))
                with m.If(cas_r):
                    m.d.sync += [cas_old.eq(rdata), cas_err.eq(a.rresp != Resp.OKAY)]
                    with m.If((a.rresp == Resp.OKAY) & (rdata == cas_compare)):
                        m.next = "CAS_WRITE"
                    with m.Else():
                        m.next = "CAS_RESPOND"  # a fault, or memory changed: no store
            with m.State("CAS_WRITE"):
                m.d.comb += [store.eq(1), store_id.eq(cas_id), store_addr.eq(cas_addr),
                             store_data.eq(cas_new)]
                with m.If(store_taken):
                    m.next = "CAS_WRITE_WAIT"
            with m.State("CAS_WRITE_WAIT"):
                m.d.comb += cas_b.eq(a.bvalid & (a.bid == cas_id))
                with m.If(cas_b):
                    m.d.sync += cas_err.eq(a.bresp != Resp.OKAY)
                    m.next = "CAS_RESPOND"
            with m.State("CAS_RESPOND"):
                m.d.comb += cas_respond.eq(1)
                with m.If(self.mem_resp.ready):
                    m.next = "ISSUE"

        # ---------------------------------------------------- responses out
        # Three sources; a response offered is held until taken (the choice is locked).
        r_ready, b_ready = Signal(), Signal()
        source = Signal(2)  # 0 R, 1 B, 2 compare-and-swap
        locked, held = Signal(), Signal(2)
        with m.If(locked):
            m.d.comb += source.eq(held)
        with m.Elif(a.rvalid & ~cas_r):
            m.d.comb += source.eq(0)
        with m.Elif(a.bvalid & ~cas_b):
            m.d.comb += source.eq(1)
        with m.Else():
            m.d.comb += source.eq(2)
        resp = self.mem_resp.payload
        with m.Switch(source):
            with m.Case(0):
                m.d.comb += [self.mem_resp.valid.eq(a.rvalid & ~cas_r), resp.id.eq(a.rid),
                             resp.rdata.eq(rdata), r_ready.eq(self.mem_resp.ready)]
                with m.If(a.rresp != Resp.OKAY):
                    m.d.comb += resp.err.eq(layouts.MemErr.ACCESS_FAULT)
            with m.Case(1):
                m.d.comb += [self.mem_resp.valid.eq(a.bvalid & ~cas_b), resp.id.eq(a.bid),
                             b_ready.eq(self.mem_resp.ready)]
                with m.If(a.bresp != Resp.OKAY):
                    m.d.comb += resp.err.eq(layouts.MemErr.ACCESS_FAULT)
            with m.Case(2):
                m.d.comb += [self.mem_resp.valid.eq(cas_respond), resp.id.eq(cas_id),
                             resp.rdata.eq(cas_old)]
                with m.If(cas_err):
                    m.d.comb += resp.err.eq(layouts.MemErr.ACCESS_FAULT)
        m.d.comb += [a.rready.eq(r_ready | cas_r), a.bready.eq(b_ready | cas_b)]
        m.d.sync += [locked.eq(self.mem_resp.valid & ~self.mem_resp.ready), held.eq(source)]
        return m
