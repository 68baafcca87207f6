"""Microkernel: a user-space NIC driver holds exactly its device's registers and buffers.

The microkernel (``models/os/microkernel.py``) takes a NIC and a disk controller,
gives each its own IOMMU domain, and spawns a NIC driver process with three kinds of
capability: the NIC's register page, ``buffers`` one-page DMA buffers, and the NIC's
interrupt, delivered as messages. The driver posts its buffers through the NIC's
registers; ``packets`` arrive from the wire; on each interrupt message it reads the
packet from its buffer and posts the buffer again.

Then the driver misbehaves. Through the CPU it touches the disk's registers, a page
past its own, asks the kernel to map the disk driver's frame and to map for the disk:
the kernel refuses each (a capability fault). Through its device it points the NIC at
the disk driver's frame, at the kernel's device directory and just past its buffers:
the IOMMU stops each DMA, and the kernel turns each fault record into a message.
"""

from __future__ import annotations

import random

from models import arch
from models.devices import RingNic, fill_pattern
from models.os.microkernel import CapabilityError, Microkernel
from sim.progress import task

from . import Report, scenario
from .common import PAGE, boot, positive

NIC_MMIO, DISK_MMIO = 0x3_0000_0000, 0x3_0000_1000


@scenario("microkernel",
          "user-space NIC driver fenced by capabilities + IOMMU; interrupts become messages",
          params={"buffers": (int, 8, "one-page receive buffers granted to the driver"),
                  "packets": (int, 64, "packets received from the wire")},
          backends=("model", "rtl"), quick={"packets": 24})
def run(backend: str, seed: int, buffers: int = 8, packets: int = 64) -> Report:
    positive(buffers=buffers, packets=packets)
    rng = random.Random(seed)
    plat = boot(backend)
    kernel = Microkernel(plat.driver, plat.memory, plat.data_alloc)
    nic = RingNic("nic", 0x60, plat.iommu, plat.memory)
    disk = RingNic("disk", 0x61, plat.iommu, plat.memory)
    kernel.register_device(nic, NIC_MMIO)
    kernel.register_device(disk, DISK_MMIO)

    drv = kernel.spawn("nic-driver")
    regs = kernel.grant_mmio(drv, nic.device_id).base
    bufs = [kernel.grant_dma_buffer(drv, nic.device_id) for _ in range(buffers)]
    kernel.grant_irq(drv, nic.device_id)
    disk_drv = kernel.spawn("disk-driver")
    kernel.grant_mmio(disk_drv, disk.device_id)
    disk_buf = kernel.grant_dma_buffer(disk_drv, disk.device_id)

    def post(iova: int) -> None:
        kernel.mmio_write(drv, regs + RingNic.RX_ADDR, iova)
        kernel.mmio_write(drv, regs + RingNic.RX_LEN, PAGE)
        kernel.mmio_write(drv, regs + RingNic.RX_POST, 1)

    posted = []
    for b in bufs:
        post(b.base)
        posted.append(b.base)

    # The driver at work: every interrupt message means its oldest posted buffer is full.
    received = intact = 0
    with task("microkernel packets", packets) as bar:
        for n in range(packets):
            packet = fill_pattern(seed << 20 | n, rng.randrange(64, 1515))
            nic.wire_receive(packet)
            while drv.inbox:
                msg = drv.inbox.popleft()
                if msg.kind == "irq":
                    iova = posted.pop(0)
                    intact += kernel.read_buffer(drv, iova, len(packet)) == packet
                    received += 1
                    post(iova)
                    posted.append(iova)
            bar.advance()

    # The driver misbehaves through the CPU: each must be a capability fault.
    cpu_attempts = [
        lambda: kernel.mmio_write(drv, DISK_MMIO + RingNic.RX_POST, 1),
        lambda: kernel.mmio_read(drv, NIC_MMIO + PAGE),
        lambda: kernel.map_frame(drv, nic.device_id, disk_buf.frames[0]),
        lambda: kernel.map_frame(drv, disk.device_id, bufs[0].frames[0]),
    ]
    cpu_refused = 0
    for attempt in cpu_attempts:
        try:
            attempt()
        except CapabilityError:
            cpu_refused += 1

    # ... and through its device, with the registers it legitimately holds.
    past_grant = bufs[-1].base + PAGE
    dma_targets = [disk_buf.frames[0], plat.driver.ddt.ddtp() >> 10 << 12, past_grant]
    for target in dma_targets:
        nic.posted.clear()
        post(target)
        nic.wire_receive(b"\x66" * 128)
    plat_records = kernel.service_iommu()
    fault_msgs = [m for m in drv.inbox if m.kind == "fault"]

    granted_frames = {f >> 12 for c in drv.caps if c.kind == "dma" for f in c.frames}
    stray_bytes = sum(r.size for r in plat.memory.accesses_by(nic.name)
                      if r.addr >> 12 not in granted_frames)
    got = sorted((r.cause, r.iotval, r.device_id) for r in kernel.iommu_faults)
    want = sorted((int(arch.Cause.WRITE_PAGE_FAULT), t, nic.device_id) for t in dma_targets)

    report = Report("microkernel")
    report.figures.update({
        "backend": backend,
        "granted pages": f"{kernel.granted_pages(drv)} (1 register page + {buffers} buffers)",
        "packets received by the driver": f"{received}/{packets}",
        "interrupt messages": received,
        "capability faults (CPU)": f"{cpu_refused}/{len(cpu_attempts)}",
        "IOMMU faults (device)": f"{plat_records}/{len(dma_targets)}",
        "fault messages": len(fault_msgs),
        "messages": kernel.messages_sent,
        "NIC bytes outside its buffers": stray_bytes,
    })
    report.key = ["granted pages", "capability faults (CPU)", "IOMMU faults (device)", "messages"]
    report.details += [f"capability fault: {f}" for f in kernel.capability_faults]
    report.details += [f"IOMMU fault: cause {r.cause} ({arch.Cause(r.cause).name}) dev "
                       f"{r.device_id:#x} iova {r.iotval:#x}" for r in kernel.iommu_faults]
    report.checks.update({
        "the driver works: every packet received intact": received == intact == packets,
        "every CPU access outside the grant is a capability fault":
            cpu_refused == len(cpu_attempts),
        "every DMA outside the grant faults in the IOMMU, with its record": got == want,
        "each IOMMU fault reached the driver as a message": len(fault_msgs) == len(dma_targets),
        "messages = interrupts + faults": kernel.messages_sent == packets + len(dma_targets),
        "the NIC touched nothing outside its buffers": stray_bytes == 0,
    })
    return report
