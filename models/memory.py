"""Physical memory: sparse, 56-bit, little-endian, with an access log and injected faults.

Everything that touches memory (the IOMMU's walks and queues, device DMA, the OS
writing page tables) goes through one ``Memory`` object, naming itself in ``who``
so that the access log can answer "who touched which address". Address ranges can
be made to fail: an *access fault* (the PMA/PMP check refused the access, the
spec's 257/265/261/1/5/7 family) or *poison* (data corruption, 268/269/270/274).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

PA_BITS = 56
PA_LIMIT = 1 << PA_BITS
_PAGE = 4096


class MemoryError_(Exception):
    """Base class for errors a memory access can report to its requester."""

    def __init__(self, addr: int, size: int, who: str, what: str):
        super().__init__(f"{what} at {addr:#x} (+{size} bytes) by {who or 'anonymous'}")
        self.addr, self.size, self.who = addr, size, who


class AccessFault(MemoryError_):
    """The access was refused (PMA/PMP violation or bus error)."""

    def __init__(self, addr: int, size: int, who: str = ""):
        super().__init__(addr, size, who, "memory access fault")


class DataCorruption(MemoryError_):
    """The data read is poisoned (uncorrectable error)."""

    def __init__(self, addr: int, size: int, who: str = ""):
        super().__init__(addr, size, who, "poisoned data")


class FaultKind(enum.Enum):
    ACCESS = "access"  # refused: reads and writes raise AccessFault
    POISON = "poison"  # reads raise DataCorruption; writes succeed


@dataclass(frozen=True)
class AccessRecord:
    who: str
    op: str  # "R", "W" or "A" (atomic compare-and-swap)
    addr: int
    size: int


class Memory:
    """Sparse byte-addressable physical memory of ``PA_BITS`` address bits."""

    def __init__(self, log: bool = True):
        self._pages: dict[int, bytearray] = {}
        self._faults: list[tuple[int, int, FaultKind]] = []
        self.log_enabled = log
        self.log: list[AccessRecord] = []
        self.reads = 0
        self.writes = 0

    # ----------------------------------------------------------------- checks
    @staticmethod
    def _check(addr: int, size: int, align: int = 1) -> None:
        if not isinstance(addr, int) or addr < 0 or size < 0 or addr + size > PA_LIMIT:
            raise ValueError(f"physical address {addr!r} (+{size}) is outside the "
                             f"{PA_BITS}-bit physical address space")
        if align > 1 and addr % align:
            raise ValueError(f"address {addr:#x} is not {align}-byte aligned")

    def _fault_at(self, addr: int, size: int) -> FaultKind | None:
        for start, end, kind in self._faults:
            if addr < end and start < addr + size:
                return kind
        return None

    def _record(self, who: str, op: str, addr: int, size: int) -> None:
        if self.log_enabled:
            self.log.append(AccessRecord(who, op, addr, size))

    # ------------------------------------------------------- fault injection
    def inject_fault(self, start: int, size: int, kind: FaultKind | str = FaultKind.ACCESS):
        """Make ``[start, start+size)`` fail with ``kind`` ("access" or "poison")."""
        self._check(start, size)
        self._faults.append((start, start + size, FaultKind(kind)))

    def clear_faults(self) -> None:
        self._faults.clear()

    # ------------------------------------------------------------ raw access
    def _raw_read(self, addr: int, size: int) -> bytes:
        out = bytearray()
        while size:
            page, off = divmod(addr, _PAGE)
            n = min(size, _PAGE - off)
            data = self._pages.get(page)
            out += data[off : off + n] if data is not None else bytes(n)
            addr, size = addr + n, size - n
        return bytes(out)

    def _raw_write(self, addr: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            page, off = divmod(addr + pos, _PAGE)
            n = min(len(data) - pos, _PAGE - off)
            buf = self._pages.get(page)
            if buf is None:
                buf = self._pages[page] = bytearray(_PAGE)
            buf[off : off + n] = data[pos : pos + n]
            pos += n

    # --------------------------------------------------------- public access
    def read(self, addr: int, size: int, who: str = "") -> bytes:
        self._check(addr, size)
        self._record(who, "R", addr, size)
        self.reads += 1
        kind = self._fault_at(addr, size)
        if kind is FaultKind.ACCESS:
            raise AccessFault(addr, size, who)
        if kind is FaultKind.POISON:
            raise DataCorruption(addr, size, who)
        return self._raw_read(addr, size)

    def write(self, addr: int, data: bytes, who: str = "") -> None:
        self._check(addr, len(data))
        self._record(who, "W", addr, len(data))
        self.writes += 1
        if self._fault_at(addr, len(data)) is FaultKind.ACCESS:
            raise AccessFault(addr, len(data), who)
        self._raw_write(addr, bytes(data))

    def read64(self, addr: int, who: str = "") -> int:
        self._check(addr, 8, align=8)
        return int.from_bytes(self.read(addr, 8, who), "little")

    def write64(self, addr: int, value: int, who: str = "") -> None:
        self._check(addr, 8, align=8)
        self.write(addr, (value & (1 << 64) - 1).to_bytes(8, "little"), who)

    def read32(self, addr: int, who: str = "") -> int:
        self._check(addr, 4, align=4)
        return int.from_bytes(self.read(addr, 4, who), "little")

    def write32(self, addr: int, value: int, who: str = "") -> None:
        self._check(addr, 4, align=4)
        self.write(addr, (value & 0xFFFFFFFF).to_bytes(4, "little"), who)

    def cas64(self, addr: int, expected: int, new: int, who: str = "") -> int:
        """Atomic compare-and-swap of one dword; returns the old value.

        This is how the IOMMU sets A/D bits (§5.5): the store happens only if
        memory still holds the PTE the walk read.
        """
        self._check(addr, 8, align=8)
        self._record(who, "A", addr, 8)
        kind = self._fault_at(addr, 8)
        if kind is FaultKind.ACCESS:
            raise AccessFault(addr, 8, who)
        if kind is FaultKind.POISON:
            raise DataCorruption(addr, 8, who)
        old = int.from_bytes(self._raw_read(addr, 8), "little")
        if old == expected:
            self._raw_write(addr, new.to_bytes(8, "little"))
        return old

    # ---------------------------------------------------------- inspection
    def peek64(self, addr: int) -> int:
        """Read without logging or faults (for tests and reports)."""
        self._check(addr, 8)
        return int.from_bytes(self._raw_read(addr, 8), "little")

    def poke64(self, addr: int, value: int) -> None:
        """Write without logging or faults (for building tables in tests)."""
        self._check(addr, 8)
        self._raw_write(addr, value.to_bytes(8, "little"))

    def accesses_by(self, who: str) -> list[AccessRecord]:
        return [r for r in self.log if r.who == who]

    def touched_pages(self) -> int:
        return len(self._pages)


class FrameAllocator:
    """Hands out zeroed 4 KiB-aligned physical frames from a region."""

    def __init__(self, memory: Memory, base: int = 0x8000_0000, size: int = 1 << 32):
        if base % _PAGE:
            raise ValueError(f"allocator base {base:#x} is not 4 KiB aligned")
        self.memory, self.base, self.end = memory, base, base + size
        self.next = base

    def alloc(self, size: int = _PAGE, align: int = _PAGE) -> int:
        addr = -(-self.next // align) * align
        if addr + size > self.end:
            raise MemoryError(f"frame allocator exhausted ({self.base:#x}..{self.end:#x})")
        self.next = addr + size
        self.memory._raw_write(addr, bytes(size))
        return addr
