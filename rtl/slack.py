"""Routed slack of every register input, from nextpnr's detailed timing report.

nextpnr prints one critical path per clock, so closing timing on the whole IOMMU one
path per 25-minute route is slow: each fix only shows the next path. With
``--detailed-timing-report`` nextpnr's JSON report (``pnr_report.json``, which
``python -m rtl.synth`` writes) also holds every routed net's delay to each of its
sinks. This runs a static timing analysis over those nets (the routed delays as nextpnr
computed them, a fixed delay per cell) and lists *every* failing register group at
once, worst first, grouped by start register → end register (pin):

    python -m rtl.slack build/synth/default/pnr_report.json          # failing groups
    python -m rtl.slack build/synth/default/pnr_report.json --via    # with the worst paths

Cell delays are ECP5 speed-6 typical figures (a LUT 0.24 ns, a slice's wide mux 0.17,
a flip-flop's clock-to-Q 0.52); the worst slack agrees with nextpnr's Fmax to within a
few percent, which is enough to rank paths. Its figures are an analysis aid: the Fmax
of record is nextpnr's own.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

CLK_TO_Q = 0.52
# Delay of a combinational cell's output over its inputs (ns), by output port.
OUTPUT_DELAY = {"F": 0.24, "OFX": 0.17, "FCO": 0.06}
DEFAULT_OUTPUT_DELAY = 0.0  # pass-through cells (the RAM write port's TRELLIS_RAMW)
# Inputs that end a path: a flip-flop's data, mux input, enable and reset; a distributed
# RAM's write data, address and enable (sampled at the clock edge).
FLOP_ENDS = {"DI": "D", "M": "D", "CE": "CE", "LSR": "LSR"}
RAM_END = re.compile(r"^(WD|WAD|WRE)\d*$")
CLOCK_PORTS = {"CLK", "WCK", "CLKI"}


def _base(cell: str) -> str:
    """A register cell's signal name, without nextpnr's and Yosys' cell suffixes."""
    name = re.sub(r"_TRELLIS_FF_Q.*$", "", cell)
    name = re.sub(r"(_(LUT4|PFUMX|L6MUX21|CCU2C|DPR16X4|TRELLIS_\w+)(_\w+)?)+$", "", name)
    return re.sub(r"\[\d+\]$", "", name)


class RoutedTiming:
    """The routed netlist as nextpnr reports it: nets (driver → sinks, delays), cells."""

    def __init__(self, report: dict, period_ns: float):
        nets = report.get("detailed_net_timings")
        if nets is None:
            raise ValueError("no detailed_net_timings: run nextpnr with "
                             "--detailed-timing-report")
        self.period = period_ns
        self.sinks: dict[tuple[str, str], list[tuple[str, str, float]]] = defaultdict(list)
        self.driver_of: dict[tuple[str, str], tuple[str, str, float, str]] = {}
        self.cell_inputs: dict[str, list[str]] = defaultdict(list)
        self.cell_outputs: dict[str, list[str]] = defaultdict(list)
        self.fanout: dict[tuple[str, str], int] = {}
        for net in nets:
            drv = (net["driver"], net["port"])
            self.cell_outputs[net["driver"]].append(net["port"])
            self.fanout[drv] = len(net["endpoints"])
            for ep in net["endpoints"]:
                sink = (ep["cell"], ep["port"])
                delay = float(ep["delay"][1])
                self.sinks[drv].append((*sink, delay))
                self.driver_of[sink] = (*drv, delay, net["net"])
                self.cell_inputs[ep["cell"]].append(ep["port"])
        self.flops = {c for c, outs in self.cell_outputs.items() if "Q" in outs}
        self._arrival: dict[tuple[str, str], tuple[float, tuple[str, str] | None]] = {}

    def _is_end(self, cell: str, port: str) -> str | None:
        if cell in self.flops:
            return FLOP_ENDS.get(port)
        if RAM_END.match(port):
            return "RAM " + RAM_END.match(port).group(1)
        return None

    def _comb_inputs(self, cell: str) -> list[str]:
        return [p for p in self.cell_inputs.get(cell, ())
                if p not in CLOCK_PORTS and not RAM_END.match(p)]

    def output_arrival(self, out: tuple[str, str]) -> float:
        """Arrival time (ns after the clock edge) at a cell output, iteratively."""
        stack = [out]
        while stack:
            node = stack[-1]
            if node in self._arrival:
                stack.pop()
                continue
            cell, port = node
            if cell in self.flops or port == "Q":
                self._arrival[node] = (CLK_TO_Q, None)
                stack.pop()
                continue
            inputs = [(cell, p) for p in self._comb_inputs(cell) if (cell, p) in self.driver_of]
            drivers = [self.driver_of[i][:2] for i in inputs]
            todo = [d for d in drivers if d not in self._arrival]
            if todo:
                stack.extend(todo)
                continue
            best, best_t = None, 0.0
            for i in inputs:
                d = self.driver_of[i]
                t = self._arrival[d[:2]][0] + d[2]
                if t >= best_t:
                    best, best_t = i, t
            self._arrival[node] = (best_t + OUTPUT_DELAY.get(port, DEFAULT_OUTPUT_DELAY), best)
            stack.pop()
        return self._arrival[out][0]

    def input_arrival(self, sink: tuple[str, str]) -> float:
        drv = self.driver_of[sink]
        return self.output_arrival(drv[:2]) + drv[2]

    def path(self, sink: tuple[str, str]) -> list[tuple[str, str, float, int]]:
        """(cell, port, arrival ns, net fanout) from the start register to ``sink``."""
        steps = [(*sink, self.input_arrival(sink), 0)]
        node = sink
        while node is not None and node in self.driver_of:
            drv = self.driver_of[node][:2]
            t, prev_in = self._arrival[drv]
            steps.append((*drv, t, self.fanout.get(drv, 0)))
            if prev_in is not None:
                steps.append((*prev_in, self.input_arrival(prev_in), 0))
            node = prev_in
        return steps[::-1]

    def endpoints(self):
        """(slack ns, end cell, pin kind, sink) for every timed register input."""
        for sink in self.driver_of:
            kind = self._is_end(*sink)
            if kind is None:
                continue
            yield self.period - self.input_arrival(sink), sink[0], kind, sink


def analyse(report: dict, period_ns: float, worst: int | None = None) -> list[dict]:
    rt = RoutedTiming(report, period_ns)
    groups: dict[tuple[str, str, str], dict] = {}
    for slack, end, kind, sink in rt.endpoints():
        steps = rt.path(sink)
        start = _base(steps[0][0])
        key = (start, _base(end), kind)
        g = groups.setdefault(key, {"slack": float("inf"), "count": 0, "failing": 0})
        g["count"] += 1
        g["failing"] += slack < 0
        if slack < g["slack"]:
            g.update(slack=slack, levels=sum(1 for s in steps[1:-1] if s[1] in OUTPUT_DELAY),
                     fanout=max((s[3] for s in steps), default=0), via=steps)
    rows = sorted(({"start": k[0], "end": k[1], "pin": k[2], **v} for k, v in groups.items()),
                  key=lambda r: r["slack"])
    return rows if worst is None else rows[:worst]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rtl.slack", description=__doc__.split("\n")[0])
    ap.add_argument("report", type=Path,
                    help="nextpnr --report JSON written with --detailed-timing-report")
    ap.add_argument("--freq", type=float, default=100.0, help="target clock in MHz (default 100)")
    ap.add_argument("--top", type=int, default=None,
                    help="list this many groups, failing or not (default: every failing group)")
    ap.add_argument("--via", action="store_true", help="print the worst path of the first 5")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"rtl.slack: no such report: {args.report}", file=sys.stderr)
        return 2
    try:
        rows = analyse(json.loads(args.report.read_text()), 1000.0 / args.freq)
    except (ValueError, KeyError, TypeError) as error:
        print(f"rtl.slack: {args.report}: {error}", file=sys.stderr)
        return 2
    shown = rows[:args.top] if args.top is not None else [r for r in rows if r["slack"] < 0]
    failing = sum(r["failing"] for r in rows)
    print(f"{failing} register inputs fail {args.freq:g} MHz in {len(shown)} groups; "
          f"worst slack {rows[0]['slack']:.2f} ns (Fmax ~{1000.0 / (1000.0 / args.freq - rows[0]['slack']):.1f} MHz)"
          if rows else "no timed register inputs")
    print(f"{'slack':>6} {'levels':>6} {'fanout':>6} {'fail':>5}  start -> end (pin)")
    for r in shown:
        print(f"{r['slack']:6.2f} {r['levels']:6d} {r['fanout']:6d} {r['failing']:5d}  "
              f"{r['start']} -> {r['end']} ({r['pin']})")
    if args.via:
        for r in shown[:5]:
            print(f"\n{r['slack']:.2f} ns {r['start']} -> {r['end']} ({r['pin']}):")
            for cell, port, t, fan in r["via"]:
                print(f"  {t:6.2f}  {cell}.{port}" + (f"  (fanout {fan})" if fan > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
