"""Invariant checkers: what must hold on every run of the core, whatever the traffic.

The scoreboard (``tb/scoreboard.py``) compares each response with the reference
model *including its caches*. The checkers here judge the same run from another
side, each against the page tables themselves, read without caches and without
side effects (``TableView`` + an uncached ``models.translate.TranslationEngine``):

* **isolation**: a successful response grants nothing the tables do not grant to
  that device and process for that access: its SPA range lies inside the page the
  tables map for the IOVA, and its R/W/X/U are a subset of the tables' (§1.1, §5).
  Tables changed by software and not yet invalidated may legally still be used
  (§10.3: "until the invalidation is processed the IOMMU may use old or new
  values"), so every table version since the last completed invalidation counts.
* **freshness**: once an invalidation was accepted (``inval`` handshake) and the
  core's ``inval_pending`` fell, a request issued after that point is answered as
  the current tables say, if the invalidation covers it (the reference model
  dropped its own cached state for it). Contract: software invalidates what it
  changed (``TB.write64`` then ``TB.invalidate``, the §10.3 recipes).
* **no lost fault**: every faulting response has its fault record on the fault
  port (cause, TTYP, device, process, privilege, iotval), unless the device
  context's DTF suppresses that cause (§6.3); and no record appears without a
  faulting response, nor for a suppressed cause.
* **no hang**: every request is answered within a bound made of the memory
  latency, the deepest walk seen (DDT + PDT + page-table reads as the model counts
  them, plus A/D compare-and-swap retries) and the walks in flight (``hang_bound``).

The checkers count violations (0 expected) and keep the first of each in the
spec's terms. ``Invariants`` takes plain calls, so the unit tests in
``tests/test_invariants.py`` feed it fabricated transactions; ``InvariantMonitor``
samples the ``inval`` handshake and ``inval_pending`` of a DUT every cycle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from models import arch
from models.memory import AccessFault, DataCorruption, FaultKind, Memory
from models.transaction import Request, Response
from models.translate import WHO_FS, EngineConfig, Outcome, TranslationEngine

from .scoreboard import describe, differences

#: Compare-and-swap retries one A/D update can need: A and D only go 0 -> 1, so the
#: PTE a walk read can change under it at most twice (another walker setting A, then D).
AD_RETRIES = 2
#: Cycles a walk spends outside memory accesses (request pipeline, slot hand-offs).
WALK_OVERHEAD = 16


# --------------------------------------------------------------------------- #
# The tables, read without side effects
# --------------------------------------------------------------------------- #
class TableView:
    """The memory as the tables say it is, for an uncached walk with no side effects.

    ``read`` raises the memory's injected access faults and poison, as the RTL's
    memory port reports them. ``cas64`` (the A/D update) writes nothing and answers
    as if the update succeeded: the walk is judged as it would end now. ``undo``
    ({dword address: old value}) shows an older version of the tables. ``accesses``
    counts the dwords read and swapped per structure (``who``).
    """

    def __init__(self, memory: Memory, undo: dict[int, int] | None = None):
        self.memory = memory
        self.undo = undo or {}
        self.accesses: Counter = Counter()

    def _fault(self, addr: int, size: int, who: str) -> None:
        kind = self.memory._fault_at(addr, size)
        if kind is FaultKind.ACCESS:
            raise AccessFault(addr, size, who)
        if kind is FaultKind.POISON:
            raise DataCorruption(addr, size, who)

    def read(self, addr: int, size: int, who: str = "") -> bytes:
        self.accesses[who] += -(-size // 8)
        self._fault(addr, size, who)
        data = bytearray(self.memory._raw_read(addr, size))
        for dword, value in self.undo.items():
            if addr <= dword and dword + 8 <= addr + size:
                data[dword - addr:dword - addr + 8] = value.to_bytes(8, "little")
        return bytes(data)

    def cas64(self, addr: int, expected: int, new: int, who: str = "") -> int:
        self.accesses[who + ".cas"] += 1
        self._fault(addr, 8, who)
        value = int.from_bytes(self.memory._raw_read(addr, 8), "little")
        return self.undo.get(addr, value)


class _TablesEngine(TranslationEngine):
    """The reference engine with no caches; remembers the device context it located."""

    def __init__(self, view: TableView, capabilities: int):
        super().__init__(view, EngineConfig(capabilities=capabilities, ddt_cache_entries=0,
                                            pdt_cache_entries=0, iotlb_entries=0))
        self.device_context: arch.DeviceContext | None = None

    def _walk_ddt(self, run, mode, ddtp, device_id):
        dc = super()._walk_ddt(run, mode, ddtp, device_id)
        self.device_context = dc
        return dc


@dataclass
class TableAnswer:
    """What the tables (one version of them) say about one request."""

    outcome: Outcome
    dtf: bool  # DC.tc.DTF of the device context located (False if none was)
    accesses: int  # dwords read and swapped by the uncached walk
    page_table_accesses: int

    @property
    def response(self) -> Response:
        return self.outcome.response


def tables_answer(memory: Memory, capabilities: int, ddtp: int, fctl: int, request: Request,
                  undo: dict[int, int] | None = None) -> TableAnswer:
    """Translate ``request`` by walking the tables in ``memory`` now, uncached, no writes."""
    view = TableView(memory, undo)
    engine = _TablesEngine(view, capabilities)
    outcome = engine.translate(request, ddtp, fctl)
    dc = engine.device_context
    return TableAnswer(outcome, bool(dc is not None and arch.Tc.DTF.get(dc.tc)),
                       sum(view.accesses.values()),
                       view.accesses[WHO_FS] + view.accesses[WHO_FS + ".cas"])


def grants_within(rtl: Response, tables: Response) -> list[str]:
    """Why ``rtl`` (a success) grants more than ``tables`` does; empty if it does not."""
    if not tables.ok:
        return [f"the tables refuse it (cause {tables.cause})"]
    out = []
    rtl_base = rtl.spa & ~(rtl.page_size - 1)
    page_base = tables.spa & ~(tables.page_size - 1)
    if not (page_base <= rtl_base and rtl_base + rtl.page_size <= page_base + tables.page_size):
        out.append(f"SPA range {rtl_base:#x}+{rtl.page_size:#x} is outside the mapped page "
                   f"{page_base:#x}+{tables.page_size:#x}")
    elif rtl.spa != tables.spa:
        out.append(f"SPA {rtl.spa:#x} is not the mapped address {tables.spa:#x}")
    extra = [name.upper() for name in ("r", "w", "x", "u")
             if getattr(rtl, name) and not getattr(tables, name)]
    if extra:
        out.append(f"permission {'/'.join(extra)} not in the leaf PTE")
    return out


def fault_key(request: Request, cause: int) -> tuple:
    """The fields of the fault record a faulting ``request`` must produce (§6.2)."""
    pv = bool(request.pv)
    return (int(cause), int(arch.ttyp_of(request.addr_type, request.access)),
            request.device_id, pv, request.process_id if pv else 0,
            pv and request.priv == arch.Priv.SUPERVISOR, request.iova)


def record_key(record: arch.FaultRecord) -> tuple:
    pv = bool(record.pv)
    return (int(record.cause), int(record.ttyp), record.device_id, pv,
            record.process_id if pv else 0, pv and bool(record.priv), record.iotval)


def _key_text(key: tuple) -> str:
    cause, ttyp, device, pv, pid, priv, iotval = key
    try:
        name = f"{cause} ({arch.Cause(cause).name})"
    except ValueError:
        name = str(cause)
    who = f" process {pid:#x} ({'S' if priv else 'U'})" if pv else ""
    return f"cause {name} ttyp {ttyp} device {device:#x}{who} iotval {iotval:#x}"


@dataclass(frozen=True)
class HangBound:
    """Inputs of the no-hang bound; ``cycles(depth)`` is the bound for walks of ``depth``
    memory accesses.

    One access costs the memory latency, then waits behind every other memory port
    user (``walkers`` + context fetch), each possibly stalled ``stall`` cycles by
    back-pressure; a walk is ``depth`` accesses plus the A/D retries; a request waits
    for a free walker (one walk) and then shares the port with every walker.
    """

    memory_latency: int  # the responder's longest latency
    walkers: int
    stall: int = 0  # longest back-pressure burst on the memory port (0: none)
    response_stall: int = 0  # longest back-pressure burst on the response port

    def cycles(self, depth: int) -> int:
        per_access = self.memory_latency + 1 + (self.walkers + 1) * (1 + self.stall)
        walk = depth * per_access + WALK_OVERHEAD
        return (self.walkers + 1) * walk + (self.walkers + 2) * (1 + self.response_stall) + 8


# --------------------------------------------------------------------------- #
# The checkers
# --------------------------------------------------------------------------- #
@dataclass
class Check:
    """One invariant: how many times it was checked, violated, and the first violation."""

    name: str
    checked: int = 0
    violations: int = 0
    first: str = ""

    def violated(self, text: str) -> None:
        self.violations += 1
        if not self.first:
            self.first = text


@dataclass
class _Sent:
    request: Request
    cycle: int
    answer: TableAnswer
    fresh: bool  # issued after a completed invalidation, with no table change since
    legal_from: int  # table writes from this index on were not yet invalidated
    depth: int


@dataclass
class _Fault:
    request: Request
    response: Response
    needs_record: set = field(default_factory=set)  # {True}, {False} or both (tables changing)


class Invariants:
    """The four checkers over one run; feed it the run's events in order.

    memory: the memory the DUT walks; capabilities: what the DUT implements.
    bound: returns the ``HangBound`` inputs as they are now (the TB reads its
    responder's settings). seed_text / replay: quoted in every violation.
    """

    def __init__(self, memory: Memory, capabilities: int, bound: Callable[[], HangBound], *,
                 seed_text: str = "", replay: str = ""):
        self.memory, self.capabilities, self.bound = memory, capabilities, bound
        self.seed_text, self.replay = seed_text, replay
        self.ddtp = self.fctl = 0
        self.isolation = Check("isolation")
        self.freshness = Check("freshness")
        self.faults = Check("no lost fault")
        self.hang = Check("no hang")
        self.checks = (self.isolation, self.freshness, self.faults, self.hang)
        self._in_flight: dict[int, _Sent] = {}
        self._writes: list[tuple[int, int, int]] = []  # (cycle, dword address, old value)
        self._expired = 0  # writes before this index are covered by a completed invalidation
        self._fence_writes: int | None = None  # writes at the last accepted invalidation
        self._fence_accepted = 0
        self._fresh_since: int | None = None
        self._faults: list[_Fault] = []
        self._records: Counter = Counter()
        self.deepest = 0
        self.worst_latency = 0
        self.worst_bound = 0
        self.fences = 0
        self.fence_cycles_max = 0
        self.not_covered = 0

    # ------------------------------------------------------------------ events
    def configure(self, ddtp: int, fctl: int) -> None:
        self.ddtp, self.fctl = ddtp, fctl

    def note_write(self, addr: int, old_value: int, cycle: int) -> None:
        """Software is about to store to the tables (``old_value`` is what was there)."""
        self._writes.append((cycle, addr & ~7, old_value))

    def inval_accepted(self, cycle: int) -> None:
        self._fence_writes = len(self._writes)
        self._fence_accepted = cycle

    def inval_pending(self, pending: bool, cycle: int) -> None:
        """``inval_pending`` as sampled in ``cycle``; its fall completes the invalidation."""
        if self._fence_writes is None or pending or cycle <= self._fence_accepted:
            return
        self._expired = self._fence_writes
        self._fresh_since = cycle
        self.fences += 1
        self.fence_cycles_max = max(self.fence_cycles_max, cycle - self._fence_accepted)
        self._fence_writes = None

    def request_sent(self, request: Request, cycle: int) -> None:
        answer = tables_answer(self.memory, self.capabilities, self.ddtp, self.fctl, request)
        depth = answer.accesses + AD_RETRIES * (answer.page_table_accesses + 1)
        self.deepest = max(self.deepest, depth)
        fresh = (self._fresh_since is not None and cycle > self._fresh_since
                 and len(self._writes) == self._expired)
        self._in_flight[request.tag] = _Sent(request, cycle, answer, fresh, self._expired,
                                             depth)

    def response(self, response: Response, cycle: int,
                 expected: Response | None = None) -> None:
        """The DUT answered; ``expected`` is the scoreboard's (cached) model answer."""
        sent = self._in_flight.pop(response.tag, None)
        if sent is None:
            return  # the scoreboard reports responses nobody asked for
        self._check_latency(sent, response, cycle)
        if response.ok:
            self._check_isolation(sent, response)
        else:
            self._faults.append(_Fault(sent.request, response, self._needs_record(sent,
                                                                                 response)))
        if sent.fresh:
            self._check_freshness(sent, response, expected)

    def fault_record(self, record: arch.FaultRecord, cycle: int) -> None:
        self._records[record_key(record)] += 1

    def settle(self) -> None:
        """Pair the faulting responses with the fault records seen so far (call when the
        traffic is drained and trailing records had time to arrive)."""
        records = self._records
        optional = []
        for fault in self._faults:
            self.faults.checked += 1
            key = fault_key(fault.request, fault.response.cause)
            if fault.needs_record == {False}:
                optional.append((fault, key))
            elif records[key] > 0:
                records[key] -= 1
            elif True in fault.needs_record and False in fault.needs_record:
                pass  # the DC was being changed: either is legal
            else:
                self.faults.violated(
                    f"{describe(fault.request)}: the response is a fault ({fault.response}) "
                    f"but no fault record was written for it, and DTF does not suppress "
                    f"cause {fault.response.cause} (§6.3)")
        for fault, key in optional:
            if records[key] > 0:
                records[key] -= 1
                self.faults.violated(
                    f"{describe(fault.request)}: a fault record was written for cause "
                    f"{fault.response.cause} although the device context has DTF=1 (§6.3)")
        for key, n in (+records).items():
            self.faults.violated(f"fault record with no faulting response: {n} x "
                                 f"{_key_text(key)}")
        self._faults.clear()
        self._records.clear()

    # ---------------------------------------------------------------- checkers
    def _legal_answers(self, sent: _Sent):
        """The tables' answers under every version the request may legally have seen:
        now, then before each store not yet covered by a completed invalidation."""
        request = sent.request
        yield tables_answer(self.memory, self.capabilities, self.ddtp, self.fctl, request)
        undo: dict[int, int] = {}
        for _, addr, old in reversed(self._writes[sent.legal_from:]):
            undo[addr] = old
            yield tables_answer(self.memory, self.capabilities, self.ddtp, self.fctl, request,
                                dict(undo))

    def _check_isolation(self, sent: _Sent, response: Response) -> None:
        self.isolation.checked += 1
        why = grants_within(response, sent.answer.response)
        if not why:
            return
        if any(not grants_within(response, a.response) for a in self._legal_answers(sent)):
            return
        self.isolation.violated(
            f"{describe(sent.request)}: the tables grant {sent.answer.response}, the RTL "
            f"granted {response}: {'; '.join(why)}")

    def _needs_record(self, sent: _Sent, response: Response) -> set:
        def needs(answer: TableAnswer) -> bool:
            return not (answer.dtf and response.cause not in arch.CAUSES_REPORTED_DESPITE_DTF)

        if len(self._writes) == sent.legal_from:
            return {needs(sent.answer)}
        return {needs(sent.answer)} | {needs(a) for a in self._legal_answers(sent)}

    def _check_freshness(self, sent: _Sent, response: Response, expected) -> None:
        tables = sent.answer.response
        if expected is not None and differences(tables, expected):
            # The model still holds what the invalidation did not cover: not in scope.
            self.not_covered += 1
            return
        self.freshness.checked += 1
        diff = differences(tables, response)
        if diff:
            self.freshness.violated(
                f"{describe(sent.request)} issued at cycle {sent.cycle}, after the "
                f"invalidation completed at cycle {self._fresh_since}: expected {tables} "
                f"(the current tables) got {response} [{', '.join(diff)} differ]: a cache "
                f"entry the invalidation covers was used")

    def _check_latency(self, sent: _Sent, response: Response, cycle: int) -> None:
        self.hang.checked += 1
        latency = cycle - sent.cycle
        bound = self.bound().cycles(self.deepest)
        if latency > self.worst_latency:
            self.worst_latency, self.worst_bound = latency, bound
        if latency > bound:
            self.hang.violated(
                f"{describe(sent.request)}: answered {latency} cycles after it was accepted "
                f"(cycle {sent.cycle}), beyond the bound of {bound} cycles ({self.bound()}, "
                f"deepest walk {self.deepest} accesses)")

    def unanswered(self, cycle: int) -> None:
        """The run ends: requests still in flight past the bound are hangs."""
        for sent in list(self._in_flight.values()):
            bound = self.bound().cycles(self.deepest)
            if cycle - sent.cycle > bound:
                self.hang.checked += 1
                self.hang.violated(f"{describe(sent.request)}: no response {cycle - sent.cycle} "
                                   f"cycles after it was accepted (bound {bound} cycles)")

    # ---------------------------------------------------------------- results
    @property
    def violations(self) -> int:
        return sum(c.violations for c in self.checks)

    def summary(self) -> dict:
        out = {c.name: {"checked": c.checked, "violations": c.violations} for c in self.checks}
        bound = self.bound()
        out["latency"] = {"worst": self.worst_latency, "bound_at_worst": self.worst_bound,
                          "bound_now": bound.cycles(self.deepest), "deepest_walk": self.deepest,
                          "memory_latency": bound.memory_latency, "walkers": bound.walkers}
        out["invalidations"] = {"completed": self.fences, "longest_cycles": self.fence_cycles_max,
                                "not_covered": self.not_covered}
        out["violations"] = self.violations
        return out

    def failure_text(self) -> str:
        """Empty when every invariant held; else the first violation of each broken one."""
        broken = [c for c in self.checks if c.violations]
        if not broken:
            return ""
        lines = [f"{c.violations} {c.name} violation(s); first: {c.first}" for c in broken]
        return ("invariant violations (seed " + self.seed_text + "):\n  " + "\n  ".join(lines)
                + (f"\n  replay: {self.replay}" if self.replay else ""))


class InvariantMonitor:
    """Samples the DUT's ``inval`` handshake and ``inval_pending`` for ``Invariants``."""

    def __init__(self, loop, dut, invariants: Invariants):
        self.loop, self.invariants = loop, invariants
        self.valid = getattr(dut, "inval__valid", None)
        self.ready = getattr(dut, "inval__ready", None)
        self.pending = getattr(dut, "inval_pending", None)
        if self.valid is not None and self.ready is not None:
            loop.add(self)

    def drive(self) -> None:
        pass

    def sample(self) -> None:
        cycle = self.loop.cycle
        invariants = self.invariants
        if self.valid.value == 1 and self.ready.value == 1:
            invariants.inval_accepted(cycle)
        elif invariants._fence_writes is not None:
            # Without the port (an older core), the handshake itself is the fence.
            pending = self.pending is not None and self.pending.value == 1
            invariants.inval_pending(pending, cycle)
