"""cocotb runs of the translation core (``tb/tests/``) through ``tb.runner``.

Verilator (the default simulator) runs everything; Icarus a short subset, so both
stay working. Builds are cached in ``build/sim_build/``: only the first run after
an RTL change compiles. A failure names the cocotb test, the mismatching request
and the seed; ``python -m tb.runner tb.tests.test_core_basic --seed N --testcase T``
replays it (``--waves`` writes an FST, ``make waves`` opens it).
"""

import shutil
from dataclasses import replace

import pytest

from models import arch
from rtl.params import DEFAULT
from tb import runner

STUB = "tb.tests.stub_core:MemoryEchoCore"


def _need(sim: str) -> None:
    if sim == "icarus" and shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog (iverilog) is not installed")


@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_testbench_on_a_stub(sim):
    """The environment itself (responder, driver, monitors, scoreboard) on a stand-in DUT."""
    _need(sim)
    runner.run("tb.tests.test_tb_selfcheck", sim=sim, design=STUB)


# One pytest item per group of cocotb tests, so pytest-xdist spreads them over the cores.
CORE_GROUPS = {
    "off-bare": ["ddtp_off_blocks_everything", "ddtp_bare_passes_untranslated_through"],
    "sv39": ["one_level_ddt_sv39", "invalidation_makes_table_changes_visible",
             "repeated_page_hits_after_one_walk"],
    "invalidation": ["invalidation_under_traffic"],
    "random-1lvl": ["random_traffic/system=lvl1"],
    "random-2lvl": ["random_traffic/system=lvl2"],
    "random-3lvl": ["random_traffic/system=lvl3"],
    "memory-errors": ["random_traffic_memory_errors"],
    "causes": ["directed_fault_causes"],
}


@pytest.mark.parametrize("group", list(CORE_GROUPS))
def test_core_on_verilator(group):
    runner.run("tb.tests.test_core_basic", sim="verilator", testcase=CORE_GROUPS[group])


def test_core_with_base_format_device_contexts():
    """A build without MSI_FLAT, whose DDT holds base-format (32-byte) DCs with the
    base DDI split (§2.3): the directed causes and a short random 2LVL run, so the
    format the default build no longer uses stays covered on the whole core."""
    params = replace(DEFAULT, capabilities=DEFAULT.capabilities & ~arch.Cap.MSI_FLAT.mask)
    runner.run("tb.tests.test_core_basic", params, sim="verilator",
               testcase=CORE_GROUPS["causes"] + ["random_traffic/system=lvl2/stress=True"],
               extra_env={"IOMMU_TB_TRANSACTIONS": "500"})


def test_core_on_icarus():
    """A short subset on Icarus: the modes without tables and one small random run."""
    _need("icarus")
    runner.run("tb.tests.test_core_basic", sim="icarus",
               testcase=CORE_GROUPS["off-bare"] + ["one_level_ddt_sv39/stress=True",
                                                   "random_traffic/system=lvl1/stress=True"],
               extra_env={"IOMMU_TB_TRANSACTIONS": "200"})
