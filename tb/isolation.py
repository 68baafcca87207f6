"""An isolation campaign: 4+ VMs, 8+ VFs of one NIC under seeded random and rogue
traffic, on any IOMMU backend (the model in tests/test_isolation_model.py, the RTL in
tb/tests/isolation_rtl.py).

Every request is judged by an oracle written here from the spec's translation steps
(§1.4) over the software view of the tables (``PageTable.lookup``, the MSI page
table's entries, the hypervisor's ownership): it says whether the access is allowed,
where it must land, or which cause must stop it. Then:

* allowed accesses land exactly where the oracle says;
* every blocked access has its fault record (cause, device_id, TTYP, iotval = the
  address), in order, unless DC.tc.DTF suppresses it (§6.3), and only then;
* the memory access log shows 0 bytes read or written by any VF outside its grant.
"""

from __future__ import annotations

import random

from models import arch
from models.adversary import Adversary, Attempt, MaliciousGuest, with_write
from models.arch import Access, AddrType, Cause, MsiPte, Pte
from models.iommu import IOMMU
from models.memory import Memory
from models.os.hypervisor import (
    GUEST_RAM_GPA,
    MSI_IOVA,
    PAGE,
    GuestIommuDriver,
    Hypervisor,
    leaked_bytes,
)


# --------------------------------------------------------------------------- oracle
def expected(hv: Hypervisor, device, attempt: Attempt):
    """('ok', spa) or ('fault', cause) for ``attempt`` by ``device`` (§1.4 in order)."""
    did = device.device_id if attempt.device_id is None else attempt.device_id
    vm = hv.owner.get(did)
    access = attempt.access
    if vm is None:
        return "fault", Cause.DDT_ENTRY_NOT_VALID  # step 6: no valid DC (258)
    if attempt.addr_type != AddrType.UNTRANSLATED:
        return "fault", Cause.TRANSACTION_TYPE_DISALLOWED  # step 7a: EN_ATS = 0
    if attempt.process_id is not None:
        return "fault", Cause.TRANSACTION_TYPE_DISALLOWED  # step 7b: PDTV = 0
    gpa = attempt.iova
    dom = getattr(hv.devices[did], "guest_domain", None)
    if dom is not None:  # step 17: the guest's first stage (a User request)
        leaf = dom.table.lookup(attempt.iova, phys=False)
        need = {Access.READ: Pte.R, Access.WRITE: Pte.W, Access.EXECUTE: Pte.X}[access]
        if leaf is None or not need.get(leaf[2]) or not Pte.U.get(leaf[2]):
            return "fault", arch.page_fault_cause(access)
        gpa = dom.table.translate(attempt.iova)
    # Step 18: the MSI pattern.
    page = gpa >> arch.PAGE_SHIFT
    if page & ~vm.msi_mask == vm.msi_pattern & ~vm.msi_mask:
        index = arch.msi_extract(page, vm.msi_mask)
        dw0, _ = vm.msi_table.read(index)
        if not MsiPte.V.get(dw0):
            return "fault", Cause.MSI_PTE_NOT_VALID
        if access == Access.EXECUTE:
            return "fault", Cause.INSTRUCTION_ACCESS_FAULT
        vcpu = vm.vcpus[index]
        if vcpu.mrif is not None:
            return "ok", vcpu.mrif.address
        return "ok", hv.platform.imsic.file_address(vcpu.hart, vcpu.guest_file) + gpa % PAGE
    # Step 19: the G-stage (U must be 1, §5.4).
    leaf = vm.gstage.lookup(gpa)
    need = {Access.READ: Pte.R, Access.WRITE: Pte.W, Access.EXECUTE: Pte.X}[access]
    if leaf is None or not need.get(leaf[2]) or not Pte.U.get(leaf[2]):
        return "fault", arch.guest_page_fault_cause(access)
    return "ok", vm.gstage.translate(gpa)


def ttyp(attempt: Attempt) -> int:
    return arch.ttyp_of(attempt.addr_type, attempt.access)


# --------------------------------------------------------------------------- system
def model_iommu(memory: Memory) -> IOMMU:
    return IOMMU(memory, capabilities=arch.capabilities_value(msi_mrif=True))


def build(rng: random.Random, vms: int = 4, vfs: int = 8, *, memory: Memory | None = None,
          make_iommu=model_iommu):
    """``vms`` VMs (the last one's vCPUs use MRIFs) sharing ``vfs`` VFs of one NIC, plus
    one unassigned VF; vm0's guest driver is malicious, vm1 leaves its first stage Bare,
    two VFs have DTF set. ``make_iommu(memory)`` gives the IOMMU (model or RTL)."""
    memory = Memory() if memory is None else memory
    iommu = make_iommu(memory)
    hv = Hypervisor(iommu, memory)
    topo = hv.topology
    nic = hv.create_nic("nic0", 0x100, vfs + 1, socket=0)  # the last VF stays unassigned
    machines = []
    files_used = [0] * topo.harts  # guest interrupt files taken on each hart
    for i in range(vms):
        mrif = i == vms - 1  # an MRIF VM takes no guest interrupt file
        harts = []
        for _ in range(rng.choice((1, 2, 3))):
            free = [h for h in range(topo.harts)
                    if mrif or files_used[h] < hv.platform.imsic.guest_files]
            harts.append(rng.choice(free))
            files_used[harts[-1]] += not mrif
        machines.append(hv.create_vm(f"vm{i}", harts=harts, mrif=mrif))
    guests = {}
    for j, vf in enumerate(nic.vfs[:vfs]):
        vm = machines[j % vms]
        hv.assign(vm, vf, dtf=j in (5, 6))  # two VFs ask for their faults not to be logged
        guest = guests.setdefault(vm.name, (MaliciousGuest if vm.name == "vm0"
                                            else GuestIommuDriver)(hv, vm))
        if vm.name != "vm1":  # vm1 leaves its VFs' first stage Bare: IOVA = GPA
            dom = guest.create_domain()
            guest.map_msi(dom)
            iova, gpa = guest.map_buffer(dom, 4 * PAGE)
            guest.map(dom, dom.alloc_iova(PAGE), vm.alloc_gpa(), r=True, w=False)  # RO page
            guest.attach(vf, dom)
            vf.guest_domain, vf.msi_iova, vf.buffer = dom, MSI_IOVA, (iova, 4 * PAGE)
        else:
            gpa = vm.alloc_gpa(4 * PAGE)
            vf.guest_domain, vf.msi_iova, vf.buffer = None, None, (gpa, 4 * PAGE)
    return memory, hv, nic, guests


def legit_attempt(vf, rng: random.Random) -> Attempt:
    base, size = vf.buffer
    off = rng.randrange(0, size, 8)
    if rng.random() < 0.3:
        vm = vf.vm
        vcpu = rng.choice(vm.vcpus)
        iova = (vf.msi_iova or 0x2800_0000) + vcpu.index * PAGE
        return Attempt("msi", f"{vm.name} vCPU {vcpu.index}", iova, Access.WRITE, 4,
                       data=rng.randrange(1, 64))
    return Attempt("dma", "own buffer", base + off, rng.choice((Access.READ, Access.WRITE)))


def random_stray(vf, rng: random.Random) -> Attempt:
    """An address picked anywhere plausible: near own RAM, other RAM, low memory."""
    choice = rng.randrange(4)
    if choice == 0:
        iova = GUEST_RAM_GPA + rng.randrange(0, 4 << 20, 8)
    elif choice == 1:
        iova = 0x1_0000_0000 + rng.randrange(0, 16 << 20, 8)
    elif choice == 2:
        iova = rng.randrange(0, 1 << 32, 8)
    else:
        iova = (vf.buffer[0] & ~0xFFFF) + rng.randrange(0, 0x20000, 8)
    return Attempt("stray", "random address", iova, rng.choice(list(Access)))


def run_campaign(seed: int, *, memory: Memory | None = None, make_iommu=model_iommu,
                 legit: int = 30, stray: int = 15,
                 per_response_reported: bool = True) -> tuple[dict, Hypervisor]:
    """Seeded random and rogue traffic from every VF, each access judged by ``expected``;
    fails (AssertionError) at the first access, fault record or leaked byte that
    differs. Returns the counts of allowed, blocked, suppressed accesses and records,
    and the hypervisor (for further checks on the same system).

    The fault queue, drained every 100 accesses, must hold exactly the records of the
    blocked, unsuppressed accesses, in order. ``per_response_reported``: also check each
    response's ``reported`` flag (the model's API has it; the RTL's completion does
    not say whether the record reached the queue, only the queue does)."""
    rng = random.Random(seed)
    memory, hv, nic, guests = build(rng, memory=memory, make_iommu=make_iommu)
    vfs = [vf for vf in nic.vfs if vf.device_id in hv.owner]
    assert len(hv.vms) >= 4 and len(vfs) >= 8
    adversaries = {vf.device_id: Adversary(hv, vf, rng) for vf in vfs}
    # vm0's guest driver maps foreign host addresses into its own first stage.
    malicious = guests["vm0"]
    foreign = []
    for vf in hv.vms["vm0"].devices:
        for attempt in malicious.map_foreign(vf.guest_domain, malicious.foreign_targets(rng)):
            foreign += [(vf, attempt), (vf, with_write(attempt))]
    hv.guest_invalidate(hv.vms["vm0"], vf.guest_domain.pscid)

    plan = list(foreign)
    for vf in vfs:
        plan += [(vf, a) for a in adversaries[vf.device_id].attempts()]
        plan += [(vf, legit_attempt(vf, rng)) for _ in range(legit)]
        plan += [(vf, random_stray(vf, rng)) for _ in range(stray)]
    rng.shuffle(plan)

    counts = {"allowed": 0, "blocked": 0, "suppressed": 0, "records": 0}
    for start in range(0, len(plan), 100):  # the fault queue holds 511 records
        want_records = []
        for vf, attempt in plan[start:start + 100]:
            verdict, value = expected(hv, vf, attempt)
            result = adversaries[vf.device_id].run(attempt)
            where = f"seed {seed}: {vf.name} {attempt}"
            if verdict == "ok":
                assert result.allowed, f"{where}: blocked with cause {result.response.cause}"
                assert result.spa == value, f"{where}: landed at {result.spa:#x}, not {value:#x}"
                counts["allowed"] += 1
                continue
            assert not result.allowed, f"{where}: allowed at {result.spa:#x}, expected {value}"
            assert result.response.cause == value, f"{where}: cause {result.response.cause}"
            counts["blocked"] += 1
            has_dc = result.device_id in hv.owner
            if getattr(vf, "dtf", False) and has_dc and value not in \
                    arch.CAUSES_REPORTED_DESPITE_DTF:
                assert not (per_response_reported and result.response.reported), (
                    f"{where}: DTF=1 but a record was written")
                counts["suppressed"] += 1
                continue
            assert result.response.reported or not per_response_reported, (
                f"{where}: no fault record")
            want_records.append((int(value), result.device_id, ttyp(attempt), attempt.iova))
        got = [(f.record.cause, f.record.device_id, f.record.ttyp, f.record.iotval)
               for f in hv.handle_faults()]
        assert got == want_records, f"seed {seed}: fault records differ"
        counts["records"] += len(got)

    grants = {vf.name: hv.grant(vf) for vf in nic.vfs}
    leaks = leaked_bytes(memory, grants)
    assert leaks == {name: 0 for name in grants}, f"seed {seed}: bytes outside grants {leaks}"
    assert sum(len(memory.accesses_by(vf.name)) for vf in vfs) >= counts["allowed"]
    # Every fault was attributed to the VM owning its device (or to none).
    for fault in hv.faults:
        owner = hv.owner.get(fault.record.device_id)
        assert fault.vm == (owner.name if owner else None)
    return counts, hv
