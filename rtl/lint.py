"""``python -m rtl.lint build/iommu.v``: Verilator lint with warnings waived by name."""

from __future__ import annotations

import subprocess
import sys

from .toolchain import VERILATOR_WAIVERS, verilator_env


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m rtl.lint FILE.v", file=sys.stderr)
        return 2
    cmd = ["verilator", "--lint-only", "-Wall", *VERILATOR_WAIVERS, "--top-module", "iommu",
           argv[0]]
    result = subprocess.run(cmd, env=verilator_env())
    if result.returncode == 0:
        print(f"lint clean: {argv[0]} (waived: {' '.join(w[5:] for w in VERILATOR_WAIVERS)})")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
