"""RequestDriver: sends ``models.transaction.Request``s on the core's ``request`` stream.

Each request gets a tag when it is offered, from a pool of the tags that have
no response outstanding (``release(tag)`` when the response comes back), so
responses can return in any order and still be matched. ``max_outstanding``
bounds requests in flight; ``pause`` (see ``tb.stream``) inserts random gaps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace

from models.transaction import Request

from . import packing
from .stream import CycleLoop, StreamBus, StreamSource


class RequestDriver(StreamSource):
    """``send(request, index)``; ``on_sent(index, request_with_tag, cycle)`` on each transfer."""

    def __init__(self, loop: CycleLoop, dut, tag_bits: int,
                 on_sent: Callable[[object, Request, int], None] | None = None,
                 max_outstanding: int | None = None):
        super().__init__(loop, StreamBus(dut, "request"), on_accept=self._accepted)
        self.tag_bits = tag_bits
        self.on_sent = on_sent
        self._free_tags: deque[int] = deque(range(1 << tag_bits))
        self.in_flight: dict[int, Request] = {}
        self.max_outstanding = max_outstanding

    @property
    def max_outstanding(self) -> int:
        return self._max_outstanding

    @max_outstanding.setter
    def max_outstanding(self, value: int | None) -> None:
        limit = 1 << self.tag_bits
        value = limit if value is None else value
        if not 1 <= value <= limit:
            raise ValueError(f"max_outstanding must be 1..{limit} (tag_bits={self.tag_bits}), "
                             f"not {value!r}")
        self._max_outstanding = value

    def send(self, request: Request, index=None) -> None:
        self.queue.append((index, request))

    def next_item(self):
        if not self.queue or not self._free_tags or len(self.in_flight) >= self._max_outstanding:
            return None
        index, request = self.queue.popleft()
        tag = self._free_tags.popleft()
        request = replace(request, tag=tag)
        self.in_flight[tag] = request
        return index, request

    def payload_of(self, item) -> int:
        return packing.request_payload(item[1], self.tag_bits)

    def _accepted(self, item, cycle: int) -> None:
        index, request = item
        if self.on_sent is not None:
            self.on_sent(index, request, cycle)

    def release(self, tag: int) -> Request | None:
        """The response for ``tag`` came back: the tag may be used again."""
        request = self.in_flight.pop(tag, None)
        if request is not None:
            self._free_tags.append(tag)
        return request

    @property
    def outstanding(self) -> int:
        return len(self.in_flight)

    def reset(self) -> None:
        super().reset()
        self._free_tags = deque(range(1 << self.tag_bits))
        self.in_flight.clear()
