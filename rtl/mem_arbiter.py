"""One memory master port shared by the IOMMU's walkers and its context fetch."""

from amaranth.hdl import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .pick import and_or, held_round_robin, one_hot_index


class MemoryArbiter(wiring.Component):
    """Round-robin merge of ``ports`` memory clients onto one port, responses routed back.

    Each client has at most one request outstanding, so the id on the shared
    port is simply the client's index: client ``i`` sends with any id and gets
    its responses back by index. Responses may return in any order.

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

        # Round-robin, one-hot grants and an AND-OR payload (issue 7: no index to decode,
        # no priority chain between a client's valid and the port).
        grant, valid = held_round_robin(m, Cat(c.valid for c in self.client_req),
                                        self.mem_req.ready)
        m.d.comb += [
            self.mem_req.valid.eq(valid),
            self.mem_req.payload.eq(and_or(grant, [c.payload for c in self.client_req])),
            self.mem_req.payload.id.eq(one_hot_index(grant, n)),
        ]
        for i in range(n):
            m.d.comb += self.client_req[i].ready.eq(grant[i] & self.mem_req.ready)

        # Responses go back to the client named by the id.
        for i in range(n):
            m.d.comb += [
                self.client_resp[i].payload.eq(self.mem_resp.payload),
                self.client_resp[i].valid.eq(self.mem_resp.valid & (self.mem_resp.payload.id == i)),
            ]
        with m.Switch(self.mem_resp.payload.id):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += self.mem_resp.ready.eq(self.client_resp[i].ready)
        return m
