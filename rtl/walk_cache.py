"""Walk cache: G-stage translations of the pages that hold first-stage page tables.

A nested walk (§5.7) translates the GPA of every first-stage PTE through the G-stage:
without a cache, a Sv39 walk under Sv39x4 makes 3 G-stage walks (9 reads) before its
3 first-stage reads, on top of the final GPA's G-stage walk. Guest page tables are
few and small, so a handful of entries catches most of these implicit reads.

What is cached: the 4 KiB page translation (GPA page → SPA page) of an implicit
*read* that succeeded, i.e. whose G-stage leaf was valid, readable, U=1 and had A=1
(or got it by the walk's A/D update). A hit answers the same implicit read without
the walk: it grants what the walk would have (the leaf cannot have changed without an
IOTINVAL.GVMA, §10.3) and sets no A bit the walk would have set (it was already
set). Implicit writes (the A/D update of a first-stage PTE) always walk: they need
W and D. Entries never hold a fault (§10.1: nothing with V=0 is cached).

Tags: GSCID and the GPA page number (§10.1, "GS PT: GSCID, GPA"). Invalidation:
IOTINVAL.GVMA with GV=0 drops everything, with GV=1 every entry of that GSCID (also
for AV=1: a superset the spec allows, §10.2). Other commands leave it alone.
"""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .context_cache import ContextCache

__all__ = ["WalkCache", "WalkCacheTag"]

GPN_BITS = layouts.PA_BITS - 12  # a first-stage PTE's GPA is below 2^PA_BITS


class WalkCacheTag(data.Struct):
    gscid: unsigned(layouts.GSCID_BITS)
    gpn: unsigned(GPN_BITS)  # GPA[55:12]


class WalkCache(wiring.Component):
    """``entries`` G-stage page translations, fully associative, round-robin refill.

    Ports:
      lookup_en, lookup_tag: a lookup of (GSCID, GPA page); ``hit`` and ``ppn`` (the SPA
                page) are valid the *next* cycle (registered one-hot match, AND-OR
                select) and stay so until the next ``lookup_en``; ``hit`` drops if the
                entry is invalidated meanwhile.
      fill_en, fill_tag, fill_ppn: store a translation (written at the next edge).
      inval:    the core's invalidation stream (always ready); only IOTINVAL.GVMA acts.
    """

    def __init__(self, entries: int):
        if not isinstance(entries, int) or not 1 <= entries <= 64:
            raise ValueError(f"entries must be an integer in 1..64, not {entries!r}")
        self.entries = entries
        super().__init__({
            "lookup_en": In(1),
            "lookup_tag": In(WalkCacheTag),
            "hit": Out(1),
            "ppn": Out(layouts.PPN_BITS),
            "fill_en": In(1),
            "fill_tag": In(WalkCacheTag),
            "fill_ppn": In(layouts.PPN_BITS),
            "inval": In(stream.Signature(layouts.Invalidation)),
        })

    def elaborate(self, platform):
        m = Module()
        # The walker fills a tag only after its lookup missed, one walk at a time, so
        # the cache need not search for the fill's tag (issue 7, timing).
        # A lookup right after a fill of its own tag misses it (forward_fill=False):
        # the walker fills after a G-stage walk and looks up the next PTE's page, which
        # is rarely the same one (issue 7: the forward's 60-bit compare was in front of
        # the hit vector).
        m.submodules.cache = cache = ContextCache(WalkCacheTag, unsigned(layouts.PPN_BITS),
                                                  self.entries, fill_missing_only=True,
                                                  forward_fill=False)
        # IOTINVAL.GVMA is registered here and applied a cycle later, from local
        # flip-flops (issue 7: the core's invalidation register, the kind's decode and
        # the GSCID compare were 6-7 levels into the valid bits). A walk in flight when
        # it came is stale in the core already, and no walk starting after it looks
        # up before it is applied.
        inv = self.inval.payload
        inval_en = Signal()
        inval_gscid = Signal(layouts.GSCID_BITS)
        inval_gv = Signal()
        m.d.sync += [inval_en.eq(self.inval.valid
                                 & (inv.kind == layouts.InvalKind.IOTINVAL_GVMA)),
                     inval_gscid.eq(inv.gscid), inval_gv.eq(inv.gv)]
        m.d.comb += [
            cache.lookup_en.eq(self.lookup_en),
            cache.lookup_tag.eq(self.lookup_tag),
            self.hit.eq(cache.hit),
            self.ppn.eq(cache.data),
            cache.fill_en.eq(self.fill_en),
            cache.fill_tag.eq(self.fill_tag),
            cache.fill_data.eq(self.fill_ppn),
            self.inval.ready.eq(1),
            # IOTINVAL.GVMA: GV=0 every GSCID (mask 0), GV=1 the named one; any address.
            cache.inval_en.eq(inval_en),
            cache.inval_tag.gscid.eq(inval_gscid),
            cache.inval_tag.gpn.eq(0),
            cache.inval_mask.gscid.eq(inval_gv.replicate(layouts.GSCID_BITS)),
            cache.inval_mask.gpn.eq(0),
        ]
        return m
