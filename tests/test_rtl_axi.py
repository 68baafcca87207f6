"""The AXI4 wrapper (``rtl/axi_top.py`` ``AxiIommu``): cocotb runs and Verilog generation.

``tb/tests/test_axi.py`` drives the wrapper with cocotbext-axi models only (AXI-Lite
CPU, AXI4 device, AXI4 memories), programmed by the OS driver model and judged by the
reference model, and MSIs of a hypervisor's VF to memory-resident interrupt files
judged by the hypervisor model's bridge; once with the IOMMU's own memory port separate
(``m_axi_mem``) and 64-bit data, once merged onto ``m_axi`` with 128-bit data and 48-bit
IOVAs. Replay a failure with
``python -m tb.runner tb.tests.test_axi --design rtl.axi_top:AxiIommu --seed N``.
"""

import re
import subprocess
import sys
from dataclasses import replace

import pytest

from models.arch import Cap
from rtl.params import DEFAULT
from tb import runner

#: Separate memory ports with the default widths; merged ports with 128-bit data.
DESIGNS = {"separate": "rtl.axi_top:AxiIommu", "merged-128": "rtl.axi_top:merged_wide"}
#: The default IOMMU with what the MRIF test needs named explicitly (G-stage, flat MSI
#: page tables, MRIF-mode MSI PTEs), whatever ``rtl.params`` advertises by default.
PARAMS = replace(DEFAULT, capabilities=DEFAULT.capabilities | Cap.SV39X4.put(1)
                 | Cap.MSI_FLAT.put(1) | Cap.MSI_MRIF.put(1))


@pytest.mark.parametrize("ports", list(DESIGNS))
def test_axi_iommu_on_verilator(ports):
    runner.run("tb.tests.test_axi", params=PARAMS, sim="verilator", design=DESIGNS[ports],
               testcase=["dma_through_axi", "dma_through_axi_stressed", "mrif_msi_through_axi",
                         "mrif_msi_through_axi_stressed"],
               extra_env={"AXI_TB_BURSTS": "160"})


#: The wrapper's own modules in the generated Verilog (the rest is rtl/iommu.py's).
WRAPPER_MODULES = re.compile(r"^module \\?axi_iommu(\.(dma|registers|memory_port|merge)\S*)?[ (]")


def module_at(lines: list[str], line: int) -> str:
    """The ``module`` header enclosing 1-based ``line``."""
    for text in reversed(lines[:line]):
        if text.startswith("module "):
            return text
    return ""


@pytest.mark.parametrize("merge", [False, True])
def test_generated_verilog_is_lint_clean(tmp_path, merge):
    """The CLI writes the Verilog and lists the ports; Verilator -Wall (with the project's
    waivers) finds nothing in the wrapper's modules. Warnings inside the wrapped Iommu
    are reported by ``python -m rtl.lint`` on ``rtl.generate``'s output, not here."""
    from rtl.toolchain import VERILATOR_WAIVERS, verilator_env

    out = tmp_path / "axi_iommu.v"
    args = [sys.executable, "-m", "rtl.axi_top", "-o", str(out), "--preset", "small"]
    result = subprocess.run(args + (["--merge"] if merge else []), capture_output=True,
                            text=True, check=True)
    assert "s_axi_awuser" in result.stdout and "s_axil_wdata" in result.stdout
    assert ("m_axi_mem_arvalid" in result.stdout) is not merge
    lines = out.read_text().splitlines()
    assert any(line.startswith("module axi_iommu(") for line in lines)
    lint = subprocess.run(["verilator", "--lint-only", "-Wall", *VERILATOR_WAIVERS,
                           "--top-module", "axi_iommu", str(out)], env=verilator_env(),
                          capture_output=True, text=True, check=False)
    ours = []
    for warning in re.finditer(rf"^%\w+-(\w+): {re.escape(str(out))}:(\d+):", lint.stderr,
                               re.MULTILINE):
        module = module_at(lines, int(warning.group(2)))
        if WRAPPER_MODULES.match(module):
            ours.append(f"{warning.group(1)} at line {warning.group(2)} in {module[:60]}")
    assert not ours, "lint warnings in the AXI wrapper:\n  " + "\n  ".join(ours)
    assert "%Error" not in lint.stderr.replace("%Error: Exiting due to", ""), lint.stderr[-3000:]
