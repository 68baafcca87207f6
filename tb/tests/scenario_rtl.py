"""Runs one scenario (``sim/scenarios``) with the RTL IOMMU under cocotb.

``python -m sim run NAME --backend rtl`` builds the ``Iommu`` top and runs this
module (through ``tb.runner``) with the scenario's name, seed and parameters in the
environment. The scenario's code is the same blocking code the model backend runs:
it executes in a cocotb bridge thread and reaches the RTL through
``tb.rtl_iommu.RtlIommu``, whose doors resume the simulation. The report is written
pickled for the parent process to print.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import cocotb
from cocotb.task import bridge, resume

from models.memory import Memory
from tb.rtl_iommu import RtlIommu
from tb.top_env import TopTB


@cocotb.test()
async def scenario(dut):
    from sim import scenarios

    name = os.environ["SCENARIO"]
    params = json.loads(os.environ.get("SCENARIO_PARAMS", "{}"))
    seed = int(os.environ.get("SCENARIO_SEED", "1"))
    out = Path(os.environ["SCENARIO_REPORT"])
    latency = int(os.environ.get("SCENARIO_MEMORY_LATENCY", "10"))

    tb = TopTB(dut, Memory(), seed=seed, latency=latency)
    await tb.reset()
    made = []

    def factory(memory: Memory, **_options):
        """The scenario's memory becomes what the RTL's memory port serves; a second
        IOMMU in one run (the tour boots one per scenario) is the same RTL, reset."""
        if made:
            resume(tb.reset)()
        tb.responder.memory = memory
        iommu = RtlIommu(tb)
        made.append(iommu)
        return iommu

    scenarios.load_all()
    scenarios.set_rtl_factory(factory)
    report = await bridge(scenarios.REGISTRY[name].func)("rtl", seed, **params)
    tb.check_protocol()
    rtl = {"cycles": tb.cycle, "memory": tb.responder.stats(),
           "commands": made[0].commands_completed if made else 0}
    out.write_bytes(pickle.dumps((report, rtl)))  # the parent prints and saves it
