"""The reference IOMMU's command queue (§7), fault queue (§6.2, §6.3) and interrupt
delivery (§8.9): wires, MSIs through msi_cfg_tbl, masking, cause 273."""

from __future__ import annotations

import pytest

from iommu_fakes import (
    CQ_BASE, FQ_BASE, MSI_TARGET, FakeOutcome, caps, cqcsr, enable_cq, enable_fq, fault,
    fqcsr, ipsr, make_iommu, submit,
)
from models import arch
from models.arch import (
    Cmd, Cqcsr, Fctl, Fqcsr, Igs, IodirFunc, IotinvalFunc, Ipsr, Reg, iodir, iofence_c,
    iotinval,
)
from models.memory import FaultKind
from models.transaction import Request, Response, Status

M32 = 0xFFFF_FFFF
FENCE_FLAG = 0x8040_0000


def _set_msi(iommu, vector: int, addr: int, data: int, masked: bool = False) -> None:
    a, d, v = arch.msi_cfg(vector)
    iommu.write_register(a, 8, addr)
    iommu.write_register(d, 4, data)
    iommu.write_register(v, 4, int(masked))


def _record_at(memory, index: int, base: int = FQ_BASE) -> list[int]:
    return [memory.peek64(base + 32 * index + 8 * i) for i in range(4)]


# =========================================================================== #
# Command queue (§7)
# =========================================================================== #
@pytest.mark.parametrize("command, call", [
    (iotinval(IotinvalFunc.VMA), ("iotinval_vma", False, False, False, 0, 0, 0)),
    (iotinval(IotinvalFunc.VMA, gv=True, av=True, pscv=True, gscid=0xBEEF, pscid=0xFEDCB,
              addr=0xFFFF_FFFF_FFFF_F000),
     ("iotinval_vma", True, True, True, 0xBEEF, 0xFEDCB, 0xFFFF_FFFF_FFFF_F000)),
    (iotinval(IotinvalFunc.VMA, av=True, pscv=True, pscid=3, addr=0x7000),
     ("iotinval_vma", False, True, True, 0, 3, 0x7000)),
    (iotinval(IotinvalFunc.GVMA), ("iotinval_gvma", False, False, 0, 0)),
    (iotinval(IotinvalFunc.GVMA, gv=True, av=True, gscid=0x1234, addr=0x80_0000_0000),
     ("iotinval_gvma", True, True, 0x1234, 0x80_0000_0000)),
    (iodir(IodirFunc.INVAL_DDT), ("iodir_inval_ddt", False, 0)),
    (iodir(IodirFunc.INVAL_DDT, dv=True, did=0xABCDEF), ("iodir_inval_ddt", True, 0xABCDEF)),
    (iodir(IodirFunc.INVAL_PDT, dv=True, did=0x12, pid=0xFFFFF),
     ("iodir_inval_pdt", 0x12, 0xFFFFF)),
])
def test_each_command_calls_the_right_engine_invalidation(command, call):
    iommu, memory, engine = make_iommu()
    enable_cq(iommu)
    submit(iommu, memory, command)
    assert iommu.process_commands() == 1
    assert engine.invalidations() == [call]
    assert iommu.read_register(Reg.CQH, 4) == 1
    assert cqcsr(iommu) == Cqcsr.CQEN.mask | Cqcsr.CQON.mask


def test_cqh_advances_and_wraps_with_n_minus_one_commands_outstanding():
    iommu, memory, engine = make_iommu()
    enable_cq(iommu, log2sz_1=1)  # 4 entries: at most 3 outstanding (full = N-1)
    for round_ in range(3):
        submit(iommu, memory, *(iodir(IodirFunc.INVAL_DDT, dv=True, did=round_ * 3 + i)
                                for i in range(3)))
        assert iommu.process_commands() == 3
        assert iommu.read_register(Reg.CQH, 4) == iommu.read_register(Reg.CQT, 4)
        assert iommu.read_register(Reg.CQH, 4) == (3 * (round_ + 1)) % 4
    assert [c[2] for c in engine.invalidations()] == list(range(9))
    assert iommu.process_commands() == 0  # empty


def test_limit_runs_only_that_many_commands():
    iommu, memory, engine = make_iommu()
    enable_cq(iommu)
    submit(iommu, memory, *[iodir(IodirFunc.INVAL_DDT)] * 5)
    assert iommu.process_commands(limit=2) == 2
    assert iommu.read_register(Reg.CQH, 4) == 2
    assert iommu.process_commands() == 3


def test_nothing_runs_while_the_queue_is_off():
    iommu, memory, engine = make_iommu()
    enable_cq(iommu)
    iommu.write_register(Reg.CQCSR, 4, 0)
    submit(iommu, memory, iodir(IodirFunc.INVAL_DDT))
    assert iommu.process_commands() == 0 and engine.invalidations() == []
    assert not memory.accesses_by("iommu.cq")


def test_enable_handshake_zeroes_cqh_and_clears_error_bits():
    iommu, memory, engine = make_iommu()
    enable_cq(iommu)
    submit(iommu, memory, iodir(IodirFunc.INVAL_DDT), 0)  # second one is illegal
    iommu.process_commands()
    assert iommu.read_register(Reg.CQH, 4) == 1 and Cqcsr.CMD_ILL.get(cqcsr(iommu))
    iommu.write_register(Reg.CQCSR, 4, 0)
    assert cqcsr(iommu) == Cqcsr.CMD_ILL.mask  # off; the error bit is sticky
    iommu.write_register(Reg.CQT, 4, 0)
    iommu.write_register(Reg.CQCSR, 4, Cqcsr.CQEN.mask)
    assert cqcsr(iommu) == Cqcsr.CQEN.mask | Cqcsr.CQON.mask
    assert iommu.read_register(Reg.CQH, 4) == 0


ILLEGAL = {
    "opcode 0": 0,
    "opcode 5": 5,
    "opcode 63": 63,
    "custom opcode 64": 64,
    "IOTINVAL func3 2": Cmd.OPCODE.put(1) | Cmd.FUNC3.put(2),
    "IOFENCE func3 1": Cmd.OPCODE.put(2) | Cmd.FUNC3.put(1),
    "IODIR func3 2": Cmd.OPCODE.put(3) | Cmd.FUNC3.put(2),
    "ATS.INVAL without ATS": Cmd.OPCODE.put(4),
    "ATS.PRGR without ATS": Cmd.OPCODE.put(4) | Cmd.FUNC3.put(1),
    "IOTINVAL rsvd bit 11": iotinval(IotinvalFunc.VMA) | 1 << 11,
    "IOTINVAL rsvd bit 35": iotinval(IotinvalFunc.VMA) | 1 << 35,
    "IOTINVAL rsvd bit 43": iotinval(IotinvalFunc.VMA) | 1 << 43,
    "IOTINVAL rsvd bit 60": iotinval(IotinvalFunc.GVMA) | 1 << 60,
    "IOTINVAL rsvd bit 64": iotinval(IotinvalFunc.VMA) | 1 << 64,
    "IOTINVAL rsvd bit 127": iotinval(IotinvalFunc.VMA) | 1 << 127,
    "IOTINVAL NL without capability": iotinval(IotinvalFunc.VMA, av=True) | Cmd.NL.mask,
    "IOTINVAL S without capability": iotinval(IotinvalFunc.VMA, av=True) | Cmd.S.mask,
    "IOTINVAL.GVMA with PSCV": iotinval(IotinvalFunc.GVMA, pscv=True),
    "IODIR.INVAL_PDT with DV=0": iodir(IodirFunc.INVAL_PDT, did=1, pid=1),
    "IODIR.INVAL_DDT with PID": iodir(IodirFunc.INVAL_DDT, dv=True, pid=1),
    "IODIR rsvd bit 10": iodir(IodirFunc.INVAL_DDT) | 1 << 10,
    "IODIR rsvd bit 32": iodir(IodirFunc.INVAL_DDT) | 1 << 32,
    "IODIR rsvd bit 39": iodir(IodirFunc.INVAL_PDT, dv=True) | 1 << 39,
    "IODIR rsvd dword 1": iodir(IodirFunc.INVAL_DDT) | 1 << 100,
    "IOFENCE rsvd bit 14": iofence_c() | 1 << 14,
    "IOFENCE rsvd bit 31": iofence_c() | 1 << 31,
    "IOFENCE rsvd bit 126": iofence_c() | 1 << 126,
    "IOFENCE.C WSI while fctl.WSI=0": iofence_c(wsi=True),
}


@pytest.mark.parametrize("bad", ILLEGAL.values(), ids=ILLEGAL.keys())
def test_illegal_command_sets_cmd_ill_and_stops_at_the_offender(bad):
    iommu, memory, engine = make_iommu()
    enable_cq(iommu)
    good = iodir(IodirFunc.INVAL_DDT, dv=True, did=1)
    submit(iommu, memory, good, bad, iodir(IodirFunc.INVAL_DDT, dv=True, did=3))
    assert iommu.process_commands() == 1
    assert iommu.read_register(Reg.CQH, 4) == 1
    assert cqcsr(iommu) & (Cqcsr.CMD_ILL.mask | Cqcsr.CQMF.mask) == Cqcsr.CMD_ILL.mask
    assert engine.invalidations() == [("iodir_inval_ddt", True, 1)]
    assert iommu.cq_error_reason and "CQ[1]" in iommu.cq_error_reason
    # still stopped until software clears cmd_ill
    assert iommu.process_commands() == 0
    # software repairs the command, clears cmd_ill, and the queue resumes at cqh
    memory.write(CQ_BASE + 16, arch.command_bytes(iodir(IodirFunc.INVAL_DDT, dv=True, did=2)))
    iommu.write_register(Reg.CQCSR, 4, Cqcsr.CQEN.mask | Cqcsr.CMD_ILL.mask)
    assert not Cqcsr.CMD_ILL.get(cqcsr(iommu))
    assert iommu.process_commands() == 2
    assert [c[2] for c in engine.invalidations()] == [1, 2, 3]


def test_wsi_fence_is_illegal_when_the_iommu_has_no_wires():
    iommu, memory, _ = make_iommu(capabilities=caps(igs=Igs.MSI))
    iommu.write_register(Reg.FCTL, 4, Fctl.WSI.mask)  # WARL: stays 0
    enable_cq(iommu)
    submit(iommu, memory, iofence_c(wsi=True))
    assert iommu.process_commands() == 0 and Cqcsr.CMD_ILL.get(cqcsr(iommu))


@pytest.mark.parametrize("extension, bit", [("nl", Cmd.NL.mask), ("s", Cmd.S.mask)])
def test_nl_and_s_with_the_capability_widen_to_the_whole_scope(extension, bit):
    iommu, memory, engine = make_iommu(capabilities=caps(**{extension: True}))
    enable_cq(iommu)
    submit(iommu, memory,
           iotinval(IotinvalFunc.VMA, gv=True, av=True, gscid=4, addr=0x5000) | bit,
           iotinval(IotinvalFunc.GVMA, gv=True, av=True, gscid=4, addr=0x6000) | bit)
    assert iommu.process_commands() == 2
    assert engine.invalidations() == [("iotinval_vma", True, False, False, 4, 0, 0x5000),
                                      ("iotinval_gvma", True, False, 4, 0x6000)]


def test_ats_commands_with_ats_capability():
    iommu, memory, _ = make_iommu(capabilities=caps(ats=True))
    enable_cq(iommu)
    inval = Cmd.OPCODE.put(4) | Cmd.RID.put(0x0102) | Cmd.PAYLOAD.put(0xF000)
    prgr = Cmd.OPCODE.put(4) | Cmd.FUNC3.put(1) | Cmd.PV.mask | Cmd.PID.put(9)
    submit(iommu, memory, inval, prgr, inval | 1 << 34)
    assert iommu.process_commands() == 2
    assert iommu.ats_messages == [(arch.AtsFunc.INVAL, inval), (arch.AtsFunc.PRGR, prgr)]
    assert Cqcsr.CMD_ILL.get(cqcsr(iommu)) and iommu.read_register(Reg.CQH, 4) == 2


@pytest.mark.parametrize("kind", [FaultKind.ACCESS, FaultKind.POISON])
def test_command_fetch_fault_sets_cqmf_with_cqh_at_the_command(kind):
    iommu, memory, engine = make_iommu()
    enable_cq(iommu)
    submit(iommu, memory, iodir(IodirFunc.INVAL_DDT), iodir(IodirFunc.INVAL_DDT))
    memory.inject_fault(CQ_BASE + 16, 16, kind)
    assert iommu.process_commands() == 1
    assert iommu.read_register(Reg.CQH, 4) == 1
    assert cqcsr(iommu) & 0xF00 == Cqcsr.CQMF.mask
    memory.clear_faults()
    assert iommu.process_commands() == 0  # stalled until cqmf is cleared
    iommu.write_register(Reg.CQCSR, 4, Cqcsr.CQEN.mask | Cqcsr.CQMF.mask)
    assert iommu.process_commands() == 1 and len(engine.invalidations()) == 2


def test_iofence_c_data_write_lands_in_memory():
    iommu, memory, _ = make_iommu()
    enable_cq(iommu)
    memory.write64(FENCE_FLAG, 0xFFFF_FFFF_FFFF_FFFF)
    submit(iommu, memory, iofence_c(av=True, pr=True, pw=True, data=0xC0FFEE01,
                                    addr=FENCE_FLAG + 4))
    assert iommu.process_commands() == 1
    assert memory.peek64(FENCE_FLAG) == 0xC0FFEE01_FFFFFFFF  # 4 bytes at ADDR[63:2]*4
    assert [(r.op, r.addr, r.size) for r in memory.accesses_by("iommu.iofence")] == \
        [("W", FENCE_FLAG + 4, 4)]


def test_iofence_c_without_av_writes_nothing():
    iommu, memory, _ = make_iommu()
    enable_cq(iommu)
    submit(iommu, memory, iofence_c(data=0x1234, addr=FENCE_FLAG))
    assert iommu.process_commands() == 1
    assert memory.peek64(FENCE_FLAG) == 0 and not memory.accesses_by("iommu.iofence")


def test_iofence_c_write_fault_sets_cqmf_and_keeps_cqh_at_the_fence():
    iommu, memory, _ = make_iommu()
    enable_cq(iommu)
    memory.inject_fault(FENCE_FLAG, 4096)
    submit(iommu, memory, iodir(IodirFunc.INVAL_DDT),
           iofence_c(av=True, data=7, addr=FENCE_FLAG), iodir(IodirFunc.INVAL_DDT))
    assert iommu.process_commands() == 1
    assert iommu.read_register(Reg.CQH, 4) == 1
    assert cqcsr(iommu) & 0xF00 == Cqcsr.CQMF.mask
    memory.clear_faults()
    iommu.write_register(Reg.CQCSR, 4, Cqcsr.CQEN.mask | Cqcsr.CQMF.mask)
    assert iommu.process_commands() == 2
    assert memory.read32(FENCE_FLAG) == 7


def test_iofence_c_beyond_pas_is_a_memory_fault():
    iommu, memory, _ = make_iommu(capabilities=caps(pas=40))
    enable_cq(iommu)
    submit(iommu, memory, iofence_c(av=True, addr=1 << 40))
    assert iommu.process_commands() == 0 and Cqcsr.CQMF.get(cqcsr(iommu))


def test_wsi_fence_sets_fence_w_ip_cip_and_the_wire():
    iommu, memory, _ = make_iommu(capabilities=caps(igs=Igs.BOTH))
    iommu.write_register(Reg.FCTL, 4, Fctl.WSI.mask)
    iommu.write_register(Reg.ICVEC, 8, arch.Icvec.CIV.put(3) | arch.Icvec.FIV.put(5))
    enable_cq(iommu, cie=True)
    submit(iommu, memory, iofence_c(wsi=True), iodir(IodirFunc.INVAL_DDT))
    assert iommu.process_commands() == 2  # fence_w_ip does not stop the queue
    assert Cqcsr.FENCE_W_IP.get(cqcsr(iommu))
    assert ipsr(iommu) == Ipsr.CIP.mask
    assert iommu.wired_interrupts == {3}
    assert iommu.msi_log == []
    iommu.write_register(Reg.IPSR, 4, Ipsr.CIP.mask)
    assert iommu.wired_interrupts == {3}  # fence_w_ip still 1: cip set again (level)
    iommu.write_register(Reg.CQCSR, 4, Cqcsr.CQEN.mask | Cqcsr.CIE.mask | Cqcsr.FENCE_W_IP.mask)
    iommu.write_register(Reg.IPSR, 4, Ipsr.CIP.mask)
    assert iommu.wired_interrupts == set() and ipsr(iommu) == 0


def test_wsi_fence_without_cie_sets_fence_w_ip_but_no_interrupt():
    iommu, memory, _ = make_iommu(capabilities=caps(igs=Igs.WSI))
    enable_cq(iommu)
    submit(iommu, memory, iofence_c(wsi=True))
    assert iommu.process_commands() == 1
    assert Cqcsr.FENCE_W_IP.get(cqcsr(iommu)) and ipsr(iommu) == 0
    assert iommu.wired_interrupts == set()


def test_cmd_ill_with_cie_sends_the_command_queue_msi():
    iommu, memory, _ = make_iommu()
    iommu.write_register(Reg.ICVEC, 8, arch.Icvec.CIV.put(2))
    _set_msi(iommu, 2, MSI_TARGET, 0x55)
    enable_cq(iommu, cie=True)
    submit(iommu, memory, 0)
    iommu.process_commands()
    assert iommu.msi_log == [(MSI_TARGET, 0x55)]
    assert memory.read32(MSI_TARGET) == 0x55
    # clearing cip while cmd_ill persists re-asserts it: a new edge, a new MSI
    iommu.write_register(Reg.IPSR, 4, Ipsr.CIP.mask)
    assert iommu.msi_log == [(MSI_TARGET, 0x55)] * 2


def test_big_endian_commands_and_fence_data():
    iommu, memory, engine = make_iommu(capabilities=caps(end=True))
    iommu.write_register(Reg.FCTL, 4, Fctl.BE.mask)
    enable_cq(iommu)
    command = iodir(IodirFunc.INVAL_DDT, dv=True, did=0x345678)
    fence = iofence_c(av=True, data=0x11223344, addr=FENCE_FLAG)
    for i, c in enumerate((command, fence)):
        for dword in range(2):
            value = (c >> (64 * dword)) & ((1 << 64) - 1)
            memory.write(CQ_BASE + 16 * i + 8 * dword, value.to_bytes(8, "big"))
    iommu.write_register(Reg.CQT, 4, 2)
    assert iommu.process_commands() == 2
    assert engine.invalidations() == [("iodir_inval_ddt", True, 0x345678)]
    assert memory.read(FENCE_FLAG, 4) == bytes([0x11, 0x22, 0x33, 0x44])


# =========================================================================== #
# Fault queue (§6.2, §6.3)
# =========================================================================== #
def test_fault_record_layout_field_by_field():
    """Dword 0: CAUSE [11:0], PID [31:12], PV [32], PRIV [33], TTYP [39:34], DID [63:40];
    dword 1: custom/reserved (0); dword 2: iotval; dword 3: iotval2 (digest §6.2)."""
    iommu, memory, engine = make_iommu()
    enable_fq(iommu)
    record = arch.FaultRecord(cause=arch.Cause.WRITE_GUEST_PAGE_FAULT,
                              ttyp=arch.Ttyp.UNTRANSLATED_WRITE, device_id=0xABCDEF,
                              process_id=0x9_8765, pv=True, priv=True,
                              iotval=0x1234_5678_9ABC_D000, iotval2=0x7_6543_2000 | 3)
    engine.outcomes.append(FakeOutcome(Response.fault(23, tag=5), record))
    response = iommu.translate(Request(device_id=0xABCDEF, iova=0x1234_5678_9ABC_D000, tag=5))
    assert response.reported and response.cause == 23 and response.tag == 5
    dw0, dw1, dw2, dw3 = _record_at(memory, 0)
    assert dw0 & 0xFFF == 23
    assert (dw0 >> 12) & 0xFFFFF == 0x9_8765
    assert (dw0 >> 32) & 1 == 1
    assert (dw0 >> 33) & 1 == 1
    assert (dw0 >> 34) & 0x3F == 3
    assert dw0 >> 40 == 0xABCDEF
    assert dw1 == 0
    assert dw2 == 0x1234_5678_9ABC_D000
    assert dw3 == 0x7_6543_2003
    assert iommu.read_register(Reg.FQT, 4) == 1


def test_big_endian_fault_record():
    iommu, memory, engine = make_iommu(capabilities=caps(end=True))
    iommu.write_register(Reg.FCTL, 4, Fctl.BE.mask)
    enable_fq(iommu)
    engine.outcomes.append(fault(13, device_id=0x42, iova=0x1122_3344_5566_7000))
    iommu.translate(Request(device_id=0x42, iova=0))
    raw = memory.read(FQ_BASE, 32)
    assert int.from_bytes(raw[16:24], "big") == 0x1122_3344_5566_7000
    expected_dw0 = int.from_bytes(arch.FaultRecord(13, arch.Ttyp.UNTRANSLATED_READ,
                                                   device_id=0x42).pack()[0:8], "little")
    assert int.from_bytes(raw[0:8], "big") == expected_dw0


def test_response_is_the_engines_and_successes_are_not_reported():
    iommu, _, engine = make_iommu()
    enable_fq(iommu)
    success = Response(Status.SUCCESS, tag=77, spa=0x9000, page_size=4096, r=True)
    engine.outcomes.append(FakeOutcome(success))
    assert iommu.translate(Request(device_id=1, iova=0x9000, tag=77)) == success
    assert iommu.read_register(Reg.FQT, 4) == 0


def test_suppressed_record_is_not_reported():
    iommu, _, engine = make_iommu()
    enable_fq(iommu)
    engine.outcomes.append(fault(13, record=False))  # e.g. DTF=1
    response = iommu.translate(Request(device_id=1, iova=0))
    assert not response.ok and not response.reported
    assert iommu.read_register(Reg.FQT, 4) == 0


def test_fault_queue_off_drops_records():
    iommu, memory, engine = make_iommu()
    engine.outcomes.append(fault())
    assert not iommu.translate(Request(device_id=1, iova=0)).reported
    assert not memory.accesses_by("iommu.fq")


def test_fault_queue_wraps():
    iommu, memory, engine = make_iommu()
    enable_fq(iommu, log2sz_1=1)  # 4 records
    for i in range(3):
        engine.outcomes.append(fault(device_id=i))
        assert iommu.translate(Request(device_id=i, iova=0)).reported
    iommu.write_register(Reg.FQH, 4, 3)  # software consumed them
    for i in range(3, 6):
        engine.outcomes.append(fault(device_id=i))
        assert iommu.translate(Request(device_id=i, iova=0)).reported
    assert iommu.read_register(Reg.FQT, 4) == 2
    assert [_record_at(memory, i)[0] >> 40 for i in range(4)] == [4, 5, 2, 3]


def test_overflow_sets_fqof_and_drops_until_cleared():
    iommu, memory, engine = make_iommu()
    enable_fq(iommu, log2sz_1=1)  # 4 entries: full after 3 (fqt == fqh - 1)
    reported = []
    for i in range(4):
        engine.outcomes.append(fault(device_id=i))
        reported.append(iommu.translate(Request(device_id=i, iova=0)).reported)
    assert reported == [True, True, True, False]
    assert fqcsr(iommu) & 0x300 == Fqcsr.FQOF.mask
    assert iommu.read_register(Reg.FQT, 4) == 3
    iommu.write_register(Reg.FQH, 4, 3)  # room again, but fqof still set: dropped
    engine.outcomes.append(fault(device_id=9))
    assert not iommu.translate(Request(device_id=9, iova=0)).reported
    iommu.write_register(Reg.FQCSR, 4, Fqcsr.FQEN.mask | Fqcsr.FQOF.mask)
    engine.outcomes.append(fault(device_id=10))
    assert iommu.translate(Request(device_id=10, iova=0)).reported
    assert _record_at(memory, 3)[0] >> 40 == 10


def test_record_store_fault_sets_fqmf_and_drops_until_cleared():
    iommu, memory, engine = make_iommu()
    enable_fq(iommu)
    memory.inject_fault(FQ_BASE, 32)
    engine.outcomes.append(fault(device_id=1))
    assert not iommu.translate(Request(device_id=1, iova=0)).reported
    assert fqcsr(iommu) & 0x300 == Fqcsr.FQMF.mask
    memory.clear_faults()
    engine.outcomes.append(fault(device_id=2))
    assert not iommu.translate(Request(device_id=2, iova=0)).reported
    assert iommu.read_register(Reg.FQT, 4) == 0
    iommu.write_register(Reg.FQCSR, 4, Fqcsr.FQEN.mask | Fqcsr.FQMF.mask)
    engine.outcomes.append(fault(device_id=3))
    assert iommu.translate(Request(device_id=3, iova=0)).reported
    assert _record_at(memory, 0)[0] >> 40 == 3


def test_fqen_rising_zeroes_fqt_and_clears_errors():
    iommu, _, engine = make_iommu()
    enable_fq(iommu)
    engine.outcomes.append(fault())
    iommu.translate(Request(device_id=1, iova=0))
    iommu.fq.csr |= Fqcsr.FQOF.mask | Fqcsr.FQMF.mask
    iommu.write_register(Reg.FQCSR, 4, 0)
    assert fqcsr(iommu) == Fqcsr.FQOF.mask | Fqcsr.FQMF.mask
    iommu.write_register(Reg.FQCSR, 4, Fqcsr.FQEN.mask)
    assert fqcsr(iommu) == Fqcsr.FQEN.mask | Fqcsr.FQON.mask
    assert iommu.read_register(Reg.FQT, 4) == 0


# =========================================================================== #
# Fault-queue interrupts and MSI delivery (§8.9)
# =========================================================================== #
def test_new_record_sets_fip_and_sends_the_msi_of_fiv():
    iommu, memory, engine = make_iommu()
    iommu.write_register(Reg.ICVEC, 8, arch.Icvec.FIV.put(9) | arch.Icvec.CIV.put(1))
    _set_msi(iommu, 9, MSI_TARGET + 0x40, 0xFEED)
    enable_fq(iommu, fie=True)
    engine.outcomes.append(fault())
    iommu.translate(Request(device_id=1, iova=0))
    assert ipsr(iommu) == Ipsr.FIP.mask
    assert iommu.msi_log == [(MSI_TARGET + 0x40, 0xFEED)]
    assert memory.read32(MSI_TARGET + 0x40) == 0xFEED
    # fip still pending: a second record is no new edge
    engine.outcomes.append(fault())
    iommu.translate(Request(device_id=1, iova=0))
    assert len(iommu.msi_log) == 1
    # a record is an event, not a condition: clearing fip leaves it clear
    iommu.write_register(Reg.IPSR, 4, Ipsr.FIP.mask)
    assert ipsr(iommu) == 0
    engine.outcomes.append(fault())
    iommu.translate(Request(device_id=1, iova=0))
    assert len(iommu.msi_log) == 2


def test_no_fip_without_fie():
    iommu, _, engine = make_iommu()
    enable_fq(iommu, fie=False)
    engine.outcomes.append(fault())
    iommu.translate(Request(device_id=1, iova=0))
    assert ipsr(iommu) == 0 and iommu.msi_log == []


def test_fqof_keeps_fip_asserted_until_cleared():
    iommu, _, engine = make_iommu()
    enable_fq(iommu, log2sz_1=0, fie=True)  # 2 entries: full after 1
    for _ in range(2):
        engine.outcomes.append(fault())
        iommu.translate(Request(device_id=1, iova=0))
    assert Fqcsr.FQOF.get(fqcsr(iommu))
    iommu.write_register(Reg.IPSR, 4, Ipsr.FIP.mask)
    assert ipsr(iommu) == Ipsr.FIP.mask  # condition persists
    iommu.write_register(Reg.FQCSR, 4, Fqcsr.FQEN.mask | Fqcsr.FIE.mask | Fqcsr.FQOF.mask)
    iommu.write_register(Reg.IPSR, 4, Ipsr.FIP.mask)
    assert ipsr(iommu) == 0


def test_masked_vector_holds_the_msi_until_unmasked():
    iommu, memory, engine = make_iommu()
    iommu.write_register(Reg.ICVEC, 8, arch.Icvec.FIV.put(4))
    _set_msi(iommu, 4, MSI_TARGET, 0xAB, masked=True)
    enable_fq(iommu, fie=True)
    engine.outcomes.append(fault())
    iommu.translate(Request(device_id=1, iova=0))
    assert ipsr(iommu) == Ipsr.FIP.mask and iommu.msi_log == []
    assert memory.read32(MSI_TARGET) == 0
    iommu.write_register(arch.msi_cfg(4)[2], 4, 1)  # still masked
    assert iommu.msi_log == []
    iommu.write_register(arch.msi_cfg(4)[2], 4, 0)
    assert iommu.msi_log == [(MSI_TARGET, 0xAB)]
    assert memory.read32(MSI_TARGET) == 0xAB
    iommu.write_register(arch.msi_cfg(4)[2], 4, 1)
    iommu.write_register(arch.msi_cfg(4)[2], 4, 0)
    assert len(iommu.msi_log) == 1  # nothing pending any more


def test_msi_write_access_fault_is_reported_as_cause_273():
    iommu, memory, engine = make_iommu()
    bad_target = 0x9000_0000
    iommu.write_register(Reg.ICVEC, 8, arch.Icvec.CIV.put(1))
    _set_msi(iommu, 1, bad_target + 8, 0x1)
    memory.inject_fault(bad_target, 4096)
    enable_fq(iommu)
    enable_cq(iommu, cie=True)
    submit(iommu, memory, 0)  # illegal: cmd_ill -> cip -> MSI on vector 1 -> refused
    iommu.process_commands()
    assert iommu.msi_log == []
    record = arch.FaultRecord.unpack(memory.read(FQ_BASE, 32))
    assert record == arch.FaultRecord(cause=273, ttyp=0, iotval=bad_target + 8)
    dw0 = _record_at(memory, 0)[0]
    assert dw0 == 273  # TTYP 0, DID/PID/PV/PRIV all 0


def test_msi_write_fault_loop_terminates():
    """fip's own MSI faults on the same vector: one more 273 record, then fip is pending."""
    iommu, memory, engine = make_iommu()
    _set_msi(iommu, 0, 0x9000_0000, 0x1)
    memory.inject_fault(0x9000_0000, 4096)
    enable_fq(iommu, fie=True)
    engine.outcomes.append(fault())
    iommu.translate(Request(device_id=1, iova=0))
    assert iommu.read_register(Reg.FQT, 4) == 2
    assert arch.FaultRecord.unpack(memory.read(FQ_BASE + 32, 32)).cause == 273


def test_wired_fault_interrupt_is_a_level():
    iommu, _, engine = make_iommu(capabilities=caps(igs=Igs.WSI))
    iommu.write_register(Reg.ICVEC, 8, arch.Icvec.FIV.put(7))
    enable_fq(iommu, fie=True)
    engine.outcomes.append(fault())
    iommu.translate(Request(device_id=1, iova=0))
    assert iommu.wired_interrupts == {7} and iommu.msi_log == []
    assert iommu.wired_interrupts == {7}
    iommu.write_register(Reg.IPSR, 4, Ipsr.FIP.mask)
    assert iommu.wired_interrupts == set()


# =========================================================================== #
# End to end through the real translation engine (models/translate.py)
# =========================================================================== #
def test_end_to_end_fault_reaches_the_fault_queue():
    pytest.importorskip("models.translate")
    from models.iommu import IOMMU
    from models.memory import Memory

    memory = Memory()
    iommu = IOMMU(memory)  # ddtp.iommu_mode resets to Off
    enable_fq(iommu)
    response = iommu.translate(Request(device_id=0x21, iova=0x1234_5000, tag=3))
    assert not response.ok and response.reported and response.tag == 3
    assert response.cause == arch.Cause.ALL_INBOUND_DISALLOWED
    record = arch.FaultRecord.unpack(memory.read(FQ_BASE, 32))
    assert (record.cause, record.ttyp, record.device_id) == (256, 2, 0x21)
    assert record.iotval == 0x1234_5000
