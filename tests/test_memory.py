"""Physical memory model: byte order, sparseness, bounds, access log, injected faults, CAS.

Every IOMMU-visible fault in the 257/261/265/1/5/7 (access) and 268-270/274 (poison)
families starts here, so these tests pin the behaviour the walkers rely on.
"""

import pytest

from models.memory import (
    PA_LIMIT,
    AccessFault,
    AccessRecord,
    DataCorruption,
    FaultKind,
    FrameAllocator,
    Memory,
)


@pytest.fixture
def mem():
    return Memory()


# ------------------------------------------------------------ data and byte order
def test_write64_is_little_endian(mem):
    mem.write64(0x1000, 0x0102030405060708)
    assert mem.read(0x1000, 8) == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert mem.read64(0x1000) == 0x0102030405060708
    assert mem.read32(0x1000) == 0x05060708
    assert mem.read32(0x1004) == 0x01020304


def test_write32_and_bytes_round_trip(mem):
    mem.write32(0x2004, 0xDEADBEEF)
    assert mem.read(0x2004, 4) == bytes([0xEF, 0xBE, 0xAD, 0xDE])
    mem.write(0x2001, b"\xaa\xbb")
    assert mem.read64(0x2000) == 0xDEADBEEF_00BBAA00
    assert mem.read(0x2000, 8) == bytes([0, 0xAA, 0xBB, 0, 0xEF, 0xBE, 0xAD, 0xDE])


def test_write64_truncates_to_64_bits(mem):
    mem.write64(0x3000, (1 << 64) | 0x55)
    assert mem.read64(0x3000) == 0x55


def test_bulk_access_crosses_pages_and_unwritten_reads_zero(mem):
    data = bytes(i & 0xFF for i in range(10_000))
    mem.write(0x4F00, data)  # spans four 4 KiB pages
    assert mem.read(0x4F00, len(data)) == data
    assert mem.read(0x4F00 - 16, 16) == bytes(16)
    assert mem.read(0x10_0000, 64) == bytes(64)  # never written: zeros, no page created
    assert mem.touched_pages() == 4


# ------------------------------------------------------------------ bounds
def test_sparse_56_bit_space(mem):
    top = PA_LIMIT - 8
    assert PA_LIMIT == 1 << 56
    mem.write64(top, 0x1122334455667788)
    assert mem.read64(top) == 0x1122334455667788
    assert mem.touched_pages() == 1
    with pytest.raises(ValueError, match="56-bit"):
        mem.write64(PA_LIMIT, 0)
    with pytest.raises(ValueError):
        mem.read(PA_LIMIT - 4, 8)  # straddles the top
    with pytest.raises(ValueError):
        mem.read64(-8)


@pytest.mark.parametrize("op", [
    lambda m: m.read64(0x1004),
    lambda m: m.write64(0x1001, 0),
    lambda m: m.read32(0x1002),
    lambda m: m.write32(0x1003, 0),
    lambda m: m.cas64(0x1004, 0, 1),
])
def test_misaligned_word_access_raises(mem, op):
    with pytest.raises(ValueError, match="aligned"):
        op(mem)


# --------------------------------------------------------------- access log
def test_access_log_records_who_op_addr_size(mem):
    mem.write64(0x1000, 5, who="os")
    mem.read64(0x1000, who="iommu")
    mem.cas64(0x1000, 5, 6, who="iommu")
    mem.read(0x1010, 3, who="dev")
    assert mem.log == [
        AccessRecord("os", "W", 0x1000, 8),
        AccessRecord("iommu", "R", 0x1000, 8),
        AccessRecord("iommu", "A", 0x1000, 8),
        AccessRecord("dev", "R", 0x1010, 3),
    ]
    assert [r.op for r in mem.accesses_by("iommu")] == ["R", "A"]
    assert mem.reads == 2 and mem.writes == 1


def test_peek_poke_and_disabled_log_leave_no_trace():
    mem = Memory(log=False)
    mem.write64(0x1000, 1, who="os")
    assert mem.log == []
    mem2 = Memory()
    mem2.poke64(0x2000, 0xABC)
    assert mem2.peek64(0x2000) == 0xABC
    assert mem2.log == [] and mem2.reads == 0 and mem2.writes == 0


# ---------------------------------------------------------- fault injection
def test_access_fault_refuses_reads_and_writes(mem):
    mem.write64(0x5000, 0x77)
    mem.inject_fault(0x5000, 0x10, FaultKind.ACCESS)
    with pytest.raises(AccessFault) as info:
        mem.read64(0x5008, who="iommu")
    assert info.value.addr == 0x5008 and info.value.who == "iommu"
    with pytest.raises(AccessFault):
        mem.write64(0x5000, 0x99, who="os")
    with pytest.raises(AccessFault):
        mem.read(0x4FFC, 8)  # partial overlap counts
    assert mem.peek64(0x5000) == 0x77  # the refused write did not land
    assert mem.read64(0x5010) == 0  # just past the range is fine
    assert mem.log[-1] == AccessRecord("", "R", 0x5010, 8)  # faulting accesses are logged too


def test_poison_fails_reads_only(mem):
    mem.inject_fault(0x6000, 8, "poison")
    mem.write64(0x6000, 0x1234)  # writes succeed
    assert mem.peek64(0x6000) == 0x1234
    with pytest.raises(DataCorruption):
        mem.read64(0x6000)
    with pytest.raises(DataCorruption):
        mem.cas64(0x6000, 0x1234, 0)
    mem.clear_faults()
    assert mem.read64(0x6000) == 0x1234


def test_access_fault_on_cas(mem):
    mem.inject_fault(0x7000, 8)
    with pytest.raises(AccessFault):
        mem.cas64(0x7000, 0, 1)


def test_fault_kind_must_be_known(mem):
    with pytest.raises(ValueError):
        mem.inject_fault(0x1000, 8, "sparkle")


# -------------------------------------------------------------------- CAS
def test_cas64_swaps_only_when_expected_matches(mem):
    mem.write64(0x8000, 0x10)
    assert mem.cas64(0x8000, 0x10, 0x50) == 0x10  # hit: returns old, stores new
    assert mem.read64(0x8000) == 0x50
    assert mem.cas64(0x8000, 0x10, 0x99) == 0x50  # miss: returns current, no store
    assert mem.read64(0x8000) == 0x50


# --------------------------------------------------------------- allocator
def test_frame_allocator_aligns_and_zeroes(mem):
    alloc = FrameAllocator(mem, base=0x1000_0000, size=0x10_0000)
    mem.poke64(0x1000_0000, 0xFFFF)  # stale data is cleared by alloc
    first = alloc.alloc()
    assert first == 0x1000_0000 and mem.peek64(first) == 0
    big = alloc.alloc(0x4000, 0x4000)
    assert big % 0x4000 == 0 and big > first
    with pytest.raises(MemoryError):
        alloc.alloc(0x10_0000)
    with pytest.raises(ValueError):
        FrameAllocator(mem, base=0x1234)
