"""Payload layouts of the streams between the IOMMU's blocks.

Widths and encodings come from ``models/arch.py`` (the one source of truth);
the testbench packs and unpacks these same layouts (see ``tb/``), so a field
is named and placed exactly once.

Stream map (all ``amaranth.lib.stream`` valid/ready):

    request ─► core ─► response                 (TranslationRequest / TranslationResponse)
               core ─► fault                    (FaultReport: records for the fault queue)
    inval   ─► core                             (Invalidation: IOTINVAL / IODIR commands)
               core ─► mem_req, mem_resp ◄─     (MemRequest / MemResponse, the IOMMU's own
                                                 memory port for walks and A/D updates)
    inside: iotlb lookup/fill, walker req/res, context_fetch req/res, per-block memory ports
"""

# No "from __future__ import annotations": data.Struct reads its annotations as values.

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from models import arch

PA_BITS = 56
PPN_BITS = 44
IOVA_BITS = 64
VPN_BITS = 52  # IOVA[63:12]
DEVICE_ID_BITS = 24
PROCESS_ID_BITS = 20
GSCID_BITS = 16
PSCID_BITS = 20
CAUSE_BITS = 12
MSI_ADDR_BITS = 52  # msi_addr_mask / msi_addr_pattern [51:0]: a GPA page number


class Access(enum.Enum, shape=2):
    READ = int(arch.Access.READ)
    WRITE = int(arch.Access.WRITE)
    EXECUTE = int(arch.Access.EXECUTE)


class AddrType(enum.Enum, shape=2):
    UNTRANSLATED = int(arch.AddrType.UNTRANSLATED)
    TRANSLATED = int(arch.AddrType.TRANSLATED)
    ATS_TRANSLATION_REQUEST = int(arch.AddrType.ATS_TRANSLATION_REQUEST)


def dword_layout(fields_of) -> data.StructLayout:
    """A 64-bit word whose fields ``models/arch.py`` describes (``arch.Pte``,
    ``arch.FaultRec``...) as a struct, every field where the spec puts it.

    Fails at import if the class leaves a bit undescribed, so the hardware layout and
    the model's encoding cannot drift apart."""
    fields = sorted(((name.lower(), f) for name, f in vars(fields_of).items()
                     if isinstance(f, arch.Field)), key=lambda item: item[1].lo)
    members, pos = {}, 0
    for name, f in fields:
        if f.lo != pos:
            raise AssertionError(f"arch.{fields_of.__name__} leaves bits {pos}..{f.lo - 1} "
                                 f"undescribed")
        members[name] = unsigned(f.width)
        pos = f.hi + 1
    if pos != 64:
        raise AssertionError(f"arch.{fields_of.__name__} describes {pos} bits, not 64")
    return data.StructLayout(members)


# --------------------------------------------------------------------------- #
# Device side
# --------------------------------------------------------------------------- #
def translation_request(tag_bits: int) -> data.StructLayout:
    """A device's translation request (§1.1)."""
    return data.StructLayout({
        "tag": unsigned(tag_bits),
        "device_id": unsigned(DEVICE_ID_BITS),
        "process_id": unsigned(PROCESS_ID_BITS),
        "pv": unsigned(1),
        "priv": unsigned(1),  # 1 = Supervisor (only meaningful with pv)
        "access": Access,
        "addr_type": AddrType,
        "iova": unsigned(IOVA_BITS),
    })


class MrifNotice(data.Struct):
    """§9.3 step 5: the notice MSI of an MRIF-mode MSI PTE (dword 1): the message goes
    to ``ppn << 12`` (NPPN) with data ``nid`` (NID, zero-extended)."""

    ppn: unsigned(PPN_BITS)
    nid: unsigned(11)


def translation_response(tag_bits: int) -> data.StructLayout:
    """The completion for one request; ``fault`` selects which fields are meaningful.

    ``mrif`` marks an MSI translated through an MRIF-mode MSI PTE: ``spa`` is then the
    512-byte MRIF itself and ``notice`` the notice MSI, the completion fields §1.1
    names for MRIF-mode MSIs; the bridge performing the write records the interrupt
    (sets pending bit D of the MRIF) and sends the notice (§9.4)."""
    return data.StructLayout({
        "tag": unsigned(tag_bits),
        "fault": unsigned(1),
        "cause": unsigned(CAUSE_BITS),  # valid when fault
        # Valid when not fault. 64 bits: a Bare stage passes the whole IOVA through
        # (SPA = IOVA, §1.4 step 2); PMA/PMP checks on it belong to the bridge (§1.1).
        "spa": unsigned(IOVA_BITS),
        "size_log2": unsigned(6),  # translation size: 12 (4 KiB), 16 (64 KiB NAPOT), 21, 30, 39, 48
        "r": unsigned(1), "w": unsigned(1), "x": unsigned(1),
        "u": unsigned(1), "g": unsigned(1),
        "pbmt": unsigned(2),
        "mrif": unsigned(1),
        "notice": MrifNotice,
    })


class FaultReport(data.Struct):
    """A fault record for the fault queue (§6.2); DTF suppression already applied."""

    cause: unsigned(CAUSE_BITS)
    ttyp: unsigned(6)
    device_id: unsigned(DEVICE_ID_BITS)
    process_id: unsigned(PROCESS_ID_BITS)
    pv: unsigned(1)
    priv: unsigned(1)
    iotval: unsigned(64)
    iotval2: unsigned(64)


# --------------------------------------------------------------------------- #
# Control side: invalidations from the command queue
# --------------------------------------------------------------------------- #
class InvalKind(enum.Enum, shape=3):
    IOTINVAL_VMA = 0
    IOTINVAL_GVMA = 1
    IODIR_INVAL_DDT = 2
    IODIR_INVAL_PDT = 3


class Invalidation(data.Struct):
    """One IOTINVAL or IODIR command's operands (§7.2), as the caches need them."""

    kind: InvalKind
    gv: unsigned(1)
    av: unsigned(1)
    pscv: unsigned(1)
    dv: unsigned(1)
    gscid: unsigned(GSCID_BITS)
    pscid: unsigned(PSCID_BITS)
    vpn: unsigned(VPN_BITS)  # ADDR[63:12]
    device_id: unsigned(DEVICE_ID_BITS)
    process_id: unsigned(PROCESS_ID_BITS)


# --------------------------------------------------------------------------- #
# Memory port (the IOMMU as a bus master)
# --------------------------------------------------------------------------- #
class MemOp(enum.Enum, shape=2):
    READ = 0  # 8-byte aligned load
    WRITE = 1  # 8-byte aligned store of wdata
    CAS = 2  # atomic compare-and-swap: store wdata if memory == compare; rdata = old value
    WRITE32 = 3  # 4-byte aligned store of wdata[31:0] (IOFENCE.C data, MSI data)


class MemErr(enum.Enum, shape=2):
    OK = 0
    ACCESS_FAULT = 1  # PMA/PMP refusal or bus error
    POISON = 2  # data corruption (reads only)


def mem_request(id_bits: int) -> data.StructLayout:
    return data.StructLayout({
        "id": unsigned(id_bits),
        "op": MemOp,
        "addr": unsigned(PA_BITS),
        "wdata": unsigned(64),
        "compare": unsigned(64),
    })


def mem_response(id_bits: int) -> data.StructLayout:
    return data.StructLayout({
        "id": unsigned(id_bits),
        "err": MemErr,
        "rdata": unsigned(64),
    })


# --------------------------------------------------------------------------- #
# Register page (MMIO): the CPU's door to the IOMMU (spec chapter 5 / digest §8)
# --------------------------------------------------------------------------- #
REG_OFFSET_BITS = 12  # one 4 KiB register page


class MmioRequest(data.Struct):
    """One CPU access to the register page; every request gets one ``MmioResponse``.

    ``addr`` is the byte offset in the page, naturally aligned to the access size;
    ``wide`` = 1 for an 8-byte access, 0 for a 4-byte one. A 4-byte access uses
    ``wdata[31:0]`` / returns ``rdata[31:0]`` whatever ``addr[2]`` is.
    """

    addr: unsigned(REG_OFFSET_BITS)
    write: unsigned(1)
    wide: unsigned(1)
    wdata: unsigned(64)


class MmioResponse(data.Struct):
    rdata: unsigned(64)  # 0 for writes


# --------------------------------------------------------------------------- #
# Inside the core
# --------------------------------------------------------------------------- #
class TranslationContext(data.Struct):
    """What the device and process contexts say about how to translate (§1.4 steps 6-16).

    Produced by the context fetch (from its caches or the DDT/PDT walk) and
    consumed by the walker. ``fs_mode`` is the first-stage scheme actually in
    force for this request (Bare when there is none), ``pscid`` its tag.
    """

    dtf: unsigned(1)  # DC.tc.DTF: suppress reporting of translation faults
    sade: unsigned(1)  # DC.tc.SADE: hardware A/D update in first-stage PTEs
    gade: unsigned(1)
    ens: unsigned(1)  # PC.ta.ENS (1 when there is no process context)
    sum: unsigned(1)  # PC.ta.SUM
    fs_mode: unsigned(4)  # arch.AtpMode
    fs_ppn: unsigned(PPN_BITS)
    pscid: unsigned(PSCID_BITS)
    gs_mode: unsigned(4)  # iohgatp.MODE (Sv39x4/48x4/57x4 share the AtpMode numbers)
    gs_ppn: unsigned(PPN_BITS)  # root of the G-stage table (16 KiB aligned)
    gscid: unsigned(GSCID_BITS)
    # MSI address translation (extended DC, msiptp.MODE = Flat), §9.
    msi_flat: unsigned(1)
    msiptp_ppn: unsigned(PPN_BITS)
    msi_mask: unsigned(MSI_ADDR_BITS)
    msi_pattern: unsigned(MSI_ADDR_BITS)


class ContextRequest(data.Struct):
    device_id: unsigned(DEVICE_ID_BITS)
    process_id: unsigned(PROCESS_ID_BITS)
    pv: unsigned(1)
    priv: unsigned(1)
    addr_type: AddrType
    access: Access  # names the guest-page fault of a G-stage fault in the PDT walk


class ContextResult(data.Struct):
    """Either a context, or the fault that stopped the DDT/PDT walk or its checks.

    ``dtf`` is meaningful on a fault too: it is the DC's DTF once the DC was
    located, 0 before (a fault with no DC is always reported, §6.3).
    """

    fault: unsigned(1)
    cause: unsigned(CAUSE_BITS)
    iotval2: unsigned(64)  # a guest-page fault on a PDT entry's GPA (bit 0 = implicit)
    context: TranslationContext


class WalkRequest(data.Struct):
    """One first-stage walk (§5.3) for a request whose context is known."""

    iova: unsigned(IOVA_BITS)
    access: Access
    priv: unsigned(1)  # effective privilege (User when the request had no PID)
    context: TranslationContext


class GStageRequest(data.Struct):
    """One G-stage translation of a GPA (§5.7): explicit (the final GPA) or implicit
    (the GPA of a first-stage PTE or a PDT entry).

    ``access`` is what the G-stage leaf must allow (READ for an implicit read, WRITE
    for the implicit write of an A/D update, else the request's access);
    ``orig_access`` names the faults (guest-page faults are reported for the original
    access type); ``iotval2_flags`` go to iotval2[1:0] on a guest-page fault (bit 0:
    implicit access, bit 1: implicit write); ``in_pdt``: access fault / corruption are
    the PDT's 265 / 269.
    """

    gpa: unsigned(IOVA_BITS)
    access: Access
    orig_access: Access
    iotval2_flags: unsigned(2)
    in_pdt: unsigned(1)
    gs_mode: unsigned(4)
    gs_ppn: unsigned(PPN_BITS)
    gade: unsigned(1)


class WalkResult(data.Struct):
    """The leaf the walk found (already checked) or the fault it raised."""

    fault: unsigned(1)
    cause: unsigned(CAUSE_BITS)
    iotval2: unsigned(64)
    ppn: unsigned(PPN_BITS)  # physical page of the translated 4 KiB page (offset not included)
    size_log2: unsigned(6)
    r: unsigned(1)
    w: unsigned(1)
    x: unsigned(1)
    u: unsigned(1)
    g: unsigned(1)
    d: unsigned(1)  # PTE.D after any hardware update (write hits need D=1)
    pbmt: unsigned(2)
    # An MRIF-mode MSI PTE's leaf: ``ppn`` and ``mrif_offset`` are the MRIF address's
    # bits [55:12] and [11:9]; ``notice`` is its notice MSI.
    mrif: unsigned(1)
    mrif_offset: unsigned(3)
    notice: MrifNotice
