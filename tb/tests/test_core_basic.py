"""Differential tests of ``rtl/core.py`` TranslationCore against ``models/translate.py``.

Every response (and every fault report) is judged by the scoreboard against the
reference model running on its own copy of the same tables; no test here computes
an expected address. Run through pytest (``tests/test_rtl_core.py``) or directly:
``python -m tb.runner tb.tests.test_core_basic [--sim icarus] [--waves] [--seed N]``.

The random-traffic size is ``$IOMMU_TB_TRANSACTIONS`` per test (default 3000).
"""

import os
import random

import cocotb

from models import arch
from models.arch import AddrType, DdtpMode, DeviceContext, Priv, Ta, Tc
from models.memory import FrameAllocator, Memory
from models.pagetable import DeviceDirectory, PageTable
from models.transaction import Request
from tb.env import TB
from tb.traffic import RandomSystem

TRANSACTIONS = int(os.environ.get("IOMMU_TB_TRANSACTIONS", "3000"))


def random_plain_requests(rng: random.Random, count: int) -> list[Request]:
    """Requests from any device, for modes with no tables (Off, Bare)."""
    out = []
    for _ in range(count):
        pv = rng.random() < 0.3
        out.append(Request(device_id=rng.getrandbits(24), iova=rng.getrandbits(64),
                           access=rng.choice(list(arch.Access)),
                           process_id=rng.getrandbits(20) if pv else 0, pv=pv,
                           priv=rng.choice(list(Priv)) if pv else Priv.USER,
                           addr_type=rng.choices(list(AddrType), [70, 20, 10])[0]))
    return out


def ddtp_of(mode: DdtpMode, ppn: int = 0) -> int:
    return arch.Ddtp.IOMMU_MODE.put(mode) | arch.Ddtp.PPN.put(ppn)


@cocotb.test()
async def ddtp_off_blocks_everything(dut):
    """iommu_mode Off: every request faults (cause 256) and is reported."""
    tb = TB(dut)
    await tb.reset()
    tb.configure(ddtp_of(DdtpMode.OFF))
    requests = random_plain_requests(tb.rng, 200)
    results = await tb.translate_all(requests)
    figures = tb.report()
    assert figures["checked"] == len(requests)
    assert all(not r.ok and r.cause == arch.Cause.ALL_INBOUND_DISALLOWED for _, r in results)
    assert figures["fault_reports_matched"] == len(requests)


@cocotb.test()
async def ddtp_bare_passes_untranslated_through(dut):
    """iommu_mode Bare: untranslated requests pass through, translated ones fault (260)."""
    tb = TB(dut)
    await tb.reset()
    tb.configure(ddtp_of(DdtpMode.BARE))
    requests = random_plain_requests(tb.rng, 300)
    results = await tb.translate_all(requests)
    tb.report()
    for request, response in results:
        if request.addr_type == AddrType.UNTRANSLATED:
            assert response.ok, f"{request}: {response}"
        elif request.addr_type == AddrType.TRANSLATED:
            assert response.cause == arch.Cause.TRANSACTION_TYPE_DISALLOWED, response


@cocotb.test()
@cocotb.parametrize(stress=[False, True])
async def one_level_ddt_sv39(dut, stress):
    """A 1LVL DDT with one Sv39 device: 4 KiB, 2 MiB and 1 GiB pages, repeated (IOTLB hits),
    unmapped addresses and a write to a read-only page."""
    memory = Memory()
    alloc = FrameAllocator(memory)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL1, extended=False)
    table = PageTable(memory, alloc, arch.SV39)
    table.map(0x1000, 0x9_0000_3000)
    table.map(0x2000, 0x9_0000_7000, w=False)
    table.map(0x4000_0000 + 0x20_0000, 0xA_0040_0000, 1 << 21, x=True)
    table.map(0x40_0000_0000 - (1 << 30), 0xC_4000_0000, 1 << 30, u=False)
    ddt.install(5, DeviceContext(tc=Tc.V.put(1), ta=Ta.PSCID.put(9), fsc=table.atp()))
    tb = TB(dut, memory)
    tb.stress(stress)
    await tb.reset()
    tb.configure(ddt.ddtp())
    iovas = [0x1008, 0x2010, 0x4000_0000 + 0x20_0000 + 0x1234, 0x4000_0000 + 0x3F_FFF8,
             0x40_0000_0000 - (1 << 30) + 0x1234_5678, 0x3000, 0x4000_0000]
    requests = [Request(device_id=5, iova=iova, access=access)
                for _ in range(4) for iova in iovas
                for access in (arch.Access.READ, arch.Access.WRITE)]
    requests.append(Request(device_id=6, iova=0x1000))  # no such device
    results = await tb.translate_all(requests)
    figures = tb.report()
    assert sum(r.ok for _, r in results) >= len(requests) // 3, "most mapped pages should translate"
    misses = figures["events"].get("ev_iotlb_miss")
    if misses is not None:
        assert misses < figures["events"]["ev_request"], "repeated pages should hit the IOTLB"


# Names are short identifiers so cocotb puts them in the test name (random_traffic/system=lvl1).
SYSTEMS = {
    "lvl1": {"ddt_mode": "1LVL", "schemes": ("Sv39",), "pd_modes": ("PD8",)},
    "lvl2": {"ddt_mode": "2LVL", "schemes": ("Sv48", "Sv39"), "pd_modes": ("PD17",)},
    "lvl3": {"ddt_mode": "3LVL", "schemes": ("Sv57", "Sv48", "Sv39"), "pd_modes": ("PD20", "PD8")},
}


@cocotb.test()
@cocotb.parametrize(system=list(SYSTEMS), stress=[False, True])
async def random_traffic(dut, system, stress):
    """Random tables (DDT, PDTs, Sv39/48/57) and thousands of random requests."""
    tb = TB(dut)
    rng = random.Random(tb.seed)
    world = RandomSystem(tb.memory, rng, devices=10, **SYSTEMS[system])
    tb.log.info("random system: %s; %d requests; seed %s", world.describe(), TRANSACTIONS,
                tb.seed_text)
    tb.stress(stress)
    await tb.reset()
    tb.configure(world.ddtp())
    results = await tb.translate_all(world.requests(TRANSACTIONS))
    figures = tb.report()
    ok = sum(r.ok for _, r in results)
    tb.log.info("%d of %d translated, %d faulted", ok, len(results), len(results) - ok)
    assert figures["checked"] == TRANSACTIONS


@cocotb.test()
@cocotb.parametrize(stress=[False, True])
async def random_traffic_memory_errors(dut, stress):
    """Random traffic while some PTEs, device and process contexts read back as access
    faults or poisoned data (causes 257/265/268/269/274 and the access faults)."""
    tb = TB(dut)
    rng = random.Random(tb.seed)
    world = RandomSystem(tb.memory, rng, devices=10, **SYSTEMS["lvl2"])
    for addr, kind, what in world.inject_memory_errors(8):
        tb.log.info("memory error: %s at %#x (%s)", kind, addr, what)
    tb.stress(stress)
    await tb.reset()
    tb.configure(world.ddtp())
    results = await tb.translate_all(world.requests(TRANSACTIONS // 2))
    figures = tb.report()
    assert figures["memory"]["errors"] > 0, "no request ran into an injected memory error"
    causes = {r.cause for _, r in results if not r.ok}
    tb.log.info("fault causes seen: %s", sorted(causes))


@cocotb.test()
async def invalidation_makes_table_changes_visible(dut):
    """Remap a page, IOTINVAL.VMA it: the next request sees the new mapping (both sides)."""
    memory = Memory()
    alloc = FrameAllocator(memory)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL1, extended=False)
    table = PageTable(memory, alloc, arch.SV39)
    pte = table.map(0x7000, 0x5_0000_1000)
    ddt.install(3, DeviceContext(tc=Tc.V.put(1), ta=Ta.PSCID.put(4), fsc=table.atp()))
    tb = TB(dut, memory)
    await tb.reset()
    tb.configure(ddt.ddtp())
    request = Request(device_id=3, iova=0x7123)
    before = await tb.translate_all([request] * 3)
    old = memory.peek64(pte)
    new = arch.Pte.PPN.set(old, 0x6_0000_2000 >> 12)
    tb.write64(pte, new)
    await tb.invalidate("IOTINVAL_VMA", av=1, pscv=1, pscid=4, vpn=0x7000 >> 12)
    (_, after), = await tb.translate_all([request])
    tb.report()  # the model says where the new mapping goes; here only: it moved
    assert before[-1][1].ok and after.ok and after.spa != before[-1][1].spa, (before, after)


@cocotb.test()
async def waveform_hit_and_miss(dut):
    """A short story for the waveform: a miss (context fetch, 3-level walk), then hits on
    the same page that overtake a second miss. ``python -m tb.runner tb.tests.test_core_basic
    --waves --testcase waveform_hit_and_miss`` then ``make waves``."""
    memory = Memory()
    alloc = FrameAllocator(memory)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL2, extended=False)
    table = PageTable(memory, alloc, arch.SV39)
    table.map(0x4000_0000, 0x9_0000_0000)
    table.map(0x4000_1000, 0x9_0007_0000)
    ddt.install(0x42, DeviceContext(tc=Tc.V.put(1), ta=Ta.PSCID.put(7), fsc=table.atp()))
    tb = TB(dut, memory)
    await tb.reset()
    tb.configure(ddt.ddtp())
    tb.responder.latency = 4
    first = Request(device_id=0x42, iova=0x4000_0010, access=arch.Access.READ)
    await tb.translate_all([first])  # miss: DDT walk, DC, then 3 PTE reads
    second_page = Request(device_id=0x42, iova=0x4000_1020, access=arch.Access.WRITE)
    hits = [Request(device_id=0x42, iova=0x4000_0100 + 8 * i) for i in range(6)]
    results = await tb.translate_all([second_page] + hits)  # hits answer before the miss
    tb.report()
    assert all(r.ok for _, r in results)
