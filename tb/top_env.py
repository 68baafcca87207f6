"""The testbench for the whole IOMMU (``rtl/iommu.py`` ``Iommu``): registers, queues, core.

Where ``tb.env.TB`` drives the translation core's ports directly (ddtp, fctl, an
invalidation stream), ``TopTB`` talks to the IOMMU only through the doors a real
system has:

* the register page, as 4- and 8-byte MMIO reads and writes (``mmio_req/mmio_resp``);
* the device port, translation requests and their responses (``request/response``);
* the IOMMU's own memory port (walks, A/D updates, command fetches, fault records,
  IOFENCE.C data, MSIs), served from a ``models.memory.Memory`` by the memory responder;
* the wired interrupt lines ``wsi``.

Everything is ``async``. ``tb.rtl_iommu.RtlIommu`` wraps it in the blocking API of
``models.iommu.IOMMU`` so the OS driver model can program the RTL unchanged.
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, First, RisingEdge, Timer

from models import arch
from models.memory import Memory
from models.transaction import Request, Response
from rtl import layouts

from . import packing
from .driver import RequestDriver
from .env import CLOCK_PERIOD_NS, params_from_env
from .memory_responder import MemoryResponder
from .monitor import ResponseMonitor
from .stream import CycleLoop, StreamBus, StreamSink, StreamSource, burst_pattern

#: The memory request payload without its id: op, addr, wdata, compare.
_MEM_REQ_FIXED_BITS = packing.width(layouts.mem_request(1)) - 1

#: The software view of the CPU's stores to memory, in access logs.
WHO_RTL = "iommu-rtl"


class TopTB:
    """Clock, reset, MMIO master, device port and memory for the ``Iommu`` top.

    memory: what the RTL's memory port reads and writes (page tables, queues...).
    seed: seeds the TB's random choices (default ``cocotb.RANDOM_SEED``).
    """

    def __init__(self, dut, memory: Memory | None = None, *, seed: int | None = None,
                 latency: int | tuple[int, int] = 2):
        self.dut = dut
        self.params = params_from_env()
        self.seed = cocotb.RANDOM_SEED if seed is None else seed
        run_seed = os.environ.get("COCOTB_RANDOM_SEED")
        self.seed_text = (f"{seed}" if seed is not None or run_seed is None
                          else f"{run_seed} (COCOTB_RANDOM_SEED)")
        self.rng = random.Random(self.seed)
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        self.memory = memory if memory is not None else Memory()

        Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
        dut.rst.value = 0
        self.loop = CycleLoop(dut.clk)
        tag_bits = self.params.tag_bits
        self.driver = RequestDriver(self.loop, dut, tag_bits, on_sent=self._sent)
        self.responses = ResponseMonitor(self.loop, dut, tag_bits, on_response=self._response,
                                         keep=False)
        mem_id_bits = len(dut.mem_req__payload) - _MEM_REQ_FIXED_BITS
        self.responder = MemoryResponder(self.loop, dut, self.memory, mem_id_bits,
                                         rng=random.Random(self.rng.random()), latency=latency,
                                         who=WHO_RTL)
        self.mmio_out = StreamSource(self.loop, StreamBus(dut, "mmio_req"))
        # The bridge's faults (MRIF updates refused or poisoned, §9.4).
        self.bridge_faults = StreamSource(self.loop, StreamBus(dut, "bridge_fault"))
        self.mmio_in = StreamSink(self.loop, StreamBus(dut, "mmio_resp"), self._mmio_response)
        self._mmio_waiting: list[tuple[Event, list]] = []
        self._waiting: dict[int, tuple[Event, list]] = {}  # tag -> (done, [response])
        self.sent_cycle: dict[int, int] = {}  # tag -> cycle the request was accepted
        self.on_response = None  # optional callback(request, response, sent, cycle)
        self.loop.start()
        self.log.info("TopTB seed %s, params %s", self.seed_text, self.params)

    # ------------------------------------------------------------- control
    @property
    def cycle(self) -> int:
        return self.loop.cycle

    async def reset(self, cycles: int = 5) -> None:
        self.loop.frozen = True
        await RisingEdge(self.dut.clk)
        for source in (self.driver, self.mmio_out, self.bridge_faults, self.responder):
            source.reset()
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        self.loop.frozen = False
        await RisingEdge(self.dut.clk)

    async def cycles(self, n: int) -> None:
        for _ in range(n):
            await RisingEdge(self.dut.clk)

    def stress(self, probability: float = 0.3, latency: tuple[int, int] = (1, 12)) -> None:
        """Random back-pressure on every stream and random, reordered memory latency."""
        def pattern():
            return burst_pattern(random.Random(self.rng.random()), probability / 3, 4)
        self.driver.pause = pattern()
        self.responses.backpressure = pattern()
        self.mmio_out.pause = pattern()
        self.mmio_in.backpressure = pattern()
        self.responder.set_backpressure(pattern())
        self.responder.set_idle(pattern())
        self.responder.latency = latency
        self.responder.reorder = True

    # ---------------------------------------------------------- registers
    def _mmio_response(self, word: int, cycle: int) -> None:
        done, box = self._mmio_waiting.pop(0)
        box.append(packing.unpack(layouts.MmioResponse, word)["rdata"])
        done.set()

    async def _mmio(self, offset: int, write: bool, wide: bool, wdata: int = 0) -> int:
        if not 0 <= offset < 1 << layouts.REG_OFFSET_BITS or offset % (8 if wide else 4):
            raise ValueError(f"register offset {offset:#x} is not a naturally aligned "
                             f"{8 if wide else 4}-byte access in the 4 KiB page")
        done, box = Event(), []
        self._mmio_waiting.append((done, box))
        self.mmio_out.send(packing.pack(layouts.MmioRequest, {
            "addr": offset, "write": int(write), "wide": int(wide), "wdata": wdata}))
        await First(done.wait(), Timer(CLOCK_PERIOD_NS * 2000, unit="ns"))
        if not done.is_set():
            raise AssertionError(f"no MMIO response in 2000 cycles to a "
                                 f"{'write' if write else 'read'} of {offset:#x} "
                                 f"(seed {self.seed_text})")
        await RisingEdge(self.dut.clk)  # leave the read-only phase
        return box[0]

    async def read_register(self, offset: int, size: int) -> int:
        value = await self._mmio(offset, False, size == 8)
        return value if size == 8 else value & 0xFFFF_FFFF

    async def write_register(self, offset: int, size: int, value: int) -> None:
        await self._mmio(offset, True, size == 8, value & ((1 << (8 * size)) - 1))

    @property
    def wired_interrupts(self) -> set[int]:
        value = int(self.dut.wsi.value)
        return {i for i in range(16) if value >> i & 1}

    async def report_fault(self, record: arch.FaultRecord) -> None:
        """Offer ``record`` on ``bridge_fault`` and wait until the IOMMU has written it
        (or dropped it: a full, off or stopped fault queue)."""
        self.bridge_faults.send(packing.fault_record_payload(record))
        await self.quiesce()

    # -------------------------------------------------------- translations
    def _sent(self, waiter, request: Request, cycle: int) -> None:
        self.sent_cycle[request.tag] = cycle
        if waiter is not None:
            self._waiting[request.tag] = waiter

    def _response(self, response: Response, cycle: int) -> None:
        request = self.driver.release(response.tag)
        sent = self.sent_cycle.pop(response.tag, None)
        if self.on_response is not None and request is not None:
            self.on_response(request, response, sent, cycle)
        waiter = self._waiting.pop(response.tag, None)
        if waiter is not None:
            waiter[1].append(response)
            waiter[0].set()

    def send(self, request: Request) -> None:
        """Queue a request without waiting for it (see ``on_response``)."""
        self.driver.send(request)

    async def translate_all(self, requests, stall_cycles: int = 20000) -> list[Response]:
        """Send ``requests``, wait for every response; responses in request order."""
        boxes = []
        for request in requests:
            done, box = Event(), []
            boxes.append((done, box))
            self.driver.send(request, (done, box))
        # Tags are given out when a request is offered; _sent files each waiter by tag.
        pending = list(boxes)
        start = self.cycle
        while pending:
            await First(pending[0][0].wait(), Timer(CLOCK_PERIOD_NS * 64, unit="ns"))
            pending = [p for p in pending if not p[0].is_set()]
            if pending and self.cycle - start > stall_cycles:
                raise AssertionError(f"{len(pending)} translations unanswered after "
                                     f"{stall_cycles} cycles (seed {self.seed_text})")
        await RisingEdge(self.dut.clk)
        return [box[0] for _done, box in boxes]

    async def translate(self, request: Request) -> Response:
        return (await self.translate_all([request]))[0]

    # ------------------------------------------------------------ quiescence
    async def quiesce(self, idle_cycles: int = 24, limit: int = 100000) -> None:
        """Wait until the IOMMU has made no memory request for ``idle_cycles`` and has
        none outstanding (fault records and MSIs trail the responses that caused them).
        The idle time counts from the call at the earliest: a fault answered from the
        caches makes no memory request before its record, so the port may have been
        idle for long when its response came."""
        start = self.cycle
        while True:
            idle_since = max(start, self.responder.last_request_cycle)
            if not self.responder.outstanding and self.cycle - idle_since >= idle_cycles:
                break
            if self.cycle - start > limit:
                raise AssertionError(f"the IOMMU's memory port never went idle in {limit} "
                                     f"cycles (seed {self.seed_text})")
            await RisingEdge(self.dut.clk)

    def check_protocol(self) -> None:
        if self.responder.violations:
            raise AssertionError("memory port protocol violations:\n  "
                                 + "\n  ".join(self.responder.violations[:10]))
