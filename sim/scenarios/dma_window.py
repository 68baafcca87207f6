"""DMA window: 64-byte random DMA reads over windows of 4 KiB to 64 MiB.

A device reads 64-byte blocks at random offsets in a window of growing size, as
pcie-bench does (Neugebauer et al., "Understanding PCIe performance for end host
networking", SIGCOMM 2018). Three configurations, one device each, the IOTLB
flushed before each: no
translation (device context with fsc Bare), the window mapped with 4 KiB pages,
and with 2 MiB pages. Before measuring, each window is warmed (its first pages, up
to the IOTLB's size, are touched) so that the figures are steady-state ones.

Throughput is from ``common.CycleModel``. With ``iotlb`` entries of 4 KiB the IOTLB
reaches ``iotlb * 4 KiB``; beyond it a uniformly random read hits with probability
``reach / window``, and throughput falls. pcie-bench saw the same shape on Intel
hosts: 4 KiB pages lost about two thirds of their throughput beyond a 256-512 KiB
window.
"""

from __future__ import annotations

import math
import random

from models.devices import DmaDevice
from sim.progress import task

from . import Plot, Report, scenario
from .common import MIB, PAGE, CycleModel, attach_bare, boot, flush_iotlb, positive, size_text

READ = 64  # bytes per DMA read
PHYS_BASE = 0x2_0000_0000  # the window's physical memory (2 MiB aligned; never allocated,
#                            the sparse memory reads zeros)
CONFIGS = {"no translation": None, "4 KiB pages": PAGE, "2 MiB pages": 2 * MIB}


@scenario("dma_window", "64-byte random DMA reads over 4 KiB..64 MiB windows: IOTLB reach",
          params={"max_mib": (int, 64, "largest window in MiB (a power of two)"),
                  "reads": (int, 256, "measured reads per window and configuration"),
                  "iotlb": (int, 64, "IOTLB entries"),
                  "mem_latency": (int, 40, "cycles per page-table read (cycle model)"),
                  "walkers": (int, 4, "walks in flight (cycle model)")},
          backends=("model", "rtl"), quick={"max_mib": 4, "reads": 128})
def run(backend: str, seed: int, max_mib: int = 64, reads: int = 256, iotlb: int = 64,
        mem_latency: int = 40, walkers: int = 4) -> Report:
    positive(max_mib=max_mib, reads=reads, iotlb=iotlb, mem_latency=mem_latency,
             walkers=walkers)
    if max_mib & (max_mib - 1):
        raise ValueError(f"max_mib must be a power of two, not {max_mib}")
    rng = random.Random(seed)
    cycle_model = CycleModel(mem_latency=mem_latency, walkers=walkers)
    max_window = max_mib * MIB
    windows = [PAGE << i for i in range(int(math.log2(max_window // PAGE)) + 1)]
    rows = {name: [] for name in CONFIGS}
    plat = boot(backend, iotlb=iotlb)  # one IOMMU per run (the RTL backend has one)
    # The RTL's IOTLB size is fixed when it is built (its preset): use what it has.
    iotlb = getattr(plat.iommu, "iotlb_entries", iotlb)
    with task("dma_window", len(CONFIGS) * len(windows)) as bar:
        for n, (name, page) in enumerate(CONFIGS.items()):
            dev = DmaDevice(f"reader{n}", 0x50 + n, plat.iommu, plat.memory, max_request=READ)
            if page is None:
                attach_bare(plat.driver, dev.device_id)
                base = PHYS_BASE
            else:
                dom = plat.driver.create_domain()
                plat.driver.attach(dev.device_id, dom)
                mapped = -(-max_window // page) * page  # whole pages cover the largest window
                base = dom.alloc_iova(mapped, align=2 * MIB)
                dom.table.map_range(base, PHYS_BASE, mapped, size=page, r=True, w=False)
            flush_iotlb(plat.driver)
            for window in windows:
                pages = -(-window // (page or PAGE))
                for i in range(min(pages, iotlb)):  # warm: fill the IOTLB with this window
                    dev.dma_read(base + i * (page or PAGE), READ)
                before_tr = dev.stats.translations
                before = plat.counters.sample()
                failed = 0
                for _ in range(reads):
                    offset = rng.randrange(window // READ) * READ
                    failed += dev.try_dma_read(base + offset, READ) is None
                d = plat.counters.sample() - before
                translations = dev.stats.translations - before_tr
                cycles = cycle_model.cycles(reads * READ, translations, d.walker_reads)
                # What-if: a page-walk cache holding every non-leaf entry (as Intel's
                # VT-d caches do) leaves one memory read per miss.
                cycles_pwc = cycle_model.cycles(reads * READ, translations, d.iotlb_misses)
                rows[name].append({"window": window, "pages": pages, "misses": d.iotlb_misses,
                                   "miss_ratio": d.iotlb_misses / reads,
                                   "walker_reads": d.walker_reads, "failed": failed,
                                   "bytes_per_cycle": reads * READ / cycles,
                                   "bytes_per_cycle_pwc": reads * READ / cycles_pwc})
                plat.counters.drop_log()  # keep memory use flat over the sweep
                bar.advance()

    bare, small, huge = rows["no translation"], rows["4 KiB pages"], rows["2 MiB pages"]
    reach = iotlb * PAGE
    beyond = [i for i, r in enumerate(small) if r["window"] >= 4 * reach]

    def kept_beyond(key):  # mean fraction of untranslated throughput beyond 4x reach
        if not beyond:
            return None
        return sum(small[i][key] / bare[i]["bytes_per_cycle"] for i in beyond) / len(beyond)
    kept, kept_pwc = kept_beyond("bytes_per_cycle"), kept_beyond("bytes_per_cycle_pwc")

    report = Report("dma_window")
    report.figures.update({
        "backend": backend,
        "reads": f"{reads} x {READ} B per window, windows {size_text(windows[0])}.."
                 f"{size_text(windows[-1])}",
        "cycle model": cycle_model.describe(),
        "IOTLB reach (4 KiB pages)": size_text(reach),
        "4 KiB pages beyond 4x reach": (f"{kept * 100:.0f}% of untranslated throughput"
                                        if kept is not None else "n/a (windows too small)"),
        "  ... with a page-walk cache": (f"{kept_pwc * 100:.0f}% (what-if: 1 read per miss)"
                                         if kept_pwc is not None else "n/a"),
        "pcie-bench (SIGCOMM 2018)": "about 33% (2/3 lost) beyond 256-512 KiB, Intel hosts",
    })
    report.key = ["IOTLB reach (4 KiB pages)", "4 KiB pages beyond 4x reach"]
    report.details.append(f"{'window':>9}{'no transl.':>12}{'4 KiB':>8}{'2 MiB':>8}"
                          f"{'4K miss ratio':>15}   (bytes/cycle)")
    for b, s, h in zip(bare, small, huge):
        report.details.append(f"{size_text(b['window']):>9}{b['bytes_per_cycle']:>12.2f}"
                              f"{s['bytes_per_cycle']:>8.2f}{h['bytes_per_cycle']:>8.2f}"
                              f"{s['miss_ratio']:>15.3f}")
    report.data["rows"] = rows
    report.plots.append(Plot(
        "dma_window.png", f"64 B random DMA reads, {iotlb}-entry IOTLB", "window (bytes)",
        "bytes / cycle (cycle model)",
        {name: ([r["window"] for r in rs], [r["bytes_per_cycle"] for r in rs])
         for name, rs in rows.items()},
        logx=True, vlines=[(reach, f"4 KiB reach {size_text(reach)}")],
        xticklabels=[size_text(w) for w in windows]))

    def expected_miss_band(r):
        # Uniform random reads over `pages` pages with the IOTLB full of this window's
        # pages: P(miss) = 1 - iotlb/pages. 5 standard deviations either side.
        p = max(0.0, 1 - iotlb / r["pages"])
        slack = 5 * math.sqrt(p * (1 - p) / reads) + 1 / reads
        return p - slack <= r["miss_ratio"] <= p + slack
    report.checks.update({
        "every read translated": all(r["failed"] == 0 for rs in rows.values() for r in rs),
        "no misses while the window fits the IOTLB":
            all(r["misses"] == 0 for rs in (small, huge) for r in rs if r["pages"] <= iotlb),
        "4 KiB miss ratio follows 1 - reach/window": all(map(expected_miss_band, small)),
        "2 MiB pages run at the untranslated rate for every window":
            all(h["bytes_per_cycle"] == b["bytes_per_cycle"] for b, h in zip(bare, huge)),
        "4 KiB pages lose throughput beyond the reach":
            not beyond or all(small[i]["bytes_per_cycle"] < bare[i]["bytes_per_cycle"]
                              for i in beyond),
    })
    return report
