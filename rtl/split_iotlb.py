"""Split IOTLB: 4 KiB pages in a set-associative IOTLB held in distributed RAM, larger
pages in a small fully associative one beside it; every lookup asks both.

Why two (issue 7, FPGA timing and area): a fully associative IOTLB keeps every entry in
flip-flops and compares all of them at once; at 32 entries it was a third of the
IOMMU's LUTs, two thirds of its flip-flops, and the one block nextpnr could not route.
A set-associative IOTLB keeps its entries in RAM and compares one set's few ways. But
its set is chosen by the low page-number bits of a 4 KiB page, which lie *inside* a
superpage: a 2 MiB page would be cached once per set (one walk each), and large pages
would no longer save walks. So superpages (64 KiB NAPOT up to 256 TiB) get their own
small fully associative IOTLB, as CPU TLBs have separate arrays per page size.

Both are ``rtl.iotlb.IOTLB``. They take each lookup in the same cycle and answer in the
same cycle: their pipelines are identical and see the same handshakes, so they stay in
step. A hit in the superpage IOTLB wins: the two may both hold the page only if the
page tables changed without an invalidation, and then either translation may be used
(§10.3). Each invalidation and flush goes to both; a fill goes to the one for its size.

Ports are those of ``IOTLB`` (lookup, result, fill, inval, inval_busy, flush), with the
same latencies (``LOOKUP_LATENCY``, ``FILL_LATENCY``); ``inval_cycles`` is the longer
of the two (the set-associative one scans its sets, one per cycle).
"""

from amaranth.hdl import Module, Mux, unsigned
from amaranth.lib import wiring

from .iotlb import IOTLB, SPAN_OF_SIZE_LOG2, iotlb_signature

PAGE_SIZE_LOG2 = 12  # fills of this size go to the set-associative IOTLB


class SplitIOTLB(wiring.Component):
    """``page_entries`` 4 KiB entries in sets of ``page_ways`` (RAM), and
    ``superpage_entries`` fully associative entries for every larger page size."""

    LOOKUP_LATENCY = IOTLB.LOOKUP_LATENCY
    FILL_LATENCY = IOTLB.FILL_LATENCY
    WRITE_LATENCY = IOTLB.WRITE_LATENCY

    def __init__(self, page_entries: int, page_ways: int, superpage_entries: int,
                 payload_shape=unsigned(1)):
        # Each bank knows which sizes it holds: the 4 KiB bank's spans are then a
        # constant (no span compare, select or page-number merge: issue 7).
        self.pages = IOTLB(page_entries, page_ways, payload_shape,
                           page_sizes=(PAGE_SIZE_LOG2,))
        # The superpage IOTLB's results are joined with the page IOTLB's, which carries
        # the payload: it needs none of its own.
        self.superpages = IOTLB(superpage_entries, superpage_entries, unsigned(1),
                                page_sizes=tuple(p for p in SPAN_OF_SIZE_LOG2
                                                 if p != PAGE_SIZE_LOG2))
        self.inval_cycles = max(self.pages.inval_cycles, self.superpages.inval_cycles)
        super().__init__(iotlb_signature(payload_shape))

    def elaborate(self, platform):
        m = Module()
        m.submodules.pages = pages = self.pages
        m.submodules.superpages = superpages = self.superpages
        banks = (pages, superpages)

        # Lookups: both take each one (their readies are equal: same pipeline, same
        # history; the AND keeps a lookup from entering one of them alone regardless).
        lookup_ready = pages.lookup.ready & superpages.lookup.ready
        m.d.comb += [
            self.lookup.ready.eq(lookup_ready),
            pages.lookup.payload.eq(self.lookup.payload),
            superpages.lookup.payload.key.eq(self.lookup.payload.key),
            *(bank.lookup.valid.eq(self.lookup.valid & lookup_ready) for bank in banks),
        ]

        # Results: joined, the superpage hit first (both are 0 on a miss but the hit bit).
        result_valid = pages.result.valid & superpages.result.valid
        big, small = superpages.result.payload, pages.result.payload
        m.d.comb += [
            self.result.valid.eq(result_valid),
            *(bank.result.ready.eq(self.result.ready & result_valid) for bank in banks),
            self.result.payload.payload.eq(small.payload),
            self.result.payload.hit.eq(big.hit | small.hit),
        ]
        for name in ("ppn", "size_log2", "r", "w", "x", "u", "g", "pbmt"):
            m.d.comb += getattr(self.result.payload, name).eq(
                Mux(big.hit, getattr(big, name), getattr(small, name)))

        # Fills: by page size; ready when both are (flip-flops, not the payload).
        is_page = self.fill.payload.size_log2 == PAGE_SIZE_LOG2
        m.d.comb += [
            self.fill.ready.eq(pages.fill.ready & superpages.fill.ready),
            pages.fill.valid.eq(self.fill.valid & self.fill.ready & is_page),
            superpages.fill.valid.eq(self.fill.valid & self.fill.ready & ~is_page),
            *(bank.fill.payload.eq(self.fill.payload) for bank in banks),
        ]

        # Invalidations and flushes: both, in the same cycle.
        inval_ready = pages.inval.ready & superpages.inval.ready
        m.d.comb += [
            self.inval.ready.eq(inval_ready),
            self.inval_busy.eq(pages.inval_busy | superpages.inval_busy),
            *(bank.inval.valid.eq(self.inval.valid & inval_ready) for bank in banks),
            *(bank.inval.payload.eq(self.inval.payload) for bank in banks),
            *(bank.flush.eq(self.flush) for bank in banks),
        ]
        return m


def make_iotlb(params, payload_shape):
    """The IOTLB ``params`` ask for: split when it has superpage entries."""
    if params.iotlb_superpage_entries:
        return SplitIOTLB(params.iotlb_entries, params.iotlb_ways,
                          params.iotlb_superpage_entries, payload_shape)
    return IOTLB(params.iotlb_entries, params.iotlb_ways, payload_shape)
