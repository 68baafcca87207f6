"""Successful translations, caches and invalidation of the reference translation engine.

Expected SPAs are computed by hand in the comments (leaf base | offset within the
page); table layouts come from ``translate_env`` (DDT root 0x1000_0000, frames handed
out in order, guest tables at GPA 0x8000_0000 = SPA 0x1_4000_0000). The cause of every
fault has its own test in ``test_translate_causes.py``.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from translate_env import (
    BASE_CAPS,
    CAPS,
    DID,
    GPA_BASE,
    GSCID,
    GUEST_SPA,
    PSCID,
    SPA_BASE,
    TC_V,
    Env,
    gpa_to_spa,
    gs_atp,
    pointer,
    record,
)

from models import arch
from models.arch import (
    SV39,
    SV39X4_SCHEME,
    SV48,
    SV57,
    Access,
    AddrType,
    Cause,
    DdtpMode,
    DeviceContext,
    Fctl,
    HpmEvent,
    PcTa,
    PdtpMode,
    Priv,
    ProcessContext,
    Pte,
    Ta,
    Tc,
)
from models.memory import Memory
from models.pagetable import MsiPageTable, ProcessDirectory
from models.transaction import Status
from models.translate import WHO_DDT, EngineConfig, MrifTarget, TranslationEngine

ATS_CAPS = arch.capabilities_value(ats=True, t2gpa=True)
NO_CACHES = {"ddt_cache_entries": 0, "pdt_cache_entries": 0, "iotlb_entries": 0}


def host(env: Env, scheme=SV39, *, tc: int = 0, pscid: int = PSCID, device_id: int = DID):
    """A DC whose iosatp is a new ``scheme`` table (G-stage Bare)."""
    pt = env.page_table(scheme)
    env.install(DeviceContext(tc=TC_V | tc, fsc=pt.atp(), ta=Ta.PSCID.put(pscid)),
                device_id=device_id)
    return pt


def ok(outcome):
    assert outcome.response.ok, f"{outcome.response}: {outcome.reason}"
    assert outcome.record is None
    return outcome.response


# --------------------------------------------------------------------------- #
# First stage: every page size (§5.1, §5.3 step 8)
# --------------------------------------------------------------------------- #
PAGE_CASES = [
    # (scheme, va, pa, size, iova, expected spa)
    (SV39, 0x12_3456_7000, 0x8765_4000, 1 << 12, 0x12_3456_7ABC, 0x8765_4ABC),
    # 2 MiB: offset 0x4067_8901 - 0x4060_0000 = 0x7_8901
    (SV39, 0x4060_0000, 0x2_0020_0000, 1 << 21, 0x4067_8901, 0x2_0027_8901),
    # 1 GiB: offset 0xA234_5678 - 0x8000_0000 = 0x2234_5678
    (SV39, 0x8000_0000, 0x3_4000_0000, 1 << 30, 0xA234_5678, 0x3_6234_5678),
    # the top of the Sv39 space: bit 38 set and sign-extended (canonical)
    (SV39, 0xFFFF_FFC0_0000_0000, 0x4000_0000, 1 << 30, 0xFFFF_FFC0_1234_5000, 0x5234_5000),
    # NAPOT 64 KiB: offset 0xABCD
    (SV39, 0x7654_0000, 0x9876_0000, 1 << 16, 0x7654_ABCD, 0x9876_ABCD),
    # Sv48 512 GiB: offset 0x812_3456_789A - 0x800_0000_0000 = 0x12_3456_789A
    (SV48, 0x800_0000_0000, 0x1000_0000_0000, 1 << 39, 0x812_3456_789A, 0x1012_3456_789A),
    (SV57, 0x7B_CDEF_0123_4000, 0x5_6789_A000, 1 << 12, 0x7B_CDEF_0123_4321, 0x5_6789_A321),
    # Sv57 256 TiB: offset 0x3_1234_5678_9ABC - 0x3_0000_0000_0000 = 0x1234_5678_9ABC
    (SV57, 0x3_0000_0000_0000, 0x1_0000_0000_0000, 1 << 48, 0x3_1234_5678_9ABC,
     0x1_1234_5678_9ABC),
]


@pytest.mark.parametrize("scheme, va, pa, size, iova, spa", PAGE_CASES,
                         ids=[f"{c[0].name}-{c[3]:#x}" for c in PAGE_CASES])
def test_first_stage_page_sizes(scheme, va, pa, size, iova, spa):
    env = Env()
    pt = host(env, scheme)
    pt.map(va, pa, size, x=True, pbmt=arch.Pbmt.NC)
    for access in Access:
        response = ok(env.translate(iova, access))
        assert (response.spa, response.page_size) == (spa, size)
        assert (response.r, response.w, response.x, response.u, response.g) == (
            True, True, True, True, False)
        assert response.pbmt == arch.Pbmt.NC and not response.msi
        assert response.tag == 0x5A


def test_svrsw60t59b_makes_bits_60_59_software_bits():
    # §5.2: [60:59] are ignored when capabilities.Svrsw60t59b=1 (bit 14).
    caps = CAPS | arch.Cap.SVRSW60T59B.mask
    env = Env(caps)
    pt = host(env)
    entry = pt.map(0x5000, 0x7000)
    env.memory.write64(entry, env.memory.peek64(entry) | 0b11 << 59)
    assert ok(env.translate(0x5008)).spa == 0x7008


def test_bare_mode_passes_untranslated_requests_through():
    # Step 2: ddtp Bare -> SPA = IOVA, full permissions, no DDT read.
    env = Env()
    bare = arch.Ddtp.IOMMU_MODE.put(DdtpMode.BARE)
    response = ok(env.translate(0xDEAD_BEEF_F00D, Access.WRITE, ddtp=bare))
    assert (response.spa, response.page_size, response.r, response.w, response.x) == (
        0xDEAD_BEEF_F00D, 4096, True, True, True)
    assert env.memory.accesses_by(WHO_DDT) == []


# --------------------------------------------------------------------------- #
# The device directory: 1/2/3 levels, base and extended DCs (§2.3-§2.5)
# --------------------------------------------------------------------------- #
DDT_CASES = [
    # (capabilities, mode, largest device_id, DC address by hand)
    # base 1LVL: DDI[0] = did[6:0] = 0x7F -> root + 0x7F*32
    (BASE_CAPS, DdtpMode.LVL1, 0x7F, SPA_BASE + 0x7F * 32),
    # extended 1LVL: DDI[0] = did[5:0] = 0x3F -> root + 0x3F*64
    (CAPS, DdtpMode.LVL1, 0x3F, SPA_BASE + 0x3F * 64),
    # base 2LVL: DDI[1] = did[15:7] = 0x1FF: leaf table is the next frame (0x1000_1000)
    (BASE_CAPS, DdtpMode.LVL2, 0xFFFF, SPA_BASE + 0x1000 + 0x7F * 32),
    (CAPS, DdtpMode.LVL2, 0x7FFF, SPA_BASE + 0x1000 + 0x3F * 64),
    # 3LVL: root, level-1 table at +0x1000, leaf table at +0x2000
    (BASE_CAPS, DdtpMode.LVL3, 0xFF_FFFF, SPA_BASE + 0x2000 + 0x7F * 32),
    (CAPS, DdtpMode.LVL3, 0xFF_FFFF, SPA_BASE + 0x2000 + 0x3F * 64),
]


@pytest.mark.parametrize("caps, mode, device_id, dc_address", DDT_CASES,
                         ids=[f"{c[1].name}-{'ext' if c[0] == CAPS else 'base'}"
                              for c in DDT_CASES])
def test_ddt_levels_and_dc_formats(caps, mode, device_id, dc_address):
    env = Env(caps, mode=mode)
    # Both stages Bare: SPA = IOVA; the DC read is the last DDT access.
    assert env.install(DeviceContext(tc=TC_V), device_id=device_id) == dc_address
    response = ok(env.translate(0x1234_5678, device_id=device_id))
    assert response.spa == 0x1234_5678
    reads = env.memory.accesses_by(WHO_DDT)
    dc_size = 64 if caps == CAPS else 32
    assert len(reads) == mode.levels and reads[-1].addr == dc_address
    assert reads[-1].size == dc_size


def test_big_endian_structures():
    # §3.8: with capabilities.END=1 and fctl.BE=1 the DDT is big-endian; DC.tc.SBE=1
    # makes the first-stage table big-endian too. The tables are built little-endian and
    # every dword byte-swapped; the A/D update must store a big-endian PTE.
    env = Env(arch.capabilities_value(end=True), fctl=Fctl.BE.mask)
    pt = env.page_table(SV39)
    dc_addr = env.install(DeviceContext(tc=TC_V | Tc.SBE.mask | Tc.SADE.mask, fsc=pt.atp()))
    entry = pt.map(0x6000, 0x9000, a=False, d=False)

    def swap(addr, dwords):
        for a in range(addr, addr + 8 * dwords, 8):
            env.memory.poke64(a, int.from_bytes(env.memory.peek64(a).to_bytes(8, "little"),
                                                "big"))

    swap(dc_addr, 8)
    for table in pt.tables:
        swap(table, 512)
    assert ok(env.translate(0x6010, Access.WRITE)).spa == 0x9010
    stored = int.from_bytes(env.memory.peek64(entry).to_bytes(8, "little"), "big")
    assert Pte.A.get(stored) and Pte.D.get(stored)


# --------------------------------------------------------------------------- #
# Two stages (§5.7)
# --------------------------------------------------------------------------- #
def test_nested_sv39x4_under_sv39_hand_computed():
    # First stage (guest Sv39, root GPA 0x8000_0000): 2 MiB leaf VA 0x4_1220_0000 ->
    # GPA 0x1_0000_0000. IOVA 0x4_1234_5678 is 0x14_5678 into it: GPA 0x1_0014_5678.
    # G-stage (Sv39x4): 4 KiB leaf GPA 0x1_0014_5000 -> SPA 0x3_0000_7000, so
    # SPA = 0x3_0000_7678 and the size is min(2 MiB, 4 KiB) = 4 KiB.
    env = Env()
    gs = env.page_table(SV39X4_SCHEME)
    env.guest_memory(gs)
    gs.map(0x1_0014_5000, 0x3_0000_7000)
    fs = env.guest_page_table(SV39)
    fs.map(0x4_1220_0000, 0x1_0000_0000, 1 << 21)
    env.install(DeviceContext(tc=TC_V, iohgatp=gs_atp(gs), fsc=fs.atp(),
                              ta=Ta.PSCID.put(PSCID)))
    out = env.translate(0x4_1234_5678)
    response = ok(out)
    assert (response.spa, response.page_size) == (0x3_0000_7678, 4096)
    # Each first-stage PTE address went through the G-stage: 2 PTE reads (root and the
    # level-1 leaf) + the final GPA = 3 G-stage walks; one first-stage walk.
    kinds = [e[0] for e in out.events]
    assert kinds.count(HpmEvent.G_PT_WALK) == 3 and kinds.count(HpmEvent.S_VS_PT_WALK) == 1
    # The first-stage root PTE (GPA 0x8000_0000 + VPN[2]*8 = 0x8000_0080) was read at
    # its SPA 0x1_4000_0080.
    fs_reads = [r.addr for r in env.memory.accesses_by("iommu.fs_pt")]
    assert fs_reads == [gpa_to_spa(0x8000_0080), gpa_to_spa(fs.tables[1] + 0x91 * 8)]
    assert all(e[4:] == (True, GSCID, True, PSCID) for e in out.events[2:])


@pytest.mark.parametrize("fs_size, gs_size, expected", [
    (1 << 21, 1 << 12, 1 << 12),
    (1 << 12, 1 << 30, 1 << 12),
    (1 << 21, 1 << 30, 1 << 21),
    (None, 1 << 30, 1 << 30),  # first stage Bare: the G-stage leaf size
])
def test_two_stage_page_size_is_the_smaller_leaf(fs_size, gs_size, expected):
    env = Env()
    gs = env.page_table(SV39X4_SCHEME)
    env.guest_memory(gs)
    gs.map(0x1_0000_0000, 0x4000_0000, gs_size)
    fsc = 0
    if fs_size:
        fs = env.guest_page_table(SV39)
        fs.map(0x20_0000_0000 if fs_size < 1 << 30 else 0, 0x1_0000_0000, fs_size)
        fsc = fs.atp()
    env.install(DeviceContext(tc=TC_V, iohgatp=gs_atp(gs), fsc=fsc))
    iova = (0x20_0000_0000 if fs_size else 0x1_0000_0000) + 0x345
    response = ok(env.translate(iova))
    assert (response.spa, response.page_size) == (0x4000_0345, expected)


@pytest.mark.parametrize("fs_pbmt, gs_pbmt, expected", [
    (0, 2, 2),  # §5.6: first stage PMA -> the G-stage's IO
    (1, 2, 1),  # a nonzero first-stage PBMT overrides
    (1, 0, 1),
])
def test_pbmt_resolution(fs_pbmt, gs_pbmt, expected):
    env = Env()
    gs = env.page_table(SV39X4_SCHEME)
    env.guest_memory(gs)
    gs.map(0x1_0000_0000, 0x4000_0000, pbmt=gs_pbmt)
    fs = env.guest_page_table(SV39)
    fs.map(0x7000, 0x1_0000_0000, pbmt=fs_pbmt)
    env.install(DeviceContext(tc=TC_V, iohgatp=gs_atp(gs), fsc=fs.atp()))
    assert ok(env.translate(0x7000)).pbmt == expected


def test_hardware_a_d_update_in_both_stages():
    # §5.5: SADE/GADE=1 set A (and D for writes) by compare-and-swap.
    env = Env()
    gs = env.page_table(SV39X4_SCHEME)
    tables_leaf = gs.map(GPA_BASE, GUEST_SPA, 1 << 30, a=False, d=False)
    data_leaf = gs.map(0x1_0000_0000, 0x4000_0000, a=False, d=False)
    fs = env.guest_page_table(SV39)
    fs_leaf = fs.map(0x7000, 0x1_0000_0000, a=False, d=False)
    env.install(DeviceContext(tc=TC_V | Tc.SADE.mask | Tc.GADE.mask, iohgatp=gs_atp(gs),
                              fsc=fs.atp()))

    def ad(addr):
        value = env.memory.peek64(addr)
        return Pte.A.get(value), Pte.D.get(value)

    ok(env.translate(0x7010))
    # A read: A set in the first-stage leaf and in the data's G-stage leaf. The G-stage
    # leaf mapping the guest tables gets A from the implicit PTE reads, and D too: setting
    # A in the first-stage leaf is an implicit *write* through the G-stage (§5.4).
    assert ad(fs_leaf) == (1, 0) and ad(data_leaf) == (1, 0) and ad(tables_leaf) == (1, 1)
    ok(env.translate(0x7010, Access.WRITE))
    # A write re-walks (the cached translation has D=0): D set in both leaves.
    assert ad(fs_leaf) == (1, 1) and ad(data_leaf) == (1, 1)
    assert env.engine.stats["ad_updates"] == 6


# --------------------------------------------------------------------------- #
# Process directories (§4)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("mode, pid", [
    (PdtpMode.PD8, 0xAB), (PdtpMode.PD17, 0x1_2345), (PdtpMode.PD20, 0xF_EDCB)])
def test_process_directory_levels(mode, pid):
    env = Env()
    pt = env.page_table(SV39)
    pt.map(0x40_0000, 0x2222_0000)
    pdt = ProcessDirectory(env.memory, env.alloc, mode)
    pdt.install(pid, ProcessContext(ta=PcTa.V.mask | PcTa.PSCID.put(0x99), fsc=pt.atp()))
    env.install(DeviceContext(tc=TC_V | Tc.PDTV.mask, fsc=pdt.pdtp()))
    out = env.translate(0x40_0123, pid=pid)
    assert ok(out).spa == 0x2222_0123
    # §4.5: LEVELS = 1/2/3 reads of the PDT; the PSCID tags the walk events.
    assert len(env.memory.accesses_by("iommu.pdt")) == mode.levels
    assert out.events[-1] == (HpmEvent.S_VS_PT_WALK, DID, True, pid, False, 0, True, 0x99)


def test_guest_pdt_is_walked_through_the_g_stage():
    # §4.5 step 2: PDT addresses are GPAs; the PC of pid 5 is at GPA 0x8000_0050 (PD8
    # root GPA 0x8000_0000 + 5*16), read at SPA 0x1_4000_0050.
    env = Env()
    gs = env.page_table(SV39X4_SCHEME)
    env.guest_memory(gs)
    gs.map(0x1_0000_0000, 0x4000_0000)
    pdt = env.guest_pdt(PdtpMode.PD8)
    pdt.install(5, ProcessContext(ta=PcTa.V.mask, fsc=0))
    env.install(DeviceContext(tc=TC_V | Tc.PDTV.mask, iohgatp=gs_atp(gs), fsc=pdt.pdtp()))
    assert ok(env.translate(0x1_0000_0ABC, pid=5)).spa == 0x4000_0ABC
    assert [r.addr for r in env.memory.accesses_by("iommu.pdt")] == [GUEST_SPA + 0x50]


def test_supervisor_access_with_sum_and_default_process_id():
    env = Env()
    pt = env.page_table(SV39)
    pt.map(0x1000, 0x5000, u=True)
    pt.map(0x2000, 0x6000, u=False, x=True)
    pdt = ProcessDirectory(env.memory, env.alloc, PdtpMode.PD8)
    pdt.install(0, ProcessContext(ta=PcTa.V.mask | PcTa.ENS.mask | PcTa.SUM.mask,
                                  fsc=pt.atp()))
    env.install(DeviceContext(tc=TC_V | Tc.PDTV.mask | Tc.DPE.mask, fsc=pdt.pdtp()))
    # SUM=1: a Supervisor may read/write U=1 pages, and execute U=0 pages.
    assert ok(env.translate(0x1004, Access.WRITE, pid=0, priv=Priv.SUPERVISOR)).spa == 0x5004
    assert ok(env.translate(0x2008, Access.EXECUTE, pid=0, priv=Priv.SUPERVISOR)).spa == 0x6008
    # Step 11: DPE=1 and no process_id -> process 0, as a User request (U=0 page faults).
    assert ok(env.translate(0x1004)).spa == 0x5004
    out = env.translate(0x2008, Access.EXECUTE)
    assert out.record == record(Cause.INSTRUCTION_PAGE_FAULT, 1, iova=0x2008)


# --------------------------------------------------------------------------- #
# MSI translation (§9)
# --------------------------------------------------------------------------- #
MSI_MASK, MSI_PATTERN = 0b1010_0110, 0x10_0000


def msi_env(caps=CAPS, *, gs_size=1 << 12):
    env = Env(caps)
    gs = env.page_table(SV39X4_SCHEME)
    gs.map(0x1_0000_0000, 0x4000_0000, gs_size)  # covers the interrupt-file pages
    msi = MsiPageTable(env.memory, env.alloc, 16)
    env.install(DeviceContext(tc=TC_V, iohgatp=gs_atp(gs), msiptp=msi.msiptp(),
                              msi_addr_mask=MSI_MASK, msi_addr_pattern=MSI_PATTERN))
    return env, msi


def test_msi_flat_basic_translation_extract_example():
    # §9.1: x = abcdefgh, mask 10100110 -> extract = 0000acfg. Page number 0x10_00A4 has
    # x = 10100100 (a=1 c=1 f=1 g=0): I = 1110b = 14; its PTE points at 0x2800_0000.
    env, msi = msi_env()
    msi.set_basic(14, 0x2800_0000 >> 12)
    out = env.translate(0x1_000A_4000, Access.WRITE)
    response = ok(out)
    assert (response.spa, response.page_size, response.msi) == (0x2800_0000, 4096, True)
    assert (response.r, response.w, response.x) == (True, True, False)
    assert [r.addr for r in env.memory.accesses_by("iommu.msi_pt")] == [msi.base + 14 * 16]
    # Another file: x = 00000110 (a=0 c=0 f=1 g=1) -> I = 0011b = 3.
    msi.set_basic(3, 0x2800_3000 >> 12)
    assert ok(env.translate(0x1_0000_6000, Access.WRITE)).spa == 0x2800_3000
    # A GPA that does not match the pattern (bit 0 is not in the mask) goes to the
    # G-stage: 0x1_000A_5000 -> no MSI.
    not_msi = env.translate(0x1_000A_5000)
    assert not_msi.response.cause == Cause.READ_GUEST_PAGE_FAULT  # not mapped by GS


def test_superpage_covering_msi_pages_is_reported_at_4k():
    # §9.1 note: a G-stage superpage that overlaps an MSI page must not be used at full
    # size. The 1 GiB leaf GPA 0x1_0000_0000.. covers the interrupt files at 0x1_000x_x000.
    env, msi = msi_env(gs_size=1 << 30)
    msi.set_basic(14, 0x2800_0000 >> 12)
    assert ok(env.translate(0x1_0000_1234)).page_size == 4096
    assert ok(env.translate(0x1_000A_4000, Access.WRITE)).msi
    # Repeated accesses hit 4 KiB IOTLB entries and keep recognising the MSI page.
    assert ok(env.translate(0x1_000A_4004, Access.WRITE)).spa == 0x2800_0004


def test_mrif_mode_msi_pte():
    # §9.3 step 5 with MSI_MRIF=1: MRIF at 0x2900_0200, notice MSI to 0x2A00_0000 with
    # identity 0x5AB (NID[10] set).
    env, msi = msi_env(arch.capabilities_value(msi_mrif=True))
    msi.set_mrif(14, 0x2900_0200, 0x2A000, 0x5AB)
    out = env.translate(0x1_000A_4000, Access.WRITE)
    assert ok(out).msi and out.response.page_size == 4096
    assert out.mrif == MrifTarget(mrif_address=0x2900_0200, notice_address=0x2A00_0000,
                                  notice_data=0x5AB)


# --------------------------------------------------------------------------- #
# Fault reporting: DTF (§6.3)
# --------------------------------------------------------------------------- #
def test_dtf_suppresses_translation_fault_records_only():
    env = Env()
    pt = host(env, tc=Tc.DTF.mask)
    pt.map(0x1000, 0x2000, w=False)
    out = env.translate(0x1000, Access.WRITE)  # 15 is a "no" cause in §6.1
    assert out.response.status == Status.FAULT and out.response.cause == 15
    assert out.record is None and not out.response.reported
    out = env.translate(0x1000, pid=1)  # 260 (step 7) is not logged either
    assert out.response.cause == 260 and out.record is None
    # Without DTF the same fault is logged.
    env.install(DeviceContext(tc=TC_V, fsc=pt.atp()))
    env.engine.iodir_inval_ddt(True, DID)
    assert env.translate(0x1000, Access.WRITE).record == record(15, 3, iova=0x1000)


# --------------------------------------------------------------------------- #
# PCIe ATS (§6.4)
# --------------------------------------------------------------------------- #
def ats_env():
    env = Env(ATS_CAPS)
    gs = env.page_table(SV39X4_SCHEME)
    env.guest_memory(gs)
    gs.map(0x1_0000_0000, 0x4000_0000, x=True)
    fs = env.guest_page_table(SV39)
    env.install(DeviceContext(tc=TC_V | Tc.EN_ATS.mask | Tc.SADE.mask, iohgatp=gs_atp(gs),
                              fsc=fs.atp()))
    return env, gs, fs


ATS = AddrType.ATS_TRANSLATION_REQUEST


def test_ats_translation_request_page_fault_is_a_success_with_no_permission():
    env, _, _ = ats_env()
    out = env.translate(0x9000, addr_type=ATS)  # unmapped: a read page fault
    assert out.response.status == Status.SUCCESS and out.record is None
    assert not (out.response.r or out.response.w or out.response.x)
    assert out.response.cause == Cause.READ_PAGE_FAULT


def test_ats_translation_request_grants_what_the_tables_allow():
    env, _, fs = ats_env()
    leaf_addr = fs.map(0x7000, 0x1_0000_0000, w=False, x=True, d=False)
    # No-Write=0 (WRITE) on a read-only page: R granted, W denied, no fault record.
    response = ok(env.translate(0x7000, Access.WRITE, addr_type=ATS))
    assert (response.r, response.w, response.x, response.spa) == (True, False, False,
                                                                  0x4000_0000)
    # Execute requested: X granted with R.
    response = ok(env.translate(0x7000, Access.EXECUTE, addr_type=ATS))
    assert (response.r, response.w, response.x) == (True, False, True)
    assert not Pte.D.get(env.memory.peek64(leaf_addr))  # W was not granted: D stays 0


def test_ats_with_t2gpa_returns_the_gpa_and_translated_requests_use_the_g_stage():
    env, _gs, fs = ats_env()
    dc = env.ddt.read(DID)
    env.install(dataclasses.replace(dc, tc=dc.tc | Tc.T2GPA.mask))
    fs.map(0x7000, 0x1_0000_0000)
    # ATS completion: the GPA 0x1_0000_0123 (T2GPA=1, §3.2), with W (D set by SADE).
    response = ok(env.translate(0x7123, Access.WRITE, addr_type=ATS))
    assert (response.spa, response.r, response.w) == (0x1_0000_0123, True, True)
    # A later Translated request carries that GPA: step 9, G-stage only -> SPA.
    response = ok(env.translate(0x1_0000_0123, Access.WRITE, addr_type=AddrType.TRANSLATED))
    assert response.spa == 0x4000_0123


def test_translated_request_without_t2gpa_is_already_an_spa():
    env = Env(ATS_CAPS)
    env.install(DeviceContext(tc=TC_V | Tc.EN_ATS.mask))
    assert ok(env.translate(0xABC_D000, addr_type=AddrType.TRANSLATED)).spa == 0xABC_D000


def test_ats_translation_request_to_mrif_page_is_untranslated_only():
    caps = arch.capabilities_value(ats=True, msi_mrif=True)
    env = Env(caps)
    gs = env.page_table(SV39X4_SCHEME)
    msi = MsiPageTable(env.memory, env.alloc, 16)
    msi.set_mrif(14, 0x2900_0200, 0x2A000, 7)
    env.install(DeviceContext(tc=TC_V | Tc.EN_ATS.mask, iohgatp=gs_atp(gs), msiptp=msi.msiptp(),
                              msi_addr_mask=MSI_MASK, msi_addr_pattern=MSI_PATTERN))
    response = ok(env.translate(0x1_000A_4000, Access.WRITE, addr_type=ATS))
    assert (response.r, response.w, response.u, response.msi) == (True, True, True, True)


# --------------------------------------------------------------------------- #
# HPM events
# --------------------------------------------------------------------------- #
def test_hpm_events_for_a_miss_and_a_hit():
    env = Env()
    pt = host(env)
    pt.map(0x1000, 0x2000)
    miss = [e[0] for e in env.translate(0x1000).events]
    assert miss == [HpmEvent.UNTRANSLATED_REQ, HpmEvent.DDT_WALK, HpmEvent.TLB_MISS,
                    HpmEvent.S_VS_PT_WALK]
    assert env.translate(0x1008).events == [
        (HpmEvent.UNTRANSLATED_REQ, DID, False, 0, False, 0, False, 0)]
    assert env.engine.stats["iotlb_hits"] == 1 and env.engine.stats["iotlb_misses"] == 1


# --------------------------------------------------------------------------- #
# Caches and invalidation (§10)
# --------------------------------------------------------------------------- #
def test_stale_iotlb_hit_until_iotinval_vma():
    env = Env()
    pt = host(env)
    pt.map(0x1000, 0x2000)
    assert ok(env.translate(0x1010)).spa == 0x2010
    pt.map(0x1000, 0x3000)  # software changes the PTE, no invalidation yet
    assert ok(env.translate(0x1010)).spa == 0x2010  # the old translation (legal, §10.3)
    env.engine.iotinval_vma(False, True, True, 0, PSCID + 1, 0x1000)  # other PSCID
    assert ok(env.translate(0x1010)).spa == 0x2010
    env.engine.iotinval_vma(False, True, True, 0, PSCID, 0x1000)
    assert ok(env.translate(0x1010)).spa == 0x3010


def test_invalid_entries_are_never_cached():
    # §10.1: V=0 entries are not cached, so a 0 -> 1 change needs no invalidation.
    env = Env()
    env.install(DeviceContext(tc=0))  # DC V=0
    assert env.translate(0x1000).response.cause == Cause.DDT_ENTRY_NOT_VALID
    pt = host(env)
    assert env.translate(0x1000).response.cause == Cause.READ_PAGE_FAULT  # PTE V=0
    pt.map(0x1000, 0x2000)
    assert ok(env.translate(0x1000)).spa == 0x2000


def test_device_context_cache_until_iodir_inval_ddt():
    env = Env()
    pt_a, pt_b = env.page_table(SV39), env.page_table(SV39)
    pt_a.map(0x1000, 0xA000)
    pt_b.map(0x1000, 0xB000)
    env.install(DeviceContext(tc=TC_V, fsc=pt_a.atp(), ta=Ta.PSCID.put(1)))
    assert ok(env.translate(0x1000)).spa == 0xA000
    env.install(DeviceContext(tc=TC_V, fsc=pt_b.atp(), ta=Ta.PSCID.put(2)))
    assert ok(env.translate(0x1000)).spa == 0xA000  # cached DC (and its IOTLB entry)
    env.engine.iodir_inval_ddt(True, DID + 1)  # another device: no effect
    assert ok(env.translate(0x1000)).spa == 0xA000
    env.engine.iodir_inval_ddt(True, DID)  # the new DC has PSCID 2: a new IOTLB tag
    assert ok(env.translate(0x1000)).spa == 0xB000


def test_process_context_cache_until_iodir_inval_pdt():
    env = Env()
    pt = env.page_table(SV39)
    pt.map(0x1000, 0xA000)
    pdt = ProcessDirectory(env.memory, env.alloc, PdtpMode.PD8)
    pdt.install(7, ProcessContext(ta=PcTa.V.mask, fsc=pt.atp()))
    env.install(DeviceContext(tc=TC_V | Tc.PDTV.mask, fsc=pdt.pdtp()))
    assert ok(env.translate(0x1000, pid=7)).spa == 0xA000
    pdt.remove(7)
    assert ok(env.translate(0x1000, pid=7)).spa == 0xA000  # cached PC and translation
    env.engine.iodir_inval_pdt(DID, 7)
    env.engine.iotinval_vma(False, False, True, 0, 0, 0)
    assert env.translate(0x1000, pid=7).response.cause == Cause.PDT_ENTRY_NOT_VALID


def test_iodir_inval_ddt_drops_the_process_contexts_of_the_device():
    # §10.3: a non-leaf PDT entry change is invalidated with IODIR.INVAL_DDT DV=1 DID,
    # which drops every cached PC of the device (IODIR.INVAL_PDT would not reach it).
    env = Env()
    pt_a, pt_b = env.page_table(SV39), env.page_table(SV39)
    pt_a.map(0x1000, 0xA000)
    pt_b.map(0x1000, 0xB000)
    pdt = ProcessDirectory(env.memory, env.alloc, PdtpMode.PD17)
    pdt.install(0x1_0007, ProcessContext(ta=PcTa.V.mask | PcTa.PSCID.put(1), fsc=pt_a.atp()))
    env.install(DeviceContext(tc=TC_V | Tc.PDTV.mask, fsc=pdt.pdtp()))
    assert ok(env.translate(0x1000, pid=0x1_0007)).spa == 0xA000
    # Point the non-leaf entry (PDI[1] = 0x100) at a new leaf table with another PC.
    new_leaf = env.alloc.alloc()
    env.memory.write64(new_leaf + 7 * 16 + 8, pt_b.atp())
    env.memory.write64(new_leaf + 7 * 16, PcTa.V.mask | PcTa.PSCID.put(2))
    env.memory.write64(pdt.root + 0x100 * 8, pointer(new_leaf))
    assert ok(env.translate(0x1000, pid=0x1_0007)).spa == 0xA000  # cached PC
    env.engine.iodir_inval_pdt(DID, 0x1_0008)  # another process: no effect
    assert ok(env.translate(0x1000, pid=0x1_0007)).spa == 0xA000
    env.engine.iodir_inval_ddt(True, DID)
    assert ok(env.translate(0x1000, pid=0x1_0007)).spa == 0xB000  # PSCID 2: a new tag


def test_write_hit_on_entry_with_d_clear_rewalks_to_set_d():
    env = Env()
    pt = host(env, tc=Tc.SADE.mask)
    entry = pt.map(0x1000, 0x2000, a=False, d=False)
    ok(env.translate(0x1000))
    assert env.memory.peek64(entry) & (Pte.A.mask | Pte.D.mask) == Pte.A.mask
    ok(env.translate(0x1000, Access.WRITE))
    assert Pte.D.get(env.memory.peek64(entry))
    assert env.engine.stats["iotlb_misses"] == 2
    ok(env.translate(0x1000, Access.WRITE))
    assert env.engine.stats["iotlb_hits"] == 1


def test_iotlb_lru_replacement():
    env = Env(iotlb_entries=2)
    pt = host(env)
    for i in range(3):
        pt.map(0x1000 * (i + 1), 0x10_0000 + 0x1000 * i)
    for va in (0x1000, 0x2000, 0x1000, 0x3000):  # 0x3000 evicts 0x2000 (least recent)
        ok(env.translate(va))
    assert env.engine.iotlb_size == 2
    misses = env.engine.stats["iotlb_misses"]
    ok(env.translate(0x1000))
    assert env.engine.stats["iotlb_misses"] == misses
    ok(env.translate(0x2000))
    assert env.engine.stats["iotlb_misses"] == misses + 1


class ScopeBench:
    """Seven cached translations with different tags (§10.2's table rows pick subsets):

    H1 host PSCID 1 VA 0x1000; H2 host PSCID 1 VA 0x2000 global; H3 host PSCID 2 VA 0x1000;
    G1 GSCID 7 PSCID 1 VA 0x1000; G2 GSCID 7 PSCID 1 VA 0x2000 global; G3 GSCID 7 PSCID 2
    VA 0x1000; O1 GSCID 8 PSCID 1 VA 0x1000. After warming, every leaf is remapped to a
    new page without invalidation; a translation that changed was dropped by the command.
    """

    def __init__(self):
        env = self.env = Env(mode=DdtpMode.LVL1)
        gs = env.page_table(SV39X4_SCHEME)
        env.guest_memory(gs)
        gs.map(0x1_0000_0000, 0x5000_0000, 1 << 21)  # old guest data pages
        gs.map(0x1_0020_0000, 0x6000_0000, 1 << 21)  # new guest data pages
        self.entries = {}  # name -> (device_id, va, pt, old pa, new pa)
        layout = [("H1", 1, None, 1), ("H3", 2, None, 2), ("G1", 3, 7, 1), ("G3", 4, 7, 2),
                  ("O1", 5, 8, 1)]
        for name, device_id, gscid, pscid in layout:
            guest = gscid is not None
            pt = env.guest_page_table(SV39) if guest else env.page_table(SV39)
            old, new = ((0x1_0000_0000, 0x1_0020_0000) if guest else (0x5000_0000, 0x6000_0000))
            old, new = old + device_id * 0x1000, new + device_id * 0x1000
            pt.map(0x1000, old)
            self.entries[name] = (device_id, 0x1000, pt, old, new)
            if pscid == 1 and name in ("H1", "G1"):
                pt.map(0x2000, old + 0x10_0000, g=True)
                self.entries[name[0] + "2"] = (device_id, 0x2000, pt, old + 0x10_0000,
                                               new + 0x10_0000)
            dc = DeviceContext(tc=TC_V, fsc=pt.atp(), ta=Ta.PSCID.put(pscid))
            if guest:
                dc.iohgatp = gs_atp(gs, gscid)
            env.install(dc, device_id=device_id)
        self.first = {name: self.spa(name) for name in self.entries}
        for device_id, va, pt, old, new in self.entries.values():
            pt.map(va, new, g=va == 0x2000)

    def spa(self, name):
        device_id, va, _, _, _ = self.entries[name]
        return ok(self.env.translate(va, device_id=device_id)).spa

    def dropped(self) -> set[str]:
        return {name for name in self.entries if self.spa(name) != self.first[name]}


ALL = {"H1", "H2", "H3", "G1", "G2", "G3", "O1"}


@pytest.mark.parametrize("gv, av, pscv, gscid, pscid, addr, expected", [
    # §10.2 IOTINVAL.VMA, one row each (host = G-stage Bare; global = FS G=1)
    (0, 0, 0, 0, 0, 0, {"H1", "H2", "H3"}),  # every host entry, global included
    (0, 0, 1, 0, 1, 0, {"H1"}),  # host entries of PSCID 1, global excluded
    (0, 1, 0, 0, 0, 0x1000, {"H1", "H3"}),  # host leaves for ADDR, any PSCID
    (0, 1, 0, 0, 0, 0x2000, {"H2"}),  # ... global included
    (0, 1, 1, 0, 1, 0x1000, {"H1"}),  # host leaves for ADDR in PSCID 1
    (0, 1, 1, 0, 1, 0x2000, set()),  # ... global excluded
    (1, 0, 0, 7, 0, 0, {"G1", "G2", "G3"}),  # every entry of GSCID 7
    (1, 0, 1, 7, 1, 0, {"G1"}),  # (GSCID 7, PSCID 1), global excluded
    (1, 1, 0, 7, 0, 0x1000, {"G1", "G3"}),  # ADDR in GSCID 7, any PSCID
    (1, 1, 1, 7, 1, 0x1000, {"G1"}),  # ADDR in (GSCID 7, PSCID 1)
])
def test_iotinval_vma_scopes(gv, av, pscv, gscid, pscid, addr, expected):
    bench = ScopeBench()
    assert bench.dropped() == set()  # stale everywhere before the command
    bench.env.engine.iotinval_vma(bool(gv), bool(av), bool(pscv), gscid, pscid, addr)
    assert bench.dropped() == expected


@pytest.mark.parametrize("gv, av, gscid, expected", [
    (0, 0, 0, {"G1", "G2", "G3", "O1"}),  # all G-stage-derived entries
    (1, 0, 7, {"G1", "G2", "G3"}),  # GSCID 7
    (1, 1, 8, {"O1"}),  # AV=1: the whole GSCID (combined VA->SPA entries, §10.2)
])
def test_iotinval_gvma_scopes(gv, av, gscid, expected):
    bench = ScopeBench()
    bench.env.engine.iotinval_gvma(bool(gv), bool(av), gscid, 0x1_0000_1000)
    assert bench.dropped() == expected


def test_flush_all_drops_everything():
    bench = ScopeBench()
    bench.env.engine.flush_all()
    assert bench.dropped() == ALL


def test_engine_refuses_capabilities_it_does_not_implement():
    with pytest.raises(ValueError, match="Sv32"):
        TranslationEngine(Memory(), EngineConfig(capabilities=CAPS | arch.Cap.SV32.mask))


# --------------------------------------------------------------------------- #
# Property: after the matching invalidation a cached engine equals a cache-less one
# --------------------------------------------------------------------------- #
_MOSTLY = st.sampled_from([True, True, True, False])  # most pages are usable
_PERMS = st.fixed_dictionaries({
    "rwx": st.sampled_from([(1, 0, 0), (1, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1)]),
    "u": _MOSTLY, "g": st.booleans(), "a": _MOSTLY, "d": st.booleans(),
})
# Where mappings may go (non-overlapping slots): 4 KiB pages, 64 KiB NAPOT pages,
# 2 MiB pages and a 1 GiB page.
_SLOTS = ([(0x1000 * k, 1 << 12) for k in range(1, 5)]
          + [(0x10_0000 + 0x1_0000 * k, 1 << 16) for k in range(2)]
          + [(0x4000_0000 + 0x20_0000 * k, 1 << 21) for k in range(2)]
          + [(0x1_0000_0000, 1 << 30)])
_TARGETS = 0x1_0000_0000  # output pages come from [TARGETS, TARGETS + 4 GiB)


def _map(pt, va, size, pa, perms):
    r, w, x = perms["rwx"]
    pt.map(va, pa, size, r=bool(r), w=bool(w), x=bool(x), u=perms["u"], g=perms["g"],
           a=perms["a"], d=perms["d"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_cached_engine_equals_cacheless_engine_after_invalidation(data):
    """Random tables and requests warm the caches; one change is made in memory and the
    invalidation software must send for it (§10.3) is sent. From then on the cached
    engine must answer exactly like an engine without caches, on a copy of the memory
    taken at that point, and leave the same memory (A/D bits) behind."""
    draw = data.draw
    nested = draw(st.booleans(), "nested")
    with_pdt = draw(st.booleans(), "PDTV=1")
    sade, gade = draw(st.booleans(), "sade"), draw(st.booleans(), "gade")
    env = Env(iotlb_entries=draw(st.sampled_from([1, 4, 64]), "iotlb"),
              ddt_cache_entries=2, pdt_cache_entries=2)
    gs = None
    if nested:
        gs = env.page_table(SV39X4_SCHEME)
        env.guest_memory(gs)
        # Guest data: 4 GiB of GPA at _TARGETS -> SPA 0x2_0000_0000 in 1 GiB leaves.
        for k in range(4):
            perms = draw(_PERMS, f"gs_perms{k}")
            _map(gs, _TARGETS + (k << 30), 1 << 30, 0x2_0000_0000 + (k << 30),
                 dict(perms, u=draw(_MOSTLY)))
        fs = env.guest_page_table(SV39)
    else:
        fs = env.page_table(SV39)
    tc = TC_V | Tc.SADE.put(sade) | Tc.GADE.put(gade and nested)
    iohgatp = gs_atp(gs) if gs else 0
    pdt, pid = None, None
    if with_pdt:  # the first stage comes from the PC of process 1 (§4)
        pid = 1
        pdt = env.guest_pdt(PdtpMode.PD8) if nested else ProcessDirectory(
            env.memory, env.alloc, PdtpMode.PD8)
        pc_ta = (PcTa.V.mask | PcTa.PSCID.put(PSCID) | PcTa.ENS.put(draw(st.booleans()))
                 | PcTa.SUM.put(draw(st.booleans())))
        pdt.install(pid, ProcessContext(ta=pc_ta, fsc=fs.atp()))
        env.install(DeviceContext(tc=tc | Tc.PDTV.mask, fsc=pdt.pdtp(), iohgatp=iohgatp))
    else:
        env.install(DeviceContext(tc=tc, fsc=fs.atp(), ta=Ta.PSCID.put(PSCID),
                                  iohgatp=iohgatp))
    slots = draw(st.lists(st.sampled_from(_SLOTS), min_size=1, max_size=6, unique=True),
                 "slots")
    mappings = {}
    for va, size in slots:
        pa = _TARGETS + draw(st.integers(0, (4 << 30) // size - 1)) * size
        perms = draw(_PERMS)
        _map(fs, va, size, pa, perms)
        mappings[va] = (size, perms)

    requests = draw(st.lists(st.tuples(
        st.sampled_from(slots + [(0x3000_0000, 4096)]), st.integers(0, (1 << 30) - 1),
        st.sampled_from(list(Access)), st.sampled_from(list(Priv))), min_size=1,
        max_size=16), "requests")
    requests = [(va + offset % size, access, priv if pid is not None else Priv.USER)
                for (va, size), offset, access, priv in requests]
    for iova, access, priv in requests:  # warm the caches
        env.translate(iova, access, pid=pid, priv=priv)

    # Change one thing in memory, then send the invalidation software must send (§10.3).
    engine = env.engine
    changes = ["fs", "dc"] + (["gs", "gs"] if nested else []) + (["pc"] if with_pdt else [])
    change = draw(st.sampled_from(changes), "change")
    if change == "fs":
        # Usually a page the requests touched (so its translation may be cached).
        touched = sorted({va for va, (size, _) in mappings.items()
                          for iova, _, _ in requests if va <= iova < va + size})
        va = draw(st.sampled_from(touched or sorted(mappings)), "changed va")
        size, old = mappings[va]
        how = draw(st.sampled_from(["protect", "unmap", "remap"]), "how")
        if how == "unmap":
            fs.unmap(va)
        else:
            pa = fs.mappings[va][0]
            if how == "remap":
                pa = _TARGETS + (draw(st.integers(0, 3)) << 30)
            _map(fs, va, size, pa, draw(_PERMS, "new perms"))
        addr = (va + draw(st.integers(0, size - 1))) & ~0xFFF
        av = draw(st.booleans(), "av")
        pscv = False if old["g"] else draw(st.booleans(), "pscv")
        if draw(st.booleans(), "flush"):
            engine.flush_all()
        else:
            engine.iotinval_vma(nested, av, pscv, GSCID if nested else 0, PSCID, addr)
    elif change == "gs":
        # Usually a G-stage leaf that one of the first-stage mappings leads to.
        used = sorted({(fs.mappings[va][0] - _TARGETS) >> 30 for va in mappings})
        k = draw(st.sampled_from(used + [0, 1, 2, 3]), "gs leaf")
        _map(gs, _TARGETS + (k << 30), 1 << 30, 0x2_0000_0000 + (k << 30),
             draw(_PERMS, "gs new perms"))
        engine.iotinval_gvma(draw(st.booleans()), draw(st.booleans()), GSCID,
                             _TARGETS + (k << 30))
    elif change == "pc":  # flip ENS or SUM: IODIR.INVAL_PDT, then IOTINVAL.VMA PSCV=1
        pc = pdt.read(pid)
        pdt.install(pid, ProcessContext(
            ta=pc.ta ^ draw(st.sampled_from([PcTa.ENS.mask, PcTa.SUM.mask])), fsc=pc.fsc))
        engine.iodir_inval_pdt(DID, pid)
        engine.iotinval_vma(nested, False, True, GSCID if nested else 0, PSCID, 0)
    else:  # the DC: flip SADE; §10.3's recipe for a leaf DDT entry
        # A NAPOT page whose 16 PTEs disagree on A/D (a walk with SADE=1 set them in the
        # one PTE it read) may legally be served from a cached 64 KiB translation after
        # SADE goes to 0, while a fresh walk of another of its PTEs faults (Svnapot).
        assume(not any(size == 1 << 16 and not (perms["a"] and perms["d"])
                       for size, perms in mappings.values()))
        dc = env.ddt.read(DID)
        env.install(dataclasses.replace(dc, tc=dc.tc ^ Tc.SADE.mask))
        engine.iodir_inval_ddt(True, DID)
        if nested:
            engine.iotinval_vma(True, False, False, GSCID, 0, 0)
            engine.iotinval_gvma(True, False, GSCID, 0)
        else:
            # §10.3 sends PSCV=1, which spares global (G=1) entries: a cached global
            # translation may then legally outlive the DC change (e.g. one walked with
            # SADE=1 that set A in one PTE of a NAPOT group). Drop them too when any exist.
            any_global = any(perms["g"] for _, perms in mappings.values())
            engine.iotinval_vma(False, False, not with_pdt and not any_global, 0, PSCID, 0)

    fresh_memory = copy.deepcopy(env.memory)
    cacheless = TranslationEngine(fresh_memory, EngineConfig(capabilities=CAPS, **NO_CACHES))
    for iova, access, priv in requests:
        cached = env.translate(iova, access, pid=pid, priv=priv)
        fresh = env.translate(iova, access, pid=pid, priv=priv, engine=cacheless)
        assert cached.response == fresh.response, (hex(iova), access, priv, cached.reason,
                                                   fresh.reason)
        assert cached.record == fresh.record
    # Both engines updated the same A/D bits. Except in NAPOT PTEs: a cached 64 KiB
    # translation serves all 16 PTEs of the page, and Svnapot lets A/D be set in the one
    # PTE a walk used, so the constituent PTEs' A/D may differ.
    tables = [fs.to_phys(t) for t in fs.tables] + (gs.tables if gs else [])
    for table in tables:
        for addr in range(table, table + (16384 if gs and table == gs.root else 4096), 8):
            mine, theirs = env.memory.peek64(addr), fresh_memory.peek64(addr)
            if Pte.N.get(mine) and Pte.N.get(theirs):
                mine, theirs = (v & ~(Pte.A.mask | Pte.D.mask) for v in (mine, theirs))
            assert mine == theirs, hex(addr)
