"""``make bench``: how fast the model runs and how many cycles the RTL takes.

Writes ``build/bench/bench.json`` and prints a table:

* model: translations per second of the reference IOMMU on IOTLB hits and on walks
  (wall clock of this machine, a benchmark, never a test);
* RTL (cycles from simulation, default simulator): hit latency, hit throughput,
  walk cycles for Sv39/48/57 and per level at a fixed memory latency, and miss
  throughput with 1 walker against the default 4.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from models import arch
from models.arch import DdtpMode, DeviceContext, Reg, Ta, Tc
from models.iommu import IOMMU
from models.memory import FrameAllocator, Memory
from models.pagetable import DeviceDirectory, PageTable
from models.transaction import Request
from rtl.params import DEFAULT

OUT = Path("build/bench")


def model_bench(seconds: float = 1.0) -> dict:
    """Reference-model translations/s on hits (8 hot pages) and walks (cold IOTLB)."""
    memory = Memory(log=False)
    alloc = FrameAllocator(memory, base=0x8000_0000, size=1 << 30)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL2, extended=True)
    table = PageTable(memory, alloc, arch.SV39)
    table.map_range(0x1000_0000, 0x2_0000_0000, 4096 << 12)
    ddt.install(7, DeviceContext(tc=Tc.V.put(1), ta=Ta.PSCID.put(1), fsc=table.atp()))
    iommu = IOMMU(memory, iotlb_entries=64)
    iommu.write_register(Reg.DDTP, 8, ddt.ddtp())

    def rate(make, fresh_iotlb: bool) -> float:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for i in range(200):
                if fresh_iotlb:
                    iommu.engine.iotinval_vma(False, False, False, 0, 0, 0)
                iommu.translate(make(n + i))
            n += 200
        return n / (time.perf_counter() - start)

    hit = rate(lambda i: Request(7, 0x1000_0000 + ((i % 8) << 12)), False)
    walk = rate(lambda i: Request(7, 0x1000_0000 + ((i % 4096) << 12)), True)
    return {"model_hit_translations_per_s": round(hit), "model_walk_translations_per_s": round(walk)}


def rtl_bench(walkers: int, sim: str) -> dict:
    from tb.runner import run

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"rtl_walkers{walkers}.json"
    path.unlink(missing_ok=True)
    run("tb.bench.bench_core", params=replace(DEFAULT, walkers=walkers), sim=sim,
        extra_env={"BENCH_OUT": str(path.resolve()), "COCOTB_LOG_LEVEL": "WARNING"})
    return json.loads(path.read_text())


def nested_bench(walk_cache_entries: int, sim: str) -> dict:
    """A nested walk (Sv39 under Sv39x4) cold and repeated, with the G-stage walk cache
    of ``walk_cache_entries`` per walker (0: off)."""
    from tb.runner import run

    path = OUT / f"nested_wc{walk_cache_entries}.json"
    path.unlink(missing_ok=True)
    run("tb.bench.bench_core", params=replace(DEFAULT, walk_cache_entries=walk_cache_entries),
        sim=sim, testcase="bench_nested",
        extra_env={"BENCH_NESTED_OUT": str(path.resolve()), "COCOTB_LOG_LEVEL": "WARNING"})
    return json.loads(path.read_text())["nested_sv39_sv39x4_walk_cycles"]


def control_bench(sim: str) -> dict:
    """Cycles per command and strict vs deferred unmap, on the whole IOMMU (rtl/iommu.py),
    the OS driver model programming it through the registers."""
    from tb.runner import run

    path = OUT / "control.json"
    path.unlink(missing_ok=True)
    run("tb.tests.test_control", sim=sim, testcase="command_costs", design="rtl.iommu:Iommu",
        extra_env={"BENCH_OUT": str(path.resolve()), "COCOTB_LOG_LEVEL": "WARNING"})
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", default=os.environ.get("SIM", "verilator"))
    ap.add_argument("--no-rtl", action="store_true", help="model figures only")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"model": model_bench()}
    if not args.no_rtl:
        results["rtl"] = {w: rtl_bench(w, args.sim) for w in (1, DEFAULT.walkers)}
        results["control"] = control_bench(args.sim)
        results["nested"] = {n: nested_bench(n, args.sim) for n in (0, DEFAULT.walk_cache_entries)}
    (OUT / "bench.json").write_text(json.dumps(results, indent=2) + "\n")

    m = results["model"]
    print("reference model (this machine's wall clock)")
    print(f"  IOTLB hits   {m['model_hit_translations_per_s']:>10,} translations/s")
    print(f"  walks        {m['model_walk_translations_per_s']:>10,} translations/s")
    if "rtl" in results:
        one, many = results["rtl"][1], results["rtl"][DEFAULT.walkers]
        print(f"RTL translation core ({args.sim}, memory latency {many['mem_latency']} cycles)")
        print(f"  hit latency                 {many['hit_latency_cycles']} cycles")
        print(f"  hit throughput              {many['hit_throughput_per_cycle']} translations/cycle")
        w = many["walk_cycles"]
        print(f"  walk (request to response)  Sv39 {w['Sv39']}, Sv48 {w['Sv48']}, "
              f"Sv57 {w['Sv57']} cycles")
        print(f"  per level                   {many['walk_cycles_per_level']} cycles "
              f"= memory latency + {many['walk_overhead_per_level']}")
        print(f"  miss throughput, 1 walker   {one['miss_throughput_per_cycle']} translations/cycle")
        print(f"  miss throughput, {DEFAULT.walkers} walkers  "
              f"{many['miss_throughput_per_cycle']} translations/cycle "
              f"({many['miss_throughput_per_cycle'] / one['miss_throughput_per_cycle']:.2f}x)")
        print(f"  responses checked against the model: "
              f"{one['checked'] + many['checked']}, mismatches "
              f"{one['mismatches'] + many['mismatches']}")
    if "nested" in results:
        print("RTL nested walk, Sv39 first stage under Sv39x4 (cold / repeated)")
        for n, cycles in results["nested"].items():
            print(f"  walk cache {'off' if n == 0 else f'{n} entries':<12}"
                  f"{cycles['walk_cache_cold']} / {cycles['walk_cache_warm']} cycles")
    if "control" in results:
        c = results["control"]
        print("RTL command queue (whole IOMMU, memory latency 10 cycles; the driver polls cqh)")
        for key, value in c.items():
            if key != "fences":
                print(f"  {key:<34}{value}")
    print(f"written: {OUT / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
