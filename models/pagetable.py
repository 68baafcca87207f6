"""In-memory translation structures, built the way an OS or a hypervisor builds them.

The reference model, the RTL testbench and the scenarios all need real tables in
``Memory`` to walk: first-stage and G-stage page tables (§5), the device directory
(§2, §3), process directories (§4) and flat MSI page tables (§9). This module writes
them with ordinary ``Memory.write64`` stores under a ``who`` name (default ``"os"``),
so the access log separates software stores from the IOMMU's own accesses.

Every bit position comes from ``models.arch``; this module only decides *where* the
entries go. The builders refuse to make malformed entries through their normal
methods (they raise ``ValueError`` with the reason); tests that need a malformed entry
write it on purpose with the ``set_raw*`` methods.

Tables read back their own entries with ``Memory.peek64`` (no log entry, no injected
fault): software keeps its view of its tables even while a test makes the IOMMU's
reads of them fail. Stores do go through the fault machinery, so build the tables
before injecting faults on them.
"""

from __future__ import annotations

from collections.abc import Callable

from .arch import (
    BASE_DC_SIZE,
    EXTENDED_DC_SIZE,
    MASK64,
    MSI_PTE_SIZE,
    PAGE_SHIFT,
    PAGE_SIZE,
    PC_SIZE,
    Ddte,
    Ddtp,
    DdtpMode,
    DeviceContext,
    Fsc,
    Iohgatp,
    Msiptp,
    MsiptpMode,
    MsiPte,
    MsiPteMode,
    PcTa,
    PdtpMode,
    ProcessContext,
    Pte,
    Scheme,
    Tc,
    ddi,
    device_id_fits,
    page_size,
    pdi,
    process_id_fits,
)
from .memory import FrameAllocator, Memory

#: Size of one PTE and of one non-leaf DDT/PDT entry (RV64 schemes only).
ENTRY_SIZE = 8
#: Svnapot: a 64 KiB page is 16 level-0 PTEs with N=1 and PPN[3:0] = 1000b (§5.2).
NAPOT_SIZE = 0x10000
NAPOT_PTES = NAPOT_SIZE // PAGE_SIZE
NAPOT_PPN_LOW = 0b1000
#: Widest physical address a PPN field can hold (PPN [53:10] is 44 bits).
PA_WIDTH = Pte.PPN.width + PAGE_SHIFT
#: An MSI PTE holds MRIF address[55:9]: MRIFs are 512 bytes, 512-byte aligned (§9.2, §9.4).
MRIF_ADDR_SHIFT = 9

_LEAF_FIELDS = {
    "r": Pte.R, "w": Pte.W, "x": Pte.X, "u": Pte.U, "g": Pte.G, "a": Pte.A, "d": Pte.D,
    "pbmt": Pte.PBMT, "rsw": Pte.RSW,
}
#: Bits a non-leaf PTE must keep at 0 under the current Privileged text (§5.2).
_NONLEAF_RESERVED = Pte.A.mask | Pte.D.mask | Pte.U.mask | Pte.N.mask | Pte.PBMT.mask
_PBMT_RESERVED = 3


def _identity(addr: int) -> int:
    return addr


def size_name(size: int) -> str:
    """Human name of a page or region size (``4 KiB``, ``2 MiB``, ...)."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size:#x} bytes"


class NotMappedError(KeyError):
    """Nothing is installed where an update (unmap, protect, remove, read) was asked for.

    A ``KeyError`` so callers can treat it like a missing dictionary key, but printed
    as plain text rather than as a quoted key.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not mapped"


def _is_valid(pte: int) -> bool:
    return bool(Pte.V.get(pte))


def _xwr(pte: int) -> int:
    return pte & (Pte.R.mask | Pte.W.mask | Pte.X.mask)


def _is_pointer(pte: int) -> bool:
    """V=1 and R=W=X=0: a pointer to the next-level table (§5.2)."""
    return _is_valid(pte) and _xwr(pte) == 0


def _is_leaf(pte: int) -> bool:
    """V=1 and any of R/W/X set (including the reserved W-without-R encodings)."""
    return _is_valid(pte) and _xwr(pte) != 0


def _pointer(table: int) -> int:
    """A non-leaf entry: only V and PPN, every other bit zero (§2.4, §5.2)."""
    return Pte.V.put(1) | Pte.PPN.put(table >> PAGE_SHIFT)


# --------------------------------------------------------------------------- #
# First-stage and G-stage page tables (§5)
# --------------------------------------------------------------------------- #
class PageTable:
    """A first-stage (Sv39/48/57) or G-stage (Sv39x4/48x4/57x4) page table in memory.

    The root is allocated at once: 4 KiB, or 16 KiB aligned to 16 KiB for G-stage
    (2048 entries; the top VPN field is 11 bits). Table addresses and PTE PPNs live in
    the table's own address space; ``to_phys`` maps such an address to the physical
    address to store at (for a guest's first-stage table they are GPAs, §1.3), and
    ``alloc_table(size, align)`` hands out zeroed table memory in that space (default
    ``alloc.alloc``, which zeroes).

    ``mappings`` is software bookkeeping, ``va -> (pa, size, perms)``, for the mappings
    made through ``map``; ``set_raw`` drops the entries it overwrites.
    """

    def __init__(self, memory: Memory, alloc: FrameAllocator, scheme: Scheme, *,
                 to_phys: Callable[[int], int] = _identity,
                 alloc_table: Callable[[int, int], int] | None = None, who: str = "os"):
        self.memory, self.alloc, self.scheme = memory, alloc, scheme
        self.to_phys = to_phys
        self.alloc_table = alloc_table if alloc_table is not None else alloc.alloc
        self.who = who
        self.mappings: dict[int, tuple[int, int, dict]] = {}
        self.tables: list[int] = []  # every table allocated, root first (own address space)
        self.root = self._new_table(scheme.root_size)

    # ------------------------------------------------------------- registers
    def atp(self) -> int:
        """``MODE << 60 | root >> 12`` for iosatp / PC.fsc, or iohgatp with GSCID 0."""
        reg = Iohgatp if self.scheme.gstage else Fsc
        return reg.MODE.put(self.scheme.mode) | reg.PPN.put(self.root >> PAGE_SHIFT)

    # --------------------------------------------------------------- helpers
    @property
    def _top(self) -> int:
        return self.scheme.levels - 1

    def _new_table(self, size: int = PAGE_SIZE) -> int:
        addr = self.alloc_table(size, size)
        if addr % size:
            raise ValueError(f"alloc_table returned {addr:#x}, not {size_name(size)} aligned")
        self.tables.append(addr)
        return addr

    def _entry(self, table: int, level: int, va: int) -> int:
        """Own-space address of the entry indexed by va's VPN[level] in ``table``."""
        return table + self.scheme.vpn(va, level) * ENTRY_SIZE

    def _read(self, addr: int) -> int:
        return self.memory.peek64(self.to_phys(addr))

    def _write(self, addr: int, value: int) -> int:
        phys = self.to_phys(addr)
        self.memory.write64(phys, value, who=self.who)
        return phys

    def _va_problem(self, va: int) -> str | None:
        """Why ``va`` is outside the scheme (§5.1), or None if it is inside."""
        s = self.scheme
        if not isinstance(va, int) or not 0 <= va <= MASK64:
            return f"address {va!r} is not a 64-bit unsigned address"
        if s.gstage:
            if va >> s.va_bits:
                return (f"GPA {va:#x} is wider than the {s.va_bits}-bit guest physical "
                        f"address space of {s.name} (bits 63:{s.va_bits} must be 0)")
        else:
            sign = s.va_bits - 1
            top = va >> sign
            if top not in (0, (1 << (64 - sign)) - 1):
                return (f"va {va:#x} is not canonical for {s.name}: bits 63:{sign} must "
                        f"all equal bit {sign}")
        return None

    def _check_va(self, va: int) -> None:
        problem = self._va_problem(va)
        if problem:
            raise ValueError(problem)

    def _level_of(self, size: int) -> int:
        for level in range(self.scheme.levels):
            if page_size(level) == size:
                return level
        if size == NAPOT_SIZE:
            return 0
        sizes = sorted({page_size(level) for level in range(self.scheme.levels)} | {NAPOT_SIZE})
        names = ", ".join(size_name(s) + (" (NAPOT)" if s == NAPOT_SIZE else "") for s in sizes)
        raise ValueError(f"{self.scheme.name} has no {size_name(size)} pages; supported "
                         f"sizes: {names}")

    @staticmethod
    def _leaf_size(level: int, pte: int) -> int:
        return NAPOT_SIZE if level == 0 and Pte.N.get(pte) else page_size(level)

    def _descend(self, va: int, level: int, what: str) -> int:
        """Own-space address of the table holding va's entry at ``level``.

        Missing intermediate tables are created; a leaf above ``level`` is a conflict.
        """
        table = self.root
        for upper in range(self._top, level, -1):
            entry = self._entry(table, upper, va)
            pte = self._read(entry)
            if _is_pointer(pte):
                table = Pte.PPN.get(pte) << PAGE_SHIFT
            elif _is_leaf(pte):
                size = page_size(upper)
                raise ValueError(
                    f"{self.scheme.name}: cannot {what}: va {va:#x} lies inside the "
                    f"{size_name(size)} leaf for va {va & ~(size - 1):#x} at level {upper} "
                    f"(PTE @ {self.to_phys(entry):#x} = {pte:#018x}); unmap it first")
            else:
                table = self._new_table()
                self._write(entry, _pointer(table))
        return table

    def _first_valid_leaf(self, table: int, level: int, va_base: int):
        """First (va, level, pte_phys) of a valid leaf in the subtree at ``table``."""
        for index in range(PAGE_SIZE // ENTRY_SIZE):
            entry = table + index * ENTRY_SIZE
            pte = self._read(entry)
            va = va_base + index * page_size(level)
            if _is_leaf(pte):
                return va, level, self.to_phys(entry)
            if _is_pointer(pte) and level > 0:
                found = self._first_valid_leaf(Pte.PPN.get(pte) << PAGE_SHIFT, level - 1, va)
                if found:
                    return found
        return None

    def _walk(self, va: int) -> list[tuple[int, int, int]]:
        """(own-space entry address, level, value) of every entry a walk of va reads."""
        if self._va_problem(va):
            return []
        path, table = [], self.root
        for level in range(self._top, -1, -1):
            entry = self._entry(table, level, va)
            pte = self._read(entry)
            path.append((entry, level, pte))
            if not _is_pointer(pte):
                break
            table = Pte.PPN.get(pte) << PAGE_SHIFT
        return path

    def _find_leaf(self, va: int, what: str) -> tuple[int, int, int]:
        path = self._walk(va)
        if not path or not _is_leaf(path[-1][2]):
            problem = self._va_problem(va)
            raise NotMappedError(f"{self.scheme.name}: cannot {what}: "
                                 + (problem or f"nothing is mapped at va {va:#x}"))
        return path[-1]

    def _leaf_entries(self, entry: int, level: int, pte: int) -> list[int]:
        """The entries making up one leaf: 16 for a NAPOT page, else just ``entry``."""
        if level == 0 and Pte.N.get(pte):
            first = entry & ~(NAPOT_PTES * ENTRY_SIZE - 1)
            return [first + i * ENTRY_SIZE for i in range(NAPOT_PTES)]
        return [entry]

    @staticmethod
    def _leaf_value(pa: int, napot: bool, perms: dict) -> int:
        r, w, x = perms["r"], perms["w"], perms["x"]
        if w and not r:
            raise ValueError("W without R is a reserved PTE encoding (§5.2); use set_raw() "
                             "to build one on purpose")
        if not (r or x):
            raise ValueError("a leaf needs R or X (R=W=X=0 means a pointer to the next "
                             "level, §5.2); use unmap() or set_raw() instead")
        if perms["pbmt"] == _PBMT_RESERVED:
            raise ValueError("PBMT=3 is reserved (§5.2); use set_raw() to build it on purpose")
        ppn = pa >> PAGE_SHIFT
        if napot:
            ppn = (ppn & ~(NAPOT_PTES - 1)) | NAPOT_PPN_LOW
        value = Pte.V.put(1) | Pte.PPN.put(ppn) | Pte.N.put(int(napot))
        for name, field in _LEAF_FIELDS.items():
            try:
                value = field.set(value, int(perms[name]))
            except ValueError:
                raise ValueError(f"{name}={perms[name]!r} does not fit the {field.width}-bit "
                                 f"PTE field") from None
        return value

    # ------------------------------------------------------------------- map
    def map(self, va: int, pa: int, size: int = PAGE_SIZE, *, r=True, w=True, x=False, u=True,
            g=False, a=True, d=True, pbmt=0, rsw=0, napot=False) -> int:
        """Install one leaf of ``size`` mapping ``va`` to ``pa``; return the PTE's address.

        Sizes: 4 KiB, 2 MiB, 1 GiB, 512 GiB (Sv48+), 256 TiB (Sv57), and 64 KiB as a
        NAPOT page (``size=0x10000``, or ``napot=True`` with the default size): 16 level-0
        PTEs with N=1 and PPN[3:0]=1000b; the address of the first one is returned.
        Remapping a leaf of the same size overwrites it; a different size over an
        existing mapping raises ``ValueError`` naming the mapping in the way.
        """
        if napot and size == PAGE_SIZE:
            size = NAPOT_SIZE
        if napot and size != NAPOT_SIZE:
            raise ValueError(f"napot=True makes a 64 KiB page, not {size_name(size)}")
        napot = size == NAPOT_SIZE
        level = self._level_of(size)
        self._check_va(va)
        what = f"map {size_name(size)} at va {va:#x}"
        if va % size:
            raise ValueError(f"{self.scheme.name}: cannot {what}: va is not "
                             f"{size_name(size)} aligned")
        if not isinstance(pa, int) or pa < 0 or pa >> PA_WIDTH:
            raise ValueError(f"{self.scheme.name}: cannot {what}: pa {pa!r} does not fit the "
                             f"{PA_WIDTH}-bit PPN range")
        if pa % size:
            raise ValueError(f"{self.scheme.name}: cannot {what}: pa {pa:#x} is not "
                             f"{size_name(size)} aligned")
        perms = dict(r=r, w=w, x=x, u=u, g=g, a=a, d=d, pbmt=pbmt, rsw=rsw)
        value = self._leaf_value(pa, napot, perms)
        table = self._descend(va, level, what)
        first = self._entry(table, level, va)
        entries = [first + i * ENTRY_SIZE for i in range(NAPOT_PTES if napot else 1)]
        for i, entry in enumerate(entries):
            self._check_overwrite(entry, level, va + i * PAGE_SIZE, napot, what)
        phys = [self._write(entry, value) for entry in entries]
        self.mappings[va] = (pa, size, perms)
        return phys[0]

    def _check_overwrite(self, entry: int, level: int, va: int, napot: bool, what: str) -> None:
        """Refuse to replace a valid entry that maps (or leads to) a different size."""
        old = self._read(entry)
        where = f"PTE @ {self.to_phys(entry):#x} = {old:#018x}"
        if _is_pointer(old):
            if level == 0:
                return  # a malformed level-0 pointer maps nothing: overwrite it
            found = self._first_valid_leaf(Pte.PPN.get(old) << PAGE_SHIFT, level - 1, va)
            if found:
                fva, flevel, fphys = found
                raise ValueError(f"{self.scheme.name}: cannot {what}: va {fva:#x} is already "
                                 f"mapped by a level-{flevel} leaf (PTE @ {fphys:#x}) under "
                                 f"the table pointer {where}; unmap it first")
        elif _is_leaf(old) and level == 0 and bool(Pte.N.get(old)) != napot:
            kind = "64 KiB NAPOT page" if Pte.N.get(old) else "4 KiB page"
            raise ValueError(f"{self.scheme.name}: cannot {what}: a {kind} is already mapped "
                             f"there ({where}); unmap it first")

    def map_range(self, va: int, pa: int, length: int, size: int = PAGE_SIZE, **perms) -> None:
        """Map ``length`` bytes of contiguous va onto contiguous pa with leaves of ``size``."""
        if length <= 0 or length % size:
            raise ValueError(f"length {length:#x} is not a positive multiple of the "
                             f"{size_name(size)} page size")
        for offset in range(0, length, size):
            self.map(va + offset, pa + offset, size, **perms)

    def map_scattered(self, va: int, frames: list[int], **perms) -> None:
        """Map contiguous 4 KiB pages from ``va`` onto the given (scattered) frames."""
        for i, frame in enumerate(frames):
            self.map(va + i * PAGE_SIZE, frame, PAGE_SIZE, **perms)

    # ---------------------------------------------------------------- update
    def unmap(self, va: int) -> None:
        """Clear V in the leaf covering ``va`` (all 16 PTEs of a NAPOT page).

        Only V changes, like an OS that invalidates a PTE; the other bits stay so a
        test can see what the IOMMU may still have cached.
        """
        entry, level, pte = self._find_leaf(va, f"unmap va {va:#x}")
        for e in self._leaf_entries(entry, level, pte):
            self._write(e, Pte.V.set(self._read(e), 0))
        size = self._leaf_size(level, pte)
        self.mappings.pop(va & ~(size - 1), None)

    def protect(self, va: int, **fields) -> None:
        """Change r/w/x/u/g/a/d/pbmt/rsw of the leaf covering ``va``; PPN and size stay."""
        unknown = set(fields) - set(_LEAF_FIELDS)
        if unknown:
            raise ValueError(f"protect() can change {', '.join(_LEAF_FIELDS)}; not "
                             f"{', '.join(sorted(unknown))}")
        entry, level, pte = self._find_leaf(va, f"protect va {va:#x}")
        perms = {name: field.get(pte) for name, field in _LEAF_FIELDS.items()}
        perms.update({name: int(value) for name, value in fields.items()})
        napot = bool(level == 0 and Pte.N.get(pte))
        new = self._leaf_value(Pte.PPN.get(pte) << PAGE_SHIFT, napot, perms)
        for e in self._leaf_entries(entry, level, pte):
            self._write(e, new)
        size = self._leaf_size(level, pte)
        base = va & ~(size - 1)
        if base in self.mappings:
            pa, msize, old_perms = self.mappings[base]
            self.mappings[base] = (pa, msize, {**old_perms, **fields})

    def set_raw(self, va: int, level: int, value: int) -> int:
        """Write the raw ``value`` at ``level`` on va's path; return its physical address.

        Tables above ``level`` are created as needed. This is how tests build malformed
        entries (reserved bits, W without R, misaligned superpages, N on a non-leaf,
        PBMT=3, ...). Bookkeeping for mappings the entry replaces is dropped.
        """
        if not 0 <= level <= self._top:
            raise ValueError(f"{self.scheme.name} has levels 0..{self._top}, not {level}")
        if not isinstance(value, int) or not 0 <= value <= MASK64:
            raise ValueError(f"PTE value {value!r} is not a 64-bit unsigned integer")
        self._check_va(va)
        table = self._descend(va, level, f"write a raw level-{level} PTE for va {va:#x}")
        phys = self._write(self._entry(table, level, va), value)
        start, span = va & ~(page_size(level) - 1), page_size(level)
        for key, (_, size, _) in list(self.mappings.items()):
            if key < start + span and start < key + size:
                del self.mappings[key]
        return phys

    # ------------------------------------------------------------ inspection
    def lookup(self, va: int, *, phys: bool = True) -> tuple[int, int, int] | None:
        """(PTE address, level, PTE value) of the valid leaf covering ``va``, or None.

        The address is physical unless ``phys=False`` (then in the table's own space,
        e.g. the GPA reported in iotval2 for a guest table). Malformed leaves count.
        """
        path = self._walk(va)
        if not path or not _is_leaf(path[-1][2]):
            return None
        entry, level, pte = path[-1]
        return (self.to_phys(entry) if phys else entry), level, pte

    def walk_path(self, va: int, *, phys: bool = True) -> list[tuple[int, int, int]]:
        """Every (PTE address, level, value) a walk of ``va`` reads, root first.

        The walk stops at the first entry that is not a pointer (leaf or invalid).
        Empty if ``va`` is outside the scheme (the IOMMU faults before reading).
        """
        return [((self.to_phys(e) if phys else e), level, pte) for e, level, pte in self._walk(va)]

    def translate(self, va: int) -> int | None:
        """Software walk of ``va`` per §5.3, ignoring permissions and A/D; None if it faults.

        The result is in the PPN address space (a GPA for a guest's first-stage table).
        Malformed entries give None: V=0, W without R, reserved bits [60:54] (bits 60:59
        are treated as reserved, i.e. no Svrsw60t59b), PBMT=3, A/D/U/N/PBMT on a
        pointer, a pointer at level 0, a misaligned superpage, a bad NAPOT encoding.
        """
        if self._va_problem(va):
            return None
        table = self.root
        for level in range(self._top, -1, -1):
            pte = self._read(self._entry(table, level, va))
            if (not _is_valid(pte) or (Pte.W.get(pte) and not Pte.R.get(pte))
                    or Pte.RESERVED.get(pte) or Pte.PBMT.get(pte) == _PBMT_RESERVED):
                return None
            ppn = Pte.PPN.get(pte)
            if _is_pointer(pte):
                if pte & _NONLEAF_RESERVED:
                    return None
                table = ppn << PAGE_SHIFT
                continue
            if Pte.N.get(pte):
                if level != 0 or ppn & (NAPOT_PTES - 1) != NAPOT_PPN_LOW:
                    return None
                base, size = (ppn & ~(NAPOT_PTES - 1)) << PAGE_SHIFT, NAPOT_SIZE
            else:
                base, size = ppn << PAGE_SHIFT, page_size(level)
                if base & (size - 1):
                    return None
            return base | (va & (size - 1))
        return None



# --------------------------------------------------------------------------- #
# Device directory table (§2, §3)
# --------------------------------------------------------------------------- #
class DeviceDirectory:
    """The DDT: a 1, 2 or 3-level table of device contexts (§2.3-§2.5).

    Off and Bare have no table; the caller writes those ``ddtp`` values itself. The DC
    format follows ``capabilities.MSI_FLAT``: base 32-byte DCs (``extended=False``) or
    extended 64-byte DCs. All tables live in supervisor physical memory. ``install``
    writes whatever DC it is given, so misconfigured DCs are built with it too.
    """

    def __init__(self, memory: Memory, alloc: FrameAllocator, mode: DdtpMode, extended: bool,
                 *, who: str = "os"):
        mode = DdtpMode(mode)
        if mode not in (DdtpMode.LVL1, DdtpMode.LVL2, DdtpMode.LVL3):
            raise ValueError(f"a device directory needs mode 1LVL, 2LVL or 3LVL, not "
                             f"{mode.name}; Off and Bare have no table (write ddtp directly)")
        self.memory, self.alloc, self.mode, self.extended, self.who = (
            memory, alloc, mode, extended, who)
        self.levels = mode.levels
        self.dc_size = EXTENDED_DC_SIZE if extended else BASE_DC_SIZE
        self.root = alloc.alloc(PAGE_SIZE, PAGE_SIZE)

    def ddtp(self) -> int:
        """The ddtp register value: iommu_mode and the root PPN (busy = 0)."""
        return Ddtp.IOMMU_MODE.put(self.mode) | Ddtp.PPN.put(self.root >> PAGE_SHIFT)

    def _check_id(self, device_id: int) -> None:
        if not isinstance(device_id, int) or device_id < 0 or not device_id_fits(
                device_id, self.mode, self.extended):
            fmt = "extended" if self.extended else "base"
            raise ValueError(f"device_id {device_id!r} is too wide for a {self.mode.name} DDT "
                             f"with {fmt}-format device contexts (§2.3)")

    def _table(self, device_id: int, level: int, create: bool) -> int | None:
        """Address of the table indexed by DDI[level] on device_id's path.

        Missing non-leaf entries are created (``create``) or end the search (None).
        """
        index, table = ddi(device_id, self.extended), self.root
        for upper in range(self.levels - 1, level, -1):
            entry = table + index[upper] * ENTRY_SIZE
            ddte = self.memory.peek64(entry)
            if Ddte.V.get(ddte):
                table = Ddte.PPN.get(ddte) << PAGE_SHIFT
            elif create:
                table = self.alloc.alloc(PAGE_SIZE, PAGE_SIZE)
                self.memory.write64(entry, _pointer(table), who=self.who)
            else:
                return None
        return table

    def install(self, device_id: int, dc: DeviceContext) -> int:
        """Write ``dc`` for ``device_id``, creating the path; return the DC's address.

        ``tc`` (holding V) is stored last, as software must make the rest visible first.
        """
        self._check_id(device_id)
        if not self.extended and (dc.msiptp or dc.msi_addr_mask or dc.msi_addr_pattern
                                  or dc.reserved):
            raise ValueError("a base-format (32-byte) DC has no msiptp / msi_addr_mask / "
                             "msi_addr_pattern: use extended=True (capabilities.MSI_FLAT=1)")
        raw = dc.pack(self.extended)
        words = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]
        addr = self._table(device_id, 0, True) + ddi(device_id, self.extended)[0] * self.dc_size
        for i in reversed(range(len(words))):
            self.memory.write64(addr + i * 8, words[i], who=self.who)
        return addr

    def dc_address(self, device_id: int) -> int | None:
        """Physical address of device_id's DC slot, or None if its path is not built."""
        if not isinstance(device_id, int) or device_id < 0 or not device_id_fits(
                device_id, self.mode, self.extended):
            return None
        table = self._table(device_id, 0, False)
        if table is None:
            return None
        return table + ddi(device_id, self.extended)[0] * self.dc_size

    def read(self, device_id: int) -> DeviceContext:
        """The DC stored for device_id (whatever V says)."""
        addr = self._require(device_id, "read")
        return DeviceContext(*(self.memory.peek64(addr + i * 8) for i in range(self.dc_size // 8)))

    def remove(self, device_id: int) -> None:
        """Clear ``tc.V`` of device_id's DC; the other fields stay."""
        addr = self._require(device_id, "remove")
        self.memory.write64(addr, Tc.V.set(self.memory.peek64(addr), 0), who=self.who)

    def _require(self, device_id: int, what: str) -> int:
        addr = self.dc_address(device_id)
        if addr is None:
            raise NotMappedError(f"cannot {what} device_id {device_id:#x}: no DDT path to its "
                                 f"device context in this {self.mode.name} DDT")
        return addr

    def set_raw_ddte(self, device_id: int, level: int, value: int) -> int:
        """Write a raw non-leaf entry at ``level`` (1 or 2) on device_id's path.

        Levels above it are created as needed. For malformed entries (V=0, reserved
        bits) in tests; a malformed DC is written with ``install``. Returns the address.
        """
        if not 1 <= level < self.levels:
            have = f"levels 1..{self.levels - 1}" if self.levels > 1 else "none"
            raise ValueError(f"a {self.mode.name} DDT's non-leaf entries are at {have}, not "
                             f"level {level}; level 0 is the DC itself (use install())")
        if not isinstance(value, int) or not 0 <= value <= MASK64:
            raise ValueError(f"DDTE value {value!r} is not a 64-bit unsigned integer")
        self._check_id(device_id)
        entry = (self._table(device_id, level, True)
                 + ddi(device_id, self.extended)[level] * ENTRY_SIZE)
        self.memory.write64(entry, value, who=self.who)
        return entry


# --------------------------------------------------------------------------- #
# Process directory table (§4)
# --------------------------------------------------------------------------- #
class ProcessDirectory:
    """A PDT for one device: PD8 (1 level), PD17 (2) or PD20 (3) of process contexts.

    As with guest page tables, table addresses and PDTE PPNs are in the PDT's own
    address space (GPAs when the device's G-stage is active, §1.3): ``to_phys`` maps
    them to physical addresses for the stores, ``alloc_table(size, align)`` hands out
    zeroed table memory in that space (default ``alloc.alloc``).
    """

    def __init__(self, memory: Memory, alloc: FrameAllocator, mode: PdtpMode, *,
                 to_phys: Callable[[int], int] = _identity,
                 alloc_table: Callable[[int, int], int] | None = None, who: str = "os"):
        mode = PdtpMode(mode)
        if mode == PdtpMode.BARE:
            raise ValueError("a process directory needs mode PD8, PD17 or PD20; Bare has no "
                             "table (write pdtp = 0)")
        self.memory, self.alloc, self.mode, self.who = memory, alloc, mode, who
        self.to_phys = to_phys
        self.alloc_table = alloc_table if alloc_table is not None else alloc.alloc
        self.levels = mode.levels
        self.root = self.alloc_table(PAGE_SIZE, PAGE_SIZE)

    def pdtp(self) -> int:
        """``MODE << 60 | root >> 12``: DC.fsc when DC.tc.PDTV=1."""
        return Fsc.MODE.put(self.mode) | Fsc.PPN.put(self.root >> PAGE_SHIFT)

    def _check_id(self, process_id: int) -> None:
        if not isinstance(process_id, int) or process_id < 0 or not process_id_fits(
                process_id, self.mode):
            raise ValueError(f"process_id {process_id!r} is too wide for a {self.mode.name} "
                             f"PDT (§4.1)")

    def _table(self, process_id: int, level: int, create: bool) -> int | None:
        index, table = pdi(process_id), self.root
        for upper in range(self.levels - 1, level, -1):
            entry = table + index[upper] * ENTRY_SIZE
            pdte = self.memory.peek64(self.to_phys(entry))
            if Ddte.V.get(pdte):
                table = Ddte.PPN.get(pdte) << PAGE_SHIFT
            elif create:
                table = self.alloc_table(PAGE_SIZE, PAGE_SIZE)
                self.memory.write64(self.to_phys(entry), _pointer(table), who=self.who)
            else:
                return None
        return table

    def pc_address(self, process_id: int, *, phys: bool = True) -> int | None:
        """Address of process_id's PC slot (physical, or own-space with ``phys=False``)."""
        if not isinstance(process_id, int) or process_id < 0 or not process_id_fits(
                process_id, self.mode):
            return None
        table = self._table(process_id, 0, False)
        if table is None:
            return None
        addr = table + pdi(process_id)[0] * PC_SIZE
        return self.to_phys(addr) if phys else addr

    def install(self, process_id: int, pc: ProcessContext) -> int:
        """Write ``pc`` for process_id, creating the path; return its physical address.

        ``fsc`` is stored before ``ta`` (which holds V).
        """
        self._check_id(process_id)
        addr = self._table(process_id, 0, True) + pdi(process_id)[0] * PC_SIZE
        self.memory.write64(self.to_phys(addr + 8), pc.fsc, who=self.who)
        self.memory.write64(self.to_phys(addr), pc.ta, who=self.who)
        return self.to_phys(addr)

    def read(self, process_id: int) -> ProcessContext:
        """The PC stored for process_id (whatever V says)."""
        addr = self._require(process_id, "read")
        return ProcessContext(self.memory.peek64(self.to_phys(addr)),
                              self.memory.peek64(self.to_phys(addr + 8)))

    def remove(self, process_id: int) -> None:
        """Clear ``PC.ta.V``; the other fields stay."""
        phys = self.to_phys(self._require(process_id, "remove"))
        self.memory.write64(phys, PcTa.V.set(self.memory.peek64(phys), 0), who=self.who)

    def _require(self, process_id: int, what: str) -> int:
        addr = self.pc_address(process_id, phys=False)
        if addr is None:
            raise NotMappedError(f"cannot {what} process_id {process_id:#x}: no PDT path to "
                                 f"its process context in this {self.mode.name} PDT")
        return addr

    def set_raw_pdte(self, process_id: int, level: int, value: int) -> int:
        """Write a raw non-leaf entry at ``level`` on process_id's path; return its address.

        Levels above it are created as needed; the address returned is physical.
        """
        if not 1 <= level < self.levels:
            have = f"levels 1..{self.levels - 1}" if self.levels > 1 else "none"
            raise ValueError(f"a {self.mode.name} PDT's non-leaf entries are at {have}, not "
                             f"level {level}; level 0 is the PC itself (use install())")
        if not isinstance(value, int) or not 0 <= value <= MASK64:
            raise ValueError(f"PDTE value {value!r} is not a 64-bit unsigned integer")
        self._check_id(process_id)
        entry = self._table(process_id, level, True) + pdi(process_id)[level] * ENTRY_SIZE
        phys = self.to_phys(entry)
        self.memory.write64(phys, value, who=self.who)
        return phys


# --------------------------------------------------------------------------- #
# Flat MSI page table (§9.1, §9.2)
# --------------------------------------------------------------------------- #
class MsiPageTable:
    """A flat MSI page table of ``entries`` (2^k, k = popcount(msi_addr_mask)) 16-byte PTEs.

    Aligned to 4 KiB when it has at most 256 entries, else to its own size (§9.1).
    Always in supervisor physical memory. Entry writes store dword 1 before dword 0
    (which holds V).
    """

    def __init__(self, memory: Memory, alloc: FrameAllocator, entries: int, *,
                 who: str = "os"):
        if not isinstance(entries, int) or entries < 1 or entries & (entries - 1):
            raise ValueError(f"an MSI page table has 2^k entries, not {entries!r}")
        self.memory, self.entries, self.who = memory, entries, who
        size = entries * MSI_PTE_SIZE
        align = PAGE_SIZE if entries <= PAGE_SIZE // MSI_PTE_SIZE else size
        self.base = alloc.alloc(max(size, PAGE_SIZE), align)

    def msiptp(self) -> int:
        """DC.msiptp: MODE=Flat and the table's PPN."""
        return Msiptp.MODE.put(MsiptpMode.FLAT) | Msiptp.PPN.put(self.base >> PAGE_SHIFT)

    def entry_address(self, index: int) -> int:
        """Physical address of MSI PTE ``index`` (the interrupt file number)."""
        if not isinstance(index, int) or not 0 <= index < self.entries:
            raise ValueError(f"MSI PTE index {index!r} is outside 0..{self.entries - 1}")
        return self.base + index * MSI_PTE_SIZE

    def set_raw(self, index: int, dw0: int, dw1: int = 0) -> None:
        """Store two raw dwords (malformed entries for tests)."""
        addr = self.entry_address(index)
        self.memory.write64(addr + 8, dw1, who=self.who)
        self.memory.write64(addr, dw0, who=self.who)

    def set_basic(self, index: int, ppn: int) -> None:
        """Basic-translate entry (M=3) to the interrupt file at physical page ``ppn``."""
        if not isinstance(ppn, int) or ppn < 0 or ppn >> MsiPte.PPN.width:
            raise ValueError(f"interrupt file PPN {ppn!r} does not fit {MsiPte.PPN.width} bits")
        self.set_raw(index, MsiPte.V.put(1) | MsiPte.M.put(MsiPteMode.BASIC)
                     | MsiPte.PPN.put(ppn))

    def set_mrif(self, index: int, mrif_addr: int, nppn: int, nid: int) -> None:
        """MRIF-mode entry (M=1): MRIF at ``mrif_addr`` (512-byte aligned), notice MSI
        to physical page ``nppn`` with the 11-bit notice identity ``nid``."""
        if not isinstance(mrif_addr, int) or mrif_addr < 0 or mrif_addr % (1 << MRIF_ADDR_SHIFT):
            raise ValueError(f"MRIF address {mrif_addr!r} is not 512-byte aligned")
        if mrif_addr >> (MRIF_ADDR_SHIFT + MsiPte.MRIF_ADDR.width):
            raise ValueError(f"MRIF address {mrif_addr:#x} is wider than 56 bits")
        if not isinstance(nppn, int) or nppn < 0 or nppn >> MsiPte.NPPN.width:
            raise ValueError(f"notice PPN {nppn!r} does not fit {MsiPte.NPPN.width} bits")
        nid_bits = MsiPte.NID.width + MsiPte.NID10.width
        if not isinstance(nid, int) or nid < 0 or nid >> nid_bits:
            raise ValueError(f"notice identity {nid!r} does not fit {nid_bits} bits")
        dw0 = (MsiPte.V.put(1) | MsiPte.M.put(MsiPteMode.MRIF)
               | MsiPte.MRIF_ADDR.put(mrif_addr >> MRIF_ADDR_SHIFT))
        dw1 = (MsiPte.NID.put(nid & ((1 << MsiPte.NID.width) - 1)) | MsiPte.NPPN.put(nppn)
               | MsiPte.NID10.put(nid >> MsiPte.NID.width))
        self.set_raw(index, dw0, dw1)

    def invalidate(self, index: int) -> None:
        """Clear V of entry ``index``; the rest stays."""
        addr = self.entry_address(index)
        self.memory.write64(addr, MsiPte.V.set(self.memory.peek64(addr), 0), who=self.who)

    def read(self, index: int) -> tuple[int, int]:
        """(dword 0, dword 1) of entry ``index``."""
        addr = self.entry_address(index)
        return self.memory.peek64(addr), self.memory.peek64(addr + 8)
