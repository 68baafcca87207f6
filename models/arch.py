"""The RISC-V IOMMU v1.0 architecture as code: every encoding defined once.

Register offsets, bit fields, modes, cause codes, transaction types, command
opcodes, in-memory structure layouts (device context, process context, PTE,
fault record) and HPM event ids. Everything else in the project (the reference
model, the OS models, the RTL layouts and the testbench) imports from here.

Section numbers in comments refer to ../shared/spec/riscv-iommu-digest.md and
the spec chapters in riscv-non-isa/riscv-iommu (src/*.adoc).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields


# --------------------------------------------------------------------------- #
# Bit-field helper
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Field:
    """A bit field ``[lo + width - 1 : lo]`` inside a register or structure word."""

    lo: int
    width: int = 1

    @property
    def hi(self) -> int:
        return self.lo + self.width - 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lo

    def get(self, word: int) -> int:
        return (word >> self.lo) & ((1 << self.width) - 1)

    def set(self, word: int, value: int) -> int:
        if value < 0 or value >> self.width:
            raise ValueError(f"value {value:#x} does not fit a {self.width}-bit field")
        return (word & ~self.mask) | (value << self.lo)

    def put(self, value: int) -> int:
        return self.set(0, value)


def bits(value: int, hi: int, lo: int) -> int:
    """``value[hi:lo]`` as an integer."""
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


MASK64 = (1 << 64) - 1
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


# --------------------------------------------------------------------------- #
# Register map (§8.1) and register fields
# --------------------------------------------------------------------------- #
class Reg(enum.IntEnum):
    CAPABILITIES = 0x000
    FCTL = 0x008
    DDTP = 0x010
    CQB = 0x018
    CQH = 0x020
    CQT = 0x024
    FQB = 0x028
    FQH = 0x030
    FQT = 0x034
    PQB = 0x038
    PQH = 0x040
    PQT = 0x044
    CQCSR = 0x048
    FQCSR = 0x04C
    PQCSR = 0x050
    IPSR = 0x054
    IOCOUNTOVF = 0x058
    IOCOUNTINH = 0x05C
    IOHPMCYCLES = 0x060
    IOHPMCTR1 = 0x068  # iohpmctrN at 0x068 + 8*(N-1), N = 1..31
    IOHPMEVT1 = 0x160  # iohpmevtN at 0x160 + 8*(N-1)
    TR_REQ_IOVA = 0x258
    TR_REQ_CTL = 0x260
    TR_RESPONSE = 0x268
    IOMMU_QOSID = 0x270
    ICVEC = 0x2F8
    MSI_CFG_TBL = 0x300  # 16 entries x 16 bytes


#: Size in bytes of each register (4 or 8); 64-bit registers accept 4-byte halves.
REG_SIZE = {
    Reg.CAPABILITIES: 8, Reg.FCTL: 4, Reg.DDTP: 8, Reg.CQB: 8, Reg.CQH: 4, Reg.CQT: 4,
    Reg.FQB: 8, Reg.FQH: 4, Reg.FQT: 4, Reg.PQB: 8, Reg.PQH: 4, Reg.PQT: 4,
    Reg.CQCSR: 4, Reg.FQCSR: 4, Reg.PQCSR: 4, Reg.IPSR: 4, Reg.IOCOUNTOVF: 4,
    Reg.IOCOUNTINH: 4, Reg.IOHPMCYCLES: 8, Reg.TR_REQ_IOVA: 8, Reg.TR_REQ_CTL: 8,
    Reg.TR_RESPONSE: 8, Reg.IOMMU_QOSID: 4, Reg.ICVEC: 8,
}

HPM_COUNTERS_MAX = 31


def iohpmctr(n: int) -> int:
    if not 1 <= n <= HPM_COUNTERS_MAX:
        raise ValueError(f"HPM counter index must be 1..31, not {n}")
    return Reg.IOHPMCTR1 + 8 * (n - 1)


def iohpmevt(n: int) -> int:
    if not 1 <= n <= HPM_COUNTERS_MAX:
        raise ValueError(f"HPM event index must be 1..31, not {n}")
    return Reg.IOHPMEVT1 + 8 * (n - 1)


def msi_cfg(vector: int) -> tuple[int, int, int]:
    """Offsets of (msi_addr, msi_data, msi_vec_ctl) for one msi_cfg_tbl entry."""
    if not 0 <= vector < 16:
        raise ValueError(f"MSI vector must be 0..15, not {vector}")
    base = Reg.MSI_CFG_TBL + 16 * vector
    return base, base + 8, base + 12


class Cap:
    """capabilities register fields (§8.4)."""

    VERSION = Field(0, 8)
    SV32 = Field(8)
    SV39 = Field(9)
    SV48 = Field(10)
    SV57 = Field(11)
    SVRSW60T59B = Field(14)
    SVPBMT = Field(15)
    SV32X4 = Field(16)
    SV39X4 = Field(17)
    SV48X4 = Field(18)
    SV57X4 = Field(19)
    AMO_MRIF = Field(21)
    MSI_FLAT = Field(22)
    MSI_MRIF = Field(23)
    AMO_HWAD = Field(24)
    ATS = Field(25)
    T2GPA = Field(26)
    END = Field(27)
    IGS = Field(28, 2)
    HPM = Field(30)
    DBG = Field(31)
    PAS = Field(32, 6)
    PD8 = Field(38)
    PD17 = Field(39)
    PD20 = Field(40)
    QOSID = Field(41)
    NL = Field(42)
    S = Field(43)


class Igs(enum.IntEnum):
    MSI = 0
    WSI = 1
    BOTH = 2


class Fctl:
    BE = Field(0)
    WSI = Field(1)
    GXL = Field(2)


class Ddtp:
    IOMMU_MODE = Field(0, 4)
    BUSY = Field(4)
    PPN = Field(10, 44)


class DdtpMode(enum.IntEnum):
    OFF = 0
    BARE = 1
    LVL1 = 2
    LVL2 = 3
    LVL3 = 4

    @property
    def levels(self) -> int:
        return {DdtpMode.LVL1: 1, DdtpMode.LVL2: 2, DdtpMode.LVL3: 3}[self]


class QueueBase:
    """cqb / fqb / pqb (§8.6)."""

    LOG2SZ_1 = Field(0, 5)
    PPN = Field(10, 44)


class Cqcsr:
    CQEN = Field(0)
    CIE = Field(1)
    CQMF = Field(8)
    CMD_TO = Field(9)
    CMD_ILL = Field(10)
    FENCE_W_IP = Field(11)
    CQON = Field(16)
    BUSY = Field(17)


class Fqcsr:
    FQEN = Field(0)
    FIE = Field(1)
    FQMF = Field(8)
    FQOF = Field(9)
    FQON = Field(16)
    BUSY = Field(17)


class Pqcsr:
    PQEN = Field(0)
    PIE = Field(1)
    PQMF = Field(8)
    PQOF = Field(9)
    PQON = Field(16)
    BUSY = Field(17)


class Ipsr:
    CIP = Field(0)
    FIP = Field(1)
    PMIP = Field(2)
    PIP = Field(3)


class Icvec:
    CIV = Field(0, 4)
    FIV = Field(4, 4)
    PMIV = Field(8, 4)
    PIV = Field(12, 4)


class MsiVecCtl:
    M = Field(0)


class Hpmevt:
    """iohpmevtN fields (§8.10)."""

    EVENT_ID = Field(0, 15)
    DMASK = Field(15)
    PID_PSCID = Field(16, 20)
    DID_GSCID = Field(36, 24)
    PV_PSCV = Field(60)
    DV_GSCV = Field(61)
    IDT = Field(62)
    OF = Field(63)


class HpmEvent(enum.IntEnum):
    """Standard HPM event ids (§10.6)."""

    NONE = 0
    UNTRANSLATED_REQ = 1
    TRANSLATED_REQ = 2
    ATS_TRANSLATION_REQ = 3
    TLB_MISS = 4
    DDT_WALK = 5
    PDT_WALK = 6
    S_VS_PT_WALK = 7  # first-stage page-table walks
    G_PT_WALK = 8  # second-stage page-table walks


#: Events that may be filtered by GSCID/PSCID (iohpmevt.IDT = 1) (§10.6); for the
#: others an IDT = 1 selector never counts (§8.10).
HPM_EVENTS_WITH_IDT = frozenset({HpmEvent.TLB_MISS, HpmEvent.S_VS_PT_WALK, HpmEvent.G_PT_WALK})


class Iohpmcycles:
    """iohpmcycles (§8.10): a 63-bit counter and a sticky overflow bit."""

    COUNTER = Field(0, 63)
    OF = Field(63)


class Iocount:
    """iocountovf / iocountinh (§8.10): bit 0 is the cycles counter, bit N is iohpmctrN."""

    CY = Field(0)


class TrReqCtl:
    GO_BUSY = Field(0)
    PRIV = Field(1)
    EXE = Field(2)
    NW = Field(3)
    PID = Field(12, 20)
    PV = Field(32)
    DID = Field(40, 24)


class TrResponse:
    FAULT = Field(0)
    PBMT = Field(7, 2)
    S = Field(9)
    PPN = Field(10, 44)


class TrReqIova:
    VPN = Field(12, 52)


class MsiAddr:
    """msi_addr_x (§8.9): bits [1:0] read 0."""

    ADDR = Field(2, 54)


MSI_CFG_TBL_ENTRIES = 16


class IommuQosid:
    """iommu_qosid [ext] (§8.12)."""

    RCID = Field(0, 12)
    MCID = Field(16, 12)


# --------------------------------------------------------------------------- #
# Device directory table and device context (§2, §3)
# --------------------------------------------------------------------------- #
class Ddte:
    """Non-leaf DDT entry, also the non-leaf PDT entry (§2.4)."""

    V = Field(0)
    PPN = Field(10, 44)
    RESERVED_MASK = (0x3FF << 54) | (0x1FF << 1)


BASE_DC_SIZE = 32
EXTENDED_DC_SIZE = 64


def ddi(device_id: int, extended: bool) -> tuple[int, int, int]:
    """Split a device_id into the DDT indices (DDI[0], DDI[1], DDI[2]) (§2.3)."""
    if extended:
        return bits(device_id, 5, 0), bits(device_id, 14, 6), bits(device_id, 23, 15)
    return bits(device_id, 6, 0), bits(device_id, 15, 7), bits(device_id, 23, 16)


def device_id_width(mode: DdtpMode, extended: bool) -> int:
    """How many device_id bits a ``mode`` DDT indexes (§2.3: the DDI split, which the
    extended 64-byte DC shifts by one bit)."""
    return {DdtpMode.LVL1: 6 if extended else 7, DdtpMode.LVL2: 15 if extended else 16,
            DdtpMode.LVL3: 24}[mode]


def device_id_fits(device_id: int, mode: DdtpMode, extended: bool) -> bool:
    """Step 5 of §1.4: the device_id must not be wider than the DDT can index."""
    return device_id >> device_id_width(mode, extended) == 0


class Tc:
    """DC.tc (§3.2)."""

    V = Field(0)
    EN_ATS = Field(1)
    EN_PRI = Field(2)
    T2GPA = Field(3)
    DTF = Field(4)
    PDTV = Field(5)
    PRPR = Field(6)
    GADE = Field(7)
    SADE = Field(8)
    DPE = Field(9)
    SBE = Field(10)
    SXL = Field(11)
    RESERVED_MASK = (0xFFF << 12) | (0xFFFFFFFF << 32)  # [23:12] and [63:32]


class Iohgatp:
    PPN = Field(0, 44)
    GSCID = Field(44, 16)
    MODE = Field(60, 4)


class Ta:
    PSCID = Field(12, 20)
    RCID = Field(40, 12)
    MCID = Field(52, 12)
    RESERVED_MASK = 0xFFF | (0xFF << 32)  # [11:0], [39:32]; RCID/MCID reserved w/o QOSID


class Fsc:
    """DC.fsc (iosatp or pdtp) and PC.fsc: PPN [43:0], MODE [63:60]."""

    PPN = Field(0, 44)
    MODE = Field(60, 4)
    RESERVED_MASK = 0xFFFF << 44


class Msiptp:
    PPN = Field(0, 44)
    MODE = Field(60, 4)
    RESERVED_MASK = 0xFFFF << 44


class MsiptpMode(enum.IntEnum):
    OFF = 0
    FLAT = 1


MSI_ADDR_MASK = Field(0, 52)  # msi_addr_mask / msi_addr_pattern [51:0]


class AtpMode(enum.IntEnum):
    """iosatp.MODE / PC.fsc.MODE and iohgatp.MODE encodings (SXL = GXL = 0)."""

    BARE = 0
    SV39 = 8
    SV48 = 9
    SV57 = 10


# iohgatp uses the same numbers for the x4 schemes.
SV39X4, SV48X4, SV57X4 = AtpMode.SV39, AtpMode.SV48, AtpMode.SV57


class PdtpMode(enum.IntEnum):
    BARE = 0
    PD8 = 1
    PD17 = 2
    PD20 = 3

    @property
    def levels(self) -> int:
        return {PdtpMode.PD8: 1, PdtpMode.PD17: 2, PdtpMode.PD20: 3}[self]


def pdi(process_id: int) -> tuple[int, int, int]:
    """Split a process_id into (PDI[0], PDI[1], PDI[2]) (§4.2)."""
    return bits(process_id, 7, 0), bits(process_id, 16, 8), bits(process_id, 19, 17)


def process_id_fits(process_id: int, mode: PdtpMode) -> bool:
    width = {PdtpMode.PD8: 8, PdtpMode.PD17: 17, PdtpMode.PD20: 20}[mode]
    return process_id >> width == 0


class PcTa:
    """PC.ta (§4.3)."""

    V = Field(0)
    ENS = Field(1)
    SUM = Field(2)
    PSCID = Field(12, 20)
    RESERVED_MASK = (0x1FF << 3) | (0xFFFFFFFF << 32)


PC_SIZE = 16


@dataclass
class DeviceContext:
    """A device context as eight 64-bit words (base format uses the first four)."""

    tc: int = 0
    iohgatp: int = 0
    ta: int = 0
    fsc: int = 0
    msiptp: int = 0
    msi_addr_mask: int = 0
    msi_addr_pattern: int = 0
    reserved: int = 0

    def pack(self, extended: bool) -> bytes:
        words = [getattr(self, f.name) for f in fields(self)][: 8 if extended else 4]
        return b"".join(w.to_bytes(8, "little") for w in words)

    @classmethod
    def unpack(cls, raw: bytes) -> "DeviceContext":
        words = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]
        return cls(*words)


@dataclass
class ProcessContext:
    ta: int = 0
    fsc: int = 0

    def pack(self) -> bytes:
        return self.ta.to_bytes(8, "little") + self.fsc.to_bytes(8, "little")

    @classmethod
    def unpack(cls, raw: bytes) -> "ProcessContext":
        return cls(int.from_bytes(raw[0:8], "little"), int.from_bytes(raw[8:16], "little"))


# --------------------------------------------------------------------------- #
# Page-table entries (§5)
# --------------------------------------------------------------------------- #
class Pte:
    V = Field(0)
    R = Field(1)
    W = Field(2)
    X = Field(3)
    U = Field(4)
    G = Field(5)
    A = Field(6)
    D = Field(7)
    RSW = Field(8, 2)
    PPN = Field(10, 44)
    RESERVED = Field(54, 7)  # [60:54]; [60:59] free for SW only with Svrsw60t59b
    PBMT = Field(61, 2)
    N = Field(63)


PTE_V, PTE_R, PTE_W, PTE_X, PTE_U, PTE_G, PTE_A, PTE_D = (1 << i for i in range(8))


class Pbmt(enum.IntEnum):
    PMA = 0
    NC = 1
    IO = 2


@dataclass(frozen=True)
class Scheme:
    """A page-table scheme: Sv39/48/57 (first stage) or their x4 (G-stage) forms."""

    name: str
    mode: int  # encoding in iosatp/iohgatp MODE
    levels: int
    gstage: bool

    @property
    def va_bits(self) -> int:
        return 12 + 9 * self.levels + (2 if self.gstage else 0)

    @property
    def root_size(self) -> int:
        return 16384 if self.gstage else 4096

    def vpn(self, addr: int, level: int) -> int:
        width = 11 if self.gstage and level == self.levels - 1 else 9
        return bits(addr, 12 + 9 * level + width - 1, 12 + 9 * level)


SV39 = Scheme("Sv39", AtpMode.SV39, 3, False)
SV48 = Scheme("Sv48", AtpMode.SV48, 4, False)
SV57 = Scheme("Sv57", AtpMode.SV57, 5, False)
SV39X4_SCHEME = Scheme("Sv39x4", AtpMode.SV39, 3, True)
SV48X4_SCHEME = Scheme("Sv48x4", AtpMode.SV48, 4, True)
SV57X4_SCHEME = Scheme("Sv57x4", AtpMode.SV57, 5, True)
FIRST_STAGE_SCHEMES = {s.mode: s for s in (SV39, SV48, SV57)}
GSTAGE_SCHEMES = {s.mode: s for s in (SV39X4_SCHEME, SV48X4_SCHEME, SV57X4_SCHEME)}
SCHEMES = {s.name: s for s in (SV39, SV48, SV57, SV39X4_SCHEME, SV48X4_SCHEME, SV57X4_SCHEME)}


def page_size(level: int) -> int:
    """Size in bytes of a leaf at ``level`` (0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB, ...)."""
    return 1 << (12 + 9 * level)


# --------------------------------------------------------------------------- #
# Requests: access, privilege, address type, transaction type (§1.1, §1.2)
# --------------------------------------------------------------------------- #
class Access(enum.IntEnum):
    READ = 0
    WRITE = 1
    EXECUTE = 2


class Priv(enum.IntEnum):
    USER = 0
    SUPERVISOR = 1


class AddrType(enum.IntEnum):
    UNTRANSLATED = 0
    TRANSLATED = 1
    ATS_TRANSLATION_REQUEST = 2


class Ttyp(enum.IntEnum):
    NONE = 0
    UNTRANSLATED_EXEC = 1
    UNTRANSLATED_READ = 2
    UNTRANSLATED_WRITE = 3
    TRANSLATED_EXEC = 5
    TRANSLATED_READ = 6
    TRANSLATED_WRITE = 7
    PCIE_ATS_TRANSLATION_REQUEST = 8
    PCIE_MESSAGE_REQUEST = 9


def ttyp_of(addr_type: AddrType, access: Access) -> Ttyp:
    if addr_type == AddrType.ATS_TRANSLATION_REQUEST:
        return Ttyp.PCIE_ATS_TRANSLATION_REQUEST
    base = 1 if addr_type == AddrType.UNTRANSLATED else 5
    return Ttyp(base + {Access.EXECUTE: 0, Access.READ: 1, Access.WRITE: 2}[access])


# --------------------------------------------------------------------------- #
# Fault causes (§6.1)
# --------------------------------------------------------------------------- #
class Cause(enum.IntEnum):
    INSTRUCTION_ACCESS_FAULT = 1
    READ_ADDRESS_MISALIGNED = 4
    READ_ACCESS_FAULT = 5
    WRITE_ADDRESS_MISALIGNED = 6
    WRITE_ACCESS_FAULT = 7
    INSTRUCTION_PAGE_FAULT = 12
    READ_PAGE_FAULT = 13
    WRITE_PAGE_FAULT = 15
    INSTRUCTION_GUEST_PAGE_FAULT = 20
    READ_GUEST_PAGE_FAULT = 21
    WRITE_GUEST_PAGE_FAULT = 23
    ALL_INBOUND_DISALLOWED = 256
    DDT_LOAD_ACCESS_FAULT = 257
    DDT_ENTRY_NOT_VALID = 258
    DDT_ENTRY_MISCONFIGURED = 259
    TRANSACTION_TYPE_DISALLOWED = 260
    MSI_PTE_LOAD_ACCESS_FAULT = 261
    MSI_PTE_NOT_VALID = 262
    MSI_PTE_MISCONFIGURED = 263
    MRIF_ACCESS_FAULT = 264
    PDT_ENTRY_LOAD_ACCESS_FAULT = 265
    PDT_ENTRY_NOT_VALID = 266
    PDT_ENTRY_MISCONFIGURED = 267
    DDT_DATA_CORRUPTION = 268
    PDT_DATA_CORRUPTION = 269
    MSI_PT_DATA_CORRUPTION = 270
    MSI_MRIF_DATA_CORRUPTION = 271
    INTERNAL_DATAPATH_ERROR = 272
    IOMMU_MSI_WRITE_ACCESS_FAULT = 273
    PT_DATA_CORRUPTION = 274


#: Causes that are logged even when DC.tc.DTF = 1 (§6.3).
CAUSES_REPORTED_DESPITE_DTF = frozenset({
    Cause.ALL_INBOUND_DISALLOWED, Cause.DDT_LOAD_ACCESS_FAULT, Cause.DDT_ENTRY_NOT_VALID,
    Cause.DDT_ENTRY_MISCONFIGURED, Cause.DDT_DATA_CORRUPTION,
    Cause.INTERNAL_DATAPATH_ERROR, Cause.IOMMU_MSI_WRITE_ACCESS_FAULT,
})


def access_fault_cause(access: Access) -> Cause:
    return {Access.EXECUTE: Cause.INSTRUCTION_ACCESS_FAULT, Access.READ: Cause.READ_ACCESS_FAULT,
            Access.WRITE: Cause.WRITE_ACCESS_FAULT}[access]


def page_fault_cause(access: Access) -> Cause:
    return {Access.EXECUTE: Cause.INSTRUCTION_PAGE_FAULT, Access.READ: Cause.READ_PAGE_FAULT,
            Access.WRITE: Cause.WRITE_PAGE_FAULT}[access]


def guest_page_fault_cause(access: Access) -> Cause:
    return {Access.EXECUTE: Cause.INSTRUCTION_GUEST_PAGE_FAULT,
            Access.READ: Cause.READ_GUEST_PAGE_FAULT,
            Access.WRITE: Cause.WRITE_GUEST_PAGE_FAULT}[access]


# --------------------------------------------------------------------------- #
# Fault record (§6.2)
# --------------------------------------------------------------------------- #
FAULT_RECORD_SIZE = 32


class FaultRec:
    CAUSE = Field(0, 12)
    PID = Field(12, 20)
    PV = Field(32)
    PRIV = Field(33)
    TTYP = Field(34, 6)
    DID = Field(40, 24)


@dataclass(frozen=True)
class FaultRecord:
    cause: int
    ttyp: int
    device_id: int = 0
    process_id: int = 0
    pv: bool = False
    priv: bool = False
    iotval: int = 0
    iotval2: int = 0

    def pack(self) -> bytes:
        dw0 = (FaultRec.CAUSE.put(self.cause) | FaultRec.PID.put(self.process_id)
               | FaultRec.PV.put(int(self.pv)) | FaultRec.PRIV.put(int(self.priv))
               | FaultRec.TTYP.put(self.ttyp) | FaultRec.DID.put(self.device_id))
        return b"".join(w.to_bytes(8, "little") for w in (dw0, 0, self.iotval, self.iotval2))

    @classmethod
    def unpack(cls, raw: bytes) -> "FaultRecord":
        dw0, _, iotval, iotval2 = (int.from_bytes(raw[i : i + 8], "little") for i in (0, 8, 16, 24))
        return cls(cause=FaultRec.CAUSE.get(dw0), ttyp=FaultRec.TTYP.get(dw0),
                   device_id=FaultRec.DID.get(dw0), process_id=FaultRec.PID.get(dw0),
                   pv=bool(FaultRec.PV.get(dw0)), priv=bool(FaultRec.PRIV.get(dw0)),
                   iotval=iotval, iotval2=iotval2)


# --------------------------------------------------------------------------- #
# Commands (§7)
# --------------------------------------------------------------------------- #
COMMAND_SIZE = 16


class Opcode(enum.IntEnum):
    IOTINVAL = 1
    IOFENCE = 2
    IODIR = 3
    ATS = 4


class IotinvalFunc(enum.IntEnum):
    VMA = 0
    GVMA = 1


class IofenceFunc(enum.IntEnum):
    C = 0


class IodirFunc(enum.IntEnum):
    INVAL_DDT = 0
    INVAL_PDT = 1


class AtsFunc(enum.IntEnum):
    INVAL = 0
    PRGR = 1


class Cmd:
    """Command fields; positions are within the 128-bit command (dword1 starts at 64)."""

    OPCODE = Field(0, 7)
    FUNC3 = Field(7, 3)
    # IOTINVAL
    AV = Field(10)
    PSCID = Field(12, 20)
    PSCV = Field(32)
    GV = Field(33)
    NL = Field(34)
    GSCID = Field(44, 16)
    S = Field(73)
    IOTINVAL_ADDR = Field(74, 52)  # ADDR[63:12]
    IOTINVAL_RESERVED = (1 << 11) | (0x1FF << 35) | (0xF << 60) | (0x1FF << 64) | (0x3 << 126)
    # IOFENCE.C
    WSI = Field(11)
    PR = Field(12)
    PW = Field(13)
    DATA = Field(32, 32)
    IOFENCE_ADDR = Field(64, 62)  # ADDR[63:2]
    IOFENCE_RESERVED = (0x3FFFF << 14) | (0x3 << 126)
    # IODIR
    PID = Field(12, 20)
    DV = Field(33)
    DID = Field(40, 24)
    IODIR_RESERVED = (0x3 << 10) | (1 << 32) | (0x3F << 34) | (MASK64 << 64)
    # ATS
    PV = Field(32)
    DSV = Field(33)
    RID = Field(40, 16)
    DSEG = Field(56, 8)
    PAYLOAD = Field(64, 64)
    ATS_RESERVED = (0x3 << 10) | (0x3F << 34)


def iotinval(func: IotinvalFunc, *, gv: bool = False, av: bool = False, pscv: bool = False,
             gscid: int = 0, pscid: int = 0, addr: int = 0) -> int:
    """Build an IOTINVAL command as a 128-bit integer."""
    return (Cmd.OPCODE.put(Opcode.IOTINVAL) | Cmd.FUNC3.put(func) | Cmd.AV.put(int(av))
            | Cmd.PSCID.put(pscid) | Cmd.PSCV.put(int(pscv)) | Cmd.GV.put(int(gv))
            | Cmd.GSCID.put(gscid) | Cmd.IOTINVAL_ADDR.put(addr >> 12))


def iofence_c(*, av: bool = False, wsi: bool = False, pr: bool = False, pw: bool = False,
              data: int = 0, addr: int = 0) -> int:
    if addr & 3:
        raise ValueError(f"IOFENCE.C address must be 4-byte aligned, not {addr:#x}")
    return (Cmd.OPCODE.put(Opcode.IOFENCE) | Cmd.FUNC3.put(IofenceFunc.C) | Cmd.AV.put(int(av))
            | Cmd.WSI.put(int(wsi)) | Cmd.PR.put(int(pr)) | Cmd.PW.put(int(pw))
            | Cmd.DATA.put(data) | Cmd.IOFENCE_ADDR.put(addr >> 2))


def iodir(func: IodirFunc, *, dv: bool = False, did: int = 0, pid: int = 0) -> int:
    return (Cmd.OPCODE.put(Opcode.IODIR) | Cmd.FUNC3.put(func) | Cmd.PID.put(pid)
            | Cmd.DV.put(int(dv)) | Cmd.DID.put(did))


def command_bytes(command: int) -> bytes:
    return command.to_bytes(COMMAND_SIZE, "little")


# --------------------------------------------------------------------------- #
# MSI page-table entries (§9.2)
# --------------------------------------------------------------------------- #
MSI_PTE_SIZE = 16


class MsiPte:
    V = Field(0)
    M = Field(1, 2)
    PPN = Field(10, 44)
    MRIF_ADDR = Field(7, 47)  # MRIF address[55:9]
    C = Field(63)
    BASIC_RESERVED = (0x7F << 3) | (0x1FF << 54)
    MRIF_RESERVED = (0xF << 3) | (0x1FF << 54)
    # dword 1 of an MRIF-mode PTE
    NID = Field(0, 10)
    NPPN = Field(10, 44)
    NID10 = Field(60)
    MRIF_DW1_RESERVED = (0x3F << 54) | (0x7 << 61)


class MsiPteMode(enum.IntEnum):
    MRIF = 1
    BASIC = 3


def msi_extract(value: int, mask: int) -> int:
    """Pack the bits of ``value`` selected by ``mask`` into the low end (§9.1)."""
    out, pos = 0, 0
    for i in range(MSI_ADDR_MASK.width):
        if mask >> i & 1:
            out |= (value >> i & 1) << pos
            pos += 1
    return out


# --------------------------------------------------------------------------- #
# The configuration an implementation chooses (advertised in capabilities)
# --------------------------------------------------------------------------- #
def capabilities_value(*, sv39=True, sv48=True, sv57=True, sv39x4=True, sv48x4=True,
                       sv57x4=True, svpbmt=True, amo_hwad=True, msi_flat=True,
                       msi_mrif=False, amo_mrif=False, ats=False, t2gpa=False,
                       end=False, igs=Igs.BOTH, hpm=True, dbg=True, pas=56,
                       pd8=True, pd17=True, pd20=True) -> int:
    """Compose a capabilities register value from named features."""
    value = Cap.VERSION.put(0x10)
    for field, on in ((Cap.SV39, sv39), (Cap.SV48, sv48), (Cap.SV57, sv57),
                      (Cap.SV39X4, sv39x4), (Cap.SV48X4, sv48x4), (Cap.SV57X4, sv57x4),
                      (Cap.SVPBMT, svpbmt), (Cap.AMO_HWAD, amo_hwad),
                      (Cap.MSI_FLAT, msi_flat), (Cap.MSI_MRIF, msi_mrif),
                      (Cap.AMO_MRIF, amo_mrif), (Cap.ATS, ats), (Cap.T2GPA, t2gpa),
                      (Cap.END, end), (Cap.HPM, hpm), (Cap.DBG, dbg), (Cap.PD8, pd8),
                      (Cap.PD17, pd17), (Cap.PD20, pd20)):
        value |= field.put(int(bool(on)))
    return value | Cap.IGS.put(igs) | Cap.PAS.put(pas)


DEFAULT_CAPABILITIES = capabilities_value()
