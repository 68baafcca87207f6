"""The isolation campaign (``tb/isolation.py``) on the whole RTL IOMMU, in lockstep
with the reference model.

A hypervisor (``models/os/hypervisor.py``) programs the RTL through its registers and
queues: 4 VMs with their own G-stage tables, flat and MRIF-mode MSI page tables, 8 SR-IOV
VFs of one NIC (and one unassigned), a malicious guest driver and every VF's rogue
catalogue. The campaign's oracle judges each access from the spec's steps; ``Lockstep``
also makes every register access and translation on ``models/iommu.py`` and fails at
the first difference; at the end both memories are compared.

Environment: ISOLATION_SEED (default: the run's seed), ISOLATION_LEGIT / ISOLATION_STRAY
(accesses per VF, default 30 / 15).
"""

from __future__ import annotations

import os

import cocotb
from cocotb.task import bridge

from models import arch
from models.arch import Cause, Reg, TrReqCtl
from models.memory import FaultKind, Memory
from tb.isolation import run_campaign
from tb.rtl_iommu import Lockstep, MirrorMemory, RtlIommu, model_iommu
from tb.tests.test_control import export_figures
from tb.top_env import TopTB


@cocotb.test()
async def vms_and_vfs_stay_isolated(dut):
    """4 VMs, 8 VFs, random and rogue traffic: 0 bytes outside the grants, every blocked
    access reported (or suppressed by DTF) with its cause, device id and address."""
    seed = int(os.environ.get("ISOLATION_SEED", os.environ.get("COCOTB_RANDOM_SEED", "1")))
    model_memory = Memory()
    rtl_memory = MirrorMemory(model_memory)
    tb = TopTB(dut, rtl_memory, seed=seed, latency=4)
    await tb.reset()
    lock = Lockstep(RtlIommu(tb), model_iommu(tb.params, model_memory), rtl_memory,
                    model_memory)
    counts, hv = await bridge(run_campaign)(
        seed, memory=rtl_memory, make_iommu=lambda memory: lock,
        legit=int(os.environ.get("ISOLATION_LEGIT", "30")),
        stray=int(os.environ.get("ISOLATION_STRAY", "15")), per_response_reported=False)
    # The debug interface on an MRIF-mode MSI page: a fault (it has no PPN to report),
    # on a guest-file page: the file's page; RTL and model compared by the lockstep.
    responses = await bridge(_debug_msi_pages)(lock, hv)
    assert any(r & arch.TrResponse.FAULT.mask for r in responses), responses
    assert any(not r & arch.TrResponse.FAULT.mask for r in responses), responses
    # An MRIF update the bridge finds refused or poisoned: recorded through the
    # IOMMU's bridge_fault port (264 / 271), compared with the model's record.
    reported = await bridge(_mrif_memory_errors)(hv, rtl_memory)
    assert reported == [Cause.MRIF_ACCESS_FAULT, Cause.MSI_MRIF_DATA_CORRUPTION], reported
    tb.check_protocol()
    differences = lock.compare_memories()
    assert not differences, "\n".join(differences[:10])
    tb.log.info("isolation seed %s: %s; lockstep: %d translations, %d register reads, "
                "%d writes compared; %d cycles", seed, counts, lock.translations,
                lock.register_reads, lock.register_writes, tb.cycle)
    assert counts["allowed"] > 50 and counts["blocked"] > 50 and counts["suppressed"] > 0
    export_figures(lock.translations, 0, isolation=counts)


def _debug_msi_pages(lock: Lockstep, hv) -> list[int]:
    """tr_response for each vCPU's MSI page of each VF with a first stage."""
    out = []
    for vm in hv.vms.values():
        for vf in vm.devices:
            if getattr(vf, "msi_iova", None) is None:
                continue
            for vcpu in vm.vcpus:
                lock.write_register(Reg.TR_REQ_IOVA, 8, vf.msi_iova + vcpu.index * arch.PAGE_SIZE)
                lock.write_register(Reg.TR_REQ_CTL, 8, TrReqCtl.GO_BUSY.mask
                                    | TrReqCtl.DID.put(vf.device_id))  # NW = 0: a write
                # The model answers at once, the RTL when its translation completes:
                # wait on the RTL alone, then compare both.
                while TrReqCtl.GO_BUSY.get(lock.rtl.read_register(Reg.TR_REQ_CTL, 8)):
                    pass
                lock.read_register(Reg.TR_REQ_CTL, 8)
                out.append(lock.read_register(Reg.TR_RESPONSE, 8))
    return out


def _mrif_memory_errors(hv, memory) -> list[int]:
    """One MSI to an MRIF whose pending word is refused, one whose word is poisoned;
    the causes of the records the hypervisor then finds in the fault queue."""
    hv.handle_faults()  # start from an empty queue
    vm = next(vm for vm in hv.vms.values() if vm.vcpus[0].mrif is not None)
    vf = next(vf for vf in vm.devices if getattr(vf, "msi_iova", None) is not None)
    mrif = vm.vcpus[0].mrif
    for kind in (FaultKind.ACCESS, FaultKind.POISON):
        memory.inject_fault(mrif.address, 8, kind)  # identities 0..63
        out = hv.platform.msi_write(vf, vf.msi_iova, 7)
        memory.clear_faults()
        assert out.status == "blocked", out
    return [fault.record.cause for fault in hv.handle_faults()]
