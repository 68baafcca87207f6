"""Command line: ``python -m sim list`` / ``python -m sim run NAME [options]``.

Errors (a wrong scenario name, a bad parameter, an unavailable backend) are one line
on stderr with the valid choices and exit status 2, never a traceback. A progress bar
is drawn on stderr when stderr is a terminal, or always with ``--progress``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import progress
from .report import print_report, save_report
from .scenarios import BACKENDS, REGISTRY, BackendError, load_all


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage block would be several lines
        raise UsageError(f"{message} (see 'python -m sim --help')")


def _param_choices(sc) -> str:
    return ", ".join(f"{k}=<{t.__name__}>" for k, (t, _, _) in sc.params.items())


def parse_params(sc, items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in sc.params:
            raise UsageError(f"scenario '{sc.name}' takes {_param_choices(sc) or 'no parameters'}; "
                             f"got {item!r}")
        kind = sc.params[key][0]
        try:
            out[key] = int(value, 0) if kind is int else kind(value)
        except ValueError:
            raise UsageError(f"{key} must be {kind.__name__}, not {value!r}") from None
    return out


def list_scenarios(out=None) -> None:
    out = out or sys.stdout
    for sc in REGISTRY.values():
        print(f"{sc.name:<15} {sc.summary}", file=out)
        for k, (t, d, h) in sc.params.items():
            print(f"{'':<17}{k}={d!r} ({t.__name__}): {h}", file=out)


def _run(args) -> int:
    sc = REGISTRY.get(args.scenario)
    if sc is None:
        raise UsageError(f"no scenario {args.scenario!r}; choose one of {', '.join(REGISTRY)}")
    if args.backend not in BACKENDS and args.backend != "rtl":
        raise UsageError(f"backend {args.backend!r} is not available; available: "
                         f"{', '.join(BACKENDS)}")
    if args.backend not in sc.backends:
        raise UsageError(f"scenario '{sc.name}' runs on {', '.join(sc.backends)}, "
                         f"not {args.backend!r}")
    params = parse_params(sc, args.param)
    progress.enable(args.progress or sys.stderr.isatty())
    wave = None
    try:
        if args.backend == "rtl":
            from . import rtl_backend

            try:
                report, wave = rtl_backend.run(sc.name, args.seed, params, args.out / sc.name,
                                               preset=args.preset, simulator=args.simulator,
                                               waves=not args.no_waves)
            except rtl_backend.RtlRunError as e:
                print(f"error: the RTL run failed: {e}", file=sys.stderr)
                return 1
        else:
            report = sc.func(args.backend, args.seed, **params)
    except ValueError as e:  # a parameter value the scenario refuses, or BackendError
        raise UsageError(str(e)) from None
    print_report(report)
    files = save_report(report, args.out / sc.name, plots=not args.no_plots)
    print(f"  report: {files[0]}" + "".join(f"\n  plot:   {f}" for f in files[1:]))
    if wave is not None:
        print(f"  waves:  {wave} (make waves SCENARIO={sc.name})")
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    load_all()
    ap = _Parser(prog="python -m sim", description="IOMMU scenarios")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list scenarios and their parameters")
    run = sub.add_parser("run", help="run a scenario and print its report")
    run.add_argument("scenario")
    run.add_argument("--backend", default="model",
                     help="model (the reference IOMMU, fast) or rtl (the hardware under cocotb)")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--preset", choices=["small", "default", "large"], default="default",
                     help="RTL parameter preset (rtl backend)")
    run.add_argument("--simulator", choices=["verilator", "icarus"], default=None,
                     help="RTL simulator (rtl backend; default $SIM or verilator)")
    run.add_argument("--no-waves", action="store_true",
                     help="rtl backend: do not record an FST waveform")
    run.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--out", type=Path, default=Path("build/sim"))
    run.add_argument("--progress", action="store_true", help="draw the progress bar even "
                     "when stderr is not a terminal")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    try:
        args = ap.parse_args(argv)
        if args.cmd == "list":
            list_scenarios()
            return 0
        return _run(args)
    except (UsageError, BackendError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `python -m sim run x | head`: the reader left, not an error
        sys.stderr.close()
        sys.exit(0)
