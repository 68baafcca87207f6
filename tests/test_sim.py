"""The scenario command line: reports, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest

from sim.__main__ import main


def test_default_scenario_passes_its_checks(tmp_path, capsys):
    assert main(["run", "default", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "IOTLB hits" in out and "[FAIL]" not in out
    report = json.loads((tmp_path / "default" / "report.json").read_text())
    assert report["passed"]
    assert report["figures"]["fault records"] == 4
    assert report["figures"]["stray DMAs blocked"] == "4/4"


def test_default_scenario_uses_the_iotlb(tmp_path):
    main(["run", "default", "--out", str(tmp_path), "-p", "frames=8", "-p", "packets=64"])
    figures = json.loads((tmp_path / "default" / "report.json").read_text())["figures"]
    # 8 pages written 8 times each: every page after its first touch hits.
    assert figures["IOTLB hits"] > figures["IOTLB misses"] > 0


@pytest.mark.parametrize("args, message", [
    (["run", "nosuch"], "no scenario 'nosuch'; choose one of default, scatter_gather"),
    (["run", "default", "-p", "bogus=1"], "takes frames=<int>"),
    (["run", "default", "-p", "frames=lots"], "frames must be int"),
    (["run", "default", "-p", "frames=0"], "frames must be >= 1"),
    (["run", "camera", "-p", "width=0"], "width=0: must be >= 1"),
    (["run", "dma_window", "-p", "max_mib=3"], "max_mib must be a power of two"),
    (["run", "camera", "--backend", "fpga"], "backend 'fpga' is not available; available: model"),
    (["run", "camera", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required"),
])
def test_bad_input_is_one_clear_line(args, message):
    proc = subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_list_names_every_scenario_with_its_parameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("default", "scatter_gather", "camera", "huge_pages", "dma_window",
                 "microkernel", "smartnic", "tour"):
        assert f"\n{name} " in "\n" + out
    assert "mib=8 (int): MiB streamed" in out


def test_run_writes_report_and_plot_and_draws_progress_on_request(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sim", "run", "camera", "--progress",
                           "--out", str(tmp_path), "-p", "width=64", "-p", "height=64",
                           "-p", "frames=2"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "camera frames [" in proc.stderr and "100% 2/2" in proc.stderr
    report = json.loads((tmp_path / "camera" / "report.json").read_text())
    assert report["passed"] and report["plots"] == ["camera_iotlb.png"]
    assert (tmp_path / "camera" / "camera_iotlb.png").stat().st_size > 0


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sim", "run", "microkernel", "--no-plots",
                           "--out", str(tmp_path), "-p", "packets=4"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stderr == ""
