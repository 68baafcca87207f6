"""Differential tests of ``rtl/core.py`` TranslationCore against ``models/translate.py``.

Every response (and every fault report) is judged by the scoreboard against the
reference model running on its own copy of the same tables; no test here computes
an expected address. Run through pytest (``tests/test_rtl_core.py``) or directly:
``python -m tb.runner tb.tests.test_core_basic [--sim icarus] [--waves] [--seed N]``.

The random-traffic size is ``$IOMMU_TB_TRANSACTIONS`` per test (default 3000).
"""

import os
import random
from dataclasses import dataclass, replace

import cocotb
from cocotb.triggers import ClockCycles, First, Timer

from models import arch
from models.arch import (
    AddrType,
    Ddte,
    DdtpMode,
    DeviceContext,
    Fsc,
    Iohgatp,
    PcTa,
    PdtpMode,
    Priv,
    ProcessContext,
    Pte,
    Ta,
    Tc,
)
from models.memory import FrameAllocator, Memory
from models.pagetable import DeviceDirectory, PageTable, ProcessDirectory
from models.transaction import Request
from tb import packing
from tb.env import CLOCK_PERIOD_NS, TB, cause_name, params_from_env
from tb.traffic import RandomSystem

TRANSACTIONS = int(os.environ.get("IOMMU_TB_TRANSACTIONS", "3000"))
#: ``lo,hi``: memory latency range for the random tests (``make regress``'s slow-memory runs).
MEM_LATENCY = os.environ.get("IOMMU_TB_MEM_LATENCY")


def extended_dc() -> bool:
    """The DC format of the DUT's capabilities (§2.3: MSI_FLAT selects the extended,
    64-byte DC and the DDI split that goes with it)."""
    return bool(arch.Cap.MSI_FLAT.get(params_from_env().capabilities))


def apply_stress(tb: TB, on: bool) -> None:
    """``tb.stress(on)``, then the memory latency of ``$IOMMU_TB_MEM_LATENCY`` if set."""
    tb.stress(on)
    if MEM_LATENCY:
        lo, hi = (int(v) for v in MEM_LATENCY.split(","))
        tb.responder.latency = (lo, hi)


def random_plain_requests(rng: random.Random, count: int) -> list[Request]:
    """Requests from any device, for modes with no tables (Off, Bare)."""
    out = []
    for _ in range(count):
        pv = rng.random() < 0.3
        out.append(Request(device_id=rng.getrandbits(24), iova=rng.getrandbits(64),
                           access=rng.choice(list(arch.Access)),
                           process_id=rng.getrandbits(20) if pv else 0, pv=pv,
                           priv=rng.choice(list(Priv)) if pv else Priv.USER,
                           addr_type=rng.choices(list(AddrType), [70, 20, 10])[0]))
    return out


def ddtp_of(mode: DdtpMode, ppn: int = 0) -> int:
    return arch.Ddtp.IOMMU_MODE.put(mode) | arch.Ddtp.PPN.put(ppn)


@cocotb.test()
async def ddtp_off_blocks_everything(dut):
    """iommu_mode Off: every request faults (cause 256) and is reported."""
    tb = TB(dut)
    await tb.reset()
    tb.configure(ddtp_of(DdtpMode.OFF))
    requests = random_plain_requests(tb.rng, 200)
    results = await tb.translate_all(requests)
    figures = tb.report()
    assert figures["checked"] == len(requests)
    assert all(not r.ok and r.cause == arch.Cause.ALL_INBOUND_DISALLOWED for _, r in results)
    assert figures["fault_reports_matched"] == len(requests)


@cocotb.test()
async def ddtp_bare_passes_untranslated_through(dut):
    """iommu_mode Bare: untranslated requests pass through, translated ones fault (260)."""
    tb = TB(dut)
    await tb.reset()
    tb.configure(ddtp_of(DdtpMode.BARE))
    requests = random_plain_requests(tb.rng, 300)
    results = await tb.translate_all(requests)
    tb.report()
    for request, response in results:
        if request.addr_type == AddrType.UNTRANSLATED:
            assert response.ok, f"{request}: {response}"
        elif request.addr_type == AddrType.TRANSLATED:
            assert response.cause == arch.Cause.TRANSACTION_TYPE_DISALLOWED, response


@cocotb.test()
@cocotb.parametrize(stress=[False, True])
async def one_level_ddt_sv39(dut, stress):
    """A 1LVL DDT with one Sv39 device: 4 KiB, 2 MiB and 1 GiB pages, repeated (IOTLB hits),
    unmapped addresses and a write to a read-only page."""
    memory = Memory()
    alloc = FrameAllocator(memory)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL1, extended=extended_dc())
    table = PageTable(memory, alloc, arch.SV39)
    table.map(0x1000, 0x9_0000_3000)
    table.map(0x2000, 0x9_0000_7000, w=False)
    table.map(0x4000_0000 + 0x20_0000, 0xA_0040_0000, 1 << 21, x=True)
    table.map(0x40_0000_0000 - (1 << 30), 0xC_4000_0000, 1 << 30, u=False)
    ddt.install(5, DeviceContext(tc=Tc.V.put(1), ta=Ta.PSCID.put(9), fsc=table.atp()))
    tb = TB(dut, memory)
    tb.stress(stress)
    await tb.reset()
    tb.configure(ddt.ddtp())
    iovas = [0x1008, 0x2010, 0x4000_0000 + 0x20_0000 + 0x1234, 0x4000_0000 + 0x3F_FFF8,
             0x40_0000_0000 - (1 << 30) + 0x1234_5678, 0x3000, 0x4000_0000]
    requests = [Request(device_id=5, iova=iova, access=access)
                for _ in range(4) for iova in iovas
                for access in (arch.Access.READ, arch.Access.WRITE)]
    requests.append(Request(device_id=6, iova=0x1000))  # no such device
    results = await tb.translate_all(requests)
    figures = tb.report()
    assert sum(r.ok for _, r in results) >= len(requests) // 3, "most mapped pages should translate"
    misses = figures["events"].get("ev_iotlb_miss")
    if misses is not None:
        assert misses < figures["events"]["ev_request"], "repeated pages should hit the IOTLB"


@cocotb.test()
async def repeated_page_hits_after_one_walk(dut):
    """A device that asks for the same page again as soon as it has its answer, and after
    0-9 idle cycles: one walk per page, every later request a hit. (The IOTLB's fill
    must be visible however the next request falls against it; a miss is legal but
    this pattern must not keep missing.)"""
    memory = Memory()
    alloc = FrameAllocator(memory)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL1, extended=extended_dc())
    table = PageTable(memory, alloc, arch.SV39)
    gaps = range(10)
    for gap in gaps:
        table.map(0x10_0000 + (gap << 12), 0x9_0000_0000 + (gap << 12))
    ddt.install(3, DeviceContext(tc=Tc.V.put(1), ta=Ta.PSCID.put(2), fsc=table.atp()))
    tb = TB(dut, memory)
    await tb.reset()
    tb.configure(ddt.ddtp())
    before = tb.events.counts.get("ev_iotlb_miss", 0)
    for gap in gaps:
        for k in range(4):
            response = await tb.translate(Request(device_id=3, iova=0x10_0000 + (gap << 12) + 8 * k))
            assert response.ok, f"gap {gap}: request {k} faulted"
            await ClockCycles(dut.clk, gap)
    tb.report()
    misses = tb.events.counts.get("ev_iotlb_miss", 0) - before
    assert misses == len(gaps), f"{misses} IOTLB misses for {len(gaps)} pages asked 4 times each"


# Names are short identifiers so cocotb puts them in the test name (random_traffic/system=lvl1).
SYSTEMS = {
    "lvl1": {"ddt_mode": "1LVL", "schemes": ("Sv39",), "pd_modes": ("PD8",)},
    "lvl2": {"ddt_mode": "2LVL", "schemes": ("Sv48", "Sv39"), "pd_modes": ("PD17",)},
    "lvl3": {"ddt_mode": "3LVL", "schemes": ("Sv57", "Sv48", "Sv39"), "pd_modes": ("PD20", "PD8")},
}


@cocotb.test()
@cocotb.parametrize(system=list(SYSTEMS), stress=[False, True])
async def random_traffic(dut, system, stress):
    """Random tables (DDT, PDTs, Sv39/48/57) and thousands of random requests."""
    tb = TB(dut)
    rng = random.Random(tb.seed)
    world = RandomSystem(tb.memory, rng, devices=10, **SYSTEMS[system])
    tb.log.info("random system: %s; %d requests; seed %s", world.describe(), TRANSACTIONS,
                tb.seed_text)
    apply_stress(tb, stress)
    await tb.reset()
    tb.configure(world.ddtp())
    results = await tb.translate_all(world.requests(TRANSACTIONS))
    figures = tb.report()
    ok = sum(r.ok for _, r in results)
    tb.log.info("%d of %d translated, %d faulted", ok, len(results), len(results) - ok)
    assert figures["checked"] == TRANSACTIONS


@cocotb.test()
@cocotb.parametrize(stress=[False, True])
async def random_traffic_memory_errors(dut, stress):
    """Random traffic while some PTEs, device and process contexts read back as access
    faults or poisoned data (causes 257/265/268/269/274 and the access faults)."""
    tb = TB(dut)
    rng = random.Random(tb.seed)
    world = RandomSystem(tb.memory, rng, devices=10, **SYSTEMS["lvl2"])
    for addr, kind, what in world.inject_memory_errors(8):
        tb.log.info("memory error: %s at %#x (%s)", kind, addr, what)
    apply_stress(tb, stress)
    await tb.reset()
    tb.configure(world.ddtp())
    results = await tb.translate_all(world.requests_with_errors(TRANSACTIONS // 2))
    figures = tb.report()
    assert figures["memory"]["errors"] > 0, "no request ran into an injected memory error"
    causes = {r.cause for _, r in results if not r.ok}
    tb.log.info("fault causes seen: %s", sorted(causes))


@cocotb.test()
async def invalidation_makes_table_changes_visible(dut):
    """Remap a page, IOTINVAL.VMA it: the next request sees the new mapping (both sides)."""
    memory = Memory()
    alloc = FrameAllocator(memory)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL1, extended=extended_dc())
    table = PageTable(memory, alloc, arch.SV39)
    pte = table.map(0x7000, 0x5_0000_1000)
    ddt.install(3, DeviceContext(tc=Tc.V.put(1), ta=Ta.PSCID.put(4), fsc=table.atp()))
    tb = TB(dut, memory)
    await tb.reset()
    tb.configure(ddt.ddtp())
    request = Request(device_id=3, iova=0x7123)
    before = await tb.translate_all([request] * 3)
    old = memory.peek64(pte)
    new = arch.Pte.PPN.set(old, 0x6_0000_2000 >> 12)
    tb.write64(pte, new)
    await tb.invalidate("IOTINVAL_VMA", av=1, pscv=1, pscid=4, vpn=0x7000 >> 12)
    (_, after), = await tb.translate_all([request])
    tb.report()  # the model says where the new mapping goes; here only: it moved
    assert before[-1][1].ok and after.ok and after.spa != before[-1][1].spa, (before, after)


@dataclass
class TableChange:
    """One software change to a device's tables, and the §10.3 recipe that invalidates it."""

    device_id: int
    what: str
    stores: list[tuple[int, int]]  # (dword address, new value)
    commands: list[dict]  # Invalidation operands, "kind" included
    probes: list[Request]  # requests that see the change


def random_table_change(world: RandomSystem, rng: random.Random) -> TableChange | None:
    """Remap, write-protect or unmap a page of some device or process (IOTINVAL.VMA with
    ADDR and PSCID), or flip a device context's DTF (IODIR.INVAL_DDT, then IOTINVAL.VMA
    of its PSCID). Global pages and NAPOT groups are left alone: they are shared by every
    table, or 16 PTEs that must change together."""
    device = rng.choice([d for d in world.devices if d.kind in ("first-stage", "pdt")])
    if rng.random() < 0.2:
        dc_addr = world.ddt.dc_address(device.device_id)
        tc = world.memory.peek64(dc_addr)
        pscid = Ta.PSCID.get(world.ddt.read(device.device_id).ta)
        pid = next(iter(device.processes), None)
        space = device.space if device.kind == "first-stage" else device.processes.get(pid)
        iova = world._iova_in(space)
        probe = Request(device_id=device.device_id, iova=iova, access=arch.Access.WRITE,
                        process_id=pid or 0, pv=pid is not None)
        # §10.3, leaf DDT entry: IODIR.INVAL_DDT, then the PSCID (PDTV=0) or every host
        # entry (PDTV=1).
        flush = ({"kind": "IOTINVAL_VMA", "pscv": 1, "pscid": pscid}
                 if device.kind == "first-stage" else {"kind": "IOTINVAL_VMA"})
        return TableChange(device.device_id, f"DTF {Tc.DTF.get(tc)} -> {1 - Tc.DTF.get(tc)}",
                           [(dc_addr, Tc.DTF.set(tc, 1 - Tc.DTF.get(tc)))],
                           [{"kind": "IODIR_INVAL_DDT", "dv": 1, "device_id": device.device_id},
                            flush],
                           [probe, replace(probe, access=arch.Access.READ)])
    if device.kind == "first-stage":
        pid, space = None, device.space
        pscid = Ta.PSCID.get(world.ddt.read(device.device_id).ta)
    else:
        pid = rng.choice(list(device.processes))
        space = device.processes[pid]
        if space is None or space.table is None:
            return None
        pscid = PcTa.PSCID.get(device.pdt.read(pid).ta)
    if space is None or space.table is None:
        return None
    global_vas = {va for va, *_ in world.globals}
    pages = [(va, size) for va, size in space.mapped if va not in global_vas and size != 1 << 16]
    if not pages:
        return None
    va, size = rng.choice(pages)
    pte_addr, _, pte = space.table.walk_path(va)[-1]
    roll = rng.random()
    if roll < 0.4:
        frame = rng.randrange(0, 1 << 50, size) >> 12
        new, what = Pte.PPN.set(pte, frame), f"remap va {va:#x} to ppn {frame:#x}"
    elif roll < 0.7:
        new, what = Pte.W.set(pte, 0), f"write-protect va {va:#x}"
    else:
        new, what = Pte.V.set(pte, 0), f"unmap va {va:#x}"
    probes = [Request(device_id=device.device_id, iova=va + rng.randrange(size), access=access,
                      process_id=pid or 0, pv=pid is not None)
              for access in (arch.Access.READ, arch.Access.WRITE)]
    return TableChange(device.device_id, what, [(pte_addr, new)],
                       [{"kind": "IOTINVAL_VMA", "av": 1, "pscv": 1, "pscid": pscid,
                         "vpn": va >> 12}], probes)


async def invalidate_under_traffic(tb: TB, commands: list[dict]) -> None:
    """Send invalidations without draining the requests in flight; the model applies each
    when the core accepts it (the same cycle, before any later request)."""
    for operands in commands:
        done = cocotb.triggers.Event()

        def accepted(item, cycle, operands=operands, done=done):
            tb.reference.invalidate(**operands)
            done.set()

        tb.inval.on_accept = accepted
        tb.inval.send(packing.invalidation_payload(**operands))
        await First(done.wait(), Timer(1000 * CLOCK_PERIOD_NS, unit="ns"))
        if not done.is_set():
            raise AssertionError(f"the DUT did not accept invalidation {operands} in 1000 "
                                 f"cycles (seed {tb.seed_text}; replay: {tb.replay})")
    tb.inval.on_accept = None


@cocotb.test()
@cocotb.parametrize(stress=[False, True])
async def invalidation_under_traffic(dut, stress):
    """Invalidation-heavy random traffic: table changes and their invalidations (§10.3)
    while walks of other devices are in flight, so ``inval_pending`` is exercised.

    Each round warms the caches with the page to change, keeps other devices' traffic
    going, stores the change and sends its invalidation(s) without draining, then asks
    for the changed page again. The scoreboard judges everything; the freshness checker
    (``tb/invariants.py``) checks every request issued after ``inval_pending`` fell
    against the current tables. Requests of the changed device are held back while its
    change is in the air: until the invalidation, old or new values are both legal."""
    tb = TB(dut)
    rng = random.Random(tb.seed)
    world = RandomSystem(tb.memory, rng, devices=10, **SYSTEMS["lvl2"])
    apply_stress(tb, stress)
    await tb.reset()
    tb.configure(world.ddtp())
    rounds = max(4, TRANSACTIONS // 60)
    changes = 0
    for _ in range(rounds):
        change = random_table_change(world, rng)
        if change is None:
            continue
        changes += 1
        await tb.translate_all(change.probes + world.requests(10))  # the old values, cached
        others = [r for r in world.requests(40) if r.device_id != change.device_id]
        traffic = cocotb.start_soon(tb.translate_all(others))
        await ClockCycles(dut.clk, rng.randrange(2, 40))
        for addr, value in change.stores:
            tb.write64(addr, value)
        await invalidate_under_traffic(tb, change.commands)
        after = change.probes + [r for r in world.requests(10) if r.device_id != change.device_id]
        if tb._batch_done is not None and not tb._batch_done.is_set():
            for index, request in enumerate(after, start=len(others)):
                tb.driver.send(request, index)  # joins the batch still in flight
            await traffic
        else:
            await traffic
            await tb.translate_all(after)
        tb.log.info("changed %s of device %#x", change.what, change.device_id)
    figures = tb.report()
    invariants = figures["invariants"]
    tb.log.info("%d table changes; invalidations completed %s; freshness checked %d",
                changes, invariants["invalidations"], invariants["freshness"]["checked"])
    assert invariants["invalidations"]["completed"] >= changes
    assert invariants["freshness"]["checked"] >= changes, "no request was judged fresh"


@cocotb.test()
async def waveform_hit_and_miss(dut):
    """A short story for the waveform: a miss (context fetch, 3-level walk), then hits on
    the same page that overtake a second miss. ``python -m tb.runner tb.tests.test_core_basic
    --waves --testcase waveform_hit_and_miss`` then ``make waves``."""
    memory = Memory()
    alloc = FrameAllocator(memory)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL2, extended=extended_dc())
    table = PageTable(memory, alloc, arch.SV39)
    table.map(0x4000_0000, 0x9_0000_0000)
    table.map(0x4000_1000, 0x9_0007_0000)
    ddt.install(0x42, DeviceContext(tc=Tc.V.put(1), ta=Ta.PSCID.put(7), fsc=table.atp()))
    tb = TB(dut, memory)
    await tb.reset()
    tb.configure(ddt.ddtp())
    tb.responder.latency = 4
    first = Request(device_id=0x42, iova=0x4000_0010, access=arch.Access.READ)
    await tb.translate_all([first])  # miss: DDT walk, DC, then 3 PTE reads
    second_page = Request(device_id=0x42, iova=0x4000_1020, access=arch.Access.WRITE)
    hits = [Request(device_id=0x42, iova=0x4000_0100 + 8 * i) for i in range(6)]
    results = await tb.translate_all([second_page] + hits)  # hits answer before the miss
    tb.report()
    assert all(r.ok for _, r in results)


# --------------------------------------------------------------------------- #
# Every fault cause the RTL can produce, one directed trigger each
# --------------------------------------------------------------------------- #
#: The causes the directed triggers below cover with a first stage only. The G-stage's
#: and MSI translation's causes (guest-page faults, 261-263/270) are triggered against
#: the model in tests/test_rtl_gstage.py and tests/test_rtl_msi.py; ATS is not
#: implemented; 272 is never reached.
FAULT_CAUSES_RTL_CAN_REPORT = frozenset({
    arch.Cause.ALL_INBOUND_DISALLOWED, arch.Cause.DDT_LOAD_ACCESS_FAULT,
    arch.Cause.DDT_ENTRY_NOT_VALID, arch.Cause.DDT_ENTRY_MISCONFIGURED,
    arch.Cause.TRANSACTION_TYPE_DISALLOWED, arch.Cause.PDT_ENTRY_LOAD_ACCESS_FAULT,
    arch.Cause.PDT_ENTRY_NOT_VALID, arch.Cause.PDT_ENTRY_MISCONFIGURED,
    arch.Cause.DDT_DATA_CORRUPTION, arch.Cause.PDT_DATA_CORRUPTION,
    arch.Cause.INSTRUCTION_ACCESS_FAULT, arch.Cause.READ_ACCESS_FAULT,
    arch.Cause.WRITE_ACCESS_FAULT, arch.Cause.INSTRUCTION_PAGE_FAULT,
    arch.Cause.READ_PAGE_FAULT, arch.Cause.WRITE_PAGE_FAULT, arch.Cause.PT_DATA_CORRUPTION,
})


@dataclass
class Trigger:
    """One directed request and the cause its setup is built to exercise (None: a success
    that shows the setup around the faulty entries is sound)."""

    name: str
    request: Request
    cause: int | None


def cause_text(cause: int | None) -> str:
    return "success" if cause is None else f"{int(cause)} {cause_name(cause)}"


def build_fault_system(memory: Memory, extended: bool) -> tuple[
        DeviceDirectory, list[Trigger], list[Trigger], list[tuple[int, str, str]]]:
    """A 2LVL DDT (of ``extended`` DCs or base ones) with one device (or process, or
    page) per fault trigger.

    Returns the DDT, the triggers for ddtp Off (sent first), the triggers for the DDT, and
    the memory errors to inject ``(address, kind, what)``: inject them only once every
    table is built (stores go through the fault machinery).
    """
    C, R, W, X = arch.Cause, arch.Access.READ, arch.Access.WRITE, arch.Access.EXECUTE
    S = Priv.SUPERVISOR
    alloc = FrameAllocator(memory)
    ddt = DeviceDirectory(memory, alloc, DdtpMode.LVL2, extended=extended)
    off: list[Trigger] = []
    triggers: list[Trigger] = []
    errors: list[tuple[int, str, str]] = []

    def trigger(name, cause, device_id, iova=0x1000, access=R, **request):
        triggers.append(Trigger(name, Request(device_id=device_id, iova=iova, access=access,
                                              **request), cause))

    # A sound Sv39 table for the contexts that fault before (or instead of) walking it.
    plain = PageTable(memory, alloc, arch.SV39)
    plain.map(0x1000, 0x9_0000_1000, x=True)
    pscid = iter(range(1, 1 << 20))

    def dc(tc=0, fsc=None, ta_bits=0, iohgatp=0):
        return DeviceContext(tc=Tc.V.put(1) | tc, iohgatp=iohgatp,
                             ta=Ta.PSCID.put(next(pscid)) | ta_bits,
                             fsc=plain.atp() if fsc is None else fsc)

    # Device ids by their place in the 2LVL DDT (§2.3): DDI[0] is 7 bits with base DCs, 6
    # with extended ones. The directed DCs share the leaf table of DDI[1] = 1; the DDTE
    # triggers below each have a DDI[1] of their own.
    ddi0_bits = arch.device_id_width(DdtpMode.LVL1, extended)

    def device_id(ddi1, ddi0=0):
        assert ddi0 >> ddi0_bits == 0, f"DDI[0] {ddi0:#x} is wider than {ddi0_bits} bits"
        return ddi1 << ddi0_bits | ddi0

    # ---- 256: ddtp Off (a phase of its own) -------------------------------------
    good = device_id(1)
    ddt.install(good, dc())
    off.append(Trigger("ddtp Off", Request(device_id=good, iova=0x1000), C.ALL_INBOUND_DISALLOWED))
    trigger("sound DC, mapped page", None, good)

    # ---- 257 / 258 / 268: the DC itself --------------------------------------------
    ddt.install(device_id(1, 1), DeviceContext(tc=0, fsc=plain.atp()))
    trigger("DC V=0", C.DDT_ENTRY_NOT_VALID, device_id(1, 1))
    # Errors in dwords 1, 2 and the last one: 3 (base) or 7 (extended, the reserved dword
    # after msi_addr_pattern), which a fetch that read too few dwords would miss.
    last = ddt.dc_size - 8
    for ddi0, offset, kind, cause in ((2, 8, "access", C.DDT_LOAD_ACCESS_FAULT),
                                      (3, 16, "poison", C.DDT_DATA_CORRUPTION),
                                      (4, last, "access", C.DDT_LOAD_ACCESS_FAULT)):
        did = device_id(1, ddi0)
        errors.append((ddt.install(did, dc()) + offset, kind,
                       f"DC of device {did:#x} (dword {offset // 8})"))
        trigger(f"DC {'load access fault' if kind == 'access' else 'poisoned'}, dword "
                f"{offset // 8}", cause, did)

    # ---- 259: one DC per §3.7 rule the RTL checks ------------------------------------
    misconfigured = {
        "DC tc reserved bit 12": dc(tc=1 << 12),
        "DC tc reserved bit 40": dc(tc=1 << 40),
        "DC ta reserved bit 0": dc(ta_bits=1),
        "DC ta RCID without QOSID": dc(ta_bits=Ta.RCID.put(3)),
        "DC iosatp reserved bits [59:44]": dc(fsc=plain.atp() | 1 << 50),
        "DC iosatp MODE reserved (1)": dc(fsc=Fsc.MODE.put(1) | Fsc.PPN.put(plain.root >> 12)),
        "DC iosatp MODE custom (14)": dc(fsc=Fsc.MODE.put(14)),
        "DC EN_ATS without ATS": dc(tc=Tc.EN_ATS.put(1)),
        "DC T2GPA without EN_ATS": dc(tc=Tc.T2GPA.put(1)),
        "DC DPE with PDTV=0": dc(tc=Tc.DPE.put(1)),
        "DC pdtp MODE reserved (5)": dc(tc=Tc.PDTV.put(1), fsc=Fsc.MODE.put(5)),
        # G-stage root: 16 KiB (4 pages) aligned; a mode the capabilities lack.
        "DC iohgatp Sv39x4 root not 16 KiB aligned": dc(
            iohgatp=Iohgatp.MODE.put(arch.SV39X4) | Iohgatp.PPN.put(0x80001)),
        "DC iohgatp MODE reserved (7)": dc(iohgatp=Iohgatp.MODE.put(7)),
        "DC SBE=1 with fctl.BE=0": dc(tc=Tc.SBE.put(1)),
        "DC SXL=1": dc(tc=Tc.SXL.put(1)),
    }
    assert len(misconfigured) <= 0x20, "DDI[0] 0x30 and up belong to the devices below"
    for index, (name, context) in enumerate(misconfigured.items()):
        did = device_id(1, 0x10 + index)
        ddt.install(did, context)
        trigger(name, C.DDT_ENTRY_MISCONFIGURED, did)

    # ---- the non-leaf DDT entry: each trigger has a DDI[1] of its own -----------------
    ddt.set_raw_ddte(device_id(4), 1, 0)
    trigger("DDTE V=0", C.DDT_ENTRY_NOT_VALID, device_id(4))
    leaf_table = ddt.install(device_id(5), dc()) & ~0xFFF
    pointer = Ddte.V.put(1) | Ddte.PPN.put(leaf_table >> 12)
    ddt.set_raw_ddte(device_id(5), 1, pointer | 1 << 60)
    trigger("DDTE reserved bit 60", C.DDT_ENTRY_MISCONFIGURED, device_id(5))
    for ddi1, kind, cause in ((6, "access", C.DDT_LOAD_ACCESS_FAULT),
                              (7, "poison", C.DDT_DATA_CORRUPTION)):
        did = device_id(ddi1)
        ddt.install(did, dc())
        errors.append((ddt.root + ddi1 * 8, kind, f"DDTE on device {did:#x}'s path"))
        trigger(f"DDTE {'load access fault' if kind == 'access' else 'poisoned'}", cause, did)

    # ---- 260: transaction types a (sound) context does not allow ----------------------
    trigger("device_id wider than a 2LVL DDT", C.TRANSACTION_TYPE_DISALLOWED,
            1 << arch.device_id_width(DdtpMode.LVL2, extended) | good)
    trigger("Translated request, EN_ATS=0", C.TRANSACTION_TYPE_DISALLOWED, good,
            addr_type=AddrType.TRANSLATED)
    trigger("ATS Translation Request, EN_ATS=0", C.TRANSACTION_TYPE_DISALLOWED, good,
            addr_type=AddrType.ATS_TRANSLATION_REQUEST)
    trigger("process_id with PDTV=0", C.TRANSACTION_TYPE_DISALLOWED, good, pv=True,
            process_id=1)

    # ---- process contexts: a PD8 PDT, one process per trigger -------------------------
    pd8 = ProcessDirectory(memory, alloc, PdtpMode.PD8)
    pd8_device = device_id(1, 0x30)
    ddt.install(pd8_device, dc(tc=Tc.PDTV.put(1), fsc=pd8.pdtp()))

    def pc(ta=0, fsc=None, v=1, ens=1):
        return ProcessContext(ta=PcTa.V.put(v) | PcTa.ENS.put(ens) | PcTa.PSCID.put(next(pscid))
                              | ta, fsc=plain.atp() if fsc is None else fsc)

    processes = [
        ("sound PC, mapped page", None, pc(), {}),
        ("PC V=0", C.PDT_ENTRY_NOT_VALID, pc(v=0), {}),
        ("PC ta reserved bit 3", C.PDT_ENTRY_MISCONFIGURED, pc(ta=1 << 3), {}),
        ("PC ta reserved bit 40", C.PDT_ENTRY_MISCONFIGURED, pc(ta=1 << 40), {}),
        ("PC fsc reserved bits [59:44]", C.PDT_ENTRY_MISCONFIGURED,
         pc(fsc=plain.atp() | 1 << 44), {}),
        ("PC fsc MODE reserved (2)", C.PDT_ENTRY_MISCONFIGURED, pc(fsc=Fsc.MODE.put(2)), {}),
        ("Supervisor request, PC ENS=0", C.TRANSACTION_TYPE_DISALLOWED, pc(ens=0),
         {"priv": S}),
    ]
    for pid, (name, cause, context, extra) in enumerate(processes, start=1):
        pd8.install(pid, context)
        trigger(name, cause, pd8_device, pv=True, process_id=pid, **extra)
    for pid, kind, cause in ((0x20, "access", C.PDT_ENTRY_LOAD_ACCESS_FAULT),
                             (0x21, "poison", C.PDT_DATA_CORRUPTION)):
        errors.append((pd8.install(pid, pc()) + 8 * (pid & 1), kind,
                       f"PC of device {pd8_device:#x} process {pid:#x}"))
        trigger(f"PC {'load access fault' if kind == 'access' else 'poisoned'}", cause,
                pd8_device, pv=True, process_id=pid)
    trigger("process_id wider than PD8", C.TRANSACTION_TYPE_DISALLOWED, pd8_device, pv=True,
            process_id=0x1_01)

    # ---- the non-leaf PDT entry: a PD17 PDT, one PDI[1] per trigger ---------------------
    pd17 = ProcessDirectory(memory, alloc, PdtpMode.PD17)
    pd17_device = device_id(1, 0x31)
    ddt.install(pd17_device, dc(tc=Tc.PDTV.put(1), fsc=pd17.pdtp()))
    pd17.set_raw_pdte(0x100, 1, 0)
    trigger("PDTE V=0", C.PDT_ENTRY_NOT_VALID, pd17_device, pv=True, process_id=0x100)
    pc_table = pd17.install(0x200, pc()) & ~0xFFF
    pd17.set_raw_pdte(0x200, 1, Ddte.V.put(1) | Ddte.PPN.put(pc_table >> 12) | 1 << 1)
    trigger("PDTE reserved bit 1", C.PDT_ENTRY_MISCONFIGURED, pd17_device, pv=True,
            process_id=0x200)
    for pid, kind, cause in ((0x300, "access", C.PDT_ENTRY_LOAD_ACCESS_FAULT),
                             (0x400, "poison", C.PDT_DATA_CORRUPTION)):
        pd17.install(pid, pc())
        errors.append((pd17.root + arch.pdi(pid)[1] * 8, kind,
                       f"PDTE on device {pd17_device:#x} process {pid:#x}'s path"))
        trigger(f"PDTE {'load access fault' if kind == 'access' else 'poisoned'}", cause,
                pd17_device, pv=True, process_id=pid)

    # ---- first-stage PTEs: one Sv39 table (SADE=0), one page per trigger ----------------
    pt = PageTable(memory, alloc, arch.SV39)
    pte_device = device_id(1, 0x38)
    ddt.install(pte_device, dc(fsc=pt.atp()))

    def pte_trigger(name, cause, iova, access):
        trigger(name, cause, pte_device, iova=iova, access=access)

    pt.map(0xD000, 0x7_0000_D000, x=True)
    pte_trigger("sound leaf", None, 0xD123, R)
    for iova, access, cause in ((0x1000, X, C.INSTRUCTION_ACCESS_FAULT),
                                (0x2000, R, C.READ_ACCESS_FAULT),
                                (0x3000, W, C.WRITE_ACCESS_FAULT)):
        errors.append((pt.map(iova, 0x7_0000_0000 + iova, x=True), "access",
                       f"leaf PTE of va {iova:#x}"))
        pte_trigger(f"leaf PTE load access fault, {access.name}", cause, iova, access)
    # A non-leaf PTE too: each in a 1 GiB region (VPN[2]) of its own.
    pt.map(0x8000_1000, 0x7_1000_1000)
    errors.append((pt.walk_path(0x8000_1000)[1][0], "access", "level-1 PTE of va 0x80001000"))
    pte_trigger("level-1 PTE load access fault, READ", C.READ_ACCESS_FAULT, 0x8000_1000, R)
    errors.append((pt.map(0xA000, 0x7_0000_A000), "poison", "leaf PTE of va 0xa000"))
    pte_trigger("leaf PTE poisoned", C.PT_DATA_CORRUPTION, 0xA000, W)
    pt.map(0xC000_1000, 0x7_2000_1000, x=True)
    errors.append((pt.walk_path(0xC000_1000)[0][0], "poison", "root PTE of va 0xc0001000"))
    pte_trigger("root PTE poisoned", C.PT_DATA_CORRUPTION, 0xC000_1000, X)

    leaf = Pte.V.mask | Pte.U.mask | Pte.A.mask | Pte.D.mask
    pt.map(0x4000, 0x7_0000_4000)
    pt.unmap(0x4000)  # V=0, the rest kept
    pte_trigger("leaf V=0", C.READ_PAGE_FAULT, 0x4000, R)
    pt.set_raw(0x5000, 0, leaf | Pte.W.mask | Pte.PPN.put(0x7_0000_5))
    pte_trigger("leaf W without R", C.WRITE_PAGE_FAULT, 0x5000, W)
    pt.set_raw(0x6000, 0, leaf | Pte.R.mask | Pte.X.mask | Pte.PPN.put(0x7_0000_6) | 1 << 54)
    pte_trigger("leaf reserved bit 54", C.INSTRUCTION_PAGE_FAULT, 0x6000, X)
    pt.set_raw(0x6_0000_0000, 1, leaf | Pte.R.mask | Pte.PPN.put(0x7_0000_1))
    pte_trigger("misaligned 2 MiB superpage", C.READ_PAGE_FAULT, 0x6_0000_0000, R)
    pt.map(0x7000, 0x7_0000_7000, x=True, u=False)
    pte_trigger("User execute from a U=0 page", C.INSTRUCTION_PAGE_FAULT, 0x7000, X)
    pt.map(0x8000, 0x7_0000_8000, a=False)
    pte_trigger("A=0 with SADE=0", C.READ_PAGE_FAULT, 0x8000, R)
    pt.map(0x9000, 0x7_0000_9000, d=False)
    pte_trigger("write, D=0 with SADE=0", C.WRITE_PAGE_FAULT, 0x9000, W)
    pt.map(0xB000, 0x7_0000_B000, w=False)
    pte_trigger("write to a read-only page", C.WRITE_PAGE_FAULT, 0xB000, W)
    pte_trigger("non-canonical IOVA (bit 45 of Sv39)", C.WRITE_PAGE_FAULT, 1 << 45, W)
    pt.map(0x5_0000_1000, 0x7_3000_1000)
    _, _, pointer = pt.walk_path(0x5_0000_1000)[1]
    pt.set_raw(0x5_0000_1000, 1, pointer | Pte.A.mask)
    pte_trigger("pointer with A set", C.READ_PAGE_FAULT, 0x5_0000_1000, R)

    # ---- Supervisor and the U bit: a PD8 PDT, SUM=0 and SUM=1 ---------------------------
    user_pages = PageTable(memory, alloc, arch.SV39)
    user_pages.map(0x1000, 0x7_4000_1000, x=True, u=True)
    supervisor_pdt = ProcessDirectory(memory, alloc, PdtpMode.PD8)
    supervisor_device = device_id(1, 0x39)
    ddt.install(supervisor_device, dc(tc=Tc.PDTV.put(1), fsc=supervisor_pdt.pdtp()))
    supervisor_pdt.install(1, pc(fsc=user_pages.atp()))
    supervisor_pdt.install(2, pc(ta=PcTa.SUM.put(1), fsc=user_pages.atp()))
    trigger("Supervisor read of a U=1 page, SUM=0", C.READ_PAGE_FAULT, supervisor_device,
            pv=True, process_id=1, priv=S)
    trigger("Supervisor execute from a U=1 page, SUM=1", C.INSTRUCTION_PAGE_FAULT,
            supervisor_device, access=X, pv=True, process_id=2, priv=S)
    return ddt, off, triggers, errors


@cocotb.test()
async def directed_fault_causes(dut):
    """Every cause the RTL can report, from one directed trigger each.

    One 2LVL DDT holds a device (or a process, or a page) per trigger: DDT, PDT and PTE
    entries that are invalid, misconfigured (several §3.7 / §4.4 rules), malformed, or
    unreadable (access faults and poison injected once the tables are built); requests
    a sound context does not allow. ddtp Off (256) is a phase of its own, first. The
    scoreboard judges every response and fault record against the model; on top, the
    causes in the RTL's responses must cover every cause listed, and each trigger must
    still produce the cause it was built for (or a success, for the few sound ones).
    """
    memory = Memory()
    ddt, off, triggers, errors = build_fault_system(memory, extended_dc())
    for addr, kind, what in errors:
        memory.inject_fault(addr, 8, kind)
    tb = TB(dut, memory)
    for addr, kind, what in errors:
        tb.log.info("memory error: %s at %#x (%s)", kind, addr, what)
    await tb.reset()
    tb.configure(ddtp_of(DdtpMode.OFF))
    results = await tb.translate_all([t.request for t in off])
    tb.configure(ddt.ddtp())
    results += await tb.translate_all([t.request for t in triggers])
    figures = tb.report()
    everything = off + triggers
    assert figures["checked"] == len(everything)

    tb.log.info("%-46s %-34s %s", "trigger", "built for", "RTL response (= model)")
    for trigger, (request, response) in zip(everything, results):
        tb.log.info("%-46s %-34s %s", trigger.name, cause_text(trigger.cause),
                    "success" if response.ok else cause_text(response.cause))
    seen = {response.cause for _, response in results if not response.ok}
    wanted = {trigger.cause for trigger in everything if trigger.cause is not None}
    missing = sorted(wanted - seen)
    assert not missing, ("no RTL response had cause " + ", ".join(map(cause_text, missing))
                         + f" (seed {tb.seed_text})")
    assert wanted >= FAULT_CAUSES_RTL_CAN_REPORT, (
        "the test no longer lists cause(s) "
        + ", ".join(map(cause_text, sorted(FAULT_CAUSES_RTL_CAN_REPORT - wanted))))
    astray = [f"{trigger.name} ({trigger.request}): built for {cause_text(trigger.cause)}, "
              f"got {'success' if response.ok else cause_text(response.cause)}"
              for trigger, (_, response) in zip(everything, results)
              if (None if response.ok else response.cause) != trigger.cause]
    assert not astray, ("triggers that no longer exercise their cause (the model agreed "
                        "with the RTL on each):\n  " + "\n  ".join(astray))
    tb.log.info("%d triggers, causes seen: %s", len(everything),
                ", ".join(map(cause_text, sorted(seen))))
