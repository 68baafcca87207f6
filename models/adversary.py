"""Rogue and buggy device behaviour: what a device (or the guest driving it) may try.

An ``Adversary`` takes one device assigned to a VM and aims it at what it must never
reach, the way an attacker who knows the host's physical layout would:

* DMA outside its grant: another VM's RAM, the hypervisor's memory (command and
  fault queues), the translation structures themselves (the DDT, the VM's G-stage
  root, its MSI page table);
* forged MSIs: writes to another VM's interrupt files (their host addresses, and
  vIMSIC pages of vCPUs the VM does not have), and MSI data outside the interrupt
  file's identities;
* malformed requests: a Translated request without ATS, a PASID the device context
  does not allow, a GPA wider than the G-stage scheme, execute from an MSI page, a
  spoofed routing ID nobody was assigned.

``MaliciousGuest`` is the guest-driver side of the attack: it maps its own first
stage onto GPAs that are other VMs' or the hypervisor's host addresses, so its device
can "legitimately" ask for them; the G-stage must stop it.

Every attempt records what it targeted (words, and the host address it hoped to
reach); ``run`` performs it through the translation door and, only if the IOMMU
allowed it, against memory under the device's name, so the memory access log shows
what reached memory.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from models.arch import Access, AddrType
from models.memory import AccessFault
from models.os.hypervisor import (
    GUEST_IMSIC_GPA,
    PAGE,
    GuestDomain,
    GuestIommuDriver,
    Hypervisor,
    MsiOutcome,
    VirtualMachine,
)
from models.transaction import Request, Response


@dataclass(frozen=True)
class Attempt:
    """One thing a rogue device tries. ``target_spa`` is the host address it aimed at
    (None when it aimed at nothing in particular, e.g. a malformed request)."""

    kind: str
    target: str
    iova: int
    access: Access = Access.READ
    length: int = 8
    data: int | None = None  # set: an MSI write of this 32-bit value
    addr_type: AddrType = AddrType.UNTRANSLATED
    process_id: int | None = None
    device_id: int | None = None  # a spoofed routing ID; None = the device's own
    target_spa: int | None = None


@dataclass
class AttemptResult:
    attempt: Attempt
    device: str
    device_id: int
    allowed: bool
    response: Response
    spa: int | None = None  # where it landed when allowed
    msi: MsiOutcome | None = None


class Adversary:
    """A device under hostile (or buggy) control."""

    def __init__(self, hypervisor: Hypervisor, device, rng: random.Random | None = None):
        self.hv, self.device = hypervisor, device
        self.rng = rng or random.Random(0)
        self.results: list[AttemptResult] = []

    @property
    def vm(self) -> VirtualMachine:
        return self.hv.owner[self.device.device_id]

    def _others(self) -> list[VirtualMachine]:
        return [vm for vm in self.hv.vms.values() if vm is not self.vm]

    # ------------------------------------------------------------ catalogue
    def attempts(self) -> list[Attempt]:
        """One attempt of each kind, aimed at this platform's real addresses."""
        hv, vm, rng = self.hv, self.vm, self.rng
        out = []
        for other in self._others():
            _, spa, size = rng.choice(other.ram)
            off = rng.randrange(0, size, 8)
            out.append(Attempt("dma_other_vm", f"{other.name} RAM at SPA {spa + off:#x}",
                               spa + off, Access.READ, target_spa=spa + off))
            out.append(Attempt("dma_other_vm", f"{other.name} RAM at SPA {spa + off:#x}",
                               spa + off, Access.WRITE, target_spa=spa + off))
            vcpu = rng.choice(other.vcpus)
            file_spa = (hv.platform.imsic.file_address(vcpu.hart, vcpu.guest_file)
                        if vcpu.guest_file is not None else vcpu.mrif.address)
            out.append(Attempt("msi_other_vm", f"{other.name} vCPU {vcpu.index} interrupt "
                               f"file at SPA {file_spa:#x}", file_spa, Access.WRITE, 4,
                               data=1, target_spa=file_spa))
        driver = hv.driver
        for name, spa, access in (("DDT root", driver.ddt.root, Access.WRITE),
                                  ("command queue", driver.cq_base, Access.WRITE),
                                  ("fault queue", driver.fq_base, Access.READ)):
            out.append(Attempt("dma_hypervisor", f"hypervisor {name} at SPA {spa:#x}", spa,
                               access, target_spa=spa))
        for name, spa in ((f"{vm.name} G-stage root", vm.gstage.root),
                          (f"{vm.name} MSI page table", vm.msi_table.base)):
            out.append(Attempt("dma_page_table", f"{name} at SPA {spa:#x}", spa,
                               Access.WRITE, target_spa=spa))
        # A vCPU this VM does not have: its vIMSIC page is outside the MSI pattern
        # (or, inside it, an invalid MSI PTE).
        missing = len(vm.vcpus)
        out.append(Attempt("msi_other_vm", f"vIMSIC page of absent vCPU {missing}",
                           GUEST_IMSIC_GPA + missing * PAGE, Access.WRITE, 4, data=1))
        msi_iova = self._own_msi_iova()
        out.append(Attempt("msi_bad_data", "own interrupt file, identity 0", msi_iova,
                           Access.WRITE, 4, data=0))
        out.append(Attempt("msi_bad_data", "own interrupt file, identity 4095", msi_iova,
                           Access.WRITE, 4, data=4095))
        out.append(Attempt("malformed", "Translated request without ATS",
                           self.rng.choice(vm.ram)[0], Access.READ,
                           addr_type=AddrType.TRANSLATED))
        out.append(Attempt("malformed", "PASID on a device context without a PDT",
                           self.rng.choice(vm.ram)[0], Access.READ, process_id=5))
        out.append(Attempt("malformed", "address wider than the guest address space",
                           1 << 45, Access.WRITE))
        out.append(Attempt("malformed", "execute from an MSI page", msi_iova,
                           Access.EXECUTE))
        spoof = self._unassigned_routing_id()
        out.append(Attempt("malformed", f"spoofed routing ID {spoof:#x}",
                           self.rng.choice(vm.ram)[0], Access.READ, device_id=spoof))
        return out

    def _own_msi_iova(self) -> int:
        """The address this device's guest programmed for MSIs (vCPU 0)."""
        return getattr(self.device, "msi_iova", None) or GUEST_IMSIC_GPA

    def _unassigned_routing_id(self) -> int:
        taken = set(self.hv.devices) | set(self.hv.owner)
        rid = self.device.device_id + 0x40
        while rid in taken:
            rid += 1
        return rid

    def random_attempts(self, n: int) -> list[Attempt]:
        """``n`` attempts drawn from the catalogue, with fresh random targets."""
        return [self.rng.choice(self.attempts()) for _ in range(n)]

    # ------------------------------------------------------------------ run
    def run(self, attempt: Attempt) -> AttemptResult:
        dev = self.device
        if attempt.data is not None and attempt.device_id is None \
                and attempt.addr_type == AddrType.UNTRANSLATED and attempt.process_id is None:
            outcome = self.hv.platform.msi_write(dev, attempt.iova, attempt.data)
            result = AttemptResult(attempt, dev.name, dev.device_id, outcome.response.ok,
                                   outcome.response, outcome.spa if outcome.response.ok
                                   else None, outcome)
            self.results.append(result)
            return result
        device_id = dev.device_id if attempt.device_id is None else attempt.device_id
        pv = attempt.process_id is not None
        request = Request(device_id=device_id, iova=attempt.iova, access=attempt.access,
                          process_id=attempt.process_id or 0, pv=pv,
                          addr_type=attempt.addr_type, length=attempt.length)
        dev.stats.translations += 1
        response = dev.iommu.translate(request)
        spa = None
        if response.ok and response.msi and response.spa in self.hv.platform.mrifs:
            # §9.4: on an MRIF-mode MSI page only aligned 32-bit writes (MSIs) mean
            # anything; other accesses are aborted or read 0 by the bridge: no memory access.
            spa = response.spa
        elif response.ok:
            spa = response.spa
            try:
                if attempt.access == Access.WRITE:
                    payload = (attempt.data or 0xDEAD_BEEF).to_bytes(attempt.length, "little")
                    dev.memory.write(spa, payload, who=dev.name)
                else:
                    dev.memory.read(spa, attempt.length, who=dev.name)
                dev.stats.bytes_ok += attempt.length
            except AccessFault:
                pass  # the platform's PMA/PMP refused it: still counted as allowed by the IOMMU
        else:
            dev.stats.aborted += 1
        result = AttemptResult(attempt, dev.name, device_id, response.ok, response, spa)
        self.results.append(result)
        return result


class MaliciousGuest(GuestIommuDriver):
    """A guest driver that maps its device's IOVAs onto GPAs it does not own.

    It picks GPAs equal to host addresses it wants (another VM's RAM, the DDT, the
    fault queue): in its G-stage those GPAs map nothing, so the walk ends in a
    guest-page fault and the access never reaches memory.
    """

    def map_foreign(self, dom: GuestDomain, targets: list[tuple[str, int]]) -> list[Attempt]:
        """Map one IOVA per (name, host address) and return read attempts through them."""
        out = []
        for name, spa in targets:
            page = spa & ~(PAGE - 1)
            iova = dom.alloc_iova(PAGE)
            dom.table.map(iova, page, r=True, w=True)
            out.append(Attempt("guest_maps_foreign", f"{name} at SPA {spa:#x} mapped by "
                               f"the guest as GPA", iova + (spa - page), Access.READ,
                               target_spa=spa))
        return out

    def foreign_targets(self, rng: random.Random) -> list[tuple[str, int]]:
        hv = self.hv
        out = []
        for other in hv.vms.values():
            if other is not self.vm:
                _, spa, size = rng.choice(other.ram)
                out.append((f"{other.name} RAM", spa + rng.randrange(0, size, 8)))
        out += [("hypervisor DDT root", hv.driver.ddt.root),
                ("hypervisor fault queue", hv.driver.fq_base),
                (f"{self.vm.name} G-stage root", self.vm.gstage.root)]
        return out


def with_write(attempt: Attempt) -> Attempt:
    """The same attempt as a write (a rogue device tries both directions)."""
    return replace(attempt, access=Access.WRITE)


__all__ = ["Adversary", "Attempt", "AttemptResult", "MaliciousGuest", "with_write"]
