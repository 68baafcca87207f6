"""The AXI4 bridge's MRIF writer (``rtl/axi_mrif.py``) alone, in the Amaranth simulator,
on its unhappy paths: the MRIF refuses the read or the write of its pending word (an
MRIF access fault, cause 264, §9.4), or the notice MSI is refused. The memory is a
``models.memory.Memory`` behind a small AXI responder that answers SLVERR to reads or
writes of the addresses it is told to refuse. The fault record expected is built with ``models.arch`` from the
request (``arch.FaultRecord``, ``arch.ttyp_of``); the happy path is judged against the
hypervisor model's bridge in ``tb/tests/test_axi.py``.
"""

from __future__ import annotations

import pytest
from amaranth.sim import Simulator

from models import arch
from models.memory import Memory
from rtl.axi import Resp
from rtl.axi_mrif import MrifWriter

MRIF, NOTICE, NID = 0x8000_0200, 0x9000, 0x15
JOB = {"mrif": MRIF, "notice": NOTICE, "nid": NID, "offset": 0, "device_id": 0x1234,
       "process_id": 0x45, "pv": 1, "priv": 1, "iova": 0x2000_0000}


def run_writer(memory: Memory, identity: int, refuse_read=(), refuse_write=()):
    """One MSI through the writer; (BRESP, fault record or None, cycles)."""
    dut = MrifWriter(pa_width=56, data_width=64)
    out = {}

    async def memory_side(ctx):
        bus = dut.m_axi
        while True:
            ctx.set(bus.arready, 1)
            ctx.set(bus.awready, 1)
            ctx.set(bus.wready, 1)
            _, _, arv, araddr, awv, awaddr, wv, wdata, wstrb = await ctx.tick().sample(
                bus.arvalid, bus.araddr, bus.awvalid, bus.awaddr, bus.wvalid, bus.wdata,
                bus.wstrb)
            if arv:
                if araddr in refuse_read:
                    rdata, rresp = 0, Resp.SLVERR
                else:
                    rdata, rresp = memory.read64(araddr, who="mrif"), Resp.OKAY
                ctx.set(bus.rvalid, 1)
                ctx.set(bus.rdata, rdata)
                ctx.set(bus.rresp, rresp)
                await ctx.tick().until(bus.rready)
                ctx.set(bus.rvalid, 0)
            if awv:
                if not wv:
                    *_, wdata, wstrb = await ctx.tick().sample(bus.wdata, bus.wstrb).until(
                        bus.wvalid)
                data = int(wdata).to_bytes(8, "little")
                bresp = Resp.SLVERR if awaddr in refuse_write else Resp.OKAY
                for i in range(8):
                    if bresp == Resp.OKAY and int(wstrb) >> i & 1:
                        memory.write(int(awaddr) - int(awaddr) % 8 + i, data[i:i + 1], "mrif")
                ctx.set(bus.bvalid, 1)
                ctx.set(bus.bresp, bresp)
                await ctx.tick().until(bus.bready)
                ctx.set(bus.bvalid, 0)

    async def device_side(ctx):
        ctx.set(dut.ordered, 1)
        ctx.set(dut.job.payload, JOB)
        ctx.set(dut.job.valid, 1)
        ctx.set(dut.beat.payload, {"data": identity, "strb": 0xF})
        ctx.set(dut.beat.valid, 1)
        ctx.set(dut.result.ready, 1)
        ctx.set(dut.fault.ready, 1)
        cycles, fault = 0, None
        while True:
            _, _, fv, fp, rv, rp, bv, jr = await ctx.tick().sample(
                dut.fault.valid, dut.fault.payload, dut.result.valid, dut.result.payload,
                dut.beat.ready, dut.job.ready)
            cycles += 1
            if bv:
                ctx.set(dut.beat.valid, 0)
            if jr:
                ctx.set(dut.job.valid, 0)
            if fv:
                fault = arch.FaultRecord(
                    cause=fp.cause, ttyp=fp.ttyp, device_id=fp.device_id,
                    process_id=fp.process_id, pv=bool(fp.pv), priv=bool(fp.priv),
                    iotval=fp.iotval, iotval2=fp.iotval2)
            if rv:
                out["result"] = (Resp(rp), fault, cycles)
                return
            assert cycles < 500, "the MRIF writer never answered"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(memory_side)
    sim.add_testbench(device_side)
    sim.run()
    return out["result"]


def expected_record() -> arch.FaultRecord:
    return arch.FaultRecord(
        cause=arch.Cause.MRIF_ACCESS_FAULT,
        ttyp=arch.ttyp_of(arch.AddrType.UNTRANSLATED, arch.Access.WRITE),
        device_id=JOB["device_id"], process_id=JOB["process_id"], pv=True, priv=True,
        iotval=JOB["iova"], iotval2=0)


@pytest.mark.parametrize("refused", ["read", "write"])
def test_refused_mrif_is_an_mrif_access_fault(refused):
    """The pending word of identity 70 (MRIF + 16) refuses the read, or only the write:
    a cause-264 record for the device's MSI, SLVERR, no notice."""
    memory = Memory()
    word = MRIF + 16 * (70 // 64)
    resp, fault, _ = run_writer(memory, 70, refuse_read={word} if refused == "read" else (),
                                refuse_write={word})
    assert resp == Resp.SLVERR
    assert fault == expected_record()
    assert memory.peek64(NOTICE) & 0xFFFF_FFFF == 0  # no notice after a failed update


def test_refused_notice_is_slverr_without_a_record():
    memory = Memory()
    resp, fault, _ = run_writer(memory, 70, refuse_write={NOTICE})
    assert resp == Resp.SLVERR and fault is None
    assert memory.peek64(MRIF + 16) == 1 << (70 % 64)  # the interrupt was recorded


def test_good_msi_records_and_notifies_without_a_fault():
    memory = Memory()
    resp, fault, cycles = run_writer(memory, 70)
    assert resp == Resp.OKAY and fault is None
    assert memory.peek64(MRIF + 16) == 1 << (70 % 64)
    assert memory.peek64(NOTICE) & 0xFFFF_FFFF == NID
    print(f"MRIF MSI with a 1-cycle memory: {cycles} cycles")
