"""cocotb tests of the whole IOMMU (``rtl/iommu.py``): the OS driver model programs it.

Every test runs the RTL and the reference model (``models/iommu.py``) side by side
behind ``tb.rtl_iommu.Lockstep``: the same register writes go to both, every
register read and translation is compared, and at the end both memories (fault
queue records, IOFENCE.C data, A/D bits) must be identical. Nothing expected is
written by hand: the model judges.

* ``driver_programs_rtl_and_model_alike``: bring-up, domains on Sv39/Sv48, a
  scatter-gather list mapped as one IOVA range, 2 MiB and 1 GiB pages, hardware A/D,
  strict and deferred unmap, fault draining.
* ``queue_error_paths``: an illegal command (cmd_ill), a command fetch from faulting
  memory (cqmf), a fault queue overflow (fqof), a fault record write to faulting memory
  (fqmf), IOFENCE.C with WSI and AV, and the ipsr bits and wired interrupt lines each
  raises, cleared by RW1C.
* ``map_unmap_race``: devices translate continuously while the driver maps, unmaps and
  invalidates; after each IOFENCE.C completes, no request sent later may translate an
  unmapped page (0 stale hits), and every success maps to the page's own frame.
* ``command_costs``: cycles per IOTINVAL / IOFENCE.C and strict vs deferred unmap cost
  (``build/bench/control.json``), a measurement, not a check.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.task import bridge

from models import arch
from models.arch import Cqcsr, Fqcsr, Ipsr, Reg
from models.memory import AccessFault, FrameAllocator, Memory
from models.os.driver import DriverError, IommuDriver
from models.transaction import Request
from tb.rtl_iommu import Lockstep, MirrorMemory, RtlIommu, model_iommu
from tb.top_env import TopTB

PAGE = arch.PAGE_SIZE
DEVICE, OTHER = 0x10, 0x211


def make_system(dut, *, latency=2, stress=False):
    model_memory = Memory()
    rtl_memory = MirrorMemory(model_memory)
    tb = TopTB(dut, rtl_memory, latency=latency)
    if stress:
        tb.stress()
    lock = Lockstep(RtlIommu(tb), model_iommu(tb.params, model_memory), rtl_memory,
                    model_memory)
    return tb, lock


def export_figures(checked: int, mismatches: int, violations: int = 0, **extra) -> None:
    """One line for ``make regress``'s summary (``tests/regress.py``), if it asked."""
    from tb.env import FIGURES_ENV

    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"checked": checked, "mismatches": mismatches,
                                "invariants": {"violations": violations}, **extra}) + "\n")


def finish(tb: TopTB, lock: Lockstep) -> None:
    tb.check_protocol()
    diffs = lock.compare_memories()
    assert not diffs, (f"RTL and model memories differ (seed {tb.seed_text}):\n  "
                       + "\n  ".join(diffs))
    tb.log.info("lockstep: %d register reads, %d writes, %d translations, %d cycles; "
                "seed %s", lock.register_reads, lock.register_writes, lock.translations,
                tb.cycle, tb.seed_text)


# --------------------------------------------------------------------------- #
@cocotb.test()
async def driver_programs_rtl_and_model_alike(dut):
    tb, lock = make_system(dut, stress=True, latency=(1, 8))
    await tb.reset()
    rng = random.Random(tb.seed)
    memory = lock.rtl_memory

    def os_code():
        drv = IommuDriver(lock, memory, FrameAllocator(memory, base=0x4000_0000, size=1 << 26))
        drv.init()
        dom = drv.create_domain()
        big = drv.create_domain(arch.SV48)
        drv.attach(DEVICE, dom)
        drv.attach(OTHER, big, sade=True)
        data = FrameAllocator(memory, base=0x1_0000_0000, size=1 << 26)
        frames = [data.alloc() for _ in range(16)]
        rng.shuffle(frames)
        sg = drv.map_sg(dom, frames[:12], r=True, w=True)
        ro = drv.map_sg(dom, frames[12:], r=True, w=False)
        huge, _pa = drv.map_buffer(big, 4 << 20, page=2 << 20, r=True, w=True)
        giga = 1 << 32
        big.table.map(giga, 1 << 34, 1 << 30, r=True, w=True, a=False, d=False)

        def dma(device, iova, n, access=arch.Access.READ):
            return lock.translate_all([Request(device_id=device, iova=iova + i * 0x5F8,
                                               access=access) for i in range(n)])

        ok = dma(DEVICE, sg, 40) + dma(DEVICE, sg, 20, arch.Access.WRITE)
        assert all(r.ok for r in ok), "DMA inside the mapped buffer faulted"
        assert not any(r.ok for r in dma(DEVICE, ro, 4, arch.Access.WRITE))
        assert not any(r.ok for r in dma(DEVICE, sg + 12 * PAGE + 0x10000, 3))
        assert all(r.ok for r in dma(OTHER, huge, 16) + dma(OTHER, giga + 0x123458, 8,
                                                             arch.Access.WRITE))
        assert not any(r.ok for r in dma(0x3FF, sg, 2))  # a device with no context
        drv.unmap(dom, sg, 4 * PAGE)  # strict: IOTINVAL.VMA x4 + IOFENCE.C
        assert not any(r.ok for r in dma(DEVICE, sg, 6))
        drv.deferred = True
        drv.unmap(dom, sg + 4 * PAGE, 4 * PAGE)
        drv.flush()
        assert not any(r.ok for r in dma(DEVICE, sg + 4 * PAGE, 6))
        got = drv.drain_faults()
        assert got, "faults happened but none were drained"
        for reg in (Reg.CQH, Reg.CQT, Reg.FQH, Reg.FQT, Reg.CQCSR, Reg.FQCSR, Reg.IPSR):
            drv.rd(reg, 4)
        drv.rd(Reg.DDTP)
        drv.rd(Reg.CAPABILITIES)
        return len(got)

    faults = await bridge(os_code)()
    await tb.quiesce()
    finish(tb, lock)
    tb.log.info("%d fault records drained", faults)


# --------------------------------------------------------------------------- #
@cocotb.test()
async def queue_error_paths(dut):
    tb, lock = make_system(dut)
    await tb.reset()
    memory = lock.rtl_memory

    def os_code():
        drv = IommuDriver(lock, memory, FrameAllocator(memory, base=0x4000_0000, size=1 << 26),
                          queue_log2=2)
        # Wired interrupts (fctl may change only while the queues are off: before init).
        drv.wr(Reg.FCTL, arch.Fctl.WSI.put(1), 4)
        wired = bool(arch.Fctl.WSI.get(drv.rd(Reg.FCTL, 4)))
        drv.init()
        dom = drv.create_domain()
        drv.attach(DEVICE, dom)
        csr = lambda: drv.rd(Reg.CQCSR, 4)
        drv.wr(Reg.ICVEC, 0x3210)  # civ=0, fiv=1, pmiv=2, piv=3
        drv.wr(Reg.CQCSR, Cqcsr.CQEN.mask | Cqcsr.CIE.mask, 4)
        drv.wr(Reg.FQCSR, Fqcsr.FQEN.mask | Fqcsr.FIE.mask, 4)

        # 1. An illegal command stops the queue at that command with cmd_ill.
        try:
            drv.submit([arch.Cmd.OPCODE.put(0x3F)])
            raise AssertionError("an illegal command did not stop the queue")
        except DriverError:
            pass
        assert Cqcsr.CMD_ILL.get(csr())
        assert Ipsr.CIP.get(drv.rd(Reg.IPSR, 4))
        assert lock.wired_interrupts == ({0} if wired else set())
        # Software repairs the bad command in place (cqh points at it), then clears
        # cmd_ill (RW1C) and cip; the queue resumes there.
        head = drv.rd(Reg.CQH, 4)
        memory.write(drv.cq_base + head * arch.COMMAND_SIZE,
                     arch.command_bytes(arch.iofence_c()), who="os")
        drv.wr(Reg.CQH, 0, 4)  # cqh is read-only: the write is ignored by both
        drv.wr(Reg.CQCSR, Cqcsr.CQEN.mask | Cqcsr.CIE.mask | Cqcsr.CMD_ILL.mask, 4)
        drv.wr(Reg.IPSR, Ipsr.CIP.mask, 4)
        lock.process_commands()
        drv.rd(Reg.CQH, 4)
        assert not Ipsr.CIP.get(drv.rd(Reg.IPSR, 4))
        assert lock.wired_interrupts == set()

        # 2. IOFENCE.C with AV writes its data; a fence writing to faulting memory: cqmf.
        flag = drv.alloc.alloc()
        drv.submit([arch.iofence_c(av=True, data=0xC0FFEE, addr=flag)])
        bad = 0x7_0000_0000
        memory.inject_fault(bad, PAGE)
        try:
            drv.submit([arch.iofence_c(av=True, data=1, addr=bad)])
        except DriverError:
            pass
        assert Cqcsr.CQMF.get(csr())
        drv.rd(Reg.CQH, 4)
        drv.rd(Reg.IPSR, 4)

        # 3. Re-enable the CQ over faulting memory: the fetch itself faults (cqmf).
        drv.wr(Reg.CQCSR, 0, 4)
        drv.rd(Reg.CQCSR, 4)
        drv.wr(Reg.CQB, arch.QueueBase.PPN.put(bad >> 12) | 1)
        drv.wr(Reg.CQCSR, Cqcsr.CQEN.mask | Cqcsr.CQMF.mask, 4)
        drv.cq_base = bad
        drv.wr(Reg.CQT, 1, 4)
        lock.process_commands()
        assert Cqcsr.CQMF.get(csr())
        drv.rd(Reg.CQH, 4)

        # 4. Fault queue overflow: 4 entries hold 3 records; then fqof, then nothing.
        for i in range(6):
            lock.translate(Request(device_id=DEVICE, iova=0xdead_0000 + i * PAGE))
        fq = drv.rd(Reg.FQCSR, 4)
        assert Fqcsr.FQOF.get(fq), f"fault queue did not overflow: fqcsr={fq:#x}"
        drv.rd(Reg.FQT, 4)
        assert Ipsr.FIP.get(drv.rd(Reg.IPSR, 4))
        assert 1 in lock.wired_interrupts or not wired
        drv.drain_faults()  # also clears fqof
        drv.rd(Reg.FQCSR, 4)
        drv.wr(Reg.IPSR, Ipsr.FIP.mask, 4)
        assert not Ipsr.FIP.get(drv.rd(Reg.IPSR, 4))

        # 5. A fault record written to faulting memory: fqmf, record lost.
        drv.wr(Reg.FQCSR, 0, 4)
        drv.rd(Reg.FQCSR, 4)
        drv.wr(Reg.FQB, arch.QueueBase.PPN.put((bad >> 12) + 1) | 1)
        drv.wr(Reg.FQH, 0, 4)
        drv.wr(Reg.FQCSR, Fqcsr.FQEN.mask | Fqcsr.FIE.mask, 4)
        memory.inject_fault(bad + PAGE, PAGE)
        lock.translate(Request(device_id=DEVICE, iova=0xbeef_0000))
        assert Fqcsr.FQMF.get(drv.rd(Reg.FQCSR, 4))
        drv.rd(Reg.FQT, 4)
        assert Ipsr.FIP.get(drv.rd(Reg.IPSR, 4))  # fqmf raises fip again
        assert 1 in lock.wired_interrupts or not wired

    await bridge(os_code)()
    await tb.quiesce()
    finish(tb, lock)


# --------------------------------------------------------------------------- #
@cocotb.test()
async def map_unmap_race(dut):
    """Devices translate while the OS maps and unmaps; fenced pages never translate."""
    operations = int(os.environ.get("RACE_OPERATIONS", "600"))
    memory = Memory()
    tb = TopTB(dut, memory, latency=(1, 10))
    await tb.reset()
    rng = random.Random(tb.seed)
    rtl = RtlIommu(tb)
    pages: dict[int, int] = {}  # iova page -> frame, every page ever mapped
    fenced: dict[int, int] = {}  # iova page -> cycle its unmap's IOFENCE.C was seen done
    stats = {"translations": 0, "ok": 0, "faults": 0, "stale": 0, "wrong_frame": 0,
             "maps": 0, "unmaps": 0, "fences": 0}
    problems: list[str] = []

    def on_response(request, response, sent, cycle):
        stats["translations"] += 1
        page = request.iova & ~(PAGE - 1)
        if not response.ok:
            stats["faults"] += 1
            return
        stats["ok"] += 1
        if page in fenced and sent is not None and sent > fenced[page]:
            stats["stale"] += 1
            problems.append(f"stale hit: {request} sent at cycle {sent}, unmap fenced at "
                            f"cycle {fenced[page]}, got {response}")
        elif response.spa & ~(PAGE - 1) != pages.get(page):
            stats["wrong_frame"] += 1
            problems.append(f"{request} translated to {response.spa:#x}, page maps "
                            f"{pages.get(page, 0):#x}")

    tb.on_response = on_response
    running = True

    async def devices():
        while running:
            if len(tb.driver.queue) < 4 and pages:
                keys = list(pages)
                # Mostly recent pages (hits and fresh misses), some fenced ones.
                page = keys[-1 - min(int(rng.expovariate(0.1)), len(keys) - 1)]
                tb.send(Request(device_id=DEVICE, iova=page + rng.randrange(0, PAGE, 8),
                                access=rng.choice([arch.Access.READ, arch.Access.WRITE])))
            await tb.cycles(1)

    def os_code():
        drv = IommuDriver(rtl, memory, FrameAllocator(memory, base=0x4000_0000, size=1 << 27))
        drv.init()
        dom = drv.create_domain()
        drv.attach(DEVICE, dom)
        data = FrameAllocator(memory, base=0x1_0000_0000, size=1 << 30)
        live: list[int] = []
        for _ in range(operations):
            op = rng.random()
            if op < 0.45 or len(live) < 4:
                n = rng.randint(1, 4)
                frames = [data.alloc() for _ in range(n)]
                iova = drv.map_sg(dom, frames, r=True, w=True)
                for i, frame in enumerate(frames):
                    pages[iova + i * PAGE] = frame
                    live.append(iova + i * PAGE)
                stats["maps"] += n
            elif op < 0.9:
                victims = rng.sample(live, rng.randint(1, min(4, len(live))))
                drv.deferred = rng.random() < 0.4
                for page in victims:
                    live.remove(page)
                    drv.unmap(dom, page, PAGE)
                if drv.deferred:
                    drv.flush()
                done = rtl.cycle  # the driver saw the IOFENCE.C complete by now
                for page in victims:
                    fenced[page] = done
                stats["unmaps"] += len(victims)
                stats["fences"] += 1
            else:
                rtl.tick(rng.randint(1, 40))
        return drv.commands_sent

    traffic = cocotb.start_soon(devices())
    commands = await bridge(os_code)()
    running = False
    await traffic
    await tb.cycles(200)
    tb.check_protocol()
    tb.log.info("race: %s, %d commands (seed %s)", stats, commands, tb.seed_text)
    Path("race_stats.json").write_text(json.dumps({**stats, "commands": commands,
                                                   "seed": tb.seed_text}))
    export_figures(stats["translations"] + stats["maps"] + stats["unmaps"],
                   stats["wrong_frame"], stats["stale"], race=stats)
    assert stats["translations"] > operations, "the devices hardly translated anything"
    assert stats["unmaps"] and stats["ok"] and stats["faults"], stats
    assert not problems, f"{len(problems)} violations (seed {tb.seed_text}):\n  " + \
        "\n  ".join(problems[:10])


# --------------------------------------------------------------------------- #
@cocotb.test()
async def command_costs(dut):
    """Cycles per command and the cost of strict vs deferred invalidation."""
    memory = Memory()
    tb = TopTB(dut, memory, latency=10)
    await tb.reset()
    rtl = RtlIommu(tb)
    pages = int(os.environ.get("COST_PAGES", "32"))
    result = {}

    def os_code():
        drv = IommuDriver(rtl, memory, FrameAllocator(memory, base=0x4000_0000, size=1 << 27),
                          queue_log2=8)
        drv.init()
        dom = drv.create_domain()
        drv.attach(DEVICE, dom)
        data = FrameAllocator(memory, base=0x1_0000_0000, size=1 << 28)

        def timed(commands):
            start = rtl.cycle
            drv.submit(commands)
            return rtl.cycle - start

        # The CPU's polling adds MMIO round trips: subtract the cost of an empty submit.
        empty = timed([])
        for name, cmd in (("IOTINVAL.VMA", arch.iotinval(arch.IotinvalFunc.VMA, av=True,
                                                          pscv=True, pscid=dom.pscid,
                                                          addr=0x1000_0000)),
                          ("IODIR.INVAL_DDT", arch.iodir(arch.IodirFunc.INVAL_DDT, dv=True,
                                                         did=DEVICE)),
                          ("IOFENCE.C", arch.iofence_c())):
            n = 64
            result[f"{name} cycles/command"] = round((timed([cmd] * n) - empty) / n, 2)
        for mode in ("strict", "deferred"):
            drv.deferred = mode == "deferred"
            iova = drv.map_sg(dom, [data.alloc() for _ in range(pages)], r=True, w=True)
            start = rtl.cycle
            for i in range(pages):
                drv.unmap(dom, iova + i * PAGE, PAGE)
            drv.flush()
            result[f"unmap {pages} pages {mode}: cycles"] = rtl.cycle - start
        result["fences"] = drv.fences

    await bridge(os_code)()
    tb.log.info("command costs: %s", result)
    Path(os.environ.get("BENCH_OUT", "control_costs.json")).write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------- #
def _register_space() -> list[tuple[int, int]]:
    """(offset, size) of every architectural register, 8-byte ones also as 4-byte halves."""
    regs = [(int(r), s) for r, s in arch.REG_SIZE.items()]
    for n in range(1, 8):
        regs += [(arch.iohpmctr(n), 8), (arch.iohpmevt(n), 8)]
    for v in range(16):
        a, d, c = arch.msi_cfg(v)
        regs += [(a, 8), (d, 4), (c, 4)]
    halves = [(o + h, 4) for o, s in regs if s == 8 for h in (0, 4)]
    return regs + halves


def _fuzz_value(rng: random.Random, size: int) -> int:
    bits = 8 * size
    kind = rng.random()
    if kind < 0.3:
        return rng.getrandbits(bits)
    if kind < 0.5:
        return 1 << rng.randrange(bits)
    if kind < 0.6:
        return (1 << bits) - 1
    return rng.getrandbits(min(bits, 12))  # small values: modes, enables, indices


@cocotb.test()
async def fuzz_registers_commands_traffic(dut):
    """Random register writes (WARL fields), legal and illegal commands, memory faults
    under the queues, and translations, all in lockstep with the model."""
    operations = int(os.environ.get("FUZZ_OPERATIONS", "250"))
    tb, lock = make_system(dut, stress=True, latency=(1, 8))
    await tb.reset()
    rng = random.Random(tb.seed)
    memory = lock.rtl_memory
    space = _register_space()
    stats: dict[str, int] = {}

    def count(what):
        stats[what] = stats.get(what, 0) + 1

    def os_code():
        drv = IommuDriver(lock, memory, FrameAllocator(memory, base=0x4000_0000, size=1 << 26),
                          queue_log2=3)
        drv.init()
        dom = drv.create_domain()
        drv.attach(DEVICE, dom, sade=True)
        data = FrameAllocator(memory, base=0x1_0000_0000, size=1 << 26)
        iova = drv.map_sg(dom, [data.alloc() for _ in range(8)], r=True, w=True)
        for _ in range(operations):
            op = rng.random()
            if op < 0.25:
                offset, size = rng.choice(space)
                if offset in (Reg.IOHPMCYCLES, Reg.IOHPMCYCLES + 4):
                    continue  # the RTL counts real cycles: an overflow would not match
                lock.write_register(offset, size, _fuzz_value(rng, size))
                count("register writes")
            elif op < 0.45:
                offset, size = rng.choice(space)
                lock.read_register(offset, size)
                count("register reads")
            elif op < 0.65:
                csr = lock.read_register(Reg.CQCSR, 4)
                if not Cqcsr.CQON.get(csr):
                    continue
                if csr & (Cqcsr.CMD_ILL.mask | Cqcsr.CQMF.mask):
                    lock.write_register(Reg.CQCSR, 4, csr)  # RW1C: clear the errors
                    count("queue restarts")
                base = arch.QueueBase.PPN.get(lock.model.cq.base) << 12
                entries = lock.model.cq.entries
                tail = lock.read_register(Reg.CQT, 4)
                if (tail + 1) % entries == lock.read_register(Reg.CQH, 4):
                    continue
                choice = rng.random()
                if choice < 0.4:
                    cmd = arch.iotinval(rng.choice(list(arch.IotinvalFunc)), gv=rng.random() < .3,
                                        av=rng.random() < .5, pscv=rng.random() < .5,
                                        gscid=rng.getrandbits(4), pscid=rng.randrange(1, 4),
                                        addr=iova + rng.randrange(8) * PAGE)
                elif choice < 0.6:
                    cmd = arch.iodir(rng.choice(list(arch.IodirFunc)), dv=rng.random() < .7,
                                     did=rng.choice([DEVICE, OTHER]), pid=rng.getrandbits(2))
                elif choice < 0.8:
                    cmd = arch.iofence_c(av=rng.random() < .5, wsi=rng.random() < .3,
                                         data=rng.getrandbits(32),
                                         addr=0x4000_0000 + rng.randrange(0, 1 << 20, 4))
                else:
                    cmd = rng.getrandbits(128)  # mostly illegal
                try:
                    memory.write(base + tail * arch.COMMAND_SIZE, arch.command_bytes(cmd),
                                 who="os")
                except AccessFault:  # the queue sits in memory the fuzzer made faulty
                    count("commands lost to a faulty queue page")
                    continue
                except ValueError:  # a fuzzed cqb put the queue beyond the 56-bit space
                    count("commands lost to a queue beyond PAS")
                    continue
                lock.write_register(Reg.CQT, 4, (tail + 1) % entries)
                lock.process_commands()
                lock.read_register(Reg.CQH, 4)
                lock.read_register(Reg.CQCSR, 4)
                count("commands")
            elif op < 0.95:
                # Requests in flight together may complete in any order, so when the
                # fault queue can overflow, which record is dropped would depend on that
                # order (the spec does not order them): batch only what fits.
                # Likewise when a slot the batch would fill is in faulty memory (which
                # record meets it first, setting fqm, and which are dropped after it).
                fq = lock.model.fq
                room = (fq.head - fq.tail - 1) % fq.entries if fq.on else 6
                for k in range(min(6, room)):
                    slot = fq.entry_address((fq.tail + k) % fq.entries)
                    if slot >> 56 or memory._fault_at(slot, arch.FAULT_RECORD_SIZE):
                        room = k  # up to the first faulty slot (a single request may meet it)
                        break
                n = rng.randint(1, max(1, min(6, room)))
                lock.translate_all([Request(
                    device_id=rng.choice([DEVICE, DEVICE, OTHER, 0x3FF]),
                    iova=iova + rng.randrange(-2, 10) * PAGE + rng.randrange(0, PAGE, 8),
                    access=rng.choice(list(arch.Access)),
                    pv=rng.random() < 0.1, process_id=rng.getrandbits(3))
                    for _ in range(n)])
                count("translations")
            else:
                start = rng.choice([drv.cq_base, drv.fq_base, 0x4000_0000 + (rng.randrange(64) << 12)])
                memory.clear_faults()
                memory.inject_fault(start, PAGE, rng.choice(["access", "poison"]))
                count("memory faults")
        memory.clear_faults()
        for offset, size in space:
            if offset not in (Reg.IOHPMCYCLES, Reg.IOHPMCYCLES + 4):
                lock.read_register(offset, size)

    await bridge(os_code)()
    await tb.quiesce()
    finish(tb, lock)  # raises on the first difference: reaching here means 0 mismatches
    tb.log.info("fuzz: %s (seed %s)", stats, tb.seed_text)
    export_figures(lock.translations + lock.register_reads, 0, fuzz=stats)
