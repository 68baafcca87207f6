"""What the walker block tests share (tests/test_rtl_gstage.py, tests/test_rtl_msi.py):
the walk result they compare, and a memory responder serving the walker's port from a
``models.memory.Memory`` with random latency and back-pressure."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from models.memory import AccessFault, DataCorruption, Memory
from rtl import layouts

WHO = "rtl"  # the RTL walker's accesses in the memory log
MEM_ID = 1  # the walker's id on its memory port


@dataclass(frozen=True)
class Walk:
    fault: int
    cause: int = 0
    iotval2: int = 0
    ppn: int = 0
    size_log2: int = 0
    r: int = 0
    w: int = 0
    x: int = 0
    u: int = 0
    g: int = 0
    d: int = 0
    pbmt: int = 0
    # An MRIF-mode MSI PTE's leaf (§9.3 step 5): the MRIF's address, and where the
    # notice MSI goes with which data. All 0 for any other leaf.
    mrif_address: int = 0
    notice_address: int = 0
    notice_data: int = 0


def perform(memory: Memory, op, addr, wdata, compare):
    assert addr % 8 == 0, f"unaligned access at {addr:#x}"
    try:
        if op == layouts.MemOp.READ:
            return layouts.MemErr.OK, memory.read64(addr, who=WHO)
        if op == layouts.MemOp.CAS:
            return layouts.MemErr.OK, memory.cas64(addr, compare, wdata, who=WHO)
        raise AssertionError(f"unexpected memory op {op!r}")
    except AccessFault:
        return layouts.MemErr.ACCESS_FAULT, 0
    except DataCorruption:
        return layouts.MemErr.POISON, 0


def responder(dut, memory, rng, latency=(1, 3), mem_ready=1.0):
    async def run(ctx):
        pending = deque()
        driving, cycle, outstanding = False, 0, 0
        while True:
            ctx.set(dut.mem_req.ready, rng.random() < mem_ready)
            if not driving and pending and pending[0][0] <= cycle:
                _, err, rdata = pending.popleft()
                ctx.set(dut.mem_resp.valid, 1)
                ctx.set(dut.mem_resp.payload, {"id": MEM_ID, "err": err, "rdata": rdata})
                driving = True
            _, _, q_valid, q_ready, q, p_valid, p_ready = await ctx.tick().sample(
                dut.mem_req.valid, dut.mem_req.ready, dut.mem_req.payload,
                dut.mem_resp.valid, dut.mem_resp.ready)
            cycle += 1
            if p_valid and p_ready:
                ctx.set(dut.mem_resp.valid, 0)
                driving = False
                outstanding -= 1
            if q_valid and q_ready:
                assert outstanding == 0, "a second outstanding memory request"
                assert q.id == MEM_ID, f"memory request id {q.id}, expected {MEM_ID}"
                outstanding += 1
                err, rdata = perform(memory, layouts.MemOp(q.op), q.addr, q.wdata, q.compare)
                pending.append((cycle + rng.randint(*latency) - 1, err, rdata))
    return run


async def walk_once(ctx, dut, rng, request: dict, res_ready: float, what: str):
    """Offer one walk ``request`` (WalkRequest fields) to ``dut`` and take its result
    with ``res.ready`` high on a ``res_ready`` fraction of cycles: (cycles, Walk). A
    fault's other fields are don't-care (left 0); an MRIF-mode MSI leaf's MRIF and
    notice are filled in."""
    ctx.set(dut.req.valid, 1)
    ctx.set(dut.req.payload, request)
    await ctx.tick().until(dut.req.ready)
    ctx.set(dut.req.valid, 0)
    cycles = 0
    while True:
        ctx.set(dut.res.ready, rng.random() < res_ready)
        _, _, valid, ready, p = await ctx.tick().sample(
            dut.res.valid, dut.res.ready, dut.res.payload)
        cycles += 1
        if valid and ready:
            break
        assert cycles < 5000, f"walk did not finish: {what}"
    ctx.set(dut.res.ready, 0)
    if p.fault:
        return cycles, Walk(1, p.cause, p.iotval2)
    walk = Walk(0, p.cause, p.iotval2, p.ppn, p.size_log2, p.r, p.w, p.x, p.u, p.g, p.d,
                p.pbmt)
    if p.mrif:
        walk = replace(walk, mrif_address=p.ppn << 12 | p.mrif_offset << 9,
                       notice_address=p.notice.ppn << 12, notice_data=p.notice.nid)
    return cycles, walk
