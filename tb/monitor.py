"""Monitors for the core's outputs: translation responses, fault reports, event pulses.

Each collects what the DUT sent with the cycle it was transferred and hands it to
a callback (the scoreboard). The response and fault streams are sinks, so the
monitor also drives their ``ready``: ``backpressure`` is switchable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from models import arch
from models.transaction import Response

from . import packing
from .stream import CycleLoop, StreamBus, StreamSink


@dataclass(frozen=True)
class Stamped:
    cycle: int
    item: object


class ResponseMonitor(StreamSink):
    """Collects ``response`` transfers as ``models.transaction.Response``s and calls
    ``on_response(response, cycle)`` for each."""

    def __init__(self, loop: CycleLoop, dut, tag_bits: int,
                 on_response: Callable[[Response, int], None] | None = None, keep: bool = True):
        super().__init__(loop, StreamBus(dut, "response"), self._received)
        self.tag_bits = tag_bits
        self.on_response = on_response
        self.keep = keep
        self.received: list[Stamped] = []

    def _received(self, word: int, cycle: int) -> None:
        response = packing.response_from_payload(word, self.tag_bits)
        if self.keep:
            self.received.append(Stamped(cycle, response))
        if self.on_response is not None:
            self.on_response(response, cycle)


class FaultMonitor(StreamSink):
    """Collects ``fault`` transfers as ``models.arch.FaultRecord``; ``on_fault(record, cycle)``."""

    def __init__(self, loop: CycleLoop, dut,
                 on_fault: Callable[[arch.FaultRecord, int], None] | None = None):
        super().__init__(loop, StreamBus(dut, "fault"), self._received)
        self.on_fault = on_fault
        self.received: list[Stamped] = []

    def _received(self, word: int, cycle: int) -> None:
        record = packing.fault_record_from_payload(word)
        self.received.append(Stamped(cycle, record))
        if self.on_fault is not None:
            self.on_fault(record, cycle)


class EventCounter:
    """Counts the cycles each one-bit ``ev_*`` output is high (the HPM's event pulses)."""

    def __init__(self, loop: CycleLoop, dut, names: tuple[str, ...] = (
            "ev_request", "ev_iotlb_miss", "ev_ddt_walk", "ev_pdt_walk", "ev_fs_walk")):
        self.handles = {}
        for name in names:
            handle = getattr(dut, name, None)
            if handle is not None:
                self.handles[name] = handle
        self.counts = dict.fromkeys(self.handles, 0)
        loop.add(self)

    def drive(self) -> None:
        pass

    def sample(self) -> None:
        for name, handle in self.handles.items():
            if handle.value == 1:
                self.counts[name] += 1
