"""Hypervisor model: G-stage per VM, SR-IOV VFs, nested guest first stage, MSI
remapping (flat and MRIF), fault attribution; the NUMA cost model.

Expected physical addresses come from the hypervisor's own bookkeeping (which host
frame backs which GPA, which interrupt file a vCPU was given), never from the
IOMMU under test.
"""

from __future__ import annotations

import pytest

from models import arch
from models.arch import Cause, Iohgatp, Msiptp, MsiptpMode
from models.iommu import IOMMU
from models.memory import FaultKind, Memory
from models.numa import InterruptCostLog, NumaTopology
from models.os.hypervisor import (
    GUEST_IMSIC_GPA,
    GUEST_RAM_GPA,
    MSI_IOVA,
    PAGE,
    GuestIommuDriver,
    Hypervisor,
    HypervisorError,
    Imsic,
    leaked_bytes,
)

CAPS = arch.capabilities_value(msi_mrif=True)


def make(caps=CAPS):
    memory = Memory()
    iommu = IOMMU(memory, capabilities=caps)
    return memory, iommu, Hypervisor(iommu, memory)


# --------------------------------------------------------------------- G-stage
def test_each_vm_has_its_own_g_stage_and_gscid():
    memory, _, hv = make()
    a = hv.create_vm("a", harts=[0])
    b = hv.create_vm("b", harts=[1])
    nic = hv.create_nic("nic", 0x100, 2)
    hv.assign(a, nic.vfs[0])
    hv.assign(b, nic.vfs[1])
    assert a.gscid != b.gscid
    for vm, vf in ((a, nic.vfs[0]), (b, nic.vfs[1])):
        dc = hv.driver.ddt.read(vf.device_id)
        assert Iohgatp.MODE.get(dc.iohgatp) == arch.SV39X4
        assert Iohgatp.GSCID.get(dc.iohgatp) == vm.gscid
        assert Iohgatp.PPN.get(dc.iohgatp) << 12 == vm.gstage.root
        assert vm.gstage.root % (16 << 10) == 0  # §3.3: 16 KiB aligned root
    # First stage Bare: the device's address is a GPA. The same GPA reaches each VM's
    # own backing frame.
    gpa = GUEST_RAM_GPA + 0x3450
    nic.vfs[0].dma_write(gpa, b"to-a")
    nic.vfs[1].dma_write(gpa, b"to-b")
    assert memory.read(a.gpa_to_spa(gpa), 4) == b"to-a"
    assert memory.read(b.gpa_to_spa(gpa), 4) == b"to-b"
    assert a.gpa_to_spa(gpa) != b.gpa_to_spa(gpa)


def test_gpa_outside_guest_ram_is_a_guest_page_fault():
    _, _, hv = make()
    vm = hv.create_vm("a", harts=[0], ram_size=1 << 20)
    nic = hv.create_nic("nic", 0x100, 1)
    hv.assign(vm, nic.vfs[0])
    end = GUEST_RAM_GPA + (1 << 20)
    assert nic.vfs[0].try_dma_read(end, 8) is None
    assert nic.vfs[0].try_dma_write(end - 4, b"12345678") is False  # crosses the end
    faults = hv.handle_faults()
    assert [(f.vm, f.record.cause, f.record.iotval) for f in faults] == [
        ("a", Cause.READ_GUEST_PAGE_FAULT, end), ("a", Cause.WRITE_GUEST_PAGE_FAULT, end)]
    assert faults[0].record.iotval2 & ~3 == end  # §6.2: the GPA


# --------------------------------------------------------------------- SR-IOV
def test_vfs_have_their_own_routing_ids_and_one_owner():
    _, _, hv = make()
    vm = hv.create_vm("a", harts=[0])
    other = hv.create_vm("b", harts=[1])
    nic = hv.create_nic("nic", 0x200, 4, socket=1)
    assert [vf.device_id for vf in nic.vfs] == [0x201, 0x202, 0x203, 0x204]
    assert all(vf.socket == 1 and vf.pf is nic for vf in nic.vfs)
    hv.assign(vm, nic.vfs[2])
    with pytest.raises(HypervisorError, match="already belongs to a"):
        hv.assign(other, nic.vfs[2])
    dc = hv.driver.ddt.read(nic.vfs[2].device_id)
    assert Msiptp.MODE.get(dc.msiptp) == MsiptpMode.FLAT
    assert Msiptp.PPN.get(dc.msiptp) << 12 == vm.msi_table.base
    assert (dc.msi_addr_mask, dc.msi_addr_pattern) == (0, GUEST_IMSIC_GPA >> 12)
    # An unassigned VF has no device context: DDT entry not valid (§6.1, 258).
    assert nic.vfs[3].try_dma_read(GUEST_RAM_GPA, 8) is None
    assert [f.record.cause for f in hv.handle_faults()] == [Cause.DDT_ENTRY_NOT_VALID]


def test_refuses_an_iommu_without_g_stage_or_mrif():
    with pytest.raises(HypervisorError, match="Sv39x4"):
        make(arch.capabilities_value(sv39x4=False, sv48x4=False, sv57x4=False))
    _, _, hv = make(arch.capabilities_value(msi_mrif=False))
    with pytest.raises(HypervisorError, match="MSI_MRIF"):
        hv.create_vm("a", harts=[0], mrif=True)


# ------------------------------------------------------------ nested first stage
def test_guest_first_stage_lives_in_guest_memory_and_is_walked_nested():
    memory, iommu, hv = make()
    vm = hv.create_vm("a", harts=[0])
    nic = hv.create_nic("nic", 0x100, 1)
    vf = nic.vfs[0]
    hv.assign(vm, vf)
    guest = GuestIommuDriver(hv, vm)
    dom = guest.create_domain()
    ram_end = GUEST_RAM_GPA + vm.ram_size
    assert GUEST_RAM_GPA <= dom.table.root < ram_end  # the root is a GPA in guest RAM
    iova, gpa = guest.map_buffer(dom, 2 * PAGE)
    guest.attach(vf, dom)
    dc = hv.driver.ddt.read(vf.device_id)
    assert arch.Fsc.PPN.get(dc.fsc) << 12 == dom.table.root
    assert arch.Ta.PSCID.get(dc.ta) == dom.pscid
    before = len(memory.log)
    vf.dma_write(iova + PAGE + 8, b"nested")
    assert guest.read(gpa + PAGE + 8, 6) == b"nested"
    # Every first-stage PTE the IOMMU read sits in this VM's RAM, at the SPA the
    # G-stage gives for the table's GPA.
    walk = [r for r in memory.log[before:] if r.who == "iommu.fs_pt"]
    path = dom.table.walk_path(iova + PAGE)
    assert [r.addr for r in walk] == [addr for addr, _, _ in path]
    ram = vm.ram_ranges()
    assert all(any(s <= r.addr < s + n for s, n in ram) for r in walk)
    assert iommu.engine.stats["gs_walks"] >= len(path) + 1
    # The guest unmaps: its invalidation goes through the hypervisor (GV=1, GSCID).
    guest.unmap(dom, iova + PAGE)
    assert vf.try_dma_read(iova + PAGE, 4) is None
    (fault,) = hv.handle_faults()
    assert (fault.vm, fault.record.cause, fault.record.iotval) == (
        "a", Cause.READ_PAGE_FAULT, iova + PAGE)


# --------------------------------------------------------------------- MSIs
def test_msi_lands_in_the_guest_file_of_the_vcpus_hart_and_follows_migration():
    memory, _, hv = make()
    vm = hv.create_vm("a", harts=[0, 5])
    nic = hv.create_nic("nic", 0x100, 1)
    vf = nic.vfs[0]
    hv.assign(vm, vf)
    guest = GuestIommuDriver(hv, vm)
    dom = guest.create_domain()
    guest.map_msi(dom)
    guest.attach(vf, dom)
    imsic = hv.platform.imsic
    for vcpu in vm.vcpus:
        out = hv.platform.msi_write(vf, MSI_IOVA + vcpu.index * PAGE, 9 + vcpu.index)
        assert out.status == "delivered"
        assert out.spa == imsic.file_address(vcpu.hart, vcpu.guest_file)
        assert (out.hart, out.file) == (vcpu.hart, vcpu.guest_file)
        assert 9 + vcpu.index in imsic.pending[(vcpu.hart, vcpu.guest_file)]
        assert memory.read32(out.spa) == 9 + vcpu.index
    # vCPU 1 moves from hart 5 (socket 1) to hart 2 (socket 0): the next MSI follows,
    # and gets cheaper for a NIC on socket 0, because the hart is now local.
    remote = hv.platform.msi_write(vf, MSI_IOVA + PAGE, 20)
    hv.migrate_vcpu(vm, 1, 2)
    local = hv.platform.msi_write(vf, MSI_IOVA + PAGE, 21)
    assert local.hart == 2 and local.file == vm.vcpus[1].guest_file
    assert (remote.ns, local.ns) == (hv.topology.delivery_ns(0, 5), hv.topology.delivery_ns(0, 2))
    assert remote.ns > local.ns


def test_msi_identity_out_of_range_is_ignored_by_the_interrupt_file():
    _, _, hv = make()
    vm = hv.create_vm("a", harts=[0])
    nic = hv.create_nic("nic", 0x100, 1)
    hv.assign(vm, nic.vfs[0])
    for data in (0, 64, 0xFFFF_FFFF):
        out = hv.platform.msi_write(nic.vfs[0], GUEST_IMSIC_GPA, data)
        assert out.response.ok and out.status == "ignored"
    assert hv.platform.imsic.pending == {}


def mrif_vm():
    """A VM whose one vCPU (on hart 3) uses an MRIF, with one VF: (memory, hv, vf, mrif)."""
    memory, _, hv = make()
    vm = hv.create_vm("m", harts=[3], mrif=True)
    nic = hv.create_nic("nic", 0x100, 1)
    vf = nic.vfs[0]
    hv.assign(vm, vf)
    return memory, hv, vf, vm.vcpus[0].mrif


def test_mrif_sets_pending_and_always_sends_the_notice():
    memory, hv, vf, mrif = mrif_vm()
    out = hv.platform.msi_write(vf, GUEST_IMSIC_GPA, 40)
    assert out.status == "mrif" and out.response.msi and out.response.spa == mrif.address
    assert hv.platform.mrif_pending(mrif) == {40}
    # The notice: identity NID to the hypervisor's S-level file on hart 3.
    assert (out.hart, out.file) == (3, 0)
    assert mrif.notice_identity in hv.platform.imsic.pending[(3, 0)]
    notice_addr = hv.platform.imsic.file_address(3, 0)
    assert memory.read32(notice_addr) == mrif.notice_identity
    # §9.4: the notice goes out whatever the enable bits say; the guest disabled
    # identity 5, so the hypervisor finds it pending but not deliverable.
    memory.write64(mrif.address + 8, ~(1 << 5) & (1 << 64) - 1)
    hv.platform.imsic.pending.clear()
    out = hv.platform.msi_write(vf, GUEST_IMSIC_GPA, 5)
    assert out.status == "mrif" and (out.hart, out.file) == (3, 0)
    assert hv.platform.mrif_pending(mrif) == {5, 40}
    assert hv.platform.mrif_deliverable(mrif) == {40}
    # Identity 0 is accepted; D >= 2048 and offsets past byte 7 are discarded silently.
    assert hv.platform.msi_write(vf, GUEST_IMSIC_GPA, 0).status == "mrif"
    assert hv.platform.msi_write(vf, GUEST_IMSIC_GPA, 2048).status == "ignored"
    assert hv.platform.msi_write(vf, GUEST_IMSIC_GPA + 8, 7).status == "ignored"
    assert hv.platform.mrif_pending(mrif) == {0, 5, 40}


# ------------------------------------------------------------ fault attribution
def test_faults_are_attributed_to_the_vm_owning_the_device_and_counted():
    _, _, hv = make()
    a = hv.create_vm("a", harts=[0])
    b = hv.create_vm("b", harts=[1])
    nic = hv.create_nic("nic", 0x100, 3)
    hv.assign(a, nic.vfs[0])
    hv.assign(b, nic.vfs[1])
    nic.vfs[0].try_dma_read(0x10, 4)
    nic.vfs[1].try_dma_write(0x20, b"x")
    nic.vfs[1].try_dma_read(0x30, 4)
    nic.vfs[2].try_dma_read(0x40, 4)  # not assigned to anyone
    got = [(f.vm, f.record.device_id, f.record.cause) for f in hv.handle_faults()]
    assert got == [("a", 0x101, Cause.READ_GUEST_PAGE_FAULT),
                   ("b", 0x102, Cause.WRITE_GUEST_PAGE_FAULT),
                   ("b", 0x102, Cause.READ_GUEST_PAGE_FAULT),
                   (None, 0x103, Cause.DDT_ENTRY_NOT_VALID)]
    assert hv.fault_counts[("b", Cause.READ_GUEST_PAGE_FAULT)] == 1
    assert hv.fault_counts[("b", Cause.WRITE_GUEST_PAGE_FAULT)] == 1
    assert hv.handle_faults() == []  # drained


def test_leak_detector_sees_an_access_outside_the_grant():
    memory, _, hv = make()
    a = hv.create_vm("a", harts=[0])
    b = hv.create_vm("b", harts=[1])
    grant = {"dev": a.grant()}
    memory.write(a.gpa_to_spa(GUEST_RAM_GPA), b"ok", who="dev")
    assert leaked_bytes(memory, grant) == {"dev": 0}
    memory.write(b.gpa_to_spa(GUEST_RAM_GPA), b"leak", who="dev")
    assert leaked_bytes(memory, grant) == {"dev": 4}
    # Straddling the end of a's RAM: only the bytes past it count.
    last = a.gpa_to_spa(GUEST_RAM_GPA + a.ram_size - PAGE) + PAGE - 3
    memory.read(last, 8, who="dev")
    assert leaked_bytes(memory, grant) == {"dev": 4 + 5}


# ----------------------------------------------------------------- NUMA model
def test_numa_costs_local_and_remote():
    topo = NumaTopology()
    assert (topo.harts, topo.socket_of(3), topo.socket_of(4)) == (8, 0, 1)
    assert topo.delivery_ns(0, 1) == 100.0
    assert topo.delivery_ns(0, 6) == 250.0
    ring = NumaTopology(sockets=4, harts_per_socket=1, local_ns=10, hop_ns=5)
    assert [ring.hops(0, s) for s in range(4)] == [0, 1, 2, 1]
    log = InterruptCostLog(topo)
    log.record("d", 0, 0)
    log.record("d", 0, 7)
    assert log.summary() == {"delivered": 2, "local": 1, "remote": 1, "mean_ns": 175.0,
                             "local_mean_ns": 100.0, "remote_mean_ns": 250.0}


@pytest.mark.parametrize("kwargs, message", [
    ({"sockets": 0}, "sockets"), ({"harts_per_socket": 0}, "harts_per_socket"),
    ({"hop_ns": -1}, "costs")])
def test_numa_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NumaTopology(**kwargs)


def test_imsic_address_map_round_trips():
    imsic = Imsic(NumaTopology(), guest_files=3)
    seen = set()
    for hart in range(8):
        for file in range(4):
            addr = imsic.file_address(hart, file)
            assert imsic.decode(addr + 0x10) == (hart, file)
            seen.add(addr)
    assert len(seen) == 32
    assert imsic.decode(imsic.base - 4) is None
    assert imsic.decode(imsic.file_address(7, 3) + PAGE) is None
    with pytest.raises(ValueError):
        imsic.file_address(8, 0)


@pytest.mark.parametrize("kind, cause", [(FaultKind.ACCESS, Cause.MRIF_ACCESS_FAULT),
                                         (FaultKind.POISON, Cause.MSI_MRIF_DATA_CORRUPTION)])
def test_mrif_memory_errors_are_reported_by_the_iommu(kind, cause):
    """§9.4: a refused MRIF access is cause 264, a poisoned one 271; the bridge reports
    it through the IOMMU (a record with the MSI's device and address), sends no notice
    and the MSI is not delivered."""
    memory, hv, vf, mrif = mrif_vm()
    memory.inject_fault(mrif.address + 16, 8, kind)  # the pending word of identities 64..127
    out = hv.platform.msi_write(vf, GUEST_IMSIC_GPA, 70)
    assert out.status == "blocked" and out.response.cause == cause
    assert hv.platform.imsic.pending == {}
    (fault,) = hv.handle_faults()
    record = fault.record
    assert (record.cause, record.device_id, record.iotval) == (cause, vf.device_id,
                                                               GUEST_IMSIC_GPA)
    assert record.ttyp == arch.ttyp_of(arch.AddrType.UNTRANSLATED, arch.Access.WRITE)
    assert fault.vm == "m"
    memory.clear_faults()
    assert hv.platform.msi_write(vf, GUEST_IMSIC_GPA, 70).status == "mrif"
