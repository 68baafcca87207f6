"""Device MSIs remapped to the guest interrupt files of the harts where vCPUs run,
on a 2-socket machine: remapping routes right, it cannot make a remote hart local.

A NIC on socket ``nic_socket`` has one SR-IOV VF per VM. Each guest programs its VF
with the address of a vCPU's virtual interrupt file (a GPA page of its vIMSIC) and an
identity; the IOMMU's MSI page table (per VM, §9) turns that page into the *guest
interrupt file* of the hart the vCPU runs on. The last ``mrif_vms`` VMs have no guest
interrupt files: their MSIs go to memory-resident interrupt files with a notice MSI to
the hypervisor on the vCPU's hart.

Phase 1 keeps the vCPUs where the scheduler spread them over both sockets; phase 2
has the hypervisor migrate every vCPU to a hart on the NIC's socket (new guest file,
MSI PTE rewritten, IOTINVAL.GVMA + IOFENCE.C). Each delivery is checked against the
hypervisor's placement (misrouted = landed anywhere else) and costed by
``models/numa.py``: local = ``local_ns``, remote = ``local_ns + hop_ns`` per hop.
"""

from __future__ import annotations

import random

from models import arch
from models.memory import Memory
from models.numa import NumaTopology
from models.os.hypervisor import MSI_IOVA, PAGE, GuestIommuDriver, Hypervisor, Platform

from . import Plot, Report, make_iommu, scenario


@scenario("msi_numa", "MSIs remapped to guest interrupt files across 2 sockets: local vs remote",
          params={"vms": (int, 4, "virtual machines, one VF each"),
                  "vcpus": (int, 2, "vCPUs per VM"),
                  "msis": (int, 400, "MSIs sent in each phase"),
                  "sockets": (int, 2, "sockets"),
                  "harts": (int, 4, "harts per socket"),
                  "nic_socket": (int, 0, "socket the NIC is attached to"),
                  "mrif_vms": (int, 1, "VMs whose vCPUs use MRIFs instead of guest files"),
                  "local_ns": (int, 100, "cost of an MSI to a hart on the device's socket"),
                  "hop_ns": (int, 150, "added cost per socket-to-socket hop")},
          backends=("model", "rtl"), quick={"msis": 100})
def run(backend: str, seed: int, vms: int = 4, vcpus: int = 2, msis: int = 400,
        sockets: int = 2, harts: int = 4, nic_socket: int = 0, mrif_vms: int = 1,
        local_ns: int = 100, hop_ns: int = 150) -> Report:
    if vms < 1 or vcpus < 1 or msis < 0 or not 0 <= mrif_vms <= vms:
        raise ValueError("need vms >= 1, vcpus >= 1, msis >= 0, 0 <= mrif_vms <= vms")
    topo = NumaTopology(sockets, harts, float(local_ns), float(hop_ns))
    topo.harts_of(nic_socket)  # checks the socket
    rng = random.Random(seed)
    memory = Memory()
    iommu = make_iommu(backend, memory, capabilities=arch.capabilities_value(msi_mrif=True))
    platform = Platform(memory, topo, guest_files=3)
    hv = Hypervisor(iommu, memory, platform)
    if (vms - mrif_vms) * vcpus > topo.harts_per_socket * platform.imsic.guest_files:
        raise ValueError("the NIC's socket has too few guest interrupt files for phase 2")
    nic = hv.create_nic("nic0", 0x100, vms, socket=nic_socket)
    machines = []
    spread = iter(range(10**9))
    for i in range(vms):
        # The scheduler spreads vCPUs over every hart of every socket, round-robin.
        placement = [next(spread) % topo.harts for _ in range(vcpus)]
        vm = hv.create_vm(f"vm{i}", harts=placement, ram_size=1 << 20,
                          mrif=i >= vms - mrif_vms)
        hv.assign(vm, nic.vfs[i])
        guest = GuestIommuDriver(hv, vm)
        dom = guest.create_domain()
        guest.map_msi(dom)
        guest.attach(nic.vfs[i], dom)
        machines.append(vm)

    def phase() -> dict:
        start = len(platform.costs.deliveries)
        out = {"delivered": 0, "misrouted": 0, "mrif": 0, "per_vm": {}}
        for _ in range(msis):
            vf = rng.choice(nic.vfs)
            vm = vf.vm
            vcpu = rng.choice(vm.vcpus)
            identity = rng.randrange(1, platform.imsic.num_ids + 1)
            result = platform.msi_write(vf, MSI_IOVA + vcpu.index * PAGE, identity)
            if vcpu.mrif is not None:
                # Expected: pending in the vCPU's MRIF, notice to the hypervisor's
                # S-level file on the vCPU's hart.
                right = (result.status == "mrif" and result.spa == vcpu.mrif.address
                         and (result.hart, result.file) == (vcpu.hart, 0)
                         and identity in platform.mrif_pending(vcpu.mrif))
                out["mrif"] += right
            else:
                right = (result.status == "delivered"
                         and (result.hart, result.file) == (vcpu.hart, vcpu.guest_file)
                         and identity in platform.imsic.pending[(vcpu.hart, vcpu.guest_file)])
            out["delivered"] += right
            out["misrouted"] += not right
            if result.ns:
                out["per_vm"].setdefault(vm.name, []).append(result.ns)
        deliveries = platform.costs.deliveries[start:]
        local = [d.ns for d in deliveries if d.local]
        remote = [d.ns for d in deliveries if not d.local]
        out.update(local=len(local), remote=len(remote),
                   local_ns=sum(local) / len(local) if local else 0.0,
                   remote_ns=sum(remote) / len(remote) if remote else 0.0,
                   mean_ns=sum(local + remote) / max(len(deliveries), 1),
                   cost_model_exact=all(d.ns == topo.delivery_ns(d.device_socket, d.hart)
                                        for d in deliveries),
                   remote_at_least_one_hop=all(d.ns >= local_ns + hop_ns for d in deliveries
                                               if not d.local))
        return out

    before = phase()
    # Phase 2: bring every vCPU to the NIC's socket (the remapping follows).
    local_harts = topo.harts_of(nic_socket)
    k = 0
    for vm in machines:
        for vcpu in vm.vcpus:
            if topo.socket_of(vcpu.hart) != nic_socket:
                hv.migrate_vcpu(vm, vcpu.index, local_harts[k % len(local_harts)])
                k += 1
    after = phase()
    faults = hv.handle_faults()

    report = Report("msi_numa")
    report.figures.update({
        "backend": backend,
        "machine": f"{sockets} sockets x {harts} harts, 3 guest interrupt files per hart, "
                   f"nic0 on socket {nic_socket}",
        "VMs": f"{vms} x {vcpus} vCPUs ({mrif_vms} with MRIFs)",
        "cost model": f"local {local_ns} ns, +{hop_ns} ns per socket hop",
        "interrupts delivered": f"{before['delivered'] + after['delivered']}/{2 * msis}",
        "misrouted": before["misrouted"] + after["misrouted"],
        "via MRIF + notice": before["mrif"] + after["mrif"],
        "spread: local / remote": f"{before['local']} / {before['remote']}",
        "spread: latency local / remote": f"{before['local_ns']:.0f} / "
                                          f"{before['remote_ns']:.0f} ns",
        "spread: mean latency": f"{before['mean_ns']:.1f} ns",
        "vCPUs migrated to the NIC's socket": k,
        "local: local / remote": f"{after['local']} / {after['remote']}",
        "local: mean latency": f"{after['mean_ns']:.1f} ns",
    })
    report.details.append("the MSI page table sends each vCPU's page to the file of the hart "
                          "it runs on; a remote hart stays remote until the vCPU moves")
    report.key = ["interrupts delivered", "misrouted", "spread: latency local / remote",
                  "local: mean latency"]
    report.data.update({"spread": {k: v for k, v in before.items() if k != "per_vm"},
                        "local": {k: v for k, v in after.items() if k != "per_vm"}})
    names = [vm.name for vm in machines]

    def mean(xs):
        return sum(xs) / len(xs) if xs else 0.0

    report.plots.append(Plot(
        "msi_numa.png", f"MSI delivery latency per VM (nic0 on socket {nic_socket})",
        "VM", "mean ns per MSI",
        {"vCPUs spread over sockets": (names, [mean(before["per_vm"].get(n, [])) for n in names]),
         "vCPUs on the NIC's socket": (names, [mean(after["per_vm"].get(n, [])) for n in names])},
        kind="bar", xticklabels=names))
    report.checks.update({
        "every MSI reached its vCPU's interrupt file (or MRIF)": (
            before["misrouted"] + after["misrouted"] == 0),
        "no MSI faulted": not faults,
        "latency is the cost model's, local and remote": (
            before["cost_model_exact"] and after["cost_model_exact"]),
        "remapping cannot remove the remote-socket cost": (
            before["remote"] == 0 or before["remote_at_least_one_hop"]),
        "only moving the vCPU makes delivery local": after["remote"] == 0,
    })
    return report
