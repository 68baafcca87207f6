"""One memory master port shared by the IOMMU's walkers and its context fetch."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .pick import and_or, one_hot_index, registered_pick


class MemoryArbiter(wiring.Component):
    """Round-robin merge of ``ports`` memory clients onto one port, responses routed back.

    Each client has at most one request outstanding, so the id on the shared
    port is simply the client's index: client ``i`` sends with any id and gets
    its responses back by index. Responses may return in any order.

    Both directions are registered per client (issue 7, timing): a client's request
    waits in its own register until granted, and its response in another until taken.
    Without them the shared port's payload was an AND-OR of the clients' *internal*
    request muxes (8 LUT levels from a walker's state to the port's register), and the
    memory's response fanned out unregistered to every walker's stages (about 50
    loads a bit, spread over the chip). Each register holds one transfer, which is all
    a client with one request outstanding needs: a client's ``ready`` for a request is
    its register being empty (a flip-flop), and the response's ``ready`` towards memory
    is the named client's response register being empty. The port itself is driven
    from a register (the pick's result), and the pick is a register made a cycle
    ahead. Three cycles more per access than unregistered.

    Ports: ``client_req[i]``/``client_resp[i]`` face the clients (their own
    ``mem_req``/``mem_resp``), ``mem_req``/``mem_resp`` face memory.
    """

    def __init__(self, ports: int, id_bits: int):
        if ports < 1 or ports > 1 << id_bits:
            raise ValueError(f"{ports} memory clients do not fit {id_bits} id bits")
        self.ports, self.id_bits = ports, id_bits
        req = stream.Signature(layouts.mem_request(id_bits))
        resp = stream.Signature(layouts.mem_response(id_bits))
        super().__init__({
            "client_req": In(req).array(ports),
            "client_resp": Out(resp).array(ports),
            "mem_req": Out(req),
            "mem_resp": In(resp),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.ports
        resp_layout = self.mem_resp.payload.shape()

        # Requests: a register per client, and the port driven from a register loaded
        # with a round-robin pick of the waiting ones (rtl/pick.py). The routed
        # critical path of the whole IOMMU used to run from the clients' registers
        # through a held grant into a register slice after the arbiter (13.3 ns).
        requests, grant, load, out = registered_pick(m, self.client_req, self.mem_req,
                                                     registered_grant=True)
        with m.If(load):
            m.d.sync += [out.eq(and_or(grant, requests)), out.id.eq(one_hot_index(grant, n))]

        # Each client's response register, loaded from the response named by its id.
        answered = Signal(n)  # client i's response register is full
        answer = [Signal(resp_layout, name=f"client{i}_response") for i in range(n)]
        to = Signal(n)  # one-hot: the client the response on the port is for
        m.d.comb += to.eq(Cat(self.mem_resp.payload.id == i for i in range(n)))
        m.d.comb += self.mem_resp.ready.eq((to & ~answered).any())
        for i, c in enumerate(self.client_resp):
            m.d.comb += [c.valid.eq(answered[i]), c.payload.eq(answer[i])]
            with m.If(c.valid & c.ready):
                m.d.sync += answered[i].eq(0)
            with m.If(self.mem_resp.valid & to[i] & ~answered[i]):
                m.d.sync += [answered[i].eq(1), answer[i].eq(self.mem_resp.payload)]
        return m
