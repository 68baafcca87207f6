"""Logic depth of a synthesized ECP5 netlist: every register-to-register path, in seconds.

nextpnr names one critical path per run, and placing and routing the whole IOMMU takes
many minutes. This reads the netlist Yosys wrote (``build/synth/<preset>/synth.json``,
after ``synth_ecp5``) and ranks *every* register input by the number of logic levels in
front of it, so that all the long paths of a design can be seen (and cut) at once:

    python -m rtl.depth build/synth/default/synth.json            # the 25 deepest endpoints
    python -m rtl.depth build/synth/default/synth.json --min 8    # every endpoint of 8+ levels

A level is one LUT4 (a PFUMX or L6MUX21 after its LUTs adds a fraction: it sits in the
same slice; a carry cell a little). On an ECP5 (speed 6) a level costs about 0.25 ns of
logic and, in a large design, 0.7-1.5 ns of routing, more with a large fanout, so at
100 MHz the budget is about 6 levels. Each line shows the path's start register, end
register (the input pin it reaches: DI data, CE enable, LSR reset; or a distributed
RAM's write data, address or enable) and the highest fanout on the way, which is what
routing pays for. A distributed RAM's read data counts from its read address only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

# Cost of the cell's output over its inputs, in LUT levels.
CELL_LEVELS = {
    "LUT4": 1.0,
    "PFUMX": 0.3,
    "L6MUX21": 0.3,
    "CCU2C": 0.15,  # per cell along a carry chain (the first one's LUT is the 1.0 below)
    "TRELLIS_DPR16X4": 1.0,
    "DPR16X4": 1.0,
}
FLOP_TYPES = {"TRELLIS_FF"}
FLOP_INPUTS = {"DI": "D", "M": "D", "CE": "CE", "LSR": "LSR"}
# Distributed RAM: only the read address reaches the read data in the same cycle; the
# write side (data, address, enable) is sampled at the clock edge, like a register's
# inputs, so a path ends there.
RAM_TYPES = {"TRELLIS_DPR16X4", "DPR16X4"}
RAM_COMB_INPUTS = {"RAD"}
RAM_INPUTS = {"DI": "RAM D", "WAD": "RAM WAD", "WRE": "RAM WRE"}


def _best_name(names: list[str]) -> str:
    """The most readable of a net bit's names (no Yosys-made `$`, shortest)."""
    clean = [n for n in names if "$" not in n]
    return min(clean or names, key=lambda n: (len(n), n))


def _base(name: str) -> str:
    """A register's signal name without the bit index or the cell-name suffixes."""
    name = re.sub(r"_TRELLIS_FF_Q.*$", "", name)
    return re.sub(r"\[\d+\]$", "", name)


class Netlist:
    def __init__(self, path: Path):
        design = json.loads(path.read_text())
        top = next(m for m in design["modules"].values()
                   if m.get("attributes", {}).get("top") not in (None, "0", 0,
                                                                "00000000000000000000000000000000"))
        self.cells = top["cells"]
        names = defaultdict(list)
        for name, net in top["netnames"].items():
            for i, bit in enumerate(net["bits"]):
                if isinstance(bit, int):
                    names[bit].append(name if len(net["bits"]) == 1 else f"{name}[{i}]")
        self.bit_name = {bit: _best_name(n) for bit, n in names.items()}
        self.driver = {}  # bit -> (cell name, output port)
        self.fanout = defaultdict(int)
        for cname, cell in self.cells.items():
            for port, bits in cell["connections"].items():
                direction = cell["port_directions"].get(port)
                for bit in bits:
                    if not isinstance(bit, int):
                        continue
                    if direction == "output":
                        self.driver[bit] = (cname, port)
                    else:
                        self.fanout[bit] += 1
        self._arrival: dict[int, tuple[float, int | None]] = {}

    def name(self, bit: int) -> str:
        return self.bit_name.get(bit, f"net{bit}")

    def arrival(self, bit: int) -> float:
        """Levels from the nearest register (or port) to ``bit``, iteratively."""
        stack = [bit]
        while stack:
            b = stack[-1]
            if b in self._arrival:
                stack.pop()
                continue
            drv = self.driver.get(b)
            if drv is None or self.cells[drv[0]]["type"] in FLOP_TYPES \
                    or self.cells[drv[0]]["type"] not in CELL_LEVELS:
                self._arrival[b] = (0.0, None)  # a register, a port, or a black box
                stack.pop()
                continue
            cell = self.cells[drv[0]]
            inputs = [x for port, bits in cell["connections"].items()
                      if cell["port_directions"].get(port) == "input"
                      and (cell["type"] not in RAM_TYPES or port in RAM_COMB_INPUTS)
                      for x in bits if isinstance(x, int)]
            todo = [x for x in inputs if x not in self._arrival]
            if todo:
                stack.extend(todo)
                continue
            cost = CELL_LEVELS[cell["type"]]
            if cell["type"] == "CCU2C" and drv[1] == "COUT":
                cost = 0.15
            elif cell["type"] == "CCU2C":
                cost = 1.0
            best = max(inputs, key=lambda x: self._arrival[x][0], default=None)
            self._arrival[b] = ((self._arrival[best][0] if best is not None else 0.0) + cost,
                                best)
            stack.pop()
        return self._arrival[bit][0]

    def trace(self, bit: int) -> list[int]:
        """The bits along the deepest path into ``bit``, from its start."""
        path = [bit]
        while (prev := self._arrival.get(path[-1], (0, None))[1]) is not None:
            path.append(prev)
        return path[::-1]

    def endpoints(self):
        """(levels, end register, pin kind, start bit, path) for every register input."""
        for cname, cell in self.cells.items():
            if cell["type"] in FLOP_TYPES:
                q = cell["connections"].get("Q", [None])[0]
                pins = FLOP_INPUTS
            elif cell["type"] in RAM_TYPES:
                q = cell["connections"].get("DO", [None])[0]
                pins = RAM_INPUTS
            else:
                continue
            end = self.name(q) if isinstance(q, int) else cname
            for port, kind in pins.items():
                for bit in cell["connections"].get(port, []):
                    if isinstance(bit, int):
                        levels = self.arrival(bit)
                        path = self.trace(bit)
                        yield levels, end, kind, path


def report(path: Path, top: int, minimum: float | None, out=sys.stdout) -> list[dict]:
    nl = Netlist(path)
    groups: dict[tuple[str, str, str], dict] = {}
    for levels, end, kind, bits in nl.endpoints():
        start = _base(nl.name(bits[0]))
        key = (start, _base(end), kind)
        fan = max((nl.fanout[b] for b in bits[:-1]), default=0)
        g = groups.setdefault(key, {"levels": 0.0, "count": 0})
        g["count"] += 1
        if levels > g["levels"]:
            g.update(levels=levels, fanout=fan, via=[nl.name(b) for b in bits])
    rows = sorted(({"start": k[0], "end": k[1], "pin": k[2], **v} for k, v in groups.items()),
                  key=lambda r: -r["levels"])
    shown = [r for r in rows if r["levels"] >= minimum] if minimum is not None else rows[:top]
    print(f"{'levels':>6} {'fanout':>6} {'bits':>5}  start -> end (pin)", file=out)
    for r in shown:
        print(f"{r['levels']:6.1f} {r.get('fanout', 0):6d} {r['count']:5d}  "
              f"{r['start']} -> {r['end']} ({r['pin']})", file=out)
    return shown


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rtl.depth", description=__doc__.split("\n")[0])
    ap.add_argument("netlist", type=Path, help="Yosys JSON after synth_ecp5 (synth.json)")
    ap.add_argument("--top", type=int, default=25, help="how many endpoint groups to list")
    ap.add_argument("--min", type=float, default=None, dest="minimum",
                    help="list every endpoint group of at least this many levels instead")
    ap.add_argument("--via", action="store_true", help="print the deepest path's nets too")
    args = ap.parse_args(argv)
    if not args.netlist.is_file():
        print(f"rtl.depth: no such netlist: {args.netlist} (run python -m rtl.synth --no-pnr "
              f"first)", file=sys.stderr)
        return 2
    try:
        rows = report(args.netlist, args.top, args.minimum)
    except (ValueError, KeyError, StopIteration) as error:
        print(f"rtl.depth: {args.netlist} is not a Yosys ECP5 netlist ({error})", file=sys.stderr)
        return 2
    if args.via:
        for r in rows[:5]:
            print(f"\n{r['levels']:.1f} levels {r['start']} -> {r['end']} ({r['pin']}):")
            for name in r["via"]:
                print(f"    {name}")
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the listing quietly
    sys.exit(main())
