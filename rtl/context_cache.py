"""A small fully associative tag cache: the device-context and process-context caches.

The context fetch keeps two instances: device contexts tagged by ``device_id`` and
process contexts tagged by ``(device_id, process_id)`` (§10.1). Both are invalidated by
IODIR commands that name some tag fields and leave others as wildcards, so the
invalidation port takes a *mask* of tag bits that must match.
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .pick import one_hot_index


class ContextCache(wiring.Component):
    """``entries`` (tag, data) pairs, looked up by tag, filled round-robin.

    Lookup (registered, one cycle): the tag on ``lookup_tag`` is compared with every
    valid entry in a cycle where ``lookup_en`` is 1; the one-hot match vector is
    registered, and in the *next* cycle ``hit`` and ``data`` reflect it. ``data`` is
    read from a RAM (distributed RAM on an FPGA) at the index of the registered
    one-hot vector (no priority chain); it means something only with ``hit``. ``hit``
    keeps its meaning until the next ``lookup_en`` and drops to 0 as soon as the
    matched entry is invalidated or overwritten, so a registered hit never returns
    an entry that has gone.

    Fill: in a cycle with ``fill_en``, (``fill_tag``, ``fill_data``) is registered and
    written at the following edge into the entry already holding that tag, else the
    lowest free entry, else the entry the round-robin pointer names. A lookup in the
    cycle after the fill already hits it (it is compared with the registered fill
    too), as if the fill had been written at once. The caller fills only contexts
    that are valid (V=1) and well formed: the cache never holds anything else (§10.1).
    Registering the fill keeps the caller's logic away from the entries' write
    enables, and the victim is chosen in the ``fill_en`` cycle (registered one-hot with
    the fill), so that the tag compare and the victim priority are not in front of the
    entries' enables either (issue 7, timing: this path limited the walker to 75 MHz).
    The choice is made on the entries as they will be after the edge that registers
    it (a fill written at that edge counts), so a tag is never held twice; an entry
    an invalidation frees at that edge is not seen as free until the next fill.

    ``fill_missing_only=True`` is a promise of the caller: it fills only a tag that is
    not in the cache (its lookup of that tag missed, and nothing filled it since). The
    cache then does not search the entries for the fill's tag (a compare of every
    entry's tag and an OR over them, 7-9 LUT levels, issue 7): the victim is the lowest
    free entry, else the round-robin pointer's. A fill that breaks the promise would
    leave the tag in two entries.

    ``forward_fill=False``: a lookup in the cycle the registered fill is written does
    not see it (it misses that tag, and hits it from the next lookup on). The compare
    of the registered fill's tag with the lookup's is then not in front of the hit
    vector (a 60-bit compare into it, issue 7); for a caller that rarely looks up what
    it has just filled (the walk cache).

    Invalidate: in a cycle with ``inval_en``, every entry whose tag equals
    ``inval_tag`` on the bits set in ``inval_mask`` is dropped (a zero mask flushes
    the cache). An invalidation in the same cycle as a fill also applies to the entry
    being filled; one in the cycle its registered copy is written drops that entry,
    whatever the invalidation names (a cache may always drop).
    """

    def __init__(self, tag_shape, data_shape, entries: int, *, fill_missing_only=False,
                 forward_fill=True):
        if not isinstance(entries, int) or not 1 <= entries <= 64:
            raise ValueError(f"entries must be an integer in 1..64, not {entries!r}")
        if not isinstance(fill_missing_only, bool):
            raise TypeError(f"fill_missing_only must be a bool, not {fill_missing_only!r}")
        self.tag_shape, self.data_shape, self.entries = tag_shape, data_shape, entries
        if not isinstance(forward_fill, bool):
            raise TypeError(f"forward_fill must be a bool, not {forward_fill!r}")
        self.fill_missing_only = fill_missing_only
        self.forward_fill = forward_fill
        super().__init__({
            "lookup_en": In(1),
            "lookup_tag": In(tag_shape),
            "hit": Out(1),
            "data": Out(data_shape),
            "fill_en": In(1),
            "fill_tag": In(tag_shape),
            "fill_data": In(data_shape),
            "inval_en": In(1),
            "inval_tag": In(tag_shape),
            "inval_mask": In(tag_shape),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.entries
        tag_width = Shape.cast(self.tag_shape).width
        data_width = Shape.cast(self.data_shape).width

        valid = Signal(n)
        tags = [Signal(tag_width, name=f"tag{i}") for i in range(n)]
        # The tags are compared all at once (flip-flops); the data is read by index, so
        # it lives in a RAM: no flip-flops and no wide AND-OR select for it (issue 7).
        m.submodules.datas = datas = Memory(shape=data_width, depth=n, init=[])
        data_read = datas.read_port(domain="comb")
        data_write = datas.write_port()
        hit_vec = Signal(n)  # registered one-hot match of the last lookup

        lookup_tag = Value.cast(self.lookup_tag)
        fill_tag = Value.cast(self.fill_tag)
        inval_tag = Value.cast(self.inval_tag)
        inval_mask = Value.cast(self.inval_mask)

        # ------------------------------------------------------------- lookup
        lookup_match = Signal(n)
        m.d.comb += lookup_match.eq(Cat((tags[i] == lookup_tag) & valid[i] for i in range(n)))
        m.d.comb += [
            data_read.addr.eq(one_hot_index(hit_vec, n)),
            self.hit.eq((hit_vec & valid).any()),
            Value.cast(self.data).eq(data_read.data),
        ]

        # --------------------------------------------------------------- fill
        # The fill is registered (fill_q) and written at the next edge. Victim: the
        # entry holding this tag already, else the lowest free one, else the
        # round-robin pointer. Fills are rare (a context miss), so the priority
        # encoders here are off the lookup path.
        def inval_covers(tag):
            return self.inval_en & (((tag ^ inval_tag) & inval_mask) == 0)

        fill_q = Signal()
        fill_q_tag = Signal(tag_width)
        fill_q_data = Signal(data_width)
        # An invalidation in the cycle of the fill applies to it: it is not kept.
        m.d.sync += [fill_q.eq(self.fill_en & ~inval_covers(fill_tag)),
                     fill_q_tag.eq(fill_tag), fill_q_data.eq(Value.cast(self.fill_data))]

        # The victim of the fill being registered, chosen now and registered with it in
        # three parts, so that no reduction over the entries sits in front of their
        # write enables (issue 7: the tag compare, its OR over the entries and the
        # priority were 11-13 LUT levels into one victim register):
        #   ``match_q``   the entry that holds this tag (at most one: a tag is never
        #                 held twice, so no priority is needed among the matches),
        #   ``alloc_q``   the entry to take otherwise: the lowest free one, else the
        #                 round-robin pointer's,
        #   ``matched_q`` whether ``match_q`` names one.
        # (With ``fill_missing_only`` there is no match to look for: ``alloc_q`` alone.)
        # ``victim`` is then one LUT of registers. The fill written at this edge
        # (``fill_q`` into ``victim``) is taken into account: its entry is occupied,
        # holds ``fill_q_tag`` (a second fill of that tag goes to the same entry), and
        # it moves the round-robin pointer.
        rr = Signal(range(n))
        alloc_q = Signal(n)
        victim = Signal(n)  # one-hot: the entry ``fill_q`` is written into
        occupied = Signal(n)
        if self.fill_missing_only:
            m.d.comb += victim.eq(alloc_q)
        else:
            match_q = Signal(n)
            matched_q = Signal()
            m.d.comb += victim.eq(Mux(matched_q, match_q, alloc_q))
        in_flight = victim & fill_q.replicate(n)
        m.d.comb += occupied.eq(valid | in_flight)
        if not self.fill_missing_only:
            fill_match = Signal(n)
            refill = Signal()  # this fill's tag is the one being written at this edge
            m.d.comb += [
                refill.eq(fill_q_tag == fill_tag),
                fill_match.eq(Cat(Mux(in_flight[i], refill, (tags[i] == fill_tag) & valid[i])
                                  for i in range(n))),
            ]
            m.d.sync += [match_q.eq(fill_match), matched_q.eq(fill_match.any())]
        rr_next = Mux(fill_q, Mux(rr == n - 1, 0, rr + 1), rr)
        alloc = Signal(n)
        with m.Switch(rr_next):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += alloc.eq(1 << i)
        for i in reversed(range(n)):
            with m.If(~occupied[i]):
                m.d.comb += alloc.eq(1 << i)
        m.d.sync += alloc_q.eq(alloc)

        # ------------------------------------------------------- invalidation
        inval_match = Signal(n)
        m.d.comb += inval_match.eq(
            Cat(((tags[i] ^ inval_tag) & inval_mask) == 0 for i in range(n)))

        # ------------------------------------------------------ state update
        next_valid = Signal(n)
        next_hit = Signal(n)
        m.d.comb += [next_valid.eq(valid), next_hit.eq(hit_vec)]
        with m.If(self.lookup_en):
            m.d.comb += next_hit.eq(lookup_match)
        m.d.comb += [data_write.addr.eq(one_hot_index(victim, n)),
                     data_write.data.eq(fill_q_data), data_write.en.eq(fill_q)]
        with m.If(fill_q):
            for i in range(n):
                with m.If(victim[i]):
                    m.d.sync += tags[i].eq(fill_q_tag)
                    # The entry now holds the new context: a pending hit on the old one
                    # is void, a lookup of the new one hits it, and an invalidation
                    # this cycle is checked against the new tag.
                    # An invalidation in this cycle drops it whatever it names (a cache
                    # may always drop): its masked compare with the fill's 60-bit tag
                    # in front of the valid bits was 0.6 ns short of 100 MHz (issue 7).
                    m.d.comb += [
                        next_valid[i].eq(~self.inval_en),
                        next_hit[i].eq(self.lookup_en & (fill_q_tag == lookup_tag)
                                       if self.forward_fill else 0),
                    ]
            m.d.sync += rr.eq(Mux(rr == n - 1, 0, rr + 1))
        with m.If(self.inval_en):
            for i in range(n):
                with m.If(inval_match[i] & ~in_flight[i]):
                    m.d.comb += next_valid[i].eq(0)
        m.d.sync += [valid.eq(next_valid), hit_vec.eq(next_hit)]
        return m

