"""Build-time parameters of the IOMMU hardware.

Every choice the spec leaves to the implementation is made here and advertised
through ``capabilities``; the reference model is built from the same object
(``params.capabilities``) so that both agree on what is supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models import arch


def rtl_capabilities() -> int:
    """What the RTL translation core implements today.

    First stage Sv39/Sv48/Sv57, Svpbmt, hardware A/D update, PD8/PD17/PD20,
    56-bit physical addresses; HPM counters (rtl/hpm.py), the debug translation
    interface (DBG) and both wired and message-signalled interrupts (IGS = BOTH,
    fctl.WSI chooses; rtl/interrupts.py); G-stage Sv39x4/Sv48x4/Sv57x4 and nested
    translation (rtl/walker.py; PDTs at GPAs in rtl/context_fetch.py); MSI address
    translation through flat MSI page tables (MSI_FLAT, rtl/msi.py), basic and MRIF-mode
    MSI PTEs (MSI_MRIF: the completion names the MRIF and its notice MSI; the bridge
    records the interrupt, §9.4). MSI_FLAT also selects the extended, 64-byte device
    context and its DDI split (§2.3): the context fetch reads 8 dwords per DC, and
    software must build its device directory in that format. Not AMO_MRIF (the bridge's
    MRIF update is a read-modify-write) and not ATS. A device context that asks for what
    is not advertised is misconfigured (cause 259), exactly as the spec says for a
    missing capability.
    """
    return arch.capabilities_value(
        sv39=True, sv48=True, sv57=True, sv39x4=True, sv48x4=True, sv57x4=True,
        svpbmt=True, amo_hwad=True, msi_flat=True, msi_mrif=True, ats=False,
        t2gpa=False, end=False, igs=arch.Igs.BOTH, hpm=True, dbg=True, pas=56,
        pd8=True, pd17=True, pd20=True,
    )


def _power_of_two(name: str, value: int) -> None:
    if value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two, not {value!r}")


@dataclass(frozen=True)
class IOMMUParams:
    """Sizes and features of one IOMMU instance.

    iotlb_entries / iotlb_ways: IOTLB geometry; ways == entries is fully associative
      (flip-flops), fewer ways keep the entries in RAM (distributed RAM on an FPGA).
    iotlb_superpage_entries: with more than 0, ``iotlb_entries`` hold 4 KiB pages only and
      this many more, fully associative, hold the larger pages (rtl/split_iotlb.py); with
      0, one IOTLB holds every size (set-associative, a superpage is then cached in
      the set of each 4 KiB page walked in it).
    walkers: page-table walks in flight (each has its own walker and miss slot).
    dc_cache_entries / pc_cache_entries: device- and process-context caches.
    tag_bits: width of the request tag returned with each response.
    hpm_counters: iohpmctr/iohpmevt pairs (1..31) when capabilities.HPM = 1.
    fctl_reset: fctl's reset value (made legal for the capabilities: WSI follows IGS).
    walk_cache_entries: per walker, G-stage translations of guest page-table pages
      (rtl/walk_cache.py); 0 turns the walk cache off.
    """

    iotlb_entries: int = 32
    iotlb_ways: int = 4
    iotlb_superpage_entries: int = 4
    walkers: int = 4
    dc_cache_entries: int = 8
    pc_cache_entries: int = 8
    tag_bits: int = 8
    hpm_counters: int = 7
    fctl_reset: int = 0
    walk_cache_entries: int = 4
    capabilities: int = field(default_factory=rtl_capabilities)

    def __post_init__(self):
        _power_of_two("iotlb_entries", self.iotlb_entries)
        _power_of_two("iotlb_ways", self.iotlb_ways)
        if self.iotlb_ways > self.iotlb_entries:
            raise ValueError(f"iotlb_ways ({self.iotlb_ways}) cannot exceed iotlb_entries "
                             f"({self.iotlb_entries})")
        if self.iotlb_superpage_entries:
            _power_of_two("iotlb_superpage_entries", self.iotlb_superpage_entries)
            if self.iotlb_superpage_entries > 64:
                raise ValueError(f"iotlb_superpage_entries must be 0..64, not "
                                 f"{self.iotlb_superpage_entries!r}")
        if not 1 <= self.walkers <= 16:
            raise ValueError(f"walkers must be 1..16, not {self.walkers!r}")
        for name in ("dc_cache_entries", "pc_cache_entries"):
            if not 1 <= getattr(self, name) <= 64:
                raise ValueError(f"{name} must be 1..64, not {getattr(self, name)!r}")
        if not 0 <= self.walk_cache_entries <= 64:
            raise ValueError(f"walk_cache_entries must be 0..64, not "
                             f"{self.walk_cache_entries!r}")
        if not 1 <= self.tag_bits <= 16:
            raise ValueError(f"tag_bits must be 1..16, not {self.tag_bits!r}")
        if not 1 <= self.hpm_counters <= arch.HPM_COUNTERS_MAX:
            raise ValueError(f"hpm_counters must be 1..{arch.HPM_COUNTERS_MAX}, not "
                             f"{self.hpm_counters!r}")

    @property
    def iotlb_sets(self) -> int:
        return self.iotlb_entries // self.iotlb_ways

    @property
    def mem_id_bits(self) -> int:
        """Id bits on the IOMMU's memory port: one port per walker plus context fetch."""
        return max(1, (self.walkers + 1 - 1).bit_length())


SMALL = IOMMUParams(iotlb_entries=8, iotlb_ways=8, iotlb_superpage_entries=0, walkers=2,
                    dc_cache_entries=2, pc_cache_entries=2)
DEFAULT = IOMMUParams()
LARGE = IOMMUParams(iotlb_entries=128, iotlb_ways=4, iotlb_superpage_entries=16, walkers=8,
                    dc_cache_entries=16, pc_cache_entries=16)
