"""The reference IOMMU's register page: map, access rules, reset values, WARL/RO/RW1C
fields, HPM and the debug translation interface (digest §8)."""

from __future__ import annotations

import pytest

from iommu_fakes import (
    FakeOutcome, caps, enable_fq, fault, ipsr, make_iommu, queue_base,
)
from models import arch
from models.arch import (
    Access, Cap, Cqcsr, DdtpMode, Fctl, Hpmevt, HpmEvent, Igs, Ipsr, Priv, Reg, TrReqCtl,
)
from models.iommu import IOMMU, tr_response_value
from models.memory import Memory
from models.transaction import Response, Status

M32 = 0xFFFF_FFFF
M64 = (1 << 64) - 1


# --------------------------------------------------------------------------- #
# Reset values (§8.3) and construction checks
# --------------------------------------------------------------------------- #
def test_reset_values():
    iommu, _, _ = make_iommu()
    assert iommu.read_register(Reg.CAPABILITIES, 8) == arch.DEFAULT_CAPABILITIES
    assert iommu.read_register(Reg.DDTP, 8) == DdtpMode.OFF
    for reg in (Reg.CQCSR, Reg.FQCSR, Reg.IPSR, Reg.CQH, Reg.FQT):
        assert iommu.read_register(reg, 4) == 0, reg.name
    assert iommu.read_register(Reg.TR_REQ_CTL, 8) == 0
    assert iommu.read_register(Reg.FCTL, 4) == 0  # IGS=BOTH: WSI resets to fctl_reset
    assert iommu.wired_interrupts == set() and iommu.msi_log == []


def test_reset_mode_bare_and_fctl_reset_is_legalised():
    iommu, _, _ = make_iommu(ddtp_reset_mode=DdtpMode.BARE, fctl_reset=0xFFFF_FFFF)
    assert iommu.read_register(Reg.DDTP, 8) == DdtpMode.BARE
    # END=0 and no Sv32x4: only WSI survives
    assert iommu.read_register(Reg.FCTL, 4) == Fctl.WSI.mask


@pytest.mark.parametrize("kwargs, message", [
    ({"ddtp_reset_mode": DdtpMode.LVL1}, "Off or Bare"),
    ({"msi_vectors": 5}, "msi_vectors"),
    ({"hpm_counters": 0}, "hpm_counters"),
    ({"hpm_counters": 32}, "hpm_counters"),
    ({"capabilities": arch.DEFAULT_CAPABILITIES | Cap.IGS.put(3)}, "IGS"),
    ({"capabilities": Cap.PAS.set(arch.DEFAULT_CAPABILITIES, 60)}, "PAS"),
])
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_iommu(**kwargs)


def test_default_engine_is_built_lazily_from_models_translate():
    pytest.importorskip("models.translate")
    iommu = IOMMU(Memory(), iotlb_entries=8)
    assert type(iommu.engine).__name__ == "TranslationEngine"


# --------------------------------------------------------------------------- #
# Access rules (§8.2)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("offset, size, message", [
    (Reg.FCTL, 8, "8-byte access to the 32-bit register fctl"),
    (Reg.CQH, 8, "32-bit register cqh"),
    (Reg.IOCOUNTOVF, 8, "iocountovf"),
    (arch.msi_cfg(0)[1], 8, "msi_data_0"),
    (Reg.IOMMU_QOSID, 8, "iommu_qosid"),
    (Reg.DDTP + 2, 4, "naturally aligned"),
    (Reg.DDTP + 4, 8, "naturally aligned"),
    (0x1000, 4, "outside the 4 KiB"),
    (-4, 4, "outside the 4 KiB"),
    (Reg.FCTL, 2, "4 or 8 bytes"),
])
def test_bad_accesses_raise(offset, size, message):
    iommu, _, _ = make_iommu()
    with pytest.raises(ValueError, match=message):
        iommu.read_register(offset, size)
    with pytest.raises(ValueError, match=message):
        iommu.write_register(offset, size, 0)


def test_value_wider_than_the_access_raises():
    iommu, _, _ = make_iommu()
    with pytest.raises(ValueError, match="does not fit"):
        iommu.write_register(Reg.CQT, 4, 1 << 32)


@pytest.mark.parametrize("offset", [0x00C, 0x274, 0x2B0, 0x2F0, 0x400, 0xFF8])
def test_reserved_and_custom_space_reads_zero_and_ignores_writes(offset):
    iommu, _, _ = make_iommu()
    size = 8 if offset % 8 == 0 else 4
    iommu.write_register(offset, size, (1 << (8 * size)) - 1)
    assert iommu.read_register(offset, size) == 0


def test_capabilities_is_read_only_and_readable_in_halves():
    iommu, _, _ = make_iommu()
    iommu.write_register(Reg.CAPABILITIES, 8, 0)
    iommu.write_register(Reg.CAPABILITIES, 4, 0)
    caps_value = arch.DEFAULT_CAPABILITIES
    assert iommu.read_register(Reg.CAPABILITIES, 8) == caps_value
    assert iommu.read_register(Reg.CAPABILITIES, 4) == caps_value & M32
    assert iommu.read_register(Reg.CAPABILITIES + 4, 4) == caps_value >> 32


def test_four_byte_halves_of_64bit_registers():
    iommu, _, _ = make_iommu()
    # ddtp: high half first, then low half (the RV32 order, §8.2)
    iommu.write_register(Reg.DDTP + 4, 4, 0x0012_3456)
    iommu.write_register(Reg.DDTP, 4, 0x789A_BC00 | DdtpMode.LVL3)
    value = (0x0012_3456 << 32) | 0x789A_BC00 | DdtpMode.LVL3
    assert iommu.read_register(Reg.DDTP, 8) == value
    assert iommu.read_register(Reg.DDTP, 4) == value & M32
    assert iommu.read_register(Reg.DDTP + 4, 4) == value >> 32
    # a low-half write keeps the high half
    iommu.write_register(Reg.DDTP, 4, DdtpMode.BARE)
    assert iommu.read_register(Reg.DDTP, 8) == (0x0012_3456 << 32) | DdtpMode.BARE
    # a counter written in halves
    iommu.write_register(arch.iohpmctr(1), 4, 0xDEAD_BEEF)
    iommu.write_register(arch.iohpmctr(1) + 4, 4, 0x0123_4567)
    assert iommu.read_register(arch.iohpmctr(1), 8) == 0x0123_4567_DEAD_BEEF


# --------------------------------------------------------------------------- #
# fctl (§8.5)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("igs, written, expected_wsi", [
    (Igs.MSI, 1, 0), (Igs.WSI, 0, 1), (Igs.BOTH, 1, 1), (Igs.BOTH, 0, 0),
])
def test_fctl_wsi_follows_igs(igs, written, expected_wsi):
    iommu, _, _ = make_iommu(capabilities=caps(igs=igs))
    iommu.write_register(Reg.FCTL, 4, Fctl.WSI.put(written))
    assert Fctl.WSI.get(iommu.read_register(Reg.FCTL, 4)) == expected_wsi


def test_fctl_wsi_only_resets_to_one():
    iommu, _, _ = make_iommu(capabilities=caps(igs=Igs.WSI))
    assert iommu.read_register(Reg.FCTL, 4) == Fctl.WSI.mask


def test_fctl_be_needs_end_and_gxl_needs_sv32x4_reserved_bits_read_zero():
    iommu, _, _ = make_iommu()
    iommu.write_register(Reg.FCTL, 4, M32)
    assert iommu.read_register(Reg.FCTL, 4) == Fctl.WSI.mask
    iommu, _, _ = make_iommu(capabilities=caps(end=True, sv32x4=True))
    iommu.write_register(Reg.FCTL, 4, M32)
    assert iommu.read_register(Reg.FCTL, 4) == Fctl.BE.mask | Fctl.WSI.mask | Fctl.GXL.mask


# --------------------------------------------------------------------------- #
# ddtp (§2.1, §2.2)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("mode", list(DdtpMode))
def test_ddtp_legal_modes_are_kept(mode):
    iommu, _, _ = make_iommu()
    iommu.write_register(Reg.DDTP, 8, arch.Ddtp.PPN.put(0x1234) | mode)
    assert iommu.read_register(Reg.DDTP, 8) == arch.Ddtp.PPN.put(0x1234) | mode


@pytest.mark.parametrize("mode", [5, 9, 13, 14, 15])
def test_ddtp_reserved_and_custom_modes_keep_the_old_mode(mode):
    iommu, _, _ = make_iommu()
    iommu.write_register(Reg.DDTP, 8, DdtpMode.LVL2)
    iommu.write_register(Reg.DDTP, 8, arch.Ddtp.PPN.put(0x77) | mode)
    assert iommu.read_register(Reg.DDTP, 8) == arch.Ddtp.PPN.put(0x77) | DdtpMode.LVL2


def test_ddtp_busy_and_reserved_bits_read_zero_and_ppn_is_limited_by_pas():
    iommu, _, _ = make_iommu(capabilities=caps(pas=40))
    iommu.write_register(Reg.DDTP, 8, M64 & ~0xF | DdtpMode.LVL1)
    assert iommu.read_register(Reg.DDTP, 8) == arch.Ddtp.PPN.put((1 << 28) - 1) | DdtpMode.LVL1


def test_translate_passes_ddtp_and_fctl_to_the_engine():
    iommu, _, engine = make_iommu()
    iommu.write_register(Reg.DDTP, 8, arch.Ddtp.PPN.put(0x42) | DdtpMode.LVL3)
    iommu.write_register(Reg.FCTL, 4, Fctl.WSI.mask)
    from models.transaction import Request
    response = iommu.translate(Request(device_id=3, iova=0x5000, tag=99))
    assert response.ok and response.tag == 99
    _, request, ddtp, fctl = engine.calls[-1]
    assert (request.device_id, ddtp, fctl) == (3, arch.Ddtp.PPN.put(0x42) | DdtpMode.LVL3,
                                               Fctl.WSI.mask)


# --------------------------------------------------------------------------- #
# Queue base/head/tail (§8.6) and queue CSRs (§8.7)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("base_reg", [Reg.CQB, Reg.FQB])
def test_queue_base_fields(base_reg):
    iommu, _, _ = make_iommu(capabilities=caps(pas=48))
    iommu.write_register(base_reg, 8, M64)
    assert iommu.read_register(base_reg, 8) == (arch.QueueBase.PPN.put((1 << 36) - 1)
                                                | arch.QueueBase.LOG2SZ_1.put(31))
    iommu.write_register(base_reg, 8, queue_base(0x8000_0000, 4))
    assert iommu.read_register(base_reg, 8) == queue_base(0x8000_0000, 4)


def test_sw_owned_indexes_keep_only_log2sz_bits_and_iommu_owned_ones_are_read_only():
    iommu, _, _ = make_iommu()
    iommu.write_register(Reg.CQB, 8, queue_base(0x8000_0000, 2))  # 8 entries
    iommu.write_register(Reg.FQB, 8, queue_base(0x8010_0000, 0))  # 2 entries
    iommu.write_register(Reg.CQT, 4, 0xFFFF_FFFD)
    iommu.write_register(Reg.FQH, 4, 0xFFFF_FFFF)
    iommu.write_register(Reg.CQH, 4, 5)
    iommu.write_register(Reg.FQT, 4, 1)
    assert iommu.read_register(Reg.CQT, 4) == 5
    assert iommu.read_register(Reg.FQH, 4) == 1
    assert iommu.read_register(Reg.CQH, 4) == 0
    assert iommu.read_register(Reg.FQT, 4) == 0
    # shrinking the queue clears the SW index bits [31:LOG2SZ]
    iommu.write_register(Reg.CQB, 8, queue_base(0x8000_0000, 1))  # 4 entries
    assert iommu.read_register(Reg.CQT, 4) == 1


def test_queue_csr_enable_handshake_and_read_only_bits():
    iommu, _, _ = make_iommu()
    iommu.write_register(Reg.CQCSR, 4, M32 & ~Cqcsr.CQEN.mask & ~0xF00)
    assert iommu.read_register(Reg.CQCSR, 4) == Cqcsr.CIE.mask  # cqon/busy/reserved RO 0
    iommu.write_register(Reg.CQCSR, 4, Cqcsr.CQEN.mask)
    assert iommu.read_register(Reg.CQCSR, 4) == Cqcsr.CQEN.mask | Cqcsr.CQON.mask
    iommu.write_register(Reg.CQCSR, 4, 0)
    assert iommu.read_register(Reg.CQCSR, 4) == 0
    iommu.write_register(Reg.FQCSR, 4, arch.Fqcsr.FQEN.mask | arch.Fqcsr.FIE.mask)
    assert iommu.read_register(Reg.FQCSR, 4) == (arch.Fqcsr.FQEN.mask | arch.Fqcsr.FIE.mask
                                                 | arch.Fqcsr.FQON.mask)


# --------------------------------------------------------------------------- #
# Absent optional registers (§8.1, §8.2)
# --------------------------------------------------------------------------- #
def _absent(iommu: IOMMU, offset: int, size: int) -> bool:
    iommu.write_register(offset, size, (1 << (8 * size)) - 1)
    return iommu.read_register(offset, size) == 0


def test_page_request_queue_registers_absent_without_ats():
    iommu, _, _ = make_iommu()
    for offset, size in ((Reg.PQB, 8), (Reg.PQH, 4), (Reg.PQT, 4), (Reg.PQCSR, 4)):
        assert _absent(iommu, offset, size), hex(offset)
    iommu.write_register(Reg.ICVEC, 8, 0xFFFF)
    assert arch.Icvec.PIV.get(iommu.read_register(Reg.ICVEC, 8)) == 0


def test_page_request_queue_registers_present_with_ats():
    iommu, _, _ = make_iommu(capabilities=caps(ats=True))
    iommu.write_register(Reg.PQB, 8, queue_base(0x8000_0000, 3))
    iommu.write_register(Reg.PQH, 4, 5)
    iommu.write_register(Reg.PQCSR, 4, arch.Pqcsr.PQEN.mask)
    assert iommu.read_register(Reg.PQB, 8) == queue_base(0x8000_0000, 3)
    assert iommu.read_register(Reg.PQH, 4) == 5
    assert arch.Pqcsr.PQON.get(iommu.read_register(Reg.PQCSR, 4))


def test_hpm_registers_absent_without_hpm():
    iommu, _, _ = make_iommu(capabilities=caps(hpm=False))
    assert _absent(iommu, Reg.IOCOUNTINH, 4)
    assert _absent(iommu, Reg.IOHPMCYCLES, 8)
    assert _absent(iommu, arch.iohpmctr(1), 8)
    assert _absent(iommu, arch.iohpmevt(1), 8)
    iommu.tick(100)
    assert iommu.read_register(Reg.IOHPMCYCLES, 8) == 0


def test_counters_beyond_hpm_counters_are_absent():
    iommu, _, _ = make_iommu(hpm_counters=3)
    assert not _absent(iommu, arch.iohpmctr(3), 8)
    assert _absent(iommu, arch.iohpmctr(4), 8)
    assert _absent(iommu, arch.iohpmevt(4), 8)
    assert _absent(iommu, arch.iohpmctr(31), 8)


def test_debug_registers_absent_without_dbg():
    iommu, _, engine = make_iommu(capabilities=caps(dbg=False))
    assert _absent(iommu, Reg.TR_REQ_IOVA, 8)
    assert _absent(iommu, Reg.TR_REQ_CTL, 8)
    assert engine.calls == []  # Go was not acted on


def test_msi_cfg_tbl_absent_for_wsi_only_and_beyond_msi_vectors():
    iommu, _, _ = make_iommu(capabilities=caps(igs=Igs.WSI))
    addr, data, vec_ctl = arch.msi_cfg(0)
    assert _absent(iommu, addr, 8) and _absent(iommu, data, 4) and _absent(iommu, vec_ctl, 4)
    iommu, _, _ = make_iommu(msi_vectors=4)
    assert not _absent(iommu, arch.msi_cfg(3)[1], 4)
    assert _absent(iommu, arch.msi_cfg(4)[1], 4)


def test_iommu_qosid_absent_without_qosid_and_warl_with_it():
    iommu, _, _ = make_iommu()
    assert _absent(iommu, Reg.IOMMU_QOSID, 4)
    iommu, _, _ = make_iommu(capabilities=caps(qosid=True))
    iommu.write_register(Reg.IOMMU_QOSID, 4, M32)
    assert iommu.read_register(Reg.IOMMU_QOSID, 4) == 0x0FFF_0FFF


# --------------------------------------------------------------------------- #
# ipsr (RW1C, re-assertion), icvec, msi_cfg_tbl (§8.9)
# --------------------------------------------------------------------------- #
def test_ipsr_is_rw1c_and_reasserts_while_the_condition_holds():
    iommu, _, _ = make_iommu()
    iommu.write_register(Reg.CQCSR, 4, Cqcsr.CQEN.mask | Cqcsr.CIE.mask)
    iommu.cq.csr |= Cqcsr.CMD_ILL.mask  # as if an illegal command had been decoded
    iommu._update_interrupts()
    assert ipsr(iommu) == Ipsr.CIP.mask
    iommu.write_register(Reg.IPSR, 4, 0)  # writing 0 changes nothing
    assert ipsr(iommu) == Ipsr.CIP.mask
    iommu.write_register(Reg.IPSR, 4, Ipsr.CIP.mask)  # cmd_ill still 1: set again
    assert ipsr(iommu) == Ipsr.CIP.mask
    iommu.write_register(Reg.CQCSR, 4, Cqcsr.CQEN.mask | Cqcsr.CIE.mask | Cqcsr.CMD_ILL.mask)
    iommu.write_register(Reg.IPSR, 4, M32)
    assert ipsr(iommu) == 0


def test_enabling_cie_with_an_error_pending_sets_cip():
    iommu, _, _ = make_iommu()
    iommu.write_register(Reg.CQCSR, 4, Cqcsr.CQEN.mask)
    iommu.cq.csr |= Cqcsr.CQMF.mask
    iommu._update_interrupts()
    assert ipsr(iommu) == 0
    iommu.write_register(Reg.CQCSR, 4, Cqcsr.CQEN.mask | Cqcsr.CIE.mask)
    assert ipsr(iommu) == Ipsr.CIP.mask


@pytest.mark.parametrize("msi_vectors, expected", [(16, 0x0FFF), (4, 0x0333), (1, 0)])
def test_icvec_keeps_only_supported_vectors(msi_vectors, expected):
    iommu, _, _ = make_iommu(msi_vectors=msi_vectors)
    iommu.write_register(Reg.ICVEC, 8, M64)
    assert iommu.read_register(Reg.ICVEC, 8) == expected


def test_msi_cfg_tbl_fields():
    iommu, _, _ = make_iommu()
    addr, data, vec_ctl = arch.msi_cfg(5)
    iommu.write_register(addr, 8, M64)
    iommu.write_register(data, 4, M32)
    iommu.write_register(vec_ctl, 4, M32)
    assert iommu.read_register(addr, 8) == ((1 << 56) - 1) & ~3
    assert iommu.read_register(data, 4) == M32
    assert iommu.read_register(vec_ctl, 4) == 1


# --------------------------------------------------------------------------- #
# Hardware performance monitor (§8.10, §10.6)
# --------------------------------------------------------------------------- #
def _event(event=HpmEvent.UNTRANSLATED_REQ, device_id=0x10, pv=False, pid=0, gscv=False,
           gscid=0, pscv=False, pscid=0):
    return (event, device_id, pv, pid, gscv, gscid, pscv, pscid)


def _count(iommu, engine, *events) -> None:
    """Translate once, the engine reporting ``events``."""
    from models.transaction import Request
    engine.outcomes.append(FakeOutcome(Response(Status.SUCCESS), None, list(events)))
    iommu.translate(Request(device_id=0, iova=0))


def _selector(event=HpmEvent.UNTRANSLATED_REQ, **fields) -> int:
    value = Hpmevt.EVENT_ID.put(event)
    for name, v in fields.items():
        value |= getattr(Hpmevt, name.upper()).put(v)
    return value


def test_iohpmcycles_counts_ticks_unless_inhibited():
    iommu, _, _ = make_iommu()
    iommu.tick(5)
    iommu.tick()
    assert iommu.read_register(Reg.IOHPMCYCLES, 8) == 6
    iommu.write_register(Reg.IOCOUNTINH, 4, 1)
    iommu.tick(100)
    assert iommu.read_register(Reg.IOHPMCYCLES, 8) == 6
    iommu.write_register(Reg.IOCOUNTINH, 4, 0)
    iommu.tick(1)
    assert iommu.read_register(Reg.IOHPMCYCLES, 8) == 7


def test_iohpmcycles_overflow_sets_of_and_pmip_only_once():
    iommu, _, _ = make_iommu()
    iommu.write_register(Reg.IOHPMCYCLES, 8, (1 << 63) - 2)
    iommu.tick(3)
    assert iommu.read_register(Reg.IOHPMCYCLES, 8) == (1 << 63) | 1
    assert iommu.read_register(Reg.IOCOUNTOVF, 4) == 1
    assert ipsr(iommu) == Ipsr.PMIP.mask
    iommu.write_register(Reg.IPSR, 4, Ipsr.PMIP.mask)
    assert ipsr(iommu) == 0  # pmip is an event, not a level: not re-asserted
    iommu.write_register(Reg.IOHPMCYCLES, 8, (1 << 64) - 1)  # OF=1: wraps silently
    iommu.tick(1)
    assert iommu.read_register(Reg.IOHPMCYCLES, 8) == 1 << 63
    assert ipsr(iommu) == 0


def test_iocountinh_is_warl_and_iocountovf_is_read_only():
    iommu, _, _ = make_iommu(hpm_counters=3)
    iommu.write_register(Reg.IOCOUNTINH, 4, M32)
    assert iommu.read_register(Reg.IOCOUNTINH, 4) == 0xF
    iommu.write_register(arch.iohpmevt(2), 8, Hpmevt.OF.mask)
    iommu.write_register(Reg.IOCOUNTOVF, 4, 0)
    assert iommu.read_register(Reg.IOCOUNTOVF, 4) == 1 << 2


def test_event_id_is_warl_other_selector_fields_are_kept():
    iommu, _, _ = make_iommu()
    fields = Hpmevt.DMASK.mask | Hpmevt.PID_PSCID.put(0xABCDE) | Hpmevt.DID_GSCID.put(0x123456)
    iommu.write_register(arch.iohpmevt(1), 8, fields | Hpmevt.EVENT_ID.put(HpmEvent.G_PT_WALK))
    assert iommu.read_register(arch.iohpmevt(1), 8) == fields | HpmEvent.G_PT_WALK
    for unknown in (9, 16383, 16384, 32767):
        iommu.write_register(arch.iohpmevt(1), 8, fields | Hpmevt.EVENT_ID.put(unknown))
        assert iommu.read_register(arch.iohpmevt(1), 8) == fields


def test_events_count_in_selected_counters_only():
    iommu, _, engine = make_iommu()
    iommu.write_register(arch.iohpmevt(1), 8, _selector(HpmEvent.UNTRANSLATED_REQ))
    iommu.write_register(arch.iohpmevt(2), 8, _selector(HpmEvent.TLB_MISS))
    iommu.write_register(arch.iohpmevt(3), 8, _selector(HpmEvent.DDT_WALK))
    _count(iommu, engine, _event(HpmEvent.UNTRANSLATED_REQ), _event(HpmEvent.TLB_MISS))
    _count(iommu, engine, _event(HpmEvent.UNTRANSLATED_REQ))
    counts = [iommu.read_register(arch.iohpmctr(n), 8) for n in (1, 2, 3, 4)]
    assert counts == [2, 1, 0, 0]


def test_inhibited_counter_does_not_count():
    iommu, _, engine = make_iommu()
    iommu.write_register(arch.iohpmevt(1), 8, _selector())
    iommu.write_register(arch.iohpmevt(2), 8, _selector())
    iommu.write_register(Reg.IOCOUNTINH, 4, 1 << 2)
    _count(iommu, engine, _event())
    assert iommu.read_register(arch.iohpmctr(1), 8) == 1
    assert iommu.read_register(arch.iohpmctr(2), 8) == 0


@pytest.mark.parametrize("selector_fields, event, counts", [
    # IDT=0, PV_PSCV=1: needs a valid process_id equal to PID_PSCID
    ({"pv_pscv": 1, "pid_pscid": 7}, _event(pv=True, pid=7), True),
    ({"pv_pscv": 1, "pid_pscid": 7}, _event(pv=True, pid=8), False),
    ({"pv_pscv": 1, "pid_pscid": 0}, _event(pv=False, pid=0), False),
    # IDT=0, DV_GSCV=1: exact device_id
    ({"dv_gscv": 1, "did_gscid": 0x10}, _event(device_id=0x10), True),
    ({"dv_gscv": 1, "did_gscid": 0x10}, _event(device_id=0x11), False),
    # both
    ({"dv_gscv": 1, "did_gscid": 0x10, "pv_pscv": 1, "pid_pscid": 3},
     _event(device_id=0x10, pv=True, pid=3), True),
    ({"dv_gscv": 1, "did_gscid": 0x10, "pv_pscv": 1, "pid_pscid": 3},
     _event(device_id=0x10, pv=False), False),
    # DMASK: yyyy_y011 matches every function of device 0b10110 on bus 0x12
    ({"dv_gscv": 1, "dmask": 1, "did_gscid": 0x12B3}, _event(device_id=0x12B0), True),
    ({"dv_gscv": 1, "dmask": 1, "did_gscid": 0x12B3}, _event(device_id=0x12B7), True),
    ({"dv_gscv": 1, "dmask": 1, "did_gscid": 0x12B3}, _event(device_id=0x12A7), False),
    # ...0111_1111: any device/function on the bus
    ({"dv_gscv": 1, "dmask": 1, "did_gscid": 0x127F}, _event(device_id=0x12FF), True),
    ({"dv_gscv": 1, "dmask": 1, "did_gscid": 0x127F}, _event(device_id=0x13FF), False),
    # DMASK with a 0 in bit 0 masks only bit 0
    ({"dv_gscv": 1, "dmask": 1, "did_gscid": 0x12B2}, _event(device_id=0x12B3), True),
    ({"dv_gscv": 1, "dmask": 1, "did_gscid": 0x12B2}, _event(device_id=0x12B1), False),
])
def test_device_and_process_filters(selector_fields, event, counts):
    iommu, _, engine = make_iommu()
    iommu.write_register(arch.iohpmevt(1), 8, _selector(**selector_fields))
    _count(iommu, engine, event)
    assert iommu.read_register(arch.iohpmctr(1), 8) == int(counts)


@pytest.mark.parametrize("selector_fields, event, counts", [
    ({"idt": 1}, _event(HpmEvent.TLB_MISS), True),
    ({"idt": 1, "dv_gscv": 1, "did_gscid": 5}, _event(HpmEvent.TLB_MISS, gscv=True, gscid=5),
     True),
    ({"idt": 1, "dv_gscv": 1, "did_gscid": 5}, _event(HpmEvent.TLB_MISS, gscv=False, gscid=5),
     False),
    ({"idt": 1, "pv_pscv": 1, "pid_pscid": 9}, _event(HpmEvent.TLB_MISS, pscv=True, pscid=9),
     True),
    ({"idt": 1, "pv_pscv": 1, "pid_pscid": 9}, _event(HpmEvent.TLB_MISS, pscv=True, pscid=8),
     False),
    ({"idt": 1, "pv_pscv": 1, "dv_gscv": 1, "pid_pscid": 9, "did_gscid": 5},
     _event(HpmEvent.TLB_MISS, gscv=True, gscid=5, pscv=True, pscid=9), True),
    ({"idt": 1, "pv_pscv": 1, "dv_gscv": 1, "pid_pscid": 9, "did_gscid": 5},
     _event(HpmEvent.TLB_MISS, gscv=True, gscid=6, pscv=True, pscid=9), False),
    # IDT=1 filters on GSCID/PSCID, not on device_id/process_id
    ({"idt": 1, "dv_gscv": 1, "did_gscid": 5}, _event(HpmEvent.TLB_MISS, device_id=5), False),
])
def test_gscid_pscid_filters(selector_fields, event, counts):
    iommu, _, engine = make_iommu()
    iommu.write_register(arch.iohpmevt(1), 8, _selector(HpmEvent.TLB_MISS, **selector_fields))
    _count(iommu, engine, event)
    assert iommu.read_register(arch.iohpmctr(1), 8) == int(counts)


@pytest.mark.parametrize("event", [HpmEvent.UNTRANSLATED_REQ, HpmEvent.DDT_WALK,
                                   HpmEvent.PDT_WALK])
def test_idt_one_never_counts_events_without_idt_support(event):
    iommu, _, engine = make_iommu()
    iommu.write_register(arch.iohpmevt(1), 8, _selector(event, idt=1))
    _count(iommu, engine, _event(event))
    assert iommu.read_register(arch.iohpmctr(1), 8) == 0


def test_event_counter_overflow_sets_of_and_pmip_only_when_of_was_zero():
    iommu, _, engine = make_iommu(capabilities=caps(igs=Igs.BOTH))
    iommu.write_register(Reg.FCTL, 4, Fctl.WSI.mask)
    iommu.write_register(Reg.ICVEC, 8, arch.Icvec.PMIV.put(6))
    iommu.write_register(arch.iohpmevt(4), 8, _selector())
    iommu.write_register(arch.iohpmctr(4), 8, M64)
    _count(iommu, engine, _event())
    assert iommu.read_register(arch.iohpmctr(4), 8) == 0
    assert Hpmevt.OF.get(iommu.read_register(arch.iohpmevt(4), 8))
    assert iommu.read_register(Reg.IOCOUNTOVF, 4) == 1 << 4
    assert ipsr(iommu) == Ipsr.PMIP.mask and iommu.wired_interrupts == {6}
    iommu.write_register(Reg.IPSR, 4, Ipsr.PMIP.mask)
    assert iommu.wired_interrupts == set()
    iommu.write_register(arch.iohpmctr(4), 8, M64)  # OF still 1: wraps without pmip
    _count(iommu, engine, _event())
    assert ipsr(iommu) == 0 and iommu.read_register(arch.iohpmctr(4), 8) == 0


def test_changing_event_id_keeps_the_count():
    iommu, _, engine = make_iommu()
    iommu.write_register(arch.iohpmevt(1), 8, _selector())
    _count(iommu, engine, _event())
    iommu.write_register(arch.iohpmevt(1), 8, 0)
    _count(iommu, engine, _event())
    assert iommu.read_register(arch.iohpmctr(1), 8) == 1


# --------------------------------------------------------------------------- #
# Debug translation interface (§8.11)
# --------------------------------------------------------------------------- #
def _go(iommu, iova, **ctl_fields) -> int:
    ctl = TrReqCtl.GO_BUSY.mask
    for name, value in ctl_fields.items():
        ctl |= getattr(TrReqCtl, name.upper()).put(value)
    iommu.write_register(Reg.TR_REQ_IOVA, 8, iova)
    iommu.write_register(Reg.TR_REQ_CTL, 8, ctl)
    return iommu.read_register(Reg.TR_RESPONSE, 8)


def test_tr_req_iova_low_bits_read_zero_and_ctl_warl():
    iommu, _, engine = make_iommu()
    iommu.write_register(Reg.TR_REQ_IOVA, 8, M64)
    assert iommu.read_register(Reg.TR_REQ_IOVA, 8) == M64 & ~0xFFF
    iommu.write_register(Reg.TR_REQ_CTL, 8, M64 & ~TrReqCtl.GO_BUSY.mask)
    # reserved [11:4], [35:33] and custom [39:36] read 0; Go/Busy was not set
    assert iommu.read_register(Reg.TR_REQ_CTL, 8) == (M64 & ~0xFE_0000_0FF1)
    assert engine.calls == []
    iommu.write_register(Reg.TR_RESPONSE, 8, M64)  # RO
    assert iommu.read_register(Reg.TR_RESPONSE, 8) == 0


@pytest.mark.parametrize("ctl, access, pv, priv", [
    ({"nw": 1}, Access.READ, False, Priv.USER),
    ({"nw": 1, "exe": 1}, Access.EXECUTE, False, Priv.USER),
    ({"nw": 0}, Access.WRITE, False, Priv.USER),
    ({"nw": 1, "priv": 1}, Access.READ, False, Priv.USER),  # Priv ignored without PV
    ({"nw": 1, "priv": 1, "pv": 1, "pid": 0x54321}, Access.READ, True, Priv.SUPERVISOR),
])
def test_go_runs_an_untranslated_request(ctl, access, pv, priv):
    iommu, _, engine = make_iommu()
    _go(iommu, 0x1234_5678_9000, did=0xABCDEF, **ctl)
    assert TrReqCtl.GO_BUSY.get(iommu.read_register(Reg.TR_REQ_CTL, 8)) == 0
    (_, request, _, _), = [c for c in engine.calls if c[0] == "translate"]
    assert request.addr_type == arch.AddrType.UNTRANSLATED
    assert (request.device_id, request.iova) == (0xABCDEF, 0x1234_5678_9000)
    assert (request.access, request.pv, request.priv) == (access, pv, priv)
    assert request.process_id == (0x54321 if pv else 0)


def test_go_in_the_low_half_after_the_high_half():
    iommu, _, engine = make_iommu()
    iommu.write_register(Reg.TR_REQ_IOVA + 4, 4, 0x12)
    iommu.write_register(Reg.TR_REQ_IOVA, 4, 0x3456_7000)
    iommu.write_register(Reg.TR_REQ_CTL + 4, 4, TrReqCtl.DID.put(0x42) >> 32)
    assert engine.calls == []
    iommu.write_register(Reg.TR_REQ_CTL, 4, TrReqCtl.GO_BUSY.mask | TrReqCtl.NW.mask)
    (_, request, _, _), = engine.calls
    assert (request.device_id, request.iova, request.access) == (0x42, 0x12_3456_7000,
                                                                 Access.READ)


@pytest.mark.parametrize("spa, size, pbmt, expected", [
    (0x8765_4000, 4096, 0, arch.TrResponse.PPN.put(0x87654)),
    (0x8765_4000, 8192, 1, arch.TrResponse.PPN.put(0x87654) | (1 << 9) | (1 << 7)),
    (0x8060_0000, 2 << 20, 2,  # 2 MiB: PPN ...0_1111_1111
     arch.TrResponse.PPN.put(0x80600 | 0xFF) | (1 << 9) | (2 << 7)),
    (0x4000_0000, 1 << 30, 0,  # 1 GiB: bits 0..17 are 1, bit 18 is 0
     arch.TrResponse.PPN.put(0x40000 | 0x1FFFF) | (1 << 9)),
    (0x10000, 64 << 10, 0, arch.TrResponse.PPN.put(0x10 | 0x7) | (1 << 9)),  # spec example
])
def test_tr_response_size_encoding(spa, size, pbmt, expected):
    iommu, _, engine = make_iommu()
    engine.outcomes.append(FakeOutcome(Response(Status.SUCCESS, spa=spa, page_size=size,
                                                pbmt=pbmt, r=True)))
    assert _go(iommu, spa, nw=1) == expected


def test_tr_response_fault_is_reported_in_the_fault_queue():
    iommu, memory, engine = make_iommu()
    enable_fq(iommu)
    engine.outcomes.append(fault(arch.Cause.READ_PAGE_FAULT, device_id=7, iova=0x9000))
    assert _go(iommu, 0x9000, nw=1, did=7) == 1
    assert iommu.read_register(Reg.FQT, 4) == 1
    assert tr_response_value(Response.fault(13)) == 1


def test_debug_translation_is_counted_as_untranslated():
    iommu, _, engine = make_iommu()
    iommu.write_register(arch.iohpmevt(1), 8, _selector())
    engine.outcomes.append(FakeOutcome(Response(Status.SUCCESS), None, [_event()]))
    _go(iommu, 0x1000, nw=1)
    assert iommu.read_register(arch.iohpmctr(1), 8) == 1


def test_tr_response_of_an_mrif_page_is_a_fault():
    """An MSI page whose PTE is in MRIF mode has no PPN to report: tr_response.fault = 1
    (cause 260 in the spec's terms); the translation itself wrote no record."""
    from models.translate import MrifTarget

    iommu, _, engine = make_iommu()
    enable_fq(iommu)
    target = MrifTarget(mrif_address=0x8000_0200, notice_address=0x9000, notice_data=5)
    engine.outcomes.append(FakeOutcome(Response(Status.SUCCESS, spa=0x8000_0200, r=True,
                                                w=True, msi=True, mrif=target)))
    assert _go(iommu, 0x2000_0000, nw=0) == arch.TrResponse.FAULT.put(1)
    assert iommu.read_register(Reg.FQT, 4) == 0
