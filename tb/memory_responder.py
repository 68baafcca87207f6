"""Serves the IOMMU's own memory port (``mem_req`` / ``mem_resp``) from a ``models.memory.Memory``.

The responder is a bus front on a memory it does not own (as cocotbext-axi's
``AxiRam`` is on its sparse memory): tables built with ``models/pagetable.py``
in that ``Memory`` are what the RTL walks, and what the RTL writes (A/D updates)
lands there, visible to anyone holding the object.

Behaviour, per ``rtl/layouts.py`` ``mem_request`` / ``mem_response``:

* READ returns the aligned dword; WRITE stores ``wdata``; CAS stores ``wdata``
  iff memory holds ``compare`` and returns the old value either way.
* ``AccessFault`` from the memory becomes ``err = ACCESS_FAULT``,
  ``DataCorruption`` becomes ``err = POISON`` (rdata 0).
* Latency is a fixed number of cycles or a random range; requests may be answered
  in any order (``reorder``); ``mem_req.ready`` back-pressure and ``mem_resp.valid``
  idle cycles are switchable patterns (``tb.stream.random_pattern``).
* The operation is carried out when its response is first presented, so with
  reordering a later request can overtake an earlier one, as on a real interconnect.

Protocol violations by the DUT (an unaligned address, an id that is already
outstanding, an unknown op) are collected in ``violations``; the TB fails the
test on them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from models.memory import AccessFault, DataCorruption, Memory
from rtl import layouts

from . import packing
from .stream import CycleLoop, StreamBus, StreamSink, StreamSource


@dataclass
class MemTransaction:
    id: int
    op: int
    addr: int
    wdata: int
    compare: int
    accepted: int  # cycle
    due: int  # earliest cycle to answer
    answered: int | None = None
    err: int = 0
    rdata: int = 0

    def __str__(self) -> str:
        op = layouts.MemOp(self.op).name
        extra = {layouts.MemOp.READ.value: "",
                 layouts.MemOp.WRITE.value: f" wdata={self.wdata:#x}",
                 layouts.MemOp.CAS.value: f" compare={self.compare:#x} wdata={self.wdata:#x}",
                 layouts.MemOp.WRITE32.value: f" wdata={self.wdata & 0xFFFF_FFFF:#x}"}
        return f"{op} id={self.id} addr={self.addr:#x}{extra.get(self.op, '')}"


class MemoryResponder:
    """Answers ``mem_req`` from ``memory`` on ``mem_resp``.

    latency: cycles from acceptance to the earliest response, an int or an
    inclusive ``(lo, hi)`` range drawn per request. reorder: answer any due
    request (chosen at random) instead of the oldest. ``log`` keeps every
    transaction (``MemTransaction``) for debugging.
    """

    def __init__(self, loop: CycleLoop, dut, memory: Memory, id_bits: int, *,
                 rng: random.Random | None = None, latency: int | tuple[int, int] = 2,
                 reorder: bool = False, who: str = "iommu-rtl", keep_log: bool = False):
        self.loop, self.memory, self.who = loop, memory, who
        self.id_bits = id_bits
        self.rng = rng or random.Random(0)
        self.latency = latency
        self.reorder = reorder
        self.keep_log = keep_log
        self._req_layout = layouts.mem_request(id_bits)
        self._resp_layout = layouts.mem_response(id_bits)
        self._pending: list[MemTransaction] = []  # accepted, not yet answered
        self.log: list[MemTransaction] = []
        self.violations: list[str] = []
        self.reads = self.writes = self.cas = 0
        self.errors = 0  # responses with err != OK
        self.max_outstanding = 0
        self.last_request_cycle = 0  # when the DUT last issued a memory request
        self.requests = StreamSink(loop, StreamBus(dut, "mem_req"), self._accept)
        self.responses = StreamSource(loop, StreamBus(dut, "mem_resp"))
        self.responses.next_item = self._next_response
        self.responses.payload_of = self._response_payload

    # ---------------------------------------------------------------- stress
    @property
    def latency(self):
        return self._latency

    @latency.setter
    def latency(self, value):
        lo, hi = (value, value) if isinstance(value, int) else value
        if not 0 <= lo <= hi:
            raise ValueError(f"latency must be an int >= 0 or a (lo, hi) range, not {value!r}")
        self._latency = (lo, hi)

    def set_backpressure(self, pattern) -> None:
        """``mem_req.ready`` low on the cycles ``pattern`` yields True (None: always ready)."""
        self.requests.backpressure = pattern

    def set_idle(self, pattern) -> None:
        """Hold ``mem_resp.valid`` low on the cycles ``pattern`` yields True (None: never)."""
        self.responses.pause = pattern

    @property
    def outstanding(self) -> int:
        return len(self._pending) + (self.responses._current is not None)

    # ----------------------------------------------------------- behaviour
    def _accept(self, word: int, cycle: int) -> None:
        f = packing.unpack(self._req_layout, word)
        lo, hi = self._latency
        txn = MemTransaction(f["id"], f["op"], f["addr"], f["wdata"], f["compare"],
                             accepted=cycle, due=cycle + self.rng.randint(lo, hi))
        if txn.addr % (4 if txn.op == layouts.MemOp.WRITE32.value else 8):
            self.violations.append(f"cycle {cycle}: unaligned memory request {txn}")
        if txn.op not in {m.value for m in layouts.MemOp}:
            self.violations.append(f"cycle {cycle}: unknown memory op {txn.op} in {txn}")
        current = self.responses._current
        if any(p.id == txn.id for p in self._pending) or (current and current.id == txn.id):
            self.violations.append(f"cycle {cycle}: id {txn.id} reused while outstanding: {txn}")
        self._pending.append(txn)
        self.last_request_cycle = cycle
        self.max_outstanding = max(self.max_outstanding, self.outstanding)
        if self.keep_log:
            self.log.append(txn)

    def _next_response(self):
        cycle = self.loop.cycle
        due = [t for t in self._pending if t.due <= cycle]
        if not due:
            return None
        txn = self.rng.choice(due) if self.reorder else due[0]
        self._pending.remove(txn)
        self._perform(txn)
        txn.answered = cycle
        return txn

    def _perform(self, txn: MemTransaction) -> None:
        addr = txn.addr & ~7
        try:
            if txn.op == layouts.MemOp.WRITE32.value:
                self.writes += 1
                self.memory.write32(txn.addr & ~3, txn.wdata & 0xFFFF_FFFF, self.who)
                return
            if txn.op == layouts.MemOp.READ.value:
                self.reads += 1
                txn.rdata = self.memory.read64(addr, self.who)
            elif txn.op == layouts.MemOp.WRITE.value:
                self.writes += 1
                self.memory.write64(addr, txn.wdata, self.who)
            elif txn.op == layouts.MemOp.CAS.value:
                self.cas += 1
                txn.rdata = self.memory.cas64(addr, txn.compare, txn.wdata, self.who)
        except AccessFault:
            txn.err = layouts.MemErr.ACCESS_FAULT.value
        except DataCorruption:
            txn.err = layouts.MemErr.POISON.value
        if txn.err:
            self.errors += 1
            txn.rdata = 0

    def _response_payload(self, txn: MemTransaction) -> int:
        return packing.pack(self._resp_layout, {"id": txn.id, "err": txn.err, "rdata": txn.rdata})

    def reset(self) -> None:
        self._pending.clear()
        self.responses.reset()

    def stats(self) -> dict:
        return {"reads": self.reads, "writes": self.writes, "cas": self.cas,
                "errors": self.errors, "max_outstanding": self.max_outstanding}
