"""Random systems and random traffic for differential tests of the translation core.

``RandomSystem`` builds, with the ``models/pagetable.py`` builders, a device
directory (1, 2 or 3 levels) holding a mix of devices:

* ``first-stage``: DC.fsc = iosatp of its own Sv39/48/57 table;
* ``bare``: iosatp Bare (IOVA = SPA once the DC says so);
* ``pdt``: DC.tc.PDTV = 1 and a PD8/PD17/PD20 process directory whose processes
  each have a page table (or a Bare fsc, or an invalid context);
* ``invalid`` (tc.V = 0) and ``misconfigured`` (a reserved bit or an unsupported
  mode) device contexts;
* when the capabilities advertise a G-stage (Sv39x4/48x4/57x4), devices of virtual
  machines (a few VMs, each a G-stage table and GSCID shared by its devices; the
  guest's tables live at GPAs the G-stage maps): ``guest`` (iosatp = a guest
  first-stage table, nested translation), ``guest-pdt`` (a PDT at GPAs whose processes
  have guest tables) and ``gstage`` (first stage Bare: the IOVA is the GPA). Guest
  data pages are G-stage mapped with random sizes and permissions, some not at all;
* when the capabilities advertise MSI_FLAT, most VMs have interrupt files: a flat MSI
  page table (a few mask bits, mostly basic-mode PTEs, some not valid or
  misconfigured) that every device of the VM uses (msiptp, msi_addr_mask/pattern in
  its extended DC: devices sharing a GSCID share them, §9), sometimes a G-stage
  superpage over the interrupt files' GPAs (MSI translation must win, and the page
  shrink to 4 KiB), and guest mappings of the interrupt files;

with random mappings (4 KiB, 64 KiB NAPOT, 2 MiB, 1 GiB; random R/W/X/U/A/D,
PBMT) plus a few global (G=1) ones present identically in every table, and random
DTF/SADE/DPE/SUM/ENS. ``requests(n)`` then draws requests that
mostly hit mapped pages (with a hot set, so the IOTLB has hits), and also miss,
use unknown devices and processes, other address types and every privilege.

Nothing here predicts an answer: the reference model judges every response.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from models import arch
from models.arch import (
    AddrType,
    DdtpMode,
    DeviceContext,
    Fsc,
    Iohgatp,
    PcTa,
    PdtpMode,
    Priv,
    ProcessContext,
    Ta,
    Tc,
)
from models.memory import FrameAllocator, Memory
from models.pagetable import DeviceDirectory, MsiPageTable, PageTable, ProcessDirectory
from models.transaction import Request

KIB4, KIB64, MIB2, GIB1 = 1 << 12, 1 << 16, 1 << 21, 1 << 30
SCHEMES = {"Sv39": arch.SV39, "Sv48": arch.SV48, "Sv57": arch.SV57}
PD_MODES = {"PD8": PdtpMode.PD8, "PD17": PdtpMode.PD17, "PD20": PdtpMode.PD20}
DDT_MODES = {"1LVL": DdtpMode.LVL1, "2LVL": DdtpMode.LVL2, "3LVL": DdtpMode.LVL3}
PERMS = [{"r": 1, "w": 0, "x": 0}, {"r": 1, "w": 1, "x": 0}, {"r": 0, "w": 0, "x": 1},
         {"r": 1, "w": 0, "x": 1}, {"r": 1, "w": 1, "x": 1}]
PERM_WEIGHTS = [15, 45, 5, 10, 25]
KIND_WEIGHTS = {"first-stage": 50, "pdt": 30, "bare": 10, "invalid": 5, "misconfigured": 5}
#: Added when the capabilities advertise a G-stage scheme.
GUEST_KIND_WEIGHTS = {"guest": 25, "guest-pdt": 15, "gstage": 10}
GSTAGE_SCHEMES = {arch.Cap.SV39X4: arch.SV39X4_SCHEME, arch.Cap.SV48X4: arch.SV48X4_SCHEME,
                  arch.Cap.SV57X4: arch.SV57X4_SCHEME}
GUEST_TABLES_GPA = 0x4000_0000  # a VM's own tables: GPAs from here (16 MiB)
GUEST_TABLES_SIZE = 16 << 20
GUEST_DATA_GPA = 0x1_0000_0000  # guest data pages: GPAs in [4 GiB, 8 GiB)
GUEST_IMSIC_GPA = 0x3000_0000  # a VM's interrupt files (MSI pages): GPAs from here


@dataclass
class Space:
    """One address space: a page table (None = Bare) and the VAs mapped in it."""

    table: PageTable | None
    mapped: list[tuple[int, int]] = field(default_factory=list)  # (va, size)


@dataclass
class Device:
    device_id: int
    kind: str
    space: Space | None = None  # first-stage / bare devices
    processes: dict[int, Space | None] = field(default_factory=dict)  # pdt devices
    vm: VirtualMachine | None = None  # guest devices
    pd_mode: PdtpMode | None = None
    pdt: ProcessDirectory | None = None
    dc: DeviceContext | None = None


class VirtualMachine:
    """A VM: a G-stage table (GSCID) mapping the guest's table memory (2 MiB pages at
    ``GUEST_TABLES_GPA``) and, at random, its data pages (``map_data``)."""

    def __init__(self, system: RandomSystem, gscid: int):
        rng = system.rng
        self.system, self.gscid = system, gscid
        # GADE is the VM's, not each device's: devices sharing a G-stage with different
        # GADE would race on its A/D bits (one walk's update decides whether the other
        # faults), and the model's order of requests need not be the hardware's.
        self.gade = int(rng.random() < 0.5)
        self.gs = PageTable(system.memory, system.alloc, rng.choice(system.gstage_schemes))
        spa = system.alloc.alloc(GUEST_TABLES_SIZE, MIB2)
        self.tables_spa = spa
        self.guest_alloc = FrameAllocator(system.memory, base=spa, size=GUEST_TABLES_SIZE)
        for offset in range(0, GUEST_TABLES_SIZE, MIB2):
            # Mostly a plain R/W mapping; now and then A/D clear (GADE decides) or not
            # writable (an A/D update of a first-stage PTE there is a guest-page fault).
            self.gs.map(GUEST_TABLES_GPA + offset, spa + offset, MIB2, r=True,
                        w=rng.random() < 0.9, u=True, a=rng.random() < 0.9,
                        d=rng.random() < 0.8)
        self.data: list[tuple[int, int]] = []  # G-stage data mappings (gpa, size)
        self.msi: MsiPageTable | None = None
        self.msi_mask = self.msi_pattern = 0
        self.msi_gpas: list[int] = []  # interrupt-file pages and GPAs near them
        if system.extended and rng.random() < 0.7:
            self._interrupt_files()

    def _interrupt_files(self) -> None:
        """A flat MSI page table (§9) for the interrupt files at GUEST_IMSIC_GPA."""
        rng = self.system.rng
        bits = rng.sample(range(6), rng.randint(0, 3))
        self.msi_mask = sum(1 << b for b in bits)
        self.msi_pattern = (GUEST_IMSIC_GPA >> 12) & ~self.msi_mask
        self.msi = MsiPageTable(self.system.memory, self.system.alloc, 1 << len(bits))
        for index in range(self.msi.entries):
            roll = rng.random()
            dw0 = (arch.MsiPte.V.put(1) | arch.MsiPte.M.put(arch.MsiPteMode.BASIC)
                   | arch.MsiPte.PPN.put(rng.getrandbits(38)))
            if roll < 0.1:
                dw0 &= ~arch.MsiPte.V.mask
            elif roll < 0.2:  # reserved modes, C or reserved bits
                dw0 = rng.choice([arch.MsiPte.M.set(dw0, rng.choice([0, 2])),
                                  dw0 | arch.MsiPte.C.mask, dw0 | 1 << rng.randrange(3, 10)])
            elif roll < 0.45:  # MRIF mode (§9.3 step 5; 263 without MSI_MRIF)
                self.msi.set_mrif(index, rng.getrandbits(38) << 9, rng.getrandbits(38),
                                  rng.getrandbits(11))
                if rng.random() < 0.1:  # a reserved bit in dword 1
                    dw0, dw1 = self.msi.read(index)
                    self.msi.set_raw(index, dw0, dw1 | 1 << rng.choice([54, 59, 61, 63]))
            if roll >= 0.45 or roll < 0.2:
                self.msi.set_raw(index, dw0, rng.getrandbits(64))
            gpn, bit = self.msi_pattern, 0
            for i in range(6):
                if self.msi_mask >> i & 1:
                    gpn |= (index >> bit & 1) << i
                    bit += 1
            self.msi_gpas.append(gpn << 12)
        # Just past the files (not MSI pages), and now and then a G-stage superpage over
        # them: the files' pages must still be MSI-translated, the rest shrink to 4 KiB.
        self.msi_gpas.append(GUEST_IMSIC_GPA + (64 << 12))
        if rng.random() < 0.5:
            size = rng.choice([MIB2, GIB1])
            base = GUEST_IMSIC_GPA & ~(size - 1)
            self.gs.map(base, rng.randrange(0, 1 << 50, size), size, r=True, w=True,
                        x=rng.random() < 0.5, u=True, a=True, d=rng.random() < 0.8)
            self.msi_gpas.append(base + rng.randrange(size) & ~0xFFF)

    def msi_fields(self) -> dict:
        """The extended DC's MSI fields for a device of this VM (msiptp Off without files)."""
        if self.msi is None:
            return {}
        return {"msiptp": self.msi.msiptp(), "msi_addr_mask": self.msi_mask,
                "msi_addr_pattern": self.msi_pattern}

    def to_phys(self, gpa: int) -> int:
        offset = gpa - GUEST_TABLES_GPA
        if not 0 <= offset < GUEST_TABLES_SIZE:
            raise ValueError(f"GPA {gpa:#x} is not guest table memory")
        return self.tables_spa + offset

    def alloc_table(self, size: int, align: int) -> int:
        return self.guest_alloc.alloc(size, align) - self.tables_spa + GUEST_TABLES_GPA

    def iohgatp(self) -> int:
        return self.gs.atp() | Iohgatp.GSCID.put(self.gscid)

    def map_data(self, gpa: int, size: int) -> None:
        """Back the guest page(s) at ``gpa`` in the G-stage (usually; random size and
        permissions; GPAs beyond the scheme stay unmapped: guest-page faults)."""
        rng = self.system.rng
        if rng.random() < 0.08:
            return
        gsize = rng.choices([KIB4, MIB2, GIB1], [50, 35, 15])[0]
        base = gpa & ~(gsize - 1)
        if base >> self.gs.scheme.va_bits:
            return
        perms = dict(rng.choices(PERMS, PERM_WEIGHTS)[0])
        perms.update(u=rng.random() < 0.95, a=rng.random() < 0.85, d=rng.random() < 0.7,
                     pbmt=rng.choice([0, 0, 0, 1, 2]) if self.system.svpbmt else 0)
        try:
            self.gs.map(base, rng.randrange(0, 1 << 50, gsize), gsize, **perms)
        except ValueError:
            return  # overlaps a G-stage mapping of another size
        self.data.append((base, gsize))


class RandomSystem:
    """A DDT of random devices, their tables and mappings, in ``memory``."""

    def __init__(self, memory: Memory, rng: random.Random, *, ddt_mode: str = "1LVL",
                 schemes=("Sv39",), pd_modes=("PD8",), devices: int = 8,
                 mappings: int = 24, processes: int = 4, kinds=None, napot: bool = True,
                 capabilities: int | None = None):
        from rtl.params import rtl_capabilities

        self.memory, self.rng = memory, rng
        self.capabilities = rtl_capabilities() if capabilities is None else capabilities
        self.extended = bool(arch.Cap.MSI_FLAT.get(self.capabilities))
        self.svpbmt = bool(arch.Cap.SVPBMT.get(self.capabilities))
        self.gstage_schemes = [s for cap, s in GSTAGE_SCHEMES.items()
                               if cap.get(self.capabilities)]
        self.vms: list[VirtualMachine] = []
        self.napot = napot
        self.schemes = [SCHEMES[s] for s in schemes]
        self.pd_modes = [PD_MODES[p] for p in pd_modes]
        self.mappings_per_table = mappings
        self.processes_per_device = processes
        self.alloc = FrameAllocator(memory, base=0x8000_0000, size=1 << 30)
        self.ddt = DeviceDirectory(memory, self.alloc, DDT_MODES[ddt_mode], self.extended)
        self.id_bits = arch.device_id_width(self.ddt.mode, self.extended)
        all_weights = KIND_WEIGHTS | (GUEST_KIND_WEIGHTS if self.gstage_schemes else {})
        weights = {k: all_weights[k] for k in kinds} if kinds else all_weights
        # Global (G=1) mappings exist in every address space (Privileged spec): the same
        # leaves in every table, so an IOTLB may answer any space from any of them.
        # Random G=1 leaves would make the answer depend on what each cache holds.
        self.globals = []
        for index, size in enumerate(rng.sample([KIB4, KIB4, MIB2, GIB1], 3)):
            # One GiB slot each, canonical in Sv39/48/57.
            va = GIB1 * (200 + index) + rng.randrange(0, GIB1, size)
            perms = dict(rng.choice(PERMS), u=rng.random() < 0.5, g=True, a=True, d=True)
            self.globals.append((va, rng.randrange(0, 1 << 50, size), size, perms))
        self.devices: list[Device] = []
        used: set[int] = set()
        for _ in range(devices):
            device_id = self._new_id(used)
            kind = rng.choices(list(weights), list(weights.values()))[0]
            self.devices.append(self._add_device(device_id, kind))
        self.hot: list[tuple[Device, int | None, int]] = []  # recent (device, pid, iova)
        # One request per injected memory error that reads it (inject_memory_errors).
        self.error_targets: list[Request] = []

    def ddtp(self) -> int:
        return self.ddt.ddtp()

    # ----------------------------------------------------------------- build
    def _new_id(self, used: set[int]) -> int:
        while True:
            # Cluster ids so that multi-level DDTs share intermediate tables.
            high = self.rng.choice([0, 1, 0x5A]) << max(0, self.id_bits - 8)
            device_id = (high | self.rng.getrandbits(min(6, self.id_bits))) & (
                (1 << self.id_bits) - 1)
            if device_id not in used:
                used.add(device_id)
                return device_id

    def _vm(self) -> VirtualMachine:
        """One of (up to) three VMs; their devices share its G-stage and GSCID."""
        if len(self.vms) < 3 and (not self.vms or self.rng.random() < 0.4):
            self.vms.append(VirtualMachine(self, gscid=self.rng.getrandbits(16)))
        return self.rng.choice(self.vms)

    def _page_table(self, vm: VirtualMachine | None = None) -> Space:
        """A first-stage table with random mappings; a guest's (at GPAs, mapping to
        guest data GPAs that ``vm`` backs) when ``vm`` is given."""
        rng = self.rng
        scheme = rng.choice(self.schemes)
        if vm is None:
            table = PageTable(self.memory, self.alloc, scheme)
        else:
            table = PageTable(self.memory, self.alloc, scheme, to_phys=vm.to_phys,
                              alloc_table=vm.alloc_table)
        space = Space(table)
        top = 1 << (scheme.va_bits - 1)  # canonical: [0, top) and [2^64 - top, 2^64)
        # A few regions, so mappings share intermediate tables.
        regions = [rng.randrange(0, top, GIB1), rng.randrange(0, top, GIB1),
                   (1 << 64) - top + rng.randrange(0, top, GIB1)]
        # Global mappings only in host tables: G=1 translations of different VMs are
        # different address spaces (tagged by GSCID).
        for va, pa, size, perms in self.globals if vm is None else []:
            table.map(va, pa, size, **perms)
            space.mapped.append((va, size))
        for _ in range(self.mappings_per_table):
            size = rng.choices([KIB4, KIB64, MIB2, GIB1], [60, 8 if self.napot else 0, 22, 10])[0]
            base = rng.choice(regions)
            span = GIB1 * 4 if size == GIB1 else GIB1
            va = (base + rng.randrange(0, span, size)) % (1 << 64)
            if table._va_problem(va) or any(va < g_va + g_size and g_va < va + size
                                             for g_va, _, g_size, _ in self.globals):
                continue
            if vm is None:
                pa = rng.randrange(0, 1 << 50, size)
            else:
                pa = GUEST_DATA_GPA + rng.randrange(0, 1 << 32, size)
            perms = dict(rng.choices(PERMS, PERM_WEIGHTS)[0])
            perms.update(u=rng.random() < 0.8, g=False, a=rng.random() < 0.9,
                         d=rng.random() < 0.7,
                         pbmt=rng.choice([0, 0, 0, 1, 2]) if self.svpbmt else 0)
            try:
                table.map(va, pa, size, **perms)
            except ValueError:  # overlaps a mapping of another size: skip it
                continue
            space.mapped.append((va, size))
            if vm is not None:
                vm.map_data(pa, size)
        return space

    def _map_interrupt_files(self, space: Space, vm: VirtualMachine) -> None:
        """Map some of ``vm``'s interrupt-file GPAs in a guest first-stage table (4 KiB
        pages, or a 2 MiB one over them all)."""
        rng = self.rng
        if not vm.msi_gpas:
            return
        top = 1 << (space.table.scheme.va_bits - 1)
        va = rng.randrange(0, top, GIB1)
        if rng.random() < 0.3:
            pairs = [(va, GUEST_IMSIC_GPA & ~(MIB2 - 1), MIB2)]
        else:
            pairs = [(va + KIB4 * n, gpa, KIB4) for n, gpa in enumerate(vm.msi_gpas)]
        for va, gpa, size in pairs:
            perms = dict(rng.choices(PERMS, PERM_WEIGHTS)[0])
            perms.update(u=rng.random() < 0.9, a=rng.random() < 0.9, d=rng.random() < 0.7)
            try:
                space.table.map(va, gpa, size, **perms)
            except ValueError:
                continue
            space.mapped.append((va, size))

    def _tc(self, **bits) -> int:
        rng = self.rng
        tc = Tc.V.put(1)
        if rng.random() < 0.15:
            tc |= Tc.DTF.put(1)
        if rng.random() < 0.5:
            tc |= Tc.SADE.put(1)
        for name, value in bits.items():
            tc = getattr(Tc, name).set(tc, value)
        return tc

    def _add_device(self, device_id: int, kind: str) -> Device:
        rng = self.rng
        device = Device(device_id, kind)
        pscid = Ta.PSCID.put(rng.getrandbits(20))
        if kind == "first-stage":
            device.space = self._page_table()
            dc = DeviceContext(tc=self._tc(), ta=pscid, fsc=device.space.table.atp())
        elif kind == "bare":
            device.space = Space(None)
            dc = DeviceContext(tc=self._tc(), ta=pscid, fsc=0)
        elif kind == "pdt":
            mode = rng.choice(self.pd_modes)
            pdt = ProcessDirectory(self.memory, self.alloc, mode)
            device.pd_mode, device.pdt = mode, pdt
            width = {PdtpMode.PD8: 8, PdtpMode.PD17: 17, PdtpMode.PD20: 20}[mode]
            for _ in range(self.processes_per_device):
                pid = rng.getrandbits(width)
                roll = rng.random()
                if roll < 0.8:
                    space = self._page_table()
                    fsc = space.table.atp()
                elif roll < 0.9:
                    space, fsc = Space(None), 0  # Bare first stage for this process
                else:
                    space, fsc = None, 0  # invalid process context
                ta = PcTa.PSCID.put(rng.getrandbits(20))
                if space is not None:
                    ta |= PcTa.V.put(1)
                    ta |= PcTa.ENS.put(int(rng.random() < 0.7))
                    ta |= PcTa.SUM.put(int(rng.random() < 0.3))
                pdt.install(pid, ProcessContext(ta=ta, fsc=fsc))
                device.processes[pid] = space
            dc = DeviceContext(tc=self._tc(PDTV=1, DPE=int(rng.random() < 0.5)), fsc=pdt.pdtp())
            if device.processes and rng.random() < 0.5:
                # DPE: with no process id, process 0's context is used (§3.2).
                pid0 = 0
                if pid0 not in device.processes:
                    space = self._page_table()
                    pdt.install(pid0, ProcessContext(
                        ta=PcTa.V.put(1) | PcTa.ENS.put(1) | PcTa.PSCID.put(rng.getrandbits(20)),
                        fsc=space.table.atp()))
                    device.processes[pid0] = space
        elif kind == "guest":
            vm = device.vm = self._vm()
            device.space = self._page_table(vm)
            self._map_interrupt_files(device.space, vm)
            dc = DeviceContext(tc=self._tc(GADE=vm.gade), ta=pscid,
                               iohgatp=vm.iohgatp(), fsc=device.space.table.atp(),
                               **vm.msi_fields())
        elif kind == "gstage":
            vm = device.vm = self._vm()
            device.space = Space(vm.gs, [(gpa, size) for gpa, size in vm.data])
            for _ in range(4):  # some data pages of its own
                size = rng.choice([KIB4, MIB2])
                gpa = GUEST_DATA_GPA + rng.randrange(0, 1 << 32, size)
                vm.map_data(gpa, size)
                device.space.mapped.append((gpa, size))
            device.space.mapped += [(gpa, KIB4) for gpa in vm.msi_gpas]
            dc = DeviceContext(tc=self._tc(GADE=vm.gade), ta=pscid,
                               iohgatp=vm.iohgatp(), fsc=0, **vm.msi_fields())
        elif kind == "guest-pdt":
            vm = device.vm = self._vm()
            mode = rng.choice(self.pd_modes)
            pdt = ProcessDirectory(self.memory, self.alloc, mode, to_phys=vm.to_phys,
                                   alloc_table=vm.alloc_table)
            device.pd_mode, device.pdt = mode, pdt
            width = {PdtpMode.PD8: 8, PdtpMode.PD17: 17, PdtpMode.PD20: 20}[mode]
            for _ in range(self.processes_per_device):
                pid = rng.getrandbits(width)
                space = self._page_table(vm) if rng.random() < 0.85 else Space(None)
                if space.table is not None:
                    self._map_interrupt_files(space, vm)
                ta = (PcTa.V.put(1) | PcTa.ENS.put(int(rng.random() < 0.7))
                      | PcTa.SUM.put(int(rng.random() < 0.3))
                      | PcTa.PSCID.put(rng.getrandbits(20)))
                pdt.install(pid, ProcessContext(ta=ta, fsc=space.table.atp() if space.table
                                                else 0))
                device.processes[pid] = space
            dc = DeviceContext(tc=self._tc(PDTV=1, GADE=vm.gade),
                               iohgatp=vm.iohgatp(), fsc=pdt.pdtp(), **vm.msi_fields())
        elif kind == "invalid":
            dc = DeviceContext(tc=0, fsc=0)
        elif kind == "misconfigured":
            choice = rng.randrange(3)
            if choice == 0:  # a reserved tc bit
                dc = DeviceContext(tc=Tc.V.put(1) | (1 << rng.randrange(12, 24)))
            elif choice == 1:  # a reserved G-stage mode, or Sv39x4 (maybe not advertised)
                # with a root that is not 16 KiB aligned
                dc = DeviceContext(tc=Tc.V.put(1), iohgatp=Iohgatp.MODE.put(
                    rng.choice([8, 13])) | Iohgatp.PPN.put(1))
            else:  # a reserved iosatp mode
                dc = DeviceContext(tc=Tc.V.put(1), fsc=Fsc.MODE.put(rng.choice([1, 7, 11, 15])))
        else:
            raise ValueError(f"unknown device kind {kind!r}")
        device.dc = dc
        self.ddt.install(device_id, dc)
        return device

    # --------------------------------------------------------------- traffic
    def _iova_in(self, space: Space | None) -> int:
        rng = self.rng
        if space is None or space.table is None or not space.mapped or rng.random() < 0.08:
            roll = rng.random()
            if roll < 0.5:
                return rng.getrandbits(39)
            if roll < 0.8:
                return rng.getrandbits(64)  # often non-canonical
            if space is not None and space.mapped:  # just past a mapping
                va, size = rng.choice(space.mapped)
                return (va + size + rng.randrange(KIB4)) % (1 << 64)
            return rng.getrandbits(48)
        va, size = rng.choice(space.mapped)
        return va + rng.randrange(size)

    def request(self) -> Request:
        """One random request (``tag`` is assigned by the driver)."""
        rng = self.rng
        access = rng.choices(list(arch.Access), [50, 35, 15])[0]
        addr_type = rng.choices(list(AddrType), [94, 3, 3])[0]
        priv = rng.choice(list(Priv))
        if self.hot and rng.random() < 0.4:
            device, pid, iova = rng.choice(self.hot)
            if rng.random() < 0.3:
                iova = (iova & ~(KIB4 - 1)) | rng.randrange(KIB4)
        else:
            if rng.random() < 0.03:
                device = Device(rng.getrandbits(self.id_bits if rng.random() < 0.8 else 24),
                                "unknown")
            else:
                device = rng.choice(self.devices)
            pid = None
            space = device.space
            if device.kind in ("pdt", "guest-pdt"):
                if device.processes and rng.random() < 0.85:
                    pid = rng.choice(list(device.processes))
                    space = device.processes[pid]
                elif rng.random() < 0.5:
                    pid = rng.getrandbits(20)
                    space = None
                else:
                    space = device.processes.get(0)
            elif rng.random() < 0.05:
                pid = rng.getrandbits(20)
            iova = self._iova_in(space)
            self.hot.append((device, pid, iova))
            if len(self.hot) > 64:
                self.hot.pop(0)
        return Request(device_id=device.device_id, iova=iova, access=access,
                       process_id=pid or 0, pv=pid is not None,
                       priv=priv if pid is not None else Priv.USER, addr_type=addr_type)

    def requests(self, count: int) -> list[Request]:
        return [self.request() for _ in range(count)]

    def inject_memory_errors(self, count: int) -> list[tuple[int, str, str]]:
        """Make ``count`` dwords the IOMMU reads fail: a PTE on some walk path, a device
        context or a process context, each an access fault or poisoned data.

        Call before ``TB.configure`` so the model's copy of memory has them too.
        Returns ``(address, kind, what)`` for the log.
        """
        rng = self.rng
        # (address, what, a request whose translation reads it or None)
        candidates: list[tuple[int, str, Request | None]] = []
        for device in self.devices:
            with_pid = device.kind in ("pdt", "guest-pdt")
            addr = self.ddt.dc_address(device.device_id)
            if addr is not None:
                # Every request of the device reads its DC (a faulting one is not cached).
                pid = next(iter(device.processes), None) if with_pid else None
                candidates.append((addr + 8 * rng.randrange(self.ddt.dc_size // 8),
                                   f"DC of device {device.device_id:#x}",
                                   _read_request(device, pid, 0)))
            if device.pdt is not None and device.processes:
                pid = rng.choice(list(device.processes))
                candidates.append((device.pdt.pc_address(pid) + 8 * rng.randrange(2),
                                   f"PC of device {device.device_id:#x} process {pid:#x}",
                                   _read_request(device, pid, 0)))
            spaces = ([] if with_pid else [(None, device.space)]) + list(device.processes.items())
            for pid, space in spaces:
                if space and space.table and space.mapped:
                    # Not on the way to a global page: an IOTLB may answer those from
                    # another address space's walk, so whether a request meets the
                    # error would depend on what the caches hold.
                    global_path = {pte for g_va, *_ in self.globals
                                   for pte, _, _ in space.table.walk_path(g_va)}
                    va, _ = rng.choice(space.mapped)
                    path = [p for p in space.table.walk_path(va) if p[0] not in global_path]
                    if path:
                        pte, level, _ = rng.choice(path)
                        candidates.append((pte, f"level-{level} PTE for va {va:#x}",
                                           _read_request(device, pid, va)))
            if device.vm is not None and device.vm.msi is not None:
                index = rng.randrange(device.vm.msi.entries)
                candidates.append((device.vm.msi.entry_address(index) + 8 * rng.randrange(2),
                                   f"MSI PTE {index} of GSCID {device.vm.gscid:#x}", None))
        injected = []
        self.error_targets = []
        for addr, what, target in rng.sample(candidates, min(count, len(candidates))):
            kind = rng.choice(["access", "poison"])
            self.memory.inject_fault(addr, 8, kind)
            injected.append((addr, kind, what))
            if target is not None:
                self.error_targets.append(target)
        return injected

    def requests_with_errors(self, count: int) -> list[Request]:
        """``count`` random requests, and among them (at random places) one request that
        reads each error ``inject_memory_errors`` made (but MSI PTEs'): random traffic
        alone may miss every one of them."""
        out = self.requests(count)
        for target in self.error_targets:
            out.insert(self.rng.randrange(len(out) + 1), target)
        return out

    def describe(self) -> str:
        kinds = {}
        for d in self.devices:
            kinds[d.kind] = kinds.get(d.kind, 0) + 1
        tables = sum(1 for d in self.devices if d.space and d.space.table) + sum(
            1 for d in self.devices for s in d.processes.values() if s and s.table)
        return (f"{self.ddt.mode.name} DDT, {len(self.devices)} devices "
                f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), {tables} page "
                f"tables ({'/'.join(s.name for s in self.schemes)}), PDTs "
                f"{'/'.join(m.name for m in self.pd_modes)}")


def _read_request(device, pid: int | None, iova: int) -> Request:
    """An untranslated read of ``iova`` by ``device`` (with ``pid`` if given, as User)."""
    return Request(device_id=device.device_id, iova=iova, access=arch.Access.READ,
                   process_id=pid or 0, pv=pid is not None, priv=Priv.USER,
                   addr_type=AddrType.UNTRANSLATED)
