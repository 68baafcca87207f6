"""Routed slack of every register input, from nextpnr's detailed timing report.

nextpnr prints one critical path per clock, so closing timing on the whole IOMMU one
path per 25-minute route is slow: each fix only shows the next path. With
``--detailed-timing-report`` (which ``python -m rtl.synth`` passes) nextpnr's JSON report
(``pnr_report.json``) also holds, for every net that ends at a register input, the
routed arrival time at that input (clock-to-Q, logic and routing from the launching
register). This lists *every* failing register group of a route at once, worst first,
grouped by end register and pin:

    python -m rtl.slack build/synth/default/pnr_report.json
    python -m rtl.slack build/synth/default/pnr_report.json --netlist build/synth/default/synth.json

With ``--netlist`` (the Yosys netlist nextpnr read; cell names are the same), each group
also names the register its deepest logic path starts from and that path's nets, as
``rtl.depth`` traces them, since the report gives only the last net of each path.
Slack here is period minus arrival (no setup time), so the worst one is within a few
tenths of a nanosecond of nextpnr's own Fmax, which is the figure of record.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .depth import _base as depth_base

# Register inputs, by nextpnr port name: a flip-flop's data, mux input, enable and
# reset; a distributed RAM's write data, address and enable (sampled at the edge).
PIN_KINDS = {"DI": "D", "M": "D", "CE": "CE", "LSR": "LSR",
             "WD": "RAM WD", "WAD": "RAM WAD", "WRE": "RAM WRE"}


def _pin_kind(port: str) -> str | None:
    return PIN_KINDS.get(re.sub(r"\d+$", "", port))


def _base(cell: str) -> str:
    """A register cell's signal name: ``rtl.depth``'s, a distributed RAM's suffix too."""
    return depth_base(re.sub(r"_(TRELLIS_DPR16X4|DPR16X4|TRELLIS_RAMW)\w*$", "", cell))


def endpoints(report: dict):
    """(arrival ns, end cell, nextpnr port, net) for every timed register input."""
    nets = report.get("detailed_net_timings")
    if nets is None:
        raise ValueError("no detailed_net_timings: run nextpnr with --detailed-timing-report")
    for net in nets:
        for ep in net["endpoints"]:
            if _pin_kind(ep["port"]) is not None:
                yield float(ep["delay"][1]), ep["cell"], ep["port"], net["net"]


def analyse(report: dict, period_ns: float) -> list[dict]:
    """Register groups (end register, pin), worst slack first."""
    groups: dict[tuple[str, str], dict] = {}
    for arrival, cell, port, net in endpoints(report):
        slack = period_ns - arrival
        g = groups.setdefault((_base(cell), _pin_kind(port)),
                              {"slack": float("inf"), "count": 0, "failing": 0})
        g["count"] += 1
        g["failing"] += slack < 0
        if slack < g["slack"]:
            g.update(slack=slack, cell=cell, port=port, net=net)
    return sorted(({"end": k[0], "pin": k[1], **v} for k, v in groups.items()),
                  key=lambda r: r["slack"])


def trace_starts(rows: list[dict], netlist_path: Path) -> None:
    """Add each row's deepest logic path (``start``, ``levels``, ``via``) from the netlist."""
    from .depth import Netlist

    nl = Netlist(netlist_path)
    for r in rows:
        cell = nl.cells.get(r["cell"])
        port = re.sub(r"\d+$", "", r["port"])
        # nextpnr feeds a flip-flop's data on M when no LUT of its slice computes it.
        port = {"M": "DI", "WD": "DI"}.get(port, port) if cell else port
        bits = cell["connections"].get(port, []) if cell else []
        index = re.search(r"\d+$", r["port"])
        if index and len(bits) > int(index[0]):
            bits = [bits[int(index[0])]]
        bits = [b for b in bits if isinstance(b, int)]
        if not bits:
            continue
        bit = max(bits, key=nl.arrival)
        path = nl.trace(bit)
        r.update(start=depth_base(nl.name(path[0])), levels=nl.arrival(bit),
                 via=[nl.name(b) for b in path])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rtl.slack", description=__doc__.split("\n")[0])
    ap.add_argument("report", type=Path,
                    help="nextpnr --report JSON written with --detailed-timing-report")
    ap.add_argument("--netlist", type=Path, default=None,
                    help="the Yosys JSON nextpnr read (synth.json): name each path's start")
    ap.add_argument("--freq", type=float, default=100.0, help="target clock in MHz (default 100)")
    ap.add_argument("--top", type=int, default=None,
                    help="list this many groups, failing or not (default: every failing one)")
    ap.add_argument("--via", action="store_true",
                    help="with --netlist, print the nets of the first 5 groups' paths")
    ap.add_argument("--match", default=None, metavar="TEXT",
                    help="only the groups whose end register's name contains TEXT")
    args = ap.parse_args(argv)
    for path in (args.report, args.netlist):
        if path is not None and not path.is_file():
            print(f"rtl.slack: no such file: {path}", file=sys.stderr)
            return 2
    period = 1000.0 / args.freq
    try:
        rows = analyse(json.loads(args.report.read_text()), period)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        print(f"rtl.slack: {args.report}: {error}", file=sys.stderr)
        return 2
    shown = [r for r in rows if args.match is None or args.match in r["end"]]
    shown = shown[:args.top] if args.top is not None else [r for r in shown if r["slack"] < 0]
    if args.netlist is not None:
        try:
            trace_starts(shown, args.netlist)
        except (ValueError, KeyError, StopIteration) as error:
            print(f"rtl.slack: {args.netlist} is not a Yosys ECP5 netlist ({error})",
                  file=sys.stderr)
            return 2
    if not rows:
        print("no timed register inputs in the report")
        return 0
    failing = sum(r["failing"] for r in rows)
    worst = rows[0]["slack"]
    print(f"{failing} register inputs fail {args.freq:g} MHz, in "
          f"{sum(1 for r in rows if r['slack'] < 0)} groups; worst slack {worst:.2f} ns "
          f"(~{1000.0 / (period - worst):.1f} MHz)")
    print(f"{'slack':>6} {'fail':>5} {'of':>5}  end register (pin)"
          + ("  <- start register, levels" if args.netlist else "  <- last net"))
    for r in shown:
        where = (f"{r['start']}, {r['levels']:.1f}" if "start" in r else r["net"])
        print(f"{r['slack']:6.2f} {r['failing']:5d} {r['count']:5d}  {r['end']} ({r['pin']})"
              f"  <- {where}")
    if args.via:
        for r in [r for r in shown if "via" in r][:5]:
            print(f"\n{r['slack']:.2f} ns {r['start']} -> {r['end']} ({r['pin']}):")
            for name in r["via"]:
                print(f"    {name}")
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the listing quietly
    sys.exit(main())
