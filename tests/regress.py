"""``make regress``: a long seeded differential run of the RTL against the model.

    python -m tests.regress --transactions 100000 [--minutes M] [--seed S] [--jobs 2]

Runs the core's random cocotb tests over many seeds and configurations: 1/2/3-level
DDTs (Sv39/48/57, PD8/17/20, with nested guests), the small/default/large presets, slow
memory, injected memory errors and invalidation-heavy traffic, each case with and
without stress (back-pressure, memory latency and reordering); and, on the whole IOMMU
programmed by the OS driver model, the map/unmap race (stale translations after
IOFENCE.C count as violations), the register/command fuzzer in lockstep with the
model, and the 4-VM / 8-VF isolation campaign (``tb/isolation.py``). Runs go in parallel (a process pool of
``--jobs``); each run has its own seed, printed with the command that replays it. Every
transaction is judged by the scoreboard and the invariant checkers
(``tb/invariants.py``); the summary table gives, per configuration: runs, transactions
checked, mismatches, invariant violations, worst latency against the no-hang bound, and
the seeds. ``--slice`` is the short version ``make test`` runs (default build only).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

MODULE = "tb.tests.test_core_basic"


@dataclass(frozen=True)
class Config:
    """One regression configuration: cocotb cases, a preset, extra environment.

    ``per_unit``: transactions the cases check per unit of ``IOMMU_TB_TRANSACTIONS``
    (a random_traffic system is 2 cases, stress off and on)."""

    name: str
    cases: tuple[str, ...]
    preset: str = "default"
    env: tuple[tuple[str, str], ...] = ()
    per_unit: float = 2.0
    in_slice: bool = True
    module: str = MODULE
    design: str = "core"
    count_env: str = "IOMMU_TB_TRANSACTIONS"  # receives the run's size


CONFIGS = [
    Config("lvl1 Sv39 PD8", ("random_traffic/system=lvl1",)),
    Config("lvl2 Sv48/39 PD17", ("random_traffic/system=lvl2",)),
    Config("lvl3 Sv57/48/39 PD20/8", ("random_traffic/system=lvl3",)),
    Config("memory errors", ("random_traffic_memory_errors",), per_unit=1.0),
    Config("invalidation-heavy", ("invalidation_under_traffic",), per_unit=1.7),
    Config("slow memory 20-60", ("random_traffic/system=lvl2",),
           env=(("IOMMU_TB_MEM_LATENCY", "20,60"),), in_slice=False),
    Config("small preset lvl2", ("random_traffic/system=lvl2",), preset="small",
           in_slice=False),
    Config("large preset lvl3", ("random_traffic/system=lvl3",), preset="large",
           in_slice=False),
    # The whole IOMMU (rtl/iommu.py) programmed by the OS driver model.
    Config("IOMMU map/unmap race", ("map_unmap_race",), module="tb.tests.test_control",
           design="rtl.iommu:Iommu", count_env="RACE_OPERATIONS", per_unit=15.0,
           in_slice=False),
    Config("IOMMU control fuzz", ("fuzz_registers_commands_traffic",),
           module="tb.tests.test_control", design="rtl.iommu:Iommu",
           count_env="FUZZ_OPERATIONS", per_unit=1.0, in_slice=False),
    # A hypervisor with 4 VMs and 8 SR-IOV VFs under random and rogue traffic, the whole
    # IOMMU in lockstep with the model (tb/isolation.py); the size is each VF's
    # legitimate accesses (8 VFs, plus strays and the rogue catalogue).
    Config("IOMMU isolation 4 VMs / 8 VFs", ("vms_and_vfs_stay_isolated",),
           module="tb.tests.isolation_rtl", design="rtl.iommu:Iommu",
           count_env="ISOLATION_LEGIT", per_unit=8.0, in_slice=False),
]


@dataclass
class Row:
    """Totals of one configuration."""

    name: str
    runs: int = 0
    failed: int = 0
    transactions: int = 0
    mismatches: int = 0
    violations: int = 0
    worst_latency: int = 0
    bound_at_worst: int = 0
    seeds: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def one_run(config: Config, per_case: int, seed: int, sim: str) -> dict:
    """Run ``config``'s cases once; return the figures each test exported."""
    from rtl.generate import PRESETS
    from tb.env import FIGURES_ENV
    from tb.runner import SimulationFailed, run

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="regress-") as tmp:
        figures_path = Path(tmp) / "figures.jsonl"
        env = {config.count_env: str(per_case), "COCOTB_LOG_LEVEL": "WARNING",
               FIGURES_ENV: str(figures_path), **dict(config.env)}
        try:
            run(config.module, PRESETS[config.preset], sim=sim, seed=seed,
                testcase=list(config.cases), extra_env=env, design=config.design)
            error = ""
        except SimulationFailed as e:
            error = " ".join(str(e).splitlines()[:3])
        tests = ([json.loads(line) for line in figures_path.read_text().splitlines()]
                 if figures_path.exists() else [])
    return {"seed": seed, "error": error, "tests": tests, "seconds": time.monotonic() - start}


def replay(config: Config, seed: int, per_case: int) -> str:
    env = " ".join(f"{k}={v}" for k, v in (((config.count_env, per_case),) + config.env))
    cases = " ".join(f"--testcase '{c}'" for c in config.cases)
    return (f"{env} python -m tb.runner {config.module} --seed {seed} {cases}"
            + (f" --preset {config.preset}" if config.preset != "default" else "")
            + (f" --design {config.design}" if config.design != "core" else ""))


def add_result(row: Row, config: Config, result: dict, per_case: int) -> str:
    """Fold one run into its configuration's row; return its line for the log."""
    row.runs += 1
    row.seeds.append(result["seed"])
    checked = violations = mismatches = 0
    for test in result["tests"]:
        checked += test["checked"]
        mismatches += test["mismatches"]
        invariants = test.get("invariants") or {}
        violations += invariants.get("violations", 0)
        latency = invariants.get("latency", {})
        if latency.get("worst", 0) > row.worst_latency:
            row.worst_latency, row.bound_at_worst = latency["worst"], latency["bound_at_worst"]
    row.transactions += checked
    row.mismatches += mismatches
    row.violations += violations
    failed = bool(result["error"]) or mismatches or violations or not result["tests"]
    if failed:
        row.failed += 1
        row.failures.append(f"seed {result['seed']}: {result['error'][:300]}\n      replay: "
                            f"{replay(config, result['seed'], per_case)}")
    return (f"  {'FAIL' if failed else 'ok':<4} {config.name:<24} seed {result['seed']:<11} "
            f"{checked:>7} transactions {result['seconds']:6.1f} s"
            + (f"  {result['error'][:200]}" if result["error"] else ""))


def regress(*, transactions: int = 100_000, minutes: float | None = None,
            seed: int | None = None, jobs: int = 2, per_run: int = 2000,
            sim: str = "verilator", slice_only: bool = False, quiet: bool = False) -> list[dict]:
    """Run the regression; return one row (dict) per configuration."""
    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    configs = [c for c in CONFIGS if c.in_slice or not slice_only]
    base = seed if seed is not None else random.randrange(1 << 31)
    rng = random.Random(base)
    budget = f"{minutes} minutes" if minutes else f"{transactions} transactions"
    say(f"regress: {budget}, base seed {base}, {jobs} jobs, {sim}, "
        f"{len(configs)} configurations")

    # Build each preset once before fanning out, so parallel runs share the build.
    from rtl.generate import PRESETS
    from tb.runner import build

    for preset, design in sorted({(c.preset, c.design) for c in configs}):
        _, seconds = build(PRESETS[preset], sim, design=design)
        if seconds:
            say(f"  built {design} ({preset} preset) for {sim} in {seconds:.0f} s")

    rows = {c.name: Row(c.name) for c in configs}
    deadline = time.monotonic() + minutes * 60 if minutes else None
    planned = 0
    turn = 0

    def more() -> bool:
        if deadline is not None:
            return time.monotonic() < deadline
        return planned < transactions or turn < len(configs)  # every configuration once

    with ProcessPoolExecutor(jobs) as pool:
        running = {}
        while True:
            while more() and len(running) < jobs:
                config = configs[turn % len(configs)]
                turn += 1
                planned += int(per_run * config.per_unit)
                job = (config, per_run, rng.randrange(1 << 31))
                running[pool.submit(one_run, *job, sim)] = job
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                config, per_case, _ = running.pop(future)
                say(add_result(rows[config.name], config, future.result(), per_case))

    table = [row.as_dict() for row in rows.values() if row.runs]
    say(summary_table(table))
    failures = [f for row in rows.values() for f in row.failures]
    say("all runs passed: 0 mismatches, 0 invariant violations" if not failures
        else f"FAILED runs: {len(failures)}\n    " + "\n    ".join(failures))
    return table


def summary_table(rows: list[dict]) -> str:
    head = (f"  {'configuration':<24} {'runs':>4} {'failed':>6} {'transactions':>12} "
            f"{'mismatch':>8} {'violations':>10} {'worst/bound (cycles)':>20}  seeds")
    lines = ["summary", head, "  " + "-" * (len(head) - 2)]
    for r in rows:
        seeds = ", ".join(map(str, r["seeds"][:3])) + (" ..." if len(r["seeds"]) > 3 else "")
        worst = f"{r['worst_latency']}/{r['bound_at_worst']}"
        lines.append(f"  {r['name']:<24} {r['runs']:>4} {r['failed']:>6} "
                     f"{r['transactions']:>12} {r['mismatches']:>8} {r['violations']:>10} "
                     f"{worst:>20}  {seeds}")
    total = {k: sum(r[k] for r in rows) for k in ("runs", "failed", "transactions",
                                                  "mismatches", "violations")}
    lines.append(f"  {'total':<24} {total['runs']:>4} {total['failed']:>6} "
                 f"{total['transactions']:>12} {total['mismatches']:>8} {total['violations']:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=100_000,
                    help="stop planning runs after this many transactions")
    ap.add_argument("--minutes", type=float, default=None,
                    help="instead: keep starting runs for this long")
    ap.add_argument("--seed", type=int, default=None, help="base seed (default random)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--per-run", type=int, default=2000,
                    help="IOMMU_TB_TRANSACTIONS of each run (per cocotb case)")
    ap.add_argument("--sim", default=os.environ.get("SIM", "verilator"))
    ap.add_argument("--slice", action="store_true",
                    help="only the configurations of the default build (what make test runs)")
    args = ap.parse_args(argv)
    if args.transactions < 1 or args.per_run < 1 or args.jobs < 1 or (
            args.minutes is not None and args.minutes <= 0):
        raise SystemExit("error: --transactions, --per-run, --jobs and --minutes must be "
                         "positive")
    rows = regress(transactions=args.transactions, minutes=args.minutes, seed=args.seed,
                   jobs=args.jobs, per_run=args.per_run, sim=args.sim, slice_only=args.slice)
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
