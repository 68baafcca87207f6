"""The testbench for ``rtl/core.py`` ``TranslationCore`` (top module ``iommu``).

``TB`` owns the clock, reset, the memory responder, the request driver, the
response/fault monitors, the event counter and the scoreboard. A test builds its
tables in a ``Memory``, hands it to ``TB`` and asks for transactions::

    tb = TB(dut, memory)              # params from the runner (IOMMU_PARAMS)
    await tb.reset()
    tb.configure(ddtp, fctl)          # drives the ports and programs the model
    await tb.translate_all(requests)  # every response judged by the scoreboard
    tb.report()                       # logs the figures; fails on any mismatch

Stress: ``tb.stress(True)`` switches random back-pressure / idle cycles on every
interface and random memory latency with reordering; each knob is also
reachable on its own (``tb.responder.set_backpressure(...)``...).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict, fields

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import First, RisingEdge, Timer

from models import arch
from models.memory import Memory
from models.transaction import Request, Response
from rtl import layouts
from rtl.params import DEFAULT, IOMMUParams

from . import packing
from .driver import RequestDriver
from .invariants import HangBound, InvariantMonitor, Invariants
from .memory_responder import MemoryResponder
from .monitor import EventCounter, FaultMonitor, ResponseMonitor
from .scoreboard import EngineReference, Scoreboard, replay_command
from .stream import CycleLoop, StreamBus, StreamSource, burst_pattern, random_pattern

PARAMS_ENV = "IOMMU_PARAMS"
FIGURES_ENV = "IOMMU_TB_FIGURES"  # where report() appends its figures (tests/regress.py)
CLOCK_PERIOD_NS = 10


def params_from_env() -> IOMMUParams:
    """The ``IOMMUParams`` the runner built the DUT with (JSON in ``$IOMMU_PARAMS``)."""
    text = os.environ.get(PARAMS_ENV)
    if not text:
        return DEFAULT
    values = json.loads(text)
    known = {f.name for f in fields(IOMMUParams)}
    return IOMMUParams(**{k: v for k, v in values.items() if k in known})


def params_to_env(params: IOMMUParams) -> str:
    return json.dumps(asdict(params), sort_keys=True)


class TB:
    """Clock, reset and bus models around the translation core, judged by a scoreboard.

    memory: the physical memory the RTL's walks read (the responder serves it).
    reference: a scoreboard reference; default ``EngineReference`` (the model's
    ``TranslationEngine`` on a copy of ``memory`` taken at the first ``configure``).
    seed: seeds every random choice of the TB (default ``cocotb.RANDOM_SEED``, which
    cocotb derives from the run's ``COCOTB_RANDOM_SEED`` and the test's name).
    Failure messages quote ``seed_text``: the run seed to pass to ``tb.runner.run(...,
    seed=)`` (or ``COCOTB_RANDOM_SEED``) to replay the test exactly.
    """

    def __init__(self, dut, memory: Memory | None = None, *, params: IOMMUParams | None = None,
                 reference=None, seed: int | None = None, engine_options: dict | None = None):
        self.dut = dut
        self.params = params or params_from_env()
        self.seed = cocotb.RANDOM_SEED if seed is None else seed
        run_seed = os.environ.get("COCOTB_RANDOM_SEED")
        self.seed_text = (f"{seed}" if seed is not None or run_seed is None
                          else f"{run_seed} (COCOTB_RANDOM_SEED)")
        self.rng = random.Random(self.seed)
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        self.memory = memory if memory is not None else Memory()
        self.engine_options = engine_options or {}
        self.ddtp = self.fctl = 0
        tag_bits = self.params.tag_bits

        Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
        dut.rst.value = 0
        self.loop = CycleLoop(dut.clk)
        self.scoreboard = Scoreboard(reference, seed=self.seed_text, log=self.log)
        self.replay = replay_command()
        # The invariant checkers judge the page tables in ``memory``: only with the
        # default reference (a stand-in DUT with its own reference has no tables).
        self.invariants = (Invariants(self.memory, self.params.capabilities, self._hang_bound,
                                      seed_text=self.seed_text, replay=self.replay)
                           if reference is None else None)
        self.driver = RequestDriver(self.loop, dut, tag_bits, on_sent=self._sent)
        self.responses = ResponseMonitor(self.loop, dut, tag_bits, on_response=self._response,
                                         keep=False)
        self.faults = FaultMonitor(self.loop, dut, on_fault=self._fault)
        self.responder = MemoryResponder(self.loop, dut, self.memory, self.params.mem_id_bits,
                                         rng=random.Random(self.rng.random()))
        self.inval = StreamSource(self.loop, StreamBus(dut, "inval"))
        self.events = EventCounter(self.loop, dut)
        if self.invariants is not None:
            InvariantMonitor(self.loop, dut, self.invariants)
        self._last_progress = 0
        self._batch_done = None
        self.loop.start()
        self.log.info("TB seed %s, params %s", self.seed_text, self.params)

    # ------------------------------------------------------------- control
    @property
    def cycle(self) -> int:
        return self.loop.cycle

    async def reset(self, cycles: int = 5) -> None:
        """Synchronous reset: ``rst`` high for ``cycles`` edges with every input idle."""
        self.loop.frozen = True
        await RisingEdge(self.dut.clk)
        for source in (self.driver, self.inval, self.responder):
            source.reset()
        self.dut.ddtp.value = self.ddtp
        self.dut.fctl.value = self.fctl
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        self.loop.frozen = False
        await RisingEdge(self.dut.clk)

    def configure(self, ddtp: int, fctl: int = 0) -> None:
        """Drive ``ddtp``/``fctl`` and give the model the same values.

        The first call creates the default reference, copying ``memory`` as it is now
        (so build the tables before this)."""
        self.ddtp, self.fctl = ddtp, fctl
        self.dut.ddtp.value = ddtp
        self.dut.fctl.value = fctl
        if self.scoreboard.reference is None:
            self.scoreboard.reference = EngineReference(
                self.memory, self.params.capabilities, ddtp, fctl, **self.engine_options)
        configure = getattr(self.scoreboard.reference, "configure", None)
        if configure is not None:
            configure(ddtp, fctl)
        if self.invariants is not None:
            self.invariants.configure(ddtp, fctl)

    @property
    def reference(self):
        return self.scoreboard.reference

    def write64(self, addr: int, value: int) -> None:
        """A software store to the tables: into the RTL's memory and the model's copy."""
        if self.invariants is not None:
            self.invariants.note_write(addr, self.memory.peek64(addr & ~7), self.cycle)
        self.memory.write64(addr, value, who="tb")
        model_memory = getattr(self.scoreboard.reference, "memory", None)
        if model_memory is not None and model_memory is not self.memory:
            model_memory.write64(addr, value, who="tb")

    def stress(self, on: bool = True, *, probability: float = 0.3,
               latency: tuple[int, int] = (1, 12)) -> None:
        """Random back-pressure and idle cycles on every stream, random memory latency
        with reordering (``on``), or none of it with 2-cycle in-order memory (``not on``)."""
        def pattern():
            return burst_pattern(random.Random(self.rng.random()), probability / 3, 4)

        if on:
            self.driver.pause = pattern()
            self.responses.backpressure = pattern()
            self.faults.backpressure = pattern()
            self.responder.set_backpressure(pattern())
            self.responder.set_idle(pattern())
            self.responder.latency = latency
            self.responder.reorder = True
        else:
            self.driver.pause = self.responses.backpressure = self.faults.backpressure = None
            self.responder.set_backpressure(None)
            self.responder.set_idle(None)
            self.responder.latency = 2
            self.responder.reorder = False

    def random_gaps(self, probability: float) -> None:
        """Random idle cycles between requests."""
        self.driver.pause = random_pattern(random.Random(self.rng.random()), probability)

    # -------------------------------------------------------- transactions
    def _sent(self, index, request: Request, cycle: int) -> None:
        self.scoreboard.expect(index, request, cycle)
        if self.invariants is not None:
            self.invariants.request_sent(request, cycle)

    def _fault(self, record: arch.FaultRecord, cycle: int) -> None:
        self.scoreboard.add_fault(record, cycle)
        if self.invariants is not None:
            self.invariants.fault_record(record, cycle)

    def _hang_bound(self) -> HangBound:
        """The no-hang bound's inputs as the responder and monitors are set now."""
        stressed = self.responder.requests.backpressure is not None
        return HangBound(self.responder.latency[1], self.params.walkers,
                         stall=8 if stressed else 0,
                         response_stall=8 if self.responses.backpressure is not None else 0)

    def _response(self, response: Response, cycle: int) -> None:
        self._last_progress = cycle
        expectation = self.scoreboard.check(response, cycle)
        if self.invariants is not None:
            self.invariants.response(response, cycle,
                                     expectation.response if expectation else None)
        self.driver.release(response.tag)
        if self._batch_done is not None and not self.driver.outstanding and self.driver.idle:
            self._batch_done.set()

    async def translate_all(self, requests, *, max_outstanding: int | None = None,
                            stall_cycles: int = 20000) -> list[tuple[Request, Response]]:
        """Send ``requests`` (tags are assigned here), wait for every response and the
        fault reports the model expects; return ``(request_with_tag, rtl_response)``
        in request order. Fails if the DUT answers nothing for ``stall_cycles``."""
        requests = list(requests)
        if requests and self.scoreboard.reference is None:
            raise RuntimeError("call tb.configure(ddtp, fctl) before sending requests: it "
                               "programs the DUT and creates the reference model")
        self.driver.max_outstanding = max_outstanding
        self.scoreboard.results = {}
        self._batch_done = cocotb.triggers.Event()
        self._last_progress = self.cycle
        for index, request in enumerate(requests):
            self.driver.send(request, index)
        if not self.driver.outstanding and self.driver.idle:
            self._batch_done.set()
        await self._wait(self._batch_done.is_set, stall_cycles, "responses", self._batch_done)
        # Fault reports may trail their responses by a few cycles (a FIFO); wait for the
        # ones the model expects, then a little longer to catch any it does not.
        await self._wait(lambda: self.scoreboard.faults_outstanding == 0, 500,
                         "fault reports", fail=False)
        await self._wait(lambda: False, 8, "", fail=False)
        self._batch_done = None
        self.scoreboard.check_faults()
        if self.invariants is not None:
            self.invariants.settle()
        self._check_protocol()
        results = self.scoreboard.results
        return [results.get(i, (request, None)) for i, request in enumerate(requests)]

    async def translate(self, request: Request) -> Response:
        return (await self.translate_all([request]))[0][1]

    async def _wait(self, done, stall_cycles: int, what: str, event=None,
                    fail: bool = True) -> None:
        """Until ``done()``; after ``stall_cycles`` without progress fail (or just return)."""
        start = self.cycle
        poll = min(64, stall_cycles)
        while not done():
            timer = Timer(CLOCK_PERIOD_NS * poll, unit="ns")
            await (First(event.wait(), timer) if event is not None else timer)
            if done():
                break
            if self.cycle - max(self._last_progress, start) >= stall_cycles:
                if not fail:
                    break
                stuck = ", ".join(f"tag {tag}: {request}"
                                  for tag, request in list(self.driver.in_flight.items())[:8])
                raise AssertionError(
                    f"no {what} for {stall_cycles} cycles (cycle {self.cycle}); "
                    f"{self.driver.outstanding} requests outstanding ({stuck}); "
                    f"{len(self.driver.queue)} not sent; memory requests outstanding "
                    f"{self.responder.outstanding} (seed {self.seed_text})")
        await RisingEdge(self.dut.clk)  # leave the read-only phase before anyone drives

    async def invalidate(self, kind: str | layouts.InvalKind = "IOTINVAL_VMA", **operands) -> None:
        """Send one ``Invalidation`` and apply it to the model at the same point.

        Outstanding requests are drained first, so the invalidation sits between
        the requests before and after it for both the RTL and the model."""
        kind = kind.name if isinstance(kind, layouts.InvalKind) else kind
        await self.translate_all([])  # drain
        done = cocotb.triggers.Event()
        self.inval.on_accept = lambda item, cycle: done.set()
        self.inval.send(packing.invalidation_payload(kind=kind, **operands))
        await First(done.wait(), Timer(CLOCK_PERIOD_NS * 1000, unit="ns"))
        if not done.is_set():
            raise AssertionError(f"the DUT did not accept invalidation {kind} {operands} "
                                 f"in 1000 cycles (seed {self.seed_text})")
        await RisingEdge(self.dut.clk)
        invalidate = getattr(self.scoreboard.reference, "invalidate", None)
        if invalidate is not None:
            invalidate(kind, **operands)

    def compare_memories(self, limit: int = 10) -> list[str]:
        """Where the RTL's memory and the model's copy differ, dword by dword.

        After the same requests both should hold the same tables, including the A/D
        bits each set by itself (hardware A/D update, §5.5): A/D only ever go from 0
        to 1, so the order the two sides set them in does not matter. One freedom is
        allowed: a 64 KiB NAPOT page is 16 identical PTEs, and which of them a walk
        reads (so which gets its A/D set) depends on what each IOTLB held; for those
        groups only the OR of A and of D over the 16 PTEs must agree.
        """
        model_memory = getattr(self.scoreboard.reference, "memory", None)
        if model_memory is None or model_memory is self.memory:
            return []
        return memory_differences(self.memory, model_memory, limit)

    def _check_protocol(self) -> None:
        if self.responder.violations:
            raise AssertionError("memory port protocol violations:\n  "
                                 + "\n  ".join(self.responder.violations[:10]))

    # ------------------------------------------------------------ results
    def figures(self) -> dict:
        return {**self.scoreboard.summary(), "cycles": self.cycle,
                "memory": self.responder.stats(), "events": dict(self.events.counts),
                "invariants": self.invariants.summary() if self.invariants else None}

    def _export_figures(self, figures: dict, failure: str) -> None:
        """Append this test's figures as one JSON line to ``$IOMMU_TB_FIGURES`` (if set):
        how ``tests/regress.py`` totals transactions, violations and latencies."""
        path = os.environ.get(FIGURES_ENV)
        if not path:
            return
        row = {"replay": self.replay, "failure": failure.splitlines()[0] if failure else "",
               "checked": figures["checked"], "latency_max": figures["latency_max"],
               "mismatches": len(self.scoreboard.mismatches),
               "invariants": self.invariants.summary() if self.invariants else None}
        with open(path, "a") as out:
            out.write(json.dumps(row) + "\n")

    def report(self, check: bool = True) -> dict:
        """Log the figures; with ``check``, fail on any mismatch or unanswered request."""
        figures = self.figures()
        self.log.info("scoreboard: %d checked, %d matched (%d MSI, %d of them MRIF), %d "
                      "mismatches, %d fault reports matched; latency min/median/max %s/%s/%s "
                      "cycles; memory %s; events %s (seed %s)", figures["checked"],
                      figures["matches"], figures["msi_matches"], figures["mrif_matches"],
                      figures["mismatches"], figures["fault_reports_matched"],
                      figures["latency_min"], figures["latency_median"],
                      figures["latency_max"], figures["memory"], figures["events"], self.seed_text)
        if check:
            self._check_protocol()
            for difference in self.compare_memories():
                self.scoreboard._mismatch(difference)
            pulses = self.events.counts.get("ev_request")
            if pulses is not None and pulses != self.driver.transfers:
                self.scoreboard._mismatch(f"ev_request pulsed {pulses} times for "
                                          f"{self.driver.transfers} accepted requests")
            if self.invariants is not None:
                self.invariants.unanswered(self.cycle)
                self.log.info("invariants: %s", self.invariants.summary())
            failure = "\n".join(text for text in (
                self.scoreboard.failure_text(self.replay),
                self.invariants.failure_text() if self.invariants else "") if text)
            self._export_figures(figures, failure)
            if failure:
                raise AssertionError(failure)
            if self.scoreboard.pending:
                raise AssertionError(f"{len(self.scoreboard.pending)} requests never answered "
                                     f"(seed {self.seed_text})")
        return figures


def cause_name(cause: int) -> str:
    try:
        return arch.Cause(cause).name
    except ValueError:
        return str(cause)


def memory_differences(rtl_memory: Memory, model_memory: Memory, limit: int = 10,
                       exclude: tuple = ()) -> list[str]:
    """Where two memories differ, dword by dword (see ``TB.compare_memories``), outside
    the ``exclude`` ranges (``(start, end)`` byte addresses)."""
    ad, napot = arch.Pte.A.mask | arch.Pte.D.mask, arch.Pte.N.mask
    out: list[str] = []
    groups: set[int] = set()  # NAPOT groups (128-byte aligned) differing only in A/D
    # Memory keeps its contents as 4 KiB pages; compare every page either side has.
    for page in sorted(set(rtl_memory._pages) | set(model_memory._pages)):
        rtl = rtl_memory._raw_read(page << 12, 4096)
        model = model_memory._raw_read(page << 12, 4096)
        if rtl == model:
            continue
        for offset in range(0, 4096, 8):
            a = int.from_bytes(rtl[offset:offset + 8], "little")
            b = int.from_bytes(model[offset:offset + 8], "little")
            addr = (page << 12) + offset
            if a == b or any(lo <= addr < hi for lo, hi in exclude):
                continue
            if (a ^ b) & ~ad == 0 and a & b & napot:
                groups.add(addr & ~127)
                continue
            out.append(f"memory at {addr:#x}: RTL side {a:#018x}, model side {b:#018x} "
                       f"(differing bits {a ^ b:#x})")
    for group in sorted(groups):
        rtl_or = model_or = 0
        for addr in range(group, group + 128, 8):
            rtl_or |= rtl_memory.peek64(addr) & ad
            model_or |= model_memory.peek64(addr) & ad
        if rtl_or != model_or:
            out.append(f"NAPOT PTEs at {group:#x}: A/D set over the group, RTL side "
                       f"{rtl_or:#x}, model side {model_or:#x}")
    return out[:limit]
