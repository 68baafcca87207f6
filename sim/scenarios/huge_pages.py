"""Huge pages: the same large streaming DMA mapped with 4 KiB pages and with 2 MiB pages.

A storage controller streams ``mib`` MiB into a physically contiguous buffer in
requests of ``tlp`` bytes (its maximum payload), each translated on its own. The OS
maps a buffer with 4 KiB leaves for one device and with 2 MiB leaves for another,
and flushes the IOTLB before each stream. IOTLB misses and walks come from the HPM counters, walker memory reads
from the memory log, cycles from ``common.CycleModel`` (the model backend has no
clock).
"""

from __future__ import annotations

from models.devices import DmaDevice, fill_pattern
from sim.progress import task

from . import Plot, Report, scenario
from .common import MIB, CycleModel, boot, flush_iotlb, positive, size_text

SIZES = {"4 KiB pages": 4096, "2 MiB pages": 2 * MIB}
CHUNK = 64 * 1024  # bytes per DMA command the controller runs


@scenario("huge_pages", "a large streaming DMA mapped with 4 KiB vs 2 MiB pages: misses, cycles",
          params={"mib": (int, 8, "MiB streamed"),
                  "tlp": (int, 256, "bytes per DMA request (max payload), 64..4096"),
                  "iotlb": (int, 64, "IOTLB entries"),
                  "mem_latency": (int, 40, "cycles per page-table read (cycle model)"),
                  "walkers": (int, 4, "walks in flight (cycle model)")},
          backends=("model", "rtl"), quick={"mib": 4, "tlp": 1024})
def run(backend: str, seed: int, mib: int = 8, tlp: int = 256, iotlb: int = 64,
        mem_latency: int = 40, walkers: int = 4) -> Report:
    positive(mib=mib, iotlb=iotlb, mem_latency=mem_latency, walkers=walkers)
    if tlp < 64 or tlp > 4096 or tlp & (tlp - 1):
        raise ValueError(f"tlp must be a power of two in 64..4096, not {tlp}")
    cycle_model = CycleModel(mem_latency=mem_latency, walkers=walkers)
    length = mib * MIB
    results = {}
    plat = boot(backend, iotlb=iotlb)  # one IOMMU per run (the RTL backend has one)
    drv = plat.driver
    with task("huge_pages requests", 2 * length // CHUNK) as bar:
        for n, (label, page) in enumerate(SIZES.items()):
            dev = DmaDevice(f"storage{n}", 0x40 + n, plat.iommu, plat.memory, max_request=tlp)
            dom = drv.create_domain()
            drv.attach(dev.device_id, dom)
            iova, pa = drv.map_buffer(dom, length, page=page, r=True, w=True)
            flush_iotlb(drv)
            before = plat.counters.sample()
            aborted = 0
            for off in range(0, length, CHUNK):
                aborted += not dev.try_dma_write(iova + off, fill_pattern(seed + off, CHUNK))
                bar.advance()
            d = plat.counters.sample() - before
            landed = all(plat.memory.read(pa + off, CHUNK) == fill_pattern(seed + off, CHUNK)
                         for off in range(0, length, CHUNK))
            cycles = cycle_model.cycles(dev.stats.bytes_ok, dev.stats.translations,
                                        d.walker_reads)
            results[label] = {"page": page, "translations": dev.stats.translations,
                               "misses": d.iotlb_misses, "walks": d.walks,
                               "walker_reads": d.walker_reads, "cycles": cycles,
                               "bytes": dev.stats.bytes_ok,
                               "bytes_per_cycle": dev.stats.bytes_ok / cycles,
                               "miss_ratio": d.iotlb_misses / dev.stats.translations,
                               "ok": aborted == 0 and landed}

    small, huge = results["4 KiB pages"], results["2 MiB pages"]
    report = Report("huge_pages")
    report.figures.update({
        "backend": backend,
        "stream": f"{size_text(length)} in {tlp}-byte requests",
        "cycle model": cycle_model.describe(),
    })
    for label, r in results.items():
        report.figures[f"{label}: misses / walks / walker reads"] = (
            f"{r['misses']} / {r['walks']} / {r['walker_reads']}")
        report.figures[f"{label}: miss ratio"] = f"{r['miss_ratio']:.5f}"
        report.figures[f"{label}: cycles, bytes/cycle"] = (
            f"{r['cycles']:.0f}, {r['bytes_per_cycle']:.2f}")
    report.figures["2 MiB vs 4 KiB throughput"] = (
        f"{huge['bytes_per_cycle'] / small['bytes_per_cycle']:.2f}x")
    report.key = ["4 KiB pages: misses / walks / walker reads",
                  "2 MiB pages: misses / walks / walker reads", "2 MiB vs 4 KiB throughput"]
    report.data["configs"] = results
    names = list(results)
    report.plots.append(Plot(
        "huge_pages.png", f"huge_pages: {size_text(length)} stream, {tlp}-byte requests",
        "", "count (log)",
        {k: (names, [results[n][k] for n in names])
         for k in ("translations", "misses", "walker_reads")},
        kind="bar", logy=True, xticklabels=names))

    def pages_of(page):  # pages the stream touches: each misses once (sequential stream)
        return -(-length // page)
    # Sv39 (the driver's scheme): a 4 KiB leaf is 3 levels down, a 2 MiB leaf 2.
    report.checks.update({
        "every byte landed, both mappings": small["ok"] and huge["ok"],
        "4 KiB pages: one miss per page": small["misses"] == pages_of(4096),
        "2 MiB pages: one miss per 2 MiB page": huge["misses"] == pages_of(2 * MIB),
        "4 KiB miss ratio = request / page size":
            small["miss_ratio"] == pages_of(4096) / small["translations"],
        "walker reads between 1 and 3 per walk (4 KiB), 1 and 2 (2 MiB)":
            small["walks"] <= small["walker_reads"] <= 3 * small["walks"]
            and huge["walks"] <= huge["walker_reads"] <= 2 * huge["walks"],
        "2 MiB pages are at least as fast": huge["bytes_per_cycle"] >= small["bytes_per_cycle"],
    })
    return report
