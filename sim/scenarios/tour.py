"""Tour: every scenario in its short configuration, summed up in one table."""

from __future__ import annotations

import time

from sim.progress import task

from . import REGISTRY, Report, scenario


def _key_figures(report: Report, limit: int = 3) -> str:
    keys = report.key or [k for k in report.figures if k != "backend"][:limit]
    return "; ".join(f"{k}: {report.figures[k]}" for k in keys if k in report.figures)


@scenario("tour", "every scenario in a short configuration, one summary table",
          backends=("model", "rtl"))
def run(backend: str, seed: int) -> Report:
    names = [n for n in REGISTRY if n != "tour"]
    rows = []
    with task("tour", len(names)) as bar:
        for name in names:
            sc = REGISTRY[name]
            start = time.monotonic()
            if backend not in sc.backends:
                rows.append((name, f"(runs on {', '.join(sc.backends)} only)", None, 0.0))
            else:
                try:
                    report = sc.func(backend, seed, **sc.quick)
                    rows.append((name, _key_figures(report), report.passed,
                                 time.monotonic() - start))
                # One broken scenario must not hide the others: report it in its row.
                except Exception as e:  # noqa: BLE001
                    rows.append((name, f"error: {type(e).__name__}: {e}", False,
                                 time.monotonic() - start))
            bar.advance()

    ran = [r for r in rows if r[2] is not None]
    report = Report("tour")
    report.figures.update({
        "backend": backend,
        "scenarios passed": f"{sum(bool(r[2]) for r in ran)}/{len(ran)}",
    })
    width = max(len(r[0]) for r in rows)
    report.details.append(f"{'scenario':<{width}}  {'result':<6} {'time':>6}  key figures")
    for name, figures, passed, seconds in rows:
        result = "skip" if passed is None else "pass" if passed else "FAIL"
        report.details.append(f"{name:<{width}}  {result:<6} {seconds:>5.1f}s  {figures}")
    report.checks["at least one scenario ran"] = bool(ran)
    report.checks.update({f"{name} passes": bool(passed) for name, _, passed, _ in ran})
    report.data["rows"] = [{"scenario": n, "key_figures": f, "passed": p,
                            "seconds": round(s, 2)}
                           for n, f, p, s in rows]
    return report
