"""Clocked valid/ready stream models shared by the driver, monitors and memory responder.

Every model in the testbench runs off one ``CycleLoop``: after each rising edge
it calls ``drive()`` on every member (the only place signals are written), then
waits for ``ReadOnly`` and calls ``sample()`` (read only). What ``sample()``
sees in cycle *c* is what the flops capture at edge *c+1*, so a transfer is
``valid & ready`` as sampled there, on every simulator, without relying on
when a simulator updates registered outputs relative to the ``RisingEdge``
callback. One loop instead of a coroutine per interface keeps the trigger count
at two per clock cycle, which is what makes thousands of transactions cheap.

Stress is switchable, cocotbext-axi style: a source's ``pause`` and a sink's
``backpressure`` are iterators of booleans consulted once per cycle
(``None`` = never pause / always ready); see ``random_pattern``.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Iterator

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge


def random_pattern(rng: random.Random, probability: float) -> Iterator[bool]:
    """True (pause / not ready) with ``probability`` each cycle."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], not {probability!r}")
    while True:
        yield rng.random() < probability


def burst_pattern(rng: random.Random, probability: float, max_burst: int = 8) -> Iterator[bool]:
    """Pauses that come in bursts of 1..``max_burst`` cycles, starting with ``probability``."""
    while True:
        if rng.random() < probability:
            yield from itertools.repeat(True, rng.randint(1, max_burst))
        else:
            yield False


def _bit(handle) -> int:
    """A 1-bit signal as 0/1; X/Z (uninitialised or multiply driven) is an error."""
    try:
        return int(handle.value)
    except ValueError:
        raise ValueError(f"{handle._name} is {handle.value!s}, not 0 or 1") from None


class CycleLoop:
    """Calls ``drive()`` on every member after each rising edge, ``sample()`` at ReadOnly.

    ``cycle`` counts rising edges since ``start()``. Members are called in the
    order they were added. While ``frozen`` (reset), members are not called.
    """

    def __init__(self, clock):
        self.clock = clock
        self.cycle = 0
        self.frozen = False
        self._members: list = []
        self._task = None

    def add(self, member) -> None:
        self._members.append(member)

    def start(self) -> None:
        if self._task is None:
            self._task = cocotb.start_soon(self._run())

    async def _run(self) -> None:
        edge, settled = RisingEdge(self.clock), ReadOnly()
        members = self._members
        while True:
            await edge
            self.cycle += 1
            if self.frozen:
                continue
            for member in members:
                member.drive()
            await settled
            for member in members:
                member.sample()


class StreamBus:
    """The three signals of a stream port named ``<prefix>__valid/ready/payload``."""

    def __init__(self, dut, prefix: str):
        self.prefix = prefix
        try:
            self.valid = getattr(dut, f"{prefix}__valid")
            self.ready = getattr(dut, f"{prefix}__ready")
            self.payload = getattr(dut, f"{prefix}__payload")
        except AttributeError as error:
            raise AttributeError(f"the DUT has no stream port {prefix!r} "
                                 f"({prefix}__valid/ready/payload): {error}") from None


class StreamSource:
    """Drives a stream the DUT receives: ``valid`` and ``payload`` out, ``ready`` in.

    Items are packed payload integers queued with ``send()``; ``on_accept(item,
    cycle)`` is called when an item is transferred. Once ``valid`` is high it
    stays high with the same payload until the transfer (stream rule), so
    ``pause`` only delays the start of a transfer. ``next_item`` lets a subclass
    produce items lazily (the request driver allocates tags that way).
    """

    def __init__(self, loop: CycleLoop, bus: StreamBus,
                 on_accept: Callable[[int, int], None] | None = None):
        self.loop, self.bus = loop, bus
        self.on_accept = on_accept
        self.queue: deque = deque()
        self.pause: Iterator[bool] | None = None
        self.transfers = 0
        self._current = None  # item being offered (valid high)
        self._valid_driven = None
        loop.add(self)
        bus.valid.value = 0

    def send(self, item) -> None:
        self.queue.append(item)

    @property
    def idle(self) -> bool:
        return self._current is None and not self.queue

    def next_item(self):
        """The next item to offer, or None. Called only when not paused."""
        return self.queue.popleft() if self.queue else None

    def payload_of(self, item) -> int:
        return item

    def drive(self) -> None:
        if self._current is None:
            paused = self.pause is not None and next(self.pause)
            if not paused:
                self._current = self.next_item()
            if self._current is not None:
                self.bus.payload.value = self.payload_of(self._current)
        valid = int(self._current is not None)
        if valid != self._valid_driven:
            self.bus.valid.value = valid
            self._valid_driven = valid

    def sample(self) -> None:
        if self._current is not None and _bit(self.bus.ready):
            item, self._current = self._current, None
            self.transfers += 1
            if self.on_accept is not None:
                self.on_accept(item, self.loop.cycle)

    def reset(self) -> None:
        """Forget the offered item and the queue (the DUT is being reset)."""
        self.queue.clear()
        self._current = None
        self._valid_driven = None
        self.bus.valid.value = 0


class StreamSink:
    """Receives a stream the DUT sends: ``ready`` out, ``valid`` and ``payload`` in.

    ``on_receive(payload, cycle)`` is called for each transfer; ``backpressure``
    (True = not ready this cycle) is switchable at any time.
    """

    def __init__(self, loop: CycleLoop, bus: StreamBus,
                 on_receive: Callable[[int, int], None] | None = None):
        self.loop, self.bus = loop, bus
        self.on_receive = on_receive
        self.backpressure: Iterator[bool] | None = None
        self.transfers = 0
        self._ready = None
        loop.add(self)
        bus.ready.value = 0

    def drive(self) -> None:
        ready = 0 if self.backpressure is not None and next(self.backpressure) else 1
        if ready != self._ready:
            self.bus.ready.value = ready
            self._ready = ready

    def sample(self) -> None:
        if self._ready and _bit(self.bus.valid):
            self.transfers += 1
            if self.on_receive is not None:
                self.on_receive(int(self.bus.payload.value), self.loop.cycle)
