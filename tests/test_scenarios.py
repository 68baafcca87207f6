"""Every scenario in its short configuration, with its key figures checked against
bounds derived from the configuration (not copied from a run)."""

import io
import json
import math

import pytest

from models.iommu import IOMMU
from models.memory import Memory
from sim import progress
from sim.report import save_report
from sim.scenarios import REGISTRY, BackendError, load_all, make_iommu
from sim.scenarios.common import PAGE, CycleModel, boot
from sim.scenarios.scatter_gather import runs

load_all()
SEED = 3  # every scenario is seeded; a failure names it


def run(name, seed=SEED, **params):
    sc = REGISTRY[name]
    report = sc.func("model", seed, **{**sc.quick, **params})
    failed = [k for k, ok in report.checks.items() if not ok]
    assert not failed, f"{name} seed={seed}: failed checks {failed}"
    return report


@pytest.mark.parametrize("name", sorted(n for n in REGISTRY if n != "tour"))
def test_every_scenario_passes_in_its_short_configuration(name):
    report = run(name)
    assert report.figures["backend"] == "model"


def test_make_iommu_is_the_one_factory():
    assert isinstance(make_iommu("model", Memory(), iotlb_entries=8), IOMMU)
    with pytest.raises(BackendError, match="backend 'fpga' is not available; available: model"):
        make_iommu("fpga", Memory())


def test_hpm_counters_agree_with_the_models_own_statistics():
    plat = boot("model", iotlb=4)
    from models.devices import DmaDevice

    dev = DmaDevice("d", 0x9, plat.iommu, plat.memory)
    dom = plat.driver.create_domain()
    plat.driver.attach(dev.device_id, dom)
    iova, _ = plat.driver.map_buffer(dom, 16 * PAGE)
    before = plat.counters.sample()
    engine_before = dict(plat.iommu.engine.stats)
    for i in (0, 1, 2, 0, 5, 9, 1, 15, 0):
        dev.dma_read(iova + i * PAGE, 8)
    d = plat.counters.sample() - before
    stats = plat.iommu.engine.stats
    assert d.iotlb_misses == stats["iotlb_misses"] - engine_before["iotlb_misses"]
    assert d.walks == stats["fs_walks"] - engine_before["fs_walks"]
    assert d.walker_reads == 3 * d.walks  # Sv39, 4 KiB leaves, no walk cache in the model


def test_scatter_gather_figures():
    frames, mtu = 24, 1000
    rows = run("scatter_gather", frames=frames, mtu=mtu).data["ways"]
    sg, bounce, mmu = (rows["no IOMMU, S/G NIC"], rows["no IOMMU, contiguous NIC"],
                       rows["IOMMU, 1 IOVA range"])
    assert 1 <= sg["descriptors"] <= frames and sg["copied"] == 0
    assert bounce["copied"] == frames * PAGE
    assert mmu["descriptors"] == 1 and mmu["copied"] == 0
    # Each packet needs at least one translation, and each page one miss.
    assert mmu["translations"] >= math.ceil(frames * PAGE / mtu)
    assert mmu["misses"] == frames


def test_runs_merge_adjacent_frames_only():
    assert runs([0x1000, 0x2000, 0x4000, 0x5000, 0x3000]) == [
        (0x1000, 0x2000), (0x4000, 0x2000), (0x3000, 0x1000)]


def test_camera_reuses_translations_when_its_buffer_fits_the_iotlb():
    width, height, bpp, iotlb = 256, 32, 2, 64
    pages = -(-width * height * bpp // PAGE)
    assert pages <= iotlb
    report = run("camera", width=width, height=height, bpp=bpp, frames=3, buffers=1,
                 iotlb=iotlb)
    misses = [f["misses"] for f in report.data["per_frame"]]
    assert misses == [pages, 0, 0]
    assert report.figures["bytes DMAed"] == 3 * width * height * bpp
    assert report.figures["CPU-copied bytes"] == 0


def test_camera_misses_every_page_when_the_ring_outgrows_the_iotlb():
    width, height, iotlb = 512, 64, 16
    pages = -(-width * height * 2 // PAGE)  # 16 pages per frame, 3 buffers: 48 > 16
    report = run("camera", width=width, height=height, frames=4, buffers=3, iotlb=iotlb)
    assert all(f["misses"] == pages for f in report.data["per_frame"])


@pytest.mark.parametrize("mib, tlp", [(2, 1024), (4, 512)])
def test_huge_pages_figures(mib, tlp):
    r = run("huge_pages", mib=mib, tlp=tlp).data["configs"]
    small, huge = r["4 KiB pages"], r["2 MiB pages"]
    length = mib << 20
    assert small["translations"] == huge["translations"] == length // tlp
    assert small["misses"] == length // PAGE
    assert huge["misses"] == length // (2 << 20)
    assert small["miss_ratio"] == pytest.approx(tlp / PAGE)
    model = CycleModel()
    assert small["cycles"] == pytest.approx(
        max(length / model.link_bytes_per_cycle, length // tlp)
        + small["walker_reads"] * model.mem_latency / model.walkers)
    assert huge["bytes_per_cycle"] > small["bytes_per_cycle"]


def test_dma_window_shows_the_iotlb_reach():
    iotlb, reads = 16, 200
    rows = run("dma_window", max_mib=2, reads=reads, iotlb=iotlb).data["rows"]
    reach = iotlb * PAGE
    for r in rows["4 KiB pages"]:
        if r["window"] <= reach:
            assert r["misses"] == 0, r
        else:  # P(miss) = 1 - reach/window for uniform reads; 5 sigma
            p = 1 - reach / r["window"]
            assert abs(r["miss_ratio"] - p) <= 5 * math.sqrt(p * (1 - p) / reads) + 1 / reads, r
    bare, small = rows["no translation"][-1], rows["4 KiB pages"][-1]
    assert small["bytes_per_cycle"] < bare["bytes_per_cycle"] / 2
    assert all(r["misses"] == 0 for r in rows["2 MiB pages"])


def test_microkernel_figures():
    report = run("microkernel", buffers=4, packets=10)
    assert report.figures["granted pages"].startswith("5 ")
    assert report.figures["packets received by the driver"] == "10/10"
    assert report.figures["messages"] == 10 + 3  # interrupts + the 3 stray DMAs' faults


@pytest.mark.parametrize("bad, passed_all, dropped_all", [(0, True, False), (100, False, True)])
def test_smartnic_filter_extremes(bad, passed_all, dropped_all):
    packets = 40
    report = run("smartnic", packets=packets, bad_percent=bad)
    passed, dropped = map(int, report.figures["passed / dropped"].split(" / "))
    assert passed + dropped == packets
    assert (passed == packets) == passed_all and (dropped == packets) == dropped_all
    assert report.figures["bytes touched outside the buffers"] == 0


def test_tour_runs_every_scenario_once():
    report = REGISTRY["tour"].func("model", SEED)
    names = [r["scenario"] for r in report.data["rows"]]
    assert sorted(names) == sorted(n for n in REGISTRY if n != "tour")
    assert report.passed, report.details


def test_reports_save_their_plots(tmp_path):
    report = run("dma_window", max_mib=1, reads=32)
    files = save_report(report, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["plots"] == ["dma_window.png"]
    assert (tmp_path / "dma_window.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(files) == 2


def test_progress_bar_draws_only_when_enabled():
    out = io.StringIO()
    progress.enable(False, out)
    with progress.task("x", 3) as bar:
        bar.advance(3)
    assert out.getvalue() == ""
    progress.enable(True, out)
    try:
        with progress.task("work", 4) as bar:
            for _ in range(4):
                bar.advance()
    finally:
        progress.enable(False)
    assert "work [" in out.getvalue() and "100% 4/4" in out.getvalue()
