"""The judge: every RTL response is compared with the reference model's answer.

A *reference* is any callable ``reference(request) -> (Response, FaultRecord | None)``.
The scoreboard calls it when the request is transferred to the DUT (``expect``),
so the model sees requests in the order the RTL accepted them, and later compares
the RTL's response carrying the same tag (``check``): fault vs success, then the
cause of a fault, or the SPA, page size, R/W/X/U/G and PBMT of a success. Fault
reports are compared as a multiset (``check_faults``): the RTL reports faults in
completion order, not request order.

Memory: the model and the RTL must not share one ``Memory``, or each would see
the other's A/D updates (and a CAS the model already did would fail for the
RTL). ``EngineReference`` therefore takes a deep copy of the memory when it is
made, i.e. after the tables are built and before traffic: the model walks its
own copy, the RTL (through ``tb.memory_responder``) the original. Later table
edits go to both through ``TB.write64``.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from models import arch
from models.arch import Access, AddrType
from models.memory import Memory
from models.transaction import Request, Response

ACCESS_LETTER = {Access.READ: "R", Access.WRITE: "W", Access.EXECUTE: "X"}

#: ``reference(request) -> (response, record)``, or ``(response, record, reason)`` where
#: ``reason`` says in words why the model answered so (quoted in mismatch messages).
Reference = Callable[[Request], tuple]


class EngineReference:
    """``models.translate.TranslationEngine`` as a scoreboard reference, on its own memory copy.

    ``memory`` is copied (``copy.deepcopy``) at construction; ``ddtp``/``fctl`` are
    what ``translate`` is called with (``configure`` changes them). ``events``
    accumulates the engine's events for the HPM comparison.
    """

    def __init__(self, memory: Memory, capabilities: int, ddtp: int = 0, fctl: int = 0,
                 **engine_options):
        from models.translate import EngineConfig, TranslationEngine

        self.memory = copy.deepcopy(memory)
        self.memory.log_enabled = False
        self.memory.log = []
        self.engine = TranslationEngine(self.memory, EngineConfig(capabilities=capabilities,
                                                                  **engine_options))
        self.ddtp, self.fctl = ddtp, fctl
        self.events: Counter = Counter()

    def configure(self, ddtp: int, fctl: int) -> None:
        self.ddtp, self.fctl = ddtp, fctl

    def __call__(self, request: Request):
        outcome = self.engine.translate(request, self.ddtp, self.fctl)
        for event in outcome.events:
            self.events[event[0] if isinstance(event, tuple) else event] += 1
        return outcome.response, outcome.record, outcome.reason

    def invalidate(self, kind: str, *, gv=0, av=0, pscv=0, dv=0, gscid=0, pscid=0, vpn=0,
                   device_id=0, process_id=0) -> None:
        """Apply the operands of an ``rtl.layouts.Invalidation`` to the model's caches."""
        addr = vpn << arch.PAGE_SHIFT
        if kind == "IOTINVAL_VMA":
            self.engine.iotinval_vma(bool(gv), bool(av), bool(pscv), gscid, pscid, addr)
        elif kind == "IOTINVAL_GVMA":
            self.engine.iotinval_gvma(bool(gv), bool(av), gscid, addr)
        elif kind == "IODIR_INVAL_DDT":
            self.engine.iodir_inval_ddt(bool(dv), device_id)
        elif kind == "IODIR_INVAL_PDT":
            self.engine.iodir_inval_pdt(device_id, process_id)
        else:
            raise ValueError(f"unknown invalidation kind {kind!r}")


def describe(request: Request) -> str:
    """``device 0x12 process 0x3 (pv, S) iova 0x4000 access W``: who asked what, in the
    spec's terms (§1.1); the address type is named only when it is not Untranslated."""
    pid = (f"process {request.process_id:#x} (pv, {'S' if request.priv else 'U'})"
           if request.pv else "process - (no pv)")
    kind = ("" if request.addr_type == AddrType.UNTRANSLATED
            else f" {AddrType(request.addr_type).name}")
    return (f"device {request.device_id:#x} {pid} iova {request.iova:#x} "
            f"access {ACCESS_LETTER[Access(request.access)]}{kind}")


def replay_command(seed=None) -> str:
    """The command that reruns the running cocotb test with the same seed and preset."""
    import json
    import os

    module, test = "tb.tests.test_core_basic", None
    try:  # cocotb keeps the running test on its regression manager
        from cocotb import regression

        running = regression._manager_inst._test
        module, test = running.module, running.name
    except (AttributeError, ImportError):
        pass
    seed = os.environ.get("COCOTB_RANDOM_SEED") if seed is None else seed
    preset = ""
    try:
        from rtl.generate import PRESETS

        from .env import PARAMS_ENV, params_to_env

        text = os.environ.get(PARAMS_ENV)
        if text:
            values = json.loads(text)
            preset = next((f" --preset {name}" for name, params in PRESETS.items()
                           if json.loads(params_to_env(params)) == values), " (custom params)")
    except ImportError:
        pass
    return (f"python -m tb.runner {module}" + (f" --seed {seed}" if seed is not None else "")
            + (f" --testcase '{test}'" if test else "") + preset)


def differences(expected: Response, got: Response) -> list[str]:
    """The fields in which the RTL's response differs from the model's (empty: match)."""
    if expected.ok != got.ok:
        return ["fault vs success"]
    if not expected.ok:
        return ["cause"] if expected.cause != got.cause else []
    out = []
    for name in ("spa", "page_size", "r", "w", "x", "u", "g", "pbmt"):
        if getattr(expected, name) != getattr(got, name):
            out.append(name)
    # An MRIF-mode MSI: the MRIF and the notice MSI the bridge must send (§9.3 step 5).
    if _mrif_fields(expected.mrif) != _mrif_fields(got.mrif):
        out.append("mrif")
    return out


def _mrif_fields(target) -> tuple | None:
    if target is None:
        return None
    return (target.mrif_address, target.notice_address, target.notice_data)


def _record_text(record: arch.FaultRecord) -> str:
    try:
        cause = f"{record.cause} ({arch.Cause(record.cause).name})"
    except ValueError:
        cause = str(record.cause)
    pid = f" process {record.process_id:#x} priv={int(record.priv)}" if record.pv else ""
    return (f"cause {cause} ttyp {record.ttyp} device {record.device_id:#x}{pid} "
            f"iotval {record.iotval:#x} iotval2 {record.iotval2:#x}")


@dataclass
class Expectation:
    request: Request
    response: Response
    record: arch.FaultRecord | None
    sent: int  # cycle
    index: object = None
    reason: str = ""


class Scoreboard:
    """Matches RTL responses with the reference's, by tag; fault reports as a multiset.

    ``mismatches`` holds one message per disagreement, each naming the request
    (device, process, iova, access), expected vs got, and the seed to rerun.
    """

    def __init__(self, reference: Reference, *, seed=None, log: logging.Logger | None = None,
                 max_logged: int = 20):
        self.reference = reference
        self.seed = seed
        self.log = log or logging.getLogger("tb.scoreboard")
        self.max_logged = max_logged
        self.pending: dict[int, Expectation] = {}
        self.mismatches: list[str] = []
        self.matches = 0
        self.msi_matches = 0  # of them MSI translations (§9), flat or MRIF-mode
        self.mrif_matches = 0
        self.checked = 0
        self.expected_records: Counter = Counter()
        self.got_records: Counter = Counter()
        self.record_context: dict[arch.FaultRecord, Request] = {}
        self.fault_reports_checked = 0
        self.latencies: list[int] = []
        self.results: dict = {}  # index -> (request, rtl response), for translate_all

    # ------------------------------------------------------------ requests
    def expect(self, index, request: Request, cycle: int) -> None:
        """The DUT accepted ``request``: ask the reference now, remember the answer."""
        if request.tag in self.pending:
            self._mismatch(f"tag {request.tag} sent again while its response is outstanding "
                           f"({describe(request)})")
        response, record, *reason = self.reference(request)
        self.pending[request.tag] = Expectation(request, response, record, cycle, index,
                                                reason[0] if reason else "")
        if record is not None:
            self.expected_records[record] += 1
            self.record_context.setdefault(record, request)

    def check(self, got: Response, cycle: int) -> Expectation | None:
        """The DUT answered ``got.tag``: compare with the reference's answer."""
        expectation = self.pending.pop(got.tag, None)
        if expectation is None:
            self._mismatch(f"cycle {cycle}: response for tag {got.tag} with no request "
                           f"outstanding: {got}")
            return None
        self.checked += 1
        self.latencies.append(cycle - expectation.sent)
        self.results[expectation.index] = (expectation.request, got)
        diff = differences(expectation.response, got)
        if diff:
            self._mismatch(f"{describe(expectation.request)}: expected "
                           f"{expectation.response} got {got} [{', '.join(diff)} differ; "
                           f"tag {got.tag}, accepted cycle {expectation.sent}, answered "
                           f"{cycle}]"
                           + (f"; model: {expectation.reason}" if expectation.reason else ""))
        else:
            self.matches += 1
            self.msi_matches += expectation.response.msi
            self.mrif_matches += expectation.response.mrif is not None
        return expectation

    # ------------------------------------------------------- fault reports
    def add_fault(self, record: arch.FaultRecord, cycle: int) -> None:
        self.got_records[record] += 1

    @property
    def faults_outstanding(self) -> int:
        """Fault reports the model produced that the RTL has not (yet) sent."""
        return sum((self.expected_records - self.got_records).values())

    def check_faults(self) -> None:
        """Compare the fault reports seen so far with the model's, as multisets."""
        missing = self.expected_records - self.got_records
        extra = self.got_records - self.expected_records
        for record, n in missing.items():
            request = self.record_context.get(record)
            who = f" for {describe(request)}" if request else ""
            self._mismatch(f"fault report missing{who}: expected {n} x {_record_text(record)}")
        for record, n in extra.items():
            self._mismatch(f"unexpected fault report: {n} x {_record_text(record)}")
        self.fault_reports_checked += sum((self.expected_records & self.got_records).values())
        self.expected_records.clear()
        self.got_records.clear()
        self.record_context.clear()

    # ----------------------------------------------------------- reporting
    def _mismatch(self, text: str) -> None:
        message = f"MISMATCH {text} (seed {self.seed})"
        self.mismatches.append(message)
        if len(self.mismatches) <= self.max_logged:
            self.log.error(message)
        elif len(self.mismatches) == self.max_logged + 1:
            self.log.error("further mismatches are counted but not logged")

    def failure_text(self, replay: str = "") -> str:
        """Empty when everything matched; else the count, the first mismatch and how to
        rerun it (what a failing cocotb test prints)."""
        if not self.mismatches:
            return ""
        shown = "\n  ".join(self.mismatches[1:10])
        return (f"{len(self.mismatches)} mismatches (seed {self.seed}); first: "
                f"{self.mismatches[0]}" + (f"\n  replay: {replay}" if replay else "")
                + (f"\n  then:\n  {shown}" if shown else ""))

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        return {
            "checked": self.checked, "matches": self.matches,
            "msi_matches": self.msi_matches, "mrif_matches": self.mrif_matches,
            "mismatches": len(self.mismatches),
            "fault_reports_matched": self.fault_reports_checked,
            "outstanding": len(self.pending),
            "latency_min": lat[0] if lat else None,
            "latency_median": lat[len(lat) // 2] if lat else None,
            "latency_max": lat[-1] if lat else None,
        }
