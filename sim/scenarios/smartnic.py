"""SmartNIC: the OS offloads a packet filter to a SmartNIC fenced to its buffers.

The OS writes ``packets`` received packets (64-byte slots: source and destination
IPv4 address and port, then payload) into an input ring, and grants the SmartNIC
three buffers through the IOMMU: the input ring read-only, an output ring and a stats
block read-write. The SmartNIC's filter drops packets to blocked ports or from a
blocked /16 and copies the rest to the output ring; the OS checks both rings and the
stats against its own count of what it sent.

Then the SmartNIC's firmware is compromised: it reads the OS's device directory and
another application's frame, writes into the read-only input ring and past its
last buffer. Each DMA must be blocked with its fault record, and the memory log must
show no byte touched outside the three buffers.
"""

from __future__ import annotations

import random

from models import arch
from models.devices import SmartNic

from . import Report, scenario
from .common import PAGE, boot, positive

SLOT = 64
BLOCKED_PORTS = {23, 445, 3389}
BLOCKED_NET = bytes([203, 0])  # 203.0.0.0/16


def make_packet(rng: random.Random, bad: bool) -> bytes:
    src = bytes([10, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)])
    dst_port = rng.choice([80, 443, 53, 8080])
    if bad:
        if rng.random() < 0.5:
            dst_port = rng.choice(sorted(BLOCKED_PORTS))
        else:
            src = BLOCKED_NET + bytes([rng.randrange(256), rng.randrange(1, 255)])
    header = (src + bytes([192, 168, 0, 1]) + rng.randrange(1024, 65536).to_bytes(2, "big")
              + dst_port.to_bytes(2, "big"))
    return header + bytes(rng.randrange(256) for _ in range(SLOT - len(header)))


def verdict(packet: bytes) -> bool:
    """The offloaded program: True to pass the packet."""
    dst_port = int.from_bytes(packet[10:12], "big")
    return dst_port not in BLOCKED_PORTS and packet[:2] != BLOCKED_NET


@scenario("smartnic", "a packet filter offloaded to a SmartNIC fenced to its buffers",
          params={"packets": (int, 256, "packets filtered"),
                  "bad_percent": (int, 30, "percent of packets the filter must drop")},
          backends=("model", "rtl"), quick={"packets": 64})
def run(backend: str, seed: int, packets: int = 256, bad_percent: int = 30) -> Report:
    positive(packets=packets)
    if not 0 <= bad_percent <= 100:
        raise ValueError(f"bad_percent must be 0..100, not {bad_percent}")
    rng = random.Random(seed)
    plat = boot(backend)
    mem, drv = plat.memory, plat.driver
    labels = [rng.random() * 100 < bad_percent for _ in range(packets)]
    sent = [make_packet(rng, bad) for bad in labels]

    ring_pages = -(-packets * SLOT // PAGE)
    in_frames = [plat.data_alloc.alloc() for _ in range(ring_pages)]
    out_frames = [plat.data_alloc.alloc() for _ in range(ring_pages)]
    stats_frame = plat.data_alloc.alloc()
    other_app = plat.data_alloc.alloc()
    mem.write(other_app, b"secret of another application", who="app")
    for i, pkt in enumerate(sent):  # the OS fills the input ring
        mem.write(in_frames[i * SLOT // PAGE] + i * SLOT % PAGE, pkt, who="os")

    nic = SmartNic("smartnic", 0x70, plat.iommu, mem, verdict=verdict)
    dom = drv.create_domain()
    drv.attach(nic.device_id, dom)
    in_ring = drv.map_sg(dom, in_frames, r=True, w=False)
    out_ring = drv.map_sg(dom, out_frames, r=True, w=True)
    stats = drv.map_sg(dom, [stats_frame], r=True, w=True)

    unreadable = nic.run_filter(in_ring, out_ring, stats, SLOT, packets)
    out = b"".join(mem.read(f, PAGE, who="os") for f in out_frames)
    expect_pass = [p for p, bad in zip(sent, labels) if not bad]
    raw_stats = mem.read(stats_frame, 16, who="os")
    stats_pass, stats_drop = (int.from_bytes(raw_stats[i:i + 8], "little") for i in (0, 8))

    # Compromised firmware: DMAs outside the three buffers.
    stray = [
        ("read the OS device directory", False, drv.ddt.ddtp() >> 10 << 12,
         arch.Cause.READ_PAGE_FAULT),
        ("read another application's frame", False, other_app, arch.Cause.READ_PAGE_FAULT),
        ("write the read-only input ring", True, in_ring, arch.Cause.WRITE_PAGE_FAULT),
        ("write past its last buffer", True, stats + PAGE, arch.Cause.WRITE_PAGE_FAULT),
    ]
    before = nic.stats.bytes_ok
    blocked = 0
    for _, write, iova, _ in stray:
        ok = (nic.try_dma_write(iova, b"\xee" * SLOT) if write
              else nic.try_dma_read(iova, SLOT) is not None)
        blocked += not ok
    leaked_by_dma = nic.stats.bytes_ok - before
    records = drv.drain_faults()
    granted = {f >> 12 for f in (*in_frames, *out_frames, stats_frame)}
    outside = sum(r.size for r in mem.accesses_by(nic.name) if r.addr >> 12 not in granted)

    report = Report("smartnic")
    report.figures.update({
        "backend": backend,
        "packets filtered": packets,
        "passed / dropped": f"{nic.passed} / {nic.dropped}",
        "buffers granted": f"{ring_pages} in (R) + {ring_pages} out (RW) + 1 stats (RW) pages",
        "DMAs outside the buffers blocked": f"{blocked}/{len(stray)}",
        "fault records": len(records),
        "bytes touched outside the buffers": outside,
    })
    report.key = ["passed / dropped", "DMAs outside the buffers blocked",
                  "bytes touched outside the buffers"]
    report.details += [f"fault: cause {r.cause} ({arch.Cause(r.cause).name}) dev "
                       f"{r.device_id:#x} iova {r.iotval:#x}" for r in records]
    report.checks.update({
        "every packet read from the input ring": unreadable == 0,
        "the filter passed exactly the good packets, in order":
            out[: len(expect_pass) * SLOT] == b"".join(expect_pass),
        "stats block agrees with the OS's count":
            (stats_pass, stats_drop) == (len(expect_pass), packets - len(expect_pass)),
        "every DMA outside the buffers blocked": blocked == len(stray) and leaked_by_dma == 0,
        "each blocked DMA has its fault record": sorted((r.cause, r.iotval) for r in records)
            == sorted((int(c), t) for _, _, t, c in stray),
        "no byte touched outside the buffers": outside == 0,
    })
    return report
