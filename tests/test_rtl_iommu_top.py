"""The IOMMU top (rtl/iommu.py) in the Amaranth simulator, judged by models.iommu.IOMMU.

The RTL and the model each get their own ``models.memory.Memory`` prepared the same
way and the same register writes; the RTL's memory port is served from its memory by
a responder here. Afterwards the registers, the wired interrupt lines, the
translation and debug-translation results and the memory the IOMMUs wrote (fault
records, IOFENCE.C data) must agree.
"""

import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from models import arch
from models.arch import AddrType, Cqcsr, DdtpMode, Fctl, Fqcsr, Reg
from models.iommu import IOMMU
from models.memory import AccessFault, DataCorruption, Memory
from models.transaction import Request
from rtl import layouts
from rtl.iommu import Iommu, iommu_mem_id_bits
from rtl.params import DEFAULT, SMALL

CQ_BASE, FQ_BASE, DDT_BASE, FENCE_ADDR = 0x10000, 0x20000, 0x30000, 0x40000
LOG2SZM1 = 3  # 16 entries
DEVICE = 5


@pytest.mark.parametrize("params", [SMALL, DEFAULT], ids=["small", "default"])
def test_top_elaborates(params):
    dut = Iommu(params)
    rtlil.convert(dut, name="iommu")
    assert len(dut.mem_req.payload.id) == iommu_mem_id_bits(params)
    assert len(dut.request.payload.tag) == params.tag_bits


def test_top_refuses_a_tag_too_wide_for_the_debug_bit():
    from dataclasses import replace

    with pytest.raises(ValueError, match="tag_bits"):
        Iommu(replace(SMALL, tag_bits=16))


def memory_responder(dut, memory: Memory, latency: int = 3):
    """Serve the top's memory port from ``memory``; responses in order after ``latency``."""

    def perform(op, addr, wdata, compare):
        try:
            if op == layouts.MemOp.READ:
                return layouts.MemErr.OK, memory.read64(addr, who="rtl")
            if op == layouts.MemOp.WRITE:
                memory.write64(addr, wdata, who="rtl")
            elif op == layouts.MemOp.WRITE32:
                memory.write32(addr, wdata & 0xFFFF_FFFF, who="rtl")
            else:
                return layouts.MemErr.OK, memory.cas64(addr, compare, wdata, who="rtl")
            return layouts.MemErr.OK, 0
        except AccessFault:
            return layouts.MemErr.ACCESS_FAULT, 0
        except DataCorruption:
            return layouts.MemErr.POISON, 0

    async def process(ctx):
        ctx.set(dut.mem_req.ready, 1)
        pending = []  # [cycles left, id, err, rdata]
        while True:
            valid = ctx.get(dut.mem_req.valid)
            req = ctx.get(dut.mem_req.payload)
            taken = ctx.get(dut.mem_resp.valid) and ctx.get(dut.mem_resp.ready)
            await ctx.tick()
            if taken:
                pending.pop(0)
            if valid:
                err, rdata = perform(req.op, req.addr, req.wdata, req.compare)
                pending.append([latency, req.id, err, rdata])
            for entry in pending:
                entry[0] -= 1
            head = pending[0] if pending and pending[0][0] <= 0 else None
            ctx.set(dut.mem_resp.valid, head is not None)
            if head:
                ctx.set(dut.mem_resp.payload, {"id": head[1], "err": head[2], "rdata": head[3]})

    return process


async def mmio(ctx, dut, offset, size, write=False, value=0):
    ctx.set(dut.mmio_req.payload, {"addr": offset, "write": int(write), "wide": int(size == 8),
                                   "wdata": value})
    ctx.set(dut.mmio_req.valid, 1)
    ctx.set(dut.mmio_resp.ready, 1)
    while True:
        ready = ctx.get(dut.mmio_req.ready)
        await ctx.tick()
        if ready:
            break
    ctx.set(dut.mmio_req.valid, 0)
    while not ctx.get(dut.mmio_resp.valid):
        await ctx.tick()
    rdata = ctx.get(dut.mmio_resp.payload.rdata)
    await ctx.tick()
    return rdata


async def poll(ctx, dut, offset, size, done, what, tries=200):
    for _ in range(tries):
        value = await mmio(ctx, dut, offset, size)
        if done(value):
            return value
        for _ in range(5):
            await ctx.tick()
    raise AssertionError(f"timed out waiting for {what}: {offset:#x} = {value:#x}")


def prepare(memory: Memory, commands: list[int]) -> None:
    """The CPU's stores before the IOMMU runs: commands in the CQ, an empty DDT."""
    for i, command in enumerate(commands):
        memory.write(CQ_BASE + i * arch.COMMAND_SIZE, arch.command_bytes(command))
    memory.write(DDT_BASE, bytes(4096))
    memory.write(FQ_BASE, bytes(16 * arch.FAULT_RECORD_SIZE))
    memory.write(FENCE_ADDR, bytes(8))


#: The driver's setup writes: wired interrupts, civ = 1, fiv = 5, both queues on with
#: interrupts enabled, a 1-level DDT.
SETUP = [
    (Reg.FCTL, 4, Fctl.WSI.mask),
    (Reg.ICVEC, 8, arch.Icvec.CIV.put(1) | arch.Icvec.FIV.put(5)),
    (Reg.CQB, 8, arch.QueueBase.PPN.put(CQ_BASE >> 12) | LOG2SZM1),
    (Reg.FQB, 8, arch.QueueBase.PPN.put(FQ_BASE >> 12) | LOG2SZM1),
    (Reg.CQCSR, 4, Cqcsr.CQEN.mask | Cqcsr.CIE.mask),
    (Reg.FQCSR, 4, Fqcsr.FQEN.mask | Fqcsr.FIE.mask),
    (Reg.DDTP, 8, arch.Ddtp.PPN.put(DDT_BASE >> 12) | DdtpMode.LVL1),
]
COMMANDS = [
    arch.iotinval(arch.IotinvalFunc.VMA),
    arch.iodir(arch.IodirFunc.INVAL_DDT, dv=True, did=DEVICE),
    arch.iofence_c(av=True, wsi=True, data=0x1234_5678, addr=FENCE_ADDR),
]
COMPARED = [Reg.CQH, Reg.CQT, Reg.FQH, Reg.FQT, Reg.CQCSR, Reg.FQCSR, Reg.IPSR, Reg.DDTP,
            Reg.FCTL, Reg.CAPABILITIES, Reg.TR_RESPONSE]


def test_commands_faults_interrupts_and_debug_translation_match_the_model():
    params = SMALL
    rtl_memory, model_memory = Memory(), Memory()
    prepare(rtl_memory, COMMANDS)
    prepare(model_memory, COMMANDS)
    model = IOMMU(model_memory, capabilities=params.capabilities,
                  hpm_counters=params.hpm_counters, msi_vectors=16)
    request = Request(device_id=DEVICE, iova=0x1000, access=arch.Access.READ,
                      addr_type=AddrType.UNTRANSLATED, tag=3)
    debug_ctl = arch.TrReqCtl.DID.put(DEVICE) | arch.TrReqCtl.NW.put(1)
    dut = Iommu(params)
    seen = {"inval": 0}
    results = {}

    async def watch_invalidations(ctx):
        # The command queue's invalidations reaching the core (the CQ -> core stream).
        async for _, _, valid, ready in ctx.tick().sample(dut.core.inval.valid,
                                                         dut.core.inval.ready):
            if valid and ready:
                seen["inval"] += 1

    async def bench(ctx):
        for offset, size, value in SETUP:
            await mmio(ctx, dut, offset, size, True, value)
            model.write_register(offset, size, value)
        await poll(ctx, dut, Reg.CQCSR, 4, lambda v: Cqcsr.CQON.get(v), "cqon")
        await poll(ctx, dut, Reg.FQCSR, 4, lambda v: Fqcsr.FQON.get(v), "fqon")
        # MMIO round trip through the top.
        assert await mmio(ctx, dut, Reg.CAPABILITIES, 8) == params.capabilities
        assert await mmio(ctx, dut, Reg.ICVEC, 4) == model.read_register(Reg.ICVEC, 4)

        # Commands: software moves cqt, the queue runs them by itself.
        await mmio(ctx, dut, Reg.CQT, 4, True, len(COMMANDS))
        model.write_register(Reg.CQT, 4, len(COMMANDS))
        assert model.process_commands() == len(COMMANDS)
        await poll(ctx, dut, Reg.CQH, 4, lambda v: v == len(COMMANDS), "cqh")
        assert seen["inval"] == 2, f"invalidations reaching the core: {seen['inval']}"
        assert ctx.get(dut.wsi) == 1 << 1, "IOFENCE.C WSI=1: cip on wire civ=1"

        # A device request with no valid DDT entry: fault, record, fip on wire 5.
        ctx.set(dut.request.payload, {
            "tag": request.tag, "device_id": request.device_id, "iova": request.iova,
            "access": layouts.Access.READ, "addr_type": layouts.AddrType.UNTRANSLATED})
        ctx.set(dut.request.valid, 1)
        ctx.set(dut.response.ready, 1)
        while True:
            ready = ctx.get(dut.request.ready)
            await ctx.tick()
            if ready:
                break
        ctx.set(dut.request.valid, 0)
        for _ in range(200):
            if ctx.get(dut.response.valid):
                break
            await ctx.tick()
        results["response"] = ctx.get(dut.response.payload)
        results["model_response"] = model.translate(request)
        await ctx.tick()
        await poll(ctx, dut, Reg.FQT, 4, lambda v: v == 1, "fault record")
        results["wsi_after_fault"] = ctx.get(dut.wsi)

        # Debug translation of the same device: a fault in tr_response, a second record.
        await mmio(ctx, dut, Reg.TR_REQ_IOVA, 8, True, 0x2000)
        await mmio(ctx, dut, Reg.TR_REQ_CTL, 8, True, debug_ctl | 1)
        model.write_register(Reg.TR_REQ_IOVA, 8, 0x2000)
        model.write_register(Reg.TR_REQ_CTL, 8, debug_ctl | 1)
        await poll(ctx, dut, Reg.TR_REQ_CTL, 8, lambda v: not v & 1, "tr_req_ctl.Busy = 0")
        await poll(ctx, dut, Reg.FQT, 4, lambda v: v == 2, "debug fault record")
        for offset in COMPARED:
            size = arch.REG_SIZE[offset]
            got, want = await mmio(ctx, dut, offset, size), model.read_register(offset, size)
            assert got == want, f"{Reg(offset).name}: RTL {got:#x}, model {want:#x}"
        wires = {v for v in range(16) if ctx.get(dut.wsi) >> v & 1}
        assert wires == model.wired_interrupts

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(memory_responder(dut, rtl_memory), background=True)
    sim.add_testbench(watch_invalidations, background=True)
    sim.add_testbench(bench)
    sim.run()

    got, want = results["response"], results["model_response"]
    assert (got.tag, got.fault, got.cause) == (want.tag, 1, want.cause), (got, want)
    assert want.cause == arch.Cause.DDT_ENTRY_NOT_VALID and want.reported
    assert results["wsi_after_fault"] == (1 << 1) | (1 << 5)
    for addr, size in ((FQ_BASE, 3 * arch.FAULT_RECORD_SIZE), (FENCE_ADDR, 8)):
        assert rtl_memory.read(addr, size) == model_memory.read(addr, size), f"{addr:#x}"
    assert rtl_memory.read(FENCE_ADDR, 4) == (0x1234_5678).to_bytes(4, "little")
    assert rtl_memory.read(FQ_BASE + arch.FAULT_RECORD_SIZE, 4) != bytes(4), "no debug record"
    print(f"response {got}, invalidations {seen['inval']}, records "
          f"{rtl_memory.read(FQ_BASE, 2 * arch.FAULT_RECORD_SIZE).hex()}")
