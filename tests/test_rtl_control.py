"""cocotb runs of the whole IOMMU (``rtl/iommu.py``) programmed by the OS driver model.

Each test in ``tb/tests/test_control.py`` runs the RTL and the reference model in
lockstep (every register read, translation and, at the end, memory compared) or,
for the race, checks that no page is translated after its unmap was fenced.
``make regress`` runs the race much longer (``RACE_OPERATIONS``).
"""

import pytest

from tb import runner

TOP = "rtl.iommu:Iommu"
GROUPS = {
    "driver-lockstep": ["driver_programs_rtl_and_model_alike"],
    "queue-errors": ["queue_error_paths"],
    "race": ["map_unmap_race"],
    "fuzz": ["fuzz_registers_commands_traffic"],
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_control_on_verilator(group):
    runner.run("tb.tests.test_control", sim="verilator", testcase=GROUPS[group], design=TOP,
               extra_env={"RACE_OPERATIONS": "400"})
