"""Issue 5's isolation test on the RTL: 4 VMs and 8 SR-IOV VFs under random and rogue
traffic (``tb/tests/isolation_rtl.py``, the campaign of ``tb/isolation.py``), the whole
IOMMU in lockstep with the reference model. Replay a failure with
``python -m tb.runner tb.tests.isolation_rtl --design rtl.iommu:Iommu --seed N``.
"""

from tb import runner


def test_isolation_on_verilator():
    runner.run("tb.tests.isolation_rtl", sim="verilator", design="rtl.iommu:Iommu",
               extra_env={"ISOLATION_LEGIT": "20", "ISOLATION_STRAY": "10"})
