"""MSI address translation in the RTL (rtl/msi.py and its hook in rtl/walker.py),
judged by the reference model.

A ``PageTableWalker`` built with MSI_FLAT translates requests of a guest device whose
context has ``msiptp`` = Flat: a final GPA (the IOVA when the first stage is Bare)
that matches ``msi_addr_pattern`` under ``msi_addr_mask`` is translated through the
flat MSI page table (§9), any other through the G-stage. Each walk is also asked of
``models.translate.TranslationEngine`` on a copy of memory with the same extended
device context installed: the walker must give the engine's cause (from the engine's
response and fault record), or its SPA page, size, permissions and PBMT, and make the
engine's memory accesses (the engine reads a 16-byte MSI PTE at once, the walker
dword by dword). No expected address is written by hand.

Rerun a random failure with MSI_SEED=<seed printed in the failure>.
"""

from __future__ import annotations

import copy
import os
import random
import warnings
from dataclasses import dataclass, field

import pytest
from amaranth.back import verilog
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator
from walk_env import MEM_ID, WHO, Walk, responder, walk_once

from models import arch
from models.arch import Access, Cause, DdtpMode, DeviceContext, Fsc, Iohgatp, MsiPte, Pte, Tc
from models.memory import FaultKind, FrameAllocator, Memory
from models.pagetable import DeviceDirectory, MsiPageTable, PageTable
from models.transaction import Request
from models.translate import WHO_FS, WHO_GS, WHO_MSI_PT, EngineConfig, TranslationEngine
from rtl import layouts, params
from rtl.msi import MsiTranslator
from rtl.walker import PageTableWalker

ID_BITS = 2
# Flat MSI translation without MRIF mode, and with it (capabilities.MSI_MRIF).
MSI_CAPS = ((params.rtl_capabilities() | arch.Cap.SV39X4.mask | arch.Cap.SV48X4.mask
             | arch.Cap.SV57X4.mask | arch.Cap.MSI_FLAT.mask) & ~arch.Cap.MSI_MRIF.mask)
MRIF_CAPS = MSI_CAPS | arch.Cap.MSI_MRIF.mask
GS_SCHEMES = [arch.SV39X4_SCHEME, arch.SV48X4_SCHEME, arch.SV57X4_SCHEME]
KIB4, MIB2, GIB1 = 1 << 12, 1 << 21, 1 << 30

HOST_BASE = 0x8000_0000  # G-stage tables and MSI page tables (SPAs)
GUEST_SPA = 0x1_0000_0000  # the guest's first-stage tables: GPA GUEST_GPA.. here
GUEST_GPA = 0x4000_0000
DATA_GPA = 0x2_0000_0000
IMSIC_GPA = 0x2_8000_0000  # the guest's interrupt files (a 1 GiB aligned region)
JUDGE_TABLES = 0x00C0_0000_0000
JUDGE_DEVICE_ID = 0x2A
GSCID = 0x55
MSI_CAUSES = {Cause.MSI_PTE_LOAD_ACCESS_FAULT, Cause.MSI_PTE_NOT_VALID,
              Cause.MSI_PTE_MISCONFIGURED, Cause.MSI_PT_DATA_CORRUPTION}


def gpa_to_spa(gpa: int) -> int:
    return gpa - GUEST_GPA + GUEST_SPA


class MsiGuest:
    """A VM: a G-stage table, optionally a first-stage table at GPAs, and a flat MSI page
    table for ``mask`` (interrupt files at GPA pages ``pattern`` with any ``mask`` bits)."""

    def __init__(self, memory: Memory, *, mask: int, pattern: int = IMSIC_GPA >> 12,
                 gs_scheme=arch.SV39X4_SCHEME, fs_scheme=arch.SV39):
        self.memory, self.mask, self.pattern = memory, mask, pattern & ~mask
        self.host = FrameAllocator(memory, base=HOST_BASE, size=1 << 30)
        self.guest = FrameAllocator(memory, base=GUEST_SPA, size=1 << 28)
        self.gs = PageTable(memory, self.host, gs_scheme)
        self.fs = PageTable(memory, self.host, fs_scheme, to_phys=gpa_to_spa,
                            alloc_table=lambda size, align: self.guest.alloc(size, align)
                            - GUEST_SPA + GUEST_GPA) if fs_scheme else None
        self.msi = MsiPageTable(memory, self.host, 1 << mask.bit_count())

    def file_gpa(self, index: int) -> int:
        """The GPA of interrupt file ``index``: its bits spread over the mask's ones."""
        gpn, bit = self.pattern, 0
        for i in range(layouts.MSI_ADDR_BITS):
            if self.mask >> i & 1:
                gpn |= (index >> bit & 1) << i
                bit += 1
        return gpn << 12

    def map_tables(self) -> None:
        for table in self.fs.tables if self.fs else []:
            if self.gs.lookup(table) is None:
                self.gs.map(table, gpa_to_spa(table), KIB4, r=True, w=True, u=True)

    def context(self, *, fs: bool = True, gade=0, sade=0, msi=True) -> dict:
        f = self.fs if fs else None
        return {"fs_mode": f.scheme.mode if f else 0, "fs_ppn": f.root >> 12 if f else 0,
                "gs_mode": self.gs.scheme.mode, "gs_ppn": self.gs.root >> 12, "gscid": GSCID,
                "sade": sade, "gade": gade, "ens": 1, "msi_flat": int(msi),
                "msiptp_ppn": self.msi.base >> 12 if msi else 0,
                "msi_mask": self.mask if msi else 0, "msi_pattern": self.pattern if msi else 0}


@dataclass
class Job:
    iova: int
    access: Access
    context: dict
    faults: list = field(default_factory=list)  # (SPA, FaultKind) injected for this walk

    def __str__(self):
        c = self.context
        return (f"iova={self.iova:#x} {self.access.name} fs_mode={c['fs_mode']} "
                f"gs_mode={c['gs_mode']} msi_mask={c['msi_mask']:#x} "
                f"msi_pattern={c['msi_pattern']:#x} "
                f"faults={[(hex(a), k.value) for a, k in self.faults]}")


def judge(memory: Memory, job: Job, caps: int):
    """The engine's answer for ``job`` on ``memory`` (its own copy): (Walk, accesses,
    why, msi). Accesses are 8-byte reads/CAS as the hardware makes them: the engine's
    16-byte MSI PTE load is its two dwords, the second left out when the first one
    itself is refused or poisoned (the walker stops there). ``d`` of a success: D of the
    last first-stage PTE (1 for a Bare first stage) ANDed with that of the last G-stage
    PTE, unless the translation was an MSI one (its PTE stands in for the G-stage)."""
    c = job.context
    alloc = FrameAllocator(memory, base=JUDGE_TABLES, size=1 << 24)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL1, extended=True)
    fsc = Fsc.MODE.put(c["fs_mode"]) | Fsc.PPN.put(c["fs_ppn"]) if c["fs_mode"] else 0
    iohgatp = (Iohgatp.MODE.put(c["gs_mode"]) | Iohgatp.PPN.put(c["gs_ppn"])
               | Iohgatp.GSCID.put(c["gscid"]))
    tc = Tc.V.put(1) | Tc.SADE.put(c["sade"]) | Tc.GADE.put(c["gade"])
    msiptp = (arch.Msiptp.MODE.put(arch.MsiptpMode.FLAT) | arch.Msiptp.PPN.put(c["msiptp_ppn"])
              if c["msi_flat"] else 0)
    ddt.install(JUDGE_DEVICE_ID, DeviceContext(
        tc=tc, iohgatp=iohgatp, fsc=fsc, msiptp=msiptp, msi_addr_mask=c["msi_mask"],
        msi_addr_pattern=c["msi_pattern"]))
    engine = TranslationEngine(memory, EngineConfig(
        capabilities=caps, ddt_cache_entries=0, pdt_cache_entries=0, iotlb_entries=0))
    start = len(memory.log)
    outcome = engine.translate(Request(device_id=JUDGE_DEVICE_ID, iova=job.iova,
                                       access=job.access), ddt.ddtp(), 0)
    records = memory.log[start:]
    accesses = []
    for rec in records:
        if rec.who in (WHO_FS, WHO_GS):
            accesses.append((rec.op, rec.addr))
        elif rec.who == WHO_MSI_PT:
            dword0_error = any(addr < rec.addr + 8 and rec.addr < addr + 8
                               for addr, _ in job.faults)
            accesses += [("R", rec.addr)] + ([] if dword0_error else [("R", rec.addr + 8)])
    response = outcome.response
    msi = any(rec.who == WHO_MSI_PT for rec in records)
    if not response.ok:
        return Walk(1, int(response.cause), outcome.record.iotval2), accesses, outcome.reason, msi
    last = {rec.who: rec.addr for rec in records}
    d_fs = Pte.D.get(memory.peek64(last[WHO_FS])) if WHO_FS in last else 1
    d_gs = 1 if response.msi else Pte.D.get(memory.peek64(last[WHO_GS]))
    mrif = outcome.mrif  # the engine returns it beside the response
    walk = Walk(0, ppn=(response.spa >> 12) & ((1 << layouts.PPN_BITS) - 1),
                size_log2=response.page_size.bit_length() - 1, r=int(response.r),
                w=int(response.w), x=int(response.x), u=int(response.u), g=int(response.g),
                d=d_fs & d_gs, pbmt=response.pbmt,
                mrif_address=mrif.mrif_address if mrif else 0,
                notice_address=mrif.notice_address if mrif else 0,
                notice_data=mrif.notice_data if mrif else 0)
    return walk, accesses, outcome.reason, msi


def run_walks(memory: Memory, jobs, *, caps=MSI_CAPS, seed=0, latency=(1, 3),
              mem_ready=1.0, res_ready=1.0, rerun=""):
    """Run ``jobs`` through one PageTableWalker, each compared with the engine.
    Returns (cycles, Walk, msi) of each."""
    rng = random.Random(seed)
    dut = PageTableWalker(id_bits=ID_BITS, mem_id=MEM_ID, capabilities=caps)
    out = []

    async def driver(ctx):
        for job in jobs:
            memory.clear_faults()
            for addr, kind in job.faults:
                memory.inject_fault(addr, 8, kind)
            memory.log.clear()
            ref = copy.deepcopy(memory)
            want, want_accesses, why, msi = judge(ref, job, caps)
            cycles, got = await walk_once(ctx, dut, rng, {
                "iova": job.iova, "access": layouts.Access(int(job.access)), "priv": 0,
                "context": job.context}, res_ready, f"{job} {rerun}")
            accesses = [(rec.op, rec.addr) for rec in memory.log if rec.who == WHO]
            line = f"{job} {rerun}\n  engine: {why}"
            assert got == want, f"{line}\n  expected {want}\n  got      {got}"
            assert accesses == want_accesses, (
                f"{line}\n  expected accesses {[(o, hex(a)) for o, a in want_accesses]}\n"
                f"  got accesses      {[(o, hex(a)) for o, a in accesses]}")
            for _, addr in want_accesses:
                assert memory.peek64(addr) == ref.peek64(addr), (
                    f"{line}: PTE @ {addr:#x} is {memory.peek64(addr):#x}, engine left "
                    f"{ref.peek64(addr):#x}")
            out.append((cycles, got, msi))
        memory.clear_faults()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(responder(dut, memory, rng, latency, mem_ready), background=True)
    sim.add_testbench(driver)
    sim.run()
    return out


def guest_with_files(mask=0b111, *, fs_scheme=arch.SV39, gs_scheme=arch.SV39X4_SCHEME,
                     files=None):
    """A guest whose interrupt files ``files`` (default: all) are basic-mode MSI PTEs to
    host pages; the first stage (if any) maps IOVA 0x1000_0000 + 4 KiB * i to file i."""
    memory = Memory()
    guest = MsiGuest(memory, mask=mask, gs_scheme=gs_scheme, fs_scheme=fs_scheme)
    files = range(guest.msi.entries) if files is None else files
    for i in files:
        guest.msi.set_basic(i, 0x30_0000 + 7 * i)
        if fs_scheme:
            guest.fs.map(0x1000_0000 + KIB4 * i, guest.file_gpa(i), KIB4, r=True, w=True,
                         x=True, u=True)
    guest.map_tables()
    return memory, guest


# ------------------------------------------------------------- directed walks
@pytest.mark.parametrize("fs", [False, True], ids=["fs_bare", "nested"])
def test_flat_translation(fs):
    """Reads and writes of each interrupt file's page go to the MSI PTE's host page
    (R=W=U=1, X=0, 4 KiB); an execute is an instruction access fault (cause 1)."""
    memory, guest = guest_with_files(0b101, fs_scheme=arch.SV39 if fs else None)
    jobs = []
    for i in range(guest.msi.entries):
        iova = (0x1000_0000 + KIB4 * i if fs else guest.file_gpa(i)) | 0xFFC
        jobs += [Job(iova, a, guest.context()) for a in Access]
    out = run_walks(memory, jobs)
    assert all(msi for _, _, msi in out)
    assert [w.cause for _, w, _ in out if w.fault] == [Cause.INSTRUCTION_ACCESS_FAULT] * 4
    assert {w.size_log2 for _, w, _ in out if not w.fault} == {12}


@pytest.mark.parametrize("problem", ["V=0", "C=1", "M=0", "M=1 (MRIF)", "M=2",
                                     "reserved 9:3", "reserved 62:54"])
@pytest.mark.parametrize("access", [Access.READ, Access.WRITE, Access.EXECUTE],
                         ids=lambda a: a.name)
def test_msi_pte_not_valid_or_misconfigured(problem, access):
    """262 for V=0; 263 for C=1, a reserved mode, MRIF without MSI_MRIF, reserved bits
    (all before the execute check)."""
    memory, guest = guest_with_files(0b11, fs_scheme=None)
    good = MsiPte.V.put(1) | MsiPte.M.put(3) | MsiPte.PPN.put(0x1234)
    dw0 = {"V=0": good & ~1, "C=1": good | MsiPte.C.put(1),
           "M=0": MsiPte.M.set(good, 0), "M=1 (MRIF)": MsiPte.M.set(good, 1),
           "M=2": MsiPte.M.set(good, 2), "reserved 9:3": good | (1 << 5),
           "reserved 62:54": good | (1 << 60)}[problem]
    guest.msi.set_raw(2, dw0, 0xFFFF_FFFF_FFFF_FFFF)
    out = run_walks(memory, [Job(guest.file_gpa(2) | 0x40, access, guest.context())])
    assert out[0][1].cause in (Cause.MSI_PTE_NOT_VALID, Cause.MSI_PTE_MISCONFIGURED)


@pytest.mark.parametrize("fs", [False, True], ids=["fs_bare", "nested"])
def test_mrif_translation(fs):
    """With MSI_MRIF, an MRIF-mode PTE translates the interrupt file's page to its MRIF
    (any 512-byte aligned address, also inside a page) and names the notice MSI
    (NPPN, the 11-bit NID with N10); execute is still cause 1. Without MSI_MRIF the
    same PTE is misconfigured (263)."""
    memory, guest = guest_with_files(0b11, fs_scheme=arch.SV39 if fs else None)
    for i in range(guest.msi.entries):
        guest.msi.set_mrif(i, 0x5_4321_0000 + 0x200 * (3 * i + 1), 0x7_0000 + i,
                           0x400 * (i & 1) + 0x15 + i)  # NID with and without N10
    jobs = []
    for i in range(guest.msi.entries):
        iova = (0x1000_0000 + KIB4 * i if fs else guest.file_gpa(i)) | 0x4
        jobs += [Job(iova, a, guest.context()) for a in Access]
    out = run_walks(memory, jobs, caps=MRIF_CAPS)
    assert [w.cause for _, w, _ in out if w.fault] == [Cause.INSTRUCTION_ACCESS_FAULT] * 4
    mrifs = {w.mrif_address for _, w, _ in out if not w.fault}
    assert len(mrifs) == guest.msi.entries and all(a % 0x1000 for a in mrifs)
    assert {w.notice_data >> 10 for _, w, _ in out if not w.fault} == {0, 1}
    without = run_walks(memory, jobs[:1], caps=MSI_CAPS)
    assert without[0][1].cause == Cause.MSI_PTE_MISCONFIGURED


@pytest.mark.parametrize("dword,bit", [(0, 3), (0, 6), (0, 54), (0, 62), (1, 54), (1, 59),
                                       (1, 61), (1, 63)])
def test_mrif_reserved_bits(dword, bit):
    """An MRIF-mode PTE with a reserved bit set in either dword is misconfigured (263)."""
    memory, guest = guest_with_files(0b1, fs_scheme=None)
    guest.msi.set_mrif(1, 0x8_0000_0200, 0x1234, 0x7FF)
    dws = [memory.peek64(guest.msi.entry_address(1) + 8 * k) for k in range(2)]
    dws[dword] |= 1 << bit
    guest.msi.set_raw(1, *dws)
    out = run_walks(memory, [Job(guest.file_gpa(1), Access.WRITE, guest.context())],
                    caps=MRIF_CAPS)
    assert out[0][1].cause == Cause.MSI_PTE_MISCONFIGURED


@pytest.mark.parametrize("kind", list(FaultKind), ids=lambda k: k.value)
@pytest.mark.parametrize("dword", [0, 1])
def test_msi_pte_load_errors(kind, dword):
    """A refused MSI PTE read is 261, a poisoned one 270, whichever dword it is."""
    memory, guest = guest_with_files(0b11, fs_scheme=arch.SV48)
    addr = guest.msi.entry_address(3) + 8 * dword
    out = run_walks(memory, [Job(0x1000_3008, Access.WRITE, guest.context(),
                                 faults=[(addr, kind)])])
    want = {FaultKind.ACCESS: Cause.MSI_PTE_LOAD_ACCESS_FAULT,
            FaultKind.POISON: Cause.MSI_PT_DATA_CORRUPTION}[kind]
    assert out[0][1].cause == want  # the engine agreed (run_walks) and it is the MSI cause


def test_scattered_mask_picks_the_right_pte():
    """A mask with scattered and high bits (file number = the packed bits): every file's
    GPA reads its own PTE (the accesses are compared with the engine's)."""
    mask = (1 << 0) | (1 << 3) | (1 << 9) | (1 << 17) | (1 << 27)
    memory, guest = guest_with_files(mask, fs_scheme=None)
    jobs = [Job(guest.file_gpa(i) | 0x10, Access.WRITE, guest.context())
            for i in range(guest.msi.entries)]
    out = run_walks(memory, jobs)
    assert len({w.ppn for _, w, _ in out}) == guest.msi.entries


def test_other_addresses_use_the_g_stage():
    """A GPA outside the pattern, and a GPA inside it while msiptp is Off, go to the
    G-stage (here mapped) like any other."""
    memory, guest = guest_with_files(0b1, fs_scheme=None)
    guest.gs.map(DATA_GPA, 0x7_0000_0000, KIB4)
    guest.gs.map(guest.file_gpa(1), 0x7_1000_0000, KIB4)
    out = run_walks(memory, [
        Job(DATA_GPA | 0x8, Access.READ, guest.context()),
        Job(guest.file_gpa(1) | 0x8, Access.READ, guest.context(msi=False)),
        Job(guest.file_gpa(1) | 0x8, Access.READ, guest.context()),
    ])
    assert [msi for _, _, msi in out] == [False, False, True]


@pytest.mark.parametrize("gsize", [MIB2, GIB1], ids=["2MiB", "1GiB"])
@pytest.mark.parametrize("fs", [False, True], ids=["fs_bare", "nested"])
def test_superpages_covering_an_msi_page_shrink(gsize, fs):
    """A G-stage (or first-stage) superpage that holds an interrupt file's page is
    reported at 4 KiB for its other pages; one that does not keeps its size."""
    memory, guest = guest_with_files(0b10, fs_scheme=arch.SV39 if fs else None)
    covering = IMSIC_GPA + 0x5000  # same superpage as the interrupt files
    elsewhere = IMSIC_GPA + GIB1 + 0x5000 if gsize == GIB1 else IMSIC_GPA + MIB2 + 0x5000
    for gpa in (covering, elsewhere):
        guest.gs.map(gpa & ~(gsize - 1), 0x40_0000_0000 + (gpa & ~(gsize - 1)) - IMSIC_GPA,
                     gsize)
    jobs = []
    for n, gpa in enumerate((covering, elsewhere)):
        if fs:
            va = 0x4000_0000 * (n + 1)
            guest.fs.map(va, gpa & ~(gsize - 1), gsize)
            guest.map_tables()
            iova = va + (gpa & (gsize - 1))
        else:
            iova = gpa
        jobs.append(Job(iova | 0x123, Access.READ, guest.context()))
    out = run_walks(memory, jobs)
    assert [w.size_log2 for _, w, _ in out] == [12, gsize.bit_length() - 1]


# ------------------------------------------------------------- random tables
def random_msi_guest(rng: random.Random):
    """A guest with a random mask (a few bits, sometimes scattered or high), random
    MSI PTEs (mostly basic, some broken), a first stage mapping some interrupt files
    and data pages, and G-stage superpages near the interrupt files."""
    memory = Memory()
    gs_scheme = rng.choice(GS_SCHEMES)
    mgpaw_pages = gs_scheme.va_bits - 12  # msi_addr_* bits at or above are reserved
    bits = rng.sample(range(12) if rng.random() < 0.6 else range(mgpaw_pages - 1),
                      rng.randint(0, 4))
    mask = sum(1 << b for b in bits)
    pattern = rng.randrange(0, 1 << (mgpaw_pages - 1))
    guest = MsiGuest(memory, mask=mask, pattern=pattern, gs_scheme=gs_scheme,
                     fs_scheme=rng.choice([arch.SV39, arch.SV48]))
    for i in range(guest.msi.entries):
        roll = rng.random()
        dw0 = MsiPte.V.put(1) | MsiPte.M.put(3) | MsiPte.PPN.put(rng.getrandbits(44))
        if roll < 0.08:
            dw0 &= ~1
        elif roll < 0.12:
            dw0 = MsiPte.M.set(dw0, rng.choice([0, 1, 2]))
        elif roll < 0.16:
            dw0 |= rng.choice([1 << 63, 1 << rng.randrange(3, 10), 1 << rng.randrange(54, 63)])
        elif roll < 0.45:  # MRIF mode (misconfigured without MSI_MRIF)
            guest.msi.set_mrif(i, rng.getrandbits(47) << 9, rng.getrandbits(44),
                               rng.getrandbits(11))
            if rng.random() < 0.1:  # a reserved bit of dword 1
                dw1 = memory.peek64(guest.msi.entry_address(i) + 8)
                guest.msi.set_raw(i, memory.peek64(guest.msi.entry_address(i)),
                                  dw1 | 1 << rng.choice([54, 57, 59, 61, 63]))
            continue
        guest.msi.set_raw(i, dw0, rng.getrandbits(64))
    targets = []  # GPAs the requests aim at
    for i in range(guest.msi.entries):
        targets.append(guest.file_gpa(i))
    for _ in range(6):
        size = rng.choice([KIB4, MIB2, GIB1])
        near = guest.file_gpa(rng.randrange(guest.msi.entries)) + rng.choice(
            [0, size, -size, rng.randrange(-GIB1, GIB1)])
        base = near & ~(size - 1)
        if base < 0 or base >> gs_scheme.va_bits:
            continue
        try:
            guest.gs.map(base, rng.randrange(0, 1 << 50) & ~(size - 1), size,
                         r=True, w=rng.random() < 0.8, x=rng.random() < 0.5)
        except ValueError:
            continue
        targets.append(base + rng.randrange(size))
    mapped = []  # (va, gpa)
    for n, gpa in enumerate(targets):
        size = rng.choice([KIB4, KIB4, MIB2])
        va = 0x1_0000_0000 + n * GIB1 // 4
        try:
            guest.fs.map(va & ~(size - 1), gpa & ~(size - 1), size,
                         r=True, w=rng.random() < 0.8, x=rng.random() < 0.5, u=True,
                         pbmt=rng.randrange(3))
        except ValueError:
            continue
        mapped.append((va & ~(size - 1)) + (gpa & (size - 1)))
    guest.map_tables()
    return memory, guest, targets, mapped


def test_random_msi_tables():
    seed = int(os.environ.get("MSI_SEED", random.randrange(1 << 32)))
    print(f"test_random_msi_tables seed={seed}")
    rng = random.Random(seed)
    seen = []
    for round_ in range(6):
        memory, guest, targets, mapped = random_msi_guest(rng)
        jobs = []
        for _ in range(24):
            if rng.random() < 0.5 or not mapped:
                iova = rng.choice(targets) | rng.randrange(KIB4)
                context = guest.context(fs=False)
            else:
                iova = rng.choice(mapped) | rng.randrange(KIB4)
                context = guest.context(sade=int(rng.random() < 0.5))
            faults = []
            if rng.random() < 0.15 and guest.msi.entries:
                addr = guest.msi.entry_address(rng.randrange(guest.msi.entries))
                faults = [(addr + 8 * rng.randrange(2), rng.choice(list(FaultKind)))]
            jobs.append(Job(iova, rng.choice(list(Access)), context, faults=faults))
        seen += run_walks(memory, jobs, caps=MRIF_CAPS if round_ % 2 else MSI_CAPS,
                          seed=seed + round_, latency=(1, 4),
                          mem_ready=rng.choice([1.0, 0.6]), res_ready=rng.choice([1.0, 0.6]),
                          rerun=f"(rerun: MSI_SEED={seed}, round {round_})")
    kinds = {"msi ok": sum(msi and not w.fault for _, w, msi in seen),
             "msi fault": sum(msi and w.cause in MSI_CAUSES for _, w, msi in seen),
             "not msi": sum(not msi for _, _, msi in seen)}
    print(kinds)
    assert all(kinds.values()), f"seed {seed}: {kinds}"


# ------------------------------------------------------------- the block alone
def test_constructor_checks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)  # the refused objects
        with pytest.raises(ValueError, match="id_bits"):
            MsiTranslator(id_bits=0)
        with pytest.raises(ValueError, match="mem_id"):
            MsiTranslator(id_bits=1, mem_id=2)


def test_msi_cycles_reported():
    """Memory latency 10, mask of the low 3 page bits, first stage Bare: print the cycles
    of the MSI translation (G-stage not walked) against a plain G-stage walk."""
    memory, guest = guest_with_files(0b111, fs_scheme=None)
    guest.gs.map(DATA_GPA, 0x7_0000_0000, KIB4)
    out = run_walks(memory, [Job(guest.file_gpa(5), Access.WRITE, guest.context()),
                             Job(DATA_GPA, Access.WRITE, guest.context())],
                    latency=(10, 10))
    msi_cycles, gs_cycles = out[0][0], out[1][0]
    print(f"MSI translation {msi_cycles} cycles, Sv39x4 G-stage walk {gs_cycles} cycles")
    # Two PTE reads (2 x (10 + 1)) plus the file number (3 mask bits: 4 cycles) and
    # hand-over; a 3-level G-stage walk costs 3 x (10 + 2) and more.
    assert 2 * 11 < msi_cycles < 2 * 11 + 12 and msi_cycles < gs_cycles


def test_verilog_has_the_msi_translator():
    text = verilog.convert(PageTableWalker(ID_BITS, MEM_ID, MSI_CAPS), name="walker")
    assert "msi" in text
    without = verilog.convert(PageTableWalker(ID_BITS, MEM_ID, MSI_CAPS
                                              & ~arch.Cap.MSI_FLAT.mask), name="walker")
    assert "msi_translator" not in without and "\\msi " not in without


def test_msi_pages_within_matches_the_model():
    """The walker's per-size MSI tests (rtl.msi.msi_pages_within: fixed slices, picked
    by the leaf's size; made of msi_pages_within_parts, as the walker uses them)
    against the model's _covers_msi_page for every leaf size, on random GPAs near and
    far from random patterns (seeded); and monotonic in the size."""
    from types import SimpleNamespace

    from amaranth.hdl import Module, Signal

    from rtl.msi import LEAF_SIZES_LOG2, msi_pages_within

    seed = int(os.environ.get("MSI_SEED", random.randrange(1 << 32)))
    print(f"test_msi_pages_within_matches_the_model seed={seed}")
    rng = random.Random(seed)
    gpa, mask, pattern = Signal(64), Signal(layouts.MSI_ADDR_BITS), Signal(layouts.MSI_ADDR_BITS)
    within = Signal(len(LEAF_SIZES_LOG2))
    m = Module()
    m.d.comb += within.eq(msi_pages_within(gpa, mask, pattern))
    problems = []

    async def bench(ctx):
        for _ in range(300):
            p = rng.getrandbits(layouts.MSI_ADDR_BITS)
            k = rng.randrange(0, 12)
            mk = (1 << k) - 1 if rng.random() < 0.7 else rng.getrandbits(12)
            # Near the pattern: flip a few page-number bits of an interrupt-file page.
            page = p
            for _ in range(rng.randrange(0, 3)):
                page ^= 1 << rng.randrange(0, layouts.MSI_ADDR_BITS)
            a = (page << 12 | rng.getrandbits(12)) & arch.MASK64
            ctx.set(gpa, a)
            ctx.set(mask, mk)
            ctx.set(pattern, p)
            got = ctx.get(within)
            model = SimpleNamespace(msi_mask=mk, msi_pattern=p)
            # The walker relies on this (a page covers an MSI page iff both stages'
            # pages do): a size's verdict implies every larger size's.
            for bit in range(len(LEAF_SIZES_LOG2) - 1):
                if got >> bit & 1 and not got >> (bit + 1) & 1:
                    problems.append(f"gpa {a:#x} mask {mk:#x} pattern {p:#x}: within "
                                    f"{got:#08b} is not monotonic in the size")
            for bit, size in enumerate(LEAF_SIZES_LOG2):
                want = TranslationEngine._covers_msi_page(model, a, 1 << size)
                if bool(got >> bit & 1) != want:
                    problems.append(f"gpa {a:#x} mask {mk:#x} pattern {p:#x} size 2^{size}: "
                                    f"RTL {bool(got >> bit & 1)}, model {want}")

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not problems, f"seed {seed} (MSI_SEED={seed}):\n" + "\n".join(problems[:10])
