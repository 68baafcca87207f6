"""Every fault cause the reference translation engine reports, from a hand-derived vector.

One test per cause code (several where the spec has several triggers). Each test
builds its tables at addresses a reader can follow (``translate_env``: DDT root at
0x1000_0000, 1LVL extended DCs of 64 bytes, so device 5's DC is at 0x1000_0140),
quotes the rule from ``../shared/spec/riscv-iommu-digest.md`` it exercises, and checks
the whole fault record: cause, TTYP (§1.2: 1/2/3 Untranslated exec/read/write, 5/6/7
Translated, 8 ATS Translation Request), device_id, PID/PV/PRIV, iotval (= IOVA) and
iotval2 (guest-page faults: GPA[63:2], bit 0 = implicit access, bit 1 = implicit
write; 0 otherwise).
"""

from __future__ import annotations

import pytest
from translate_env import (
    CAPS,
    GPA_BASE,
    PSCID,
    SPA_BASE,
    TC_V,
    CasRefusingMemory,
    Env,
    gs_atp,
    leaf,
    pointer,
    record,
)

from models import arch
from models.arch import (
    SV39,
    SV39X4_SCHEME,
    Access,
    AddrType,
    AtpMode,
    Cause,
    DdtpMode,
    DeviceContext,
    Fsc,
    Iohgatp,
    MsiPte,
    Msiptp,
    PcTa,
    PdtpMode,
    Priv,
    ProcessContext,
    Pte,
    Ta,
    Tc,
)
from models.memory import FaultKind
from models.pagetable import MsiPageTable, ProcessDirectory

# Sv39 IOVA used by most tests: VPN[2] = 0x10, VPN[1] = 0x91, VPN[0] = 0x145, offset 0x678.
IOVA = 0x4_1234_5678
VPN2, VPN1, VPN0 = 0x10, 0x91, 0x145
DATA_PA = 0x3000_0000  # where the page of IOVA goes (SPA, or GPA behind a G-stage)
DATA_GPA = 0x1_0000_0000  # a guest page outside the 1 GiB of guest tables
UNMAPPED_GPA = 0xC000_0000  # G-stage root entry 3: never mapped

assert (IOVA >> 30) & 0x1FF == VPN2 and (IOVA >> 21) & 0x1FF == VPN1
assert (IOVA >> 12) & 0x1FF == VPN0

# TTYP values (§1.2)
UNTRANSLATED_EXEC, UNTRANSLATED_READ, UNTRANSLATED_WRITE = 1, 2, 3
TRANSLATED_READ = 6
ATS_REQUEST = 8
TTYP = {Access.EXECUTE: UNTRANSLATED_EXEC, Access.READ: UNTRANSLATED_READ,
        Access.WRITE: UNTRANSLATED_WRITE}


# --------------------------------------------------------------------------- #
# Set-ups
# --------------------------------------------------------------------------- #
def host_sv39(env: Env, *, tc: int = 0, ta_extra: int = 0, **perms):
    """DC of DID: iosatp = Sv39 at 0x1000_1000, PSCID; IOVA mapped 4 KiB -> DATA_PA."""
    pt = env.page_table(SV39)
    assert pt.root == SPA_BASE + 0x1000  # the second frame (the DDT root is the first)
    env.install(DeviceContext(tc=TC_V | tc, fsc=pt.atp(), ta=Ta.PSCID.put(PSCID) | ta_extra))
    pt.map(IOVA & ~0xFFF, DATA_PA, **perms)
    # map() allocated the level-1 and level-0 tables next, in that order.
    assert [e for e, _, _ in pt.walk_path(IOVA)] == [
        0x1000_1000 + VPN2 * 8, 0x1000_2000 + VPN1 * 8, 0x1000_3000 + VPN0 * 8]
    return pt


ROOT_PTE = 0x1000_1000 + VPN2 * 8  # 0x1000_1080
L1_PTE = 0x1000_2000 + VPN1 * 8  # 0x1000_2488
LEAF_PTE = 0x1000_3000 + VPN0 * 8  # 0x1000_3A28


def nested(env: Env, *, tc: int = 0, gs_perms=None, fs_root_gpa: int | None = None,
           fs_perms=None, guest_tables_writable: bool = True):
    """G-stage Sv39x4 (GSCID 7): guest tables GPA 0x8000_0000.. -> SPA 0x1_4000_0000..
    (one 1 GiB leaf) and DATA_GPA -> DATA_PA (4 KiB); guest Sv39 first stage at GPA
    0x8000_0000 mapping IOVA -> DATA_GPA. Returns (gs, fs)."""
    gs = env.page_table(SV39X4_SCHEME)
    gs.map(GPA_BASE, 0x1_4000_0000, 1 << 30, w=guest_tables_writable)
    gs.map(DATA_GPA, DATA_PA, **(gs_perms or {}))
    fs = env.guest_page_table(SV39)
    assert fs.root == GPA_BASE
    fs.map(IOVA & ~0xFFF, DATA_GPA, **(fs_perms or {}))
    fsc = fs.atp() if fs_root_gpa is None else Fsc.MODE.put(AtpMode.SV39) | Fsc.PPN.put(
        fs_root_gpa >> 12)
    env.install(DeviceContext(tc=TC_V | tc, iohgatp=gs_atp(gs), fsc=fsc,
                              ta=Ta.PSCID.put(PSCID)))
    return gs, fs


def g_stage_only(env: Env, *, tc: int = 0, **gs_perms):
    """First stage Bare, G-stage Sv39x4: the IOVA is a GPA. DATA_GPA -> DATA_PA."""
    gs = env.page_table(SV39X4_SCHEME)
    gs.map(GPA_BASE, 0x1_4000_0000, 1 << 30)
    gs.map(DATA_GPA, DATA_PA, **gs_perms)
    env.install(DeviceContext(tc=TC_V | tc, iohgatp=gs_atp(gs)))
    return gs


# MSI: the §9.1 example. mask = 10100110b selects bits 7, 5, 2, 1 of the guest page
# number; the pattern puts the interrupt files at page numbers 0x10_0000 | x.
MSI_MASK = 0b1010_0110
MSI_PATTERN = 0x10_0000
# The unmasked bits (b, d, e, h) must equal the pattern's (0); the masked ones are free:
# x = abcdefgh = 10100100b -> extract(x, mask) = acfg = 1110b = 14
MSI_GPA = (MSI_PATTERN | 0b1010_0100) << 12  # 0x1_000A_4000
MSI_INDEX = 14
IMSIC_PA = 0x2800_0000


def msi_device(env: Env, dw0: int | None = None, dw1: int = 0):
    """Extended DC: first stage Bare, G-stage active, flat MSI table of 16 entries whose
    entry 14 is a basic-mode PTE to IMSIC_PA (or the raw dw0/dw1 given)."""
    assert MSI_GPA == 0x1_000A_4000
    assert arch.msi_extract(MSI_GPA >> 12, MSI_MASK) == MSI_INDEX
    gs = env.page_table(SV39X4_SCHEME)
    gs.map(DATA_GPA, DATA_PA)
    msi = MsiPageTable(env.memory, env.alloc, 16)
    if dw0 is None:
        msi.set_basic(MSI_INDEX, IMSIC_PA >> 12)
    else:
        msi.set_raw(MSI_INDEX, dw0, dw1)
    env.install(DeviceContext(tc=TC_V, iohgatp=gs_atp(gs), msiptp=msi.msiptp(),
                              msi_addr_mask=MSI_MASK, msi_addr_pattern=MSI_PATTERN))
    assert msi.entry_address(MSI_INDEX) == msi.base + 14 * 16
    return msi


def pdt_device(env: Env, mode=PdtpMode.PD8, *, tc: int = 0, pc: ProcessContext | None = None,
               pid: int = 3):
    """DC with PDTV=1 (host, G-stage Bare): a PDT of ``mode`` holding the PC of ``pid``
    (default: ENS=1, Sv39 first stage mapping IOVA -> DATA_PA)."""
    pt = env.page_table(SV39)
    pt.map(IOVA & ~0xFFF, DATA_PA)
    pdt = ProcessDirectory(env.memory, env.alloc, mode)
    if pc is None:
        pc = ProcessContext(ta=PcTa.V.mask | PcTa.ENS.mask | PcTa.PSCID.put(PSCID),
                            fsc=pt.atp())
    pdt.install(pid, pc)
    env.install(DeviceContext(tc=TC_V | Tc.PDTV.mask | tc, fsc=pdt.pdtp()))
    return pdt


def check(outcome, expected_record):
    assert not outcome.response.ok, f"expected a fault, got {outcome.response}"
    assert outcome.response.cause == expected_record.cause, outcome.reason
    assert outcome.record == expected_record, outcome.reason
    assert outcome.response.reported


# --------------------------------------------------------------------------- #
# 1, 5, 7: access faults on page-table accesses (and execute from an MSI page)
# --------------------------------------------------------------------------- #
def test_cause_1_instruction_access_fault_on_pte_load():
    # §5.3 step 1: "PMA/PMP violation -> access fault for the original type (1/5/7)".
    env = Env()
    host_sv39(env, x=1)
    env.memory.inject_fault(ROOT_PTE, 8, FaultKind.ACCESS)
    check(env.translate(IOVA, Access.EXECUTE),
          record(Cause.INSTRUCTION_ACCESS_FAULT, UNTRANSLATED_EXEC, iova=IOVA))


def test_cause_1_execute_from_msi_page():
    # §9.3 step 6: MSI page permissions are R=W=U=1, X=0: "Untranslated or Translated
    # read-for-execute -> cause 1".
    env = Env()
    msi_device(env)
    check(env.translate(MSI_GPA, Access.EXECUTE),
          record(Cause.INSTRUCTION_ACCESS_FAULT, UNTRANSLATED_EXEC, iova=MSI_GPA))


def test_cause_5_read_access_fault_on_pte_load():
    # §5.3 step 1 on the level-1 PTE at 0x1000_2000 + VPN[1]*8 = 0x1000_2488.
    env = Env()
    host_sv39(env)
    env.memory.inject_fault(L1_PTE, 8, FaultKind.ACCESS)
    check(env.translate(IOVA), record(Cause.READ_ACCESS_FAULT, UNTRANSLATED_READ, iova=IOVA))


def test_cause_5_gstage_pte_access_fault_while_walking_first_stage():
    # §5.3: a G-stage PTE load for the first-stage root PTE's GPA (0x8000_0000 +
    # VPN[2]*8 = 0x8000_0080; G-stage VPN[2] = GPA[40:30] = 2) is refused: an access
    # fault of the original (read) type; not a guest-page fault, so iotval2 = 0.
    env = Env()
    gs, _ = nested(env)
    env.memory.inject_fault(gs.root + 2 * 8, 8, FaultKind.ACCESS)
    check(env.translate(IOVA), record(Cause.READ_ACCESS_FAULT, UNTRANSLATED_READ, iova=IOVA))


def test_cause_7_write_access_fault_on_pte_load():
    env = Env()
    host_sv39(env)
    env.memory.inject_fault(LEAF_PTE, 8, FaultKind.ACCESS)
    check(env.translate(IOVA, Access.WRITE),
          record(Cause.WRITE_ACCESS_FAULT, UNTRANSLATED_WRITE, iova=IOVA))


def test_cause_7_refused_a_d_update_store():
    # §5.5: "A store PMA/PMP violation [on the A/D update] -> access fault" (original
    # type: write). The leaf has D=0, SADE=1: the CAS at 0x1000_3A28 is refused.
    env = Env(memory=CasRefusingMemory())
    host_sv39(env, tc=Tc.SADE.mask, d=0)
    env.memory.refuse_cas.add(LEAF_PTE)
    check(env.translate(IOVA, Access.WRITE),
          record(Cause.WRITE_ACCESS_FAULT, UNTRANSLATED_WRITE, iova=IOVA))


# --------------------------------------------------------------------------- #
# 12, 13, 15: first-stage page faults
# --------------------------------------------------------------------------- #
def test_cause_12_execute_without_x():
    # §5.4: "read-for-execute: FS leaf needs X=1".
    env = Env()
    host_sv39(env, x=0)
    check(env.translate(IOVA, Access.EXECUTE),
          record(Cause.INSTRUCTION_PAGE_FAULT, UNTRANSLATED_EXEC, iova=IOVA))


def test_cause_12_supervisor_execute_from_user_page():
    # §4.3: "Supervisor execute from a U=1 page is always denied, whatever SUM".
    env = Env()
    pt = env.page_table(SV39)
    pt.map(IOVA & ~0xFFF, DATA_PA, x=1, u=1)
    pdt = ProcessDirectory(env.memory, env.alloc, PdtpMode.PD8)
    pdt.install(9, ProcessContext(ta=PcTa.V.mask | PcTa.ENS.mask | PcTa.SUM.mask, fsc=pt.atp()))
    env.install(DeviceContext(tc=TC_V | Tc.PDTV.mask, fsc=pdt.pdtp()))
    out = env.translate(IOVA, Access.EXECUTE, pid=9, priv=Priv.SUPERVISOR)
    check(out, record(Cause.INSTRUCTION_PAGE_FAULT, UNTRANSLATED_EXEC, iova=IOVA, pid=9,
                      pv=True, priv=True))
    assert env.translate(IOVA, Access.READ, pid=9, priv=Priv.SUPERVISOR).response.ok  # SUM=1


# Each case: (id, rule quoted from the digest, how to break the walk of IOVA for a read).
PAGE_FAULT_13_CASES = [
    ("leaf_v0", "§5.3 step 2: V=0 -> page fault",
     lambda env, pt: env.memory.write64(LEAF_PTE, leaf(DATA_PA, v=0))),
    ("w_without_r", "§5.2: XWR=010 (W without R) is reserved -> fault",
     lambda env, pt: env.memory.write64(LEAF_PTE, leaf(DATA_PA, r=0, w=1))),
    ("wx_without_r", "§5.2: XWR=110 is reserved -> fault",
     lambda env, pt: env.memory.write64(LEAF_PTE, leaf(DATA_PA, r=0, w=1, x=1))),
    ("reserved_bit_54", "§5.2: [58:54] reserved, must be 0",
     lambda env, pt: env.memory.write64(LEAF_PTE, leaf(DATA_PA) | 1 << 54)),
    ("bit_60_without_svrsw60t59b", "§5.2: [60:59] reserved unless Svrsw60t59b",
     lambda env, pt: env.memory.write64(LEAF_PTE, leaf(DATA_PA) | 1 << 60)),
    ("pbmt_3", "§5.2: PBMT 3 reserved (fault)",
     lambda env, pt: env.memory.write64(LEAF_PTE, leaf(DATA_PA, pbmt=3))),
    ("n_on_superpage", "§5.2: N only valid on a level-0 leaf",
     lambda env, pt: env.memory.write64(L1_PTE, leaf(0x4000_0000, n=1))),
    ("napot_bad_ppn", "§5.2: N needs PPN[3:0]=1000b (64 KiB)",
     lambda env, pt: env.memory.write64(LEAF_PTE, leaf(DATA_PA | 0x4000, n=1))),
    ("nonleaf_a", "§5.2: non-leaf D, A, U, N, PBMT are reserved",
     lambda env, pt: env.memory.write64(ROOT_PTE, pointer(0x1000_2000) | Pte.A.mask)),
    ("nonleaf_d", "§5.2: non-leaf D reserved",
     lambda env, pt: env.memory.write64(L1_PTE, pointer(0x1000_3000) | Pte.D.mask)),
    ("nonleaf_u", "§5.2: non-leaf U reserved",
     lambda env, pt: env.memory.write64(L1_PTE, pointer(0x1000_3000) | Pte.U.mask)),
    ("nonleaf_n", "§5.2: non-leaf N reserved",
     lambda env, pt: env.memory.write64(L1_PTE, pointer(0x1000_3000) | Pte.N.mask)),
    ("nonleaf_pbmt", "§5.2: PBMT reserved in non-leaf",
     lambda env, pt: env.memory.write64(L1_PTE, pointer(0x1000_3000) | Pte.PBMT.put(1))),
    ("pointer_at_level_0", "§5.3 step 3: i-1 < 0 -> page fault",
     lambda env, pt: env.memory.write64(LEAF_PTE, pointer(0x1000_4000))),
    ("misaligned_superpage", "§5.3 step 4: leaf at i>0 with PPN[i-1:0] != 0",
     lambda env, pt: env.memory.write64(L1_PTE, leaf(0x4000_1000))),
    ("user_request_u0", "§5.4: a User request needs U=1",
     lambda env, pt: env.memory.write64(LEAF_PTE, leaf(DATA_PA, u=0))),
    ("read_without_r", "§5.4: read needs R=1 (an execute-only page)",
     lambda env, pt: env.memory.write64(LEAF_PTE, leaf(DATA_PA, r=0, w=0, x=1))),
    ("a0_without_sade", "§5.5: A=0 with SADE=0 -> page fault",
     lambda env, pt: env.memory.write64(LEAF_PTE, leaf(DATA_PA, a=0))),
]


@pytest.mark.parametrize("name, rule, breaks", PAGE_FAULT_13_CASES,
                         ids=[c[0] for c in PAGE_FAULT_13_CASES])
def test_cause_13_read_page_fault(name, rule, breaks):
    env = Env()
    pt = host_sv39(env)
    assert env.translate(IOVA, engine=None).response.ok  # sound before breaking it
    env.engine.flush_all()
    breaks(env, pt)
    check(env.translate(IOVA), record(Cause.READ_PAGE_FAULT, UNTRANSLATED_READ, iova=IOVA))


def test_cause_13_pbmt_without_svpbmt():
    # §5.2: PBMT "reserved entirely if Svpbmt=0".
    env = Env(arch.capabilities_value(svpbmt=False))
    host_sv39(env, pbmt=1)
    check(env.translate(IOVA), record(Cause.READ_PAGE_FAULT, UNTRANSLATED_READ, iova=IOVA))


def test_cause_13_non_canonical_iova():
    # §5.1: Sv39 needs IOVA[63:39] all equal to IOVA[38]; bit 39 alone breaks that.
    env = Env()
    host_sv39(env)
    iova = IOVA | 1 << 39
    check(env.translate(iova), record(Cause.READ_PAGE_FAULT, UNTRANSLATED_READ, iova=iova))


def test_cause_13_supervisor_read_of_user_page_without_sum():
    # §5.4: "U=1 pages OK for read/write only if PC.ta.SUM=1".
    env = Env()
    pdt_device(env, pid=3)
    out = env.translate(IOVA, pid=3, priv=Priv.SUPERVISOR)
    check(out, record(Cause.READ_PAGE_FAULT, UNTRANSLATED_READ, iova=IOVA, pid=3, pv=True,
                      priv=True))


def test_cause_15_write_without_w():
    env = Env()
    host_sv39(env, w=0)
    check(env.translate(IOVA, Access.WRITE),
          record(Cause.WRITE_PAGE_FAULT, UNTRANSLATED_WRITE, iova=IOVA))


def test_cause_15_dirty_clear_without_sade():
    # §5.5: "write and D=0" with SADE=0 -> page fault 15.
    env = Env()
    host_sv39(env, d=0)
    check(env.translate(IOVA, Access.WRITE),
          record(Cause.WRITE_PAGE_FAULT, UNTRANSLATED_WRITE, iova=IOVA))
    assert env.translate(IOVA, Access.READ).response.ok  # reads do not need D


# --------------------------------------------------------------------------- #
# 20, 21, 23: guest-page faults
# --------------------------------------------------------------------------- #
def test_cause_20_gstage_execute_without_x():
    # §5.4: G-stage leaf needs X=1 for read-for-execute. First stage Bare: the IOVA is
    # the GPA; iotval2 = GPA[63:2] = 0x1_0000_0678 (bits 1:0 of 0x...67A cleared).
    env = Env()
    g_stage_only(env, x=0)
    gpa = DATA_GPA | 0x67A
    check(env.translate(gpa, Access.EXECUTE),
          record(Cause.INSTRUCTION_GUEST_PAGE_FAULT, UNTRANSLATED_EXEC, iova=gpa,
                 iotval2=0x1_0000_0678))


def test_cause_21_gstage_leaf_not_valid():
    # §5.3 step 2 on the G-stage: V=0 -> guest-page fault; iotval2 = GPA with bits 1:0
    # cleared: 0x1_0000_0567 -> 0x1_0000_0564.
    env = Env()
    gs = g_stage_only(env)
    gs.unmap(DATA_GPA)
    gpa = DATA_GPA | 0x567
    check(env.translate(gpa), record(Cause.READ_GUEST_PAGE_FAULT, UNTRANSLATED_READ, iova=gpa,
                                     iotval2=0x1_0000_0564))


def test_cause_21_gstage_user_bit_clear():
    # §1.4 notes: "GS U-bit check treats every access as User" -> U=0 faults.
    env = Env()
    g_stage_only(env, u=0)
    check(env.translate(DATA_GPA), record(Cause.READ_GUEST_PAGE_FAULT, UNTRANSLATED_READ,
                                          iova=DATA_GPA, iotval2=DATA_GPA))


def test_cause_21_gpa_wider_than_sv39x4():
    # §5.1: Sv39x4 needs GPA[63:41] = 0; 1 << 41 is one bit too wide.
    env = Env()
    g_stage_only(env)
    gpa = 1 << 41 | 0x10
    check(env.translate(gpa), record(Cause.READ_GUEST_PAGE_FAULT, UNTRANSLATED_READ, iova=gpa,
                                     iotval2=gpa))


def test_cause_21_implicit_read_of_first_stage_pte():
    # §5.4: "Faults from GS while serving FS walk ... report the original access type
    # cause, iotval2 = PTE GPA, bit0=1". The first-stage root is at GPA 0xC000_0000
    # (unmapped); its PTE for IOVA is at 0xC000_0000 + VPN[2]*8 = 0xC000_0080.
    env = Env()
    nested(env, fs_root_gpa=UNMAPPED_GPA)
    check(env.translate(IOVA), record(Cause.READ_GUEST_PAGE_FAULT, UNTRANSLATED_READ,
                                      iova=IOVA, iotval2=0xC000_0080 | 0b01))


def test_cause_21_implicit_read_of_pdt_entry():
    # §4.5 step 2: PDT addresses are GPAs when the G-stage is active; a guest-page fault
    # on them is reported for the original type with iotval2 bit0=1. PD8 root at GPA
    # 0xC000_0000 (unmapped): PC of pid 3 at 0xC000_0000 + 3*16 = 0xC000_0030.
    env = Env()
    gs = env.page_table(SV39X4_SCHEME)
    gs.map(GPA_BASE, 0x1_4000_0000, 1 << 30)
    env.install(DeviceContext(tc=TC_V | Tc.PDTV.mask, iohgatp=gs_atp(gs),
                              fsc=Fsc.MODE.put(PdtpMode.PD8) | Fsc.PPN.put(UNMAPPED_GPA >> 12)))
    check(env.translate(IOVA, pid=3), record(Cause.READ_GUEST_PAGE_FAULT, UNTRANSLATED_READ,
                                             iova=IOVA, pid=3, pv=True,
                                             iotval2=0xC000_0030 | 0b01))


def test_cause_23_gstage_write_without_w():
    env = Env()
    g_stage_only(env, w=0)
    check(env.translate(DATA_GPA + 8, Access.WRITE),
          record(Cause.WRITE_GUEST_PAGE_FAULT, UNTRANSLATED_WRITE, iova=DATA_GPA + 8,
                 iotval2=DATA_GPA + 8))


def test_cause_23_gstage_dirty_clear_without_gade():
    # §5.5: G-stage "(write and D=0) with GADE=0 -> guest-page fault 23".
    env = Env()
    g_stage_only(env, d=0)
    check(env.translate(DATA_GPA, Access.WRITE),
          record(Cause.WRITE_GUEST_PAGE_FAULT, UNTRANSLATED_WRITE, iova=DATA_GPA,
                 iotval2=DATA_GPA))


def test_cause_23_implicit_write_for_first_stage_a_d_update():
    # §5.4: "implicit write (FS A/D update): GS needs W=1"; iotval2 bit1=1 for a write.
    # Guest tables are mapped read-only by the G-stage; the first-stage leaf has D=0 and
    # SADE=1, so the update of the leaf PTE at GPA 0x8000_2000 + VPN[0]*8 = 0x8000_2A28
    # needs a G-stage write: iotval2 = 0x8000_2A28 | 0b11.
    env = Env()
    _, fs = nested(env, tc=Tc.SADE.mask, fs_perms={"d": 0}, guest_tables_writable=False)
    assert fs.walk_path(IOVA, phys=False)[-1][0] == 0x8000_2A28
    check(env.translate(IOVA, Access.WRITE),
          record(Cause.WRITE_GUEST_PAGE_FAULT, UNTRANSLATED_WRITE, iova=IOVA,
                 iotval2=0x8000_2A28 | 0b11))


# --------------------------------------------------------------------------- #
# 256-260: the device directory and the transaction type
# --------------------------------------------------------------------------- #
def test_cause_256_all_inbound_transactions_disallowed():
    # Step 1: ddtp.iommu_mode == Off -> stop(256).
    env = Env()
    out = env.translate(0x1000, Access.WRITE, ddtp=0)
    check(out, record(Cause.ALL_INBOUND_DISALLOWED, UNTRANSLATED_WRITE, iova=0x1000))


def test_cause_257_ddt_entry_load_access_fault_non_leaf():
    # §2.5 step 1 with a 2LVL DDT (extended: DDI[1] = device_id[14:6]): device 0x45 has
    # DDI[1] = 1, so its non-leaf entry is at root + 1*8 = 0x1000_0008.
    env = Env(mode=DdtpMode.LVL2)
    env.install(DeviceContext(tc=TC_V), device_id=0x45)
    env.memory.inject_fault(SPA_BASE + 8, 8, FaultKind.ACCESS)
    check(env.translate(0x1000, device_id=0x45),
          record(Cause.DDT_LOAD_ACCESS_FAULT, UNTRANSLATED_READ, iova=0x1000, device_id=0x45))


def test_cause_257_ddt_entry_load_access_fault_device_context():
    # §2.5 step 2: the 64-byte DC of device 5 at 0x1000_0000 + 5*64 = 0x1000_0140.
    env = Env()
    assert env.install(DeviceContext(tc=TC_V)) == 0x1000_0140
    env.memory.inject_fault(0x1000_0140 + 0x30, 8, FaultKind.ACCESS)  # any dword of it
    check(env.translate(0x1000), record(Cause.DDT_LOAD_ACCESS_FAULT, UNTRANSLATED_READ,
                                        iova=0x1000))


def test_cause_258_ddt_entry_not_valid_non_leaf():
    # §2.5 step 1: non-leaf DDTE V=0 -> 258 (3LVL: device 0x8000 has DDI[2] = 1).
    env = Env(mode=DdtpMode.LVL3)
    env.ddt.set_raw_ddte(0x8000, 2, pointer(0x1800_0000, v=0))
    check(env.translate(0x1000, device_id=0x8000),
          record(Cause.DDT_ENTRY_NOT_VALID, UNTRANSLATED_READ, iova=0x1000, device_id=0x8000))


def test_cause_258_ddt_entry_not_valid_device_context():
    # §2.5 step 3: DC.tc.V=0 -> 258; DTF is not honoured (the DC is not located).
    env = Env()
    env.install(DeviceContext(tc=Tc.DTF.mask))  # V=0
    check(env.translate(0x1000), record(Cause.DDT_ENTRY_NOT_VALID, UNTRANSLATED_READ,
                                        iova=0x1000))


def test_cause_259_non_leaf_ddt_entry_reserved_bits():
    # §2.5 step 1: "reserved bit set -> 259" (bit 1 of a non-leaf DDTE).
    env = Env(mode=DdtpMode.LVL2)
    env.ddt.set_raw_ddte(0x45, 1, pointer(0x1800_0000) | 0b10)
    check(env.translate(0x1000, device_id=0x45),
          record(Cause.DDT_ENTRY_MISCONFIGURED, UNTRANSLATED_READ, iova=0x1000,
                 device_id=0x45))


_ATS_CAPS = arch.capabilities_value(ats=True, t2gpa=True)
_SV39X4_ROOT = Iohgatp.MODE.put(arch.SV39X4) | Iohgatp.PPN.put(0x2000_0000 >> 12)
# Each case: (id, the §3.7 rule, capabilities, fctl, DC fields). Every DC has V=1.
DC_MISCONFIGURATIONS = [
    ("tc_reserved_bit_12", "check 1: reserved bits in tc [23:12]", CAPS, 0,
     {"tc": 1 << 12}),
    ("tc_reserved_bit_32", "check 1: reserved bits in tc [63:32]", CAPS, 0,
     {"tc": 1 << 32}),
    ("ta_reserved_bit_0", "check 1: ta [11:0] reserved", CAPS, 0, {"ta": 1}),
    ("ta_rcid_without_qosid", "check 1: RCID/MCID reserved when capabilities.QOSID=0",
     CAPS, 0, {"ta": Ta.RCID.put(1)}),
    ("fsc_reserved_bit_44", "check 1: fsc [59:44] reserved", CAPS, 0, {"fsc": 1 << 44}),
    ("msiptp_reserved_bit_44", "check 1: msiptp [59:44] reserved", CAPS, 0,
     {"iohgatp": _SV39X4_ROOT, "msiptp": 1 << 44}),
    ("msi_addr_mask_bit_52", "check 1: msi_addr_mask [63:52] reserved", CAPS, 0,
     {"msi_addr_mask": 1 << 52}),
    ("msi_addr_pattern_above_mgpaw", ("§3.6: pattern bits [51:MGPAW-12] reserved; Sv39x4: "
     "MGPAW=41 -> bit 29 is reserved"), CAPS, 0,
     {"iohgatp": _SV39X4_ROOT, "msi_addr_pattern": 1 << 29}),
    ("reserved_dword_7", "check 1: the reserved dword at 0x38", CAPS, 0, {"reserved": 1}),
    ("dpe_without_pdtv", "check 12: PDTV=0 and DPE=1", CAPS, 0, {"tc": Tc.DPE.mask}),
    ("en_ats_without_ats", "check 2: capabilities.ATS=0 and EN_ATS=1", CAPS, 0,
     {"tc": Tc.EN_ATS.mask}),
    ("en_pri_without_ats", "check 2: capabilities.ATS=0 and EN_PRI=1", CAPS, 0,
     {"tc": Tc.EN_ATS.mask | Tc.EN_PRI.mask}),
    ("t2gpa_without_en_ats", "check 3: EN_ATS=0 and T2GPA=1", _ATS_CAPS, 0,
     {"tc": Tc.T2GPA.mask, "iohgatp": _SV39X4_ROOT}),
    ("en_pri_without_en_ats", "check 4: EN_ATS=0 and EN_PRI=1", _ATS_CAPS, 0,
     {"tc": Tc.EN_PRI.mask}),
    ("prpr_without_en_pri", "check 5: EN_PRI=0 and PRPR=1", _ATS_CAPS, 0,
     {"tc": Tc.EN_ATS.mask | Tc.PRPR.mask}),
    ("t2gpa_without_capability", "check 6: capabilities.T2GPA=0 and T2GPA=1",
     arch.capabilities_value(ats=True), 0,
     {"tc": Tc.EN_ATS.mask | Tc.T2GPA.mask, "iohgatp": _SV39X4_ROOT}),
    ("t2gpa_with_bare_g_stage", "check 7: T2GPA=1 and iohgatp.MODE=Bare", _ATS_CAPS, 0,
     {"tc": Tc.EN_ATS.mask | Tc.T2GPA.mask}),
    ("pdtp_pd20_unsupported", "check 8: PDTV=1 and PD20 without capabilities.PD20",
     arch.capabilities_value(pd20=False), 0,
     {"tc": Tc.PDTV.mask, "fsc": Fsc.MODE.put(PdtpMode.PD20)}),
    ("pdtp_mode_reserved", "check 8/1: pdtp.MODE 4 is reserved", CAPS, 0,
     {"tc": Tc.PDTV.mask, "fsc": Fsc.MODE.put(4)}),
    ("iosatp_mode_reserved", "check 9: iosatp.MODE 1 is reserved (SXL=0)", CAPS, 0,
     {"fsc": Fsc.MODE.put(1)}),
    ("iosatp_mode_custom", "check 9: iosatp.MODE 14 is custom: not supported here", CAPS, 0,
     {"fsc": Fsc.MODE.put(14)}),
    ("iosatp_sv57_unsupported", "check 10: Sv57 with capabilities.Sv57=0",
     arch.capabilities_value(sv57=False), 0, {"fsc": Fsc.MODE.put(AtpMode.SV57)}),
    ("sxl_without_gxl", "check 20: fctl.GXL=0 and not writable -> SXL must be 0", CAPS, 0,
     {"tc": Tc.SXL.mask}),
    ("iohgatp_mode_reserved", "check 13: iohgatp.MODE 1 reserved (GXL=0)", CAPS, 0,
     {"iohgatp": Iohgatp.MODE.put(1)}),
    ("iohgatp_sv48x4_unsupported", "check 14: Sv48x4 without capabilities.Sv48x4",
     arch.capabilities_value(sv48x4=False), 0,
     {"iohgatp": Iohgatp.MODE.put(arch.SV48X4) | Iohgatp.PPN.put(0x2000_0000 >> 12)}),
    ("msiptp_mode_reserved", "check 16: MSI_FLAT=1 and msiptp.MODE not Off/Flat", CAPS, 0,
     {"iohgatp": _SV39X4_ROOT, "msiptp": Msiptp.MODE.put(2)}),
    ("iohgatp_root_not_16k_aligned", "check 17: iohgatp.PPN not 16 KiB aligned", CAPS, 0,
     {"iohgatp": Iohgatp.MODE.put(arch.SV39X4) | Iohgatp.PPN.put((0x2000_0000 >> 12) + 1)}),
    ("sade_without_amo_hwad", "check 18: AMO_HWAD=0 and SADE=1",
     arch.capabilities_value(amo_hwad=False), 0, {"tc": Tc.SADE.mask}),
    ("gade_without_amo_hwad", "check 18: AMO_HWAD=0 and GADE=1",
     arch.capabilities_value(amo_hwad=False), 0, {"tc": Tc.GADE.mask}),
    ("sbe_differs_from_be", "checks 19/21: END=0 and SBE != fctl.BE", CAPS, 0,
     {"tc": Tc.SBE.mask}),
    ("msi_flat_with_bare_g_stage", "check 23: iohgatp.MODE=Bare and msiptp.MODE!=Off",
     CAPS, 0, {"msiptp": Msiptp.MODE.put(1) | Msiptp.PPN.put(0x2000)}),
]


@pytest.mark.parametrize("name, rule, caps, fctl, fields", DC_MISCONFIGURATIONS,
                         ids=[c[0] for c in DC_MISCONFIGURATIONS])
def test_cause_259_device_context_misconfigured(name, rule, caps, fctl, fields):
    # §2.5 step 3 / §3.7: a V=1 DC failing any check -> 259 (logged even with DTF=1).
    env = Env(caps, fctl=fctl)
    fields = dict(fields)
    fields["tc"] = fields.get("tc", 0) | TC_V | Tc.DTF.mask
    env.install(DeviceContext(**fields))
    check(env.translate(0x2000), record(Cause.DDT_ENTRY_MISCONFIGURED, UNTRANSLATED_READ,
                                        iova=0x2000))


def test_cause_259_dc_without_misconfiguration_is_accepted():
    # Control for the table above: the same DC with nothing broken translates (Bare).
    env = Env()
    env.install(DeviceContext(tc=TC_V | Tc.DTF.mask))
    assert env.translate(0x2000).response.ok


def test_cause_260_translated_request_in_bare_mode():
    # Step 2: Bare and a Translated request -> 260.
    env = Env()
    bare = arch.Ddtp.IOMMU_MODE.put(DdtpMode.BARE)
    out = env.translate(0x3000, addr_type=AddrType.TRANSLATED, ddtp=bare)
    check(out, record(Cause.TRANSACTION_TYPE_DISALLOWED, TRANSLATED_READ, iova=0x3000))


def test_cause_260_ats_translation_request_in_bare_mode():
    env = Env()
    bare = arch.Ddtp.IOMMU_MODE.put(DdtpMode.BARE)
    out = env.translate(0x3000, addr_type=AddrType.ATS_TRANSLATION_REQUEST, ddtp=bare)
    check(out, record(Cause.TRANSACTION_TYPE_DISALLOWED, ATS_REQUEST, iova=0x3000))


@pytest.mark.parametrize("mode, device_id", [
    (DdtpMode.LVL1, 0x40),  # extended 1LVL: DDI[1] = device_id[14:6] = 1 != 0
    (DdtpMode.LVL2, 0x8000),  # extended 2LVL: DDI[2] = device_id[23:15] = 1 != 0
])
def test_cause_260_device_id_too_wide(mode, device_id):
    # Step 5: "2LVL and DDI[2]!=0; 1LVL and (DDI[2]!=0 or DDI[1]!=0)".
    env = Env(mode=mode)
    check(env.translate(0x1000, device_id=device_id),
          record(Cause.TRANSACTION_TYPE_DISALLOWED, UNTRANSLATED_READ, iova=0x1000,
                 device_id=device_id))


def test_cause_260_translated_request_with_en_ats_0():
    # Step 7a: Translated request and tc.EN_ATS=0.
    env = Env()
    env.install(DeviceContext(tc=TC_V))
    check(env.translate(0x3000, addr_type=AddrType.TRANSLATED),
          record(Cause.TRANSACTION_TYPE_DISALLOWED, TRANSLATED_READ, iova=0x3000))


def test_cause_260_process_id_without_pdtv():
    # Step 7b: pv=1 and PDTV=0.
    env = Env()
    host_sv39(env)
    check(env.translate(IOVA, pid=1), record(Cause.TRANSACTION_TYPE_DISALLOWED,
                                             UNTRANSLATED_READ, iova=IOVA, pid=1, pv=True))


@pytest.mark.parametrize("mode, pid", [(PdtpMode.PD8, 0x100), (PdtpMode.PD17, 1 << 17)])
def test_cause_260_process_id_too_wide(mode, pid):
    # Step 7c: "PD8: PID[19:8]!=0; PD17: PID[19:17]!=0".
    env = Env()
    pdt_device(env, mode)
    check(env.translate(IOVA, pid=pid), record(Cause.TRANSACTION_TYPE_DISALLOWED,
                                               UNTRANSLATED_READ, iova=IOVA, pid=pid, pv=True))


def test_cause_260_supervisor_request_with_ens_0():
    # Step 15: Supervisor request and PC.ta.ENS=0.
    env = Env()
    pdt_device(env, pc=ProcessContext(ta=PcTa.V.mask, fsc=0))
    check(env.translate(IOVA, pid=3, priv=Priv.SUPERVISOR),
          record(Cause.TRANSACTION_TYPE_DISALLOWED, UNTRANSLATED_READ, iova=IOVA, pid=3,
                 pv=True, priv=True))


# --------------------------------------------------------------------------- #
# 261-263, 270: MSI translation
# --------------------------------------------------------------------------- #
def test_cause_261_msi_pte_load_access_fault():
    # §9.3 step 1: entry 14 at msiptp base + 14*16 is refused -> 261.
    env = Env()
    msi = msi_device(env)
    env.memory.inject_fault(msi.entry_address(MSI_INDEX), 16, FaultKind.ACCESS)
    check(env.translate(MSI_GPA, Access.WRITE),
          record(Cause.MSI_PTE_LOAD_ACCESS_FAULT, UNTRANSLATED_WRITE, iova=MSI_GPA))


def test_cause_262_msi_pte_not_valid():
    env = Env()
    msi_device(env, dw0=MsiPte.M.put(3) | MsiPte.PPN.put(IMSIC_PA >> 12))  # V=0
    check(env.translate(MSI_GPA, Access.WRITE),
          record(Cause.MSI_PTE_NOT_VALID, UNTRANSLATED_WRITE, iova=MSI_GPA))


_BASIC = MsiPte.V.mask | MsiPte.M.put(3) | MsiPte.PPN.put(IMSIC_PA >> 12)
MSI_MISCONFIGURATIONS = [
    ("mode_0", "§9.3 step 3: M in {0,2} -> 263", MsiPte.V.mask, CAPS),
    ("mode_2", "§9.3 step 3: M in {0,2} -> 263", MsiPte.V.mask | MsiPte.M.put(2), CAPS),
    ("basic_reserved_bit_3", "§9.3 step 4: basic mode reserved bits -> 263", _BASIC | 1 << 3,
     CAPS),
    ("basic_reserved_bit_54", "§9.3 step 4: basic mode reserved [62:54]", _BASIC | 1 << 54,
     CAPS),
    ("mrif_without_msi_mrif", "§9.3 step 5: M=1 and MSI_MRIF=0 -> 263",
     MsiPte.V.mask | MsiPte.M.put(1), CAPS),
    ("custom_c_bit", "§9.3 step 2: C=1 is implementation-defined; here: misconfigured",
     _BASIC | MsiPte.C.mask, CAPS),
]


@pytest.mark.parametrize("name, rule, dw0, caps", MSI_MISCONFIGURATIONS,
                         ids=[c[0] for c in MSI_MISCONFIGURATIONS])
def test_cause_263_msi_pte_misconfigured(name, rule, dw0, caps):
    env = Env(caps)
    msi_device(env, dw0=dw0)
    check(env.translate(MSI_GPA, Access.WRITE),
          record(Cause.MSI_PTE_MISCONFIGURED, UNTRANSLATED_WRITE, iova=MSI_GPA))


def test_cause_263_mrif_reserved_bits():
    # §9.3 step 5: "reserved bits set -> 263" (MRIF dword 1 bit 54) even with MSI_MRIF=1.
    env = Env(arch.capabilities_value(msi_mrif=True))
    dw0 = MsiPte.V.mask | MsiPte.M.put(1) | MsiPte.MRIF_ADDR.put(0x2900_0000 >> 9)
    msi_device(env, dw0=dw0, dw1=1 << 54)
    check(env.translate(MSI_GPA, Access.WRITE),
          record(Cause.MSI_PTE_MISCONFIGURED, UNTRANSLATED_WRITE, iova=MSI_GPA))


def test_cause_270_msi_pt_data_corruption():
    env = Env()
    msi = msi_device(env)
    env.memory.inject_fault(msi.entry_address(MSI_INDEX), 8, FaultKind.POISON)
    check(env.translate(MSI_GPA, Access.WRITE),
          record(Cause.MSI_PT_DATA_CORRUPTION, UNTRANSLATED_WRITE, iova=MSI_GPA))


# --------------------------------------------------------------------------- #
# 265-267, 269: the process directory
# --------------------------------------------------------------------------- #
def _pd17(env: Env):
    """PD17 PDT for pid 0x1_2345 (PDI[1] = 0x123, PDI[0] = 0x45): root at the frame after
    the page table's three, leaf table after it. Returns (root, leaf table)."""
    pdt = pdt_device(env, PdtpMode.PD17, pid=0x1_2345)
    leaf_table = env.memory.peek64(pdt.root + 0x123 * 8) >> 10 << 12
    return pdt.root, leaf_table


def test_cause_265_pdt_entry_load_access_fault_non_leaf():
    # §4.5 step 3: the non-leaf entry at root + PDI[1]*8 = root + 0x918 is refused.
    env = Env()
    root, _ = _pd17(env)
    env.memory.inject_fault(root + 0x918, 8, FaultKind.ACCESS)
    check(env.translate(IOVA, pid=0x1_2345), record(Cause.PDT_ENTRY_LOAD_ACCESS_FAULT,
                                                    UNTRANSLATED_READ, iova=IOVA,
                                                    pid=0x1_2345, pv=True))


def test_cause_265_pdt_entry_load_access_fault_process_context():
    # §4.5 step 4: the PC at leaf table + PDI[0]*16 = + 0x450 is refused.
    env = Env()
    _, leaf_table = _pd17(env)
    env.memory.inject_fault(leaf_table + 0x450 + 8, 8, FaultKind.ACCESS)
    check(env.translate(IOVA, pid=0x1_2345), record(Cause.PDT_ENTRY_LOAD_ACCESS_FAULT,
                                                    UNTRANSLATED_READ, iova=IOVA,
                                                    pid=0x1_2345, pv=True))


def _guest_pd8(env: Env):
    """PD8 PDT owned by a guest (root GPA 0x8000_0000) behind Sv39x4; returns gs."""
    gs = env.page_table(SV39X4_SCHEME)
    env.guest_memory(gs)
    pdt = env.guest_pdt(PdtpMode.PD8)
    assert pdt.root == GPA_BASE
    pdt.install(3, ProcessContext(ta=PcTa.V.mask, fsc=0))
    env.install(DeviceContext(tc=TC_V | Tc.PDTV.mask, iohgatp=gs_atp(gs), fsc=pdt.pdtp()))
    return gs


def test_cause_265_gstage_access_fault_translating_pdt_address():
    # §4.5 step 2: "GS access fault -> 265" while translating the PC's GPA 0x8000_0030:
    # the G-stage root entry for it (VPN[2] = GPA[40:30] = 2) is refused.
    env = Env()
    gs = _guest_pd8(env)
    env.memory.inject_fault(gs.root + 2 * 8, 8, FaultKind.ACCESS)
    check(env.translate(DATA_GPA, pid=3), record(Cause.PDT_ENTRY_LOAD_ACCESS_FAULT,
                                                 UNTRANSLATED_READ, iova=DATA_GPA, pid=3,
                                                 pv=True))


def test_cause_266_pdt_entry_not_valid_non_leaf():
    env = Env()
    root, leaf_table = _pd17(env)
    env.memory.write64(root + 0x918, pointer(leaf_table, v=0))
    check(env.translate(IOVA, pid=0x1_2345), record(Cause.PDT_ENTRY_NOT_VALID,
                                                    UNTRANSLATED_READ, iova=IOVA,
                                                    pid=0x1_2345, pv=True))


def test_cause_266_pdt_entry_not_valid_process_context():
    env = Env()
    pdt_device(env, pc=ProcessContext(ta=PcTa.ENS.mask, fsc=0))  # V=0
    check(env.translate(IOVA, pid=3), record(Cause.PDT_ENTRY_NOT_VALID, UNTRANSLATED_READ,
                                             iova=IOVA, pid=3, pv=True))


def test_cause_267_non_leaf_pdt_entry_reserved_bits():
    # §4.5 step 3: "reserved set -> 267" (bit 63 of a non-leaf PDTE).
    env = Env()
    root, leaf_table = _pd17(env)
    env.memory.write64(root + 0x918, pointer(leaf_table) | 1 << 63)
    check(env.translate(IOVA, pid=0x1_2345), record(Cause.PDT_ENTRY_MISCONFIGURED,
                                                    UNTRANSLATED_READ, iova=IOVA,
                                                    pid=0x1_2345, pv=True))


PC_MISCONFIGURATIONS = [
    ("ta_reserved_bit_3", "§4.4 check 1: PC.ta [11:3] reserved", CAPS,
     ProcessContext(ta=PcTa.V.mask | 1 << 3, fsc=0)),
    ("ta_reserved_bit_32", "§4.4 check 1: PC.ta [63:32] reserved", CAPS,
     ProcessContext(ta=PcTa.V.mask | 1 << 32, fsc=0)),
    ("fsc_reserved_bit_44", "§4.4 check 1: PC.fsc [59:44] reserved", CAPS,
     ProcessContext(ta=PcTa.V.mask, fsc=1 << 44)),
    ("fsc_mode_reserved", "§4.4 check 2: fsc.MODE 1 is not a valid encoding", CAPS,
     ProcessContext(ta=PcTa.V.mask, fsc=Fsc.MODE.put(1))),
    ("fsc_sv48_unsupported", "§4.4 check 3: Sv48 without capabilities.Sv48",
     arch.capabilities_value(sv48=False, sv57=False),
     ProcessContext(ta=PcTa.V.mask, fsc=Fsc.MODE.put(AtpMode.SV48))),
]


@pytest.mark.parametrize("name, rule, caps, pc", PC_MISCONFIGURATIONS,
                         ids=[c[0] for c in PC_MISCONFIGURATIONS])
def test_cause_267_process_context_misconfigured(name, rule, caps, pc):
    env = Env(caps)
    pdt_device(env, pc=pc)
    check(env.translate(IOVA, pid=3), record(Cause.PDT_ENTRY_MISCONFIGURED, UNTRANSLATED_READ,
                                             iova=IOVA, pid=3, pv=True))


def test_cause_268_ddt_data_corruption_non_leaf():
    env = Env(mode=DdtpMode.LVL2)
    env.install(DeviceContext(tc=TC_V), device_id=0x45)
    env.memory.inject_fault(SPA_BASE + 8, 8, FaultKind.POISON)
    check(env.translate(0x1000, device_id=0x45),
          record(Cause.DDT_DATA_CORRUPTION, UNTRANSLATED_READ, iova=0x1000, device_id=0x45))


def test_cause_268_ddt_data_corruption_device_context():
    # Logged even with DTF=1 in the (poisoned) DC: 268 is in the "always" column.
    env = Env()
    env.install(DeviceContext(tc=TC_V | Tc.DTF.mask))
    env.memory.inject_fault(0x1000_0140, 8, FaultKind.POISON)
    check(env.translate(0x1000), record(Cause.DDT_DATA_CORRUPTION, UNTRANSLATED_READ,
                                        iova=0x1000))


def test_cause_269_pdt_data_corruption_non_leaf():
    env = Env()
    root, _ = _pd17(env)
    env.memory.inject_fault(root + 0x918, 8, FaultKind.POISON)
    check(env.translate(IOVA, pid=0x1_2345), record(Cause.PDT_DATA_CORRUPTION,
                                                    UNTRANSLATED_READ, iova=IOVA,
                                                    pid=0x1_2345, pv=True))


def test_cause_269_pdt_data_corruption_process_context():
    env = Env()
    _, leaf_table = _pd17(env)
    env.memory.inject_fault(leaf_table + 0x450, 8, FaultKind.POISON)
    check(env.translate(IOVA, pid=0x1_2345), record(Cause.PDT_DATA_CORRUPTION,
                                                    UNTRANSLATED_READ, iova=IOVA,
                                                    pid=0x1_2345, pv=True))


def test_cause_269_poisoned_gstage_pte_translating_pdt_address():
    # §4.5 step 2: "GS poisoned data -> 269".
    env = Env()
    gs = _guest_pd8(env)
    env.memory.inject_fault(gs.root + 2 * 8, 8, FaultKind.POISON)
    check(env.translate(DATA_GPA, pid=3), record(Cause.PDT_DATA_CORRUPTION,
                                                 UNTRANSLATED_READ, iova=DATA_GPA, pid=3,
                                                 pv=True))


# --------------------------------------------------------------------------- #
# 274: poisoned page-table entries
# --------------------------------------------------------------------------- #
def test_cause_274_poisoned_first_stage_pte():
    # §5.3 step 1: "poisoned -> 274".
    env = Env()
    host_sv39(env)
    env.memory.inject_fault(LEAF_PTE, 8, FaultKind.POISON)
    check(env.translate(IOVA, Access.WRITE), record(Cause.PT_DATA_CORRUPTION,
                                                    UNTRANSLATED_WRITE, iova=IOVA))


def test_cause_274_poisoned_gstage_pte():
    # The G-stage root entry for DATA_GPA (VPN[2] = GPA[40:30] = 4) is poisoned.
    env = Env()
    gs = g_stage_only(env)
    env.memory.inject_fault(gs.root + 4 * 8, 8, FaultKind.POISON)
    check(env.translate(DATA_GPA), record(Cause.PT_DATA_CORRUPTION, UNTRANSLATED_READ,
                                          iova=DATA_GPA))


def test_cause_274_poisoned_gstage_pte_while_walking_first_stage():
    # Nested: the G-stage root entry 2 (guest tables) is poisoned; the first access of
    # the first-stage walk needs it.
    env = Env()
    gs, _ = nested(env)
    env.memory.inject_fault(gs.root + 2 * 8, 8, FaultKind.POISON)
    check(env.translate(IOVA, Access.EXECUTE),
          record(Cause.PT_DATA_CORRUPTION, UNTRANSLATED_EXEC, iova=IOVA))


def test_every_reportable_cause_has_a_test():
    causes = {int(name.split("_")[2]) for name in globals() if name.startswith("test_cause_")}
    assert causes == {1, 5, 7, 12, 13, 15, 20, 21, 23, 256, 257, 258, 259, 260, 261, 262,
                      263, 265, 266, 267, 268, 269, 270, 274}
