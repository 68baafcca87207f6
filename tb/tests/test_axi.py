"""cocotb tests of ``rtl/axi_top.py`` ``AxiIommu``: the IOMMU seen only through AXI.

The environment is built from cocotbext-axi: an ``AxiLiteMaster`` is the CPU, an
``AxiMaster`` is the DMA device (its identity on AWUSER/ARUSER), and ``AxiSlave``s
serve ``m_axi`` (and ``m_axi_mem``) from a ``models.memory.Memory``: the same bytes
the OS driver model builds its DDT, queues and page tables in (an AxiRam whose
storage is the project's memory model). Random back-pressure is on every channel.

The OS driver model (``models/os/driver.py``) programs the RTL through AXI-Lite and
the reference model (``models/iommu.py``) beside it (``tb.rtl_iommu.Lockstep``: every
register read compared). Then devices issue random DMA bursts, each judged by the
model's translation of its first address:

* a translated write's bytes land at the model's SPA: they are applied to the model's
  memory, and at the end both memories must be equal (so a refused write that
  reached memory, or a wrong A/D bit, is a difference);
* a translated read returns the bytes at the model's SPA;
* a translation fault answers SLVERR; a burst crossing 4 KiB answers DECERR; neither
  reaches memory (the DMA memory port's access log is checked);
* the fault records written by the RTL equal the model's (as a multiset: the read and
  write channels translate concurrently, so their order may differ).
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from types import SimpleNamespace

import cocotb
import cocotbext.axi.axi_master as axi_master_module
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import RisingEdge, with_timeout
from cocotbext.axi import (
    AxiBurstType,
    AxiBus,
    AxiLiteBus,
    AxiLiteMaster,
    AxiMaster,
    AxiProt,
    AxiResp,
    AxiSlave,
)

from models import arch
from models.arch import Access, Cap, Fqcsr, Priv, Reg
from models.devices import Nic
from models.memory import Memory
from models.os.driver import IommuDriver
from models.os.hypervisor import MRIF_SIZE, Hypervisor, Platform
from models.transaction import Request
from rtl.axi import dma_user_layout
from tb import packing
from tb.env import CLOCK_PERIOD_NS, params_from_env
from tb.rtl_iommu import Lockstep, MirrorMemory, RtlIommu, model_iommu
from tb.top_env import WHO_RTL

PAGE = arch.PAGE_SIZE
# cocotbext-axi 0.1.28 still uses cocotb 1.x APIs that cocotb 2.1 deprecates.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.")
DEV_SV39, DEV_SV48, DEV_ABSENT = 0x10, 0x211, 0x3F
ID_WIDTH_BUS = 4
USER_LAYOUT = dma_user_layout()
#: How often each kind of region is picked: mostly buffers that translate.
REGION_WEIGHTS = {"rx": 8, "tx": 5, "a_clear": 2, "code": 1, "unmapped": 1, "absent": 0.5}
DMA_TIMEOUT_CYCLES = 200_000
BURSTS = int(os.environ.get("AXI_TB_BURSTS", "160"))


def user_bits(device_id: int, process_id: int = 0, pv: bool = False, priv: int = 0) -> int:
    return packing.pack(USER_LAYOUT, {"device_id": device_id, "process_id": process_id,
                                      "pv": int(pv), "priv": priv})


class MemoryTarget:
    """An ``AxiSlave`` target over a ``models.memory.Memory``; logs every access.

    Injected access faults raise, which the slave model answers with SLVERR.
    """

    def __init__(self, memory: Memory, who: str):
        self.memory, self.who = memory, who
        self.accesses: list[tuple[str, int, int]] = []

    async def read(self, address: int, length: int) -> bytes:
        self.accesses.append(("R", address, length))
        return self.memory.read(address, length, self.who)

    async def write(self, address: int, data: bytes) -> None:
        self.accesses.append(("W", address, len(data)))
        self.memory.write(address, bytes(data), self.who)


def pauses(rng: random.Random, probability: float):
    """A pause generator: runs of pauses (True) with the given share of cycles."""
    while True:
        if rng.random() < probability:
            for _ in range(rng.randint(1, 4)):
                yield True
        else:
            yield False


class AxiTB:
    """Clock, reset and cocotbext-axi models around ``AxiIommu`` (top module ``iommu``).

    Offers the async register door ``tb.rtl_iommu.RtlIommu`` needs (read_register,
    write_register, cycles, cycle, seed_text, wired_interrupts), over AXI-Lite.
    """

    def __init__(self, dut, memory: Memory):
        self.dut = dut
        self.params = params_from_env()
        self.seed = cocotb.RANDOM_SEED
        self.seed_text = f"{os.environ.get('COCOTB_RANDOM_SEED', self.seed)}"
        self.rng = random.Random(self.seed)
        self.log = dut._log
        self.memory = memory
        self.cycle = 0
        Clock(dut.aclk, CLOCK_PERIOD_NS, unit="ns").start()
        cocotb.start_soon(self._count_cycles())
        dut.aresetn.value = 0
        clk, rst = dut.aclk, dut.aresetn
        for prefix in ("s_axil", "s_axi", "m_axi", "m_axi_mem"):  # one line per burst otherwise
            logging.getLogger(f"cocotb.{dut._name}.{prefix}").setLevel(logging.WARNING)
        self.cpu = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), clk, rst,
                                 reset_active_level=False)
        self.device = AxiMaster(AxiBus.from_prefix(dut, "s_axi"), clk, rst,
                                reset_active_level=False)
        self.dma_target = MemoryTarget(memory, WHO_RTL)  # DMA data is not mirrored
        self.memory_slaves = [AxiSlave(AxiBus.from_prefix(dut, "m_axi"), clk, rst,
                                       target=self.dma_target, reset_active_level=False)]
        self.merged = not hasattr(dut, "m_axi_mem_awvalid")
        if not self.merged:
            self.memory_slaves.append(AxiSlave(AxiBus.from_prefix(dut, "m_axi_mem"), clk, rst,
                                               target=MemoryTarget(memory, WHO_RTL),
                                               reset_active_level=False))

    def stress(self, probability: float = 0.3) -> None:
        """Random pauses (valid low on sources, ready low on sinks) on every channel."""
        for model in (self.cpu, self.device, *self.memory_slaves):
            for model_if in (model.write_if, model.read_if):
                for name in ("aw_channel", "w_channel", "b_channel", "ar_channel", "r_channel"):
                    channel = getattr(model_if, name, None)
                    if channel is not None:
                        channel.set_pause_generator(
                            pauses(random.Random(self.rng.random()), probability))

    async def _count_cycles(self) -> None:
        while True:
            await RisingEdge(self.dut.aclk)
            self.cycle += 1

    async def reset(self) -> None:
        self.dut.aresetn.value = 0
        await self.cycles(5)
        self.dut.aresetn.value = 1
        await self.cycles(2)

    async def cycles(self, n: int) -> None:
        for _ in range(n):
            await RisingEdge(self.dut.aclk)

    # ------------------------------------------------------------ registers
    async def _read32(self, offset: int) -> int:
        response = await self.cpu.read(offset, 4)
        assert response.resp == AxiResp.OKAY, (
            f"AXI-Lite read of {offset:#x} answered {response.resp!r} (seed {self.seed_text})")
        return int.from_bytes(response.data, "little")

    async def _write32(self, offset: int, value: int) -> None:
        response = await self.cpu.write(offset, value.to_bytes(4, "little"))
        assert response.resp == AxiResp.OKAY, (
            f"AXI-Lite write of {offset:#x} answered {response.resp!r} (seed {self.seed_text})")

    async def read_register(self, offset: int, size: int) -> int:
        value = await self._read32(offset)
        if size == 8:
            value |= await self._read32(offset + 4) << 32
        return value

    async def write_register(self, offset: int, size: int, value: int) -> None:
        if size == 8:  # high half first, as the spec orders a split 8-byte access (§8.2)
            await self._write32(offset + 4, value >> 32)
        await self._write32(offset, value & 0xFFFF_FFFF)

    @property
    def wired_interrupts(self) -> set[int]:
        value = int(self.dut.wsi.value)
        return {i for i in range(16) if value >> i & 1}

    # ------------------------------------------------------ illegal bursts
    async def crossing_burst(self, write: bool, address: int, beats: int, user: int,
                             axid: int = 0):
        """One INCR burst of 8-byte beats that crosses 4 KiB (AxiMaster would split it):
        put on the channels by hand and registered with the master's response tracking."""
        # The channels must be ours alone. (AxiMaster.wait() would take len() of a
        # 2**64-byte region, which overflows with a 64-bit address bus.)
        for side in (self.device.read_if, self.device.write_if):
            await side.wait()
        side = self.device.write_if if write else self.device.read_if
        event = axi_master_module.Event()
        side.in_flight_operations += 1
        side._idle.clear()
        side.active_id[axid] += 1
        if write:
            aw = side.aw_channel._transaction_obj()
            aw.awid, aw.awaddr, aw.awlen, aw.awsize = axid, address, beats - 1, 3
            aw.awburst, aw.awuser = AxiBurstType.INCR, user
            await side.aw_channel.send(aw)
            for n in range(beats):
                w = side.w_channel._transaction_obj()
                w.wdata, w.wstrb, w.wlast = 0xA5A5_0000 + n, 0xFF, int(n == beats - 1)
                await side.w_channel.send(w)
            side.tag_context_manager.start_cmd(axid, axi_master_module.AxiWriteRespCmd(
                address, beats * 8, 3, beats, AxiProt.NONSECURE, [beats], event))
        else:
            ar = side.ar_channel._transaction_obj()
            ar.arid, ar.araddr, ar.arlen, ar.arsize = axid, address, beats - 1, 3
            ar.arburst, ar.aruser = AxiBurstType.INCR, user
            await side.ar_channel.send(ar)
            side.tag_context_manager.start_cmd(axid, axi_master_module.AxiReadRespCmd(
                address, beats * 8, 3, beats, AxiProt.NONSECURE, [beats], event))
        await event.wait()
        return event.data


# --------------------------------------------------------------------------- #
# The system: OS driver on RTL and model, buffers, faulty targets
# --------------------------------------------------------------------------- #
class AxiLockstep(Lockstep):
    """``Lockstep`` except for ``cqh``: the RTL runs its command queue by itself, so
    between a ``cqt`` write and ``process_commands`` the RTL's head may already have
    moved while the model's has not (the driver reads ``cqh`` to test for a full
    queue). Every other register read is compared."""

    def read_register(self, offset: int, size: int) -> int:
        if offset == Reg.CQH:
            self.register_reads += 1
            return self.rtl.read_register(offset, size)
        return super().read_register(offset, size)



class System:
    """What the OS set up: the driver, two domains and the buffers the devices use."""

    def __init__(self, tb: AxiTB, lock: Lockstep, rng: random.Random):
        self.tb, self.lock, self.rng = tb, lock, rng
        # 256-entry queues: every refused burst of a run leaves its record (no overflow).
        self.driver = IommuDriver(lock, tb.memory, scheme=arch.SV39, queue_log2=8)

    def build(self) -> None:
        """Blocking (runs in a cocotb bridge thread)."""
        d, rng = self.driver, self.rng
        d.init()
        self.sv39 = d.create_domain(arch.SV39)
        self.sv48 = d.create_domain(arch.SV48)
        d.attach(DEV_SV39, self.sv39)
        d.attach(DEV_SV48, self.sv48, sade=True)
        # (device, iova, pages, kind). Writes land only in "rx" and, on the Sv48 domain
        # whose device context has SADE, "a_clear" (the IOMMU sets A and D by
        # compare-and-swap over AXI); everything else refuses them.
        self.regions = []
        for device, dom in ((DEV_SV39, self.sv39), (DEV_SV48, self.sv48)):
            frames = [d.alloc.alloc() for _ in range(6)]
            rx = d.map_sg(dom, frames[:3], r=True, w=True)  # scattered receive buffer
            tx = d.map_sg(dom, frames[3:5], r=True, w=False)  # read-only
            for frame in frames[3:6]:
                d.memory.write(frame, bytes(rng.randrange(256) for _ in range(PAGE)), who="os")
            code = d.map_sg(dom, frames[5:], r=False, w=False, x=True)  # execute-only
            a_clear = d.map_sg(dom, [d.alloc.alloc()], r=True, w=True, a=False, d=False)
            self.regions += [(device, rx, 3, "rx"), (device, tx, 2, "tx"),
                             (device, code, 1, "code"), (device, a_clear, 1, "a_clear"),
                             (device, dom.alloc_iova(PAGE), 1, "unmapped")]
        self.regions.append((DEV_ABSENT, 0x1000_0000, 1, "absent"))

    def regions_of(self, task: int, tasks: int) -> list:
        """The regions task ``task`` of ``tasks`` uses: the writable ones it alone owns
        (so the final bytes and every read of them are defined) and the shared others."""
        writable = [r for r in self.regions if r[3] in ("rx", "a_clear")]
        mine = [r for i, r in enumerate(writable) if i % tasks == task]
        return mine + [r for r in self.regions if r not in writable]


async def random_dma(tb: AxiTB, system: System, rng: random.Random, count: int,
                     regions: list, results: list) -> None:
    """``count`` random bursts from one device task; each one judged by the model."""
    model = system.lock.model
    weights = [REGION_WEIGHTS[kind] for _device, _base, _pages, kind in regions]
    for _ in range(count):
        device, base, pages, _kind = rng.choices(regions, weights)[0]
        write = rng.random() < 0.5
        widest = tb.device.write_if.max_burst_size  # log2 of the bus width in bytes
        size = rng.choice([widest, widest, 3, 2, 1, 0])
        page = base + rng.randrange(pages) * PAGE
        offset = rng.choice([rng.randrange(PAGE), PAGE - 8 * rng.randint(1, 32)])
        length = rng.randint(1, min(PAGE - offset, 32 << size))
        iova = page + offset
        pv = device == DEV_SV39 and rng.random() < 0.05  # no PDT: PASIDs are refused (260)
        prot = AxiProt.INSTRUCTION if (not write and rng.random() < 0.2) else AxiProt.NONSECURE
        access = Access.WRITE if write else (
            Access.EXECUTE if prot & AxiProt.INSTRUCTION else Access.READ)
        request = Request(device, iova, access, process_id=0x42 if pv else 0, pv=pv,
                          priv=Priv.USER)
        expected = model.translate(request)
        user = user_bits(device, 0x42 if pv else 0, pv)
        axid = rng.randrange(1 << ID_WIDTH_BUS)
        if write:
            data = bytes(rng.randrange(256) for _ in range(length))
            response = await tb.device.write(iova, data, awid=axid, size=size, prot=prot,
                                             user=user)
            if expected.ok:
                system.lock.model_memory._raw_write(expected.spa, data)  # where it must land
        else:
            response = await tb.device.read(iova, length, arid=axid, size=size, prot=prot,
                                            user=user)
        results.append((request, expected, write, length, response))
        want = AxiResp.OKAY if expected.ok else AxiResp.SLVERR
        assert response.resp == want, (
            f"{request} ({length} bytes, size {1 << size}): expected {want.name} "
            f"({expected}), got {AxiResp(response.resp).name} (seed {tb.seed_text})")
        if expected.ok and not write:
            memory_bytes = tb.memory._raw_read(expected.spa, length)
            assert response.data == memory_bytes, (
                f"{request}: read data differs from memory at the model's SPA "
                f"{expected.spa:#x} (seed {tb.seed_text})")


async def measure_throughput(tb: AxiTB, system, bursts: int = 64) -> dict:
    """Cycles for ``bursts`` back-to-back reads (then writes) of 16 and 64 bytes to a
    buffer whose translation is cached: what the bridge sustains on IOTLB hits."""
    device, base, pages, _kind = next(r for r in system.regions if r[3] == "rx"
                                      and r[0] == DEV_SV39)
    user, figures = user_bits(device), {}
    for length in (16, 64):
        for write in (False, True):
            start = tb.cycle
            tasks = []
            for i in range(bursts):
                iova = base + (i * length) % (pages * PAGE)
                if write:
                    coro = tb.device.write(iova, bytes(length), awid=i % 16, user=user)
                else:
                    coro = tb.device.read(iova, length, arid=i % 16, user=user)
                tasks.append(cocotb.start_soon(coro))
            for task in tasks:
                response = await task
                assert response.resp == AxiResp.OKAY, "a throughput burst was refused"
            cycles = tb.cycle - start
            figures[f"{'write' if write else 'read'}_{length}B_cycles_per_burst"] = round(
                cycles / bursts, 2)
    tb.log.info("DMA bridge on IOTLB hits (%d bursts each): %s", bursts, figures)
    return figures


def dma_accesses_allowed(results, accesses) -> list[str]:
    """Every DMA memory access lies inside a successful burst's translated bytes."""
    windows = []
    for _request, expected, write, length, _response in results:
        if expected.ok:
            start = expected.spa & ~7
            windows.append(("W" if write else "R", start, expected.spa + length + 8))
    bad = []
    for op, addr, length in accesses:
        if not any(op == w_op and lo <= addr and addr + length <= hi for w_op, lo, hi in windows):
            bad.append(f"{op} {addr:#x}+{length}")
    return bad


def fault_records(memory: Memory, fq_base: int, count: int) -> list[bytes]:
    return sorted(memory._raw_read(fq_base + i * arch.FAULT_RECORD_SIZE,
                                   arch.FAULT_RECORD_SIZE) for i in range(count))


async def run_system(dut, stress: bool, bursts: int) -> None:
    model_memory = Memory()
    rtl_memory = MirrorMemory(model_memory)
    tb = AxiTB(dut, rtl_memory)
    if stress:
        tb.stress(0.3)
    await tb.reset()
    rtl = RtlIommu(tb)
    lock = AxiLockstep(rtl, model_iommu(tb.params, model_memory), rtl_memory, model_memory)
    rng = random.Random(tb.rng.random())
    system = System(tb, lock, rng)
    await bridge(system.build)()
    tb.log.info("AXI IOMMU programmed over AXI-Lite: %d register reads, %d writes (seed %s)",
                lock.register_reads, lock.register_writes, tb.seed_text)

    # Random DMA from four concurrent device tasks, each writing only its own buffers.
    results: list = []
    start = tb.cycle
    tasks = []
    per_task = max(1, bursts // 4)
    for n in range(4):
        tasks.append(cocotb.start_soon(random_dma(tb, system, random.Random(rng.random()),
                                                  per_task, system.regions_of(n, 4), results)))
    for task in tasks:  # a wedged bridge fails here instead of hanging the run
        await with_timeout(task, DMA_TIMEOUT_CYCLES * CLOCK_PERIOD_NS, "ns")
    dma_cycles = tb.cycle - start

    # Directed: a write to the Sv48 domain's A=0/D=0 page (its device context has SADE):
    # the IOMMU sets A and D by compare-and-swap over its AXI port, then the data lands.
    model = lock.model
    device, base, _pages, _kind = next(r for r in system.regions
                                       if r[3] == "a_clear" and r[0] == DEV_SV48)
    expected = model.translate(Request(device, base + 8, Access.WRITE))
    assert expected.ok, f"the model refuses the directed A/D write: {expected}"
    data = bytes(range(1, 33))
    response = await tb.device.write(base + 8, data, awid=3, user=user_bits(device))
    assert response.resp == AxiResp.OKAY, (
        f"write to a page with A=0/D=0 under SADE answered {AxiResp(response.resp).name} "
        f"(seed {tb.seed_text})")
    lock.model_memory._raw_write(expected.spa, data)
    results.append((Request(device, base + 8, Access.WRITE), expected, True, len(data),
                    response))

    # Directed: an AXI-Lite write that is not a whole 32-bit word is refused (SLVERR)
    # and changes nothing (fqh keeps its value: compared with the model below).
    response = await tb.cpu.write(Reg.FQH, b"\x05\x00")  # WSTRB = 0b0011
    assert response.resp == AxiResp.SLVERR, (
        f"a 2-byte register write answered {AxiResp(response.resp).name}, expected SLVERR")
    await bridge(lambda: lock.read_register(Reg.FQH, 4))()

    # Bursts crossing 4 KiB: refused without translation, never forwarded. (Wait for
    # the fault records trailing the DMA above: with merged ports they share the log.)
    await tb.cycles(300)
    log_before = len(tb.dma_target.accesses)
    for write in (False, True):
        device, base, _pages, _kind = system.regions[0]  # a mapped, writable buffer
        response = await tb.crossing_burst(write, base + PAGE - 16, 4, user_bits(device))
        assert response.resp == AxiResp.DECERR, (
            f"a {'write' if write else 'read'} burst crossing 4 KiB at {base + PAGE - 16:#x} "
            f"answered {AxiResp(response.resp).name}, expected DECERR (seed {tb.seed_text})")
    assert len(tb.dma_target.accesses) == log_before, "a 4 KiB-crossing burst reached memory"

    # Nothing refused reached memory; the memories agree (DMA data, A/D bits); the
    # fault queue holds the model's records.
    await tb.cycles(200)
    if not tb.merged:
        bad = dma_accesses_allowed(results, tb.dma_target.accesses)
        assert not bad, f"DMA accesses outside any granted burst: {bad[:8]} (seed {tb.seed_text})"
    fq_base = system.driver.fq_base
    fqt = await tb.read_register(Reg.FQT, 4)
    model_fqt = lock.model.read_register(Reg.FQT, 4)
    assert fqt == model_fqt, f"fqt: RTL {fqt}, model {model_fqt} (seed {tb.seed_text})"
    assert not Fqcsr.FQOF.get(await tb.read_register(Reg.FQCSR, 4)), "fault queue overflowed"
    got = fault_records(rtl_memory, fq_base, fqt)
    want = fault_records(model_memory, fq_base, fqt)
    assert got == want, f"fault records differ from the model's (seed {tb.seed_text})"
    # Same records, maybe in another order: put them in one order on both sides so
    # that the whole-memory comparison covers everything else.
    for memory in (rtl_memory, model_memory):
        Memory._raw_write(memory, fq_base, b"".join(got))
    diffs = lock.compare_memories()
    assert not diffs, (f"memory differs from the model's (seed {tb.seed_text}):\n  "
                       + "\n  ".join(diffs))
    if not stress:
        await measure_throughput(tb, system)
    ok = sum(1 for r in results if r[1].ok)
    moved = sum(r[3] for r in results if r[1].ok)
    tb.log.info("%d bursts (%d translated, %d refused, %d fault records), %d bytes moved in "
                "%d cycles; seed %s", len(results), ok, len(results) - ok, fqt, moved,
                dma_cycles, tb.seed_text)


@cocotb.test()
async def dma_through_axi(dut):
    """Random DMA with the OS driver's tables; no back-pressure."""
    await run_system(dut, stress=False, bursts=BURSTS)


@cocotb.test()
async def dma_through_axi_stressed(dut):
    """The same with random pauses on every AXI channel."""
    await run_system(dut, stress=True, bursts=BURSTS)


# --------------------------------------------------------------------------- #
# MSIs to memory-resident interrupt files (§9.4): the bridge records them
# --------------------------------------------------------------------------- #
#: (page offset, bytes, AWSIZE, identity) of the directed MSI writes to a vCPU's MSI
#: page, beside the random valid identities: the ends of the identity range, identities
#: past it, offsets 4 / 8 / the page's last word (discarded), and accesses that are not
#: one aligned 32-bit write (aborted): two beats, an 8-byte beat, two bytes, unaligned.
MRIF_DIRECTED = [
    (0, 4, 2, 0), (0, 4, 2, 2047), (0, 4, 2, 63), (0, 4, 2, 64), (0, 4, 2, 2048),
    (0, 4, 2, 0x0001_0005), (0, 4, 2, 0xFFFF_FFFF), (4, 4, 2, 5), (8, 4, 2, 6),
    (PAGE - 4, 4, 2, 7), (0, 8, 2, 9), (0, 8, 3, 10), (0, 2, 2, 11), (2, 4, 2, 12),
    (0, 4, 2, 1),
]
MRIF_RANDOM = 12  # random valid identities per run, on top of MRIF_DIRECTED
VF_DEVICE_ID = 0x101


def mrif_capabilities(capabilities: int) -> bool:
    """The RTL's parameters carry what the MRIF test needs (the runner sets them)."""
    return all(cap.get(capabilities) for cap in (Cap.MSI_FLAT, Cap.MSI_MRIF, Cap.SV39X4))


class MrifSystem:
    """A hypervisor (``models/os/hypervisor.py``) with one VM whose two vCPUs have MRIFs
    and one SR-IOV VF assigned to it, programmed on RTL and model in lockstep. The
    reference bridge is the hypervisor model's ``Platform`` on the model's memory."""

    def __init__(self, tb: AxiTB, lock: Lockstep, model_memory: Memory):
        self.tb, self.lock = tb, lock
        self.platform = Platform(model_memory)  # its writes land in the model's memory

    def build(self) -> None:
        """Blocking (runs in a cocotb bridge thread)."""
        hv = Hypervisor(self.lock, self.tb.memory, self.platform, queue_log2=8)
        self.vm = hv.create_vm("vm0", ram_size=16 * PAGE, harts=[0, 1], mrif=True)
        self.vf = hv.create_nic("nic0", VF_DEVICE_ID - 1, vfs=1).vfs[0]
        hv.assign(self.vm, self.vf)
        self.hv = hv
        # The reference bridge's device: the VF as the model IOMMU sees it.
        self.reference_device = Nic("vf0.reference", self.vf.device_id, self.lock.model,
                                    self.platform.memory)


async def mrif_write(tb: AxiTB, system: MrifSystem, vcpu, offset: int, length: int,
                     size: int, identity: int) -> int:
    """One device write to ``vcpu``'s MSI page, judged against the reference: BRESP, the
    MRIF's 512 bytes and the notice word (cleared on both memories beforehand).
    Returns the cycles from the write's start to its response."""
    model, rtl_memory = system.lock.model, tb.memory
    model_memory = system.lock.model_memory
    mrif = vcpu.mrif.address
    iova = vcpu.msi_gpa + offset  # first stage Bare: the device uses GPAs
    request = Request(VF_DEVICE_ID, iova, Access.WRITE, length=length)
    expected = model.translate(request)
    assert expected.ok and expected.mrif is not None, (
        f"the model does not translate {request} through an MRIF: {expected}")
    notice = expected.mrif.notice_address
    rtl_memory.write32(notice, 0, "test")  # mirrored: both notice words start at 0
    data = (identity.to_bytes(4, "little") * 2)[:length]
    # §9.4 as the reference: one naturally aligned 32-bit write reaches the bridge's
    # MRIF handling (the hypervisor model's ``Platform.msi_write``); any other access
    # is aborted (SLVERR) and changes nothing.
    one_word = length == 4 and size == 2 and iova % 4 == 0
    if one_word:
        outcome = system.platform.msi_write(system.reference_device, iova, identity)
        want = AxiResp.OKAY
    else:
        outcome, want = None, AxiResp.SLVERR
    log_before = len(tb.dma_target.accesses)
    start = tb.cycle
    response = await tb.device.write(iova, data, awid=identity % 16, size=size,
                                     user=user_bits(VF_DEVICE_ID))
    cycles = tb.cycle - start
    what = (f"MSI write of {identity:#x} ({length} bytes, AWSIZE {size}) at offset "
            f"{offset:#x} of vCPU {vcpu.index}'s page (reference: "
            f"{outcome.status if outcome else 'aborted'}; seed {tb.seed_text})")
    assert response.resp == want, (
        f"{what}: expected {want.name}, got {AxiResp(response.resp).name}")
    for name, addr, size_ in (("MRIF", mrif, MRIF_SIZE), ("notice word", notice, 4)):
        got, exp = rtl_memory._raw_read(addr, size_), model_memory._raw_read(addr, size_)
        words = [f"{addr + i:#x}: RTL {got[i:i + 8][::-1].hex()} model {exp[i:i + 8][::-1].hex()}"
                 for i in range(0, size_, 8) if got[i:i + 8] != exp[i:i + 8]]
        assert got == exp, f"{what}: {name} differs at\n  " + "\n  ".join(words)
    notices = [a for a in tb.dma_target.accesses[log_before:] if a == ("W", notice, 4)]
    sent = outcome is not None and outcome.status == "mrif"
    assert len(notices) == int(sent), f"{what}: {len(notices)} notice MSIs, expected {int(sent)}"
    return cycles


async def run_mrif(dut, stress: bool) -> None:
    model_memory = Memory()
    rtl_memory = MirrorMemory(model_memory)
    tb = AxiTB(dut, rtl_memory)
    assert mrif_capabilities(tb.params.capabilities), (
        f"build the IOMMU with MSI_FLAT, MSI_MRIF and Sv39x4 for this test (capabilities "
        f"{tb.params.capabilities:#x}; see tests/test_rtl_axi.py)")
    if stress:
        tb.stress(0.3)
    await tb.reset()
    lock = AxiLockstep(RtlIommu(tb), model_iommu(tb.params, model_memory), rtl_memory,
                       model_memory)
    system = MrifSystem(tb, lock, model_memory)
    await bridge(system.build)()
    rng = random.Random(tb.rng.random())
    vcpus = system.vm.vcpus

    # Ordinary DMA of the same VF to its guest RAM runs beside the MSIs: the MRIF
    # writer's reads share m_axi's AR with it and its responses come back on their own ID.
    results: list = []
    ram = [(VF_DEVICE_ID, system.vm.ram[0][0], len(system.vm.ram), "rx")]
    dma = cocotb.start_soon(random_dma(tb, SimpleNamespace(lock=lock), random.Random(
        rng.random()), 24, ram, results))

    msis = [(vcpus[0], *w) for w in MRIF_DIRECTED]
    msis += [(rng.choice(vcpus), 0, 4, 2, rng.randrange(2048)) for _ in range(MRIF_RANDOM)]
    msis.append((vcpus[1], 0, 4, 2, 7))  # the other MRIF, its notice to the other hart
    recorded = []
    for vcpu, offset, length, size, identity in msis:
        cycles = await with_timeout(mrif_write(tb, system, vcpu, offset, length, size,
                                               identity), DMA_TIMEOUT_CYCLES * CLOCK_PERIOD_NS,
                                    "ns")
        if length == 4 and offset == 0 and identity < 2048:
            recorded.append(cycles)

    # Reads of an MSI page: an aligned 32-bit read returns 0, anything else is aborted;
    # neither reaches memory.
    log_before = len(tb.dma_target.accesses)
    for length, size in ((4, 2), (8, 3)):
        iova = vcpus[0].msi_gpa
        expected = lock.model.translate(Request(VF_DEVICE_ID, iova, Access.READ, length=length))
        assert expected.ok and expected.mrif is not None, f"model: {expected}"
        want = AxiResp.OKAY if length == 4 else AxiResp.SLVERR
        response = await tb.device.read(iova, length, size=size, user=user_bits(VF_DEVICE_ID))
        assert response.resp == want and response.data == bytes(length), (
            f"a {length}-byte read of an MSI page answered {AxiResp(response.resp).name} "
            f"{response.data.hex()}, expected {want.name} with zeros (seed {tb.seed_text})")
    await with_timeout(dma, DMA_TIMEOUT_CYCLES * CLOCK_PERIOD_NS, "ns")
    assert not [a for a in tb.dma_target.accesses[log_before:] if a[0] == "R"
                and a[1] // PAGE == system.vm.vcpus[0].mrif.address // PAGE], (
        "a read of an MSI page reached the MRIF")

    # Everything else agrees too: guest RAM written by the DMA task, both MRIFs, the
    # notice words, and no fault record anywhere.
    await tb.cycles(100)
    fqt = await tb.read_register(Reg.FQT, 4)
    assert fqt == 0, f"{fqt} fault records after MSIs and DMA that the model allows"
    diffs = lock.compare_memories()
    assert not diffs, (f"memory differs from the model's (seed {tb.seed_text}):\n  "
                       + "\n  ".join(diffs))
    if not stress:
        await measure_mrif(tb, system)
    pending = sorted(system.platform.mrif_pending(vcpus[0].mrif))
    tb.log.info("%d MSIs to MRIFs (%d recorded), %d DMA bursts beside them; vCPU 0's "
                "pending identities %s; cycles per recorded MSI (write to B%s): min %d, "
                "mean %.1f, max %d; seed %s", len(msis), len(recorded), len(results),
                pending[:8], ", back-pressure" if stress else "", min(recorded),
                sum(recorded) / len(recorded), max(recorded), tb.seed_text)


async def measure_mrif(tb: AxiTB, system: MrifSystem, count: int = 16) -> dict:
    """Cycles per recorded MRIF MSI with nothing else on the bus: one at a time (the
    device waits for each B) and back to back (all issued at once). Each is judged
    afterwards by the pending bits the reference bridge sets for the same identities."""
    vcpu = system.vm.vcpus[1]
    user, figures = user_bits(VF_DEVICE_ID), {}
    identities = list(range(100, 100 + 2 * count))
    start = tb.cycle
    for identity in identities[:count]:
        response = await tb.device.write(vcpu.msi_gpa, identity.to_bytes(4, "little"),
                                         size=2, user=user)
        assert response.resp == AxiResp.OKAY, f"MSI {identity} answered {response.resp!r}"
    figures["one_at_a_time_cycles"] = round((tb.cycle - start) / count, 1)
    start = tb.cycle
    tasks = [cocotb.start_soon(tb.device.write(vcpu.msi_gpa, identity.to_bytes(4, "little"),
                                               awid=identity % 16, size=2, user=user))
             for identity in identities[count:]]
    for task in tasks:
        response = await task
        assert response.resp == AxiResp.OKAY, f"an MSI answered {response.resp!r}"
    figures["back_to_back_cycles"] = round((tb.cycle - start) / count, 1)
    for identity in identities:
        system.platform.msi_write(system.reference_device, vcpu.msi_gpa, identity)
    got = tb.memory._raw_read(vcpu.mrif.address, MRIF_SIZE)
    want = system.lock.model_memory._raw_read(vcpu.mrif.address, MRIF_SIZE)
    assert got == want, f"vCPU 1's MRIF differs after the measured MSIs (seed {tb.seed_text})"
    tb.log.info("MRIF MSIs, %d each, no back-pressure: %s", count, figures)
    return figures


@cocotb.test()
async def mrif_msi_through_axi(dut):
    """MSIs through MRIF-mode MSI PTEs: the bridge sets the pending bit, sends the notice."""
    await run_mrif(dut, stress=False)


@cocotb.test()
async def mrif_msi_through_axi_stressed(dut):
    """The same with random pauses on every AXI channel."""
    await run_mrif(dut, stress=True)
