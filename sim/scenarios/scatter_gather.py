"""Scatter-gather: a NIC receives into an application buffer made of scattered frames.

The application's receive buffer is ``frames`` 4 KiB frames, virtually contiguous for
the application but scattered in physical memory (a sorted random half of a pool, so
frames picked next to each other form runs). A message of the buffer's size arrives
as ``mtu``-byte packets. Three ways to land it, each checked byte for byte:

* **no IOMMU, S/G NIC**: the device is passed through (device context with fsc Bare)
  and the driver hands it one descriptor per physically contiguous run of frames;
* **no IOMMU, contiguous NIC**: the device can take only one physically contiguous
  buffer, so it receives into a bounce buffer and the CPU copies into the frames;
* **IOMMU**: the driver maps the frames as one contiguous IOVA range: one descriptor,
  no copy; the price is translations and IOTLB misses.
"""

from __future__ import annotations

import random

from models.devices import StreamNic, fill_pattern

from . import Report, scenario
from .common import PAGE, attach_bare, boot, positive, size_text


def runs(frames: list[int]) -> list[tuple[int, int]]:
    """(physical address, length) of each physically contiguous run, in buffer order."""
    out: list[list[int]] = []
    for f in frames:
        if out and out[-1][0] + out[-1][1] == f:
            out[-1][1] += PAGE
        else:
            out.append([f, PAGE])
    return [(a, n) for a, n in out]


@scenario("scatter_gather",
          "NIC receive into a scattered buffer: S/G descriptors, bounce copy, or one IOVA range",
          params={"frames": (int, 64, "4 KiB frames in the application buffer"),
                  "mtu": (int, 1500, "bytes per packet"),
                  "iotlb": (int, 64, "IOTLB entries")},
          backends=("model", "rtl"), quick={"frames": 16})
def run(backend: str, seed: int, frames: int = 64, mtu: int = 1500, iotlb: int = 64) -> Report:
    positive(frames=frames, mtu=mtu, iotlb=iotlb)
    rng = random.Random(seed)
    plat = boot(backend, iotlb=iotlb)
    mem, drv = plat.memory, plat.driver
    pool = [plat.data_alloc.alloc() for _ in range(2 * frames)]
    app_frames = sorted(rng.sample(pool, frames))
    length = frames * PAGE

    def app_buffer() -> bytes:  # what the application sees through its own mapping
        return b"".join(mem.read(f, PAGE, who="cpu") for f in app_frames)

    rows = {}

    def way(nic, descriptors: int, copied: int, delta, intact: bool) -> dict:
        return {"descriptors": descriptors, "copied": copied,
                "translations": nic.stats.translations, "misses": delta.iotlb_misses,
                "walker_reads": delta.walker_reads, "intact": intact}

    # 1. No IOMMU, NIC with scatter-gather descriptors over the physical runs.
    nic = StreamNic("nic-sg", 0x10, plat.iommu, mem)
    attach_bare(drv, nic.device_id)
    data = fill_pattern(seed << 8 | 1, length)
    before = plat.counters.sample()
    segments = runs(app_frames)
    got = nic.receive_stream(segments, data, mtu)
    delta = plat.counters.sample() - before
    rows["no IOMMU, S/G NIC"] = way(nic, len(segments), 0, delta,
                                     got == length and app_buffer() == data)

    # 2. No IOMMU, NIC that needs one contiguous buffer: bounce buffer + CPU copy.
    nic = StreamNic("nic-bounce", 0x11, plat.iommu, mem)
    attach_bare(drv, nic.device_id)
    bounce = plat.data_alloc.alloc(length)
    data = fill_pattern(seed << 8 | 2, length)
    before = plat.counters.sample()
    got = nic.receive_stream([(bounce, length)], data, mtu)
    copied = 0
    for i, f in enumerate(app_frames):  # the CPU copies the message into the app's frames
        mem.write(f, mem.read(bounce + i * PAGE, PAGE, who="cpu"), who="cpu")
        copied += PAGE
    delta = plat.counters.sample() - before
    rows["no IOMMU, contiguous NIC"] = way(nic, 1, copied, delta,
                                            got == length and app_buffer() == data)

    # 3. IOMMU: the scattered frames mapped as one IOVA range, one descriptor, no copy.
    nic = StreamNic("nic-iommu", 0x20, plat.iommu, mem)
    dom = drv.create_domain()
    drv.attach(nic.device_id, dom)
    iova = drv.map_sg(dom, app_frames, r=True, w=True)
    data = fill_pattern(seed << 8 | 3, length)
    before = plat.counters.sample()
    got = nic.receive_stream([(iova, length)], data, mtu)
    delta = plat.counters.sample() - before
    rows["IOMMU, 1 IOVA range"] = way(nic, 1, 0, delta,
                                       got == length and app_buffer() == data)

    mmu = rows["IOMMU, 1 IOVA range"]
    sg = rows["no IOMMU, S/G NIC"]
    bounce_row = rows["no IOMMU, contiguous NIC"]
    report = Report("scatter_gather")
    report.figures.update({
        "backend": backend,
        "buffer": f"{frames} frames ({size_text(length)}) in {len(segments)} physical runs",
        "packets": -(-length // mtu),
        "descriptors (S/G / bounce / IOMMU)":
            f"{sg['descriptors']} / {bounce_row['descriptors']} / {mmu['descriptors']}",
        "CPU-copied bytes (S/G / bounce / IOMMU)":
            f"{sg['copied']} / {bounce_row['copied']} / {mmu['copied']}",
        "translations with the IOMMU": mmu["translations"],
        "IOTLB misses with the IOMMU": mmu["misses"],
    })
    report.key = ["descriptors (S/G / bounce / IOMMU)", "CPU-copied bytes (S/G / bounce / IOMMU)",
                  "IOTLB misses with the IOMMU"]
    report.details.append(f"{'way':<26}{'descriptors':>12}{'CPU copy':>10}{'transl.':>9}"
                          f"{'misses':>8}")
    for way, r in rows.items():
        report.details.append(f"{way:<26}{r['descriptors']:>12}{r['copied']:>10}"
                              f"{r['translations']:>9}{r['misses']:>8}")
    report.data["ways"] = rows
    report.checks.update({
        "the message is intact in the application buffer, every way":
            all(r["intact"] for r in rows.values()),
        "S/G needs one descriptor per physical run": sg["descriptors"] == len(runs(app_frames)),
        "the bounce buffer costs a CPU copy of the whole message": bounce_row["copied"] == length,
        "the IOMMU needs 1 descriptor and 0 CPU-copied bytes":
            mmu["descriptors"] == 1 and mmu["copied"] == 0,
        "passed-through DMA never misses in the IOTLB":
            sg["misses"] == 0 and bounce_row["misses"] == 0,
        # A sequential stream touches each page in one stretch: one cold miss per page.
        "with the IOMMU each page misses exactly once": mmu["misses"] == frames,
    })
    return report
