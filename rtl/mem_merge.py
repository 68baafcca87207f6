"""One memory port for the whole IOMMU: the core, the queues and the MSI sender."""

from amaranth.hdl import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .pick import and_or, one_hot_index, registered_pick


class MemoryMerge(wiring.Component):
    """Round-robin merge of ``len(client_id_bits)`` memory clients that keep their own ids.

    Unlike ``MemoryArbiter`` (clients with one request outstanding, id = client index),
    a client here may have several requests outstanding, told apart by its own id (the
    core's walkers). On the shared port ``id = Cat(client id, client index)``; a
    response goes back to the client named by its high bits with the low bits as id.

    Ports: ``client_req[i]``/``client_resp[i]`` (``inner_bits``-wide ids) face the
    clients, ``mem_req``/``mem_resp`` (``id_bits`` = inner_bits + index bits) memory.
    """

    def __init__(self, clients: int, inner_bits: int):
        if clients < 2:
            raise ValueError(f"a merge needs at least 2 clients, not {clients!r}")
        if inner_bits < 1:
            raise ValueError(f"inner_bits must be >= 1, not {inner_bits!r}")
        self.clients, self.inner_bits = clients, inner_bits
        self.index_bits = (clients - 1).bit_length()
        self.id_bits = inner_bits + self.index_bits
        inner = (stream.Signature(layouts.mem_request(inner_bits)),
                 stream.Signature(layouts.mem_response(inner_bits)))
        super().__init__({
            "client_req": In(inner[0]).array(clients),
            "client_resp": Out(inner[1]).array(clients),
            "mem_req": Out(stream.Signature(layouts.mem_request(self.id_bits))),
            "mem_resp": In(stream.Signature(layouts.mem_response(self.id_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.clients

        # Requests: a register per client, and the port driven from a register loaded
        # with a round-robin pick of the waiting ones (rtl/pick.py, issue 7; as in
        # MemoryArbiter). A register slice used to follow an unregistered merge: the
        # path from the fault queue's state through the merge's grant into its enables
        # was 8 LUT levels.
        requests, grant, load, out = registered_pick(m, self.client_req, self.mem_req)
        chosen = and_or(grant, [Cat(r.op, r.addr, r.wdata, r.compare, r.id) for r in requests])
        with m.If(load):
            m.d.sync += [
                Cat(out.op, out.addr, out.wdata, out.compare, out.id[:self.inner_bits]).eq(chosen),
                out.id[self.inner_bits:].eq(one_hot_index(grant, n)),
            ]

        resp = self.mem_resp.payload
        owner = resp.id[self.inner_bits:]
        for i in range(n):
            m.d.comb += [
                self.client_resp[i].payload.id.eq(resp.id[:self.inner_bits]),
                self.client_resp[i].payload.err.eq(resp.err),
                self.client_resp[i].payload.rdata.eq(resp.rdata),
                self.client_resp[i].valid.eq(self.mem_resp.valid & (owner == i)),
            ]
        with m.Switch(owner):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += self.mem_resp.ready.eq(self.client_resp[i].ready)
        return m
