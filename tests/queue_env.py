"""A memory responder for the queue blocks' tests (Amaranth simulator, one testbench process).

``MemoryResponder`` serves one ``mem_req``/``mem_resp`` pair from a
``models.memory.Memory``: READ (8 bytes), WRITE (8 bytes) and WRITE32 (4 bytes),
with random acceptance and latency, injected access faults and poison answered as
``MemErr``. It checks the port rules the queue blocks promise: at most one request
outstanding, aligned addresses, only the ops they are allowed to issue.

It is driven by the test's single per-cycle loop: ``sample()`` before the clock edge
(handshakes of the cycle that ends), ``drive()`` after it (inputs of the next cycle).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from models.memory import AccessFault, DataCorruption, Memory
from rtl import layouts


@dataclass(frozen=True)
class MemAccess:
    op: layouts.MemOp
    addr: int
    wdata: int
    err: layouts.MemErr
    cycle: int


class MemoryResponder:
    def __init__(self, dut, memory: Memory, rng: random.Random, who: str, *,
                 ops=(layouts.MemOp.READ,), latency=(1, 4), ready=0.8):
        self.dut, self.memory, self.rng, self.who = dut, memory, rng, who
        self.ops, self.latency, self.ready = set(ops), latency, ready
        self.pending: deque = deque()  # (due cycle, id, err, rdata)
        self.driving = False
        self.outstanding = 0
        self.accesses: list[MemAccess] = []  # every request, in the order accepted

    def _perform(self, op, addr, wdata):
        size = 4 if op == layouts.MemOp.WRITE32 else 8
        assert addr % size == 0, f"{op.name} at {addr:#x} is not {size}-byte aligned"
        try:
            if op == layouts.MemOp.READ:
                return layouts.MemErr.OK, self.memory.read64(addr, self.who)
            if op == layouts.MemOp.WRITE:
                self.memory.write64(addr, wdata, self.who)
            else:
                self.memory.write32(addr, wdata & 0xFFFF_FFFF, self.who)
            return layouts.MemErr.OK, 0
        except AccessFault:
            return layouts.MemErr.ACCESS_FAULT, 0
        except DataCorruption:
            return layouts.MemErr.POISON, 0

    @property
    def idle(self) -> bool:
        return self.outstanding == 0 and not self.pending and not self.driving

    def sample(self, ctx, cycle: int) -> MemAccess | None:
        """Before the edge: take this cycle's handshakes; returns the request accepted."""
        req, resp = self.dut.mem_req, self.dut.mem_resp
        accepted = None
        if ctx.get(resp.valid) and ctx.get(resp.ready):
            self.driving = False
            self.outstanding -= 1
        if ctx.get(req.valid) and ctx.get(req.ready):
            assert self.outstanding == 0, "a second memory request while one is outstanding"
            payload = ctx.get(req.payload)
            op = layouts.MemOp(payload.op)
            assert op in self.ops, f"unexpected memory op {op.name}"
            err, rdata = self._perform(op, payload.addr, payload.wdata)
            accepted = MemAccess(op, payload.addr, payload.wdata, err, cycle)
            self.accesses.append(accepted)
            self.outstanding += 1
            lat = self.latency
            delay = self.rng.randint(*lat) if isinstance(lat, tuple) else lat
            self.pending.append((cycle + delay, payload.id, err, rdata))
        return accepted

    def drive(self, ctx, cycle: int) -> None:
        """After the edge: the next cycle's ready and response."""
        ctx.set(self.dut.mem_req.ready, self.rng.random() < self.ready)
        if self.driving:
            return
        if self.pending and self.pending[0][0] <= cycle:
            _, ident, err, rdata = self.pending.popleft()
            ctx.set(self.dut.mem_resp.payload, {"id": ident, "err": err, "rdata": rdata})
            ctx.set(self.dut.mem_resp.valid, 1)
            self.driving = True
        else:
            ctx.set(self.dut.mem_resp.valid, 0)
