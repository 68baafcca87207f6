"""The testbench tested on a stand-in DUT (``stub_core.MemoryEchoCore``).

Run with ``tb.runner.run("tb.tests.test_tb_selfcheck", design=STUB_DESIGN)``.
Checks the memory responder (READ / WRITE / CAS, access faults and poison,
latency, reordering, back-pressure), the driver's tags, the monitors and the
scoreboard, including that the scoreboard does catch a wrong answer.
"""

import copy
import random

import cocotb

from models import arch
from models.memory import Memory
from models.transaction import Request
from tb.env import TB
from tb.tests.stub_core import StubReference

READ_BASE, WRITE_BASE, CAS_BASE = 0x1000_0000, 0x2000_0000, 0x3000_0000
REGION = 0x1_0000
FAULT_AT, POISON_AT = READ_BASE + 0x8000, READ_BASE + 0xC000


def build_memory(rng: random.Random) -> Memory:
    memory = Memory()
    for addr in range(READ_BASE, READ_BASE + REGION, 8):
        memory.poke64(addr, rng.getrandbits(64))
    for addr in range(CAS_BASE, CAS_BASE + REGION, 16):
        memory.poke64(addr, rng.getrandbits(64))  # odd dwords stay 0: their CAS succeeds
    memory.inject_fault(FAULT_AT, 0x100, "access")
    memory.inject_fault(POISON_AT, 0x100, "poison")
    return memory


def random_requests(rng: random.Random, count: int) -> list[Request]:
    # WRITE and CAS go to addresses used once: the RTL's memory sees them in
    # completion order, the model's in request order.
    writes = iter(rng.sample(range(WRITE_BASE, WRITE_BASE + REGION, 8), count))
    cas = iter(rng.sample(range(CAS_BASE, CAS_BASE + REGION, 8), count))
    out = []
    for _ in range(count):
        access = rng.choice(list(arch.Access))
        if access == arch.Access.READ:
            iova = rng.choice([rng.randrange(READ_BASE, READ_BASE + REGION),
                               rng.randrange(FAULT_AT, FAULT_AT + 0x100),
                               rng.randrange(POISON_AT, POISON_AT + 0x100)])
        elif access == arch.Access.WRITE:
            iova = next(writes) + rng.randrange(8)
        else:
            iova = next(cas)
        pv = rng.random() < 0.5
        out.append(Request(device_id=rng.getrandbits(24), iova=iova, access=access,
                           process_id=rng.getrandbits(20) if pv else 0, pv=pv,
                           priv=arch.Priv(rng.getrandbits(1)) if pv else arch.Priv.USER))
    return out


@cocotb.test()
@cocotb.parametrize(stress=[False, True])
async def responder_driver_monitors_scoreboard(dut, stress):
    """Random READ/WRITE/CAS traffic with faults and poison; memories agree afterwards."""
    seed = cocotb.RANDOM_SEED
    rng = random.Random(seed)
    memory = build_memory(rng)
    reference = StubReference(copy.deepcopy(memory))
    tb = TB(dut, memory, reference=reference)
    tb.stress(stress)
    await tb.reset()
    tb.configure(0, 0)
    requests = random_requests(rng, 600)
    results = await tb.translate_all(requests)
    figures = tb.report()
    assert figures["checked"] == len(requests) and figures["mismatches"] == 0
    assert all(response is not None for _, response in results)
    counts = {a: sum(r.access == a for r in requests) for a in arch.Access}
    mem = figures["memory"]
    assert mem["reads"] == counts[arch.Access.READ], mem
    assert mem["writes"] == counts[arch.Access.WRITE], mem
    assert mem["cas"] == counts[arch.Access.EXECUTE], mem
    assert figures["fault_reports_matched"] > 0
    if stress:
        assert mem["max_outstanding"] > 1, "reordering needs several requests outstanding"
    for base in (WRITE_BASE, CAS_BASE):
        for addr in range(base, base + REGION, 8):
            assert memory.peek64(addr) == reference.memory.peek64(addr), (
                f"RTL-side and model-side memory differ at {addr:#x} (seed {tb.seed_text})")
    # Tags: several requests were in flight, and results come back in request order.
    assert [r.iova for r, _ in results] == [r.iova for r in requests]
    # An invalidation drains the requests, then is transferred exactly once.
    await tb.invalidate("IODIR_INVAL_DDT", dv=1, device_id=5)
    assert tb.inval.transfers == 1


@cocotb.test()
async def scoreboard_catches_a_wrong_answer(dut):
    """A reference that disagrees on one request must produce exactly one mismatch."""
    seed = cocotb.RANDOM_SEED
    rng = random.Random(seed)
    memory = build_memory(rng)
    honest = StubReference(copy.deepcopy(memory))
    victim = READ_BASE + 0x40

    def lying(request):
        response, record = honest(request)
        if request.iova == victim:
            from dataclasses import replace

            response = replace(response, spa=response.spa ^ 1)
        return response, record

    tb = TB(dut, memory, reference=lying)
    await tb.reset()
    tb.configure(0, 0)
    await tb.translate_all([Request(device_id=1, iova=READ_BASE),
                            Request(device_id=0x42, iova=victim, process_id=7, pv=True),
                            Request(device_id=1, iova=READ_BASE + 8)])
    mismatches = tb.scoreboard.mismatches
    assert len(mismatches) == 1, mismatches
    message = mismatches[0]
    for part in ("device 0x42", "process 0x7", f"iova {victim:#x}", "access R", "spa differ",
                 f"seed {tb.seed_text}"):
        assert part in message, f"{part!r} missing from {message!r}"
    assert tb.report(check=False)["mismatches"] == 1
