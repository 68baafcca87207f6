"""Verilog generation: ``python -m rtl.generate [--top iommu|core] [--preset default] [-o build/iommu.v]``.

``--top iommu`` (the default) is the whole IOMMU (rtl/iommu.py: registers, queues,
HPM, interrupts, debug translation, one memory port); ``--top core`` the translation
core alone (rtl/core.py), as the core's cocotb tests use it. Either way the module is
named ``iommu``; ports keep the Amaranth signature names
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

from . import params as P

PRESETS = {"small": P.SMALL, "default": P.DEFAULT, "large": P.LARGE}


TOPS = ("iommu", "core")


def build_core(params: P.IOMMUParams):
    from .core import TranslationCore

    return TranslationCore(params)


def build_iommu(params: P.IOMMUParams):
    from .iommu import Iommu

    return Iommu(params)


def generate(params: P.IOMMUParams, path: Path, name: str = "iommu", top: str = "core") -> Path:
    """Write the Verilog of ``top`` built from ``params`` to ``path``.

    ``top`` defaults to ``"core"`` here because the core's testbench (tb/runner.py) and
    ``make synth`` call this function for the TranslationCore; the command line's
    default is the whole IOMMU."""
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    design = build_iommu(params) if top == "iommu" else build_core(params)
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
                    help="the whole IOMMU (default) or the translation core alone")
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
