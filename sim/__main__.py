"""Command line: ``python -m sim list`` / ``python -m sim run NAME [options]``.

Errors (a wrong scenario name, a bad parameter) are one line with the valid
choices, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .scenarios import REGISTRY, load_all


def _parse_params(sc, items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in sc.params:
            valid = ", ".join(f"{k}=<{t.__name__}>" for k, (t, _, _) in sc.params.items())
            raise SystemExit(f"error: scenario '{sc.name}' takes {valid or 'no parameters'}; "
                             f"got {item!r}")
        kind = sc.params[key][0]
        try:
            out[key] = kind(value) if kind is not int else int(value, 0)
        except ValueError:
            raise SystemExit(f"error: {key} must be {kind.__name__}, not {value!r}") from None
    return out


def print_report(report, out=None) -> None:
    out = out or sys.stdout
    print(f"== scenario {report.name} ==", file=out)
    width = max((len(k) for k in report.figures), default=0)
    for k, v in report.figures.items():
        print(f"  {k:<{width}}  {v}", file=out)
    for line in report.details:
        print(f"  {line}", file=out)
    for k, ok in report.checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {k}", file=out)


def main(argv: list[str] | None = None) -> int:
    load_all()
    ap = argparse.ArgumentParser(prog="python -m sim", description="IOMMU scenarios")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list scenarios and their parameters")
    run = sub.add_parser("run", help="run a scenario and print its report")
    run.add_argument("scenario")
    run.add_argument("--backend", default="model", choices=["model", "rtl"])
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--out", type=Path, default=Path("build/sim"))
    args = ap.parse_args(argv)

    if args.cmd == "list":
        for sc in REGISTRY.values():
            print(f"{sc.name:<12} {sc.summary}")
            for k, (t, d, h) in sc.params.items():
                print(f"{'':<14}{k}={d!r} ({t.__name__}): {h}")
        return 0

    sc = REGISTRY.get(args.scenario)
    if sc is None:
        raise SystemExit(f"error: no scenario {args.scenario!r}; choose one of "
                         f"{', '.join(REGISTRY)}")
    if args.backend not in sc.backends:
        raise SystemExit(f"error: scenario '{sc.name}' runs on {', '.join(sc.backends)}, "
                         f"not {args.backend!r}")
    params = _parse_params(sc, args.param)
    try:
        report = sc.func(args.backend, args.seed, **params)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print_report(report)
    outdir = args.out / sc.name
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "report.json").write_text(json.dumps(report.as_dict(), indent=2, default=str))
    print(f"  report: {outdir / 'report.json'}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
