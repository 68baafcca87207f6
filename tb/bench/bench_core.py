"""Cycle measurements of the translation core (run by ``make bench`` through sim/bench.py).

Every response is still judged by the scoreboard; the figures are cycles counted
in simulation, written as JSON to ``$BENCH_OUT``:

* hit latency: cycles from a request's handshake to its response, page in the IOTLB;
* hit throughput: back-to-back requests to IOTLB-resident pages, responses per cycle;
* walk cycles for Sv39/Sv48/Sv57 with a fixed memory latency, and per level;
* miss throughput: requests to distinct pages (every one a walk) with a slow memory,
  translations per cycle, for the ``walkers`` this build has.
"""

import json
import os

import cocotb
from cocotb.triggers import RisingEdge

from models import arch
from models.arch import DdtpMode, DeviceContext, Ta, Tc
from models.memory import FrameAllocator, Memory
from models.pagetable import DeviceDirectory, PageTable
from models.transaction import Request
from tb.env import TB, params_from_env

MEM_LATENCY = int(os.environ.get("BENCH_MEM_LATENCY", "10"))
HITS = int(os.environ.get("BENCH_HITS", "2000"))
MISSES = int(os.environ.get("BENCH_MISSES", "256"))
DEVICES = {0x11: arch.SV39, 0x12: arch.SV48, 0x13: arch.SV57}
PAGES = 1024  # 4 KiB pages mapped per device


def extended_dc() -> bool:
    """The DC format of the DUT's capabilities (§2.3: 64-byte DCs with MSI_FLAT)."""
    return bool(arch.Cap.MSI_FLAT.get(params_from_env().capabilities))


def build_system(memory: Memory) -> DeviceDirectory:
    alloc = FrameAllocator(memory, base=0x8000_0000, size=1 << 30)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL1, extended=extended_dc())
    for device_id, scheme in DEVICES.items():
        table = PageTable(memory, alloc, scheme)
        table.map_range(0x4000_0000, 0x2_0000_0000 + device_id * (PAGES << 12), PAGES << 12,
                        r=True, w=True, a=True, d=True)
        ddt.install(device_id, DeviceContext(tc=Tc.V.put(1), ta=Ta.PSCID.put(device_id),
                                             fsc=table.atp()))
    return ddt


class Timing:
    """Send and answer cycles per tag, hooked onto the scoreboard."""

    def __init__(self, tb: TB):
        self.sent, self.answered = [], []
        expect, check = tb.scoreboard.expect, tb.scoreboard.check

        def on_expect(index, request, cycle):
            self.sent.append(cycle)
            expect(index, request, cycle)

        def on_check(response, cycle):
            self.answered.append(cycle)
            return check(response, cycle)

        # The driver holds its callback; the TB looks the scoreboard's check up per response.
        tb.driver.on_sent, tb.scoreboard.check = on_expect, on_check

    def clear(self):
        self.sent.clear()
        self.answered.clear()

    def throughput(self) -> float:
        return len(self.answered) / (max(self.answered) - min(self.sent))


def request(device_id: int, page: int) -> Request:
    return Request(device_id=device_id, iova=0x4000_0000 + (page << 12) + 0x10,
                   access=arch.Access.READ)


async def invalidated(tb: TB, kind: str, **operands) -> None:
    """Send an invalidation and wait until it is applied (the IOTLB visits one set per
    cycle): a request sent meanwhile would wait for it, and the walk figures time walks."""
    await tb.invalidate(kind, **operands)
    while tb.dut.inval_pending.value:
        await RisingEdge(tb.dut.clk)


async def flush_iotlb(tb: TB) -> None:
    # IOTINVAL.VMA GV=0 AV=0 PSCV=0: every host entry (§10.2); contexts stay cached.
    await invalidated(tb, "IOTINVAL_VMA")


@cocotb.test()
async def bench(dut):
    memory = Memory(log=False)
    ddt = build_system(memory)
    tb = TB(dut, memory)
    await tb.reset()
    tb.configure(ddt.ddtp())
    tb.responder.latency = MEM_LATENCY
    timing = Timing(tb)
    out = {"walkers": tb.params.walkers, "iotlb_entries": tb.params.iotlb_entries,
           "mem_latency": MEM_LATENCY}

    # Warm the context caches and the IOTLB with 8 pages of the Sv39 device.
    await tb.translate_all([request(0x11, p) for p in range(8)])
    for device_id in DEVICES:
        await tb.translate(request(device_id, 0))

    # Hit latency and throughput.
    timing.clear()
    await tb.translate(request(0x11, 3))
    out["hit_latency_cycles"] = timing.answered[0] - timing.sent[0]
    timing.clear()
    await tb.translate_all([request(0x11, i % 8) for i in range(HITS)])
    out["hit_throughput_per_cycle"] = round(timing.throughput(), 4)

    # One walk per scheme, contexts cached, IOTLB cold.
    walks = {}
    for device_id, scheme in DEVICES.items():
        await flush_iotlb(tb)
        timing.clear()
        await tb.translate(request(device_id, 100))
        walks[scheme.name] = timing.answered[0] - timing.sent[0]
    out["walk_cycles"] = walks
    out["walk_cycles_per_level"] = walks["Sv48"] - walks["Sv39"]
    out["walk_overhead_per_level"] = out["walk_cycles_per_level"] - MEM_LATENCY

    # Miss throughput: distinct pages, every request walks.
    await flush_iotlb(tb)
    timing.clear()
    await tb.translate_all([request(0x11, 16 + i) for i in range(MISSES)])
    out["miss_throughput_per_cycle"] = round(timing.throughput(), 4)
    out["miss_latency_mean_cycles"] = round(
        sum(a - s for a, s in zip(timing.answered, timing.sent)) / MISSES, 1)

    figures = tb.report()
    out["checked"] = figures["checked"]
    out["mismatches"] = len(tb.scoreboard.mismatches)
    path = os.environ.get("BENCH_OUT")
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
    tb.log.info("bench: %s", out)


@cocotb.test()
async def bench_nested(dut):
    """Nested Sv39 under Sv39x4, contexts cached, IOTLB flushed before each walk: the
    first walk finds the walk cache cold, the second (another page of the same guest
    table pages) warm. Writes ``$BENCH_NESTED_OUT`` (JSON) when set."""
    memory = Memory(log=False)
    alloc = FrameAllocator(memory, base=0x8000_0000, size=1 << 30)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL1, extended=extended_dc())
    gs = PageTable(memory, alloc, arch.SV39X4_SCHEME)
    guest_spa = alloc.alloc(1 << 21, 1 << 21)
    gs.map(0x4000_0000, guest_spa, 1 << 21, r=True, w=True, u=True)  # guest table memory
    guest_alloc = FrameAllocator(memory, base=guest_spa, size=1 << 21)
    fs = PageTable(memory, alloc, arch.SV39, to_phys=lambda gpa: gpa - 0x4000_0000 + guest_spa,
                   alloc_table=lambda size, align: guest_alloc.alloc(size, align)
                   - guest_spa + 0x4000_0000)
    fs.map_range(0x4000_0000, 0x1_0000_0000, PAGES << 12, r=True, w=True, a=True, d=True)
    gs.map_range(0x1_0000_0000, 0x3_0000_0000, PAGES << 12, r=True, w=True, u=True)
    ddt.install(0x21, DeviceContext(tc=Tc.V.put(1), ta=Ta.PSCID.put(0x21), fsc=fs.atp(),
                                    iohgatp=gs.atp() | arch.Iohgatp.GSCID.put(5)))
    tb = TB(dut, memory)
    await tb.reset()
    tb.configure(ddt.ddtp())
    tb.responder.latency = MEM_LATENCY
    timing = Timing(tb)
    await tb.translate(request(0x21, 0))  # the device context, cached from now on
    await tb.invalidate("IOTINVAL_GVMA")  # GV=0: IOTLB and walk caches empty
    cycles = []
    for page in (100, 101):
        await invalidated(tb, "IOTINVAL_VMA", gv=1, gscid=5)  # the IOTLB only
        timing.clear()
        await tb.translate(request(0x21, page))
        cycles.append(timing.answered[0] - timing.sent[0])
    out = {"mem_latency": MEM_LATENCY, "walk_cache_entries": tb.params.walk_cache_entries,
           "nested_sv39_sv39x4_walk_cycles": {"walk_cache_cold": cycles[0],
                                              "walk_cache_warm": cycles[1]},
           "mismatches": len(tb.scoreboard.mismatches)}
    tb.report()
    path = os.environ.get("BENCH_NESTED_OUT")
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
    tb.log.info("bench_nested: %s", out)
