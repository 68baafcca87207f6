"""Split IOTLB (rtl/split_iotlb.py) in the Amaranth simulator: 4 KiB pages in the
set-associative IOTLB, larger pages in the fully associative one, every lookup answered
by both in step (fixed latency, one per cycle, under random back-pressure), every
invalidation scope applied to both, and the superpage hit preferred."""


from amaranth.back import verilog
from amaranth.hdl import unsigned
from test_rtl_iotlb import (PAYLOAD, SIZES, TB, Inval, Requester, Translation, all_commands,
                            expected_to_survive, run_seeded)

from rtl.layouts import Access, InvalKind
from rtl.split_iotlb import SplitIOTLB

PAGE_ENTRIES, PAGE_WAYS, SUPERPAGES = 32, 4, 8
SETS = PAGE_ENTRIES // PAGE_WAYS


def split_tb():
    return TB(dut=SplitIOTLB(PAGE_ENTRIES, PAGE_WAYS, SUPERPAGES, PAYLOAD))


def test_a_superpage_is_one_entry_for_every_set():
    """A 2 MiB page, filled once, hits for 4 KiB pages of every set; 4 KiB pages around
    it use the set-associative IOTLB without evicting it."""
    tb = split_tb()
    host = Requester(device_id=5)
    huge = Translation(host, 0x4_0203, 0x77_0203, size_log2=21)
    pages = [Translation(host, 0x9_0000 + i, 0x5_0000 + i) for i in range(PAGE_ENTRIES)]

    async def bench(ctx):
        await tb.fill(ctx, huge)
        for t in pages:  # every way of every set
            await tb.fill(ctx, t)
        for vpn in range(0x4_0200, 0x4_0200 + 4 * SETS):
            res = await tb.lookup(ctx, host, vpn)
            assert res.hit and res.size_log2 == 21 and res.ppn == huge.ppn_of(vpn), \
                f"page {vpn:#x} of the 2 MiB page: {res}"
        for t in pages:
            res = await tb.lookup(ctx, host, t.vpn)
            assert res.hit and res.size_log2 == 12 and res.ppn == t.ppn, f"{t}: {res}"
        # One 4 KiB page more in a full set evicts a 4 KiB page, never the superpage.
        await tb.fill(ctx, Translation(host, 0x9_0000 + PAGE_ENTRIES, 0x6_0000))
        evicted = [t.vpn for t in pages if not (await tb.lookup(ctx, host, t.vpn)).hit]
        assert len(evicted) == 1 and evicted[0] % SETS == 0, \
            f"evicted {[hex(v) for v in evicted]}: expected one page of set 0"
        assert (await tb.lookup(ctx, host, huge.vpn)).hit

    tb.run(bench)


def test_the_superpage_hit_is_preferred():
    """A 4 KiB page cached under a superpage that is then filled too (tables changed
    without an invalidation: either translation is legal, §10.3) answers from the
    superpage; without it, from the 4 KiB entry. A superpage that does not permit the
    access leaves the 4 KiB entry's hit."""
    tb = split_tb()
    host = Requester(device_id=6)
    small = Translation(host, 0x205, 0x1234)
    huge = Translation(host, 0x205, 0x8005, size_log2=21, w=0)

    async def bench(ctx):
        await tb.fill(ctx, small)
        res = await tb.lookup(ctx, host, small.vpn)
        assert res.hit and res.ppn == small.ppn and res.size_log2 == 12
        await tb.fill(ctx, huge)
        res = await tb.lookup(ctx, host, small.vpn)
        assert res.hit and res.ppn == huge.ppn_of(small.vpn) and res.size_log2 == 21, f"{res}"
        res = await tb.lookup(ctx, host, small.vpn, Access.WRITE)
        assert res.hit and res.ppn == small.ppn and res.w == 1, f"{res}"

    tb.run(bench)


def test_lookups_stay_in_step_under_back_pressure():
    """Random valid and ready: every lookup answered once, in order, with the hit and
    translation of whichever IOTLB holds its page."""
    def test(rng, seed):
        tb = split_tb()
        host = Requester(device_id=7)
        cached = [Translation(host, 0x100 + i, 0x7100 + i) for i in range(PAGE_ENTRIES)]
        cached += [Translation(host, (i + 1) << 18, (0x40 + i) << 18, size_log2=30)
                   for i in range(SUPERPAGES)]

        async def bench(ctx):
            for t in cached:
                await tb.fill(ctx, t)
            keys, want = [], []
            for _ in range(300):
                t = rng.choice(cached)
                if rng.random() < 0.2:  # a page nobody cached
                    keys.append((host, 0x8000 + rng.randrange(64), Access.READ))
                    want.append(None)
                else:
                    vpn = t.vpn - t.vpn % t.pages + rng.randrange(t.pages)
                    keys.append((host, vpn, Access.READ))
                    want.append(t)
            results = await tb.lookups(ctx, keys, rng, p_valid=0.7, p_ready=0.6)
            assert [res.payload for _, _, res in results] == list(range(len(keys))), \
                f"results out of order (seed {seed})"
            for _, _, res in results:
                t, vpn = want[res.payload], keys[res.payload][1]
                if t is None:
                    assert not res.hit, f"lookup {res.payload} hit nothing cached (seed {seed})"
                else:
                    assert res.hit and res.ppn == t.ppn_of(vpn), \
                        f"lookup {res.payload} of {vpn:#x}: {res} (seed {seed})"

        tb.run(bench)

    run_seeded(test)


def test_every_invalidation_scope_reaches_both():
    def test(rng, seed):
        tb = split_tb()
        requesters = [Requester(dev, 0, 0, 0) for dev in (1, 2)]
        requesters += [Requester(dev, 1, pid, 0) for dev in (1, 2) for pid in (0, 5)]

        def population():
            out = []
            for i in range(PAGE_ENTRIES // 2 + SUPERPAGES):
                size_log2 = 12 if i < PAGE_ENTRIES // 2 else rng.choice(SIZES[1:5])
                vpn = (i << 27) | (rng.randrange(1 << 27) & -SETS) | (i % SETS)
                out.append(Translation(
                    rng.choice(requesters), vpn, rng.randrange(1 << 44), size_log2=size_log2,
                    g=int(rng.random() < 0.25), gscid_valid=rng.randrange(2),
                    gscid=rng.choice((7, 9)), pscid_valid=int(rng.random() < 0.8),
                    pscid=rng.choice((3, 4))))
            return out

        async def bench(ctx):
            pop = population()
            for cmd in all_commands(rng, pop):
                await tb.flush(ctx)
                for t in pop:
                    await tb.fill(ctx, t)
                await tb.invalidate(ctx, cmd)
                results = await tb.lookups(ctx, [(t.requester, t.vpn, Access.READ) for t in pop])
                for _, _, res in results:
                    t = pop[res.payload]
                    assert res.hit == expected_to_survive(t, cmd), (
                        f"{cmd} {'spared' if res.hit else 'removed'} {t} (seed {seed})")

        tb.run(bench)

    run_seeded(test)


def test_inval_busy_covers_the_longer_scan():
    dut = SplitIOTLB(PAGE_ENTRIES, PAGE_WAYS, SUPERPAGES, PAYLOAD)
    assert dut.inval_cycles == PAGE_ENTRIES // PAGE_WAYS + 4
    tb = TB(dut=dut)

    async def bench(ctx):
        await tb.invalidate(ctx, Inval(InvalKind.IODIR_INVAL_DDT))
        for _ in range(dut.inval_cycles):
            assert ctx.get(dut.inval_busy) and not ctx.get(dut.inval.ready)
            await tb.tick(ctx)
        assert not ctx.get(dut.inval_busy) and ctx.get(dut.inval.ready)

    tb.run(bench)


def test_converts_to_verilog():
    text = verilog.convert(SplitIOTLB(32, 4, 8, unsigned(8)), name="split_iotlb")
    assert "module split_iotlb" in text
