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
    (["run", "nosuch"], "no scenario 'nosuch'; choose one of"),
    (["run", "default", "-p", "bogus=1"], "takes frames=<int>"),
    (["run", "default", "-p", "frames=lots"], "frames must be int"),
    (["run", "default", "-p", "frames=0"], "frames must be >= 1"),
])
def test_bad_input_is_one_clear_line(args, message):
    proc = subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
