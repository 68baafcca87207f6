"""The scenarios on the RTL: the tour (a short configuration of each) under cocotb.

The same scenario code as on the model backend (``tests/test_scenarios.py``) runs with
``make_iommu("rtl", ...)`` returning the RTL top; every scenario's own checks must
pass (0 bytes leaked or copied, miss ratios within their bounds, every stray DMA
blocked and reported). Every scenario runs on the RTL, the hypervisor's two
(vm_passthrough, msi_numa: two-stage translation, flat and MRIF-mode MSIs) included.
"""

from sim import rtl_backend


def test_tour_on_rtl(tmp_path):
    report, _wave = rtl_backend.run("tour", 1, {}, tmp_path, waves=False)
    failed = [k for k, ok in report.checks.items() if not ok]
    assert not failed, f"tour on the RTL: {failed}\n" + "\n".join(report.details)
    from sim.scenarios import REGISTRY, load_all

    load_all()  # the tour ran in a subprocess: fill this process's registry too

    ran = int(str(report.figures["scenarios passed"]).split("/")[1])
    assert ran == len(REGISTRY) - 1, report.figures  # every scenario but the tour itself
