"""One memory port for the whole IOMMU: the core, the queues and the MSI sender."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .pick import and_or, one_hot_index, round_robin_one_hot


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

        # Each client's request waits in a register of its own, and the pick moves one
        # into the port's register while that is empty (issue 7, as in MemoryArbiter):
        # neither a client's state logic nor the port's ready reaches the pick or the
        # port register's enables in the same cycle. (A register slice used to follow
        # an unregistered merge; the path from the fault queue's state through the
        # merge's grant into its enables was 8 LUT levels.) A client's ready is its
        # register being empty, so each client sends at most one request per two
        # cycles, and the port at most one per two cycles.
        req_layout = self.client_req[0].payload.shape()
        waiting = Signal(n)
        waiting_req = [Signal(req_layout, name=f"client{i}_request") for i in range(n)]
        for i, c in enumerate(self.client_req):
            m.d.comb += c.ready.eq(~waiting[i])
            with m.If(c.valid & c.ready):
                m.d.sync += [waiting[i].eq(1), waiting_req[i].eq(c.payload)]

        out_valid = Signal()
        out = Signal(self.mem_req.payload.shape())
        last = Signal(n, init=1 << (n - 1))  # one-hot: the client served last
        grant = Signal(n)
        chosen = and_or(grant, [Cat(r.op, r.addr, r.wdata, r.compare, r.id)
                                for r in waiting_req])
        m.d.comb += [
            grant.eq(round_robin_one_hot(waiting, last)),
            self.mem_req.valid.eq(out_valid),
            self.mem_req.payload.eq(out),
        ]
        with m.If(self.mem_req.valid & self.mem_req.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(~out_valid & waiting.any()):
            m.d.sync += [
                out_valid.eq(1), last.eq(grant),
                Cat(out.op, out.addr, out.wdata, out.compare, out.id[:self.inner_bits]).eq(chosen),
                out.id[self.inner_bits:].eq(one_hot_index(grant, n)),
            ]
            for i in range(n):
                with m.If(grant[i]):
                    m.d.sync += waiting[i].eq(0)

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
