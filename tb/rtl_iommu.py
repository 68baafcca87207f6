"""The RTL IOMMU behind the reference model's blocking API, and the two run in lockstep.

``models.iommu.IOMMU`` has three doors: ``read_register``/``write_register``,
``translate`` and ``process_commands`` (plus ``tick`` and ``wired_interrupts``).
``RtlIommu`` offers the same doors on the RTL top under cocotb, so the OS driver
model (``models/os/driver.py``), devices and scenarios run on the hardware
unchanged. Blocking code cannot await, so it runs in a cocotb *bridge* thread and
each door *resumes* the simulation until the access is done::

    tb = TopTB(dut, memory)
    await tb.reset()
    iommu = RtlIommu(tb)
    await cocotb.task.bridge(my_blocking_os_code)(iommu)   # calls iommu.write_register...

Simulated time moves only inside a door: the CPU's stores to memory (page tables,
commands) take no cycles, MMIO accesses and translations take what the RTL takes.

``Lockstep`` drives an ``RtlIommu`` and a ``models.iommu.IOMMU`` with the same
calls and fails on the first register value or translation where they differ. Each
has its own memory (each sets A/D bits, writes fault records and fence data by
itself); ``MirrorMemory`` copies the CPU's stores into both, and
``Lockstep.compare_memories`` checks afterwards that the IOMMUs' own writes agree.
"""

from __future__ import annotations

from dataclasses import replace

from cocotb.task import resume

from models import arch
from models.arch import Cqcsr, Reg
from models.memory import Memory
from models.transaction import Request, Response

from .env import memory_differences
from .scoreboard import describe, differences
from .top_env import WHO_RTL, TopTB


class RtlIommu:
    """``models.iommu.IOMMU``'s API on the RTL (call from a cocotb bridge thread)."""

    def __init__(self, tb: TopTB, *, queue_timeout_cycles: int = 200000):
        self.tb = tb
        self.queue_timeout_cycles = queue_timeout_cycles
        self.commands_completed = 0
        self.queue_cycles = 0  # cycles spent waiting for the command queue to drain

    # ------------------------------------------------------------ registers
    def read_register(self, offset: int, size: int) -> int:
        return resume(self.tb.read_register)(offset, size)

    def write_register(self, offset: int, size: int, value: int) -> None:
        resume(self.tb.write_register)(offset, size, value)

    @property
    def wired_interrupts(self) -> set[int]:
        return self.tb.wired_interrupts

    # ---------------------------------------------------------- translation
    def translate(self, request: Request) -> Response:
        return self.translate_all([request])[0]

    def translate_all(self, requests: list[Request]) -> list[Response]:
        """Send a batch back to back (the RTL overlaps them); responses in order."""
        async def run():
            responses = await self.tb.translate_all(requests)
            if any(not r.ok for r in responses):
                await self.tb.quiesce()  # the fault records trail the responses
            return responses
        responses = resume(run)()
        return [replace(r, tag=q.tag) for q, r in zip(requests, responses)]

    # -------------------------------------------------------- command queue
    def process_commands(self, limit: int | None = None) -> int:
        """Wait until the RTL's command queue is empty, off or stopped; the number of
        commands it completed meanwhile. (The RTL runs its queue by itself; a driver
        polls cqh the same way.)"""
        return resume(self._drain_queue)()

    async def _drain_queue(self) -> int:
        tb = self.tb
        start = tb.cycle
        head0 = await tb.read_register(Reg.CQH, 4)
        entries = 1 << (arch.QueueBase.LOG2SZ_1.get(await tb.read_register(Reg.CQB, 8)) + 1)
        while True:
            csr = await tb.read_register(Reg.CQCSR, 4)
            head = await tb.read_register(Reg.CQH, 4)
            tail = await tb.read_register(Reg.CQT, 4)
            stopped = csr & (Cqcsr.CMD_ILL.mask | Cqcsr.CQMF.mask | Cqcsr.CMD_TO.mask)
            if head == tail or stopped or not Cqcsr.CQON.get(csr):
                break
            if tb.cycle - start > self.queue_timeout_cycles:
                raise AssertionError(f"command queue stuck at cqh={head} cqt={tail} "
                                     f"cqcsr={csr:#x} for {self.queue_timeout_cycles} cycles "
                                     f"(seed {tb.seed_text})")
        done = (head - head0) % entries
        self.commands_completed += done
        self.queue_cycles += tb.cycle - start
        return done

    @property
    def iotlb_entries(self) -> int:
        """The IOTLB size the RTL was built with (a scenario cannot choose it)."""
        return self.tb.params.iotlb_entries

    def report_fault(self, record: arch.FaultRecord) -> None:
        """A fault the bridge found (``bridge_fault`` port; see models.iommu.IOMMU).
        Whether the record reached the queue shows in fqt/fqcsr, not here."""
        resume(self.tb.report_fault)(record)

    # ----------------------------------------------------------------- time
    def tick(self, cycles: int = 1) -> None:
        resume(self.tb.cycles)(cycles)

    @property
    def cycle(self) -> int:
        return self.tb.cycle


class MirrorMemory(Memory):
    """A memory whose CPU stores are copied into ``twin``.

    The RTL's memory responder writes here with ``who == own`` (its A/D updates, fault
    records...): those stay here, as the model IOMMU's own writes stay in the twin.
    Everything else (the OS building tables, writing commands, frames being zeroed
    by the allocator, ``poke64``: all reach ``_raw_write``) goes to both.
    """

    def __init__(self, twin: Memory, own: str = WHO_RTL):
        super().__init__()
        self.twin, self.own = twin, own
        self._solo = False

    def _raw_write(self, addr: int, data: bytes) -> None:
        super()._raw_write(addr, data)
        if not self._solo:
            self.twin._raw_write(addr, data)

    def write(self, addr: int, data: bytes, who: str = "") -> None:
        self._solo = who == self.own
        try:
            super().write(addr, data, who)
        finally:
            self._solo = False

    def cas64(self, addr: int, expected: int, new: int, who: str = "") -> int:
        self._solo = True
        try:
            return super().cas64(addr, expected, new, who)
        finally:
            self._solo = False

    def inject_fault(self, start, size, kind="access"):
        super().inject_fault(start, size, kind)
        self.twin.inject_fault(start, size, kind)

    def clear_faults(self) -> None:
        super().clear_faults()
        self.twin.clear_faults()


def model_iommu(params, memory: Memory):
    """The reference IOMMU (``models.iommu.IOMMU``) with the RTL's implementation
    choices (``rtl.params.IOMMUParams``): capabilities, HPM counters, cache sizes."""
    from models.iommu import IOMMU

    return IOMMU(memory, capabilities=params.capabilities,
                 fctl_reset=getattr(params, "fctl_reset", 0),
                 hpm_counters=getattr(params, "hpm_counters", 7),
                 ddt_cache_entries=params.dc_cache_entries,
                 pdt_cache_entries=params.pc_cache_entries,
                 iotlb_entries=params.iotlb_entries)


class LockstepMismatch(AssertionError):
    pass


#: Registers whose value depends on time, not on what was done: not compared.
TIMING_REGISTERS = {Reg.IOHPMCYCLES}
#: Registers that show the command queue's progress: compared once both have drained it.
QUEUE_PROGRESS_REGISTERS = {Reg.CQH, Reg.CQCSR, Reg.IPSR}
#: Registers whose write can make the command queue run (a new cqt, the queue enabled
#: or its errors cleared, a new base).
QUEUE_START_REGISTERS = {Reg.CQT, Reg.CQCSR, Reg.CQB, Reg.CQB + 4}


class Lockstep:
    """The RTL and the reference model side by side behind one IOMMU API.

    Every register read is made on both and compared (except ``TIMING_REGISTERS``);
    writes go to both; every translation is made on both and compared (fault vs
    success, cause, SPA, size, permissions, and whether a fault record was written).
    The RTL's values are returned, so the caller runs on the hardware.
    """

    def __init__(self, rtl: RtlIommu, model, rtl_memory: MirrorMemory, model_memory: Memory):
        self.rtl, self.model = rtl, model
        self.rtl_memory, self.model_memory = rtl_memory, model_memory
        self.register_reads = self.register_writes = self.translations = 0
        self.log: list[str] = []
        self.fault_queues: set[tuple[int, int]] = set()  # (base, end) of every FQ programmed

    def _trace(self, text: str) -> None:
        """The last accesses, quoted when a mismatch is reported."""
        self.log.append(f"cycle {self.rtl.tb.cycle}: {text}")
        del self.log[:-12]

    def _fail(self, text: str) -> None:
        history = "\n  ".join(self.log)
        raise LockstepMismatch(f"{text} (seed {self.rtl.tb.seed_text}, after "
                               f"{self.register_reads} reads, {self.register_writes} writes, "
                               f"{self.translations} translations); last accesses:\n  "
                               f"{history}")

    def read_register(self, offset: int, size: int) -> int:
        if offset in QUEUE_PROGRESS_REGISTERS:
            # The RTL runs its command queue by itself, the model when asked: let both
            # finish what is queued before comparing where they are.
            self.rtl.process_commands()
            self.model.process_commands()
        got = self.rtl.read_register(offset, size)
        expected = self.model.read_register(offset, size)
        self.register_reads += 1
        self._trace(f"read {_reg_name(offset)} ({size}) = {got:#x}")
        if offset not in TIMING_REGISTERS and got != expected:
            self._fail(f"register {_reg_name(offset)} ({size} bytes): RTL {got:#x}, "
                       f"model {expected:#x}")
        return got

    def write_register(self, offset: int, size: int, value: int) -> None:
        self.rtl.write_register(offset, size, value)
        self.model.write_register(offset, size, value)
        self.register_writes += 1
        self._trace(f"write {_reg_name(offset)} ({size}) {value:#x}")
        if offset in QUEUE_START_REGISTERS:
            # The RTL starts on what this write queued at once, the model only when
            # asked: let both run it now, before anything else (memory faults injected
            # under the queue, say) can change what they would fetch.
            self.rtl.process_commands()
            self.model.process_commands()
        if offset in (Reg.FQB, Reg.FQB + 4):  # whole, or either 32-bit half
            fqb = self.model.fq.base
            base = arch.QueueBase.PPN.get(fqb) << arch.PAGE_SHIFT
            entries = 1 << (arch.QueueBase.LOG2SZ_1.get(fqb) + 1)
            self.fault_queues.add((base, base + entries * arch.FAULT_RECORD_SIZE))

    def translate(self, request: Request) -> Response:
        return self.translate_all([request])[0]

    def translate_all(self, requests: list[Request]) -> list[Response]:
        got = self.rtl.translate_all(requests)
        for request, response in zip(requests, got):
            expected = self.model.translate(request)
            self.translations += 1
            diff = differences(expected, response)
            if diff:
                self._fail(f"{describe(request)}: expected {expected}, got {response} "
                           f"({', '.join(diff)})")
        return got

    def process_commands(self, limit: int | None = None) -> int:
        done = self.rtl.process_commands(limit)
        self.model.process_commands(limit)
        return done

    def report_fault(self, record: arch.FaultRecord) -> bool:
        self.rtl.report_fault(record)
        return self.model.report_fault(record)

    def tick(self, cycles: int = 1) -> None:
        self.rtl.tick(cycles)
        self.model.tick(cycles)

    @property
    def wired_interrupts(self) -> set[int]:
        got, expected = self.rtl.wired_interrupts, self.model.wired_interrupts
        if got != expected:
            self._fail(f"wired interrupt lines: RTL {sorted(got)}, model {sorted(expected)}")
        return got

    def compare_memories(self) -> list[str]:
        """Differences between the two memories. Fault queues are compared as multisets
        of records: the RTL writes records in completion order, which for requests in
        flight together need not be request order (the spec does not order them)."""
        out = []
        pages = sorted(set(self.rtl_memory._pages) | set(self.model_memory._pages))

        def records(memory, base, end):
            """The non-empty 32-byte slots of [base, end), reading only pages that exist
            (a fuzzed fqb can describe a queue of gigabytes)."""
            out = []
            for page in pages:
                lo, hi = max(page << 12, base), min((page + 1) << 12, end)
                if lo < hi:
                    raw = memory._raw_read(lo, hi - lo)
                    out += [raw[i:i + arch.FAULT_RECORD_SIZE]
                            for i in range(0, len(raw), arch.FAULT_RECORD_SIZE)]
            return sorted(r for r in out if any(r))

        # Queues programmed over one another are one region: a batch's records may sit
        # on either side of where one queue ends inside another.
        regions: list[list[int]] = []
        for base, end in sorted(self.fault_queues):
            if regions and base <= regions[-1][1]:
                regions[-1][1] = max(regions[-1][1], end)
            else:
                regions.append([base, end])
        for base, end in regions:
            got = records(self.rtl_memory, base, end)
            expected = records(self.model_memory, base, end)
            if got != expected:
                extra = [arch.FaultRecord.unpack(r) for r in got if r not in expected]
                missing = [arch.FaultRecord.unpack(r) for r in expected if r not in got]
                out.append(f"fault queue at {base:#x}: RTL wrote {extra[:3]} the model did "
                           f"not; the model wrote {missing[:3]} the RTL did not")
        return out + memory_differences(self.rtl_memory, self.model_memory,
                                        exclude=tuple(self.fault_queues))


def _reg_name(offset: int) -> str:
    try:
        return Reg(offset).name.lower()
    except ValueError:
        return f"{offset:#x}"
