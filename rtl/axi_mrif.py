"""The DMA bridge's MRIF writer: records an MSI in a memory-resident interrupt file (§9.4).

An MSI whose MSI PTE is in MRIF mode (§9.3 step 5) is not written where the device
aimed it: the translation names a 512-byte MRIF and a notice MSI, and the bridge that
performs the write records the interrupt (spec §1.1 leaves the split to the
implementation; here the translation core translates and the bridge records). For one
device write (already known to be a single naturally aligned 32-bit beat, AWLEN 0,
AWSIZE 2) this block, as the AIA's MRIF rules in §9.4 require:

* aborts it (SLVERR) unless WSTRB covers exactly its 4 bytes (not a 32-bit write);
* discards it silently (OKAY, nothing written) when the page offset's bits 11:3 are not
  0, when offset bit 2 is set (a big-endian MSI, not supported; offset 4, as
  ``models/os/hypervisor.py`` ``Platform._mrif_write``), or when the data D >= 2048;
* otherwise sets pending bit D: a read-modify-write of the 64-bit word at
  MRIF + (D // 64) * 16, bit D % 64 (capabilities.AMO_MRIF = 0: the read and the write
  are separate bursts, not atomic on the bus), then, once that write's B has come
  back, the notice MSI: NID as a 32-bit little-endian store to NPPN << 12, whatever
  the MRIF's enable bits say (the hypervisor checks them). Then OKAY.

An RRESP/BRESP other than OKAY on any of its accesses answers the device SLVERR and
stops there (no notice after a failed MRIF update). A failed read or write of the MRIF
itself is also an MRIF access fault (cause 264, §9.4): its record leaves on ``fault``
(for the IOMMU's ``bridge_fault`` port) before the device is answered. AXI has no
poison, so 271 is never raised; a failed notice MSI is only answered SLVERR.

    job ──► MrifWriter ──► m_axi (AR, R, AW, W, B: its own accesses, single beats)
    beat ─►            ──► result (the device's BRESP)
                       ──► fault (cause 264 records)

``job`` is offered by the write translator and held until the memory work is done:
``job.ready`` is a one-cycle pulse when it is, so no later write burst reaches memory
before the MRIF update and the notice (AXI's W order follows AW order). ``beat`` is the
device's one W beat of that burst; ``ordered`` says that every earlier write burst has
had its memory response, so the interrupt is not visible before the data the device
wrote before it (an MSI must not pass earlier posted writes).
"""

from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from models import arch

from . import layouts
from .axi import AxiSignature, Burst, Resp

#: An MRIF holds identities 0..2047 (11 bits); its pending/enable pairs are 16 bytes apart.
IDENTITY_BITS = 11
MRIF_PAIR_BYTES = 16


def mrif_job_layout(pa_width: int) -> data.StructLayout:
    """One MRIF-mode MSI write: ``mrif`` the MRIF's address (512-byte aligned),
    ``notice`` the notice MSI's address (NPPN << 12), ``nid`` its data, ``offset`` the
    device's address within the MSI page (bits 11:0); the request's identity and IOVA
    for a fault record (``device_id``, ``process_id``, ``pv``, ``priv``, ``iova``)."""
    return data.StructLayout({
        "mrif": unsigned(pa_width),
        "notice": unsigned(pa_width),
        "nid": unsigned(IDENTITY_BITS),
        "offset": unsigned(arch.PAGE_SHIFT),
        "device_id": unsigned(layouts.DEVICE_ID_BITS),
        "process_id": unsigned(layouts.PROCESS_ID_BITS),
        "pv": unsigned(1),
        "priv": unsigned(1),
        "iova": unsigned(64),
    })


def write_beat_layout(data_width: int) -> data.StructLayout:
    """A W beat as the device sent it."""
    return data.StructLayout({"data": unsigned(data_width), "strb": unsigned(data_width // 8)})


class MrifWriter(wiring.Component):
    """Sets an MRIF's pending bit and sends its notice MSI for one device write (see
    module doc). ``m_axi`` has ID width 1 and the writer drives ID 0: the bridge gives
    its accesses their own ID. ``result`` carries the device's response (OKAY or
    SLVERR) after ``job.ready``; the next job starts once it is taken."""

    def __init__(self, *, pa_width: int = layouts.PA_BITS, data_width: int = 64):
        if data_width < 64 or data_width & (data_width - 1):
            raise ValueError(f"data_width must be a power of two of at least 64 (the "
                             f"MRIF's 64-bit words in one beat), not {data_width!r}")
        self.pa_width, self.data_width = pa_width, data_width
        super().__init__({
            "job": In(stream.Signature(mrif_job_layout(pa_width))),
            "beat": In(stream.Signature(write_beat_layout(data_width))),
            "ordered": In(1),
            "result": Out(stream.Signature(Resp)),
            "fault": Out(stream.Signature(layouts.FaultReport)),
            "m_axi": Out(AxiSignature(pa_width, data_width, 1)),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.m_axi
        job = self.job.payload
        lanes_log2 = (self.data_width // 8).bit_length() - 1  # log2 of the bus's bytes

        # ------------------------------------------------ the device's 32-bit beat
        # Its lane is given by the device's address (offset bits [lanes_log2-1:2]).
        lane32 = job.offset[2:lanes_log2]
        identity = self.beat.payload.data.word_select(lane32, 32)
        exactly_its_bytes = self.beat.payload.strb == (Const(0xF, 4) << (lane32 * 4))
        discard = ((job.offset[3:] != 0) | job.offset[2]  # not offset 0 (offset 4 is BE)
                   | (identity[IDENTITY_BITS:] != 0))  # no such identity

        # ------------------------------------------------------ the pending word
        pending_at = Signal(self.pa_width)  # MRIF + (D // 64) * 16
        pending_bit = Signal(6)  # D % 64
        word = Signal(64)  # the pending word as read
        if lanes_log2 > 3:  # a wider bus: the word's lane is given by its address
            lane64 = pending_at[3:lanes_log2]
            rdata_word = bus.rdata.word_select(lane64, 64)
            word_strb = Const(0xFF, 8) << (lane64 * 8)
        else:
            rdata_word, word_strb = bus.rdata, Const(0xFF, 8)
        notice_data = Signal(32)  # NID, zero-extended
        resp = Signal(Resp)
        aw_done, w_done = Signal(), Signal()  # AW and W of the current write handed over

        m.d.comb += [
            bus.arlen.eq(0), bus.arburst.eq(Burst.INCR), bus.arsize.eq(3),
            bus.arcache.eq(0b0011), bus.arprot.eq(0b010),  # as the IOMMU's own accesses
            bus.araddr.eq(pending_at),
            bus.awlen.eq(0), bus.awburst.eq(Burst.INCR),
            bus.awcache.eq(0b0011), bus.awprot.eq(0b010),
            bus.wlast.eq(1),
            self.result.payload.eq(resp),
            notice_data.eq(job.nid),
            # The record of an MRIF access fault: the device's MSI write (§9.4).
            self.fault.payload.cause.eq(arch.Cause.MRIF_ACCESS_FAULT),
            self.fault.payload.ttyp.eq(arch.ttyp_of(arch.AddrType.UNTRANSLATED,
                                                    arch.Access.WRITE)),
            self.fault.payload.device_id.eq(job.device_id),
            self.fault.payload.process_id.eq(Mux(job.pv, job.process_id, 0)),
            self.fault.payload.pv.eq(job.pv),
            self.fault.payload.priv.eq(job.pv & job.priv),
            self.fault.payload.iotval.eq(job.iova),
            self.fault.payload.iotval2.eq(0),
        ]

        def write(addr, size, value, strb, then):
            """One single-beat write: AW and W handed over in either order, then ``then``."""
            m.d.comb += [bus.awaddr.eq(addr), bus.awsize.eq(size),
                         bus.awvalid.eq(~aw_done), bus.wvalid.eq(~w_done),
                         bus.wdata.eq(value.replicate(self.data_width // len(value))),
                         bus.wstrb.eq(strb)]
            aw_now = aw_done | bus.awready
            w_now = w_done | bus.wready
            m.d.sync += [aw_done.eq(aw_now & ~w_now), w_done.eq(w_now & ~aw_now)]
            with m.If(aw_now & w_now):
                m.next = then

        def respond(ok):
            """Memory work over: release the job, answer OKAY or SLVERR."""
            m.d.sync += resp.eq(Mux(ok, Resp.OKAY, Resp.SLVERR))
            m.d.comb += self.job.ready.eq(1)
            m.next = "RESPOND"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.beat.ready.eq(self.job.valid)  # the beat of this job
                with m.If(self.job.valid & self.beat.valid):
                    m.d.sync += [
                        pending_at.eq(job.mrif | (identity[6:IDENTITY_BITS] * MRIF_PAIR_BYTES)),
                        pending_bit.eq(identity[:6]),
                    ]
                    with m.If(~exactly_its_bytes):
                        respond(0)  # not a 32-bit write: unsupported, aborted
                    with m.Elif(discard):
                        respond(1)  # discarded silently
                    with m.Else():
                        m.next = "READ"
            with m.State("READ"):
                m.d.comb += bus.arvalid.eq(self.ordered)
                with m.If(self.ordered & bus.arready):
                    m.next = "READ_DATA"
            with m.State("READ_DATA"):
                m.d.comb += bus.rready.eq(1)
                with m.If(bus.rvalid):
                    m.d.sync += word.eq(rdata_word | (1 << pending_bit))
                    with m.If(bus.rresp != Resp.OKAY):
                        m.next = "REPORT"
                    with m.Else():
                        m.next = "WRITE"
            with m.State("WRITE"):
                write(pending_at, 3, word, word_strb, "WRITE_RESP")
            with m.State("WRITE_RESP"):
                m.d.comb += bus.bready.eq(1)
                with m.If(bus.bvalid):
                    with m.If(bus.bresp != Resp.OKAY):
                        m.next = "REPORT"
                    with m.Else():
                        m.next = "NOTICE"
            with m.State("NOTICE"):
                # NPPN << 12 is 4 KiB aligned, so the 32-bit store is in the bus's lane 0.
                write(job.notice, 2, notice_data, Const(0xF), "NOTICE_RESP")
            with m.State("NOTICE_RESP"):
                m.d.comb += bus.bready.eq(1)
                with m.If(bus.bvalid):
                    respond(bus.bresp == Resp.OKAY)
            with m.State("REPORT"):
                # The MRIF itself refused the access: cause 264, then SLVERR.
                m.d.comb += self.fault.valid.eq(1)
                with m.If(self.fault.ready):
                    respond(0)
            with m.State("RESPOND"):
                m.d.comb += self.result.valid.eq(1)
                with m.If(self.result.ready):
                    m.next = "IDLE"
        return m
