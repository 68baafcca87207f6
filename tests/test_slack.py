"""rtl.slack: routed slack from nextpnr's detailed net timings, on hand-made reports."""

import json

import pytest

from rtl import slack


def _net(name, driver, port, *endpoints):
    return {"net": name, "driver": driver, "port": port, "event": "posedge clk",
            "sources": [],
            "endpoints": [{"cell": c, "port": p, "event": "posedge clk", "delay": [d / 2, d]}
                          for c, p, d in endpoints]}


def _report():
    # a.Q -(1.0)-> l1.A ; l1.F -(2.0)-> l2.B ; l2.F -(3.0)-> far_TRELLIS_FF_Q.CE
    # b.Q -(0.5)-> l1.B and -(0.3)-> near.DI ; l1.F -(0.2)-> ram.WD0 (a RAM write: an end)
    # clk drives every flip-flop's CLK (not a timing path)
    nets = [
        _net("clk", "pin", "O", ("a_TRELLIS_FF_Q", "CLK", 0.1), ("b_TRELLIS_FF_Q", "CLK", 0.1),
             ("far_TRELLIS_FF_Q", "CLK", 0.1), ("near_TRELLIS_FF_Q", "CLK", 0.1)),
        _net("a", "a_TRELLIS_FF_Q", "Q", ("l1_LUT4_Z", "A", 1.0)),
        _net("b", "b_TRELLIS_FF_Q", "Q", ("l1_LUT4_Z", "B", 0.5),
             ("near_TRELLIS_FF_Q", "DI", 0.3)),
        _net("x", "l1_LUT4_Z", "F", ("l2_LUT4_Z", "B", 2.0), ("ram", "WD0", 0.2)),
        _net("y", "l2_LUT4_Z", "F", ("far_TRELLIS_FF_Q", "CE", 3.0)),
        _net("far", "far_TRELLIS_FF_Q", "Q", ("out", "I", 0.1)),
        _net("near", "near_TRELLIS_FF_Q", "Q", ("out", "I2", 0.1)),
    ]
    return {"fmax": {}, "critical_paths": [], "detailed_net_timings": nets}


def test_arrival_adds_routing_and_cells_and_groups_by_registers():
    rows = slack.analyse(_report(), period_ns=5.0)
    by_end = {(r["start"], r["end"], r["pin"]): r for r in rows}
    deep = by_end[("a", "far", "CE")]
    # clock-to-Q, 1.0, LUT, 2.0, LUT, 3.0
    arrival = slack.CLK_TO_Q + 1.0 + 0.24 + 2.0 + 0.24 + 3.0
    assert deep["slack"] == pytest.approx(5.0 - arrival)
    assert deep["levels"] == 2 and deep["failing"] == 1
    assert [(step[0], step[1]) for step in deep["via"]] == [
        ("a_TRELLIS_FF_Q", "Q"), ("l1_LUT4_Z", "A"), ("l1_LUT4_Z", "F"), ("l2_LUT4_Z", "B"),
        ("l2_LUT4_Z", "F"), ("far_TRELLIS_FF_Q", "CE")]
    near = by_end[("b", "near", "D")]
    assert near["slack"] == pytest.approx(5.0 - slack.CLK_TO_Q - 0.3)
    assert near["failing"] == 0
    ram = by_end[("a", "ram", "RAM WD")]  # through l1 from a (the later input)
    assert ram["slack"] == pytest.approx(5.0 - (slack.CLK_TO_Q + 1.0 + 0.24 + 0.2))
    assert rows[0] is deep  # worst first
    # no path ends at a clock pin or at a port that is not a register's
    assert not any(r["pin"] == "CLK" or r["end"] == "out" for r in rows)


def test_cli_lists_failing_groups_and_errors_in_one_line(tmp_path, capsys):
    path = tmp_path / "pnr_report.json"
    path.write_text(json.dumps(_report()))
    assert slack.main([str(path), "--freq", "200", "--via"]) == 0
    out = capsys.readouterr().out
    assert "1 register inputs fail 200 MHz in 1 groups" in out
    assert "a -> far (CE)" in out and "near" not in out.split("\n\n")[0]
    assert slack.main([str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such report" in err
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"fmax": {}, "critical_paths": []}))
    assert slack.main([str(plain)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--detailed-timing-report" in err
