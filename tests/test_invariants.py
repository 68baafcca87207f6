"""The invariant checkers of ``tb/invariants.py``: each one catches a broken stream.

The unit tests feed ``Invariants`` fabricated transactions (no simulator): a sound
stream passes, and for each checker a stream broken the way that checker is about
(a grant beyond the page tables, a stale hit after an invalidation completed, a
fault without its record, a response past the bound) must count a violation. Expected
answers come from the reference model (``tables_answer``), never written by hand.

``test_regress_slice`` runs a short slice of ``make regress`` (``tests/regress.py``)
on the RTL: a few hundred transactions per configuration on the default build.
"""

from dataclasses import replace

import pytest

from models import arch
from models.arch import DdtpMode, DeviceContext, Ta, Tc
from models.memory import FrameAllocator, Memory
from models.pagetable import DeviceDirectory, PageTable
from models.transaction import Request, Response, Status
from rtl.params import DEFAULT
from tb.invariants import HangBound, Invariants, tables_answer
from tb.scoreboard import describe

CAPS = DEFAULT.capabilities
DEVICE, QUIET_DEVICE, PSCID = 5, 6, 9  # QUIET_DEVICE has DTF=1


class System:
    """A 1LVL DDT (DCs in the format CAPS select: extended with MSI_FLAT), two devices
    on one Sv39 table: 0x1000 RW, 0x2000 read-only, a 2 MiB page at 0x20_0000,
    nothing at 0x5000."""

    def __init__(self):
        self.memory = Memory()
        alloc = FrameAllocator(self.memory)
        self.ddt = DeviceDirectory(self.memory, alloc, DdtpMode.LVL1,
                                   extended=bool(arch.Cap.MSI_FLAT.get(CAPS)))
        self.table = PageTable(self.memory, alloc, arch.SV39)
        self.rw_pte = self.table.map(0x1000, 0x9_0000_3000)
        self.table.map(0x2000, 0x9_0000_7000, w=False)
        self.table.map(0x20_0000, 0xA_0020_0000, 1 << 21)
        for device_id, tc in ((DEVICE, Tc.V.put(1)), (QUIET_DEVICE, Tc.V.put(1) | Tc.DTF.put(1))):
            self.ddt.install(device_id, DeviceContext(tc=tc, ta=Ta.PSCID.put(PSCID),
                                                      fsc=self.table.atp()))
        self.bound = HangBound(memory_latency=10, walkers=4)
        self.inv = Invariants(self.memory, CAPS, lambda: self.bound, seed_text="1234",
                              replay="python -m tb.runner ... --seed 1234")
        self.inv.configure(self.ddt.ddtp(), 0)
        self.tag = 0

    def tables(self, request: Request) -> Response:
        return tables_answer(self.memory, CAPS, self.ddt.ddtp(), 0, request).response

    def send(self, cycle: int, **fields) -> Request:
        self.tag += 1
        request = Request(tag=self.tag, **{"device_id": DEVICE, **fields})
        self.inv.request_sent(request, cycle)
        return request

    def answer(self, request: Request, cycle: int, response: Response | None = None,
               records: bool = True) -> Response:
        """Answer as the tables do (or with ``response``); a fault gets the record the
        model writes (if ``records``)."""
        outcome = tables_answer(self.memory, CAPS, self.ddt.ddtp(), 0, request).outcome
        response = replace(response or outcome.response, tag=request.tag)
        self.inv.response(response, cycle, outcome.response)
        if records and outcome.record is not None and not response.ok:
            self.inv.fault_record(outcome.record, cycle + 2)
        return response


def sound_stream(system: System) -> None:
    R, W = arch.Access.READ, arch.Access.WRITE
    for cycle, (iova, access) in enumerate([(0x1008, W), (0x2010, R), (0x2010, W),
                                            (0x20_1234, R), (0x5000, R)]):
        system.answer(system.send(10 * cycle, iova=iova, access=access), 10 * cycle + 40)
    quiet = system.send(100, device_id=QUIET_DEVICE, iova=0x5000)
    system.answer(quiet, 140)  # DTF=1: the model writes no record, none is owed
    system.inv.settle()


def test_a_sound_stream_keeps_every_invariant():
    system = System()
    sound_stream(system)
    summary = system.inv.summary()
    assert system.inv.violations == 0, system.inv.failure_text()
    assert summary["isolation"]["checked"] == 3  # the successes
    assert summary["no lost fault"]["checked"] == 3  # two page faults, one suppressed
    assert summary["no hang"]["checked"] == 6
    assert system.inv.failure_text() == ""


def violations(system: System) -> dict:
    return {c.name: c.violations for c in system.inv.checks if c.violations}


# ------------------------------------------------------------------------ isolation
def test_isolation_catches_a_write_grant_on_a_read_only_page():
    system = System()
    request = system.send(0, iova=0x2010, access=arch.Access.READ)
    granted = replace(system.tables(request), w=True)
    system.answer(request, 30, granted)
    assert violations(system) == {"isolation": 1}
    text = system.inv.isolation.first
    assert text.startswith(describe(request)) and "permission W not in the leaf PTE" in text


@pytest.mark.parametrize("what", ["unmapped page", "other page", "larger page"])
def test_isolation_catches_a_grant_beyond_the_page_tables(what):
    system = System()
    if what == "unmapped page":  # the tables say page fault; the RTL says success
        request = system.send(0, iova=0x5008)
        mapped = system.tables(replace(request, iova=0x1008))
        granted = replace(mapped, spa=mapped.spa + 0x4000)
    elif what == "other page":  # a mapped IOVA sent to another frame
        request = system.send(0, iova=0x1008)
        granted = replace(system.tables(request), spa=system.tables(request).spa + 0x1000)
    else:  # the right SPA, but a 2 MiB grant around a 4 KiB page
        request = system.send(0, iova=0x1008)
        granted = replace(system.tables(request), page_size=1 << 21)
    system.answer(request, 30, granted)
    assert violations(system) == {"isolation": 1}, system.inv.failure_text()
    assert "seed 1234" in system.inv.failure_text()
    assert "replay: python -m tb.runner" in system.inv.failure_text()


# ------------------------------------------------------------------------ freshness
def remap_and_invalidate(system: System, accept: int, fall: int) -> int:
    """Software moves page 0x1000 to another frame and invalidates; the core accepts the
    invalidation at ``accept`` and drops ``inval_pending`` at ``fall``."""
    old = system.memory.peek64(system.rw_pte)
    system.inv.note_write(system.rw_pte, old, accept - 5)
    system.memory.write64(system.rw_pte, arch.Pte.PPN.set(old, 0x9_1234_5000 >> 12))
    system.inv.inval_accepted(accept)
    for cycle in range(accept, fall):
        system.inv.inval_pending(True, cycle)
    system.inv.inval_pending(False, fall)
    return old


def stale(system: System, request: Request, old_pte: int) -> Response:
    """What the tables said before the remap (the stale cached translation)."""
    return tables_answer(system.memory, CAPS, system.ddt.ddtp(), 0, request,
                         {system.rw_pte: old_pte}).response


def test_freshness_catches_a_stale_hit_after_the_invalidation_completed():
    system = System()
    old = remap_and_invalidate(system, accept=100, fall=130)
    request = system.send(131, iova=0x1010)
    old_answer = stale(system, request, old)
    assert old_answer.spa != system.tables(request).spa
    system.answer(request, 133, old_answer)
    # The old frame is no longer the device's either: isolation sees it too.
    assert violations(system) == {"freshness": 1, "isolation": 1}, system.inv.failure_text()
    assert "a cache entry the invalidation covers was used" in system.inv.freshness.first


def test_freshness_catches_a_stale_hit_that_isolation_allows():
    """Software makes the read-only page writable and invalidates; a stale answer
    (read-only) grants less than the tables, so only freshness can see it."""
    system = System()
    request = Request(device_id=DEVICE, iova=0x2010)
    pte = system.table.walk_path(0x2010)[-1][0]
    old = system.memory.peek64(pte)
    system.inv.note_write(pte, old, 90)
    system.memory.write64(pte, arch.Pte.W.set(old, 1) | arch.Pte.D.mask)
    system.inv.inval_accepted(100)
    system.inv.inval_pending(False, 101)
    request = system.send(102, iova=0x2010)
    old_answer = tables_answer(system.memory, CAPS, system.ddt.ddtp(), 0, request,
                               {pte: old}).response
    assert not old_answer.w and system.tables(request).w
    system.answer(request, 104, old_answer)
    assert violations(system) == {"freshness": 1}, system.inv.failure_text()


def test_freshness_allows_old_values_until_inval_pending_falls():
    """A request issued while the invalidation is pending may still see the old frame
    (§10.3); one issued after ``inval_pending`` fell may not."""
    system = System()
    old = system.memory.peek64(system.rw_pte)
    system.inv.note_write(system.rw_pte, old, 95)
    system.memory.write64(system.rw_pte, arch.Pte.PPN.set(old, 0x9_1234_5000 >> 12))
    system.inv.inval_accepted(100)
    system.inv.inval_pending(True, 101)
    early = system.send(102, iova=0x1010)
    system.answer(early, 104, stale(system, early, old))
    system.inv.inval_pending(False, 120)
    assert violations(system) == {}, system.inv.failure_text()
    late = system.send(121, iova=0x1010)
    system.answer(late, 123, stale(system, late, old))
    assert violations(system) == {"freshness": 1, "isolation": 1}


# -------------------------------------------------------------------- no lost fault
def test_no_lost_fault_catches_a_fault_without_its_record():
    system = System()
    request = system.send(0, iova=0x2010, access=arch.Access.WRITE)  # read-only page
    system.answer(request, 30, records=False)
    system.inv.settle()
    assert violations(system) == {"no lost fault": 1}
    assert "no fault record was written" in system.inv.faults.first


def test_no_lost_fault_catches_a_record_with_the_wrong_iotval():
    system = System()
    request = system.send(0, iova=0x5008)
    system.answer(request, 30, records=False)
    record = tables_answer(system.memory, CAPS, system.ddt.ddtp(), 0, request).outcome.record
    system.inv.fault_record(replace(record, iotval=0x5000), 32)
    system.inv.settle()
    assert violations(system) == {"no lost fault": 2}  # lost, and a record for nothing


def test_no_lost_fault_catches_a_record_that_dtf_suppresses():
    system = System()
    request = system.send(0, device_id=QUIET_DEVICE, iova=0x5008)
    system.answer(request, 30)
    record = arch.FaultRecord(cause=arch.Cause.READ_PAGE_FAULT, ttyp=arch.Ttyp(2),
                              device_id=QUIET_DEVICE, iotval=0x5008)
    system.inv.fault_record(record, 32)
    system.inv.settle()
    assert violations(system) == {"no lost fault": 1}
    assert "DTF=1" in system.inv.faults.first


def test_dtf_does_not_suppress_causes_reported_despite_it():
    """Cause 258 for a device with no DC: DTF cannot apply, the record is owed."""
    system = System()
    # 0x20 has no DC and fits the 1LVL DDT in either format (6 bits extended, 7 base)
    request = system.send(0, device_id=0x20, iova=0x1000)
    answer = system.answer(request, 30, records=False)
    assert answer.cause == arch.Cause.DDT_ENTRY_NOT_VALID
    system.inv.settle()
    assert violations(system) == {"no lost fault": 1}


# ------------------------------------------------------------------------- no hang
def test_no_hang_catches_a_response_past_the_bound():
    system = System()
    request = system.send(0, iova=0x1008)
    bound = system.bound.cycles(system.inv.deepest)
    assert 50 < bound < 5000, bound
    system.answer(request, bound)  # at the bound: fine
    late = system.send(10, iova=0x2008)
    system.answer(late, 10 + bound + 1)
    assert violations(system) == {"no hang": 1}
    summary = system.inv.summary()["latency"]
    assert summary["worst"] == bound + 1 and summary["bound_at_worst"] == bound


def test_no_hang_catches_a_request_never_answered():
    system = System()
    system.send(0, iova=0x1008)
    system.inv.unanswered(10)
    assert violations(system) == {}
    system.inv.unanswered(10_000_000)
    assert violations(system) == {"no hang": 1}


def test_the_bound_grows_with_latency_walkers_and_depth():
    base = HangBound(memory_latency=10, walkers=4)
    assert base.cycles(20) > base.cycles(10)
    assert HangBound(memory_latency=20, walkers=4).cycles(10) > base.cycles(10)
    assert HangBound(memory_latency=10, walkers=8).cycles(10) > base.cycles(10)
    assert HangBound(memory_latency=10, walkers=4, stall=8).cycles(10) > base.cycles(10)


def test_describe_speaks_the_spec():
    request = Request(device_id=0x12, iova=0x4000, access=arch.Access.WRITE, process_id=3,
                      pv=True, priv=arch.Priv.SUPERVISOR)
    assert describe(request) == "device 0x12 process 0x3 (pv, S) iova 0x4000 access W"
    assert describe(Request(device_id=1, iova=0x10, access=arch.Access.EXECUTE)) == (
        "device 0x1 process - (no pv) iova 0x10 access X")
    assert Response(Status.SUCCESS).ok


def test_a_scoreboard_failure_names_the_transaction_and_the_replay():
    from tb.scoreboard import Scoreboard

    system = System()
    request = Request(device_id=DEVICE, iova=0x2010, access=arch.Access.WRITE, tag=3)
    scoreboard = Scoreboard(lambda r: (system.tables(r), None), seed="77")
    scoreboard.expect(0, request, 10)
    got = Response(Status.SUCCESS, tag=3, spa=0x9_0000_7010, r=True, w=True)
    scoreboard.check(got, 14)
    text = scoreboard.failure_text("python -m tb.runner tb.tests.test_core_basic --seed 77")
    expected = system.tables(request)
    assert not expected.ok
    assert text.startswith("1 mismatches (seed 77); first: MISMATCH device 0x5 process - "
                           f"(no pv) iova 0x2010 access W: expected {expected} got {got}")
    assert "\n  replay: python -m tb.runner tb.tests.test_core_basic --seed 77" in text


# ----------------------------------------------------------- the regression slice
def test_regress_slice():
    """A few hundred transactions per configuration of ``make regress`` on the RTL
    (default build: the one ``tests/test_rtl_core.py`` uses), every invariant held."""
    from tests import regress

    rows = regress.regress(transactions=1, per_run=200, jobs=1, slice_only=True, quiet=True)
    print(regress.summary_table(rows))
    assert {row["name"] for row in rows} == {c.name for c in regress.CONFIGS if c.in_slice}
    for row in rows:
        assert row["failed"] == 0 and row["mismatches"] == 0 and row["violations"] == 0, row
        assert row["transactions"] >= 200, row
        assert 0 < row["worst_latency"] <= row["bound_at_worst"], row
