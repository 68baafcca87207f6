"""``--backend rtl``: run a scenario with the RTL IOMMU under cocotb (Verilator or Icarus).

The scenario's code is unchanged: ``tb/tests/scenario_rtl.py`` runs it in a cocotb
bridge thread with ``make_iommu("rtl", memory)`` returning a ``tb.rtl_iommu.RtlIommu``
on the ``rtl/iommu.py`` top. The child pickles its ``Report`` (figures, checks,
plots) for this process to print and save; the waveform (FST) is copied next to the
report with a GTKWave save file grouping the signals by block.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from pathlib import Path

TOP = "rtl.iommu:Iommu"


class RtlRunError(Exception):
    """The simulation could not run or crashed (not: the scenario's checks failed)."""


def run(name: str, seed: int, params: dict, outdir: Path, *, preset: str = "default",
        simulator: str | None = None, waves: bool = True, latency: int = 10):
    """Run scenario ``name`` on the RTL; returns ``(report, wave_path_or_None)``."""
    from rtl.generate import PRESETS
    from tb import runner

    with tempfile.TemporaryDirectory() as tmp:
        pickled = Path(tmp) / "report.pkl"
        env = {"SCENARIO": name, "SCENARIO_PARAMS": json.dumps(params),
               "SCENARIO_SEED": str(seed), "SCENARIO_REPORT": str(pickled),
               "SCENARIO_MEMORY_LATENCY": str(latency)}
        try:
            result = runner.run("tb.tests.scenario_rtl", PRESETS[preset], sim=simulator,
                                waves=waves, seed=seed, extra_env=env, design=TOP)
        except runner.SimulationFailed as error:
            if not pickled.exists():
                raise RtlRunError(str(error).splitlines()[0]) from None
            result = None
        except (ImportError, OSError, RuntimeError) as error:  # building the model failed
            raise RtlRunError(f"{type(error).__name__}: {error}") from None
        with pickled.open("rb") as f:
            report, rtl = pickle.load(f)
    report.details.append(
        f"RTL ({preset} preset, memory latency {latency} cycles): {rtl['cycles']} cycles, "
        f"{rtl['memory']['reads']} memory reads, {rtl['memory']['writes']} writes, "
        f"{rtl['memory']['cas']} CAS by the IOMMU, {rtl['commands']} commands executed")
    wave = None
    if result is not None and result.wave is not None and Path(result.wave).exists():
        outdir.mkdir(parents=True, exist_ok=True)
        wave = outdir / "waves.fst"
        shutil.copyfile(result.wave, wave)
        from .waves import write_savefile

        write_savefile(wave, outdir / "waves.gtkw")
        Path("build").mkdir(exist_ok=True)
        Path("build/last_wave.txt").write_text(f"{wave}\n")
    return report, wave
