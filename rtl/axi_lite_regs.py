"""The register page on an AXI4-Lite slave (32-bit data).

Every AXI4-Lite transfer is one 4-byte register access (``MmioRequest`` with
``wide`` = 0) at the word its address selects in the 4 KiB page; address bits above
11 are ignored (the interconnect decodes the page). A 64-bit register is accessed as
two 4-byte halves, which the spec allows (§8.2: 64-bit registers take 4- or 8-byte
accesses; 4-byte accesses are single-copy atomic). Software that writes a 64-bit
register whose halves interact (``ddtp``, ``cqb``, ``fqb``...) writes the high half
first, then the low half, which is also the order the spec names for an 8-byte
access split in two.

Writes whose WSTRB is not 0b1111 are not 4-byte accesses (the spec leaves them
UNSPECIFIED): they change nothing and get SLVERR. Everything else is OKAY. One access
is handled at a time; a write waiting with both AW and W goes before a read.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .axi import AxiLiteSignature, Resp

_WORD_STROBES = 0b1111


class AxiLiteRegisters(wiring.Component):
    """``s_axil`` (AXI4-Lite slave, ``addr_width`` bits, 32-bit data) to the register
    block's ``mmio_req``/``mmio_resp`` streams (one response per request, in order)."""

    def __init__(self, addr_width: int = layouts.REG_OFFSET_BITS):
        super().__init__({
            "s_axil": In(AxiLiteSignature(addr_width, 32)),
            "mmio_req": Out(stream.Signature(layouts.MmioRequest)),
            "mmio_resp": In(stream.Signature(layouts.MmioResponse)),
        })

    def elaborate(self, platform):
        m = Module()
        s, req = self.s_axil, self.mmio_req.payload
        offset = Signal(layouts.REG_OFFSET_BITS)
        wdata = Signal(32)
        write = Signal()
        m.d.comb += [req.addr.eq(offset), req.write.eq(write), req.wide.eq(0),
                     req.wdata.eq(wdata), s.rdata.eq(self.mmio_resp.payload.rdata[:32])]
        word = lambda addr: addr[2:layouts.REG_OFFSET_BITS] << 2

        with m.FSM():
            with m.State("IDLE"):
                with m.If(s.awvalid & s.wvalid):
                    m.d.comb += [s.awready.eq(1), s.wready.eq(1)]
                    m.d.sync += [offset.eq(word(s.awaddr)), wdata.eq(s.wdata), write.eq(1)]
                    with m.If(s.wstrb == _WORD_STROBES):
                        m.next = "REQUEST"
                    with m.Else():
                        m.next = "WRITE_REFUSED"
                with m.Elif(s.arvalid):
                    m.d.comb += s.arready.eq(1)
                    m.d.sync += [offset.eq(word(s.araddr)), write.eq(0)]
                    m.next = "REQUEST"
            with m.State("REQUEST"):
                m.d.comb += self.mmio_req.valid.eq(1)
                with m.If(self.mmio_req.ready):
                    m.next = "RESPOND"
            with m.State("RESPOND"):
                # The register block's response goes straight out on R or B.
                with m.If(write):
                    m.d.comb += [s.bvalid.eq(self.mmio_resp.valid),
                                 self.mmio_resp.ready.eq(s.bready)]
                with m.Else():
                    m.d.comb += [s.rvalid.eq(self.mmio_resp.valid),
                                 self.mmio_resp.ready.eq(s.rready)]
                with m.If(self.mmio_resp.valid & self.mmio_resp.ready):
                    m.next = "IDLE"
            with m.State("WRITE_REFUSED"):
                m.d.comb += [s.bvalid.eq(1), s.bresp.eq(Resp.SLVERR)]
                with m.If(s.bready):
                    m.next = "IDLE"
        return m
