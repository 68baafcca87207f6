"""rtl.slack: every failing register input of a route, from nextpnr's detailed timing
report (hand-made reports and netlists here, no nextpnr run)."""

import json

import pytest

from rtl import slack


def _net(name, driver, port, *endpoints):
    """A detailed_net_timings entry: each endpoint's delay is [min, max] arrival (ns)."""
    return {"net": name, "driver": driver, "port": port, "event": "posedge clk",
            "sources": [],
            "endpoints": [{"cell": c, "port": p, "event": "posedge clk", "delay": [d / 2, d]}
                          for c, p, d in endpoints]}


def _report():
    return {"fmax": {}, "critical_paths": [], "detailed_net_timings": [
        # two bits of one register late on D (one through M, nextpnr's direct data pin)
        _net("x", "l1_LUT4_Z", "F", ("slow_TRELLIS_FF_Q", "DI", 6.0),
             ("slow_TRELLIS_FF_Q_1", "M", 5.5)),
        # its enable, and a fast register, from the same net
        _net("y", "l2_LUT4_Z", "F", ("slow_TRELLIS_FF_Q_2", "CE", 5.2),
             ("fast_TRELLIS_FF_Q", "DI", 2.0)),
        # a distributed RAM's write address, late; its read side is not a register input
        _net("z", "l3_LUT4_Z", "F", ("ram_TRELLIS_DPR16X4", "WAD0", 7.0),
             ("ram_TRELLIS_DPR16X4", "RAD0", 9.0)),
        # a clock pin is not timed
        _net("clk", "pin", "O", ("slow_TRELLIS_FF_Q", "CLK", 9.0)),
    ]}


def test_groups_by_end_register_and_pin_worst_first():
    rows = slack.analyse(_report(), period_ns=5.0)
    by = {(r["end"], r["pin"]): r for r in rows}
    assert set(by) == {("slow", "D"), ("slow", "CE"), ("fast", "D"), ("ram", "RAM WAD")}
    assert by[("slow", "D")]["slack"] == pytest.approx(-1.0)  # the worse of its two bits
    assert by[("slow", "D")]["failing"] == 2 and by[("slow", "D")]["count"] == 2
    assert by[("slow", "D")]["net"] == "x"
    assert by[("slow", "CE")]["slack"] == pytest.approx(-0.2)
    assert by[("fast", "D")]["failing"] == 0
    assert [r["end"] for r in rows][:1] == ["ram"]  # -2.0: worst first
    with pytest.raises(ValueError, match="--detailed-timing-report"):
        slack.analyse({"fmax": {}, "critical_paths": []}, 5.0)


def _netlist(tmp_path):
    """start -> lut -> lut -> slow_TRELLIS_FF_Q.DI, in Yosys' JSON (the names nextpnr keeps)."""
    lut = {"type": "LUT4", "port_directions": {"A": "input", "Z": "output"}}
    cells = {
        "start_TRELLIS_FF_Q": {"type": "TRELLIS_FF", "port_directions": {
            "CLK": "input", "DI": "input", "Q": "output"},
            "connections": {"CLK": [1], "DI": [2], "Q": [10]}},
        "l1": {**lut, "connections": {"A": [10], "Z": [11]}},
        "l2": {**lut, "connections": {"A": [11], "Z": [12]}},
        "slow_TRELLIS_FF_Q": {"type": "TRELLIS_FF", "port_directions": {
            "CLK": "input", "DI": "input", "Q": "output"},
            "connections": {"CLK": [1], "DI": [12], "Q": [13]}},
    }
    names = {"clk": {"bits": [1]}, "in": {"bits": [2]}, "start": {"bits": [10]},
             "mid": {"bits": [11]}, "late": {"bits": [12]}, "slow": {"bits": [13]}}
    path = tmp_path / "synth.json"
    path.write_text(json.dumps({"modules": {"top": {
        "attributes": {"top": "00000000000000000000000000000001"},
        "cells": cells, "netnames": names}}}))
    return path


def test_cli_lists_failing_groups_with_their_start_and_errors_in_one_line(tmp_path, capsys):
    report = tmp_path / "pnr_report.json"
    report.write_text(json.dumps(_report()))
    netlist = _netlist(tmp_path)
    assert slack.main([str(report), "--freq", "200", "--netlist", str(netlist), "--via"]) == 0
    out = capsys.readouterr().out
    assert "4 register inputs fail 200 MHz, in 3 groups; worst slack -2.00 ns" in out
    assert "slow (D)  <- start, 2.0" in out  # traced through the netlist's two LUTs
    assert "fast" not in out
    assert "    mid\n" in out  # --via prints the path's nets
    assert slack.main([str(report), "--freq", "200", "--match", "ra", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "ram (RAM WAD)" in out and "slow (" not in out and "fast (" not in out
    for bad, message in (([str(tmp_path / "missing.json")], "no such file"),
                         ([str(report), "--netlist", str(tmp_path / "none.json")],
                          "no such file")):
        assert slack.main(bad) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"fmax": {}, "critical_paths": []}))
    assert slack.main([str(plain)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--detailed-timing-report" in err
