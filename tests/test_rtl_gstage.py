"""G-stage and nested translation in the RTL (rtl/walker.py, rtl/context_fetch.py), judged
by the reference model.

``PageTableWalker`` built with Sv39x4/Sv48x4/Sv57x4 walks G-stage-only (first stage
Bare) and nested (first stage Sv39/48/57 whose table addresses are GPAs) requests. Each
walk is also asked of ``models.translate.TranslationEngine`` on a copy of memory, with a
real device context (``iohgatp`` = the G-stage table, ``iosatp`` = the guest's table)
installed there: the walker must give the engine's cause and ``iotval2`` (taken from the
engine's fault record), or its SPA page, size, permissions and PBMT; it must make the
engine's first-stage and G-stage PTE accesses (reads and CAS) in the engine's order and
leave the same PTE words. ``ContextFetch`` with a G-stage walks PDTs at GPAs; its causes
and ``iotval2`` are compared with the engine's, and its extended-DC checks with the
engine's 259 verdicts. No expected address is written by hand.

Rerun a random failure with GSTAGE_SEED=<seed printed in the failure>.
"""

from __future__ import annotations

import copy
import os
import random
from dataclasses import dataclass, field

import pytest
from amaranth.sim import Simulator
from walk_env import MEM_ID, WHO, Walk, responder, walk_once

from models import arch
from models.arch import (
    Access,
    AtpMode,
    Cause,
    DdtpMode,
    DeviceContext,
    Fsc,
    Iohgatp,
    Msiptp,
    MsiptpMode,
    PcTa,
    PdtpMode,
    Priv,
    ProcessContext,
    Pte,
    Tc,
)
from models.memory import FaultKind, FrameAllocator, Memory
from models.pagetable import DeviceDirectory, PageTable, ProcessDirectory
from models.transaction import Request
from models.translate import WHO_FS, WHO_GS, EngineConfig, TranslationEngine
from rtl import layouts, params
from rtl.context_fetch import ContextFetch
from rtl.walker import PageTableWalker

ID_BITS = 2
GS_CAPS = (params.rtl_capabilities() | arch.Cap.SV39X4.mask | arch.Cap.SV48X4.mask
           | arch.Cap.SV57X4.mask)
GS_SCHEMES = [arch.SV39X4_SCHEME, arch.SV48X4_SCHEME, arch.SV57X4_SCHEME]
FS_SCHEMES = [arch.SV39, arch.SV48, arch.SV57]
KIB4, KIB64, MIB2, GIB1 = 1 << 12, 1 << 16, 1 << 21, 1 << 30

# Memory map (SPAs): host tables (G-stage), guest memory (the guest's own tables and
# data), the judge's device directory (only in the engine's copy of memory).
HOST_BASE = 0x8000_0000
GUEST_SPA = 0x1_0000_0000
GUEST_GPA = 0x4000_0000  # guest tables live at GPAs GUEST_GPA.. (= GUEST_SPA..)
DATA_GPA = 0x2_0000_0000  # guest data pages the first stage maps to
JUDGE_TABLES = 0x00C0_0000_0000
JUDGE_DEVICE_ID = 0x2A
JUDGE_PROCESS_ID = 0x5B
GSCID = 0x77
GUEST_CAUSES = {Cause.INSTRUCTION_GUEST_PAGE_FAULT, Cause.READ_GUEST_PAGE_FAULT,
                Cause.WRITE_GUEST_PAGE_FAULT}
WALK_CAUSES = GUEST_CAUSES | {
    Cause.INSTRUCTION_ACCESS_FAULT, Cause.READ_ACCESS_FAULT, Cause.WRITE_ACCESS_FAULT,
    Cause.INSTRUCTION_PAGE_FAULT, Cause.READ_PAGE_FAULT, Cause.WRITE_PAGE_FAULT,
    Cause.PT_DATA_CORRUPTION}


def gpa_to_spa(gpa: int) -> int:
    return gpa - GUEST_GPA + GUEST_SPA


# --------------------------------------------------------------------------- #
# A guest: a G-stage table and the guest's first-stage table at GPAs
# --------------------------------------------------------------------------- #
class Guest:
    """One VM's tables in ``memory``: ``gs`` (host-owned, SPAs) and ``fs`` (guest-owned:
    its table addresses and PPNs are GPAs, stored at ``gpa_to_spa``).

    ``map_tables`` maps every first-stage table page in the G-stage (4 KiB pages with
    ``perms``, default R/W/U/A/D) — a test may then break one of them.
    """

    def __init__(self, memory: Memory, gs_scheme=arch.SV39X4_SCHEME, fs_scheme=arch.SV39):
        self.memory = memory
        self.host = FrameAllocator(memory, base=HOST_BASE, size=1 << 28)
        self.guest = FrameAllocator(memory, base=GUEST_SPA, size=1 << 28)
        self.gs = PageTable(memory, self.host, gs_scheme)
        self.fs = PageTable(memory, self.host, fs_scheme, to_phys=gpa_to_spa,
                            alloc_table=self._guest_table) if fs_scheme else None
        self.gs_mapped: set[int] = set()  # G-stage pages (GPA) mapped so far

    def _guest_table(self, size: int, align: int) -> int:
        return self.guest.alloc(size, align) - GUEST_SPA + GUEST_GPA

    def map_tables(self, **perms) -> None:
        for table in self.fs.tables if self.fs else []:
            if table not in self.gs_mapped:
                self.gs.map(table, gpa_to_spa(table), KIB4,
                            **({"r": True, "w": True, "u": True} | perms))
                self.gs_mapped.add(table)

    def context(self, gade=0, sade=0) -> dict:
        fs = self.fs
        return {"fs_mode": fs.scheme.mode if fs else 0, "fs_ppn": fs.root >> 12 if fs else 0,
                "gs_mode": self.gs.scheme.mode, "gs_ppn": self.gs.root >> 12, "gscid": GSCID,
                "sade": sade, "gade": gade, "ens": 1}


@dataclass
class Job:
    iova: int
    access: Access
    context: dict
    priv: int = 0
    faults: list = field(default_factory=list)  # (SPA, FaultKind) injected for this walk
    before: object = None  # before the walk: before(memory) changes tables (no invalidation)
    inval: dict | None = None  # before the walk: an Invalidation on the walker's inval port
    judged: bool = True  # compare with the engine (False: only record)

    def __str__(self):
        c = self.context
        return (f"iova={self.iova:#x} {self.access.name} fs_mode={c['fs_mode']} "
                f"gs_mode={c['gs_mode']} sade={c['sade']} gade={c['gade']} "
                f"faults={[(hex(a), k.value) for a, k in self.faults]}")


def judge(memory: Memory, job: Job, caps: int):
    """The engine's answer for ``job`` on ``memory`` (its own copy): (Walk, accesses, why).

    A 1LVL DDT with one DC: iohgatp = the job's G-stage table with GSCID, iosatp = the
    guest's table (or Bare), GADE/SADE as asked. ``d`` of a success: D of the last
    first-stage and last G-stage PTE the engine touched (the leaves), ANDed (1 for a
    Bare first stage).
    """
    c = job.context
    alloc = FrameAllocator(memory, base=JUDGE_TABLES, size=1 << 24)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL1, extended=bool(
        arch.Cap.MSI_FLAT.get(caps)))
    fsc = Fsc.MODE.put(c["fs_mode"]) | Fsc.PPN.put(c["fs_ppn"]) if c["fs_mode"] else 0
    iohgatp = (Iohgatp.MODE.put(c["gs_mode"]) | Iohgatp.PPN.put(c["gs_ppn"])
               | Iohgatp.GSCID.put(c["gscid"]))
    tc = Tc.V.put(1) | Tc.SADE.put(c["sade"]) | Tc.GADE.put(c["gade"])
    ddt.install(JUDGE_DEVICE_ID, DeviceContext(tc=tc, iohgatp=iohgatp, fsc=fsc))
    request = Request(device_id=JUDGE_DEVICE_ID, iova=job.iova, access=job.access)
    engine = TranslationEngine(memory, EngineConfig(
        capabilities=caps, ddt_cache_entries=0, pdt_cache_entries=0, iotlb_entries=0))
    start = len(memory.log)
    outcome = engine.translate(request, ddt.ddtp(), 0)
    accesses = [(rec.op, rec.addr) for rec in memory.log[start:]
                if rec.who in (WHO_FS, WHO_GS)]
    response = outcome.response
    if not response.ok:
        assert response.cause in WALK_CAUSES, (
            f"{job}: engine cause {response.cause} ({outcome.reason}) is not a walk's")
        return Walk(1, int(response.cause), outcome.record.iotval2), accesses, outcome.reason
    last = {rec.who: rec.addr for rec in memory.log[start:]}  # the leaves: last of each
    d_fs = Pte.D.get(memory.peek64(last[WHO_FS])) if WHO_FS in last else 1
    d_gs = Pte.D.get(memory.peek64(last[WHO_GS]))
    walk = Walk(0, ppn=(response.spa >> 12) & ((1 << layouts.PPN_BITS) - 1),
                size_log2=response.page_size.bit_length() - 1, r=int(response.r),
                w=int(response.w), x=int(response.x), u=int(response.u), g=int(response.g),
                d=d_fs & d_gs, pbmt=response.pbmt)
    return walk, accesses, outcome.reason


# The memory responder the benches share is tests/walk_env.py's.


# --------------------------------------------------------------------------- #
# Walker bench
# --------------------------------------------------------------------------- #
def run_walks(memory: Memory, jobs, *, caps=GS_CAPS, seed=0, latency=(1, 3), mem_ready=1.0,
              res_ready=1.0, rerun="", walk_cache_entries=0):
    """Run ``jobs`` through one PageTableWalker, each compared with the engine.
    Returns (cycles from request handshake to result handshake, Walk, accesses) of each.

    With a walk cache the walker may skip G-stage walks the engine makes (the engine has
    no such cache): then only the result and the PTEs left in memory are compared, and
    the walker's accesses must be the engine's with some G-stage reads left out."""
    rng = random.Random(seed)
    dut = PageTableWalker(id_bits=ID_BITS, mem_id=MEM_ID, capabilities=caps,
                          walk_cache_entries=walk_cache_entries)
    cycles_of = []

    async def driver(ctx):
        for job in jobs:
            if job.before:
                job.before(memory)
            if job.inval:
                ctx.set(dut.inval.valid, 1)
                ctx.set(dut.inval.payload, job.inval)
                await ctx.tick()
                ctx.set(dut.inval.valid, 0)
            memory.clear_faults()
            for addr, kind in job.faults:
                memory.inject_fault(addr, 8, kind)
            memory.log.clear()
            ref = copy.deepcopy(memory)
            want, want_accesses, why = judge(ref, job, caps)
            cycles, got = await walk_once(ctx, dut, rng, {
                "iova": job.iova, "access": layouts.Access(int(job.access)), "priv": job.priv,
                "context": job.context}, res_ready, f"{job} {rerun}")
            accesses = [(rec.op, rec.addr) for rec in memory.log if rec.who == WHO]
            line = f"{job} {rerun}\n  engine: {why}"
            cycles_of.append((cycles, got, accesses))
            if not job.judged:
                continue
            assert got == want, f"{line}\n  expected {want}\n  got      {got}"
            if walk_cache_entries:
                rest = iter(want_accesses)  # a subsequence: only cached G-stage walks skipped
                assert all(any(a == b for b in rest) for a in accesses), (
                    f"{line}\n  accesses {accesses} are not a subsequence of the engine's "
                    f"{want_accesses}")
                assert sum(op != "R" for op, _ in accesses) == sum(
                    op != "R" for op, _ in want_accesses), f"{line}: CAS differ"
            else:
                assert accesses == want_accesses, (
                    f"{line}\n  expected accesses {want_accesses}\n  got accesses      "
                    f"{accesses}")
            for _, addr in want_accesses:
                assert memory.peek64(addr) == ref.peek64(addr), (
                    f"{line}: PTE @ {addr:#x} is {memory.peek64(addr):#x}, engine left "
                    f"{ref.peek64(addr):#x}")
        memory.clear_faults()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(responder(dut, memory, rng, latency, mem_ready), background=True)
    sim.add_testbench(driver)
    sim.run()
    return cycles_of


def simple_guest(gs_scheme=arch.SV39X4_SCHEME, fs_scheme=arch.SV39, *, iova=0x1234_5000,
                 gpa=DATA_GPA + 0x7000, spa=0x9_8765_4000, fs_perms=None, gs_perms=None,
                 table_perms=None):
    """One mapping iova → gpa (first stage, unless ``fs_scheme`` is None) → spa."""
    memory = Memory()
    guest = Guest(memory, gs_scheme, fs_scheme)
    if fs_scheme:
        guest.fs.map(iova, gpa, KIB4, **(fs_perms or {}))
        guest.map_tables(**(table_perms or {}))
    guest.gs.map(gpa & ~(KIB4 - 1), spa, KIB4, **(gs_perms or {}))
    return memory, guest


# ------------------------------------------------------------- directed walks
@pytest.mark.parametrize("gs_scheme", GS_SCHEMES, ids=lambda s: s.name)
@pytest.mark.parametrize("fs_scheme", [None, arch.SV39, arch.SV48],
                         ids=lambda s: s.name if s else "fs_bare")
def test_translates(gs_scheme, fs_scheme):
    memory, guest = simple_guest(gs_scheme, fs_scheme)
    iova = 0x1234_5ABC if fs_scheme else DATA_GPA + 0x7ABC
    run_walks(memory, [Job(iova, a, guest.context()) for a in (Access.READ, Access.WRITE)])


@pytest.mark.parametrize("access", list(Access), ids=lambda a: a.name)
@pytest.mark.parametrize("broken", ["no_r", "no_w", "no_x", "no_u", "no_a", "no_d",
                                    "invalid", "reserved"])
def test_final_gpa_guest_page_faults(access, broken):
    """Explicit G-stage faults: 20/21/23 by the original access, iotval2 = GPA (bits 1:0 0)."""
    perms = {"r": True, "w": True, "x": True, "u": True, "a": True, "d": True}
    if broken.startswith("no_"):
        perms[broken[3:]] = False
        if broken == "no_r":
            perms["w"] = False
    memory, guest = simple_guest(gs_perms=perms)
    if broken in ("invalid", "reserved"):
        entry = guest.gs.lookup(DATA_GPA + 0x7000)
        addr = guest.gs.walk_path(DATA_GPA + 0x7000)[-1][0]
        memory.poke64(addr, 0 if broken == "invalid" else memory.peek64(addr) | (1 << 55))
        assert entry is not None
    run_walks(memory, [Job(0x1234_5ABF, access, guest.context())])


@pytest.mark.parametrize("access", list(Access), ids=lambda a: a.name)
@pytest.mark.parametrize("scheme", GS_SCHEMES, ids=lambda s: s.name)
def test_gpa_wider_than_the_scheme_faults_before_any_read(scheme, access):
    memory, guest = simple_guest(scheme, None)
    for gpa in (1 << scheme.va_bits, (1 << 63) | 0x1000, (1 << scheme.va_bits) - 0x1000):
        run_walks(memory, [Job(gpa | 0x7, access, guest.context())])


@pytest.mark.parametrize("access", list(Access), ids=lambda a: a.name)
@pytest.mark.parametrize("broken", ["no_r", "no_u", "invalid", "no_a"])
def test_implicit_read_of_a_first_stage_pte_faults(access, broken):
    """A first-stage table page the G-stage refuses: iotval2 bit 0 = 1 (implicit)."""
    perms = {"no_r": {"r": False, "w": False, "x": True}, "no_u": {"u": False},
             "no_a": {"a": False}, "invalid": {}}[broken]
    memory, guest = simple_guest(table_perms=perms)
    if broken == "invalid":
        addr = guest.gs.walk_path(guest.fs.tables[-1])[-1][0]
        memory.poke64(addr, 0)
    run_walks(memory, [Job(0x1234_5ABF, access, guest.context())])


@pytest.mark.parametrize("gade", [0, 1])
@pytest.mark.parametrize("table_w", [True, False])
def test_first_stage_ad_update_is_an_implicit_write(gade, table_w):
    """SADE=1, leaf A=0: the CAS address is translated for a write (iotval2 bits 1:0 = 11
    when the G-stage page is not writable; GADE sets the G-stage PTE's D)."""
    memory, guest = simple_guest(fs_perms={"a": False, "d": False},
                                 table_perms={"w": table_w, "d": False})
    run_walks(memory, [Job(0x1234_5ABF, a, guest.context(gade=gade, sade=1))
                       for a in (Access.READ, Access.WRITE)])


@pytest.mark.parametrize("gade", [0, 1])
def test_g_stage_ad_update(gade):
    memory, guest = simple_guest(gs_perms={"a": False, "d": False})
    run_walks(memory, [Job(0x1234_5ABF, a, guest.context(gade=gade))
                       for a in (Access.READ, Access.WRITE, Access.WRITE)])


@pytest.mark.parametrize("kind", list(FaultKind), ids=lambda k: k.value)
@pytest.mark.parametrize("where", ["gs_of_table", "fs_table", "gs_final"])
def test_memory_errors(kind, where):
    memory, guest = simple_guest()
    if where == "gs_of_table":
        addr = guest.gs.walk_path(guest.fs.root)[0][0]
    elif where == "fs_table":
        addr = guest.fs.walk_path(0x1234_5000)[1][0]
    else:
        addr = guest.gs.walk_path(DATA_GPA + 0x7000)[-1][0]
    run_walks(memory, [Job(0x1234_5ABF, Access.WRITE, guest.context(), faults=[(addr, kind)])])


def test_superpages_take_the_smaller_size():
    memory = Memory()
    guest = Guest(memory, arch.SV48X4_SCHEME, arch.SV39)
    guest.fs.map(0x4000_0000, DATA_GPA, GIB1)  # 1 GiB first-stage page
    guest.fs.map(0x8000_0000, DATA_GPA + GIB1, KIB4, pbmt=1)
    guest.map_tables()
    guest.gs.map(DATA_GPA, 0x40_0000_0000, MIB2, pbmt=2)  # only 2 MiB in the G-stage
    guest.gs.map(DATA_GPA + GIB1, 0x40_4000_0000, GIB1, pbmt=2)
    run_walks(memory, [Job(0x4000_1234, Access.READ, guest.context()),
                       Job(0x8000_0FF8, Access.READ, guest.context())])


# ------------------------------------------------------------- random nested
def random_guest(rng: random.Random):
    memory = Memory()
    gs_scheme = rng.choice(GS_SCHEMES)
    fs_scheme = rng.choice(FS_SCHEMES)
    guest = Guest(memory, gs_scheme, fs_scheme)
    mapped = []
    for _ in range(16):
        size = rng.choice([KIB4, KIB4, KIB64, MIB2, GIB1])
        va = rng.randrange(0, 1 << (fs_scheme.va_bits - 1)) & ~(size - 1)
        gpa = DATA_GPA + (rng.randrange(0, 1 << 34) & ~(size - 1))
        if rng.random() < 0.1 and gs_scheme.va_bits < 56:  # too wide for the G-stage
            gpa = rng.randrange(1 << gs_scheme.va_bits, 1 << 56) & ~(size - 1)
        perms = {"r": rng.random() < 0.85, "x": rng.random() < 0.4, "u": True,
                 "a": rng.random() < 0.7, "d": rng.random() < 0.6, "pbmt": rng.randrange(3)}
        perms["w"] = perms["r"] and rng.random() < 0.6
        try:
            guest.fs.map(va, gpa, size, **perms)
        except ValueError:
            continue
        mapped.append((va, gpa, size))
        gsize = rng.choice([KIB4, MIB2, GIB1])
        gbase = gpa & ~(gsize - 1)
        if gbase >> gs_scheme.va_bits or rng.random() < 0.1:
            continue  # not in the G-stage: a guest-page fault
        gperms = {"r": rng.random() < 0.9, "x": rng.random() < 0.5, "u": rng.random() < 0.9,
                  "a": rng.random() < 0.7, "d": rng.random() < 0.6, "pbmt": rng.randrange(3)}
        gperms["w"] = gperms["r"] and rng.random() < 0.7
        try:
            guest.gs.map(gbase, rng.randrange(0, 1 << 50) & ~(gsize - 1), gsize, **gperms)
        except ValueError:
            pass
    for table in guest.fs.tables:
        if rng.random() < 0.95:
            guest.gs.map(table, gpa_to_spa(table), KIB4, r=True, w=rng.random() < 0.8,
                         u=rng.random() < 0.97, a=rng.random() < 0.9, d=rng.random() < 0.6)
    return memory, guest, mapped


def test_random_nested_walks():
    seed = int(os.environ.get("GSTAGE_SEED", random.randrange(1 << 32)))
    print(f"test_random_nested_walks seed={seed}")
    rng = random.Random(seed)
    seen = []
    for round_ in range(6):
        memory, guest, mapped = random_guest(rng)
        # With a walk cache, a cached G-stage translation may legally hide a memory error
        # the engine's walk meets: no errors injected then.
        walk_cache = rng.choice([0, 0, 2, 4])
        jobs = []
        for _ in range(30):
            context = guest.context(gade=int(rng.random() < 0.5), sade=int(rng.random() < 0.5))
            if mapped and rng.random() < 0.85:
                va, _, size = rng.choice(mapped)
                iova = va + rng.randrange(size)
            else:
                iova = rng.getrandbits(40)
            if rng.random() < 0.15:  # G-stage only: the IOVA is the GPA
                context = dict(context, fs_mode=0, fs_ppn=0)
                iova = (rng.choice(mapped)[1] + rng.randrange(KIB4)) if mapped else iova
            faults = []
            if rng.random() < 0.1 and not walk_cache:
                path = guest.gs.walk_path(guest.fs.root)
                if path:
                    faults = [(rng.choice(path)[0], rng.choice(list(FaultKind)))]
            jobs.append(Job(iova, rng.choice(list(Access)), context, faults=faults))
        seen += [got for _, got, _ in run_walks(
            memory, jobs, seed=seed + round_, latency=(1, 4),
            mem_ready=rng.choice([1.0, 0.6]), res_ready=rng.choice([1.0, 0.6]),
            rerun=f"(rerun: GSTAGE_SEED={seed}, round {round_})",
            walk_cache_entries=walk_cache)]
    # The mix reached what it is for: translations, explicit and implicit guest-page
    # faults, first-stage faults.
    kinds = {"ok": sum(not w.fault for w in seen),
             "explicit gpf": sum(w.cause in GUEST_CAUSES and not w.iotval2 & 1 for w in seen),
             "implicit gpf": sum(w.cause in GUEST_CAUSES and w.iotval2 & 1 for w in seen),
             "page fault": sum(w.cause in (12, 13, 15) for w in seen)}
    print(kinds)
    assert all(kinds.values()), f"seed {seed}: {kinds}"


def test_walk_cycles_reported():
    """Nested Sv39/Sv39x4 walk with memory latency 10: print the cycles (for the README)."""
    memory, guest = simple_guest()
    cycles = run_walks(memory, [Job(0x1234_5ABC, Access.READ, guest.context())],
                       latency=(10, 10))
    # 3 first-stage levels, each behind a 3-level G-stage walk, then the final
    # 3-level G-stage walk: 15 memory reads.
    assert 15 * 10 < cycles[0][0] < 15 * 10 + 60, cycles
    print(f"nested Sv39/Sv39x4 walk, memory latency 10: {cycles[0][0]} cycles")


# --------------------------------------------------------------------------- #
# Context fetch: extended device contexts, PDT walks through the G-stage
# --------------------------------------------------------------------------- #
MSI_CAPS = GS_CAPS | arch.Cap.MSI_FLAT.mask  # whatever rtl_capabilities() advertises
WHO_DDT, WHO_PDT = "iommu.ddt", "iommu.pdt"


@dataclass
class ContextCase:
    name: str
    device_id: int
    access: Access = Access.READ
    pv: int = 0
    process_id: int = 0
    priv: int = 0
    faults: list = field(default_factory=list)  # (SPA, FaultKind) injected for this case


def context_judge(memory: Memory, ddtp: int, caps: int, case: ContextCase, iova: int):
    """The engine's verdict for ``case`` (fresh engine, no caches): (cause or None,
    iotval2, the DDT/PDT/G-stage accesses up to the end of the context stage)."""
    engine = TranslationEngine(memory, EngineConfig(
        capabilities=caps, ddt_cache_entries=0, pdt_cache_entries=0, iotlb_entries=0))
    start = len(memory.log)
    outcome = engine.translate(Request(
        device_id=case.device_id, iova=iova, access=case.access, process_id=case.process_id,
        pv=bool(case.pv), priv=Priv.SUPERVISOR if case.priv else Priv.USER), ddtp, 0)
    # The engine loads a whole DC / PC at once; the hardware one dword at a time.
    log = [(rec.who, rec.op, rec.addr + offset) for rec in memory.log[start:]
           if rec.who in (WHO_DDT, WHO_PDT, WHO_GS) for offset in range(0, rec.size, 8)]
    response = outcome.response
    if response.ok:
        # The context stage ends with the last DDT/PDT read; what follows is step 19.
        last = max((i for i, (who, _, _) in enumerate(log) if who != WHO_GS), default=-1)
        return None, 0, [(op, addr) for _, op, addr in log[:last + 1]], outcome.reason
    record = outcome.record
    return (int(response.cause), record.iotval2 if record else 0,
            [(op, addr) for _, op, addr in log], outcome.reason)


def run_contexts(memory: Memory, ddtp: int, cases, *, caps, iova, check_context=None,
                 seed=0, rerun=""):
    """Each case through a ContextFetch (caches flushed before each), compared with the
    engine: cause, iotval2, memory accesses; ``check_context(case, context)`` for the
    context of a success."""
    rng = random.Random(seed)
    dut = ContextFetch(ID_BITS, MEM_ID, 4, 4, caps)
    results = []

    async def driver(ctx):
        ctx.set(dut.ddtp, ddtp)
        for case in cases:
            ctx.set(dut.inval.valid, 1)  # IODIR.INVAL_DDT DV=0: start from empty caches
            ctx.set(dut.inval.payload, {"kind": layouts.InvalKind.IODIR_INVAL_DDT, "dv": 0})
            await ctx.tick()
            ctx.set(dut.inval.valid, 0)
            memory.clear_faults()
            for addr, kind in case.faults:
                memory.inject_fault(addr, 8, kind)
            memory.log.clear()
            ref = copy.deepcopy(memory)
            cause, iotval2, want_accesses, why = context_judge(ref, ddtp, caps, case, iova)
            ctx.set(dut.req.valid, 1)
            ctx.set(dut.req.payload, {"device_id": case.device_id, "process_id": case.process_id,
                                      "pv": case.pv, "priv": case.priv,
                                      "addr_type": layouts.AddrType.UNTRANSLATED,
                                      "access": layouts.Access(int(case.access))})
            await ctx.tick().until(dut.req.ready)
            ctx.set(dut.req.valid, 0)
            ctx.set(dut.res.ready, 1)
            for _ in range(2000):
                _, _, valid, p = await ctx.tick().sample(dut.res.valid, dut.res.payload)
                if valid:
                    break
            else:
                raise AssertionError(f"no result for {case} {rerun}")
            ctx.set(dut.res.ready, 0)
            accesses = [(rec.op, rec.addr) for rec in memory.log if rec.who == WHO]
            line = f"{case} {rerun}\n  engine: {why}"
            got = (int(p.cause), p.iotval2) if p.fault else (None, 0)
            assert got == (cause, iotval2), (
                f"{line}\n  expected {(cause, iotval2)}, got {got}\n  engine accesses "
                f"{[hex(a) for _, a in want_accesses]}\n  rtl accesses {[hex(a) for _, a in accesses]}")
            assert accesses == want_accesses, (
                f"{line}\n  expected accesses {want_accesses}\n  got accesses      {accesses}")
            for _, addr in accesses:
                assert memory.peek64(addr) == ref.peek64(addr), f"{line}: {addr:#x} differs"
            if cause is None and check_context:
                check_context(case, p.context)
            results.append(got)
        memory.clear_faults()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(responder(dut, memory, rng), background=True)
    sim.add_testbench(driver)
    sim.run()
    return results


@pytest.mark.parametrize("caps", [MSI_CAPS, MSI_CAPS & ~arch.Cap.MSI_FLAT.mask],
                         ids=["extended_dc", "base_dc"])
@pytest.mark.parametrize("pd_mode", [PdtpMode.PD8, PdtpMode.PD17, PdtpMode.PD20],
                         ids=lambda p: p.name)
def test_pdt_walk_through_the_g_stage(pd_mode, caps):
    """PDT entries at GPAs: each one's G-stage page mapped, unmapped, not readable, not
    User, A=0 (GADE 0/1), or with a memory error; every cause and iotval2 is the engine's.
    Both DC formats (MSI_FLAT selects the 64-byte one, §2.3): the DDT reads differ, the
    PDT walk must not."""
    seed = int(os.environ.get("GSTAGE_SEED", random.randrange(1 << 32)))
    print(f"test_pdt_walk_through_the_g_stage seed={seed}")
    rng = random.Random(seed)
    memory = Memory()
    guest = Guest(memory, rng.choice(GS_SCHEMES), None)
    guest_fs = PageTable(memory, guest.host, arch.SV39, to_phys=gpa_to_spa,
                         alloc_table=guest._guest_table)
    # The PCs' first stage (when not Bare) maps the request's IOVA to itself, and its
    # tables are mapped in the G-stage: every fault is the context stage's.
    guest_fs.map(DATA_GPA, DATA_GPA, KIB4, r=True, w=True, x=True, a=True, d=True)
    for table in guest_fs.tables:
        guest.gs.map(table, gpa_to_spa(table), KIB4, r=True, w=True, u=True)
        guest.gs_mapped.add(table)
    ddt = DeviceDirectory(memory, guest.host, DdtpMode.LVL2,
                          extended=bool(arch.Cap.MSI_FLAT.get(caps)))
    guest.gs.map(DATA_GPA, 0x7_0000_0000, KIB4, r=True, w=True, x=True, u=True)
    cases = []
    for index in range(8):
        device_id = 0x100 + index
        pdt = ProcessDirectory(memory, guest.host, pd_mode, to_phys=gpa_to_spa,
                               alloc_table=guest._guest_table)
        pids = [rng.randrange(1 << {1: 8, 2: 17, 3: 20}[pd_mode]) for _ in range(3)]
        for pid in pids:
            fsc = Fsc.MODE.put(AtpMode.SV39) | Fsc.PPN.put(guest_fs.root >> 12) if (
                rng.random() < 0.5) else 0
            pdt.install(pid, ProcessContext(ta=PcTa.V.put(1) | PcTa.ENS.put(1), fsc=fsc))
        # Map the PDT's pages in the G-stage, some of them badly.
        for page in sorted(_pdt_tables(pdt, pids)):
            if page in guest.gs_mapped:
                continue
            # Device 0x100's PDT pages stay unmapped, device 0x101's are not User: guest-
            # page faults on the implicit read for sure; the others at random.
            roll = {0: 0.0, 1: 0.1}.get(index, rng.random())
            if roll < 0.08:
                continue  # unmapped: guest-page fault on the implicit read
            perms = {"r": True, "w": rng.random() < 0.5, "u": roll > 0.16,
                     "a": rng.random() < 0.8, "d": False}
            if 0.16 < roll < 0.22:
                perms.update(r=False, w=False, x=True)
            guest.gs.map(page, gpa_to_spa(page), KIB4, **perms)
            guest.gs_mapped.add(page)
        gade = int(rng.random() < 0.5)
        iohgatp = guest.gs.atp() | Iohgatp.GSCID.put(GSCID)
        ddt.install(device_id, DeviceContext(
            tc=Tc.V.put(1) | Tc.PDTV.put(1) | Tc.GADE.put(gade), iohgatp=iohgatp,
            fsc=pdt.pdtp()))
        for pid in pids + [rng.randrange(1 << 8)]:
            cases.append(ContextCase(f"dev {device_id:#x} pid {pid:#x}", device_id,
                                     rng.choice(list(Access)), pv=1, process_id=pid))
    # Memory errors on the G-stage PTEs that map some PDT pages (265 / 269 expected).
    for case in rng.sample([c for c in cases if c.device_id > 0x101], 6):
        path = guest.gs.walk_path(ddt.read(case.device_id).fsc << 12 & ((1 << 56) - 1))
        if path:
            case.faults = [(rng.choice(path)[0], rng.choice(list(FaultKind)))]
    results = run_contexts(memory, ddt.ddtp(), cases, caps=caps, iova=DATA_GPA,
                           seed=seed, rerun=f"(rerun: GSTAGE_SEED={seed})")
    assert any(cause is None for cause, _ in results), results
    assert any(cause in GUEST_CAUSES and iotval2 & 1 for cause, iotval2 in results), results


def _pdt_tables(pdt: ProcessDirectory, pids) -> set[int]:
    """GPAs of the PDT's non-leaf and leaf table pages on the way to ``pids``."""
    pages = set()
    for pid in pids:
        for level in range(pdt.levels):
            table = pdt._table(pid, level, False)
            if table is not None:
                pages.add(table & ~0xFFF)
    return pages


def _msi_dc(rng: random.Random, gs: PageTable, legal: bool = False) -> tuple[str, DeviceContext]:
    """A random extended DC around the §3.6/§3.7 MSI rules: mostly legal, sometimes one
    field off (reserved bits, modes, mask/pattern wider than the G-stage's GPA);
    ``legal``: a G-stage, flat MSI translation and nothing off."""
    gs_mode = gs.scheme.mode if legal else rng.choice([0, gs.scheme.mode, gs.scheme.mode, 11])
    iohgatp = (Iohgatp.MODE.put(gs_mode) | Iohgatp.PPN.put(gs.root >> 12)
               | Iohgatp.GSCID.put(rng.getrandbits(16))) if gs_mode else 0
    mgpaw = {8: 41, 9: 50, 10: 59}.get(gs_mode, 56)
    width = min(52, mgpaw - 12)
    mask = rng.getrandbits(width) & rng.getrandbits(width)
    pattern = rng.getrandbits(width)
    msi_mode = (MsiptpMode.FLAT if legal
                else rng.choice([MsiptpMode.OFF, MsiptpMode.FLAT, MsiptpMode.FLAT, 2, 15]))
    msiptp = Msiptp.MODE.put(msi_mode) | Msiptp.PPN.put(rng.getrandbits(30)) if msi_mode else 0
    dc = DeviceContext(tc=Tc.V.put(1), iohgatp=iohgatp, msiptp=msiptp,
                       msi_addr_mask=mask, msi_addr_pattern=pattern)
    what = "legal" if legal else rng.choice(["legal"] * 4 + [
        "msiptp_reserved", "mask_wide", "pattern_wide", "dword7", "mask_bit63",
        "gs_unaligned"])
    if what == "msiptp_reserved":
        dc.msiptp |= 1 << rng.randrange(44, 60)
    elif what == "mask_wide":
        dc.msi_addr_mask |= 1 << rng.randrange(width, 64)
    elif what == "pattern_wide":
        dc.msi_addr_pattern |= 1 << rng.randrange(width, 64)
    elif what == "dword7":
        dc.reserved = 1 << rng.randrange(64)
    elif what == "mask_bit63":
        dc.msi_addr_mask |= 1 << 63
    elif what == "gs_unaligned" and gs_mode:
        dc.iohgatp |= 1
    return f"{what} gs_mode={gs_mode} msi_mode={msi_mode}", dc


@pytest.mark.parametrize("ddt_mode", [DdtpMode.LVL1, DdtpMode.LVL2, DdtpMode.LVL3],
                         ids=lambda m: m.name)
def test_extended_device_context(ddt_mode):
    """MSI_FLAT: 64-byte DCs, the extended DDI split (6/9/9 bits), device_id widths, and
    the msiptp / msi_addr_* / dword 7 / iohgatp checks: 259 exactly when the engine says
    so, else the context carries iohgatp's and the MSI fields."""
    seed = int(os.environ.get("GSTAGE_SEED", random.randrange(1 << 32)))
    print(f"test_extended_device_context seed={seed}")
    rng = random.Random(seed)
    memory = Memory()
    host = FrameAllocator(memory, base=HOST_BASE, size=1 << 28)
    gs = PageTable(memory, host, rng.choice(GS_SCHEMES))
    gs.map(DATA_GPA, 0x7_0000_0000, KIB4, r=True, w=True, x=True, u=True)
    ddt = DeviceDirectory(memory, host, ddt_mode, extended=True)
    width = {DdtpMode.LVL1: 6, DdtpMode.LVL2: 15, DdtpMode.LVL3: 24}[ddt_mode]
    cases, dcs = [], {}
    for _ in range(24):
        device_id = rng.getrandbits(width)
        if device_id in dcs:
            continue
        # The first DC is legal, the second has a reserved msiptp mode, so that both
        # outcomes are seen whatever the seed.
        what, dc = _msi_dc(rng, gs, legal=not dcs)
        if len(dcs) == 1:
            what, dc.msiptp = "msiptp mode 2", Msiptp.MODE.put(2)
        # The MSI pattern must not claim the request's GPA: only the DC stage is judged.
        if (DATA_GPA >> 12) & ~dc.msi_addr_mask == dc.msi_addr_pattern & ~dc.msi_addr_mask:
            dc.msi_addr_pattern ^= 1 << 40 & ~dc.msi_addr_mask or 0
        ddt.install(device_id, dc)
        dcs[device_id] = dc
        cases.append(ContextCase(f"{what} dev {device_id:#x}", device_id))
    # device_ids one bit too wide for the extended split (step 5: 260).
    if width < 24:
        cases.append(ContextCase("too wide", 1 << width))

    def check_context(case, c):
        dc = dcs[case.device_id]
        gs_mode = Iohgatp.MODE.get(dc.iohgatp)
        want = {"gs_mode": gs_mode,
                "gs_ppn": Iohgatp.PPN.get(dc.iohgatp) if gs_mode else 0,
                "gscid": Iohgatp.GSCID.get(dc.iohgatp) if gs_mode else 0,
                "msi_flat": int(Msiptp.MODE.get(dc.msiptp) == MsiptpMode.FLAT),
                "msiptp_ppn": Msiptp.PPN.get(dc.msiptp),
                "msi_mask": dc.msi_addr_mask, "msi_pattern": dc.msi_addr_pattern}
        got = {name: int(getattr(c, name)) for name in want}
        assert got == want, f"{case}: context {got}, expected {want}"

    results = run_contexts(memory, ddt.ddtp(), cases, caps=MSI_CAPS, iova=DATA_GPA,
                           check_context=check_context, seed=seed,
                           rerun=f"(rerun: GSTAGE_SEED={seed})")
    causes = {cause for cause, _ in results}
    assert Cause.DDT_ENTRY_MISCONFIGURED in causes and None in causes, (seed, results)


# --------------------------------------------------------------------------- #
# The walk cache
# --------------------------------------------------------------------------- #
def gvma(gv=1, gscid=GSCID) -> dict:
    return {"kind": layouts.InvalKind.IOTINVAL_GVMA, "gv": gv, "gscid": gscid}


def test_walk_cache_skips_the_g_stage_walks_of_table_pages():
    """The second nested walk of a page reuses the G-stage translations of the guest's
    three table pages: 3 first-stage + 3 final G-stage reads instead of 15."""
    memory, guest = simple_guest()
    job = Job(0x1234_5ABC, Access.READ, guest.context())
    walks = run_walks(memory, [job, Job(0x1234_5ABC, Access.READ, guest.context())],
                      walk_cache_entries=4)
    assert [len(accesses) for _, _, accesses in walks] == [15, 6], walks


@pytest.mark.parametrize("inval, refetched", [
    (gvma(gv=1), True), (gvma(gv=0), True), (gvma(gv=1, gscid=GSCID ^ 1), False),
    ({"kind": layouts.InvalKind.IOTINVAL_VMA, "gv": 1, "gscid": GSCID}, False)])
def test_walk_cache_invalidation(inval, refetched):
    """After software revokes the G-stage page of the guest's root table, IOTINVAL.GVMA
    (GV=0, or GV=1 with the GSCID) makes the next walk see it (the engine's guest-page
    fault); a GVMA of another GSCID or an IOTINVAL.VMA leaves the cached translation in
    use (legal until the right invalidation, §10.3) and the walk still succeeds."""
    memory, guest = simple_guest()
    root_gs_pte = guest.gs.walk_path(guest.fs.root)[-1][0]

    def revoke(mem):
        mem.poke64(root_gs_pte, 0)

    jobs = [Job(0x1234_5ABC, Access.READ, guest.context()),
            Job(0x1234_5ABC, Access.READ, guest.context(), before=revoke, inval=inval,
                judged=refetched)]
    walks = run_walks(memory, jobs, walk_cache_entries=4)
    second = walks[1][1]
    if refetched:
        assert second.fault and second.cause in GUEST_CAUSES and second.iotval2 & 1, second
    else:
        assert not second.fault, f"the cached translation was dropped: {second}"


@pytest.mark.parametrize("entries", [0, 4])
def test_nested_walk_cycles(entries):
    """Nested Sv39/Sv39x4, memory latency 10: a cold walk, then the same walk with the
    IOTLB's job left to the walker (walk cache warm when it has entries)."""
    memory, guest = simple_guest()
    jobs = [Job(0x1234_5ABC, Access.READ, guest.context()) for _ in range(2)]
    walks = run_walks(memory, jobs, latency=(10, 10), walk_cache_entries=entries)
    cold, warm = walks[0][0], walks[1][0]
    print(f"nested Sv39/Sv39x4, latency 10, walk cache {entries}: cold {cold}, "
          f"warm {warm} cycles")
    if entries:
        assert warm < cold - 8 * 10, (cold, warm)
    else:
        assert warm == cold
