"""rtl.depth: logic levels between registers, on hand-made ECP5 netlists (no Yosys run)."""

import io
import json

from rtl import depth


def _netlist(tmp_path, cells, netnames):
    path = tmp_path / "synth.json"
    path.write_text(json.dumps({"modules": {"top": {
        "attributes": {"top": "00000000000000000000000000000001"},
        "cells": cells, "netnames": netnames}}}))
    return path


def _ff(d, q, ce=None):
    conn = {"CLK": [1], "DI": [d], "Q": [q]}
    dirs = {"CLK": "input", "DI": "input", "Q": "output"}
    if ce is not None:
        conn["CE"], dirs["CE"] = [ce], "input"
    return {"type": "TRELLIS_FF", "connections": conn, "port_directions": dirs}


def _lut(inputs, z):
    conn = {p: [b] for p, b in zip("ABCD", inputs)}
    conn["Z"] = [z]
    return {"type": "LUT4", "connections": conn,
            "port_directions": {**{p: "input" for p in "ABCD"[:len(inputs)]}, "Z": "output"}}


def test_levels_count_luts_between_registers(tmp_path):
    # start -> lut -> lut -> lut -> deep ; start -> lut -> shallow (enable)
    cells = {
        "a": _ff(2, 10), "b": _ff(2, 11),
        "l1": _lut([10, 11], 20), "l2": _lut([20, 11], 21), "l3": _lut([21], 22),
        "deep": _ff(22, 30), "shallow": _ff(2, 31, ce=20),
    }
    names = {"clk": {"bits": [1]}, "start": {"bits": [10]}, "other": {"bits": [11]},
             "deep": {"bits": [30]}, "shallow": {"bits": [31]}, "x": {"bits": [20]},
             "y": {"bits": [21]}, "z": {"bits": [22]}, "in": {"bits": [2]}}
    rows = depth.report(_netlist(tmp_path, cells, names), 10, None, out=io.StringIO())
    by_end = {(r["end"], r["pin"]): r for r in rows}
    assert by_end[("deep", "D")]["levels"] == 3.0
    assert by_end[("deep", "D")]["start"] == "start"
    assert by_end[("shallow", "CE")]["levels"] == 1.0
    assert rows[0]["end"] == "deep"  # deepest first
    # --min keeps only what reaches the threshold
    deep_only = depth.report(_netlist(tmp_path, cells, names), 10, 2.0, out=io.StringIO())
    assert [r["end"] for r in deep_only] == ["deep"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert depth.main([str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such netlist" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"modules": {}}))
    assert depth.main([str(bad)]) == 2
    assert "not a Yosys ECP5 netlist" in capsys.readouterr().err


def test_distributed_ram_is_read_through_its_address_only(tmp_path):
    # addr_reg -> lut -> RAD ; data_reg -> DI (sampled at the edge) ; DO -> lut -> out
    ram = {"type": "TRELLIS_DPR16X4",
           "connections": {"RAD": [20, 20, 20, 20], "DI": [11, 11, 11, 11],
                           "WAD": [12, 12, 12, 12], "WRE": [13], "WCK": [1],
                           "DO": [40, 41, 42, 43]},
           "port_directions": {"RAD": "input", "DI": "input", "WAD": "input",
                               "WRE": "input", "WCK": "input", "DO": "output"}}
    cells = {
        "addr": _ff(2, 10), "data": _ff(2, 11), "waddr": _ff(2, 12), "we": _ff(2, 13),
        "l1": _lut([10], 20), "w1": _lut([11], 14), "ram": ram, "l2": _lut([40], 50),
        "out": _ff(50, 60),
    }
    ram["connections"]["DI"] = [14, 14, 14, 14]
    names = {"clk": {"bits": [1]}, "in": {"bits": [2]}, "addr": {"bits": [10]},
             "data": {"bits": [11]}, "waddr": {"bits": [12]}, "we": {"bits": [13]},
             "x": {"bits": [20]}, "wd": {"bits": [14]}, "rdata": {"bits": [40, 41, 42, 43]},
             "y": {"bits": [50]}, "out": {"bits": [60]}}
    rows = depth.report(_netlist(tmp_path, cells, names), 20, None, out=io.StringIO())
    by_end = {(r["end"], r["pin"]): r for r in rows}
    # addr -> l1 -> RAM read -> l2 -> out: 3 levels, starting at the read address.
    assert by_end[("out", "D")]["levels"] == 3.0
    assert by_end[("out", "D")]["start"] == "addr"
    # The write data ends at the RAM (one LUT in front), it does not run through to out.
    assert by_end[("rdata", "RAM D")]["levels"] == 1.0
    assert by_end[("rdata", "RAM D")]["start"] == "data"
