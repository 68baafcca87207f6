"""Table builders (models/pagetable.py) checked against the spec by reading raw memory.

The expected words and addresses below are derived by hand from the digest (§2.3,
§4.2, §5.1, §5.2, §9.2) with literal bit positions, deliberately *not* through
``models.arch``, so these tests also cross-check the encodings there.
"""

import pytest

from models.arch import (
    SV39,
    SV39X4_SCHEME,
    SV48,
    SV48X4_SCHEME,
    SV57,
    SV57X4_SCHEME,
    DdtpMode,
    DeviceContext,
    PdtpMode,
    ProcessContext,
)
from models.memory import AccessRecord, FrameAllocator, Memory
from models.pagetable import (
    DeviceDirectory,
    MsiPageTable,
    NotMappedError,
    PageTable,
    ProcessDirectory,
)

# §5.2 PTE bits, written out by hand.
V, R, W, X, U, G, A, D = (1 << i for i in range(8))
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
SZ_4K, SZ_64K, SZ_2M, SZ_1G, SZ_512G, SZ_256T = 4 * KIB, 64 * KIB, 2 * MIB, GIB, 512 * GIB, 1 << 48
PPN44 = (1 << 44) - 1
ALL_SCHEMES = [SV39, SV48, SV57, SV39X4_SCHEME, SV48X4_SCHEME, SV57X4_SCHEME]


def ppn(word):
    return (word >> 10) & PPN44


def vpn(va, level, levels, gstage):
    """§5.1: VPN[i] = va[12+9i+8 : 12+9i]; the G-stage top field is 11 bits wide."""
    width = 11 if gstage and level == levels - 1 else 9
    return (va >> (12 + 9 * level)) & ((1 << width) - 1)


def assert_pointer(word):
    """A non-leaf PTE / DDTE / PDTE: V=1, PPN, every other bit 0 (§2.4, §5.2)."""
    assert word & ~(PPN44 << 10) == V, f"non-leaf word {word:#x} has bits besides V and PPN"


def hand_walk(mem, scheme, root, va, level, to_phys=lambda a: a):
    """Follow pointers down to ``level`` by reading raw words; return the entry's address."""
    table = root
    for lvl in range(scheme.levels - 1, level, -1):
        word = mem.peek64(to_phys(table + 8 * vpn(va, lvl, scheme.levels, scheme.gstage)))
        assert_pointer(word)
        table = ppn(word) << 12
    return to_phys(table + 8 * vpn(va, level, scheme.levels, scheme.gstage))


@pytest.fixture
def mem():
    return Memory()


@pytest.fixture
def alloc(mem):
    return FrameAllocator(mem, base=0x8000_0000, size=1 << 30)


def sizes_of(scheme):
    """Leaf sizes of §5.1: 4K, 2M, 1G, plus 512G (4+ levels) and 256T (5 levels)."""
    return [SZ_4K, SZ_2M, SZ_1G, SZ_512G, SZ_256T][: scheme.levels]


def sample_va(scheme, size):
    """A va using a high top-level index (beyond 9 bits for G-stage) and lower indices."""
    top_shift = 12 + 9 * (scheme.levels - 1)
    top_index = 0x5A5 if scheme.gstage else 0x0A5
    low = 3 * size if size < 1 << top_shift else 0
    return (top_index << top_shift) + low


# --------------------------------------------------------------------------- #
# Page tables: encodings and placement
# --------------------------------------------------------------------------- #
def test_sv39_spec_vector(mem, alloc):
    """va 0x4020_3000 -> VPN2=1, VPN1=1, VPN0=3 (§5.1)."""
    pt = PageTable(mem, alloc, SV39)
    pte_addr = pt.map(0x4020_3000, 0x1_2345_6000, r=True, w=True, u=True)
    l2 = mem.peek64(pt.root + 1 * 8)
    assert_pointer(l2)
    l1 = mem.peek64((ppn(l2) << 12) + 1 * 8)
    assert_pointer(l1)
    assert pte_addr == (ppn(l1) << 12) + 3 * 8
    assert mem.peek64(pte_addr) == (0x1_23456 << 10) | V | R | W | U | A | D
    assert pt.translate(0x4020_3ABC) == 0x1_2345_6ABC
    assert pt.atp() == (8 << 60) | (pt.root >> 12)


def test_sv48_spec_vector(mem, alloc):
    """va 0x281_0060_2000 -> VPN3=5, VPN2=4, VPN1=3, VPN0=2 (§5.1)."""
    pt = PageTable(mem, alloc, SV48)
    va = 0x281_0060_2000
    pte_addr = pt.map(va, 0x7000)
    table = pt.root
    for index in (5, 4, 3):
        word = mem.peek64(table + index * 8)
        assert_pointer(word)
        table = ppn(word) << 12
    assert pte_addr == table + 2 * 8
    assert pt.atp() >> 60 == 9


def test_sv39_upper_half_va(mem, alloc):
    """A sign-extended Sv39 va: VPN2=0x100, VPN1=0x81, VPN0=3."""
    pt = PageTable(mem, alloc, SV39)
    va = 0xFFFF_FFC0_1020_3000
    pt.map(va, 0x5000)
    l2 = mem.peek64(pt.root + 0x100 * 8)
    l1 = mem.peek64((ppn(l2) << 12) + 0x81 * 8)
    assert mem.peek64((ppn(l1) << 12) + 3 * 8) & ~0x3FF == 0x5 << 10
    assert pt.translate(va + 0x10) == 0x5010


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda s: s.name)
def test_every_leaf_size_encodes_per_spec(mem, alloc, scheme):
    for level, size in enumerate(sizes_of(scheme)):
        va = sample_va(scheme, size)
        pa = (0x2B << 40 if size <= SZ_1G else 0) + 5 * size
        pt = PageTable(mem, alloc, scheme)
        pte_addr = pt.map(va, pa, size, r=True, w=False, x=True, u=True, g=True, a=True,
                          d=False, pbmt=2, rsw=1)
        pt_map = pt.mappings[va]
        assert pte_addr == hand_walk(mem, scheme, pt.root, va, level)
        word = mem.peek64(pte_addr)
        assert word & 0xFF == V | R | X | U | G | A
        assert (word >> 8) & 3 == 1  # RSW
        assert ppn(word) == pa >> 12
        assert ppn(word) & ((1 << (9 * level)) - 1) == 0  # superpage PPN low fields zero
        assert (word >> 54) & 0x7F == 0  # reserved
        assert (word >> 61) & 3 == 2  # PBMT = IO
        assert word >> 63 == 0  # N
        offset = (size // 3) & ~7
        assert pt.translate(va + offset) == pa + offset
        assert pt.lookup(va + offset) == (pte_addr, level, word)
        assert len(pt.walk_path(va)) == scheme.levels - level
        assert pt_map == (pa, size, dict(r=True, w=False, x=True, u=True, g=True, a=True,
                                         d=False, pbmt=2, rsw=1))


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda s: s.name)
def test_napot_64k_is_16_replicated_level0_ptes(mem, alloc, scheme):
    pt = PageTable(mem, alloc, scheme)
    va = sample_va(scheme, SZ_4K) & ~0xFFFF | 0x30000
    pa = 0x1234_0000
    first = pt.map(va, pa, SZ_64K)
    assert first == hand_walk(mem, scheme, pt.root, va, 0)
    assert vpn(va, 0, scheme.levels, scheme.gstage) % 16 == 0
    for i in range(16):
        word = mem.peek64(first + 8 * i)
        assert word >> 63 == 1  # N
        assert ppn(word) & 0xF == 0b1000  # PPN[3:0] = 1000b
        assert ppn(word) >> 4 == pa >> 16
        assert word & 0xFF == V | R | W | U | A | D
    assert mem.peek64(first + 8 * 16) == 0 and mem.peek64(first - 8) == 0
    assert pt.translate(va + 0xF123) == pa + 0xF123
    assert pt.lookup(va + 0x5000)[:2] == (first + 5 * 8, 0)
    pt.unmap(va + 0x7000)  # any page of the group unmaps all 16
    assert all(mem.peek64(first + 8 * i) & V == 0 for i in range(16))
    assert va not in pt.mappings


def test_napot_flag_with_default_size_means_64k(mem, alloc):
    pt = PageTable(mem, alloc, SV39)
    pt.map(0x10000, 0x20000, napot=True)
    assert pt.mappings[0x10000][1] == SZ_64K
    with pytest.raises(ValueError, match="64 KiB"):
        pt.map(0x200000, 0x200000, SZ_2M, napot=True)


@pytest.mark.parametrize("scheme", [SV39X4_SCHEME, SV48X4_SCHEME, SV57X4_SCHEME],
                         ids=lambda s: s.name)
def test_gstage_root_is_16k_with_11_bit_top_index(mem, alloc, scheme):
    alloc.alloc()  # make the next free frame only 4 KiB aligned
    pt = PageTable(mem, alloc, scheme)
    assert pt.root % 0x4000 == 0
    assert pt.atp() == ({3: 8, 4: 9, 5: 10}[scheme.levels] << 60) | (pt.root >> 12)
    top_shift = 12 + 9 * (scheme.levels - 1)
    gpa = 0x7FF << top_shift  # the last of 2048 root entries
    pte_addr = pt.map(gpa, 0x9000)
    word = mem.peek64(pt.root + 0x7FF * 8)
    assert_pointer(word)
    assert pt.walk_path(gpa)[0][0] == pt.root + 0x3FF8
    assert pt.translate(gpa + 0x123) == 0x9123
    assert pte_addr == pt.walk_path(gpa)[-1][0]
    with pytest.raises(ValueError, match=f"wider than the {top_shift + 11}-bit"):
        pt.map(1 << (top_shift + 11), 0)
    assert pt.translate(1 << (top_shift + 11)) is None


def test_guest_first_stage_table_uses_gpas(mem, alloc):
    """Table addresses and PPNs are GPAs; stores land at to_phys(GPA) (§1.3)."""
    offset = 0x20_0000_0000
    host = FrameAllocator(mem, base=offset + 0x8000_0000, size=1 << 24)
    pt = PageTable(mem, alloc, SV48, to_phys=lambda gpa: gpa + offset,
                   alloc_table=lambda size, align: host.alloc(size, align) - offset, who="guest")
    assert pt.root == 0x8000_0000
    assert pt.atp() == (9 << 60) | 0x8_0000
    va, target_gpa = 0x7F_1234_5000, 0x4444_0000
    spa = pt.map(va, target_gpa)
    assert spa == hand_walk(mem, SV48, pt.root, va, 0, to_phys=lambda g: g + offset)
    assert ppn(mem.peek64(spa)) == target_gpa >> 12
    for phys_addr, _, word in pt.walk_path(va)[:-1]:
        assert phys_addr >= offset and ppn(word) << 12 < offset  # pointers hold GPAs
    gpa_path = pt.walk_path(va, phys=False)
    assert [a + offset for a, _, _ in gpa_path] == [a for a, _, _ in pt.walk_path(va)]
    assert pt.lookup(va, phys=False)[0] == spa - offset
    assert pt.translate(va + 8) == target_gpa + 8
    assert all(r.addr >= offset and r.op == "W" for r in mem.accesses_by("guest"))


def test_stores_are_logged_under_who_and_tables_are_not_read_through_the_log(mem, alloc):
    pt = PageTable(mem, alloc, SV39, who="hyp")
    pt.map(0x1000, 0x2000)
    records = mem.accesses_by("hyp")
    assert records and {r.op for r in records} == {"W"}
    assert all(r.size == 8 for r in records)
    assert mem.log == records  # peeks only: no reads to confuse IOMMU-access checks


def test_map_range_and_map_scattered(mem, alloc):
    pt = PageTable(mem, alloc, SV39)
    pt.map_range(0x4000_0000, 0x1_0000_0000, 4 * SZ_2M, SZ_2M, w=False)
    for i in range(4):
        assert pt.translate(0x4000_0000 + i * SZ_2M + 5) == 0x1_0000_0000 + i * SZ_2M + 5
        assert pt.lookup(0x4000_0000 + i * SZ_2M)[1] == 1
    assert pt.mappings[0x4000_0000][2]["w"] is False
    frames = [0x9000_0000, 0x7000_3000, 0xA000_5000]
    pt.map_scattered(0x10_0000, frames)
    assert [pt.translate(0x10_0000 + i * SZ_4K + 1) for i in range(3)] == [f + 1 for f in frames]
    with pytest.raises(ValueError, match="multiple"):
        pt.map_range(0, 0, SZ_4K + 8)


def test_remap_same_size_overwrites(mem, alloc):
    pt = PageTable(mem, alloc, SV39)
    a1 = pt.map(0x5000, 0x1000)
    a2 = pt.map(0x5000, 0x3000, w=False)
    assert a1 == a2 and pt.translate(0x5000) == 0x3000
    assert pt.mappings[0x5000][0] == 0x3000


# --------------------------------------------------------------------------- #
# Page tables: unmap, protect, set_raw, walks
# --------------------------------------------------------------------------- #
def test_unmap_clears_only_v(mem, alloc):
    pt = PageTable(mem, alloc, SV39)
    addr = pt.map(0x4020_3000, 0x8000)
    before = mem.peek64(addr)
    pt.unmap(0x4020_3FF8)
    assert mem.peek64(addr) == before & ~V
    assert pt.translate(0x4020_3000) is None and pt.lookup(0x4020_3000) is None
    assert 0x4020_3000 not in pt.mappings
    with pytest.raises(KeyError, match="nothing is mapped at va 0x40203000"):
        pt.unmap(0x4020_3000)
    with pytest.raises(NotMappedError):
        pt.unmap(1 << 45)  # non-canonical: also "not mapped"


def test_unmapped_subtree_can_take_a_superpage(mem, alloc):
    pt = PageTable(mem, alloc, SV39)
    pt.map(0x4020_3000, 0x8000)
    pt.unmap(0x4020_3000)
    pt.map(0x4020_0000, 0x60_0000, SZ_2M)
    assert pt.translate(0x4020_3000) == 0x60_3000


def test_protect_changes_permissions_only(mem, alloc):
    pt = PageTable(mem, alloc, SV39)
    addr = pt.map(0x2000, 0x7000, x=True)
    pt.protect(0x2000, w=False, pbmt=1, a=False, g=True)
    word = mem.peek64(addr)
    assert word & 0xFF == V | R | X | U | G | D
    assert (word >> 61) & 3 == 1 and ppn(word) == 7
    assert pt.mappings[0x2000][2]["w"] is False and pt.mappings[0x2000][2]["pbmt"] == 1
    with pytest.raises(ValueError, match="not color"):
        pt.protect(0x2000, color=1)
    with pytest.raises(ValueError, match="reserved"):
        pt.protect(0x2000, r=False, w=True)
    with pytest.raises(KeyError, match="protect"):
        pt.protect(0x9000, w=False)


def test_protect_napot_updates_all_16(mem, alloc):
    pt = PageTable(mem, alloc, SV48)
    first = pt.map(0x40000, 0x80000, SZ_64K)
    pt.protect(0x4F000, w=False)
    assert {mem.peek64(first + 8 * i) for i in range(16)} == {
        (1 << 63) | ((0x80 | 0b1000) << 10) | V | R | U | A | D}


def test_walk_path_lists_every_entry(mem, alloc):
    pt = PageTable(mem, alloc, SV57)
    va = 0x12_3456_789A_B000
    pt.map(va, 0xC000)
    path = pt.walk_path(va)
    assert [lvl for _, lvl, _ in path] == [4, 3, 2, 1, 0]
    assert path[0][0] == pt.root + 8 * vpn(va, 4, 5, False)
    for (_, _, word), (addr, lvl, _) in zip(path, path[1:]):
        assert addr == (ppn(word) << 12) + 8 * vpn(va, lvl, 5, False)
    assert pt.walk_path(va + SZ_2M)[-1][2] == 0  # walk stops at the invalid entry
    assert pt.walk_path(1 << 57) == []  # non-canonical: nothing is read


@pytest.mark.parametrize("level,value", [
    (0, V | R | (0x5 << 10)),  # control: a well-formed 4 KiB leaf translates
    (1, V | R | W | A | D | (0x201 << 10)),  # 2 MiB leaf with PPN[0] != 0: misaligned
    (0, V | W | A | D | (0x5 << 10)),  # W without R
    (0, V | W | X | A | D | (0x5 << 10)),  # XWR = 110, also reserved
    (0, V | R | (3 << 61) | (0x5 << 10)),  # PBMT = 3
    (0, V | R | (1 << 54) | (0x5 << 10)),  # reserved bit 54
    (0, V | R | (1 << 60) | (0x5 << 10)),  # bit 60: reserved without Svrsw60t59b
    (0, V | R | (1 << 63) | (0x5 << 10)),  # N with PPN[3:0] != 1000b
    (2, V | R | (1 << 63) | (0x8 << 10)),  # N on a superpage
])
def test_set_raw_builds_malformed_leaves_that_translate_rejects(mem, alloc, level, value):
    pt = PageTable(mem, alloc, SV39)
    va = 0x4020_3000
    addr = pt.set_raw(va, level, value)
    assert addr == hand_walk(mem, SV39, pt.root, va, level)
    assert mem.peek64(addr) == value
    assert pt.lookup(va) == (addr, level, value)
    assert pt.translate(va) == (0x5000 if value == V | R | (0x5 << 10) else None)


@pytest.mark.parametrize("bit", [0, 1 << 63, A, D, U, 1 << 61], ids=[
    "control", "N", "A", "D", "U", "PBMT"])
def test_reserved_bits_on_a_pointer_break_the_walk(mem, alloc, bit):
    """Non-leaf PTEs must keep D, A, U, N and PBMT at 0 (§5.2)."""
    pt = PageTable(mem, alloc, SV39)
    va = 0x4020_3000
    pt.map(va, 0x7000)
    pointer = pt.walk_path(va)[1][2]
    pt.set_raw(va, 1, pointer | bit)
    assert pt.translate(va) == (0x7000 if bit == 0 else None)
    assert len(pt.walk_path(va)) == 3  # walk_path still follows it: it reports, not judges


def test_set_raw_returns_leaf_for_lookup_and_drops_bookkeeping(mem, alloc):
    pt = PageTable(mem, alloc, SV39)
    pt.map(0x4020_3000, 0x1000)
    bad = V | R | W | A | D | (0x201 << 10)
    addr = pt.set_raw(0x4020_0000, 1, bad)
    assert pt.lookup(0x4020_3000) == (addr, 1, bad)
    assert pt.mappings == {}
    pt.map(0x8000_0000, 0, SZ_1G)
    with pytest.raises(ValueError, match="inside the 1 GiB leaf"):
        pt.set_raw(0x8000_0000, 0, 0)
    with pytest.raises(ValueError, match="levels 0..2"):
        pt.set_raw(0, 3, 0)


def test_translate_of_unmapped_or_outside_is_none(mem, alloc):
    pt = PageTable(mem, alloc, SV39)
    assert pt.translate(0x1000) is None
    assert pt.translate(1 << 38) is None
    assert pt.lookup(1 << 40) is None


# --------------------------------------------------------------------------- #
# Page tables: refused requests
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("scheme,call,message", [
    (SV39, lambda pt: pt.map(0x1000, 0, SZ_2M), "va is not 2 MiB aligned"),
    (SV39, lambda pt: pt.map(0x20_0000, 0x1000, SZ_2M), "pa 0x1000 is not 2 MiB aligned"),
    (SV39, lambda pt: pt.map(0, 0, 8 * KIB), "no 8 KiB pages"),
    (SV39, lambda pt: pt.map(0, 0, SZ_512G), "Sv39 has no 512 GiB pages"),
    (SV48, lambda pt: pt.map(0, 0, SZ_256T), "Sv48 has no 256 TiB pages"),
    (SV39, lambda pt: pt.map(1 << 38, 0), "not canonical for Sv39"),
    (SV48, lambda pt: pt.map(0x0001_8000_0000_0000, 0), "not canonical for Sv48"),
    (SV39X4_SCHEME, lambda pt: pt.map(1 << 41, 0), "wider than the 41-bit"),
    (SV39, lambda pt: pt.map(0, 1 << 56), "does not fit"),
    (SV39, lambda pt: pt.map(0, 0, w=True, r=False), "W without R is a reserved"),
    (SV39, lambda pt: pt.map(0, 0, r=False, w=False, x=False), "needs R or X"),
    (SV39, lambda pt: pt.map(0, 0, pbmt=3), "PBMT=3 is reserved"),
    (SV39, lambda pt: pt.map(0, 0, rsw=4), "rsw=4 does not fit"),
    (SV39, lambda pt: pt.map(-0x1000, 0), "not a 64-bit"),
])
def test_bad_map_requests_raise_clear_value_errors(mem, alloc, scheme, call, message):
    pt = PageTable(mem, alloc, scheme)
    with pytest.raises(ValueError, match=message):
        call(pt)


def test_size_conflicts_name_the_mapping_in_the_way(mem, alloc):
    pt = PageTable(mem, alloc, SV39)
    giga = pt.map(0x8000_0000, 0x4000_0000, SZ_1G)
    with pytest.raises(ValueError, match=rf"inside the 1 GiB leaf for va 0x80000000 at level 2 "
                                         rf"\(PTE @ {giga:#x}"):
        pt.map(0x8020_3000, 0x1000)
    small = pt.map(0x4020_3000, 0x1000)
    with pytest.raises(ValueError, match=rf"va 0x40203000 is already mapped by a level-0 leaf "
                                         rf"\(PTE @ {small:#x}\)"):
        pt.map(0x4000_0000, 0, SZ_1G)
    with pytest.raises(ValueError, match="4 KiB page is already mapped"):
        pt.map(0x4020_0000, 0x10_0000, SZ_64K)
    pt.map(0x4030_0000, 0x10_0000, SZ_64K)
    with pytest.raises(ValueError, match="64 KiB NAPOT page is already mapped"):
        pt.map(0x4030_2000, 0x2000)


# --------------------------------------------------------------------------- #
# Device directory (§2)
# --------------------------------------------------------------------------- #
DC_WORDS = dict(tc=0x21, iohgatp=(8 << 60) | 0x12344, ta=0x42 << 12, fsc=(8 << 60) | 0x777,
                msiptp=(1 << 60) | 0x999, msi_addr_mask=0xF, msi_addr_pattern=0x100)


@pytest.mark.parametrize("mode,extended,device_id,indices", [
    # indices = (DDI[0], DDI[1], DDI[2]) worked out by hand from §2.3
    (DdtpMode.LVL3, False, 0xABCDEF, (0x6F, 0x19B, 0xAB)),  # [6:0], [15:7], [23:16]
    (DdtpMode.LVL3, True, 0xABCDEF, (0x2F, 0x137, 0x157)),  # [5:0], [14:6], [23:15]
    (DdtpMode.LVL2, False, 0xBEEF, (0x6F, 0x17D)),
    (DdtpMode.LVL2, True, 0x7EEF, (0x2F, 0x1FB)),
    (DdtpMode.LVL1, False, 0x7E, (0x7E,)),
    (DdtpMode.LVL1, True, 0x3E, (0x3E,)),
])
def test_ddt_placement_follows_ddi_split(mem, alloc, mode, extended, device_id, indices):
    ddt = DeviceDirectory(mem, alloc, mode, extended)
    words = DC_WORDS if extended else {k: DC_WORDS[k] for k in ("tc", "iohgatp", "ta", "fsc")}
    dc_addr = ddt.install(device_id, DeviceContext(**words))
    table = ddt.root
    for index in reversed(indices[1:]):
        word = mem.peek64(table + index * 8)
        assert_pointer(word)
        table = ppn(word) << 12
    dc_size = 64 if extended else 32
    assert dc_addr == table + indices[0] * dc_size == ddt.dc_address(device_id)
    stored = [mem.peek64(dc_addr + 8 * i) for i in range(dc_size // 8)]
    assert stored == list(words.values()) + [0] * (dc_size // 8 - len(words))
    assert ddt.read(device_id) == DeviceContext(**words)
    assert mem.log[-1] == AccessRecord("os", "W", dc_addr, 8)  # tc (with V) stored last
    assert ddt.ddtp() == ({DdtpMode.LVL1: 2, DdtpMode.LVL2: 3, DdtpMode.LVL3: 4}[mode]
                          | (ddt.root >> 12) << 10)


@pytest.mark.parametrize("mode,extended,widest", [
    (DdtpMode.LVL1, False, 7), (DdtpMode.LVL1, True, 6), (DdtpMode.LVL2, False, 16),
    (DdtpMode.LVL2, True, 15), (DdtpMode.LVL3, False, 24), (DdtpMode.LVL3, True, 24),
])
def test_ddt_rejects_device_ids_too_wide(mem, alloc, mode, extended, widest):
    ddt = DeviceDirectory(mem, alloc, mode, extended)
    ddt.install((1 << widest) - 1, DeviceContext(tc=1))
    with pytest.raises(ValueError, match="too wide"):
        ddt.install(1 << widest, DeviceContext(tc=1))
    assert ddt.dc_address(1 << widest) is None


def test_ddt_neighbours_share_tables(mem, alloc):
    ddt = DeviceDirectory(mem, alloc, DdtpMode.LVL3, extended=False)
    start = alloc.next
    a = ddt.install(0x100, DeviceContext(tc=1))
    b = ddt.install(0x101, DeviceContext(tc=1))
    assert b - a == 32 and alloc.next - start == 2 * 4096  # one mid table, one leaf page
    assert ddt.dc_address(0x10000) is None  # another DDI[2]: no path yet


def test_ddt_remove_and_raw_entries(mem, alloc):
    ddt = DeviceDirectory(mem, alloc, DdtpMode.LVL3, extended=False)
    addr = ddt.install(0xABCDEF, DeviceContext(tc=0x21, fsc=5))
    ddt.remove(0xABCDEF)
    assert mem.peek64(addr) == 0x20 and ddt.read(0xABCDEF).fsc == 5
    with pytest.raises(KeyError, match="0x123456"):
        ddt.remove(0x123456)
    bad = V | (1 << 9) | (0x1234 << 10)  # reserved bit 9 set
    assert ddt.set_raw_ddte(0xABCDEF, 2, bad) == ddt.root + 0xAB * 8
    assert mem.peek64(ddt.root + 0xAB * 8) == bad
    fresh = ddt.set_raw_ddte(0x01_0000, 1, 0)  # builds the level-2 pointer on the way
    l2 = mem.peek64(ddt.root + 0x01 * 8)
    assert_pointer(l2)
    assert fresh == (ppn(l2) << 12) + 0 * 8
    with pytest.raises(ValueError, match="level 0 is the DC"):
        ddt.set_raw_ddte(0, 0, 0)
    with pytest.raises(ValueError, match="none"):
        DeviceDirectory(mem, alloc, DdtpMode.LVL1, False).set_raw_ddte(0, 1, 0)


def test_ddt_refuses_off_bare_and_msi_fields_in_base_format(mem, alloc):
    for mode in (DdtpMode.OFF, DdtpMode.BARE):
        with pytest.raises(ValueError, match="Off and Bare"):
            DeviceDirectory(mem, alloc, mode, False)
    ddt = DeviceDirectory(mem, alloc, DdtpMode.LVL2, extended=False)
    with pytest.raises(ValueError, match="extended"):
        ddt.install(1, DeviceContext(tc=1, msiptp=1 << 60))


# --------------------------------------------------------------------------- #
# Process directory (§4)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("mode,process_id,indices", [
    (PdtpMode.PD8, 0xAB, (0xAB,)),
    (PdtpMode.PD17, 0x1_2345, (0x45, 0x123)),  # [7:0], [16:8]
    (PdtpMode.PD20, 0xF_ABCD, (0xCD, 0x1AB, 0x7)),  # [7:0], [16:8], [19:17]
])
def test_pdt_placement_follows_pdi_split(mem, alloc, mode, process_id, indices):
    pdt = ProcessDirectory(mem, alloc, mode)
    pc = ProcessContext(ta=V | (0x55 << 12), fsc=(9 << 60) | 0x4321)
    addr = pdt.install(process_id, pc)
    table = pdt.root
    for index in reversed(indices[1:]):
        word = mem.peek64(table + index * 8)
        assert_pointer(word)
        table = ppn(word) << 12
    assert addr == table + indices[0] * 16 == pdt.pc_address(process_id)
    assert (mem.peek64(addr), mem.peek64(addr + 8)) == (pc.ta, pc.fsc)
    assert [r.addr for r in mem.log[-2:]] == [addr + 8, addr]  # ta (with V) stored last
    assert pdt.pdtp() == (int(mode) << 60) | (pdt.root >> 12)
    assert pdt.read(process_id) == pc
    with pytest.raises(ValueError, match="too wide"):
        pdt.install(1 << {1: 8, 2: 17, 3: 20}[mode], pc)


def test_guest_pdt_holds_gpas(mem, alloc):
    offset = 0x30_0000_0000
    host = FrameAllocator(mem, base=offset + 0x1000_0000, size=1 << 24)
    pdt = ProcessDirectory(mem, alloc, PdtpMode.PD17, to_phys=lambda g: g + offset,
                           alloc_table=lambda size, align: host.alloc(size, align) - offset)
    assert pdt.root == 0x1000_0000
    spa = pdt.install(0x1_2345, ProcessContext(ta=1))
    pointer = mem.peek64(pdt.root + offset + 0x123 * 8)
    assert_pointer(pointer)
    assert spa == (ppn(pointer) << 12) + offset + 0x45 * 16
    assert pdt.pc_address(0x1_2345, phys=False) == spa - offset


def test_pdt_remove_and_raw_entries(mem, alloc):
    pdt = ProcessDirectory(mem, alloc, PdtpMode.PD20)
    addr = pdt.install(0xF_ABCD, ProcessContext(ta=V | 2, fsc=7))
    pdt.remove(0xF_ABCD)
    assert mem.peek64(addr) == 2 and mem.peek64(addr + 8) == 7
    with pytest.raises(KeyError):
        pdt.remove(0x1)
    assert pdt.set_raw_pdte(0xF_ABCD, 2, V | (1 << 60)) == pdt.root + 7 * 8
    with pytest.raises(ValueError, match="level 0 is the PC"):
        pdt.set_raw_pdte(0, 0, 0)
    with pytest.raises(ValueError, match="none"):
        ProcessDirectory(mem, alloc, PdtpMode.PD8).set_raw_pdte(0, 1, 0)
    with pytest.raises(ValueError, match="Bare"):
        ProcessDirectory(mem, alloc, PdtpMode.BARE)


# --------------------------------------------------------------------------- #
# MSI page table (§9)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("entries,align", [(1, 4096), (16, 4096), (256, 4096), (512, 8192),
                                           (1024, 16384)])
def test_msi_table_alignment(mem, alloc, entries, align):
    alloc.alloc()  # next free frame is only 4 KiB aligned
    table = MsiPageTable(mem, alloc, entries)
    assert table.base % align == 0
    assert table.msiptp() == (1 << 60) | (table.base >> 12)


def test_msi_entries_encode_per_aia(mem, alloc):
    table = MsiPageTable(mem, alloc, 16)
    table.set_basic(5, 0xABCDE)
    assert mem.peek64(table.base + 5 * 16) == V | (3 << 1) | (0xABCDE << 10)
    assert mem.peek64(table.base + 5 * 16 + 8) == 0
    table.set_mrif(7, 0x1234_5600, 0xABCDE, 0x5A5)
    entry = table.base + 7 * 16
    assert mem.peek64(entry) == V | (1 << 1) | (0x91A2B << 7)  # MRIF address[55:9] at [53:7]
    assert mem.peek64(entry + 8) == 0x1A5 | (0xABCDE << 10) | (1 << 60)  # NID[9:0], NPPN, NID[10]
    assert [r.addr for r in mem.log[-2:]] == [entry + 8, entry]  # dword 0 (with V) last
    table.invalidate(7)
    assert table.read(7) == ((1 << 1) | (0x91A2B << 7), 0x1A5 | (0xABCDE << 10) | (1 << 60))
    table.set_raw(15, 0xFFFF, 0x1)
    assert table.read(15) == (0xFFFF, 0x1)


@pytest.mark.parametrize("call,message", [
    (lambda t: t.set_basic(16, 0), "outside 0..15"),
    (lambda t: t.set_mrif(0, 0x1100, 0, 0), "512-byte aligned"),
    (lambda t: t.set_mrif(0, 0x1200, 0, 2048), "11 bits"),
    (lambda t: t.set_basic(0, 1 << 44), "44 bits"),
])
def test_msi_bad_requests(mem, alloc, call, message):
    with pytest.raises(ValueError, match=message):
        call(MsiPageTable(mem, alloc, 16))


@pytest.mark.parametrize("entries", [0, 3, 24])
def test_msi_table_size_must_be_power_of_two(mem, alloc, entries):
    with pytest.raises(ValueError, match="2\\^k"):
        MsiPageTable(mem, alloc, entries)
