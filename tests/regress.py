"""``make regress``: a long seeded differential run of the RTL against the model.

    python -m tests.regress --transactions 100000 [--seed S] [--jobs 2] [--sim verilator]

Splits the transactions over runs of the random-traffic cocotb tests (1/2/3-level
DDTs with Sv39/48/57 and PD8/17/20, stress off and on, and injected memory errors),
each with its own seed, runs them in parallel and prints one line per run and a
summary. Every run's seed is printed so any failure can be replayed with
``python -m tb.runner tb.tests.test_core_basic --seed S --testcase T``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

# (name, cocotb test cases, transactions each case checks per IOMMU_TB_TRANSACTIONS unit)
CONFIGS = [
    ("lvl1 Sv39 PD8", ["random_traffic/system=lvl1"], 2.0),
    ("lvl2 Sv48/39 PD17", ["random_traffic/system=lvl2"], 2.0),
    ("lvl3 Sv57/48/39 PD20/8", ["random_traffic/system=lvl3"], 2.0),
    ("lvl2 + memory errors", ["random_traffic_memory_errors"], 1.0),  # 2 cases x T/2
]


def one_run(name: str, cases: list[str], per_case: int, seed: int, sim: str) -> dict:
    from tb.runner import SimulationFailed, run

    start = time.monotonic()
    try:
        run("tb.tests.test_core_basic", sim=sim, seed=seed, testcase=cases,
            extra_env={"IOMMU_TB_TRANSACTIONS": str(per_case), "COCOTB_LOG_LEVEL": "WARNING"})
        error = ""
    except SimulationFailed as e:
        error = str(e).splitlines()[0] + " " + " ".join(str(e).splitlines()[1:3])
    return {"name": name, "seed": seed, "error": error, "seconds": time.monotonic() - start}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=None, help="base seed (default random)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--per-run", type=int, default=5000, help="transactions per cocotb case")
    ap.add_argument("--sim", default=os.environ.get("SIM", "verilator"))
    args = ap.parse_args(argv)
    if args.transactions < 1 or args.per_run < 1 or args.jobs < 1:
        raise SystemExit("error: --transactions, --per-run and --jobs must be positive")
    base = args.seed if args.seed is not None else random.randrange(1 << 31)
    rng = random.Random(base)
    print(f"regress: {args.transactions} transactions, base seed {base}, {args.jobs} jobs, "
          f"{args.sim}")

    # Build once before fanning out, so parallel runs share the cached build.
    from rtl.params import DEFAULT
    from tb.runner import build

    build(DEFAULT, args.sim)

    plan, planned = [], 0
    while planned < args.transactions:
        for name, cases, weight in CONFIGS:
            plan.append((name, cases, args.per_run, rng.randrange(1 << 31)))
            planned += int(args.per_run * weight)
            if planned >= args.transactions:
                break
    totals: dict[str, list[int]] = {}
    failures = []
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(one_run, *job, args.sim): job for job in plan}
        for future in as_completed(futures):
            name, cases, per_case, seed = futures[future]
            result = future.result()
            weight = dict((n, w) for n, _, w in CONFIGS)[name]
            count = int(per_case * weight)
            row = totals.setdefault(name, [0, 0, 0])
            row[0] += 1
            row[1] += count
            status = "ok" if not result["error"] else "FAIL"
            if result["error"]:
                row[2] += 1
                failures.append(result)
            print(f"  {status:<4} {name:<24} seed {seed:<11} {count:>7} transactions "
                  f"{result['seconds']:6.1f} s {result['error'][:200]}", flush=True)
    print("summary")
    print(f"  {'configuration':<24} {'runs':>5} {'transactions':>13} {'failed runs':>12}")
    for name, (runs, count, failed) in totals.items():
        print(f"  {name:<24} {runs:>5} {count:>13} {failed:>12}")
    total = sum(v[1] for v in totals.values())
    print(f"  {'total':<24} {sum(v[0] for v in totals.values()):>5} {total:>13} "
          f"{len(failures):>12}")
    print("mismatches: 0" if not failures else f"FAILED runs: {len(failures)} "
          f"(seeds {', '.join(str(f['seed']) for f in failures)})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
