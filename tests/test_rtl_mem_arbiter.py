"""MemoryArbiter: every client request reaches memory once, with its index as id,
and every response returns to the client that asked, under random back-pressure."""

import random

from amaranth.sim import Simulator

from rtl.layouts import MemOp
from rtl.mem_arbiter import MemoryArbiter


def test_arbiter_routes_requests_and_responses():
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    n, per_client = 3, 20
    dut = MemoryArbiter(n, 2)
    seen_at_memory = []
    got_back = {i: [] for i in range(n)}
    want = {i: [0x1000 * (i + 1) + 8 * k for k in range(per_client)] for i in range(n)}

    async def bench(ctx):
        pending = {i: list(want[i]) for i in range(n)}
        outstanding = {i: False for i in range(n)}
        queue = []  # requests memory has accepted and not answered
        answering = None  # the response memory drives this cycle
        for _ in range(3000):
            # Sample every handshake of this cycle before the clock edge.
            for i in range(n):
                port = dut.client_req[i]
                if ctx.get(port.valid) and ctx.get(port.ready):
                    pending[i].pop(0)
                    outstanding[i] = True
                resp = dut.client_resp[i]
                if ctx.get(resp.valid) and ctx.get(resp.ready):
                    got_back[i].append(ctx.get(resp.payload.rdata))
                    outstanding[i] = False
            if ctx.get(dut.mem_req.valid) and ctx.get(dut.mem_req.ready):
                entry = (ctx.get(dut.mem_req.payload.id), ctx.get(dut.mem_req.payload.addr))
                seen_at_memory.append(entry)
                queue.append(entry)
            if ctx.get(dut.mem_resp.valid) and ctx.get(dut.mem_resp.ready):
                queue.remove(answering)
            if all(not p for p in pending.values()) and not any(outstanding.values()):
                break
            await ctx.tick()
            # Drive the next cycle.
            for i in range(n):
                port = dut.client_req[i]
                if outstanding[i]:
                    ctx.set(port.valid, 0)
                elif not ctx.get(port.valid) and pending[i] and rng.random() < 0.7:
                    ctx.set(port.valid, 1)
                    ctx.set(port.payload.addr, pending[i][0])
                    ctx.set(port.payload.op, MemOp.READ)
                ctx.set(dut.client_resp[i].ready, 1)
            ctx.set(dut.mem_req.ready, rng.random() < 0.6)
            answering = rng.choice(queue) if queue and rng.random() < 0.5 else None
            ctx.set(dut.mem_resp.valid, answering is not None)
            if answering:  # out of order: any outstanding request may answer
                ctx.set(dut.mem_resp.payload.id, answering[0])
                ctx.set(dut.mem_resp.payload.rdata, answering[1] ^ 0xFFFF)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

    for i in range(n):
        assert [a for ident, a in seen_at_memory if ident == i] == want[i], f"seed {seed}"
        assert got_back[i] == [a ^ 0xFFFF for a in want[i]], f"seed {seed}"
