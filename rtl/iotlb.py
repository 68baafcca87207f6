"""IOTLB: the cache of completed translations, looked up in pipelined stages.

Entries are tagged by the *requester* (device_id, pv, process_id, priv) and the VPN
under the entry's page size, so a hit needs no device or process context and answers
four cycles after the lookup is accepted. This is legal because the IOMMU may cache at
any granularity as long as every invalidation removes everything it covers (spec
§10.1-10.2): each entry also keeps the GSCID, PSCID and G bit its translation was made
under, and invalidations match those (IOTINVAL) or the requester (IODIR).

Storage: with one set (fully associative) the entries are flip-flops; with more, each
way's entries are RAM read by the set index (distributed RAM on an FPGA), and an
invalidation visits one set per cycle. ``rtl/split_iotlb.py`` pairs a set-associative
IOTLB for 4 KiB pages with a fully associative one for superpages.

Timing (DESIGN.md §3, the IOTLB probe): the request is registered, all ways of its set
are compared field by field into registered per-field results (stage 1a: a RAM read and
a 24-bit equality at most), those are ANDed into a registered one-hot hit vector (stage
1b; issue 7: the whole compare behind the RAM read was 9 LUT levels), the entry data is selected by an
AND-OR of that vector into a registered result, and no priority chain sits on the
lookup path. The result stage is a skid buffer (rtl/skid.py), so ``lookup.ready`` and
the stages' enables come from flip-flops, not from the consumer's ``result.ready``
(issue 7: that chain ran through the core's decide logic into ~600 enables).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import layouts
from .layouts import Access, InvalKind
from .pick import and_or, lowest_one_hot

# A superpage ignores whole groups of VPN bits. Bit i of an entry's ``span`` is set
# when VPN group i lies inside its page; sizes nest, so ``span`` is a thermometer code.
SPAN_GROUPS = ((0, 4), (4, 9), (9, 18), (18, 27), (27, 36))  # VPN bit ranges [lo, hi)
SPAN_BITS = len(SPAN_GROUPS)
# Page sizes a leaf can have (§5.2: Sv57 levels 0-4 and the 64 KiB Svnapot page).
SPAN_OF_SIZE_LOG2 = {12: 0b00000, 16: 0b00001, 21: 0b00011, 30: 0b00111, 39: 0b01111,
                     48: 0b11111}


# --------------------------------------------------------------------------- #
# Port payloads
# --------------------------------------------------------------------------- #
class LookupKey(data.Struct):
    """Who asks for which 4 KiB page, and for what access."""

    device_id: unsigned(layouts.DEVICE_ID_BITS)
    pv: unsigned(1)
    process_id: unsigned(layouts.PROCESS_ID_BITS)  # ignored (taken as 0) when pv = 0
    priv: unsigned(1)  # 1 = Supervisor; ignored (taken as User) when pv = 0
    vpn: unsigned(layouts.VPN_BITS)  # IOVA[63:12]
    access: Access


class FillKey(data.Struct):
    """The requester whose walk made the translation, and the 4 KiB page it walked."""

    device_id: unsigned(layouts.DEVICE_ID_BITS)
    pv: unsigned(1)
    process_id: unsigned(layouts.PROCESS_ID_BITS)
    priv: unsigned(1)
    vpn: unsigned(layouts.VPN_BITS)


class Fill(data.Struct):
    """A completed, successful translation to cache."""

    key: FillKey
    gscid_valid: unsigned(1)  # the G-stage was active (iohgatp.MODE != Bare)
    gscid: unsigned(layouts.GSCID_BITS)
    pscid_valid: unsigned(1)  # the first stage was active (its MODE != Bare)
    pscid: unsigned(layouts.PSCID_BITS)
    ppn: unsigned(layouts.PPN_BITS)  # of the page or of the walked 4 KiB page inside it
    size_log2: unsigned(6)  # 12, 16 (64 KiB NAPOT), 21, 30, 39, 48; others are not cached
    r: unsigned(1)
    w: unsigned(1)
    x: unsigned(1)
    u: unsigned(1)
    g: unsigned(1)
    d: unsigned(1)  # PTE.D after any hardware update: a write hits only when set
    pbmt: unsigned(2)


def iotlb_signature(payload_shape) -> wiring.Signature:
    """The ports of an IOTLB (``IOTLB``, ``rtl.split_iotlb.SplitIOTLB``)."""
    return wiring.Signature({
        "lookup": In(stream.Signature(lookup_layout(payload_shape))),
        "result": Out(stream.Signature(result_layout(payload_shape))),
        "fill": In(stream.Signature(Fill)),
        "inval": In(stream.Signature(layouts.Invalidation)),
        "inval_busy": Out(1),
        "flush": In(1),
    })


def lookup_layout(payload_shape) -> data.StructLayout:
    return data.StructLayout({"key": LookupKey, "payload": payload_shape})


def result_layout(payload_shape) -> data.StructLayout:
    return data.StructLayout({
        "payload": payload_shape,
        "hit": unsigned(1),
        # The fields below are 0 on a miss.
        "ppn": unsigned(layouts.PPN_BITS),  # of the requested 4 KiB page
        "size_log2": unsigned(6),
        "r": unsigned(1),
        "w": unsigned(1),
        "x": unsigned(1),
        "u": unsigned(1),
        "g": unsigned(1),
        "pbmt": unsigned(2),
    })


# --------------------------------------------------------------------------- #
# What one entry holds
# --------------------------------------------------------------------------- #
class EntryTag(data.Struct):
    """What a lookup compares: the requester and the page."""

    device_id: unsigned(layouts.DEVICE_ID_BITS)
    pv: unsigned(1)
    process_id: unsigned(layouts.PROCESS_ID_BITS)
    priv: unsigned(1)
    vpn: unsigned(layouts.VPN_BITS)  # bits inside the page are don't-care
    span: unsigned(SPAN_BITS)  # page size, see SPAN_GROUPS


class EntryScope(data.Struct):
    """What the translation was made under; only invalidations look at it."""

    gscid_valid: unsigned(1)
    gscid: unsigned(layouts.GSCID_BITS)
    pscid_valid: unsigned(1)
    pscid: unsigned(layouts.PSCID_BITS)


class EntryData(data.Struct):
    """The translation."""

    ppn: unsigned(layouts.PPN_BITS)  # base of the page (bits inside the page are 0)
    r: unsigned(1)
    w: unsigned(1)
    x: unsigned(1)
    u: unsigned(1)
    g: unsigned(1)
    d: unsigned(1)
    pbmt: unsigned(2)


# --------------------------------------------------------------------------- #
# Combinational helpers
# --------------------------------------------------------------------------- #
def _inside_page_mask(span, width):
    """Mask of the low ``width`` page-number bits that lie inside a page of ``span``."""
    parts = [span[i].replicate(hi - lo) for i, (lo, hi) in enumerate(SPAN_GROUPS)]
    return Cat(*parts, Const(0, width - SPAN_GROUPS[-1][1]))


class _InvalCompare(data.Struct):
    """One way's field compares with an invalidation's operands, and the entry flags
    they are combined with (registered between the two steps of an invalidation)."""

    vpn_high_eq: unsigned(1)  # the page-number bits above every page size
    vpn_group_eq: unsigned(SPAN_BITS)  # per SPAN_GROUPS group
    span: unsigned(SPAN_BITS)
    gscid_valid: unsigned(1)
    gscid_eq: unsigned(1)
    pscid_valid: unsigned(1)
    pscid_eq: unsigned(1)
    g: unsigned(1)
    device_eq: unsigned(1)
    pv: unsigned(1)
    process_eq: unsigned(1)


class _LookupTerms(data.Struct):
    """One entry's field compares with a lookup's key, registered between the two
    steps of the tag compare (stage 1a -> 1b, issue 7): each is at most a 24-bit
    equality behind the RAM read; their AND is the hit."""

    valid: unsigned(1)  # the entry is valid
    device_eq: unsigned(1)
    requester_eq: unsigned(1)  # same pv, process and privilege
    vpn_high_eq: unsigned(1)  # the page-number bits above every page size
    vpn_group_eq: unsigned(SPAN_BITS)  # per SPAN_GROUPS group
    span: unsigned(SPAN_BITS)
    permitted: unsigned(1)  # the entry's permissions allow the access


def _match_terms(terms, valid, t, other, span, permitted):
    """Assignments of ``terms`` (a ``_LookupTerms``) comparing entry tag ``t`` with
    ``other`` (a normalized lookup key, or another entry's tag: both have the requester
    fields and ``vpn``); VPN groups set in ``span`` are ignored."""
    top = SPAN_GROUPS[-1][1]
    return [
        terms.valid.eq(valid),
        terms.device_eq.eq(t.device_id == other.device_id),
        terms.requester_eq.eq((t.pv == other.pv) & (t.process_id == other.process_id)
                              & (t.priv == other.priv)),
        terms.vpn_high_eq.eq(t.vpn[top:] == other.vpn[top:]),
        terms.vpn_group_eq.eq(Cat(t.vpn[lo:hi] == other.vpn[lo:hi] for lo, hi in SPAN_GROUPS)),
        terms.span.eq(span),
        terms.permitted.eq(permitted),
    ]


def _lookup_terms(m, terms, valid, t, d, key):
    """Drive ``terms`` from entry tag ``t``, data ``d`` and the normalized lookup
    ``key``: the entry's own page size, and its permissions for the key's access."""
    permitted = Signal(name=f"{terms.as_value().name}_permitted")
    with m.Switch(key.access):
        with m.Case(Access.READ):
            m.d.comb += permitted.eq(d.r)
        with m.Case(Access.WRITE):
            m.d.comb += permitted.eq(d.w & d.d)
        with m.Case(Access.EXECUTE):
            # A Supervisor may never execute from a U page, whatever SUM says (§5.4).
            m.d.comb += permitted.eq(d.x & ~(key.priv & d.u))
    m.d.comb += _match_terms(terms, valid, t, key, t.span, permitted)


def _terms_hit(terms):
    """The lookup hits the entry its ``_LookupTerms`` were made from."""
    return (terms.valid & terms.device_eq & terms.requester_eq & terms.vpn_high_eq
            & (terms.span | terms.vpn_group_eq).all() & terms.permitted)


class _TreePLRU:
    """Tree pseudo-LRU over ``ways`` ways: node 1 is the root, node k has children 2k and
    2k+1; a node's bit set means "the less recently used half is the upper one"."""

    def __init__(self, ways):
        self.ways = ways
        self.bits = ways - 1  # node k is stored at bit k - 1

    def _nodes(self):
        """(node, lo, mid, hi): the ways a node splits into [lo, mid) and [mid, hi)."""
        todo = [(1, 0, self.ways)]
        while todo:
            node, lo, hi = todo.pop()
            if hi - lo < 2:
                continue
            mid = (lo + hi) // 2
            yield node, lo, mid, hi
            todo += [(2 * node, lo, mid), (2 * node + 1, mid, hi)]

    def touch(self, state, used):
        """State after using the way(s) set in ``used`` (one-hot or zero)."""
        new = [None] * self.bits
        for node, lo, mid, hi in self._nodes():
            old = state[node - 1]
            new[node - 1] = Mux(used[lo:mid].any(), 1, Mux(used[mid:hi].any(), 0, old))
        return Cat(new)

    def victim(self, state):
        """One-hot of the way the tree points at."""
        way_terms = [[] for _ in range(self.ways)]
        for node, lo, mid, hi in self._nodes():
            for w in range(lo, hi):
                way_terms[w].append(state[node - 1] if w >= mid else ~state[node - 1])
        return Cat(Cat(t).all() if t else Const(1) for t in way_terms)


class _WayStore:
    """One way's entries over the sets: tag, scope, data and span.

    With one set (fully associative) they are flip-flops, read as they are. With more,
    each field group is a memory with one entry per set, which maps to distributed RAM
    (ECP5 DPR16X4: a 16 x 4 RAM with a clocked write and an unclocked read); the
    synthesizer makes one copy per read port. Issue 7: flip-flop entries made the IOTLB
    two thirds of the IOMMU's flip-flops and its widest select; in RAM a set's ways are
    read by address, like a CPU's set-associative TLB.
    """

    # "span" again in RAM: the data select reads it, and another copy of the whole tag
    # memory for one read port would cost far more. Flip-flops need no copy.
    GROUPS = (("tag", EntryTag), ("scope", EntryScope), ("data", EntryData),
              ("span", unsigned(SPAN_BITS)))

    def __init__(self, m, sets, way, fixed_span=None):
        self.m, self.sets, self.ports = m, sets, {}
        self.way, self.fixed_span = way, fixed_span
        self.store = {}
        for group, shape in self.GROUPS:
            if group == "span" and (sets == 1 or fixed_span is not None):
                continue  # in the tag's flip-flops, or a constant
            if sets == 1:
                self.store[group] = Signal(shape, name=f"way{way}_{group}")
            else:
                mem = Memory(shape=shape, depth=sets, init=[])
                m.submodules[f"way{way}_{group}"] = mem
                self.store[group] = mem

    def read(self, group, port, addr):
        """``group`` of the entry in set ``addr`` through the read port named ``port``
        (made at its first use; every use of one port must pass the same address).
        With ``fixed_span`` (one page size) every span read is that constant."""
        if group == "span" and self.fixed_span is not None:
            return Const(self.fixed_span, SPAN_BITS)
        if self.sets == 1:
            value = self.store["tag"].span if group == "span" else self.store[group]
        else:
            store = self.store[group]
            if (group, port) not in self.ports:
                read_port = store.read_port(domain="comb")
                self.m.d.comb += read_port.addr.eq(addr)
                self.ports[group, port] = read_port
            value = self.ports[group, port].data
        if group == "tag" and self.fixed_span is not None:
            tag = Signal(EntryTag, name=f"way{self.way}_{port}_tag")
            self.m.d.comb += [tag.eq(value), tag.span.eq(self.fixed_span)]
            return tag
        return value

    def write(self, addr, enable, tag, scope, entry_data):
        """Write the entry of set ``addr`` at the clock edge when ``enable``."""
        values = {"tag": tag, "scope": scope, "data": entry_data, "span": tag.span}
        for group, store in self.store.items():
            value = values[group]
            if self.sets == 1:
                with self.m.If(enable):
                    self.m.d.sync += store.eq(value)
            else:
                write_port = store.write_port()
                self.m.d.comb += [write_port.addr.eq(addr), write_port.data.eq(value),
                                  write_port.en.eq(enable)]


class IOTLB(wiring.Component):
    """A set-associative cache of translations with a 3-cycle, 1-per-cycle lookup.

    ``entries`` entries in ``entries // ways`` sets (``ways == entries``: fully
    associative); ``payload_shape`` is carried from ``lookup`` to ``result`` untouched.
    ``page_sizes`` (log2, default every size of ``SPAN_OF_SIZE_LOG2``): the page sizes
    it caches; a fill of another size is accepted and dropped.

    Ports:
      lookup:  In stream of ``{key: LookupKey, payload}``. Accepted at clock edge k, its
               result is valid during cycle k+``LOOKUP_LATENCY``; one lookup per cycle
               while ``result.ready`` is high. Ready comes from flip-flops (it does not
               depend on ``result.ready`` in the same cycle).
      result:  Out stream of ``{payload, hit, ppn, size_log2, r, w, x, u, g, pbmt}`` in
               lookup order. ``hit`` only when the cached entry permits the access (read:
               R; write: W and D; execute: X, and not a Supervisor on a U page), so the
               IOTLB never faults: a miss sends the request to the walker, which faults
               or updates A/D. ``ppn`` is that of the requested 4 KiB page. Driven
               from registers. ``hit`` may fall while the result waits (an
               invalidation was applied meanwhile: a miss is always safe).
      fill:    In stream of ``Fill``. Ready while the fill register is empty (a
               registered signal); a fill accepted at clock edge k into an idle fill
               path is written at edge k + ``WRITE_LATENCY``, and a lookup accepted
               at edge k + ``FILL_LATENCY`` or later sees it (one accepted then compares
               with the fill as it is written). One fill per ``WRITE_LATENCY + 1`` cycles at most
               (fills come from walks, far rarer). A fill overlapping a cached page of
               the same requester in its set replaces it.
      inval:   In stream of ``layouts.Invalidation``, ready (a flip-flop) when no
               invalidation is on its way. Registered, then compared with the ways of
               one set per cycle, each way read and registered, its field compares
               registered, then its verdict registered and applied (§10.2):
               ``inval_cycles`` = sets + 4 cycles. No
               result leaves in between (``result.valid`` is held low) and the results
               waiting lose the hits it removes. A fill accepted in the same cycle, or
               still on its way in, is dropped, except one being written in that cycle
               (F4): that one the scan checks like any entry. A fill accepted later
               waits in F1.
      inval_busy: Out(1): an accepted invalidation is not applied yet (the
               ``inval_cycles`` cycles after its acceptance).
      flush:   In(1): drop every entry, as an invalidation matching all of them would
               (dropped at the second edge; results wait meanwhile).

    No result leaves after the cycle an invalidation (or flush, or overwriting fill) was
    accepted with a translation it removed: lookups in flight lose those hits.

    Timing: every write enable, and the PLRU update, comes from flip-flops or from
    one compare; the fill's tag compare and way choice are registered steps of their own.
    """

    LOOKUP_LATENCY = 4  # clock edges from a lookup's acceptance to its result
    FILL_LATENCY = 2  # clock edges from a fill's acceptance to the first lookup that sees it
    WRITE_LATENCY = 4  # clock edges from a fill's acceptance (F1 idle) to its write

    def __init__(self, entries: int = 32, ways: int | None = None,
                 payload_shape=unsigned(1), page_sizes=None):
        if page_sizes is None:
            page_sizes = tuple(SPAN_OF_SIZE_LOG2)
        page_sizes = tuple(page_sizes)
        if not page_sizes or any(p not in SPAN_OF_SIZE_LOG2 for p in page_sizes):
            raise ValueError(f"page_sizes must be sizes (log2) out of "
                             f"{sorted(SPAN_OF_SIZE_LOG2)}, not {page_sizes!r}")
        self.page_sizes = page_sizes
        if ways is None:
            ways = entries
        for name, value in (("entries", entries), ("ways", ways)):
            if not isinstance(value, int) or value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, not {value!r}")
        if ways > entries:
            raise ValueError(f"ways ({ways}) cannot exceed entries ({entries})")
        try:
            Shape.cast(payload_shape)
        except TypeError as error:
            raise TypeError(f"payload_shape must be a shape, not {payload_shape!r}") from error
        self.entries, self.ways, self.sets = entries, ways, entries // ways
        # Cycles ``inval_busy`` is high after an invalidation's acceptance: one per set
        # scanned, then the registered reads, compares, verdicts and drops.
        self.inval_cycles = self.sets + 4
        self.payload_shape = payload_shape
        self.lookup_layout = lookup_layout(payload_shape)
        self.result_layout = result_layout(payload_shape)
        super().__init__(iotlb_signature(payload_shape))

    def elaborate(self, platform):
        m = Module()
        sets, ways = self.sets, self.ways
        set_bits = (sets - 1).bit_length()
        plru = _TreePLRU(ways)

        def set_of(vpn):
            return vpn[:set_bits] if set_bits else Const(0, 1)

        # ---------------------------------------------------------------- storage
        # Every way of a set is compared at once. The entries are in ``store`` (RAM when
        # set-associative); the per-entry state bits (valid, drop) are flip-flops, so
        # that a flush or an invalidation clears many entries in one edge.
        def per_entry(shape, what):
            return [[Signal(shape, name=f"set{s}_way{w}_{what}") for w in range(ways)]
                    for s in range(sets)]

        valid = per_entry(1, "valid")
        # With one page size every entry's span is the same constant: the synthesizer
        # then drops the span's compares, its select and the page-number merge of a
        # hit (issue 7: the span read through the merge into stage 3 was 0.8 ns short
        # of 100 MHz in the split IOTLB's 4 KiB bank).
        fixed_span = (SPAN_OF_SIZE_LOG2[self.page_sizes[0]] if len(self.page_sizes) == 1
                      else None)
        store = [_WayStore(m, sets, w, fixed_span) for w in range(ways)]
        plru_state = [Signal(plru.bits, name=f"set{s}_plru") for s in range(sets)]
        changed = per_entry(1, "changed")  # rewritten or dropped at the coming edge

        def in_set(index, per_set, shape, name):
            """``per_set[index]`` (a plain wire when the cache is fully associative)."""
            if sets == 1:
                return per_set[0]
            chosen = Signal(shape, name=name)
            m.d.comb += Value.cast(chosen).eq(Array(Value.cast(v) for v in per_set)[index])
            return chosen

        def ways_of(group, port, index):
            return [store[w].read(group, port, index) for w in range(ways)]

        # ----------------------------------------- stages 1a and 1b: compare tags
        s1_valid = Signal()
        s1_key = Signal(LookupKey)
        s1_payload = Signal(self.payload_shape)
        s1b_valid = Signal()
        s1b_vpn = Signal(layouts.VPN_BITS)
        s1b_payload = Signal(self.payload_shape)
        s1b_set = Signal(max(set_bits, 1))
        s2_valid = Signal()
        s2_hit = Signal(ways)  # one-hot (or zero) over the ways of s2_set
        s2_vpn = Signal(layouts.VPN_BITS)
        s2_payload = Signal(self.payload_shape)

        # An invalidation is applied in registered steps, one set at a time (issue 7:
        # no wire runs from the core to the entries, and no per-entry compare sits in
        # front of a lookup's hit vector or of an entry's valid bit):
        #   scan      the ways of set ``scan_set`` read, one set per cycle
        #             (``scan_active``), and registered (``read_valid``);
        #   compared  per way, the field compares with the accepted operands (``inv``:
        #             same GSCID, same PSCID, same page-number bits per page-size group,
        #             same device, same process) registered with the flags they are
        #             combined with (``terms_valid``);
        #   hit       per way, the scope the command's kind and operands ask for
        #             (§10.2), registered (``hit_valid``);
        #   drop_q    per entry: that verdict in its set (``drop_valid``); dropped at
        #             the edge ending it.
        # (The read and the compares in one step, and the compares and the scope in
        # another, were up to 0.95 ns short of 100 MHz, issue 7.)
        # While it is on its way (``inval_busy``, ``sets`` + 4 cycles) no result leaves
        # and no fill moves on; hits a lookup in flight found on a matching entry are
        # dropped on the way, and the results waiting at a drop edge lose the hits on
        # entries it drops (a miss is always safe).
        inv = Signal(layouts.Invalidation)
        scan_active = Signal()
        scan_set = Signal(max(set_bits, 1))
        read_valid = Signal()
        read_set = Signal(max(set_bits, 1))
        terms_valid = Signal()
        terms_set = Signal(max(set_bits, 1))
        hit_valid = Signal()
        hit_set = Signal(max(set_bits, 1))
        drop_valid = Signal()
        # ``inval_busy`` is the OR of the steps' valid bits, kept in a flip-flop of its
        # own (loaded with what they will be after the edge): the command queue's
        # enables hang on it through the split IOTLB's OR, and the OR of three (six)
        # flip-flops in front of them was 0.4 ns short of 100 MHz (issue 7).
        busy = Signal()
        m.d.comb += [self.inval_busy.eq(busy), self.inval.ready.eq(~busy)]
        m.d.sync += busy.eq((self.inval.valid & ~busy) | scan_active | read_valid
                            | terms_valid | hit_valid | self.flush)
        with m.If(self.inval.valid & self.inval.ready):
            m.d.sync += [inv.eq(self.inval.payload), scan_active.eq(1), scan_set.eq(0)]
        with m.Elif(scan_active):
            m.d.sync += scan_set.eq(scan_set + 1)
            with m.If(scan_set == sets - 1):
                m.d.sync += scan_active.eq(0)
        m.d.sync += [read_valid.eq(scan_active), read_set.eq(scan_set),
                     terms_valid.eq(read_valid), terms_set.eq(read_set),
                     hit_valid.eq(terms_valid), hit_set.eq(terms_set),
                     drop_valid.eq(hit_valid | self.flush)]
        drop_q = per_entry(1, "drop")  # dropped at the edge ending drop_valid
        # The fill being written (F4, below): its entry, and per entry (set-major)
        # whether it is written at this edge.
        pend_tag = Signal(EntryTag)
        pend_scope = Signal(EntryScope)
        pend_data = Signal(EntryData)
        f4_write = Signal(sets * ways)
        f4_keep = Signal()  # the entry written is left valid
        f1_advance = Signal()  # a fill moves from F1 to F2 (``pend_*`` loaded)
        # Per set, the ways written, dropped, or either at the coming edge.
        writes = [f4_write[s * ways:(s + 1) * ways] for s in range(sets)]
        drops = [Cat(drop_q[s]) for s in range(sets)]
        changes = [Cat(changed[s]) for s in range(sets)]

        s3_in_ready = Signal()  # stage 3 (the result skid buffer) takes a result
        s2_ready = ~s2_valid | s3_in_ready
        s1b_ready = ~s1b_valid | s2_ready
        s1_ready = ~s1_valid | s1b_ready
        m.d.comb += self.lookup.ready.eq(s1_ready)

        key = self.lookup.payload.key
        in_key = Signal(LookupKey)
        m.d.comb += [
            in_key.eq(key),
            # Without a process id the request is User and has no process (§1.1).
            in_key.process_id.eq(Mux(key.pv, key.process_id, 0)),
            in_key.priv.eq(key.priv & key.pv),
        ]
        # The fill being written (``pend_*``, stable from F2 to its write) is compared
        # with the key as the lookup comes in, so that stages 1a and 1b can each take
        # the fill written at their edge with no compare in front of them. ``fresh``
        # falls if another fill replaces ``pend_*`` meanwhile (only while stalled):
        # the lookup then misses on a way written under it.
        in_pend = Signal(_LookupTerms)
        _lookup_terms(m, in_pend, 1, pend_tag, pend_data, in_key)
        s1_pend = Signal(_LookupTerms)
        s1_pend_fresh = Signal()
        with m.If(s1_ready):
            m.d.sync += [
                s1_valid.eq(self.lookup.valid),
                s1_key.eq(in_key),
                s1_payload.eq(self.lookup.payload.payload),
                s1_pend.eq(in_pend),
                s1_pend_fresh.eq(~f1_advance),
            ]
        with m.Elif(f1_advance):
            m.d.sync += s1_pend_fresh.eq(0)

        # Stage 1a: the set's ways read and each field compared (``_LookupTerms``).
        s1_set = Signal(max(set_bits, 1))
        m.d.comb += s1_set.eq(set_of(s1_key.vpn))
        s1_valid_ways = in_set(s1_set, [Cat(valid[s]) for s in range(sets)], ways, "s1_valid")
        s1_tags = ways_of("tag", "s1", s1_set)
        s1_data = ways_of("data", "s1", s1_set)
        s1_terms = [Signal(_LookupTerms, name=f"s1_way{w}_terms") for w in range(ways)]
        for w in range(ways):
            _lookup_terms(m, s1_terms[w], s1_valid_ways[w], s1_tags[w], s1_data[w], s1_key)

        # The fill written at an edge is compared too (forwarded): the way it writes
        # takes that compare instead of the old entry's, so a lookup in the cycle of a
        # write sees the new entry, which its stage-2 select will read. Without it, a
        # requester that asks again as the previous walk's fill is written would miss
        # every time (the walk and the fill would keep step with its requests). A hit
        # on an entry an invalidation drops at an edge is dropped (a miss is always
        # safe). An entry that an overlapping fill replaces keeps its data: a hit on it
        # reads what it compared.
        # At the edge ending stage 1a, each way's outcome is decided there if the way is
        # written or dropped then (``decided``, ``decided_hit``), else by its terms.
        s1_written = in_set(s1_set, writes, ways, "s1_written")
        s1_inval = in_set(s1_set, drops, ways, "s1_inval")
        s1_pend_hit = Signal()
        m.d.comb += s1_pend_hit.eq(f4_keep & s1_pend_fresh & _terms_hit(s1_pend))

        # Stage 1b: the terms ANDed; the hit vector registered into stage 2.
        s1b_terms = [Signal(_LookupTerms, name=f"s1b_way{w}_terms") for w in range(ways)]
        s1b_decided = Signal(ways)
        s1b_decided_hit = Signal(ways)
        s1b_pend = Signal(_LookupTerms)
        s1b_pend_fresh = Signal()
        s1b_changed = in_set(s1b_set, changes, ways, "s1b_changed")
        with m.If(s1b_ready):
            m.d.sync += [
                s1b_valid.eq(s1_valid),
                s1b_vpn.eq(s1_key.vpn),
                s1b_payload.eq(s1_payload),
                s1b_set.eq(s1_set),
                *(s1b_terms[w].eq(s1_terms[w]) for w in range(ways)),
                s1b_decided.eq(s1_written | s1_inval),
                s1b_decided_hit.eq(s1_written & s1_pend_hit.replicate(ways) & ~s1_inval),
                s1b_pend.eq(s1_pend),
                s1b_pend_fresh.eq(s1_pend_fresh & ~f1_advance),
            ]
        with m.Else():
            # Waiting: a way rewritten or dropped meanwhile becomes a miss.
            m.d.sync += [s1b_decided.eq(s1b_decided | s1b_changed),
                         s1b_decided_hit.eq(s1b_decided_hit & ~s1b_changed)]
            with m.If(f1_advance):
                m.d.sync += s1b_pend_fresh.eq(0)
        s1b_hit = Signal(ways)
        for w in range(ways):
            m.d.comb += s1b_hit[w].eq(Mux(s1b_decided[w], s1b_decided_hit[w],
                                          _terms_hit(s1b_terms[w])))
        s1b_written = in_set(s1b_set, writes, ways, "s1b_written")
        s1b_inval = in_set(s1b_set, drops, ways, "s1b_inval")
        s1b_pend_hit = Signal()
        m.d.comb += s1b_pend_hit.eq(f4_keep & s1b_pend_fresh & _terms_hit(s1b_pend))
        s1b_hit_kept = Signal(ways)
        m.d.comb += s1b_hit_kept.eq(
            ((s1b_written & s1b_pend_hit.replicate(ways)) | (~s1b_written & s1b_hit))
            & ~s1b_inval & s1b_valid.replicate(ways))

        # The stage-2 vector keeps dropping the hits on entries rewritten or dropped
        # while it waits, and the select below masks the invalidated ones as it leaves
        # (every mask comes from flip-flops).
        s2_set = Signal(max(set_bits, 1))
        s2_changed = in_set(s2_set, changes, ways, "s2_changed")
        s2_inval = in_set(s2_set, drops, ways, "s2_inval")
        with m.If(s2_ready):
            m.d.sync += [
                s2_valid.eq(s1b_valid),
                s2_hit.eq(s1b_hit_kept),
                s2_set.eq(s1b_set),
                s2_vpn.eq(s1b_vpn),
                s2_payload.eq(s1b_payload),
            ]
        with m.Else():
            m.d.sync += s2_hit.eq(s2_hit & ~s2_changed)

        # ---------------------------------------------- stage 2: AND-OR data select
        # (The select reads the entries before this edge: a write at this edge does not
        # change what a hit leaving now reads.)
        s2_hit_kept = Signal(ways)
        m.d.comb += s2_hit_kept.eq(s2_hit & ~s2_inval)
        s2_data = ways_of("data", "s2", s2_set)
        s2_spans = ways_of("span", "s2", s2_set)
        # The entry's fields are selected by ``s2_hit`` (a flip-flop), not by the hit
        # kept after this cycle's drops: a result that a drop turns into a miss carries
        # whatever fields it selected, and the result port masks them with its hit bit.
        # The drop's mask is then in front of the hit bit alone (issue 7: it was in
        # front of the select, the page-number merge and stage 3's 169 data bits).
        hit_data = Signal(EntryData)
        hit_span = Signal(SPAN_BITS)
        m.d.comb += [
            hit_data.as_value().eq(and_or(s2_hit, [d.as_value() for d in s2_data])),
            hit_span.eq(and_or(s2_hit, s2_spans)),
        ]
        selected = Signal(self.result_layout)  # the result, as it enters stage 3
        m.d.comb += [
            selected.payload.eq(s2_payload),
            selected.hit.eq(s2_hit_kept.any()),
            # Page base from the entry, the page-number bits inside the page from the key.
            selected.ppn.eq(hit_data.ppn
                            | (s2_vpn & _inside_page_mask(hit_span, layouts.VPN_BITS))),
            selected.r.eq(hit_data.r), selected.w.eq(hit_data.w), selected.x.eq(hit_data.x),
            selected.u.eq(hit_data.u), selected.g.eq(hit_data.g),
            selected.pbmt.eq(hit_data.pbmt),
        ]
        # The page size of the hit's span (SPAN_OF_SIZE_LOG2); a miss's is masked at
        # the port.
        with m.Switch(hit_span):
            for size_log2 in self.page_sizes:
                span = SPAN_OF_SIZE_LOG2[size_log2]
                with m.Case(span):
                    m.d.comb += selected.size_log2.eq(size_log2)

        # The way a lookup used, for the PLRU of its set: registered, and applied a cycle
        # later (the PLRU is a hint; its update is off the lookup path).
        hit_touch = Signal(ways)
        touch_set = Signal(max(set_bits, 1))
        m.d.sync += [hit_touch.eq(Mux(s2_valid & s3_in_ready, s2_hit_kept, 0)),
                     touch_set.eq(s2_set)]

        # ------------------------------------------- stage 3: the registered result
        # A skid buffer: ``s3`` drives the result port, ``skid`` takes the result
        # stage 2 sent in the cycle the consumer stalled; ``s3_in_ready`` is a flip-flop.
        s3_valid = Signal()
        s3 = Signal(self.result_layout)
        skid_valid = Signal()
        skid = Signal(self.result_layout)
        # Which entry each waiting result came from, so that an invalidation applied
        # while it waits takes exactly the hits on entries it drops.
        s3_way, skid_way = Signal(ways), Signal(ways)
        s3_set, skid_set = Signal(max(set_bits, 1)), Signal(max(set_bits, 1))
        m.d.comb += [
            s3_in_ready.eq(~skid_valid),
            self.result.valid.eq(s3_valid & ~self.inval_busy),
            self.result.payload.eq(s3),
            # A miss carries zeros: the entry's fields are masked here by the hit bit,
            # so that a drop (below) clears only the hit bit of a waiting result, not
            # its ~60 fields (the drop's check into them was 7 levels, issue 7).
            *(getattr(self.result.payload, name).eq(
                getattr(s3, name) & s3.hit.replicate(len(getattr(s3, name))))
              for name in _ENTRY_FIELDS),
        ]
        s2_moves = s2_valid & s3_in_ready
        s3_free = ~s3_valid | (self.result.valid & self.result.ready)
        with m.If(s3_free):
            with m.If(skid_valid):
                m.d.sync += [s3.eq(skid), s3_valid.eq(1), skid_valid.eq(0),
                             s3_way.eq(skid_way), s3_set.eq(skid_set)]
            with m.Else():
                m.d.sync += [s3.eq(selected), s3_valid.eq(s2_moves),
                             s3_way.eq(s2_hit_kept), s3_set.eq(s2_set)]
        with m.Elif(s2_moves):
            m.d.sync += skid_valid.eq(1)  # it holds ``selected`` from this edge
        # While empty, the skid follows ``selected`` in every cycle: the enable of its
        # ~180 bits is ``skid_valid`` (a flip-flop), not the decision whether stage 3
        # is held (the consumer's ready through ``s3_free`` into them was 0.6 ns short
        # of 100 MHz, issue 7). It means something only once ``skid_valid`` is set.
        with m.If(~skid_valid):
            m.d.sync += [skid.eq(selected), skid_way.eq(s2_hit_kept), skid_set.eq(s2_set)]
        # A result selected before the invalidation's matches were registered may use
        # an entry it drops: it becomes a miss at the drop edge, wherever it waits.
        # (Later selections are masked on their way through stage 2.) Drops happen only
        # while ``inval_busy`` holds every result in stage 3, so the skid never moves
        # to stage 3 at a drop edge (it is full only while stage 3 is): each result is
        # dropped where it waits, and the skid's drop check is not in front of stage
        # 3's hit bit (0.6 ns short of 100 MHz, issue 7).
        s3_dropped = (s3_way & in_set(s3_set, drops, ways, "s3_drops")).any()
        skid_drops = in_set(skid_set, drops, ways, "skid_drops")
        skid_dropped = skid_valid & (skid_way & skid_drops).any()
        with m.If(~s3_free & s3_dropped):
            m.d.sync += _as_miss(s3)
        with m.If(skid_dropped):
            m.d.sync += _as_miss(skid)

        # ---------------------------------------------------------------- fill
        # Four registered steps, so that no wire runs from the fill port (or from a
        # tag compare, or from a priority pick) to the write enables of the entries
        # (issue 7, timing):
        #   F1  the accepted fill, its entry fields made;
        #   F2  compared with every way of its set: overlapping and free ways;
        #   F3  the first overlapping and the first free way (one-hot), the PLRU way;
        #   F4  the way to write (one-hot) and the ways it replaces, both registered:
        #       the entries' enables come straight from flip-flops.
        # A fill moves on from F1 only when F2-F4 are empty, so each compare sees
        # the entries the previous fill left; fills are rare (one per walk).
        fill = self.fill.payload
        fill_span = Signal(SPAN_BITS)
        fill_size_ok = Signal()
        with m.Switch(fill.size_log2):
            for size_log2 in self.page_sizes:
                with m.Case(size_log2):
                    m.d.comb += [fill_span.eq(SPAN_OF_SIZE_LOG2[size_log2]),
                                 fill_size_ok.eq(1)]
        new_tag = Signal(EntryTag)
        new_scope = Signal(EntryScope)
        new_data = Signal(EntryData)
        fk = fill.key
        m.d.comb += [
            new_tag.device_id.eq(fk.device_id),
            new_tag.pv.eq(fk.pv),
            new_tag.process_id.eq(Mux(fk.pv, fk.process_id, 0)),
            new_tag.priv.eq(fk.priv & fk.pv),
            new_tag.vpn.eq(fk.vpn),
            new_tag.span.eq(fill_span),
            new_scope.gscid_valid.eq(fill.gscid_valid),
            new_scope.gscid.eq(fill.gscid),
            new_scope.pscid_valid.eq(fill.pscid_valid),
            new_scope.pscid.eq(fill.pscid),
            # Keep the page base whichever 4 KiB page of it the walker reported.
            new_data.ppn.eq(fill.ppn & ~_inside_page_mask(fill_span, layouts.PPN_BITS)),
            new_data.r.eq(fill.r), new_data.w.eq(fill.w), new_data.x.eq(fill.x),
            new_data.u.eq(fill.u), new_data.g.eq(fill.g), new_data.d.eq(fill.d),
            new_data.pbmt.eq(fill.pbmt),
        ]

        # An invalidation in the cycle a fill is accepted, or while it is on its way in,
        # might cover the translation (it was walked before the invalidation took
        # effect): the fill is dropped, still accepted (or, in F4, scanned). A fill
        # accepted later waits in F1 until the invalidation is applied.
        inval_now = (self.inval.valid & self.inval.ready) | self.flush

        f1_valid = Signal()
        f1_tag = Signal(EntryTag)
        f1_scope = Signal(EntryScope)
        f1_data = Signal(EntryData)
        f2_valid = Signal()
        f3_valid = Signal()
        f4_valid = Signal()
        m.d.comb += [
            self.fill.ready.eq(~f1_valid),
            # Not while an invalidation is on its way: a fill written meanwhile could be
            # dropped by it, and its compares would see entries the scan is dropping.
            f1_advance.eq(f1_valid & ~f2_valid & ~f3_valid & ~f4_valid & ~self.inval_busy),
        ]
        with m.If(self.fill.ready):
            m.d.sync += [f1_valid.eq(self.fill.valid & fill_size_ok), f1_tag.eq(new_tag),
                         f1_scope.eq(new_scope), f1_data.eq(new_data)]
        with m.Elif(f1_advance):
            m.d.sync += f1_valid.eq(0)

        # F2-F4 never hold more than one fill, so they share its fields.
        f1_set = Signal(max(set_bits, 1))
        m.d.comb += f1_set.eq(set_of(f1_tag.vpn))
        f1_valid_ways = in_set(f1_set, [Cat(valid[s]) for s in range(sets)], ways, "f1_valid")
        # F1 and the invalidation scan have read ports of their own: a shared port's
        # address mux was the IOTLB's longest routed path (88 MHz, issue 7).
        f1_tags = ways_of("tag", "f1", f1_set)

        # Two entries of one requester must never cover the same page: the AND-OR select
        # would merge them. So a fill replaces every entry of the set it overlaps. The
        # compare is split like a lookup's (issue 7: 8 LUT levels behind the RAM read):
        # F1 registers each way's field compares, F2 ANDs them. Aligned power-of-two
        # pages overlap exactly when they agree above the larger one: a group inside
        # either page is ignored (``span`` is the OR of both spans; ``permitted`` is 1).
        f2_terms = [Signal(_LookupTerms, name=f"f2_way{w}_terms") for w in range(ways)]
        f2_set = Signal(max(set_bits, 1))
        f2_free = Signal(ways)
        m.d.sync += f2_valid.eq(f1_advance)
        with m.If(f1_advance):
            m.d.sync += [
                pend_tag.eq(f1_tag), pend_scope.eq(f1_scope), pend_data.eq(f1_data),
                f2_set.eq(f1_set),
                f2_free.eq(~f1_valid_ways),
            ]
            for w, t in enumerate(f1_tags):
                m.d.sync += _match_terms(f2_terms[w], f1_valid_ways[w], t, f1_tag,
                                         t.span | f1_tag.span, 1)
        f2_overlap = Signal(ways)
        m.d.comb += f2_overlap.eq(Cat(_terms_hit(f2_terms[w]) for w in range(ways)))

        # F3: the two priority picks, each registered on its own.
        f3_set = Signal(max(set_bits, 1))
        f3_overlap = Signal(ways)
        f3_first_overlap = Signal(ways)
        f3_first_free = Signal(ways)
        f3_any_free = Signal()
        f3_victim = Signal(ways)
        m.d.sync += [
            f3_valid.eq(f2_valid),
            f3_set.eq(f2_set),
            f3_overlap.eq(f2_overlap),
            f3_first_overlap.eq(lowest_one_hot(f2_overlap)),
            f3_first_free.eq(lowest_one_hot(f2_free)),
            f3_any_free.eq(f2_free.any()),
            # The PLRU victim is read here, not in F2: the previous fill's and the
            # lookups' uses are applied a cycle after they happen.
            f3_victim.eq(plru.victim(in_set(f2_set, plru_state, plru.bits, "f2_plru"))),
        ]

        target = Signal(ways)  # one-hot: the way written
        with m.If(f3_first_overlap.any()):
            m.d.comb += target.eq(f3_first_overlap)
        with m.Elif(f3_any_free):
            m.d.comb += target.eq(f3_first_free)
        with m.Else():
            m.d.comb += target.eq(f3_victim)
        # Per entry (set-major): written, or dropped because the new entry covers it.
        f4_replace = Signal(sets * ways)
        f4_set = Signal(max(set_bits, 1))
        f4_target = Signal(ways)
        m.d.sync += f4_valid.eq(f3_valid)
        for s in range(sets):
            this_set = f3_valid & (Const(1) if sets == 1 else f3_set == s)
            m.d.sync += [
                f4_write[s * ways:(s + 1) * ways].eq(Mux(this_set, target, 0)),
                f4_replace[s * ways:(s + 1) * ways].eq(Mux(this_set, f3_overlap & ~target, 0)),
            ]
        m.d.sync += [f4_set.eq(f3_set), f4_target.eq(Mux(f3_valid, target, 0))]

        # Dropped on the way in: the invalidation is the later event. A fill in F4 when
        # an invalidation is accepted is written and kept: the scan starts at the next
        # edge and treats it as any other entry, dropping it if the invalidation covers
        # it. (Left invalid instead, its keep bit hung on the acceptance, which the
        # split IOTLB's ready and the core's register decide: 1.4 ns short of 100 MHz
        # into the hit vectors, issue 7.) A flush leaves it invalid, and the write
        # enables need no invalidation term.
        m.d.comb += f4_keep.eq(f4_valid & ~self.flush)
        with m.If(inval_now):
            m.d.sync += [f1_valid.eq(0), f2_valid.eq(0), f3_valid.eq(0), f4_valid.eq(0)]
            for s in range(sets):
                m.d.sync += f4_replace[s * ways:(s + 1) * ways].eq(0)
        # The way a fill wrote, for the PLRU: registered like a lookup's (a hint).
        fill_touch = Signal(ways)
        fill_touch_set = Signal(max(set_bits, 1))
        m.d.sync += [fill_touch.eq(Mux(f4_keep, f4_target, 0)), fill_touch_set.eq(f4_set)]

        # ------------------------------------------------------------ invalidation
        # The operands in ``inv`` stay until the drop: the next invalidation waits.
        for w in range(ways):
            # The way as read in the scan, registered: its tag, its scope and its data's
            # G bit (the only data field the compares use).
            read_tag = Signal(EntryTag, name=f"way{w}_inval_read_tag")
            read_scope = Signal(EntryScope, name=f"way{w}_inval_read_scope")
            read_g = Signal(name=f"way{w}_inval_read_g")
            m.d.sync += [read_tag.eq(store[w].read("tag", "scan", scan_set)),
                         read_scope.eq(store[w].read("scope", "scan", scan_set)),
                         read_g.eq(store[w].read("data", "scan", scan_set).g)]
            t, sc = read_tag, read_scope
            cmp = Signal(_InvalCompare, name=f"way{w}_inval_compared")
            m.d.sync += [
                cmp.vpn_high_eq.eq(t.vpn[SPAN_GROUPS[-1][1]:] == inv.vpn[SPAN_GROUPS[-1][1]:]),
                cmp.vpn_group_eq.eq(Cat(t.vpn[lo:hi] == inv.vpn[lo:hi] for lo, hi in SPAN_GROUPS)),
                cmp.span.eq(t.span),
                cmp.gscid_valid.eq(sc.gscid_valid),
                cmp.gscid_eq.eq(sc.gscid == inv.gscid),
                cmp.pscid_valid.eq(sc.pscid_valid),
                cmp.pscid_eq.eq(sc.pscid == inv.pscid),
                cmp.g.eq(read_g),
                cmp.device_eq.eq(t.device_id == inv.device_id),
                cmp.pv.eq(t.pv),
                cmp.process_eq.eq(t.process_id == inv.process_id),
            ]
            in_vm = Mux(inv.gv, cmp.gscid_valid & cmp.gscid_eq, ~cmp.gscid_valid)
            # PSCV=1 spares global entries and entries with no first stage (no PSCID).
            in_pscid = ~inv.pscv | (cmp.pscid_valid & cmp.pscid_eq & ~cmp.g)
            same_page = cmp.vpn_high_eq & (cmp.span | cmp.vpn_group_eq).all()
            at_addr = ~inv.av | same_page
            inval_hit = Signal(name=f"way{w}_inval")
            with m.Switch(inv.kind):
                with m.Case(InvalKind.IOTINVAL_VMA):
                    m.d.comb += inval_hit.eq(in_vm & in_pscid & at_addr)
                with m.Case(InvalKind.IOTINVAL_GVMA):
                    # A combined VA->SPA entry does not keep its GPA: drop the whole VM
                    # (§10.2), whatever AV says.
                    m.d.comb += inval_hit.eq(cmp.gscid_valid & (~inv.gv | cmp.gscid_eq))
                with m.Case(InvalKind.IODIR_INVAL_DDT):
                    m.d.comb += inval_hit.eq(~inv.dv | cmp.device_eq)
                with m.Case(InvalKind.IODIR_INVAL_PDT):
                    m.d.comb += inval_hit.eq(cmp.device_eq & cmp.pv & cmp.process_eq)
            hit_q = Signal(name=f"way{w}_inval_hit")
            m.d.sync += hit_q.eq(inval_hit)
            store[w].write(f4_set, f4_target[w], pend_tag, pend_scope, pend_data)
            for s in range(sets):
                # No fill is written while an invalidation is on its way (F1 waits), so
                # the tests made four cycles before the drop stay right.
                scanned = hit_valid & (Const(1) if sets == 1 else hit_set == s)
                m.d.sync += drop_q[s][w].eq((scanned & hit_q) | self.flush)

                write = f4_write[s * ways + w]  # already qualified by f4_valid
                drop = drop_q[s][w] | f4_replace[s * ways + w]
                m.d.comb += changed[s][w].eq(write | drop)
                with m.If(write):
                    m.d.sync += valid[s][w].eq(f4_keep)
                with m.Elif(drop):
                    m.d.sync += valid[s][w].eq(0)

        # ------------------------------------------------------------------ PLRU
        # A lookup uses its way when its result enters stage 3, a fill when it is
        # written (both registered, applied a cycle later). Both may use a set in one cycle: the
        # fill is the later use.
        if plru.bits:
            for s in range(sets):
                used_by_hit = Mux(Const(1) if sets == 1 else touch_set == s, hit_touch, 0)
                used_by_fill = Mux(Const(1) if sets == 1 else fill_touch_set == s, fill_touch, 0)
                m.d.sync += plru_state[s].eq(
                    plru.touch(plru.touch(plru_state[s], used_by_hit), used_by_fill))
        return m


#: The entry's fields in a result: zero on a miss (masked at the result port).
_ENTRY_FIELDS = ("ppn", "size_log2", "r", "w", "x", "u", "g", "pbmt")


def _as_miss(result):
    """Statements turning a waiting result into a miss: its hit bit cleared (the port
    masks the entry's fields with it; the payload is kept)."""
    return [result.hit.eq(0)]
