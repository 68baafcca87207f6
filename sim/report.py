"""Print a scenario's report and save it: ``report.json`` plus one PNG per plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path


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


def save_report(report, outdir: Path, plots: bool = True) -> list[Path]:
    """Write ``outdir/report.json`` and the plots; returns the files written."""
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    if plots and report.plots:
        from .plot import render

        written += [render(p, outdir) for p in report.plots]
    path = outdir / "report.json"
    path.write_text(json.dumps(report.as_dict(), indent=2, default=str))
    return [path, *written]
