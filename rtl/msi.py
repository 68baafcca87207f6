"""MSI address translation (spec §9, digest §9; step 18 of the translation process).

A device's write to one of its guest's virtual interrupt files has a GPA that matches
the device context's ``msi_addr_pattern`` under ``msi_addr_mask`` (§9.1). Such an
address is not translated by the G-stage: the interrupt-file number picks a 16-byte
MSI PTE in the flat MSI page table at ``msiptp.PPN``, whose basic-translate form
(M = 3) names the host page of the real interrupt file.

``msi_address_match`` and ``covers_msi_page`` are the two address tests the
``PageTableWalker`` makes on the final GPA; ``MsiTranslator`` does the rest:

    req ─► IDLE ─► INDEX (one mask bit per cycle) ─► READ ─► WAIT ─► (dword 1) READ ─► WAIT
                                                                      └─► CHECK ─► DONE ─► res

Timing: INDEX packs the GPA's page-number bits selected by the mask into the
interrupt-file number, lowest mask bit first, one bit per cycle, until no mask bit is
left: it costs (position of the highest mask bit + 2) cycles, so a mask of the low k
page-number bits (the usual layout of a guest's interrupt files) costs k + 1. This
keeps the extraction to a few shift registers instead of a 52 x 52 crossbar per
walker; the IOTLB caches the result. The PTE is then two 8-byte reads.

MRIF-mode PTEs (M = 1, §9.3 step 5) are translated when the translator is built with
``mrif`` (capabilities.MSI_MRIF): the result names the 512-byte MRIF (``ppn`` and
``mrif_offset``) and the notice MSI from dword 1 (``notice``). Recording the interrupt
in the MRIF and sending the notice is the write's, not the translation's (§9.4): the
core returns both on its completion and the bridge performs them. Without ``mrif`` an
MRIF-mode PTE is, like a reserved mode, MSI PTE misconfigured (263), as the spec
requires without MSI_MRIF.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from models import arch

from . import layouts

__all__ = ["LEAF_SIZES_LOG2", "MSI_STATES", "MsiRequest", "MsiTranslator",
           "covers_msi_page", "msi_address_match", "msi_pages_within",
           "msi_pages_within_parts"]

#: The translator's FSM states in their encoding (declaration order), for waveforms.
MSI_STATES = ("IDLE", "INDEX", "READ", "WAIT", "DONE", "CHECK")

_PTE_ADDR_LOW = 4  # log2(arch.MSI_PTE_SIZE): the file number indexes 16-byte entries
_DWORD = 8


def _field(value, f: arch.Field):
    return value[f.lo:f.lo + f.width]


def msi_address_match(gpa, mask, pattern):
    """§9.1: the GPA is an interrupt-file address iff (A >> 12) & ~mask == pattern & ~mask.

    ``gpa`` is the whole 64-bit address (a Bare first stage passes the IOVA through),
    so every bit of A[63:12] takes part, as in the reference model."""
    gpn = gpa[arch.PAGE_SHIFT:arch.PAGE_SHIFT + layouts.MSI_ADDR_BITS]
    return ((gpn ^ pattern) & ~mask) == 0


def covers_msi_page(gpa, size_log2, mask, pattern):
    """Whether the naturally aligned ``2**size_log2``-byte page holding ``gpa`` contains
    an MSI page: its page numbers agree with ``gpa`` above bit ``size_log2 - 12``, so
    the page-number bits below that are free to match the pattern.

    A translation this large must be reported (and cached) at 4 KiB, or a later access
    to the MSI page would hit it and skip MSI translation (§9.1 implementation note)."""
    gpn = gpa[arch.PAGE_SHIFT:arch.PAGE_SHIFT + layouts.MSI_ADDR_BITS]
    ones = C((1 << layouts.MSI_ADDR_BITS) - 1, layouts.MSI_ADDR_BITS)
    above_page = (ones << (size_log2 - arch.PAGE_SHIFT)[:6])[:layouts.MSI_ADDR_BITS]
    return ((gpn ^ pattern) & ~mask & above_page) == 0


#: Every page size (log2) a walker can report: 4 KiB, a 64 KiB NAPOT page and the
#: superpages of Sv39/48/57 and their x4 forms.
LEAF_SIZES_LOG2 = (12, 16, 21, 30, 39, 48)


def msi_pages_within(gpa, mask, pattern):
    """``covers_msi_page`` for each size of ``LEAF_SIZES_LOG2`` (bit k for size k), as
    fixed slices instead of a shift by a size known only later.

    The walker computes these as soon as the final GPA is known and picks one when the
    page size is known (issue 7, timing: the shift by the size was its longest path).
    Bit 0 (4 KiB) is ``msi_address_match``. Bit k implies bit k + 1 (a larger page
    around the GPA covers whatever a smaller one does)."""
    return msi_pages_within_parts(gpa[arch.PAGE_SHIFT:layouts.PA_BITS],
                                  gpa[layouts.PA_BITS:], mask, pattern)


def msi_pages_within_parts(ppn, gpa_high, mask, pattern):
    """``msi_pages_within`` of the GPA ``gpa_high`` : ``ppn`` : (any page offset), from
    its two parts: the page number below bit 56 (a leaf's ``ppn``) and GPA[63:56].

    Every page size's test includes GPA[63:56], so the walker can test a leaf's PPN
    and pick only the one-bit verdict on the high part (0 or the IOVA's), rather than
    pick the GPA bit by bit in front of the 52-bit tests (issue 7)."""
    low = layouts.PA_BITS - arch.PAGE_SHIFT
    assert len(ppn) == low and max(LEAF_SIZES_LOG2) - arch.PAGE_SHIFT <= low
    differs = (ppn ^ pattern[:low]) & ~mask[:low]
    high_matches = ((gpa_high ^ pattern[low:]) & ~mask[low:]) == 0
    return Cat((differs[size - arch.PAGE_SHIFT:] == 0) & high_matches
               for size in LEAF_SIZES_LOG2)


class MsiRequest(data.Struct):
    """One MSI translation: the GPA that matched, the request's access and the device
    context's MSI page table (``msiptp.PPN``) and ``msi_addr_mask``."""

    gpa: unsigned(layouts.IOVA_BITS)
    access: layouts.Access
    msiptp_ppn: unsigned(layouts.PPN_BITS)
    msi_mask: unsigned(layouts.MSI_ADDR_BITS)


class MsiTranslator(wiring.Component):
    """Reads and checks the MSI PTE of one interrupt-file address (§9.3).

    Ports:
      req:      ``MsiRequest``; taken only when idle.
      res:      one ``layouts.WalkResult`` per request, as a G-stage leaf would give it:
                success: ``ppn`` = the PTE's PPN, 4 KiB, R = W = U = D = 1, X = 0, G = 0,
                PBMT 0; for an MRIF-mode PTE ``mrif`` = 1, ``ppn``/``mrif_offset`` the
                MRIF address and ``notice`` the notice MSI (``notice`` means
                something only with ``mrif``: a fault may carry one). Fault
                ``cause``: 261 the PTE read was refused, 270 it was poisoned, 262
                V = 0, 263 C = 1 (no custom formats), a reserved mode, MRIF mode
                without ``mrif``, or reserved bits set in either dword; 1 an execute
                of the MSI page (§9.3 step 6: the page is a leaf with X = 0; ATS
                requests never reach the walker). ``iotval2`` is 0.
      mem_req:  8-byte READs of the PTE's two dwords (low first), id ``mem_id``;
                at most one outstanding. A refused or poisoned low dword ends the
                translation without reading the high one.
      mem_resp: the answer to the outstanding read.
    """

    def __init__(self, id_bits: int = 1, mem_id: int = 0, mrif: bool = False):
        if not isinstance(id_bits, int) or id_bits < 1:
            raise ValueError(f"id_bits must be a positive integer, not {id_bits!r}")
        if not isinstance(mem_id, int) or not 0 <= mem_id < 1 << id_bits:
            raise ValueError(f"mem_id must be 0..{(1 << id_bits) - 1} for {id_bits} id "
                             f"bits, not {mem_id!r}")
        self.id_bits, self.mem_id, self.mrif = id_bits, mem_id, bool(mrif)
        super().__init__({
            "req": In(stream.Signature(MsiRequest)),
            "res": Out(stream.Signature(layouts.WalkResult)),
            "mem_req": Out(stream.Signature(layouts.mem_request(id_bits))),
            "mem_resp": In(stream.Signature(layouts.mem_response(id_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        req = self.req.payload
        resp = self.mem_resp.payload

        # msi_extract (§9.1) one mask bit per cycle: ``gpn_left``/``mask_left`` shift
        # right, ``next_bit`` (one-hot) is where the next selected bit lands.
        gpn_left = Signal(layouts.MSI_ADDR_BITS)
        mask_left = Signal(layouts.MSI_ADDR_BITS)
        next_bit = Signal(layouts.MSI_ADDR_BITS)
        file_number = Signal(layouts.MSI_ADDR_BITS)  # the interrupt-file number I
        access = Signal(layouts.Access)
        msiptp_ppn = Signal(layouts.PPN_BITS)
        pte_addr = Signal(layouts.PA_BITS)  # (msiptp.PPN << 12) | I * 16
        read_hi = Signal()  # the outstanding read is dword 1
        # The memory handshakes from flip-flops (issue 7: the arbiter sits behind them):
        # 1 exactly in READ and in WAIT, kept so by ``goto``.
        reading = Signal()
        waiting = Signal()
        dw0 = Signal(64)
        result = Signal(layouts.WalkResult)

        m.d.comb += [
            self.mem_req.valid.eq(reading),
            self.mem_resp.ready.eq(waiting),
            self.mem_req.payload.id.eq(self.mem_id),
            self.mem_req.payload.op.eq(layouts.MemOp.READ),
            self.mem_req.payload.addr.eq(pte_addr | (read_hi * _DWORD)),
            self.mem_req.payload.wdata.eq(0),
            self.mem_req.payload.compare.eq(0),
            self.res.payload.eq(result),
        ]

        def goto(state):
            m.next = state
            m.d.sync += [reading.eq(state == "READ"), waiting.eq(state == "WAIT")]

        def finish_with_fault(cause):
            m.d.sync += [result.eq(0), result.fault.eq(1), result.cause.eq(cause)]
            goto("DONE")

        # The PTE checks of §9.3 steps 1-6, made in CHECK from both dwords registered
        # (issue 7: made as dword 1 arrived, the checks were 8 levels from the memory
        # response into the result); dword 1 matters only to an MRIF-mode PTE.
        dw1 = Signal(64)
        mode = _field(dw0, arch.MsiPte.M)
        basic = mode == arch.MsiPteMode.BASIC
        basic_ok = basic & ((dw0 & arch.MsiPte.BASIC_RESERVED) == 0)
        is_mrif = C(0, 1)
        if self.mrif:
            is_mrif = mode == arch.MsiPteMode.MRIF
        mrif_ok = is_mrif & ((dw0 & arch.MsiPte.MRIF_RESERVED) == 0) & (
            (dw1 & arch.MsiPte.MRIF_DW1_RESERVED) == 0)
        misconfigured = (_field(dw0, arch.MsiPte.C)  # custom format: we define none
                         | ~(basic_ok | mrif_ok))  # a reserved mode, or reserved bits
        mrif_addr = _field(dw0, arch.MsiPte.MRIF_ADDR)  # MRIF address[55:9]

        with m.FSM(name="msi") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    m.d.sync += [
                        gpn_left.eq(req.gpa[arch.PAGE_SHIFT:]),
                        mask_left.eq(req.msi_mask),
                        next_bit.eq(1),
                        file_number.eq(0),
                        access.eq(req.access),
                        msiptp_ppn.eq(req.msiptp_ppn),
                        read_hi.eq(0),
                    ]
                    goto("INDEX")

            with m.State("INDEX"):
                # The shifts run in every INDEX cycle: once the mask is used up they
                # change nothing that matters (no mask bit left: the file number and
                # next_bit stay). Only the state change waits for the 52-bit zero test,
                # which would otherwise gate some 200 register enables (issue 7).
                with m.If(mask_left[0]):
                    with m.If(gpn_left[0]):
                        m.d.sync += file_number.eq(file_number | next_bit)
                    m.d.sync += next_bit.eq(next_bit << 1)
                m.d.sync += [mask_left.eq(mask_left >> 1), gpn_left.eq(gpn_left >> 1)]
                entry = (Cat(C(0, arch.PAGE_SHIFT), msiptp_ppn)
                         | Cat(C(0, _PTE_ADDR_LOW), file_number))
                m.d.sync += pte_addr.eq(entry[:layouts.PA_BITS])
                with m.If(mask_left == 0):
                    goto("READ")

            with m.State("READ"), m.If(self.mem_req.ready):
                goto("WAIT")

            with m.State("WAIT"), m.If(self.mem_resp.valid):
                with m.If(resp.err == layouts.MemErr.ACCESS_FAULT):
                    finish_with_fault(arch.Cause.MSI_PTE_LOAD_ACCESS_FAULT)
                with m.Elif(resp.err == layouts.MemErr.POISON):
                    finish_with_fault(arch.Cause.MSI_PT_DATA_CORRUPTION)
                with m.Elif(~read_hi):
                    m.d.sync += [dw0.eq(resp.rdata), read_hi.eq(1)]
                    goto("READ")
                with m.Else():
                    m.d.sync += dw1.eq(resp.rdata)
                    goto("CHECK")

            with m.State("CHECK"):
                with m.If(~_field(dw0, arch.MsiPte.V)):
                    finish_with_fault(arch.Cause.MSI_PTE_NOT_VALID)
                with m.Elif(misconfigured):
                    finish_with_fault(arch.Cause.MSI_PTE_MISCONFIGURED)
                with m.Elif(access == layouts.Access.EXECUTE):
                    finish_with_fault(arch.Cause.INSTRUCTION_ACCESS_FAULT)
                with m.Else():
                    m.d.sync += [
                        result.eq(0),
                        result.ppn.eq(Mux(is_mrif, mrif_addr[3:],
                                          _field(dw0, arch.MsiPte.PPN))),
                        result.size_log2.eq(arch.PAGE_SHIFT),
                        result.r.eq(1), result.w.eq(1), result.u.eq(1), result.d.eq(1),
                        result.mrif.eq(is_mrif),
                        result.mrif_offset.eq(Mux(is_mrif, mrif_addr[:3], 0)),
                    ]
                    goto("DONE")
                # The notice is loaded whatever the checks find (it means something
                # only with ``mrif``, which a fault clears): dword 1's reserved-bit
                # test and the checks' priority in front of its 48 bits were 0.7 ns
                # short of 100 MHz (issue 7).
                m.d.sync += [
                    result.notice.ppn.eq(Mux(is_mrif, _field(dw1, arch.MsiPte.NPPN), 0)),
                    result.notice.nid.eq(Mux(is_mrif, Cat(_field(dw1, arch.MsiPte.NID),
                                                          _field(dw1, arch.MsiPte.NID10)),
                                             0)),
                ]

            with m.State("DONE"):
                m.d.comb += self.res.valid.eq(1)
                with m.If(self.res.ready):
                    goto("IDLE")
        if tuple(fsm.encoding) != MSI_STATES:
            raise AssertionError(f"MSI FSM encoding {tuple(fsm.encoding)} differs from "
                                 f"MSI_STATES, which the waveform save file decodes with")
        return m
