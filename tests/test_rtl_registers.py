"""RegisterFile (with its HPM and interrupt controller) against ``models.iommu.IOMMU``.

The random test sends the same register writes (and the same queue error pulses)
to the RTL and to the model, and compares every read, the wired interrupt lines and
the MSIs sent. The command and fault queues are stood in for by the harness:
``xqon`` follows ``xqen`` at once and the queues' indices stay 0, as in the model
when ``process_commands`` is never called. Accesses the spec leaves UNSPECIFIED
(the model raises ValueError) must read 0 on the RTL and change nothing.
"""

import os
import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from models import arch
from models.arch import Cqcsr, Fqcsr, HpmEvent, Ipsr, Reg
from models.iommu import IOMMU, tr_response_value
from models.memory import Memory
from models.transaction import Response, Status
from rtl import layouts
from rtl.hpm import EVENT_LATENCY
from rtl.params import DEFAULT, SMALL
from rtl.registers import RegisterFile


class Harness(wiring.Component):
    """The register file with stand-in queues whose xqon follows xqen."""

    def __init__(self, params):
        self.regs = RegisterFile(params)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.regs = r = self.regs
        m.d.comb += [r.cqon.eq(r.cqen), r.fqon.eq(r.fqen), r.msi_fault.ready.eq(1),
                     r.mmio_resp.ready.eq(1)]
        return m


def make_model(params) -> IOMMU:
    return IOMMU(Memory(), capabilities=params.capabilities, fctl_reset=params.fctl_reset,
                 hpm_counters=params.hpm_counters, msi_vectors=16)


async def mmio(ctx, regs, offset, size, write=False, value=0):
    """One register access through the MMIO stream; returns rdata (0 for writes)."""
    ctx.set(regs.mmio_req.payload, {"addr": offset, "write": int(write), "wide": int(size == 8),
                                    "wdata": value})
    ctx.set(regs.mmio_req.valid, 1)
    while True:
        ready = ctx.get(regs.mmio_req.ready)
        await ctx.tick()
        if ready:
            break
    ctx.set(regs.mmio_req.valid, 0)
    while not ctx.get(regs.mmio_resp.valid):
        await ctx.tick()
    rdata = ctx.get(regs.mmio_resp.payload.rdata)
    await ctx.tick()
    return rdata


def msi_sink(regs, sent, refuse=lambda addr: False):
    """Accept every MSI store at once and answer it the next cycle."""

    async def process(ctx):
        ctx.set(regs.msi_req.ready, 1)
        while True:
            valid = ctx.get(regs.msi_req.valid)
            addr, data = ctx.get(regs.msi_req.payload.addr), ctx.get(regs.msi_req.payload.wdata)
            op = ctx.get(regs.msi_req.payload.op)
            await ctx.tick()
            if valid:
                assert op == layouts.MemOp.WRITE32
                sent.append((addr, data & 0xFFFF_FFFF))
            ctx.set(regs.msi_resp.valid, int(valid))
            ctx.set(regs.msi_resp.payload.err,
                    layouts.MemErr.ACCESS_FAULT if valid and refuse(addr) else layouts.MemErr.OK)

    return process


def register_offsets(model: IOMMU) -> list[int]:
    """Every 4-byte slot of every register, and a few reserved/custom ones."""
    offsets = []
    for offset, (_, size) in sorted(model._registers.items()):
        offsets += [offset] if size == 4 else [offset, offset + 4]
    return offsets + [0x00C, 0x278, 0x27C, 0x2F0, 0x2A0, 0xFFC, 0xC00]


def random_value(rng: random.Random, size: int) -> int:
    kind = rng.random()
    if kind < 0.3:
        return rng.getrandbits(8 * size)
    if kind < 0.5:
        return (1 << 8 * size) - 1
    if kind < 0.8:
        return 1 << rng.randrange(8 * size)
    return rng.getrandbits(16)


@pytest.mark.parametrize("params", [DEFAULT, SMALL], ids=["default", "small"])
def test_random_accesses_match_the_model(params):
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    model = make_model(params)
    dut = Harness(params)
    regs = dut.regs
    offsets = register_offsets(model)
    sent = []
    pulses = {
        "set_cmd_ill": Cqcsr.CMD_ILL, "set_cqmf": Cqcsr.CQMF, "set_fence_w_ip": Cqcsr.FENCE_W_IP,
        "set_fqmf": Fqcsr.FQMF, "set_fqof": Fqcsr.FQOF, "fq_record_written": None,
    }
    checked = {"reads": 0, "unspecified": 0, "sweeps": 0}

    def model_pulse(name):
        if name == "fq_record_written":
            if Fqcsr.FIE.get(model.fq.csr):
                model._set_pending(Ipsr.FIP)
            return
        queue = model.cq if name in ("set_cmd_ill", "set_cqmf", "set_fence_w_ip") else model.fq
        queue.csr |= pulses[name].mask
        model._update_interrupts()

    async def check_read(ctx, offset, size, why):
        got = await mmio(ctx, regs, offset, size)
        try:
            want = model.read_register(offset, size)
        except ValueError:
            checked["unspecified"] += 1
            want = 0
        checked["reads"] += 1
        assert got == want, (f"seed {seed}: {why}: read {size} bytes at {offset:#05x}: "
                             f"RTL {got:#x}, model {want:#x}")

    async def sweep(ctx, why):
        checked["sweeps"] += 1
        for offset in offsets:
            await check_read(ctx, offset, 4, why)
        wires = {v for v in range(16) if ctx.get(regs.wsi) >> v & 1}
        assert wires == model.wired_interrupts, f"seed {seed}: {why}: wsi"
        assert sorted(sent) == sorted(model.msi_log), f"seed {seed}: {why}: MSIs"

    async def bench(ctx):
        # The cycle counter runs from reset; inhibit it so that the model (which only
        # counts on tick()) and the RTL agree. iohpmcycles counting is tested apart.
        for offset, size, value in ((Reg.IOCOUNTINH, 4, 1), (Reg.IOHPMCYCLES, 8, 0)):
            await mmio(ctx, regs, offset, size, True, value)
            model.write_register(offset, size, value)
        await sweep(ctx, "after reset")
        history = []
        for step in range(700):
            choice = rng.random()
            offset = rng.choice(offsets)
            size = rng.choice((4, 8))
            if size == 8 and rng.random() < 0.8:
                offset &= ~7
            if choice < 0.35:
                await check_read(ctx, offset, size, f"step {step}")
            elif choice < 0.9:
                value = random_value(rng, size)
                if offset == Reg.IOCOUNTINH and size == 4:
                    value |= 1  # keep the cycle counter inhibited
                if offset == Reg.TR_REQ_CTL:
                    value &= ~1  # no debug translation here (there is no core)
                history.append((offset, size, value))
                try:
                    model.write_register(offset, size, value)
                except ValueError:
                    checked["unspecified"] += 1  # the RTL must ignore it
                await mmio(ctx, regs, offset, size, True, value)
            else:
                name = rng.choice(sorted(pulses))
                history.append(name)
                ctx.set(getattr(regs, name), 1)
                await ctx.tick()
                ctx.set(getattr(regs, name), 0)
                model_pulse(name)
                await ctx.tick()
            if step % 100 == 99:
                await sweep(ctx, f"step {step} (last ops {history[-5:]})")
        await sweep(ctx, "end")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(msi_sink(regs, sent), background=True)
    sim.add_testbench(bench)
    sim.run()
    assert checked["reads"] > 1000 and checked["unspecified"] > 10, checked
    print(checked, f"{len(sent)} MSIs")


def test_hpm_cycles_count_and_overflow_raises_pmip():
    params = SMALL
    dut = Harness(params)
    regs = dut.regs
    sent = []

    async def bench(ctx):
        await mmio(ctx, regs, Reg.IOCOUNTINH, 4, True, 1)
        await mmio(ctx, regs, Reg.ICVEC, 8, True, 0x3 << 8)  # pmiv = 3
        await mmio(ctx, regs, arch.msi_cfg(3)[0], 8, True, 0x1000)
        await mmio(ctx, regs, arch.msi_cfg(3)[1], 4, True, 0xCAFE)
        # 3 below the 63-bit wrap; counting starts when CY is uninhibited.
        await mmio(ctx, regs, Reg.IOHPMCYCLES, 8, True, (1 << 63) - 3)
        assert await mmio(ctx, regs, Reg.IPSR, 4) == 0
        await mmio(ctx, regs, Reg.IOCOUNTINH, 4, True, 0)
        for _ in range(10):
            await ctx.tick()
        cycles = await mmio(ctx, regs, Reg.IOHPMCYCLES, 8)
        assert cycles >> 63 == 1, f"OF not set: {cycles:#x}"
        assert 7 <= cycles & ((1 << 63) - 1) <= 20, f"{cycles:#x}"  # 10+ cycles, 3 to wrap
        assert await mmio(ctx, regs, Reg.IOCOUNTOVF, 4) == 1
        assert await mmio(ctx, regs, Reg.IPSR, 4) == Ipsr.PMIP.mask
        assert sent == [(0x1000, 0xCAFE)]
        # pmip is not a level: cleared, it stays clear; the sticky OF keeps counting quiet.
        await mmio(ctx, regs, Reg.IPSR, 4, True, Ipsr.PMIP.mask)
        assert await mmio(ctx, regs, Reg.IPSR, 4) == 0
        # inhibited: frozen
        await mmio(ctx, regs, Reg.IOCOUNTINH, 4, True, 1)
        a = await mmio(ctx, regs, Reg.IOHPMCYCLES, 8)
        b = await mmio(ctx, regs, Reg.IOHPMCYCLES, 8)
        assert a == b

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(msi_sink(regs, sent), background=True)
    sim.add_testbench(bench)
    sim.run()


def _event_source(ctx, port, device_id, pv, process_id, addr_type=0, gscid=None, pscid=None):
    ctx.set(port, {"device_id": device_id, "pv": pv, "process_id": process_id if pv else 0,
                   "addr_type": addr_type, "gscid_valid": gscid is not None,
                   "gscid": gscid or 0, "pscid_valid": pscid is not None, "pscid": pscid or 0})


def test_hpm_event_counters_with_filters_match_the_model():
    """Random events with random identities, counted by random selectors on both.
    Rerun a failure with HPM_SEED=<seed>."""
    seed = int(os.environ.get("HPM_SEED", random.randrange(1 << 30)))
    print(f"seed {seed}")
    rng = random.Random(seed)
    params = DEFAULT
    model = make_model(params)
    dut = Harness(params)
    regs = dut.regs
    n = params.hpm_counters
    ids = [0x10, 0x11, 0x13, 0x20]

    def selector():
        event = rng.choice([e for e in HpmEvent if e != HpmEvent.NONE] + [HpmEvent.NONE, 9])
        value = int(event)
        value |= rng.getrandbits(1) << 15  # DMASK
        value |= rng.choice([0, 1, 2, 7]) << 16  # PID_PSCID
        value |= rng.choice(ids + [0x11 | 0x3]) << 36  # DID_GSCID
        value |= rng.getrandbits(3) << 60  # PV_PSCV, DV_GSCV, IDT
        return value

    async def bench(ctx):
        for k in range(1, n + 1):
            value = selector()
            await mmio(ctx, regs, arch.iohpmevt(k), 8, True, value)
            model.write_register(arch.iohpmevt(k), 8, value)
        ctr_start = (1 << 64) - 2  # counter 1 wraps: OF and pmip
        await mmio(ctx, regs, arch.iohpmctr(1), 8, True, ctr_start)
        model.write_register(arch.iohpmctr(1), 8, ctr_start)
        inhibit = rng.getrandbits(n + 1) & ~0b10 | 1
        await mmio(ctx, regs, Reg.IOCOUNTINH, 4, True, inhibit)
        model.write_register(Reg.IOCOUNTINH, 4, inhibit)
        for _ in range(400):
            kind = rng.choice(["request", "ddt", "pdt", "walk"])
            dev, pv, pid = rng.choice(ids), rng.getrandbits(1), rng.choice([0, 1, 2, 7])
            gscid = rng.choice([None, 0x10, 0x13])
            pscid = rng.choice([None, 1, 2])
            events = []
            if kind == "request":
                addr_type = rng.choice(list(layouts.AddrType))
                _event_source(ctx, regs.ev_request_src, dev, pv, pid, addr_type.value)
                ctx.set(regs.ev_request, 1)
                events.append(HpmEvent(1 + addr_type.value))
                tags = (False, 0, False, 0)
            elif kind in ("ddt", "pdt"):
                _event_source(ctx, regs.ev_context_src, dev, pv, pid)
                ctx.set(regs.ev_ddt_walk if kind == "ddt" else regs.ev_pdt_walk, 1)
                events.append(HpmEvent.DDT_WALK if kind == "ddt" else HpmEvent.PDT_WALK)
                tags = (False, 0, False, 0)
            else:
                _event_source(ctx, regs.ev_walk_src, dev, pv, pid, gscid=gscid, pscid=pscid)
                ctx.set(regs.ev_walk, 1)
                if gscid is not None or pscid is not None:
                    events.append(HpmEvent.TLB_MISS)
                if pscid is not None:
                    events.append(HpmEvent.S_VS_PT_WALK)
                tags = (gscid is not None, gscid or 0, pscid is not None, pscid or 0)
            await ctx.tick()
            for s in ("ev_request", "ev_ddt_walk", "ev_pdt_walk", "ev_walk"):
                ctx.set(getattr(regs, s), 0)
            model._count_events([(e, dev, bool(pv), pid if pv else 0, *tags) for e in events])
        # An event shows in its counter EVENT_LATENCY cycles after it happens
        # (rtl/hpm.py): let the last ones land before reading.
        for _ in range(EVENT_LATENCY):
            await ctx.tick()
        for k in range(1, n + 1):
            for offset in (arch.iohpmctr(k), arch.iohpmevt(k)):
                got = await mmio(ctx, regs, offset, 8)
                want = model.read_register(offset, 8)
                assert got == want, (f"seed {seed}: {offset:#x}: RTL {got:#x} model {want:#x}"
                                     f" selector {model.iohpmevt[k]:#x}")
        assert await mmio(ctx, regs, Reg.IOCOUNTOVF, 4) == model.read_register(Reg.IOCOUNTOVF, 4)
        assert await mmio(ctx, regs, Reg.IPSR, 4) == model.ipsr, f"seed {seed}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(msi_sink(regs, []), background=True)
    sim.add_testbench(bench)
    sim.run()


def test_masked_msi_is_held_until_unmasked_and_refused_msi_reports_cause_273():
    params = SMALL
    dut = Harness(params)
    regs = dut.regs
    sent = []
    refused = 0x6000

    async def bench(ctx):
        await mmio(ctx, regs, Reg.ICVEC, 8, True, 0x21)  # civ 1, fiv 2
        for vector, addr in ((1, 0x4000), (2, refused)):
            a, d, _c = arch.msi_cfg(vector)
            await mmio(ctx, regs, a, 8, True, addr)
            await mmio(ctx, regs, d, 4, True, 0x100 + vector)
        await mmio(ctx, regs, arch.msi_cfg(1)[2], 4, True, 1)  # mask vector 1
        await mmio(ctx, regs, Reg.CQCSR, 4, True, Cqcsr.CIE.mask | Cqcsr.CQEN.mask)
        ctx.set(regs.set_cmd_ill, 1)
        await ctx.tick()
        ctx.set(regs.set_cmd_ill, 0)
        for _ in range(5):
            await ctx.tick()
        assert await mmio(ctx, regs, Reg.IPSR, 4) == Ipsr.CIP.mask
        assert sent == [], "a masked vector sent its MSI"
        await mmio(ctx, regs, arch.msi_cfg(1)[2], 4, True, 0)  # unmask: the MSI leaves
        for _ in range(5):
            await ctx.tick()
        assert sent == [(0x4000, 0x101)]
        # fip -> vector 2, whose store is refused: a fault record with cause 273.
        await mmio(ctx, regs, Reg.FQCSR, 4, True, Fqcsr.FIE.mask | Fqcsr.FQEN.mask)
        ctx.set(regs.fq_record_written, 1)
        await ctx.tick()
        ctx.set(regs.fq_record_written, 0)
        for _ in range(10):
            if ctx.get(regs.msi_fault.valid):
                break
            await ctx.tick()
        assert ctx.get(regs.msi_fault.valid)
        record = ctx.get(regs.msi_fault.payload)
        assert record.cause == arch.Cause.IOMMU_MSI_WRITE_ACCESS_FAULT
        assert record.ttyp == arch.Ttyp.NONE and record.iotval == refused

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(msi_sink(regs, sent, refuse=lambda addr: addr == refused),
                      background=True)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("case", [
    {"fault": True}, {"spa": 0x1234_5000, "size_log2": 12, "pbmt": 1},
    {"spa": 0x4020_0000, "size_log2": 21}, {"spa": 0x8000_0000, "size_log2": 30, "pbmt": 2},
])
def test_debug_translation_request_and_tr_response(case):
    """Writing Go issues one Untranslated request from tr_req_*; its completion is
    encoded in tr_response as models.iommu.tr_response_value encodes it."""
    params = SMALL
    dut = Harness(params)
    regs = dut.regs
    ctl = (arch.TrReqCtl.DID.put(0x123) | arch.TrReqCtl.PID.put(5) | arch.TrReqCtl.PV.put(1)
           | arch.TrReqCtl.PRIV.put(1) | arch.TrReqCtl.NW.put(1) | arch.TrReqCtl.EXE.put(1))

    async def bench(ctx):
        await mmio(ctx, regs, Reg.TR_REQ_IOVA, 8, True, 0xDEAD_B000 | 0xABC)
        ctx.set(regs.tr_request.ready, 0)
        await mmio(ctx, regs, Reg.TR_REQ_CTL, 8, True, ctl | 1)
        assert await mmio(ctx, regs, Reg.TR_REQ_CTL, 8) == ctl | 1  # Busy
        await mmio(ctx, regs, Reg.TR_REQ_IOVA, 8, True, 0)  # ignored while busy
        assert ctx.get(regs.tr_request.valid)
        req = ctx.get(regs.tr_request.payload)
        assert (req.device_id, req.process_id, req.pv, req.priv) == (0x123, 5, 1, 1)
        assert req.iova == 0xDEAD_B000 and req.access == layouts.Access.EXECUTE
        assert req.addr_type == layouts.AddrType.UNTRANSLATED
        ctx.set(regs.tr_request.ready, 1)
        await ctx.tick()
        ctx.set(regs.tr_request.ready, 0)
        await ctx.tick()
        assert not ctx.get(regs.tr_request.valid), "one request per Go"
        fault = case.get("fault", False)
        ctx.set(regs.tr_result.payload, {
            "fault": int(fault), "cause": 13 if fault else 0, "spa": case.get("spa", 0),
            "size_log2": case.get("size_log2", 0), "r": 1, "pbmt": case.get("pbmt", 0)})
        ctx.set(regs.tr_result.valid, 1)
        await ctx.tick()
        ctx.set(regs.tr_result.valid, 0)
        assert await mmio(ctx, regs, Reg.TR_REQ_CTL, 8) == ctl  # Busy fell
        want = tr_response_value(Response.fault(13) if fault else Response(
            Status.SUCCESS, spa=case.get("spa", 0), page_size=1 << case.get("size_log2", 12),
            pbmt=case.get("pbmt", 0)))
        assert await mmio(ctx, regs, Reg.TR_RESPONSE, 8) == want

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(msi_sink(regs, []), background=True)
    sim.add_testbench(bench)
    sim.run()
