"""Camera: multi-MiB frames streamed straight into a video application's buffers.

The video application owns ``buffers`` frame buffers in its own (physically
scattered) memory; the OS maps each as one IOVA range for the camera (zero-copy
capture). The camera writes each frame line by line, one DMA per line, round-robin
over the buffers. The application then reads its buffers: every line must be there,
with no CPU copy in between. The IOTLB's work is sampled per frame.
"""

from __future__ import annotations

import random

from models.devices import Camera
from sim.progress import task

from . import Plot, Report, scenario
from .common import PAGE, boot, positive, size_text


@scenario("camera", "a camera streams multi-MiB frames into a video app's buffers (zero-copy)",
          params={"width": (int, 1920, "pixels per line"),
                  "height": (int, 1080, "lines per frame"),
                  "bpp": (int, 2, "bytes per pixel (2: YUV 4:2:2)"),
                  "frames": (int, 6, "frames captured"),
                  "buffers": (int, 3, "frame buffers in the application's ring"),
                  "iotlb": (int, 64, "IOTLB entries")},
          backends=("model", "rtl"), quick={"width": 320, "height": 240, "frames": 4})
def run(backend: str, seed: int, width: int = 1920, height: int = 1080, bpp: int = 2,
        frames: int = 6, buffers: int = 3, iotlb: int = 64) -> Report:
    positive(width=width, height=height, bpp=bpp, frames=frames, buffers=buffers, iotlb=iotlb)
    rng = random.Random(seed)
    plat = boot(backend, iotlb=iotlb)
    mem, drv = plat.memory, plat.driver
    cam = Camera("camera", 0x30, plat.iommu, mem, width=width, height=height,
                 bytes_per_pixel=bpp)
    dom = drv.create_domain()
    drv.attach(cam.device_id, dom)
    pages = -(-cam.frame_bytes // PAGE)

    # The application's buffers: scattered frames of its memory, one IOVA range each.
    app = []
    for _ in range(buffers):
        frames_of_buffer = [plat.data_alloc.alloc() for _ in range(pages)]
        rng.shuffle(frames_of_buffer)
        app.append((drv.map_sg(dom, frames_of_buffer, r=True, w=True), frames_of_buffer))

    per_frame = []
    last_in_buffer = {}
    with task("camera frames", frames) as bar:
        for n in range(frames):
            iova, _ = app[n % buffers]
            before_tr = cam.stats.translations
            before = plat.counters.sample()
            ok = cam.capture(n, iova)
            d = plat.counters.sample() - before
            translations = cam.stats.translations - before_tr
            per_frame.append({"frame": n, "ok": ok, "translations": translations,
                              "misses": d.iotlb_misses, "hits": translations - d.iotlb_misses,
                              "walker_reads": d.walker_reads})
            last_in_buffer[n % buffers] = n
            bar.advance()

    # The application reads each buffer where the camera left it: no copy in between.
    def buffer_holds(b: int, frame: int) -> bool:
        raw = b"".join(mem.read(f, PAGE, who="app") for f in app[b][1])
        return raw[: cam.frame_bytes] == b"".join(cam.line(frame, y) for y in range(height))

    intact = all(buffer_holds(b, n) for b, n in last_in_buffer.items())
    # Measured, not assumed: bytes anyone but the camera wrote into the app's buffers.
    app_pages = {f >> 12 for _, fs in app for f in fs}
    cpu_copied = sum(r.size for r in mem.log
                     if r.op == "W" and r.who != cam.name and r.addr >> 12 in app_pages)
    misses = [f["misses"] for f in per_frame]
    report = Report("camera")
    report.figures.update({
        "backend": backend,
        "frame": f"{width}x{height}x{bpp} = {size_text(cam.frame_bytes)} ({pages} pages)",
        "frames captured": f"{sum(f['ok'] for f in per_frame)}/{frames}",
        "bytes DMAed": cam.stats.bytes_ok,
        "CPU-copied bytes": cpu_copied,
        "translations": cam.stats.translations,
        "IOTLB misses per frame": f"min {min(misses)} max {max(misses)}",
        "IOTLB hit ratio": f"{1 - sum(misses) / max(cam.stats.translations, 1):.3f}",
    })
    report.key = ["frames captured", "bytes DMAed", "CPU-copied bytes", "IOTLB misses per frame"]
    report.data["per_frame"] = per_frame
    xs = [f["frame"] for f in per_frame]
    report.plots.append(Plot(
        "camera_iotlb.png", f"camera: IOTLB per frame ({size_text(cam.frame_bytes)} frames, "
        f"{buffers} buffers, {iotlb}-entry IOTLB)", "frame", "count",
        {"translations": (xs, [f["translations"] for f in per_frame]),
         "IOTLB hits": (xs, [f["hits"] for f in per_frame]),
         "IOTLB misses": (xs, misses),
         "walker memory reads": (xs, [f["walker_reads"] for f in per_frame])},
        kind="bar", xticklabels=[str(x) for x in xs]))
    report.checks.update({
        "every frame captured": all(f["ok"] for f in per_frame),
        "no CPU copy: only the camera wrote the buffers": cpu_copied == 0,
        "bytes DMAed = frames x frame size": cam.stats.bytes_ok == frames * cam.frame_bytes,
        "the app finds every line in its buffers (zero-copy)": intact,
        # Each page of a frame misses at most once (lines are sequential), and at most
        # `iotlb` pages can survive in the IOTLB from an earlier frame.
        "per-frame misses between pages - IOTLB entries and pages":
            all(max(pages - iotlb, 0) <= m <= pages for m in misses),
        "the first frame misses on every page (cold IOTLB)": misses[0] == pages,
    })
    return report
