"""Verilog generation: ``python -m rtl.generate [--top iommu|core] [--preset default] [-o build/iommu.v]``.

``--top iommu`` (the default) is the whole IOMMU (rtl/iommu.py: registers, queues,
HPM, interrupts, debug translation, one memory port); ``--top core`` the translation
core alone (rtl/core.py), as the core's cocotb tests use it. The block tops
(``walker``, ``stage_walker``, ``context_fetch``, ``iotlb``, ``msi``) are one block
built as the core builds it from the preset, inside ``RegisteredBoundary``: they exist
for timing work (``python -m rtl.synth --top walker``), not for simulation. Either way
the module is named ``iommu``; ports keep the Amaranth signature names
joined by ``__`` (``request__valid``, ``request__payload``, ``mem_req__ready``...).
A stream payload is one packed vector whose fields are laid out as in
``rtl/layouts.py`` (first field at bit 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, ClockDomain, Elaboratable, Instance, Module, Signal, Value
from amaranth.lib import wiring

from . import params as P

PRESETS = {"small": P.SMALL, "default": P.DEFAULT, "large": P.LARGE}


class RegisteredBoundary(wiring.Component):
    """``inner`` with a register on every port bit, in and out (same signature).

    Out of context, nextpnr times only register-to-register paths, so a block whose
    inputs come straight from ports (a walker's ``mem_resp``, say) would have its
    longest paths left out. Inside the IOMMU those inputs come from other blocks'
    registers; the boundary registers stand in for them, so that a block synthesized
    alone is timed on the paths it will have in the design. The wrapper is for
    synthesis only: it delays every handshake by a cycle and breaks stream rules.
    """

    def __init__(self, inner: wiring.Component):
        self.inner = inner
        super().__init__(inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = self.inner
        outer = self.signature.flatten(self)
        inner = self.inner.signature.flatten(self.inner)
        for (path, member, outer_value), (_, _, inner_value) in zip(outer, inner, strict=True):
            if member.flow == wiring.In:
                m.d.sync += inner_value.eq(outer_value)
            else:
                m.d.sync += outer_value.eq(inner_value)
        return m


class PinHarness(Elaboratable):
    """``inner`` behind four pins (``clk``, ``rst``, ``din``, ``dout``), for synthesis only.

    Why (issue 7): the IOMMU has about 925 port bits and the package 365 I/O sites, so
    it was placed and routed out of context. There nextpnr promotes no clock to the
    global network (a port has no driver cell), so the clock of every flip-flop, one
    net with 24,000 sinks, was routed through the general fabric: the congestion that
    kept the whole IOMMU from routing. With four pins the flow is the ordinary one: the
    clock pin drives a global buffer, as on a board.

    Every input bit of ``inner`` comes from a flip-flop of a shift register fed by
    ``din``; every output bit goes into a flip-flop, and those are folded by a tree of
    registered 4-input XORs into ``dout``. Inside a system the IOMMU's ports meet other
    blocks' registers too, so the paths from and to its ports are timed as they would
    be there. The harness's own cells sit at the top of the hierarchy (``inner`` is
    ``block``), so the flow can count them apart.
    """

    def __init__(self, inner: wiring.Component, reset_buffer: bool = True):
        self.inner = inner
        self.reset_buffer = reset_buffer  # an ECP5 DCCA (False: simulate the harness)
        self.clk = Signal()
        self.rst = Signal()
        self.din = Signal()
        self.dout = Signal()

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.pin = pin = ClockDomain("pin", reset_less=True)
        m.d.comb += [sync.clk.eq(self.clk), pin.clk.eq(self.clk)]
        # The reset pin is synchronized (two flip-flops, as a board design would) and
        # then put on a global buffer: it reaches every flip-flop's reset (LSR), and
        # nextpnr promotes only clocks to the global network by itself. Routed through
        # the fabric it was the most congested net of the whole IOMMU (issue 7).
        held = Signal(2, reset_less=True)
        m.d.pin += held.eq(Cat(self.rst, held[0]))
        if self.reset_buffer:
            m.submodules.reset_buffer = Instance("DCCA", i_CLKI=held[1], i_CE=1,
                                                 o_CLKO=sync.rst)
        else:
            m.d.comb += sync.rst.eq(held[1])
        m.submodules.block = self.inner
        members = list(self.inner.signature.flatten(self.inner))
        inputs = [Value.cast(v) for _, member, v in members if member.flow == wiring.In]
        outputs = [Value.cast(v) for _, member, v in members if member.flow == wiring.Out]
        chain = Signal(sum(len(v) for v in inputs))
        m.d.sync += chain.eq(Cat(self.din, chain[:-1]))
        at = 0
        for v in inputs:
            m.d.comb += v.eq(chain[at:at + len(v)])
            at += len(v)
        level = Signal(sum(len(v) for v in outputs))
        m.d.sync += level.eq(Cat(*outputs))
        while len(level) > 1:
            folded = Signal((len(level) + 3) // 4)
            m.d.sync += folded.eq(Cat(level[i:i + 4].xor() for i in range(0, len(level), 4)))
            level = folded
        m.d.comb += self.dout.eq(level)
        return m


def _walker(p: P.IOMMUParams):
    from .walker import PageTableWalker

    return PageTableWalker(p.mem_id_bits, 1, p.capabilities,
                           walk_cache_entries=p.walk_cache_entries)


def _stage_walker(p: P.IOMMUParams):
    from .walker import StageWalker, g_stage_schemes

    return StageWalker(p.mem_id_bits, 1, p.capabilities,
                       nested=bool(g_stage_schemes(p.capabilities)))


def _context_fetch(p: P.IOMMUParams):
    from .context_fetch import ContextFetch

    return ContextFetch(p.mem_id_bits, 0, p.dc_cache_entries, p.pc_cache_entries,
                        p.capabilities)


def _iotlb(p: P.IOMMUParams):
    from . import layouts
    from .split_iotlb import make_iotlb

    return make_iotlb(p, layouts.translation_request(p.tag_bits))


def _msi(p: P.IOMMUParams):
    from models import arch

    from .msi import MsiTranslator

    return MsiTranslator(p.mem_id_bits, 1, mrif=bool(arch.Cap.MSI_MRIF.get(p.capabilities)))


def _registers(p: P.IOMMUParams):
    from .registers import RegisterFile

    return RegisterFile(p)


def _command_queue(p: P.IOMMUParams):
    from .command_queue import CommandQueue

    return CommandQueue(p.mem_id_bits, p.capabilities)


def _fault_queue(p: P.IOMMUParams):
    from models import arch

    from .fault_queue import FaultQueue

    return FaultQueue(p.mem_id_bits, arch.Cap.PAS.get(p.capabilities))


#: One block as the core (or the IOMMU, for the control plane) builds it (one walker:
#: walker1's), for timing work.
BLOCK_TOPS = {"walker": _walker, "stage_walker": _stage_walker,
              "context_fetch": _context_fetch, "iotlb": _iotlb, "msi": _msi,
              "registers": _registers, "command_queue": _command_queue,
              "fault_queue": _fault_queue}

TOPS = ("iommu", "core", *BLOCK_TOPS)


def build_core(params: P.IOMMUParams):
    from .core import TranslationCore

    return TranslationCore(params)


def build_iommu(params: P.IOMMUParams):
    from .iommu import Iommu

    return Iommu(params)


def generate(params: P.IOMMUParams, path: Path, name: str = "iommu", top: str = "core",
             pins: bool = False) -> Path:
    """Write the Verilog of ``top`` built from ``params`` to ``path``.

    ``top`` defaults to ``"core"`` here because the core's testbench (tb/runner.py) and
    ``make synth`` call this function for the TranslationCore; the command line's
    default is the whole IOMMU. ``pins`` puts it behind ``PinHarness`` (four pins,
    for an in-context place and route; synthesis only)."""
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    if top in BLOCK_TOPS:
        design = RegisteredBoundary(BLOCK_TOPS[top](params))
    else:
        design = build_iommu(params) if top == "iommu" else build_core(params)
    if pins:
        harness = PinHarness(design)
        text = verilog.convert(harness, name=name, emit_src=False,
                               ports=[harness.clk, harness.rst, harness.din, harness.dout])
    else:
        text = verilog.convert(design, name=name, emit_src=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    meta = {"top": top, **asdict(params)}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def parse_overrides(items: list[str]) -> dict[str, int]:
    """``["iotlb_entries=64", "walkers=8"]`` -> dict; one clear error line otherwise."""
    fields = {f for f in P.IOMMUParams.__dataclass_fields__ if f != "capabilities"}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"error: parameter must be NAME=VALUE with NAME one of "
                             f"{', '.join(sorted(fields))}; got {item!r}")
        try:
            out[key] = int(value, 0)
        except ValueError:
            raise SystemExit(f"error: {key} must be an integer, not {value!r}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", choices=TOPS, default="iommu",
                    help="the whole IOMMU (default), the translation core alone, or one "
                         "block inside registers (timing work)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("-o", "--output", type=Path, default=Path("build/iommu.v"))
    ap.add_argument("param", nargs="*", help="overrides such as iotlb_entries=64 walkers=8")
    args = ap.parse_args(argv)
    try:
        params = replace(PRESETS[args.preset], **parse_overrides(args.param))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = generate(params, args.output, top=args.top)
    print(f"wrote {path} (top {args.top}, {params})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
