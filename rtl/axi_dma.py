"""The device port: DMA bursts in on an AXI4 slave, translated, out on an AXI4 master.

    s_axi AR ─► BurstTranslator (read)  ─► m_axi AR      outcome FIFO ─► R: memory's beats,
                 │                          ▲ (ID 1)                      or local beats
                 │                     MrifWriter ◄──── W beat of an MRIF-mode MSI
                 │                          │ (ID 1) ▲ job                 (its response ─► B)
    s_axi AW ─► BurstTranslator (write) ─► m_axi AW      outcome FIFO ─► W: forwarded, or
                 │      ▲                                                  consumed and dropped
                 ▼      │                                               ─► B FIFO ─► B
              tr_req / tr_resp (one translation per burst; tag 0 = read, 1 = write)

Each burst is translated once, for its first address: an AXI4 burst stays inside one
4 KiB page (AMBA AXI A3.4.1), and IOMMU translations are at least 4 KiB, so one
translation covers every beat. The device's identity comes on AxUSER
(``axi.dma_user_layout``: device_id, process_id, pv, priv); reads ask for READ, or
EXECUTE when ARPROT[2] (instruction) is set; writes ask for WRITE.

Outcomes, in the order the bursts arrived on each channel:

* translated: the burst goes to ``m_axi`` with the SPA (page offset kept) and
  AxID 0; the memory's response is returned with the device's ID restored;
* translation fault (any cause; the IOMMU writes the fault record): SLVERR;
* a burst the bridge cannot forward (crosses 4 KiB, AxSIZE wider than the bus,
  reserved AxBURST, a WRAP of illegal length or alignment), or a translation whose
  SPA does not fit ``m_axi``'s address: DECERR without translating it;
* an MSI translated through an MRIF-mode MSI PTE (the completion's ``mrif``, §9.4):
  never forwarded to the MRIF address. A write that is one naturally aligned 32-bit
  beat (AWLEN 0, AWSIZE 2) goes to the MRIF writer (``rtl/axi_mrif.py``), which sets
  the pending bit and sends the notice MSI on ``m_axi`` with AxID 1, or discards it,
  and gives its response; any other write is aborted with SLVERR. An aligned 32-bit
  read (ARLEN 0, ARSIZE 2) returns 0 with OKAY (the spec's preference), any other
  read SLVERR; nothing is read.

a burst answered by the bridge never reaches memory: its write data beats are consumed
and dropped, its reads answered with zero data. Responses leave in arrival order per
channel (stricter than AXI's same-ID rule), so device bursts need only one ID on the
memory side. While the MRIF writer works, the write translator forwards nothing more
(AXI's W order follows AW order); reads go on.
Throughput: one burst per channel is translated at a time (an IOTLB hit costs about
5 cycles per burst); up to ``outstanding`` translated bursts per channel are in flight
to memory while the next is translated.
"""

from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from models import arch

from . import layouts
from .axi import BOUNDARY, PROT_INSTRUCTION, AxiSignature, Burst, Resp, dma_user_layout
from .axi_mrif import MrifWriter, mrif_job_layout

#: The translation tag of each channel's (single) request in flight.
TAG_READ, TAG_WRITE = 0, 1
#: m_axi's AxID of the MRIF writer's own accesses (device bursts use 0).
MRIF_ID = 1


def burst_layout(addr_width: int, id_width: int, user_width: int) -> data.StructLayout:
    """An AR or AW channel transfer (the fields the bridge keeps)."""
    return data.StructLayout({
        "id": unsigned(id_width),
        "addr": unsigned(addr_width),
        "len": unsigned(8),
        "size": unsigned(3),
        "burst": Burst,
        "lock": unsigned(1),
        "cache": unsigned(4),
        "prot": unsigned(3),
        "qos": unsigned(4),
        "user": unsigned(max(user_width, 1)),
    })


def outcome_layout(id_width: int) -> data.StructLayout:
    """What became of one burst: forwarded to memory; answered by the bridge itself
    (``local``: ``resp`` on every beat, zero read data, write data dropped); or, for a
    write, handed to the MRIF writer (``mrif``: it takes the beat and gives the response)."""
    return data.StructLayout({
        "id": unsigned(id_width),
        "len": unsigned(8),
        "local": unsigned(1),
        "mrif": unsigned(1),
        "resp": Resp,
    })


def burst_is_legal(m: Module, burst, data_bytes_log2: int):
    """1 when the bridge may forward ``burst`` as one translation (see module doc)."""
    size_ok = burst.size <= data_bytes_log2
    beats = burst.len + 1  # 1..256
    offset = (burst.addr[:12] >> burst.size) << burst.size  # start, aligned to the size
    incr_ok = (offset + (beats << burst.size)) <= BOUNDARY
    aligned = ((burst.addr[:7] >> burst.size) << burst.size) == burst.addr[:7]
    wrap_ok = ((burst.len == 1) | (burst.len == 3) | (burst.len == 7) | (burst.len == 15)) & aligned
    legal = Signal(name="burst_legal")
    with m.Switch(burst.burst):
        with m.Case(Burst.FIXED):
            m.d.comb += legal.eq(size_ok)
        with m.Case(Burst.INCR):
            m.d.comb += legal.eq(size_ok & incr_ok)
        with m.Case(Burst.WRAP):
            m.d.comb += legal.eq(size_ok & wrap_ok)
    return legal


class BurstTranslator(wiring.Component):
    """One address channel: accept a burst, check it, translate it, forward or refuse it.

    ax_in: bursts from the device (IOVA); ax_out: translated bursts (SPA) for memory;
    outcome: one per burst, in order, for the data/response side (pushed before the
    burst is forwarded, so the data path may start the moment memory can take it);
    tr_req/tr_resp: the IOMMU's translation port (one request in flight);
    mrif (write only): an MRIF-mode MSI write for the MRIF writer, held until it has
    updated the MRIF and sent the notice (no later burst is forwarded meanwhile).
    """

    def __init__(self, *, write: bool, iova_width: int, pa_width: int, data_width: int,
                 id_width: int, user_width: int, tag_bits: int, device_id_bits: int,
                 process_id_bits: int):
        self.write = write
        self.iova_width, self.pa_width = iova_width, pa_width
        self.data_bytes_log2 = (data_width // 8).bit_length() - 1
        self.tag_bits = tag_bits
        self.user = dma_user_layout(device_id_bits, process_id_bits)
        members = {
            "ax_in": In(stream.Signature(burst_layout(iova_width, id_width, user_width))),
            "ax_out": Out(stream.Signature(burst_layout(pa_width, id_width, user_width))),
            "outcome": Out(stream.Signature(outcome_layout(id_width))),
            "tr_req": Out(stream.Signature(layouts.translation_request(tag_bits))),
            "tr_resp": In(stream.Signature(layouts.translation_response(tag_bits))),
        }
        if write:
            members["mrif"] = Out(stream.Signature(mrif_job_layout(pa_width)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        burst = Signal.like(self.ax_in.payload)  # the burst being handled
        spa = Signal(self.pa_width)
        notice = Signal(layouts.MrifNotice)  # of an MRIF-mode MSI write

        incoming_legal = burst_is_legal(m, self.ax_in.payload, self.data_bytes_log2)
        user = self.user(burst.user[:self.user.size])
        response = self.tr_resp.payload
        spa_fits = (response.spa >> self.pa_width) == 0 if self.pa_width < 64 else Const(1)
        notice_fits = (response.notice.ppn >> (self.pa_width - arch.PAGE_SHIFT)) == 0
        # §9.4: an MRIF takes only single naturally aligned 32-bit accesses.
        one_word = (burst.len == 0) & (burst.size == 2) & (burst.addr[:2] == 0)
        if self.write:
            # A well-formed MSI write goes to the MRIF writer, anything else is aborted.
            to_writer = response.mrif & one_word
            mrif_resp = Resp.SLVERR
        else:
            # A read of an MRIF page: an aligned 32-bit read returns 0, as §9.4 prefers;
            # any other read is aborted. Nothing is read.
            to_writer = Const(0)
            mrif_resp = Mux(one_word, Resp.OKAY, Resp.SLVERR)
        fits = spa_fits & (~to_writer | notice_fits)

        m.d.comb += [
            self.tr_req.payload.tag.eq(TAG_WRITE if self.write else TAG_READ),
            self.tr_req.payload.device_id.eq(user.device_id),
            self.tr_req.payload.process_id.eq(Mux(user.pv, user.process_id, 0)),
            self.tr_req.payload.pv.eq(user.pv),
            self.tr_req.payload.priv.eq(user.priv & user.pv),  # no PID: User (§1.1)
            self.tr_req.payload.addr_type.eq(layouts.AddrType.UNTRANSLATED),
            self.tr_req.payload.iova.eq(burst.addr),
            self.outcome.payload.id.eq(burst.id),
            self.outcome.payload.len.eq(burst.len),
            self.ax_out.payload.addr.eq(spa),
        ]
        for name in ("id", "len", "size", "burst", "lock", "cache", "prot", "qos", "user"):
            m.d.comb += getattr(self.ax_out.payload, name).eq(getattr(burst, name))  # kept
        if self.write:
            m.d.comb += self.tr_req.payload.access.eq(layouts.Access.WRITE)
        else:
            m.d.comb += self.tr_req.payload.access.eq(
                Mux(burst.prot[PROT_INSTRUCTION], layouts.Access.EXECUTE, layouts.Access.READ))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.ax_in.ready.eq(1)
                with m.If(self.ax_in.valid):
                    m.d.sync += burst.eq(self.ax_in.payload)
                    with m.If(incoming_legal):
                        m.next = "TRANSLATE"
                    with m.Else():
                        m.next = "REFUSE"  # never translated, never forwarded
            with m.State("TRANSLATE"):
                m.d.comb += self.tr_req.valid.eq(1)
                with m.If(self.tr_req.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                # The outcome is pushed with the response, so a refused burst is queued
                # behind the ones forwarded before it.
                forward = ~response.fault & ~response.mrif & fits
                handed = ~response.fault & to_writer & fits
                m.d.comb += [
                    self.outcome.valid.eq(self.tr_resp.valid),
                    self.tr_resp.ready.eq(self.outcome.ready),
                    self.outcome.payload.local.eq(~forward & ~handed),
                    self.outcome.payload.mrif.eq(handed),
                    self.outcome.payload.resp.eq(
                        Mux(response.fault, Resp.SLVERR,
                            Mux(response.mrif & ~to_writer, mrif_resp, Resp.DECERR))),
                ]
                with m.If(self.tr_resp.valid & self.outcome.ready):
                    m.d.sync += [spa.eq(response.spa), notice.eq(response.notice)]
                    with m.If(forward):
                        m.next = "FORWARD"
                    if self.write:  # (a read never goes to the MRIF writer)
                        with m.Elif(handed):
                            m.next = "MRIF"
                    with m.Else():
                        m.next = "IDLE"
            with m.State("FORWARD"):
                m.d.comb += self.ax_out.valid.eq(1)
                with m.If(self.ax_out.ready):
                    m.next = "IDLE"
            with m.State("REFUSE"):
                m.d.comb += [self.outcome.valid.eq(1), self.outcome.payload.local.eq(1),
                             self.outcome.payload.resp.eq(Resp.DECERR)]
                with m.If(self.outcome.ready):
                    m.next = "IDLE"
            if self.write:
                with m.State("MRIF"):
                    m.d.comb += [
                        self.mrif.valid.eq(1),
                        self.mrif.payload.mrif.eq(spa),
                        self.mrif.payload.notice.eq(notice.ppn << arch.PAGE_SHIFT),
                        self.mrif.payload.nid.eq(notice.nid),
                        self.mrif.payload.offset.eq(burst.addr[:arch.PAGE_SHIFT]),
                    ]
                    with m.If(self.mrif.ready):
                        m.next = "IDLE"
        return m


class AxiDmaBridge(wiring.Component):
    """Device DMA (``s_axi``, IOVAs) through the IOMMU's translation port to ``m_axi`` (SPAs).

    Parameters: iova_width (s_axi address bits), pa_width (m_axi address bits),
    data_width (both sides, >= 64), id_width (s_axi IDs; m_axi uses ID 0 of ``m_id_width``
    for device bursts and ``MRIF_ID`` for the MRIF writer's accesses),
    device_id_bits / process_id_bits (AxUSER fields), tag_bits (translation tags, >= 1),
    outstanding (translated bursts in flight per channel).
    """

    def __init__(self, *, iova_width: int = 64, pa_width: int = layouts.PA_BITS,
                 data_width: int = 64, id_width: int = 4, m_id_width: int = 1,
                 device_id_bits: int = layouts.DEVICE_ID_BITS,
                 process_id_bits: int = layouts.PROCESS_ID_BITS, tag_bits: int = 8,
                 outstanding: int = 4):
        if not 1 <= outstanding <= 64:
            raise ValueError(f"outstanding must be 1..64, not {outstanding!r}")
        if iova_width > layouts.IOVA_BITS or pa_width > layouts.IOVA_BITS:
            raise ValueError("iova_width and pa_width must be at most 64")
        self.user_width = dma_user_layout(device_id_bits, process_id_bits).size
        self.outstanding = outstanding
        self.pa_width, self.data_width = pa_width, data_width
        self.translator_args = {
            "iova_width": iova_width, "pa_width": pa_width, "data_width": data_width,
            "id_width": id_width, "user_width": self.user_width, "tag_bits": tag_bits,
            "device_id_bits": device_id_bits, "process_id_bits": process_id_bits}
        super().__init__({
            "s_axi": In(AxiSignature(iova_width, data_width, id_width, self.user_width)),
            "m_axi": Out(AxiSignature(pa_width, data_width, m_id_width)),
            "tr_req": Out(stream.Signature(layouts.translation_request(tag_bits))),
            "tr_resp": In(stream.Signature(layouts.translation_response(tag_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        s, mm = self.s_axi, self.m_axi
        m.submodules.read = rd = BurstTranslator(write=False, **self.translator_args)
        m.submodules.write = wr = BurstTranslator(write=True, **self.translator_args)
        m.submodules.mrif = mrif = MrifWriter(pa_width=self.pa_width,
                                              data_width=self.data_width)
        mw = mrif.m_axi
        wiring.connect(m, wr.mrif, mrif.job)

        # --------------------------------------------------- address channels
        # AR: the read translator's bursts and the MRIF writer's reads share m_axi's AR;
        # an offer is held until taken (grant locked), then the writer's go first.
        ar_locked, ar_held_mrif = Signal(), Signal()
        ar_pick_mrif = Mux(ar_locked, ar_held_mrif, mw.arvalid)
        with m.If(mm.arvalid):
            m.d.sync += [ar_locked.eq(~mm.arready), ar_held_mrif.eq(ar_pick_mrif)]
        # AW: the write translator is held while the writer works (see BurstTranslator),
        # so at most one of them offers an AW at any time.
        aw_mrif = mw.awvalid
        for ax, tr, from_mrif in (("ar", rd, ar_pick_mrif), ("aw", wr, aw_mrif)):
            def sig(name, port, ax=ax):
                return getattr(port, f"{ax}{name}")

            m.d.comb += [
                tr.ax_in.valid.eq(sig("valid", s)),
                sig("ready", s).eq(tr.ax_in.ready),
                sig("valid", mm).eq(Mux(from_mrif, sig("valid", mw), tr.ax_out.valid)),
                tr.ax_out.ready.eq(sig("ready", mm) & ~from_mrif),
                sig("ready", mw).eq(sig("ready", mm) & from_mrif),
                # ID 0: device bursts, answered in order (see module doc); ID 1: the
                # MRIF writer's own accesses, whose responses may overtake them.
                sig("id", mm).eq(Mux(from_mrif, MRIF_ID, 0)),
            ]
            for field in ("id", "addr", "len", "size", "burst", "lock", "cache", "prot", "qos",
                          "user"):
                m.d.comb += getattr(tr.ax_in.payload, field).eq(sig(field, s))
            for field in ("addr", "len", "size", "burst", "lock", "cache", "prot", "qos"):
                m.d.comb += sig(field, mm).eq(
                    Mux(from_mrif, sig(field, mw), getattr(tr.ax_out.payload, field)))

        # ------------------------------------------ translation port: two clients
        # Read has priority; a request offered is held until taken (grant locked).
        locked, held_write = Signal(), Signal()
        pick_write = Mux(locked, held_write, ~rd.tr_req.valid)
        with m.If(pick_write):
            m.d.comb += [self.tr_req.valid.eq(wr.tr_req.valid),
                         self.tr_req.payload.eq(wr.tr_req.payload),
                         wr.tr_req.ready.eq(self.tr_req.ready)]
        with m.Else():
            m.d.comb += [self.tr_req.valid.eq(rd.tr_req.valid),
                         self.tr_req.payload.eq(rd.tr_req.payload),
                         rd.tr_req.ready.eq(self.tr_req.ready)]
        with m.If(self.tr_req.valid):
            m.d.sync += [locked.eq(~self.tr_req.ready), held_write.eq(pick_write)]
        is_write = self.tr_resp.payload.tag[0]
        m.d.comb += [
            rd.tr_resp.payload.eq(self.tr_resp.payload),
            wr.tr_resp.payload.eq(self.tr_resp.payload),
            rd.tr_resp.valid.eq(self.tr_resp.valid & ~is_write),
            wr.tr_resp.valid.eq(self.tr_resp.valid & is_write),
            self.tr_resp.ready.eq(Mux(is_write, wr.tr_resp.ready, rd.tr_resp.ready)),
        ]

        # ------------------------------------------------------------ read data
        r_mrif = mm.rid == MRIF_ID  # the MRIF writer's read: route it there
        m.d.comb += [mw.rvalid.eq(mm.rvalid & r_mrif), mw.rdata.eq(mm.rdata),
                     mw.rresp.eq(mm.rresp), mw.rlast.eq(mm.rlast), mw.rid.eq(0)]
        o_layout = outcome_layout(len(s.arid))
        m.submodules.read_outcomes = r_fifo = SyncFIFOBuffered(
            width=o_layout.size, depth=self.outstanding)
        m.d.comb += [r_fifo.w_data.eq(rd.outcome.payload), r_fifo.w_en.eq(rd.outcome.valid),
                     rd.outcome.ready.eq(r_fifo.w_rdy)]
        r_head = o_layout(r_fifo.r_data)
        r_beat = Signal(8)
        r_ready = Signal()  # the device path takes a beat of memory's ID 0
        m.d.comb += [s.rid.eq(r_head.id), mm.rready.eq(Mux(r_mrif, mw.rready, r_ready))]
        with m.If(r_fifo.r_rdy & r_head.local):
            # Answered here: len+1 beats of the response with zero data.
            m.d.comb += [s.rvalid.eq(1), s.rresp.eq(r_head.resp),
                         s.rlast.eq(r_beat == r_head.len)]
            with m.If(s.rready):
                m.d.sync += r_beat.eq(Mux(s.rlast, 0, r_beat + 1))
                m.d.comb += r_fifo.r_en.eq(s.rlast)
        with m.Elif(r_fifo.r_rdy):
            m.d.comb += [s.rvalid.eq(mm.rvalid & ~r_mrif), r_ready.eq(s.rready),
                         s.rdata.eq(mm.rdata), s.rresp.eq(mm.rresp), s.rlast.eq(mm.rlast),
                         r_fifo.r_en.eq(mm.rvalid & ~r_mrif & s.rready & mm.rlast)]

        # ----------------------------------------------------------- write data
        m.submodules.write_outcomes = w_fifo = SyncFIFOBuffered(
            width=o_layout.size, depth=self.outstanding)
        m.submodules.write_responses = b_fifo = SyncFIFOBuffered(
            width=o_layout.size, depth=self.outstanding)
        m.d.comb += [w_fifo.w_data.eq(wr.outcome.payload), w_fifo.w_en.eq(wr.outcome.valid),
                     wr.outcome.ready.eq(w_fifo.w_rdy)]
        w_head = o_layout(w_fifo.r_data)
        w_beat = Signal(8)
        w_last = w_beat == w_head.len  # the burst's length counts, whatever WLAST says
        w_done = Signal()  # the head burst's last beat is handed over this cycle
        beat = Signal()  # a beat of the head burst is taken from the device this cycle
        # The writer's W beats leave while no device burst's can (the write translator
        # is held): its valid selects.
        m.d.comb += [b_fifo.w_data.eq(w_fifo.r_data), b_fifo.w_en.eq(w_done),
                     w_fifo.r_en.eq(w_done),
                     mm.wdata.eq(Mux(mw.wvalid, mw.wdata, s.wdata)),
                     mm.wstrb.eq(Mux(mw.wvalid, mw.wstrb, s.wstrb)),
                     mm.wlast.eq(Mux(mw.wvalid, mw.wlast, w_last)),
                     mw.wready.eq(mm.wready & mw.wvalid),
                     mrif.beat.payload.data.eq(s.wdata), mrif.beat.payload.strb.eq(s.wstrb)]
        with m.If(mw.wvalid):
            m.d.comb += mm.wvalid.eq(1)
        with m.Elif(w_fifo.r_rdy & b_fifo.w_rdy):
            with m.If(w_head.local):
                m.d.comb += [s.wready.eq(1), beat.eq(s.wvalid)]  # consumed and dropped
            with m.Elif(w_head.mrif):
                m.d.comb += [mrif.beat.valid.eq(s.wvalid), s.wready.eq(mrif.beat.ready),
                             beat.eq(s.wvalid & mrif.beat.ready)]
            with m.Else():
                m.d.comb += [mm.wvalid.eq(s.wvalid), s.wready.eq(mm.wready),
                             beat.eq(s.wvalid & mm.wready)]
            with m.If(beat):
                m.d.sync += w_beat.eq(Mux(w_last, 0, w_beat + 1))
                m.d.comb += w_done.eq(w_last)

        # ------------------------------------------------------- write response
        b_mrif = mm.bid == MRIF_ID
        b_head = o_layout(b_fifo.r_data)
        b_ready = Signal()  # the device path takes memory's response to a device burst
        m.d.comb += [s.bid.eq(b_head.id), mw.bvalid.eq(mm.bvalid & b_mrif),
                     mw.bresp.eq(mm.bresp), mw.bid.eq(0),
                     mm.bready.eq(Mux(b_mrif, mw.bready, b_ready)),
                     # Every earlier write has had its memory response once the MSI's
                     # burst is at the head: only then may the writer touch the MRIF.
                     mrif.ordered.eq(b_fifo.r_rdy & b_head.mrif)]
        with m.If(b_fifo.r_rdy & b_head.local):
            m.d.comb += [s.bvalid.eq(1), s.bresp.eq(b_head.resp), b_fifo.r_en.eq(s.bready)]
        with m.Elif(b_fifo.r_rdy & b_head.mrif):
            m.d.comb += [s.bvalid.eq(mrif.result.valid), s.bresp.eq(mrif.result.payload),
                         mrif.result.ready.eq(s.bready),
                         b_fifo.r_en.eq(mrif.result.valid & s.bready)]
        with m.Elif(b_fifo.r_rdy):
            m.d.comb += [s.bvalid.eq(mm.bvalid & ~b_mrif), b_ready.eq(s.bready),
                         s.bresp.eq(mm.bresp),
                         b_fifo.r_en.eq(mm.bvalid & ~b_mrif & s.bready)]
        return m
