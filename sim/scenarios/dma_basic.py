"""Default scenario: an OS maps a buffer, a NIC DMAs into it, stray DMAs fault.

The OS maps 16 scattered physical frames as one contiguous 64 KiB IOVA range
(zero-copy receive), attaches a NIC to that domain and lets it receive packets.
Then the NIC is pointed outside its grant (past the end of the buffer, at a
page-table frame's address, and with a write to a read-only page): each of
those DMAs must be blocked and reported in the fault queue with the right cause.
"""

from __future__ import annotations

import random

from models import arch
from models.devices import Nic
from models.memory import FrameAllocator, Memory
from models.os.driver import IommuDriver

from . import Report, make_iommu, scenario
from .common import Counters

PAGE = arch.PAGE_SIZE


@scenario("default", "OS maps a scattered buffer, a NIC DMAs into it, stray DMAs fault",
          params={"frames": (int, 16, "4 KiB frames in the receive buffer"),
                  "packets": (int, 64, "packets the NIC receives"),
                  "iotlb": (int, 64, "IOTLB entries of the model")},
          backends=("model", "rtl"))
def run(backend: str, seed: int, frames: int = 16, packets: int = 64, iotlb: int = 64) -> Report:
    if frames < 1 or packets < 0 or iotlb < 0:
        raise ValueError("frames must be >= 1, packets and iotlb >= 0")
    rng = random.Random(seed)
    memory = Memory()
    iommu = make_iommu(backend, memory, iotlb_entries=iotlb)
    os_alloc = FrameAllocator(memory, base=0x4000_0000, size=1 << 28)
    driver = IommuDriver(iommu, memory, os_alloc)
    driver.init()
    counters = Counters(driver)  # HPM: works on any backend that advertises it

    # Application buffer: scattered physical frames (every other frame, shuffled).
    data_alloc = FrameAllocator(memory, base=0x1_0000_0000, size=1 << 30)
    pool = [data_alloc.alloc() for _ in range(frames * 2)]
    buffer_frames = rng.sample(pool, frames)
    dom = driver.create_domain()
    nic = Nic("nic", 0x0100, iommu, memory)
    driver.attach(nic.device_id, dom)
    iova = driver.map_sg(dom, buffer_frames, r=True, w=True)
    ro_page = driver.map_sg(dom, [pool[0] if pool[0] not in buffer_frames else pool[1]],
                            r=True, w=False)

    # Receive: packets of 1 KiB round-robin over the buffer's 1 KiB slots.
    slot = 1024
    slots = [(iova + i * slot, slot) for i in range(frames * PAGE // slot)]
    payloads = [bytes([rng.randrange(256)]) * slot for _ in range(packets)]
    delivered = nic.receive(slots, payloads)

    # Zero-copy check: the last packet written to each slot is in the right scattered frame.
    last = {}
    for i, pkt in enumerate(payloads):
        last[i % len(slots)] = pkt
    landed = all(
        memory.read(buffer_frames[(k * slot) // PAGE] + (k * slot) % PAGE, slot) == pkt
        for k, pkt in last.items()
    )

    # Stray DMAs: past the buffer, at a page-table frame, a write to a read-only page.
    stray = [
        ("past the buffer", iova + frames * PAGE + 0x40, True, arch.Cause.WRITE_PAGE_FAULT),
        ("page-table frame", dom.table.root, True, arch.Cause.WRITE_PAGE_FAULT),
        ("read-only page", ro_page + 8, True, arch.Cause.WRITE_PAGE_FAULT),
        ("unmapped read", 0x7000_0000, False, arch.Cause.READ_PAGE_FAULT),
    ]
    blocked = 0
    for _, target, write, _ in stray:
        ok = nic.try_dma_write(target, b"\xba\xd0" * 8) if write else \
            nic.try_dma_read(target, 16) is not None
        blocked += not ok
    records = driver.drain_faults()
    expected = [(c, t) for _, t, _, c in stray]
    got = [(r.cause, r.iotval) for r in records]

    misses = counters.sample().iotlb_misses
    report = Report("default")
    report.figures.update({
        "backend": backend,
        "buffer": f"{frames} scattered frames -> 1 IOVA range of {frames * PAGE // 1024} KiB",
        "packets delivered": f"{delivered}/{packets}",
        "bytes DMAed": nic.stats.bytes_ok,
        "translations": nic.stats.translations,
        "IOTLB hits": nic.stats.translations - misses,
        "IOTLB misses": misses,
        "stray DMAs blocked": f"{blocked}/{len(stray)}",
        "fault records": len(records),
    })
    for r in records:
        report.details.append(f"fault: cause {r.cause} ({arch.Cause(r.cause).name}) "
                              f"dev {r.device_id:#x} iova {r.iotval:#x} ttyp {r.ttyp}")
    report.checks.update({
        "every packet delivered": delivered == packets,
        "data landed in the scattered frames (zero-copy)": landed,
        "every stray DMA blocked": blocked == len(stray),
        "each blocked DMA has its fault record": sorted(got) == sorted(
            (int(c), t) for c, t in expected),
        "no stray byte reached memory": not any(
            rec.op == "W" and rec.addr in {t for _, t, _, _ in stray}
            for rec in memory.accesses_by("nic")),
    })
    return report
