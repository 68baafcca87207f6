"""IOTLB (rtl/iotlb.py) in the Amaranth simulator: hits and misses per page size, the
permission gate, fixed latency at one lookup per cycle, fill latency, back-pressure, pseudo-LRU
replacement, duplicate fills, and every invalidation scope of spec §10.2 checked against
a plain-Python reading of the digest's table."""

import gc
import random
from dataclasses import dataclass, replace

import pytest
from amaranth.back import verilog
from amaranth.hdl import unsigned
from amaranth.sim import Simulator

from rtl.iotlb import IOTLB
from rtl.layouts import Access, InvalKind

PAYLOAD = unsigned(16)
SIZES = (12, 16, 21, 30, 39, 48)


# --------------------------------------------------------------------------- #
# Transactions
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Requester:
    device_id: int = 1
    pv: int = 0
    process_id: int = 0
    priv: int = 0  # 1 = Supervisor


@dataclass(frozen=True)
class Translation:
    """One fill: the requester, the 4 KiB page it walked, and what the walk found."""

    requester: Requester
    vpn: int
    ppn: int  # of the walked 4 KiB page, as the walker reports it
    size_log2: int = 12
    r: int = 1
    w: int = 1
    x: int = 0
    u: int = 1
    g: int = 0
    d: int = 1
    pbmt: int = 0
    gscid_valid: int = 0
    gscid: int = 0
    pscid_valid: int = 1
    pscid: int = 0

    @property
    def pages(self) -> int:
        return 1 << (self.size_log2 - 12)

    def covers(self, vpn: int) -> bool:
        return vpn // self.pages == self.vpn // self.pages

    def ppn_of(self, vpn: int) -> int:
        """What the IOTLB must answer for a 4 KiB page ``vpn`` inside this page."""
        return (self.ppn // self.pages) * self.pages + vpn % self.pages


@dataclass(frozen=True)
class Inval:
    kind: InvalKind
    gv: int = 0
    av: int = 0
    pscv: int = 0
    dv: int = 0
    gscid: int = 0
    pscid: int = 0
    vpn: int = 0
    device_id: int = 0
    process_id: int = 0


class TB:
    """Owns the IOTLB under test and a cycle count; tests ask it for transactions."""

    def __init__(self, entries=32, ways=None, dut=None):
        self.dut = IOTLB(entries, ways, PAYLOAD) if dut is None else dut
        self.cycle = 0

    def run(self, bench):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)

        async def testbench(ctx):
            ctx.set(self.dut.result.ready, 1)
            await bench(ctx)

        sim.add_testbench(testbench)
        sim.run()

    async def tick(self, ctx, n=1):
        for _ in range(n):
            await ctx.tick()
            self.cycle += 1

    def _drive_fill(self, ctx, t: Translation):
        f = self.dut.fill.payload
        q = t.requester
        ctx.set(f.key.device_id, q.device_id)
        ctx.set(f.key.pv, q.pv)
        ctx.set(f.key.process_id, q.process_id)
        ctx.set(f.key.priv, q.priv)
        ctx.set(f.key.vpn, t.vpn)
        for name in ("gscid_valid", "gscid", "pscid_valid", "pscid", "ppn", "size_log2",
                     "r", "w", "x", "u", "g", "d", "pbmt"):
            ctx.set(getattr(f, name), getattr(t, name))
        ctx.set(self.dut.fill.valid, 1)

    def _drive_inval(self, ctx, cmd: Inval):
        p = self.dut.inval.payload
        for name in ("kind", "gv", "av", "pscv", "dv", "gscid", "pscid", "vpn", "device_id",
                     "process_id"):
            ctx.set(getattr(p, name), getattr(cmd, name))
        ctx.set(self.dut.inval.valid, 1)

    async def fill(self, ctx, t: Translation, inval: Inval | None = None, settle=True):
        """One fill (and, if given, an invalidation in the cycle it is accepted). With
        ``settle``, return once it is written (``IOTLB.WRITE_LATENCY`` edges after it
        was accepted; lookups see it an edge earlier), so that whatever is driven next,
        an invalidation included, comes after the write."""
        self._drive_fill(ctx, t)
        waited = 0
        while not ctx.get(self.dut.fill.ready):
            await self.tick(ctx)
            waited += 1
            assert waited <= IOTLB.WRITE_LATENCY, "the fill path never became ready"
        if inval is not None:
            self._drive_inval(ctx, inval)
            assert ctx.get(self.dut.inval.ready), "the IOTLB must always take an invalidation"
        await self.tick(ctx)
        ctx.set(self.dut.fill.valid, 0)
        ctx.set(self.dut.inval.valid, 0)
        if settle:
            await self.tick(ctx, IOTLB.WRITE_LATENCY)

    async def invalidate(self, ctx, cmd: Inval):
        self._drive_inval(ctx, cmd)
        assert ctx.get(self.dut.inval.ready), "the IOTLB must always take an invalidation"
        await self.tick(ctx)
        ctx.set(self.dut.inval.valid, 0)

    async def flush(self, ctx):
        ctx.set(self.dut.flush, 1)
        await self.tick(ctx)
        ctx.set(self.dut.flush, 0)

    def _drive_lookup(self, ctx, requester, vpn, access, tag):
        k = self.dut.lookup.payload.key
        ctx.set(k.device_id, requester.device_id)
        ctx.set(k.pv, requester.pv)
        ctx.set(k.process_id, requester.process_id)
        ctx.set(k.priv, requester.priv)
        ctx.set(k.vpn, vpn)
        ctx.set(k.access, access)
        ctx.set(self.dut.lookup.payload.payload, tag)
        ctx.set(self.dut.lookup.valid, 1)

    async def lookups(self, ctx, keys, rng=None, p_valid=1.0, p_ready=1.0):
        """Run lookups ``keys`` = [(requester, vpn, access)], the payload being the index.

        Valid and result.ready are random with the given probabilities (a stream keeps
        valid and its payload until taken). Returns one (accepted cycle, result cycle,
        result) per result, in the order they came out.
        """
        rng = rng or random.Random(0)
        accepted, results = [], []
        sent, offering = 0, False
        while len(results) < len(keys):
            if not offering and sent < len(keys) and rng.random() < p_valid:
                self._drive_lookup(ctx, *keys[sent], tag=sent)
                offering = True
            ctx.set(self.dut.lookup.valid, offering)
            ready = rng.random() < p_ready
            ctx.set(self.dut.result.ready, ready)
            # Sample both handshakes of this cycle before its clock edge.
            if offering and ctx.get(self.dut.lookup.ready):
                accepted.append(self.cycle)
                sent += 1
                offering = False
            if ctx.get(self.dut.result.valid) and ready:
                res = ctx.get(self.dut.result.payload)
                results.append((accepted[res.payload], self.cycle, res))
            await self.tick(ctx)
            assert self.cycle < 10_000, "lookups never completed"
        ctx.set(self.dut.lookup.valid, 0)
        ctx.set(self.dut.result.ready, 1)
        return results

    async def lookup(self, ctx, requester, vpn, access=Access.READ):
        """One lookup on an idle IOTLB: its result must come exactly
        ``IOTLB.LOOKUP_LATENCY`` cycles later."""
        [(accepted, answered, res)] = await self.lookups(ctx, [(requester, vpn, access)])
        assert answered - accepted == IOTLB.LOOKUP_LATENCY, \
            f"result {answered - accepted} cycles after accept"
        return res


def run_seeded(test):
    """Run ``test(rng, seed)`` with a fresh seed that every failure message shows."""
    seed = random.randrange(1 << 32)
    test(random.Random(seed), seed)


# --------------------------------------------------------------------------- #
# Hits, sizes, permissions
# --------------------------------------------------------------------------- #
def test_pages_of_every_size_hit_with_the_right_ppn():
    def test(rng, seed):
        tb = TB(entries=8)
        host = Requester(device_id=5)
        pages = []
        for i, size_log2 in enumerate(SIZES):
            span = 1 << (size_log2 - 12)
            # Pages sit in odd 2^48-byte regions, so the pages just outside one are empty.
            base_vpn = ((2 * i + 1) << 36) | (rng.randrange(1 << 36) & ~(span - 1))
            base_ppn = rng.randrange(1 << 44) & ~(span - 1)
            walked = rng.randrange(span)
            pages.append(Translation(host, base_vpn + walked, base_ppn + walked,
                                     size_log2=size_log2, r=1, w=0, x=1, u=0, g=i & 1,
                                     pbmt=i % 3))

        async def bench(ctx):
            for t in pages:
                await tb.fill(ctx, t)
            for t in pages:
                base = t.vpn - t.vpn % t.pages
                inside = [base, base + t.pages - 1, base + rng.randrange(t.pages)]
                for vpn in inside:
                    res = await tb.lookup(ctx, host, vpn)
                    what = f"size 2^{t.size_log2} page {vpn:#x} (seed {seed})"
                    assert res.hit, f"{what}: miss"
                    assert res.ppn == t.ppn_of(vpn), f"{what}: ppn {res.ppn:#x}"
                    assert res.size_log2 == t.size_log2, f"{what}: size {res.size_log2}"
                    assert (res.r, res.w, res.x, res.u, res.g, res.pbmt) == (
                        t.r, t.w, t.x, t.u, t.g, t.pbmt), what
                for vpn in (base - 1, base + t.pages):
                    res = await tb.lookup(ctx, host, vpn)
                    assert not res.hit, f"page {vpn:#x} outside {t} hit (seed {seed})"
                    assert res.ppn == 0 and res.size_log2 == 0, "a miss carries zeros"
            # Another requester never sees these pages.
            res = await tb.lookup(ctx, Requester(device_id=6), pages[0].vpn)
            assert not res.hit, "a page cached for device 5 hit for device 6"

        tb.run(bench)

    run_seeded(test)


def test_hits_need_the_cached_entry_to_permit_the_access():
    tb = TB(entries=4)
    user = Requester(device_id=1, pv=1, process_id=7, priv=0)
    supervisor = replace(user, priv=1)
    clean = Translation(user, 0x100, 0x900, r=1, w=1, x=0, d=0)
    code = Translation(user, 0x200, 0xA00, r=1, w=0, x=1, u=1)
    dirty = Translation(user, 0x300, 0xB00, r=1, w=1, x=0, d=1)
    kernel_code = Translation(supervisor, 0x200, 0xC00, r=1, w=0, x=1, u=1)
    expect = [
        (user, clean, Access.READ, True),
        (user, clean, Access.WRITE, False),  # D=0: the walker must set D first
        (user, clean, Access.EXECUTE, False),
        (user, code, Access.EXECUTE, True),
        (user, code, Access.WRITE, False),
        (user, dirty, Access.WRITE, True),
        (supervisor, kernel_code, Access.READ, True),
        (supervisor, kernel_code, Access.EXECUTE, False),  # never from a U page (§5.4)
    ]

    async def bench(ctx):
        for t in (clean, code, dirty, kernel_code):
            await tb.fill(ctx, t)
        for requester, t, access, hit in expect:
            res = await tb.lookup(ctx, requester, t.vpn, access)
            assert res.hit == hit, f"{access.name} of {t}: hit {res.hit}, expected {hit}"
            if hit:
                assert res.ppn == t.ppn
        # Without a process id, process_id and priv are ignored (the request is User).
        host = Requester(device_id=2)
        await tb.fill(ctx, Translation(host, 0x400, 0xD00))
        res = await tb.lookup(ctx, Requester(device_id=2, process_id=0x55, priv=1), 0x400)
        assert res.hit and res.ppn == 0xD00, "pv=0 lookup must ignore process_id and priv"

    tb.run(bench)


# --------------------------------------------------------------------------- #
# Timing and flow control
# --------------------------------------------------------------------------- #
def test_hit_latency_is_fixed_at_one_lookup_per_cycle():
    tb = TB(entries=32)
    host = Requester(device_id=3)
    cached = [Translation(host, 0x1000 + 3 * i, 0x5000 + i) for i in range(8)]
    keys = [(host, 0x1000 + i, Access.READ) for i in range(24)]  # hits and misses mixed

    async def bench(ctx):
        for t in cached:
            await tb.fill(ctx, t)
        # A lookup accepted FILL_LATENCY edges after a fill sees it; one accepted an
        # edge earlier still compares with the entries from before the fill.
        latency = IOTLB.FILL_LATENCY
        await tb.fill(ctx, Translation(host, 0x7777, 0x8888), settle=False)
        await tb.tick(ctx, latency - 2)
        [(early, _, res)] = await tb.lookups(ctx, [(host, 0x7777, Access.READ)])
        assert not res.hit, f"a lookup accepted {latency - 1} edges after a fill hit it"
        await tb.fill(ctx, Translation(host, 0x7778, 0x8889), settle=False)
        await tb.tick(ctx, latency - 1)
        [(_, _, res)] = await tb.lookups(ctx, [(host, 0x7778, Access.READ)])
        assert res.hit and res.ppn == 0x8889, f"a lookup {latency} edges after a fill missed it"

        results = await tb.lookups(ctx, keys)
        assert [r.payload for _, _, r in results] == list(range(len(keys)))
        accepted = [a for a, _, _ in results]
        answered = [b for _, b, _ in results]
        assert accepted == list(range(accepted[0], accepted[0] + len(keys))), \
            "lookups were not accepted back to back"
        lat = IOTLB.LOOKUP_LATENCY
        assert all(b - a == lat for a, b in zip(accepted, answered)), \
            f"latencies {[b - a for a, b in zip(accepted, answered)]}, expected all {lat}"
        for _, _, res in results:
            vpn = keys[res.payload][1]
            want = next((t for t in cached if t.vpn == vpn), None)
            assert res.hit == (want is not None), f"page {vpn:#x}"
            if want:
                assert res.ppn == want.ppn

    tb.run(bench)


@pytest.mark.parametrize("delay", range(IOTLB.WRITE_LATENCY + 2))
def test_a_refill_of_a_cached_page_never_hides_it(delay):
    """A second walk of a cached page (a request that missed while the first fill was on
    its way in) fills it again: every lookup hits, whenever it falls against that
    write. (Before the written entry was forwarded to stage 1, a lookup in the cycle
    of the write lost its hit, and a device asking again at that moment after every
    walk missed every time.)"""
    tb = TB(entries=8)
    host = Requester(device_id=5)
    page = Translation(host, 0x321, 0x654)

    async def bench(ctx):
        await tb.fill(ctx, page)
        await tb.fill(ctx, page, settle=False)  # the same translation again
        await tb.tick(ctx, delay)
        [(_, _, res)] = await tb.lookups(ctx, [(host, page.vpn, Access.READ)])
        assert res.hit and res.ppn == page.ppn, \
            f"a lookup accepted {delay + 1} edges after a refill missed"

    tb.run(bench)


def test_back_pressure_keeps_every_lookup_once_in_order():
    def test(rng, seed):
        tb = TB(entries=16, ways=4)
        host = Requester(device_id=9)
        # Three pages per set (of 4 ways): nothing is evicted.
        vpns = [4 * k + s for s in range(4) for k in rng.sample(range(16), 3)]
        cached = {vpn: Translation(host, vpn, 0x100 + vpn) for vpn in vpns}
        keys = [(host, rng.randrange(64), Access.READ) for _ in range(150)]

        async def bench(ctx):
            for t in cached.values():
                await tb.fill(ctx, t)
            results = await tb.lookups(ctx, keys, rng, p_valid=0.7, p_ready=0.5)
            order = [r.payload for _, _, r in results]
            assert order == list(range(len(keys))), f"results out of order/lost (seed {seed})"
            for _, _, res in results:
                vpn = keys[res.payload][1]
                assert res.hit == (vpn in cached), f"page {vpn:#x} (seed {seed})"
                if vpn in cached:
                    assert res.ppn == cached[vpn].ppn, f"page {vpn:#x} (seed {seed})"

        tb.run(bench)

    run_seeded(test)


# --------------------------------------------------------------------------- #
# Replacement
# --------------------------------------------------------------------------- #
class TreePLRUModel:
    """Reference tree pseudo-LRU for one set: every inner node of a binary tree over the
    ways remembers which half was used last; the victim is found by always walking into
    the other half. Free ways are taken first, lowest first."""

    def __init__(self, ways):
        self.ways = ways
        self.page_in_way = [None] * ways
        self.upper_used_last = {}  # (lo, hi) -> bool

    def _touch(self, way):
        lo, hi = 0, self.ways
        while hi - lo > 1:
            mid = (lo + hi) // 2
            self.upper_used_last[(lo, hi)] = way >= mid
            lo, hi = (mid, hi) if way >= mid else (lo, mid)

    def _victim(self):
        lo, hi = 0, self.ways
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.upper_used_last.get((lo, hi), True) else (mid, hi)
        return lo

    def lookup(self, page) -> bool:
        if page in self.page_in_way:
            self._touch(self.page_in_way.index(page))
            return True
        return False

    def fill(self, page):
        if page in self.page_in_way:
            way = self.page_in_way.index(page)
        elif None in self.page_in_way:
            way = self.page_in_way.index(None)
        else:
            way = self._victim()
        self.page_in_way[way] = page
        self._touch(way)


def test_filling_one_page_too_many_evicts_the_least_recently_used():
    tb = TB(entries=8)
    host = Requester(device_id=4)
    pages = [Translation(host, 0x40 + i, 0x80 + i) for i in range(9)]

    async def bench(ctx):
        for t in pages:
            await tb.fill(ctx, t)
        for t in pages:
            res = await tb.lookup(ctx, host, t.vpn)
            assert res.hit == (t is not pages[0]), f"page {t.vpn:#x}: hit {res.hit}"

    tb.run(bench)


@pytest.mark.parametrize("entries, ways", [(8, 8), (16, 4), (4, 2)])
def test_replacement_follows_tree_plru(entries, ways):
    def test(rng, seed):
        tb = TB(entries, ways)
        sets = entries // ways
        host = Requester(device_id=8)
        model = [TreePLRUModel(ways) for _ in range(sets)]
        universe = range(0x100, 0x100 + 3 * entries)

        async def bench(ctx):
            for step in range(120):
                vpn = rng.choice(universe)
                resident = model[vpn % sets]
                if rng.random() < 0.4:
                    await tb.fill(ctx, Translation(host, vpn, vpn ^ 0xFFF))
                    resident.fill(vpn)
                else:
                    res = await tb.lookup(ctx, host, vpn)
                    expected = resident.lookup(vpn)
                    assert res.hit == expected, (
                        f"step {step}: page {vpn:#x} hit {res.hit}, expected {expected}; "
                        f"set holds {resident.page_in_way} (seed {seed})")

        tb.run(bench)

    run_seeded(test)


def test_set_associative_superpage_lives_in_the_set_that_walked_it():
    tb = TB(entries=16, ways=4)
    host = Requester(device_id=1)
    huge = Translation(host, 0x4_0200 + 2, 0x77_0000 + 2, size_log2=21)  # set 2

    async def bench(ctx):
        await tb.fill(ctx, huge)
        res = await tb.lookup(ctx, host, 0x4_0200 + 6)  # same set: hit
        assert res.hit and res.ppn == 0x77_0006
        res = await tb.lookup(ctx, host, 0x4_0200 + 5)  # set 1: not filled there
        assert not res.hit
        # The same page walked from set 1 is a second, identical copy.
        await tb.fill(ctx, replace(huge, vpn=0x4_0200 + 5, ppn=0x77_0005))
        for vpn in (0x4_0201, 0x4_0202, 0x4_0203, 0x4_03FE):
            res = await tb.lookup(ctx, host, vpn)
            assert res.hit == (vpn % 4 in (1, 2)), f"page {vpn:#x}"
            if res.hit:
                assert res.ppn == 0x77_0000 + vpn - 0x4_0200

    tb.run(bench)


def test_a_fill_replaces_the_entries_it_overlaps():
    tb = TB(entries=4)
    host = Requester(device_id=2)

    async def bench(ctx):
        await tb.fill(ctx, Translation(host, 0x200, 0x1000))
        await tb.fill(ctx, Translation(host, 0x200, 0x2000, w=0))  # same page again
        await tb.fill(ctx, Translation(host, 0x201, 0x3001))
        # A 2 MiB page over both 4 KiB entries: one entry remains, with the new data.
        huge = Translation(host, 0x205, 0x8005, size_log2=21, x=1, pbmt=2)
        await tb.fill(ctx, huge)
        others = [Translation(host, 0x900 + i, 0x9900 + i) for i in range(3)]
        for t in others:  # the three other ways are free again: nothing is evicted
            await tb.fill(ctx, t)
        for vpn in (0x200, 0x201, 0x3FF):
            res = await tb.lookup(ctx, host, vpn)
            assert res.hit and res.ppn == huge.ppn_of(vpn) and res.size_log2 == 21, \
                f"page {vpn:#x}: {res}"
            assert (res.w, res.x, res.pbmt) == (1, 1, 2)
        for t in others:
            res = await tb.lookup(ctx, host, t.vpn)
            assert res.hit and res.ppn == t.ppn, f"{t} was evicted"
        # And a 4 KiB page inside the cached 2 MiB one replaces it.
        await tb.fill(ctx, Translation(host, 0x210, 0x4444, w=0))
        res = await tb.lookup(ctx, host, 0x210)
        assert res.hit and res.ppn == 0x4444 and res.size_log2 == 12 and res.w == 0, f"{res}"
        res = await tb.lookup(ctx, host, 0x211)
        assert not res.hit

    tb.run(bench)


# --------------------------------------------------------------------------- #
# Invalidation
# --------------------------------------------------------------------------- #
# Digest §10.2, IOTINVAL.VMA, one row per (GV, AV, PSCV): which entries of the right
# address space ("host" when GV=0, VM GSCID when GV=1) are invalidated.
#   PSCV=0: any PSCID, global included;  PSCV=1: that PSCID only, global excluded;
#   AV=0: every address;  AV=1: entries for ADDR.
VMA_ROWS = {
    # (gv, av, pscv): (needs_addr, needs_pscid)
    (0, 0, 0): (False, False),  # every host entry, global included
    (0, 0, 1): (False, True),  # host entries of PSCID, global excluded
    (0, 1, 0): (True, False),  # host entries for ADDR, any PSCID, global included
    (0, 1, 1): (True, True),  # host entries for ADDR in PSCID, global excluded
    (1, 0, 0): (False, False),  # every entry of VM GSCID, global included
    (1, 0, 1): (False, True),  # entries of (GSCID, PSCID), global excluded
    (1, 1, 0): (True, False),  # entries for ADDR in GSCID, any PSCID, global included
    (1, 1, 1): (True, True),  # entries for ADDR in (GSCID, PSCID), global excluded
}


def expected_to_survive(t: Translation, cmd: Inval) -> bool:
    """Whether cached translation ``t`` outlives ``cmd``, from the digest's tables (§7.3,
    §10.2) and the IOTLB's tagging by requester (IODIR drops a device's or a process's
    translations). An entry with no first stage has no PSCID, so PSCV=1 spares it."""
    if cmd.kind == InvalKind.IOTINVAL_VMA:
        needs_addr, needs_pscid = VMA_ROWS[(cmd.gv, cmd.av, cmd.pscv)]
        if cmd.gv:
            in_space = t.gscid_valid == 1 and t.gscid == cmd.gscid
        else:
            in_space = t.gscid_valid == 0  # "host": the G-stage is Bare
        if not in_space:
            return True
        if needs_addr and not t.covers(cmd.vpn):
            return True
        if needs_pscid and not (t.pscid_valid and t.pscid == cmd.pscid and not t.g):
            return True
        return False
    if cmd.kind == InvalKind.IOTINVAL_GVMA:
        # All G-stage-derived information of every VM, or of VM GSCID; a combined
        # VA->SPA cache does not know the GPA, so AV=1 drops the whole VM too.
        if not t.gscid_valid:
            return True
        return bool(cmd.gv and t.gscid != cmd.gscid)
    if cmd.kind == InvalKind.IODIR_INVAL_DDT:
        return bool(cmd.dv and t.requester.device_id != cmd.device_id)
    if cmd.kind == InvalKind.IODIR_INVAL_PDT:
        q = t.requester
        return not (q.device_id == cmd.device_id and q.pv and q.process_id == cmd.process_id)
    raise AssertionError(cmd)


def random_population(rng, n, sets=1):
    """``n`` translations whose pages never overlap for one requester: each (requester,
    region) pair is used once, regions being 2^39-byte slices of the address space.
    The walked pages are spread evenly over ``sets`` sets, so that none is evicted."""
    requesters = [Requester(dev, 0, 0, 0) for dev in (1, 2, 3)]
    requesters += [Requester(dev, 1, pid, priv)
                   for dev in (1, 2, 3) for pid in (0, 5) for priv in (0, 1)]
    slots = rng.sample([(q, region) for q in requesters for region in range(3)], n)
    population = []
    for i, (q, region) in enumerate(slots):
        size_log2 = rng.choice(SIZES[:5])
        vpn = (region << 27) | (rng.randrange(1 << 27) & -sets) | (i % sets)
        population.append(Translation(
            q, vpn, rng.randrange(1 << 44),
            size_log2=size_log2, r=1, w=rng.randrange(2), x=rng.randrange(2),
            u=1 - q.priv, g=int(rng.random() < 0.25), d=1,
            gscid_valid=rng.randrange(2), gscid=rng.choice((7, 9)),
            pscid_valid=int(rng.random() < 0.8), pscid=rng.choice((3, 4))))
    return population


def all_commands(rng, population):
    """Every IOTINVAL.VMA row, GVMA (GV and AV 0/1), IODIR.INVAL_DDT (DV 0/1) and _PDT."""
    def addr():
        t = rng.choice(population)  # an address some entries cover, often several
        base = t.vpn - t.vpn % t.pages
        return base + rng.randrange(t.pages) if rng.random() < 0.5 else t.vpn

    cmds = []
    for gv, av, pscv in VMA_ROWS:
        cmds.append(Inval(InvalKind.IOTINVAL_VMA, gv=gv, av=av, pscv=pscv,
                          gscid=rng.choice((7, 9)), pscid=rng.choice((3, 4)), vpn=addr(),
                          device_id=rng.randrange(1 << 24)))  # DID is not an operand
    for gv in (0, 1):
        for av in (0, 1):
            cmds.append(Inval(InvalKind.IOTINVAL_GVMA, gv=gv, av=av,
                              gscid=rng.choice((7, 9)), vpn=addr()))
    for dv in (0, 1):
        cmds.append(Inval(InvalKind.IODIR_INVAL_DDT, dv=dv, device_id=rng.choice((1, 2, 3))))
    # Process 0 of a device is not the device's requests without a process id.
    for pid in (0, 5):
        cmds.append(Inval(InvalKind.IODIR_INVAL_PDT, dv=1, device_id=rng.choice((1, 2, 3)),
                          process_id=pid))
    return cmds


@pytest.mark.parametrize("entries, ways", [(32, 32), (32, 4)])
def test_every_invalidation_scope_removes_exactly_what_it_covers(entries, ways):
    def test(rng, seed):
        tb = TB(entries, ways)

        async def bench(ctx):
            for _ in range(2):
                population = random_population(rng, 24, sets=entries // ways)
                for cmd in all_commands(rng, population):
                    await tb.flush(ctx)
                    for t in population:
                        await tb.fill(ctx, t)
                    await tb.invalidate(ctx, cmd)
                    probes = [(t.requester, t.vpn, Access.READ) for t in population]
                    results = await tb.lookups(ctx, probes)
                    for _, _, res in results:
                        t = population[res.payload]
                        want = expected_to_survive(t, cmd)
                        assert res.hit == want, (
                            f"{cmd} {'spared' if res.hit else 'removed'} {t} (seed {seed})")
                        if res.hit:
                            assert res.ppn == t.ppn_of(t.vpn)

        tb.run(bench)

    run_seeded(test)


def test_a_fill_in_the_cycle_of_an_invalidation_does_not_survive_it():
    tb = TB(entries=4)
    host = Requester(device_id=3)
    walked = Translation(host, 0x123, 0x456)

    async def bench(ctx):
        await tb.fill(ctx, walked, inval=Inval(InvalKind.IODIR_INVAL_DDT, dv=1, device_id=3))
        res = await tb.lookup(ctx, host, walked.vpn)
        assert not res.hit, "a fill accepted with a covering invalidation was cached"
        await tb.fill(ctx, walked)
        res = await tb.lookup(ctx, host, walked.vpn)
        assert res.hit, "the same fill alone must be cached"

    tb.run(bench)


@pytest.mark.parametrize("delay", range(IOTLB.WRITE_LATENCY + 2))
def test_a_fill_on_its_way_in_does_not_survive_an_invalidation(delay):
    """An invalidation accepted ``delay`` cycles after a fill drops it: before the fill
    is written (one that does not cover the fill drops it too: harmless), as it is
    written (the scan finds it), or after."""
    tb = TB(entries=4)
    host = Requester(device_id=3)
    walked = Translation(host, 0x123, 0x456)
    other = Translation(Requester(device_id=4), 0x777, 0x888)

    async def bench(ctx):
        await tb.fill(ctx, other)
        await tb.fill(ctx, walked, settle=False)
        await tb.tick(ctx, delay)
        await tb.invalidate(ctx, Inval(InvalKind.IODIR_INVAL_DDT, dv=1, device_id=3))
        await tb.tick(ctx, IOTLB.FILL_LATENCY)
        res = await tb.lookup(ctx, host, walked.vpn)
        assert not res.hit, f"a fill survived an invalidation {delay} cycles after it"
        res = await tb.lookup(ctx, other.requester, other.vpn)
        assert res.hit, "an entry the invalidation does not cover was lost"

    tb.run(bench)


@pytest.mark.parametrize("entries, ways, vpn", [(4, 4, 0x50), (16, 4, 0x53), (16, 4, 0x50)])
def test_lookups_in_flight_lose_hits_an_invalidation_removes(entries, ways, vpn):
    """Fully associative, and set-associative with the page in the last set scanned and
    in the first."""
    tb = TB(entries, ways)
    host = Requester(device_id=3)
    page = Translation(host, vpn, 0x60)

    async def bench(ctx):
        await tb.fill(ctx, page)
        # Two lookups in the pipe, the result held back by result.ready = 0.
        ctx.set(tb.dut.result.ready, 0)
        for tag in range(2):
            tb._drive_lookup(ctx, host, page.vpn, Access.READ, tag)
            await tb.tick(ctx)
        ctx.set(tb.dut.lookup.valid, 0)
        await tb.tick(ctx, IOTLB.LOOKUP_LATENCY - 2)  # the first result is out
        assert ctx.get(tb.dut.result.valid) and ctx.get(tb.dut.result.payload.hit)
        await tb.invalidate(ctx, Inval(InvalKind.IOTINVAL_VMA))  # every host entry
        ctx.set(tb.dut.result.ready, 1)
        # The invalidation is registered, matched against every entry (registered),
        # then applied: nothing leaves meanwhile (the held hits use an entry it removes).
        for _ in range(tb.dut.inval_cycles):
            assert ctx.get(tb.dut.inval_busy) and not ctx.get(tb.dut.result.valid)
            # One invalidation at a time: the next waits for this one's last drop.
            assert not ctx.get(tb.dut.inval.ready)
            await tb.tick(ctx)
        assert not ctx.get(tb.dut.inval_busy) and ctx.get(tb.dut.inval.ready)
        for tag in range(2):
            assert ctx.get(tb.dut.result.valid)
            res = ctx.get(tb.dut.result.payload)
            assert res.payload == tag and not res.hit, f"lookup {tag} hit after invalidation"
            await tb.tick(ctx)
        # Flush does the same, and empties the IOTLB.
        await tb.fill(ctx, page)
        ctx.set(tb.dut.result.ready, 0)
        tb._drive_lookup(ctx, host, page.vpn, Access.READ, 7)
        await tb.tick(ctx)
        ctx.set(tb.dut.lookup.valid, 0)
        await tb.flush(ctx)  # while the lookup compares in stage 1
        ctx.set(tb.dut.result.ready, 1)
        # The flush drops every entry at the second edge; nothing leaves in between.
        assert ctx.get(tb.dut.inval_busy) and not ctx.get(tb.dut.result.valid)
        await tb.tick(ctx, IOTLB.LOOKUP_LATENCY - 2)
        res = ctx.get(tb.dut.result.payload)
        assert ctx.get(tb.dut.result.valid) and res.payload == 7 and not res.hit
        await tb.tick(ctx)
        res = await tb.lookup(ctx, host, page.vpn)
        assert not res.hit, "flush left an entry"

    tb.run(bench)


# --------------------------------------------------------------------------- #
# Construction
# --------------------------------------------------------------------------- #
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_a_one_size_iotlb_caches_that_size_only():
    """``page_sizes=(12,)`` (the split IOTLB's 4 KiB bank): 4 KiB pages hit with their
    own PPN; a fill of another size is accepted and dropped."""
    def test(rng, seed):
        tb = TB(dut=IOTLB(16, 4, PAYLOAD, page_sizes=(12,)))
        host = Requester(device_id=9)
        small = [Translation(host, rng.randrange(1 << 40), rng.randrange(1 << 40), r=1)
                 for _ in range(4)]
        big = Translation(host, 0x200 << 18, 0x400 << 18, size_log2=21, r=1)

        async def bench(ctx):
            for t in small + [big]:
                await tb.fill(ctx, t)
            for t in small:
                res = await tb.lookup(ctx, host, t.vpn)
                assert res.hit and res.ppn == t.ppn and res.size_log2 == 12, (
                    f"{t}: {res} (seed {seed})")
            res = await tb.lookup(ctx, host, big.vpn)
            assert not res.hit, f"a 2 MiB fill was cached by a 4 KiB IOTLB (seed {seed})"

        tb.run(bench)

    run_seeded(test)


def test_constructor_rejects_bad_geometry():
    with pytest.raises(ValueError, match="entries must be a power of two, not 12"):
        IOTLB(12, 4, PAYLOAD)
    with pytest.raises(ValueError, match="ways must be a power of two, not 3"):
        IOTLB(16, 3, PAYLOAD)
    with pytest.raises(ValueError, match="cannot exceed"):
        IOTLB(4, 8, PAYLOAD)
    with pytest.raises(TypeError, match="payload_shape"):
        IOTLB(4, 4, "tag")
    with pytest.raises(ValueError, match="page_sizes"):
        IOTLB(4, 4, PAYLOAD, page_sizes=(13,))
    gc.collect()  # the half-built components warn when collected: here, where it is ignored


def test_converts_to_verilog():
    text = verilog.convert(IOTLB(32, 32, unsigned(8)), name="iotlb")
    assert "module iotlb" in text
