"""GTKWave save files for the core's waveforms: signals grouped by block, states by name.

``write_savefile(dump, out)`` reads the signal list from the dump (through
``fst2vcd``'s header, or the VCD itself), keeps the signals of each group that
exist, and writes a ``.gtkw`` whose groups tell the story of a translation:

    Request   → IOTLB → Response     (a hit: 2 cycles)
    Slots → Context fetch → Walker 0..n → Memory port   (a miss)

Enum-valued signals (slot and walker states, access, memory op) get a GTKWave
*translate filter file* generated from the Amaranth enum, so the waveform shows
``WAIT_PTE`` rather than ``2``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

# (group, [(signal pattern relative to the top scope, format, filter enum)])
# Formats: "bin" for 1-bit controls, "hex" for vectors, "enum" for decoded states.
GROUPS = [
    ("Clock", [("clk", "bin", None), ("rst", "bin", None)]),
    ("Request", [
        ("request__valid", "bin", None), ("request__ready", "bin", None),
        ("request__payload.tag", "hex", None), ("request__payload.device_id", "hex", None),
        ("request__payload.iova", "hex", None),
        ("request__payload.access", "enum", "Access"),
    ]),
    ("IOTLB", [
        ("iotlb.result__valid", "bin", None), ("iotlb.result__payload.hit", "bin", None),
        ("iotlb.fill__valid", "bin", None), ("iotlb.inval__valid", "bin", None),
    ]),
    ("Response", [
        ("response__valid", "bin", None), ("response__payload.tag", "hex", None),
        ("response__payload.fault", "bin", None), ("response__payload.cause", "dec", None),
        ("response__payload.spa", "hex", None), ("response__payload.mrif", "bin", None),
        ("fault__valid", "bin", None),
    ]),
    ("Miss slots", [(r"slot\d+_state", "enum", "SlotState")]),
    ("Context fetch", [
        ("context_fetch.req__valid", "bin", None), ("context_fetch.res__valid", "bin", None),
        ("context_fetch.ddt_walk", "bin", None), ("context_fetch.pdt_walk", "bin", None),
    ]),
    ("Walkers", [(r"walker\d+\.phase", "enum", "WalkPhase"),
                 (r"walker\d+(\.\w+)?\.walk_state", "enum", "WalkerState"),
                 (r"walker\d+\.msi\.msi_state", "enum", "MsiState")]),
    ("Memory port", [
        ("mem_req__valid", "bin", None), ("mem_req__payload.id", "dec", None),
        ("mem_req__payload.op", "enum", "MemOp"), ("mem_req__payload.addr", "hex", None),
        ("mem_resp__valid", "bin", None), ("mem_resp__payload.id", "dec", None),
        ("mem_resp__payload.rdata", "hex", None),
    ]),
]

# Groups that exist only in the whole IOMMU (rtl/iommu.py); there the core's groups
# above live under the ``core.`` scope.
TOP_GROUPS = [
    ("Registers (MMIO)", [
        ("mmio_req__valid", "bin", None), ("mmio_req__ready", "bin", None),
        ("registers.mmio_req__payload.addr", "hex", None),
        ("registers.mmio_req__payload.write", "bin", None),
        ("registers.mmio_req__payload.wdata", "hex", None),
        ("mmio_resp__valid", "bin", None), ("registers.mmio_resp__payload.rdata", "hex", None),
    ]),
    ("Command queue", [
        ("command_queue.cq_state", "enum", "CommandQueueState"),
        ("command_queue.cqh", "dec", None), ("command_queue.cqt", "dec", None),
        ("command_queue.inval__valid", "bin", None),
        ("command_queue.inval__payload.kind", "enum", "InvalKind"),
        ("core.inval_pending", "bin", None),
    ]),
    ("Fault queue", [
        ("fault_queue.fq_state", "enum", "FaultQueueState"),
        ("fault_queue.fault__valid", "bin", None),
        ("fault_queue.fqh", "dec", None), ("fault_queue.fqt", "dec", None),
    ]),
    ("Interrupts", [("registers.ipsr", "hex", None), ("wsi", "hex", None)]),
]

_FLAGS = {"bin": "@28", "hex": "@22", "dec": "@24", "enum": "@2024"}


def _enum_filters() -> dict[str, list[tuple[int, str]]]:
    from rtl import layouts
    from rtl.core import SlotState

    filters = {
        "Access": [(e.value, e.name) for e in layouts.Access],
        "MemOp": [(e.value, e.name) for e in layouts.MemOp],
        "MemErr": [(e.value, e.name) for e in layouts.MemErr],
        "SlotState": [(e.value, e.name) for e in SlotState],
        "InvalKind": [(e.value, e.name) for e in layouts.InvalKind],
    }
    try:
        from rtl.command_queue import COMMAND_QUEUE_STATES
        from rtl.fault_queue import FAULT_QUEUE_STATES

        filters["CommandQueueState"] = list(enumerate(COMMAND_QUEUE_STATES))
        filters["FaultQueueState"] = list(enumerate(FAULT_QUEUE_STATES))
    except ImportError:
        pass
    try:  # Amaranth FSM states are numbered in declaration order
        from rtl.walker import WALKER_STATES

        filters["WalkerState"] = list(enumerate(WALKER_STATES))
        from rtl.msi import MSI_STATES
        from rtl.walker import _WalkPhase

        filters["WalkPhase"] = [(p.value, p.name) for p in _WalkPhase]
        filters["MsiState"] = list(enumerate(MSI_STATES))
    except ImportError:
        pass
    return filters


def dump_signals(dump: Path) -> list[tuple[str, int]]:
    """(full dotted name, width) of every variable in an FST or VCD."""
    if dump.suffix == ".fst":
        tool = shutil.which("fst2vcd")
        if not tool:
            raise RuntimeError("fst2vcd (from gtkwave) is needed to read FST signal names")
        proc = subprocess.Popen([tool, str(dump)], stdout=subprocess.PIPE, text=True)
        lines = proc.stdout
    else:
        proc, lines = None, dump.open()
    scope, out = [], []
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "$scope":
            scope.append(parts[2])
        elif parts[0] == "$upscope":
            scope.pop()
        elif parts[0] == "$var":
            out.append((".".join(scope + [parts[4]]), int(parts[2])))
        elif parts[0] == "$enddefinitions":
            break
    if proc:
        proc.kill()
    return out


def write_savefile(dump: Path, out: Path) -> Path:
    dump, out = Path(dump).resolve(), Path(out).resolve()
    signals = dump_signals(dump)
    # The core's scope: where request__valid lives (TOP.iommu under Verilator, iommu under Icarus).
    tops = [n[: -len("request__valid")] for n, _ in signals if n.endswith("iommu.request__valid")]
    if not tops:
        raise RuntimeError(f"{dump}: no iommu.request__valid signal; is this a core waveform?")
    top = min(tops, key=len)
    local = {n[len(top):]: w for n, w in signals if n.startswith(top)}
    filters = _enum_filters()
    filter_files = {}
    for name, values in filters.items():
        path = out.parent / f"{out.stem}.{name}.txt"
        path.write_text("".join(f"{v} {label}\n" for v, label in values))
        filter_files[name] = path

    lines = [f'[dumpfile] "{dump}"', f'[savefile] "{out}"', "[size] 1600 900",
             "[sst_expanded] 0", "[signals_width] 320"]
    groups = GROUPS
    if any(name.startswith("core.") for name in local):  # the whole IOMMU: core inside
        inner = {"Miss slots", "IOTLB", "Context fetch", "Walkers"}
        groups = [(g, [((f"core.{p}" if g in inner else p), f, e) for p, f, e in pats])
                  for g, pats in GROUPS[:3]] + TOP_GROUPS[:1] + [
            (g, [((f"core.{p}" if g in inner else p), f, e) for p, f, e in pats])
            for g, pats in GROUPS[3:]] + TOP_GROUPS[1:]
    for group, patterns in groups:
        picked = []
        for pattern, fmt, enum_name in patterns:
            rx = re.compile(pattern if "\\" in pattern else re.escape(pattern))
            for name in sorted(local, key=_natural):
                if rx.fullmatch(name):
                    picked.append((name, fmt, enum_name))
        if not picked:
            continue
        lines += ["@800200", f"-{group}"]
        for name, fmt, enum_name in picked:
            width = local[name]
            ref = f"{top}{name}" + (f"[{width - 1}:0]" if width > 1 else "")
            if fmt == "enum" and enum_name in filter_files:
                lines += [f"^1 {filter_files[enum_name]}", _FLAGS["enum"], ref]
            else:
                lines += [_FLAGS["bin" if width == 1 else fmt], ref]
        lines += ["@1000200", f"-{group}"]
    out.write_text("\n".join(lines) + "\n")
    return out


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m sim.waves DUMP.fst OUT.gtkw")
    print(write_savefile(Path(sys.argv[1]), Path(sys.argv[2])))
