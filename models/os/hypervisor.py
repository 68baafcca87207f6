"""A hypervisor that passes devices and SR-IOV virtual functions through to VMs.

It owns the IOMMU through the host driver (``models/os/driver.py``: DDT, command and
fault queues) and adds what virtualization needs on top (section numbers refer to
``../shared/spec/riscv-iommu-digest.md``):

* **VMs with their own guest-physical memory**: guest RAM at GPA ``GUEST_RAM_GPA``
  backed by host frames, mapped by a per-VM G-stage table (Sv39x4/Sv48x4) tagged by a
  per-VM GSCID (§3.3, §5).
* **Device assignment**: a device or an SR-IOV virtual function (its own routing ID
  on one physical NIC) gets an extended device context with ``iohgatp`` = the VM's
  G-stage, ``fsc`` = the guest's own first-stage table (a GPA, walked nested, §5.7)
  and the VM's MSI page table (§3.6, §9).
* **The guest's IOMMU driver** (``GuestIommuDriver``): the guest OS programs its own
  first-stage tables in *its* memory (table addresses and PTE PPNs are GPAs). The
  guest cannot touch the real IOMMU: setting a device's first-stage root and
  invalidating are requests to the hypervisor (a trapping virtual IOMMU), which adds
  the GSCID.
* **MSI remapping per VM**: the guest sees a virtual IMSIC at ``GUEST_IMSIC_GPA``,
  vCPU i's interrupt file at page i. ``msi_addr_mask``/``msi_addr_pattern`` select
  those pages; the VM's flat MSI page table sends vCPU i's page to the *guest
  interrupt file* of the hart the vCPU runs on (basic mode), or, for a VM whose vCPUs
  have no guest interrupt file, to a memory-resident interrupt file (MRIF mode) with
  a notice MSI to the hypervisor (§9.2).
* **Fault handling**: the hypervisor drains the fault queue, attributes each record
  to the VM owning its ``device_id`` and counts records by (VM, cause).

``Platform`` is the machine around the IOMMU: memory, the harts' IMSICs and the IO
bridge that performs a device's MSI write after the IOMMU translated it (translation
moves no data in this project: the bridge writes only when the translation succeeded,
so the memory access log shows what reached memory).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from models import arch
from models.arch import (
    Access,
    AddrType,
    Cap,
    Cause,
    DdtpMode,
    DeviceContext,
    Iohgatp,
    Scheme,
    Ta,
    Tc,
)
from models.devices import Nic
from models.memory import AccessFault, DataCorruption, FrameAllocator, Memory
from models.numa import InterruptCostLog, NumaTopology
from models.os.driver import IommuDriver
from models.pagetable import MsiPageTable, PageTable
from models.transaction import Request, Response, Status

PAGE = arch.PAGE_SIZE

#: Where every guest sees its RAM and its virtual IMSIC (one 4 KiB page per vCPU).
GUEST_RAM_GPA = 0x8000_0000
GUEST_IMSIC_GPA = 0x2800_0000
#: Where a guest driver maps its vIMSIC pages in a device's IOVA space (first stage):
#: the device is programmed with IOVA ``MSI_IOVA + i * 4 KiB`` for vCPU i.
MSI_IOVA = 0x0F00_0000
#: Host physical map: the harts' IMSICs (MMIO), the hypervisor's own memory
#: (DDT, queues, G-stage and MSI tables, MRIFs) and the frames backing guest RAM.
HOST_IMSIC_BASE = 0x2000_0000
HYPERVISOR_BASE, HYPERVISOR_SIZE = 0x4000_0000, 1 << 28
GUEST_FRAMES_BASE, GUEST_FRAMES_SIZE = 0x1_0000_0000, 1 << 34

#: An MRIF is 512 bytes: 32 pairs of dwords, (pending bits, enable bits) for
#: identities 64k..64k+63 (AIA, "memory-resident interrupt files").
MRIF_SIZE = 512
#: Identities an interrupt file implements (1..num_ids; identity 0 means none).
DEFAULT_NUM_IDS = 63
#: The IMSIC register a device's MSI writes: seteipnum_le at offset 0 of the file page.
SETEIPNUM_LE = 0

WHO_HYPERVISOR = "hv"
WHO_NOTICE = "iommu.mrif_notice"


class HypervisorError(Exception):
    """A request the hypervisor refuses (no capability, no free interrupt file, ...)."""


# --------------------------------------------------------------------------- #
# The machine: IMSICs and the IO bridge
# --------------------------------------------------------------------------- #
class Imsic:
    """Every hart's IMSIC: file 0 is the S-level file, 1..guest_files the guest files.

    Each file is one 4 KiB page; hart h's files are at
    ``base + (h * pages_per_hart + file) * 4 KiB`` with ``pages_per_hart`` the next
    power of two of ``1 + guest_files`` (an IMSIC group stride). A 4-byte write of
    identity ``e`` to ``seteipnum_le`` sets pending bit ``e``; identities outside
    1..num_ids are ignored (AIA), so a forged MSI data value cannot raise anything.
    """

    def __init__(self, topology: NumaTopology, *, base: int = HOST_IMSIC_BASE,
                 guest_files: int = 3, num_ids: int = DEFAULT_NUM_IDS):
        if guest_files < 0 or guest_files > 63:
            raise ValueError(f"guest_files (GEILEN) must be 0..63, not {guest_files!r}")
        if not 63 <= num_ids <= 2047 or (num_ids + 1) % 64:
            raise ValueError(f"num_ids must be 64k-1 in 63..2047, not {num_ids!r}")
        self.topology, self.base, self.guest_files, self.num_ids = (
            topology, base, guest_files, num_ids)
        self.pages_per_hart = 1 << (guest_files).bit_length()
        self.pending: dict[tuple[int, int], set[int]] = {}

    def file_address(self, hart: int, file: int) -> int:
        self.topology.socket_of(hart)  # checks the hart
        if not 0 <= file <= self.guest_files:
            raise ValueError(f"interrupt file {file!r} is outside 0..{self.guest_files}")
        return self.base + (hart * self.pages_per_hart + file) * PAGE

    def decode(self, spa: int) -> tuple[int, int] | None:
        """(hart, file) of the interrupt-file page holding ``spa``, or None."""
        page = (spa - self.base) // PAGE
        if spa < self.base or page >= self.topology.harts * self.pages_per_hart:
            return None
        hart, file = divmod(page, self.pages_per_hart)
        return (hart, file) if file <= self.guest_files else None

    def set_pending(self, hart: int, file: int, identity: int) -> bool:
        if not 1 <= identity <= self.num_ids:
            return False
        self.pending.setdefault((hart, file), set()).add(identity)
        return True


@dataclass
class Mrif:
    """A memory-resident interrupt file and the notice MSI its MSI PTE names."""

    address: int
    vm: str
    vcpu: int
    notice_hart: int
    notice_identity: int


@dataclass
class MsiOutcome:
    """What became of one MSI write (``status``: delivered, mrif, ignored, memory, blocked)."""

    status: str
    response: Response
    spa: int = 0
    hart: int | None = None
    file: int | None = None
    identity: int = 0
    ns: float = 0.0


class Platform:
    """Memory, NUMA topology, IMSICs, MRIFs and the IO bridge for MSI writes."""

    def __init__(self, memory: Memory, topology: NumaTopology | None = None, *,
                 guest_files: int = 3, num_ids: int = DEFAULT_NUM_IDS):
        self.memory = memory
        self.topology = topology or NumaTopology()
        self.imsic = Imsic(self.topology, guest_files=guest_files, num_ids=num_ids)
        self.mrifs: dict[int, Mrif] = {}
        self.costs = InterruptCostLog(self.topology)

    def msi_write(self, device, iova: int, data: int) -> MsiOutcome:
        """The bridge: translate the device's 4-byte MSI write, then perform it.

        A flat (basic) MSI translation gives the interrupt file's page: the write lands
        there. An MRIF translation gives the MRIF and its notice MSI on the completion
        (``Response.mrif``, the fields §1.1 names): the bridge sets the pending bit and
        sends the notice MSI where the completion says (§9.4), as hardware would; the
        platform's MRIF registry only names the VM it belongs to.
        """
        request = Request(device_id=device.device_id, iova=iova, access=Access.WRITE,
                          process_id=device.process_id or 0,
                          pv=device.process_id is not None, length=4)
        device.stats.translations += 1
        response = device.iommu.translate(request)
        if not response.ok:
            device.stats.aborted += 1
            device.stats.faults.append((iova, response))
            return MsiOutcome("blocked", response)
        spa = response.spa
        socket = getattr(device, "socket", 0)
        if response.mrif is not None:
            return self._mrif_write(device, response, iova, data, socket)
        self.memory.write(spa, (data & 0xFFFF_FFFF).to_bytes(4, "little"), who=device.name)
        device.stats.bytes_ok += 4
        where = self.imsic.decode(spa)
        if where is None:
            return MsiOutcome("memory", response, spa)  # an ordinary 4-byte DMA write
        hart, file = where
        if spa % PAGE != SETEIPNUM_LE or not self.imsic.set_pending(hart, file, data):
            return MsiOutcome("ignored", response, spa, hart, file, data)
        ns = self.costs.record(device.name, socket, hart).ns
        return MsiOutcome("delivered", response, spa, hart, file, data, ns)

    def _mrif_write(self, device, response: Response, iova: int, identity: int,
                    socket: int) -> MsiOutcome:
        """§9.4 (AIA): an aligned 32-bit little-endian write of identity D < 2048 at
        offset 0..7 of the MSI page sets pending bit D in the MRIF, then the notice MSI
        (NID to NPPN << 12) is sent whatever the enable bits say: the hypervisor checks
        them. Anything else is discarded silently."""
        target = response.mrif  # models.translate.MrifTarget
        offset = iova % PAGE
        if offset >> 3 or offset & 4 or identity >> 11:
            return MsiOutcome("ignored", response, target.mrif_address, identity=identity)
        pending_at = target.mrif_address + (identity // 64) * 16
        # Read-modify-write of the pending dword (AMOOR with AMO_MRIF; the split of MRIF
        # work between IOMMU and bridge is the implementation's, §1.1), logged under the
        # device's name: the MRIF is part of what the hypervisor granted its VM. A
        # refused or poisoned MRIF access is the IOMMU's to report (264 / 271, §9.4).
        try:
            word = self.memory.read64(pending_at, device.name)
            self.memory.write64(pending_at, word | 1 << (identity % 64), device.name)
        except (AccessFault, DataCorruption) as error:
            cause = (Cause.MSI_MRIF_DATA_CORRUPTION if isinstance(error, DataCorruption)
                     else Cause.MRIF_ACCESS_FAULT)
            pv = device.process_id is not None
            device.iommu.report_fault(arch.FaultRecord(
                cause=cause, ttyp=arch.ttyp_of(AddrType.UNTRANSLATED, Access.WRITE),
                device_id=device.device_id, process_id=device.process_id or 0, pv=pv,
                priv=False, iotval=iova, iotval2=0))
            device.stats.aborted += 1
            return MsiOutcome("blocked", replace(response, status=Status.FAULT,
                                                 cause=int(cause)), target.mrif_address,
                              identity=identity)
        device.stats.bytes_ok += 8
        self.memory.write32(target.notice_address, target.notice_data, WHO_NOTICE)
        where = self.imsic.decode(target.notice_address)
        if where is None:  # the notice went to plain memory: nobody is told
            return MsiOutcome("mrif", response, target.mrif_address, identity=identity)
        hart, file = where
        self.imsic.set_pending(hart, file, target.notice_data)
        ns = self.costs.record(device.name, socket, hart).ns
        return MsiOutcome("mrif", response, target.mrif_address, hart, file, identity, ns)

    def mrif_deliverable(self, mrif: Mrif) -> set[int]:
        """What the hypervisor finds on a notice: identities pending *and* enabled."""
        out = set()
        for k in range(MRIF_SIZE // 16):
            word = (self.memory.peek64(mrif.address + 16 * k)
                    & self.memory.peek64(mrif.address + 16 * k + 8))
            out |= {64 * k + b for b in range(64) if word >> b & 1}
        return out

    def mrif_pending(self, mrif: Mrif) -> set[int]:
        out = set()
        for k in range(MRIF_SIZE // 16):
            word = self.memory.peek64(mrif.address + 16 * k)
            out |= {64 * k + b for b in range(64) if word >> b & 1}
        return out


# --------------------------------------------------------------------------- #
# VMs and devices
# --------------------------------------------------------------------------- #
@dataclass
class Vcpu:
    index: int
    hart: int
    guest_file: int | None = None  # None: not resident, its MSIs go to an MRIF
    mrif: Mrif | None = None

    @property
    def msi_gpa(self) -> int:
        return GUEST_IMSIC_GPA + self.index * PAGE


@dataclass
class VirtualMachine:
    name: str
    gscid: int
    gstage: PageTable
    ram_size: int
    ram: list[tuple[int, int, int]]  # (gpa, spa, size) chunks backing guest RAM
    vcpus: list[Vcpu]
    msi_table: MsiPageTable
    msi_mask: int
    msi_pattern: int
    memory: Memory
    devices: list = field(default_factory=list)
    #: every interrupt-file page / MRIF the VM's devices were ever allowed to write
    msi_targets: set[tuple[int, int]] = field(default_factory=set)
    _next_gpa: int = GUEST_RAM_GPA

    def gpa_to_spa(self, gpa: int) -> int:
        """Host address of guest RAM at ``gpa`` (the hypervisor's own bookkeeping)."""
        for base, spa, size in self.ram:
            if base <= gpa < base + size:
                return spa + (gpa - base)
        raise HypervisorError(f"{self.name}: GPA {gpa:#x} is not guest RAM")

    def alloc_gpa(self, size: int = PAGE, align: int = PAGE) -> int:
        """The guest OS's page allocator: zeroed guest RAM, by GPA."""
        gpa = -(-self._next_gpa // align) * align
        if gpa + size > GUEST_RAM_GPA + self.ram_size:
            raise HypervisorError(f"{self.name}: guest RAM exhausted ({self.ram_size:#x} bytes)")
        self._next_gpa = gpa + size
        for off in range(0, size, PAGE):
            self.memory.write(self.gpa_to_spa(gpa + off), bytes(PAGE), who=f"{self.name}.os")
        return gpa

    def ram_ranges(self) -> list[tuple[int, int]]:
        """(spa, size) of guest RAM: what a device of this VM may read and write."""
        return [(spa, size) for _, spa, size in self.ram]

    def grant(self) -> list[tuple[int, int]]:
        return self.ram_ranges() + sorted(self.msi_targets)


class VirtualFunction(Nic):
    """One SR-IOV virtual function: a NIC with its own routing ID on a physical NIC."""

    def __init__(self, name: str, device_id: int, iommu, memory: Memory, *, pf, index: int):
        super().__init__(name, device_id, iommu, memory)
        self.pf, self.index = pf, index
        self.socket = pf.socket
        self.vm: VirtualMachine | None = None


@dataclass
class SriovNic:
    """A physical NIC (PF ``device_id``) and its VFs at ``device_id + offset + i*stride``
    (PCIe SR-IOV First VF Offset / VF Stride), attached to ``socket``."""

    name: str
    device_id: int
    socket: int
    vfs: list[VirtualFunction] = field(default_factory=list)
    first_vf_offset: int = 1
    vf_stride: int = 1


@dataclass
class GuestFault:
    """A fault record with the VM it belongs to (None: no VM owns the device_id)."""

    vm: str | None
    record: arch.FaultRecord


# --------------------------------------------------------------------------- #
# The hypervisor
# --------------------------------------------------------------------------- #
class Hypervisor:
    def __init__(self, iommu, memory: Memory, platform: Platform | None = None, *,
                 gstage: Scheme = arch.SV39X4_SCHEME, ddt_mode: DdtpMode = DdtpMode.LVL2,
                 queue_log2: int = 9):
        self.iommu, self.memory = iommu, memory
        self.platform = platform or Platform(memory)
        self.alloc = FrameAllocator(memory, HYPERVISOR_BASE, HYPERVISOR_SIZE)
        self.ram_alloc = FrameAllocator(memory, GUEST_FRAMES_BASE, GUEST_FRAMES_SIZE)
        self.driver = IommuDriver(iommu, memory, self.alloc, ddt_mode=ddt_mode,
                                  queue_log2=queue_log2)
        self.driver.init()
        caps = self.driver.capabilities
        needed = {arch.SV39X4_SCHEME.name: Cap.SV39X4, arch.SV48X4_SCHEME.name: Cap.SV48X4,
                  arch.SV57X4_SCHEME.name: Cap.SV57X4}
        if not gstage.gstage or not needed[gstage.name].get(caps):
            raise HypervisorError(f"the IOMMU does not advertise {gstage.name} G-stage "
                                  f"translation (capabilities {caps:#x})")
        if not Cap.MSI_FLAT.get(caps):
            raise HypervisorError("the IOMMU lacks MSI_FLAT: no MSI remapping for guests")
        self.gstage_scheme = gstage
        self.vms: dict[str, VirtualMachine] = {}
        self.owner: dict[int, VirtualMachine] = {}  # device_id -> VM
        self.devices: dict[int, object] = {}
        self.faults: list[GuestFault] = []
        self.fault_counts: Counter = Counter()  # (vm name or None, cause) -> records
        imsic = self.platform.imsic
        self._free_files = {h: list(range(1, imsic.guest_files + 1))
                            for h in range(self.platform.topology.harts)}

    @property
    def topology(self) -> NumaTopology:
        return self.platform.topology

    # ---------------------------------------------------------------- VMs
    def create_vm(self, name: str, *, ram_size: int = 2 << 20, harts: list[int],
                  mrif: bool = False, gstage_page: int = PAGE) -> VirtualMachine:
        """A VM with ``ram_size`` bytes of RAM and one vCPU per entry of ``harts``.

        Each vCPU gets a guest interrupt file on its hart; with ``mrif`` its MSIs go
        to an MRIF with a notice MSI to the hypervisor on that hart instead.
        """
        if name in self.vms:
            raise HypervisorError(f"a VM named {name!r} exists")
        if not harts:
            raise HypervisorError("a VM needs at least one vCPU")
        if ram_size <= 0 or ram_size % gstage_page:
            raise HypervisorError(f"ram_size {ram_size:#x} is not a multiple of the "
                                  f"{gstage_page:#x}-byte G-stage page")
        if mrif and not Cap.MSI_MRIF.get(self.driver.capabilities):
            raise HypervisorError("the IOMMU lacks MSI_MRIF")
        gscid = len(self.vms) + 1
        # §3.3: the G-stage root is 16 KiB and 16 KiB aligned (PageTable allocates it so).
        gstage = PageTable(self.memory, self.alloc, self.gstage_scheme, who=WHO_HYPERVISOR)
        ram = []
        for off in range(0, ram_size, gstage_page):
            spa = self.ram_alloc.alloc(gstage_page, gstage_page)
            # G-stage leaves must have U=1 (§5.4); A/D preset: no hardware update needed.
            gstage.map(GUEST_RAM_GPA + off, spa, gstage_page, r=True, w=True, x=True, u=True)
            ram.append((GUEST_RAM_GPA + off, spa, gstage_page))
        files = 1 << (len(harts) - 1).bit_length()
        msi_table = MsiPageTable(self.memory, self.alloc, files, who=WHO_HYPERVISOR)
        vm = VirtualMachine(
            name=name, gscid=gscid, gstage=gstage, ram_size=ram_size, ram=ram,
            vcpus=[Vcpu(i, h) for i, h in enumerate(harts)], msi_table=msi_table,
            msi_mask=files - 1, msi_pattern=GUEST_IMSIC_GPA >> arch.PAGE_SHIFT,
            memory=self.memory)
        for vcpu in vm.vcpus:
            if mrif:
                self._make_mrif(vm, vcpu)
            else:
                self._give_guest_file(vm, vcpu, vcpu.hart)
        self.vms[name] = vm
        return vm

    def iohgatp(self, vm: VirtualMachine) -> int:
        return vm.gstage.atp() | Iohgatp.GSCID.put(vm.gscid)

    def _give_guest_file(self, vm: VirtualMachine, vcpu: Vcpu, hart: int) -> None:
        free = self._free_files[hart]
        if not free:
            raise HypervisorError(f"hart {hart} has no free guest interrupt file for "
                                  f"{vm.name} vCPU {vcpu.index}")
        vcpu.hart, vcpu.guest_file = hart, free.pop(0)
        addr = self.platform.imsic.file_address(hart, vcpu.guest_file)
        vm.msi_table.set_basic(vcpu.index, addr >> arch.PAGE_SHIFT)
        vm.msi_targets.add((addr, PAGE))

    def _make_mrif(self, vm: VirtualMachine, vcpu: Vcpu) -> None:
        address = self.alloc.alloc(MRIF_SIZE, MRIF_SIZE)
        # The notice goes to the hypervisor's S-level file on the vCPU's hart, with an
        # identity per VM so the hypervisor knows whom to wake.
        notice_identity = 32 + vm.gscid % 31
        vcpu.mrif = Mrif(address, vm.name, vcpu.index, vcpu.hart, notice_identity)
        self.platform.mrifs[address] = vcpu.mrif
        # The guest enabled every identity: the hypervisor mirrors its enable bits.
        for k in range(MRIF_SIZE // 16):
            self.memory.write64(address + 16 * k + 8, (1 << 64) - 1, WHO_HYPERVISOR)
        notice_ppn = self.platform.imsic.file_address(vcpu.hart, 0) >> arch.PAGE_SHIFT
        vm.msi_table.set_mrif(vcpu.index, address, notice_ppn, notice_identity)
        vm.msi_targets.add((address, MRIF_SIZE))

    def migrate_vcpu(self, vm: VirtualMachine, index: int, hart: int) -> None:
        """Run vCPU ``index`` on ``hart`` from now on: a new guest interrupt file there,
        its MSI PTE rewritten, then IOTINVAL.GVMA (the MSI translation is cached by
        GSCID) and IOFENCE.C before the old file is reused."""
        vcpu = vm.vcpus[index]
        if vcpu.mrif is not None:
            vcpu.hart = vcpu.mrif.notice_hart = hart
            notice_ppn = self.platform.imsic.file_address(hart, 0) >> arch.PAGE_SHIFT
            vm.msi_table.set_mrif(index, vcpu.mrif.address, notice_ppn,
                                  vcpu.mrif.notice_identity)
        else:
            old = (vcpu.hart, vcpu.guest_file)
            self._give_guest_file(vm, vcpu, hart)
            self._free_files[old[0]].append(old[1])
        self.driver.submit([arch.iotinval(arch.IotinvalFunc.GVMA, gv=True, gscid=vm.gscid,
                                          av=True, addr=vcpu.msi_gpa)], fence=True)

    # ------------------------------------------------------------ devices
    def create_nic(self, name: str, device_id: int, vfs: int, socket: int = 0) -> SriovNic:
        """A physical NIC with ``vfs`` SR-IOV virtual functions, each its own device_id."""
        self.topology.harts_of(socket)  # checks the socket
        nic = SriovNic(name, device_id, socket)
        for i in range(vfs):
            rid = device_id + nic.first_vf_offset + i * nic.vf_stride
            if rid in self.devices or rid == device_id:
                raise HypervisorError(f"routing ID {rid:#x} of {name} VF {i} is taken")
            vf = VirtualFunction(f"{name}.vf{i}", rid, self.iommu, self.memory, pf=nic,
                                 index=i)
            nic.vfs.append(vf)
            self.devices[rid] = vf
        return nic

    def assign(self, vm: VirtualMachine, device, *, dtf: bool = False) -> None:
        """Pass ``device`` through to ``vm``: G-stage, MSI remapping, first stage Bare
        until the guest's driver installs its own table (then IOVA = GPA)."""
        if device.device_id in self.owner:
            raise HypervisorError(f"{device.name} already belongs to "
                                  f"{self.owner[device.device_id].name}")
        self.owner[device.device_id] = vm
        self.devices[device.device_id] = device
        vm.devices.append(device)
        device.vm = vm
        device.dtf = dtf
        self._install(vm, device, iosatp=0, pscid=0)

    def _install(self, vm: VirtualMachine, device, *, iosatp: int, pscid: int) -> None:
        dc = DeviceContext(
            tc=Tc.V.put(1) | Tc.DTF.put(int(getattr(device, "dtf", False))),
            iohgatp=self.iohgatp(vm), ta=Ta.PSCID.put(pscid), fsc=iosatp,
            msiptp=vm.msi_table.msiptp(), msi_addr_mask=vm.msi_mask,
            msi_addr_pattern=vm.msi_pattern)
        self.driver.ddt.install(device.device_id, dc)
        # §10.3: the changed DC, then whatever the device's old tags left in the IOTLB.
        self.driver.submit([
            arch.iodir(arch.IodirFunc.INVAL_DDT, dv=True, did=device.device_id),
            arch.iotinval(arch.IotinvalFunc.GVMA, gv=True, gscid=vm.gscid)], fence=True)

    def set_first_stage(self, vm: VirtualMachine, device, iosatp: int, pscid: int) -> None:
        """The guest asks (through its virtual IOMMU) to translate ``device`` with its
        first-stage table ``iosatp`` (root GPA) tagged ``pscid``."""
        if self.owner.get(device.device_id) is not vm:
            raise HypervisorError(f"{vm.name} does not own {device.name}")
        self._install(vm, device, iosatp=iosatp, pscid=pscid)

    def guest_invalidate(self, vm: VirtualMachine, pscid: int, iova: int | None = None) -> None:
        """A guest's IOTINVAL.VMA, forwarded with GV=1 and the VM's GSCID."""
        self.driver.submit([arch.iotinval(arch.IotinvalFunc.VMA, gv=True, gscid=vm.gscid,
                                          pscv=True, pscid=pscid, av=iova is not None,
                                          addr=iova or 0)], fence=True)

    def grant(self, device) -> list[tuple[int, int]]:
        """(spa, size) ranges ``device`` may access: its VM's RAM and MSI targets."""
        vm = self.owner.get(device.device_id)
        return vm.grant() if vm else []

    # ------------------------------------------------------------- faults
    def handle_faults(self) -> list[GuestFault]:
        """Drain the fault queue; attribute each record to the VM owning its device."""
        got = []
        for record in self.driver.drain_faults():
            vm = self.owner.get(record.device_id) if record.ttyp else None
            fault = GuestFault(vm.name if vm else None, record)
            self.fault_counts[(fault.vm, record.cause)] += 1
            got.append(fault)
        self.faults.extend(got)
        return got


# --------------------------------------------------------------------------- #
# The guest's side
# --------------------------------------------------------------------------- #
@dataclass
class GuestDomain:
    pscid: int
    table: PageTable
    next_iova: int = 0x1000_0000
    msi_iova: int | None = None

    def alloc_iova(self, length: int) -> int:
        iova = self.next_iova
        self.next_iova += -(-length // PAGE) * PAGE
        return iova


class GuestIommuDriver:
    """The guest OS's IOMMU driver: first-stage tables in guest memory, by GPA.

    Everything it writes goes to guest RAM (logged as ``<vm>.os``); it reaches the
    real IOMMU only through the hypervisor (``set_first_stage``, ``guest_invalidate``).
    """

    def __init__(self, hypervisor: Hypervisor, vm: VirtualMachine,
                 scheme: Scheme = arch.SV39):
        self.hv, self.vm, self.scheme = hypervisor, vm, scheme
        self.domains: list[GuestDomain] = []

    def create_domain(self) -> GuestDomain:
        table = PageTable(self.vm.memory, self.hv.ram_alloc, self.scheme,
                          to_phys=self.vm.gpa_to_spa, alloc_table=self.vm.alloc_gpa,
                          who=f"{self.vm.name}.os")
        dom = GuestDomain(len(self.domains) + 1, table)
        self.domains.append(dom)
        return dom

    def attach(self, device, dom: GuestDomain) -> None:
        self.hv.set_first_stage(self.vm, device, dom.table.atp(), dom.pscid)

    def map(self, dom: GuestDomain, iova: int, gpa: int, size: int = PAGE, **perms) -> None:
        dom.table.map(iova, gpa, size, **perms)

    def unmap(self, dom: GuestDomain, iova: int) -> None:
        dom.table.unmap(iova)
        self.hv.guest_invalidate(self.vm, dom.pscid, iova)

    def map_buffer(self, dom: GuestDomain, length: int, **perms) -> tuple[int, int]:
        """Allocate guest RAM and map it at a fresh IOVA; returns (iova, gpa)."""
        size = -(-length // PAGE) * PAGE
        gpa = self.vm.alloc_gpa(size)
        iova = dom.alloc_iova(size)
        dom.table.map_range(iova, gpa, size, **perms)
        return iova, gpa

    def map_msi(self, dom: GuestDomain) -> int:
        """Map the vIMSIC pages (one per vCPU) at MSI_IOVA; returns vCPU 0's MSI IOVA."""
        for vcpu in self.vm.vcpus:
            dom.table.map(MSI_IOVA + vcpu.index * PAGE, vcpu.msi_gpa, r=True, w=True)
        dom.msi_iova = MSI_IOVA
        return MSI_IOVA

    def read(self, gpa: int, length: int) -> bytes:
        return self.vm.memory.read(self.vm.gpa_to_spa(gpa), length, who=f"{self.vm.name}.os")


def leaked_bytes(memory: Memory, grants: dict[str, list[tuple[int, int]]]) -> dict[str, int]:
    """Bytes each named device read or wrote outside its grant, from the access log."""
    out = {}
    for who, ranges in grants.items():
        leaked = 0
        for rec in memory.accesses_by(who):
            inside = 0
            for start, size in ranges:
                lo, hi = max(rec.addr, start), min(rec.addr + rec.size, start + size)
                inside += max(0, hi - lo)
            leaked += rec.size - inside
        out[who] = leaked
    return out
