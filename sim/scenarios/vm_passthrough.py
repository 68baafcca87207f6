"""VMs with SR-IOV virtual functions of one NIC, DMA through two-stage translation,
one VM's driver malicious.

A hypervisor (``models/os/hypervisor.py``) creates ``vms`` VMs, each with its own
guest-physical memory and G-stage table (GSCID per VM), and hands the ``vfs`` virtual
functions of one physical NIC round-robin to them. Each guest's own IOMMU driver
builds its first-stage table in guest memory, maps a receive ring and its vIMSIC
pages, and lets its VFs receive packets (DMA writes), transmit (DMA reads) and raise
completion MSIs. Every access is walked nested: IOVA -> GPA by the guest's table
(whose PTEs are themselves at GPAs) -> SPA by the VM's G-stage.

The ``malicious`` VM's driver maps its VF's IOVAs onto host addresses it does not own
(another VM's RAM, the DDT, the fault queue, its own G-stage root) and its VF also
tries the rogue catalogue of ``models/adversary.py`` (raw host addresses, forged MSIs,
malformed requests). The hypervisor drains the fault queue and attributes each record
to its VM. Bytes leaked are measured from the memory access log: every byte a VF read
or wrote outside its VM's RAM and MSI targets.
"""

from __future__ import annotations

import random
from collections import Counter

from models import arch
from models.adversary import Adversary, MaliciousGuest, with_write
from models.arch import Cause
from models.memory import Memory
from models.os.hypervisor import (
    MSI_IOVA,
    PAGE,
    GuestIommuDriver,
    Hypervisor,
    leaked_bytes,
)

from . import Plot, Report, make_iommu, scenario

SLOT = 1024  # bytes per receive buffer slot


@scenario("vm_passthrough",
          "VMs with SR-IOV VFs of one NIC: two-stage DMA, one malicious guest driver",
          params={"vms": (int, 4, "virtual machines"),
                  "vfs": (int, 8, "virtual functions of the NIC, assigned round-robin"),
                  "packets": (int, 64, "packets each VF receives"),
                  "malicious": (int, 0, "index of the VM whose driver is malicious (-1: none)"),
                  "iotlb": (int, 64, "IOTLB entries")},
          backends=("model", "rtl"), quick={"packets": 16})
def run(backend: str, seed: int, vms: int = 4, vfs: int = 8, packets: int = 64,
        malicious: int = 0, iotlb: int = 64) -> Report:
    if vms < 1 or vfs < vms or packets < 0 or iotlb < 0:
        raise ValueError("need vms >= 1, vfs >= vms, packets >= 0, iotlb >= 0")
    if not -1 <= malicious < vms:
        raise ValueError(f"malicious must be -1 or a VM index 0..{vms - 1}, not {malicious}")
    rng = random.Random(seed)
    memory = Memory()
    iommu = make_iommu(backend, memory, iotlb_entries=iotlb,
                       capabilities=arch.capabilities_value(msi_mrif=True))
    hv = Hypervisor(iommu, memory)
    topo = hv.topology
    nic = hv.create_nic("nic0", 0x100, vfs, socket=0)

    machines, guests = [], []
    for i in range(vms):
        harts = [(2 * i + k) % topo.harts for k in range(2)]
        vm = hv.create_vm(f"vm{i}", harts=harts)
        machines.append(vm)
        guests.append((MaliciousGuest if i == malicious else GuestIommuDriver)(hv, vm))

    # Each guest: one domain per VF, a receive ring of 16 KiB and its MSI pages.
    rings = {}
    for j, vf in enumerate(nic.vfs):
        vm, guest = machines[j % vms], guests[j % vms]
        hv.assign(vm, vf)
        dom = guest.create_domain()
        guest.map_msi(dom)
        iova, gpa = guest.map_buffer(dom, 16 * 1024, r=True, w=True)
        guest.attach(vf, dom)
        vf.guest_domain, vf.msi_iova = dom, MSI_IOVA
        rings[vf.name] = (iova, gpa, 16 * 1024)

    # Legitimate traffic: receive, transmit back the first bytes, one MSI per 8 packets.
    delivered = msis = misrouted = 0
    last = {}
    for vf in nic.vfs:
        iova, _, size = rings[vf.name]
        slots = [(iova + k * SLOT, SLOT) for k in range(size // SLOT)]
        payloads = [bytes([rng.randrange(256)]) * SLOT for _ in range(packets)]
        delivered += vf.receive(slots, payloads)
        for k, pkt in enumerate(payloads):
            last[(vf.name, k % len(slots))] = pkt
        for k in range(0, packets, 8):
            vf.try_dma_read(slots[k % len(slots)][0], 64)  # transmit: the NIC reads
            vcpu = rng.choice(vf.vm.vcpus)
            out = hv.platform.msi_write(vf, MSI_IOVA + vcpu.index * PAGE, 1 + k % 63)
            msis += out.status == "delivered"
            misrouted += (out.hart, out.file) != (vcpu.hart, vcpu.guest_file)
    guest_of = {vm.name: g for vm, g in zip(machines, guests)}
    vf_of = {vf.name: vf for vf in nic.vfs}
    landed = all(
        guest_of[vf_of[name].vm.name].read(rings[name][1] + k * SLOT, SLOT) == pkt
        for (name, k), pkt in last.items())
    legit = {vf.name: (vf.stats.dmas, vf.stats.aborted) for vf in nic.vfs}
    hv.handle_faults()
    legit_faults = len(hv.faults)

    # The attack: the malicious driver's foreign mappings, then the rogue catalogue.
    attempts, results = [], []
    if malicious >= 0:
        bad_vm, bad_guest = machines[malicious], guests[malicious]
        for vf in bad_vm.devices:
            foreign = bad_guest.map_foreign(vf.guest_domain, bad_guest.foreign_targets(rng))
            attempts += [(vf, a) for a in foreign] + [(vf, with_write(a)) for a in foreign]
            attempts += [(vf, a) for a in Adversary(hv, vf, rng).attempts()]
        for vf, attempt in attempts:
            results.append(Adversary(hv, vf, rng).run(attempt))
    faults = hv.handle_faults()

    grants = {vf.name: hv.grant(vf) for vf in nic.vfs}
    leaks = leaked_bytes(memory, grants)
    blocked = [r for r in results if not r.allowed]
    allowed_rogue = [r for r in results if r.allowed]
    # The only rogue accesses the IOMMU may let through are MSIs to the VM's own
    # interrupt files (the interrupt file then ignores the bad identity).
    harmless = all(r.msi is not None and r.msi.status == "ignored" for r in allowed_rogue)
    by_vm = Counter(f.vm for f in faults)
    causes = Counter((f.vm, f.record.cause) for f in faults)
    attributed = all(f.vm == (hv.owner[f.record.device_id].name
                              if f.record.device_id in hv.owner else None) for f in faults)
    records_match = sorted((r.response.cause, r.device_id, r.attempt.iova) for r in blocked) \
        == sorted((f.record.cause, f.record.device_id, f.record.iotval) for f in faults)

    stats = getattr(iommu, "engine", None)
    stats = stats.stats if stats is not None else {}
    legit_dmas = sum(d for d, _ in legit.values())
    report = Report("vm_passthrough")
    report.figures.update({
        "backend": backend,
        "VMs / VFs": f"{vms} VMs, {vfs} VFs of nic0 (device ids "
                     f"{nic.vfs[0].device_id:#x}..{nic.vfs[-1].device_id:#x})",
        "translation": "guest Sv39 first stage (tables at GPAs) + Sv39x4 G-stage per VM",
        "packets delivered": f"{delivered}/{packets * vfs}",
        "MSIs delivered / misrouted": f"{msis} / {misrouted}",
        "DMAs allowed": legit_dmas - sum(a for _, a in legit.values()) + len(allowed_rogue),
        "DMAs blocked": len(blocked) + sum(a for _, a in legit.values()),
        "rogue attempts": f"{len(results)} by {machines[malicious].name if malicious >= 0 else '-'}"
                          f" ({len(blocked)} blocked, {len(allowed_rogue)} MSIs with bad "
                          f"data ignored by the interrupt file)",
        "faults handled by the hypervisor": len(faults) + legit_faults,
        "bytes leaked": sum(leaks.values()),
        "translations (G-stage walks)": f"{sum(vf.stats.translations for vf in nic.vfs)} "
                                        f"({stats.get('gs_walks', '-')})",
        "IOTLB hits / misses": f"{stats.get('iotlb_hits', '-')} / "
                               f"{stats.get('iotlb_misses', '-')}",
    })
    for (vm, cause), n in sorted(causes.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        report.details.append(f"faults of {vm or 'no VM (unassigned id)'}: {n} x cause "
                              f"{cause} ({Cause(cause).name})")
    sample = {}
    for r in results:  # one example of each kind of attack
        sample.setdefault((r.attempt.kind, r.attempt.access, r.allowed), r)
    for r in sample.values():
        report.details.append(f"{r.device} -> {r.attempt.target}: "
                              + ("allowed (" + r.msi.status + ")" if r.allowed
                                 else f"blocked, cause {r.response.cause}"))
    report.key = ["packets delivered", "DMAs allowed", "DMAs blocked",
                  "faults handled by the hypervisor", "bytes leaked"]
    report.data["faults_by_vm"] = {str(k): v for k, v in by_vm.items()}
    names = [vm.name for vm in machines]
    owner_of = {vf.name: vf.vm.name for vf in nic.vfs}
    allowed_per_vm, blocked_per_vm = Counter(), Counter()
    for vf in nic.vfs:  # legitimate DMAs, then the attack's results
        dmas, aborted = legit[vf.name]
        allowed_per_vm[vf.vm.name] += dmas - aborted
        blocked_per_vm[vf.vm.name] += aborted
    for r in results:
        (allowed_per_vm if r.allowed else blocked_per_vm)[owner_of[r.device]] += 1
    if by_vm.get(None):
        names.append("no VM")  # records of a spoofed id are not anyone's: the DID has no DC
    report.plots.append(Plot(
        "vm_passthrough.png", f"{vms} VMs, {vfs} VFs: DMAs allowed and blocked per VM",
        "VM whose VF made the access", "accesses",
        {"allowed": (names, [allowed_per_vm[n] for n in names]),
         "blocked": (names, [blocked_per_vm[n] for n in names]),
         "fault records": (names, [by_vm.get(None if n == "no VM" else n, 0) for n in names])},
        kind="bar", xticklabels=names))
    report.checks.update({
        "every packet delivered through two stages": delivered == packets * vfs,
        "data landed in each VM's own RAM": landed,
        "every MSI reached its vCPU's guest interrupt file": misrouted == 0,
        "legitimate traffic caused no fault": legit_faults == 0,
        "every rogue DMA outside the grant was blocked": harmless,
        "each blocked access has its fault record": records_match,
        "each fault attributed to the VM owning the device": attributed,
        "bytes leaked (access log) = 0": sum(leaks.values()) == 0,
    })
    return report
