"""A progress bar on stderr for long scenario runs.

Scenarios report progress with ``with task("label", total) as bar: bar.advance()``;
nothing is drawn unless the command line turned the bar on (``enable``), which it
does when stderr is a terminal or ``--progress`` was given. Redraws are limited to
about ten a second so the bar costs nothing measurable.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

_enabled = False
_stream = sys.stderr


def enable(on: bool = True, stream=None) -> None:
    global _enabled, _stream
    _enabled = on
    _stream = stream or sys.stderr


class Bar:
    WIDTH = 30

    def __init__(self, label: str, total: int, stream, active: bool):
        self.label, self.total, self.stream, self.active = label, max(total, 1), stream, active
        self.done = 0
        self._last = 0.0
        self._drawn = -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.active:
            now = time.monotonic()
            if now - self._last >= 0.1 or self.done >= self.total:
                self._last = now
                self._draw()

    def _draw(self) -> None:
        self._drawn = self.done
        frac = min(self.done / self.total, 1.0)
        filled = int(frac * self.WIDTH)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                          f"{frac * 100:3.0f}% {self.done}/{self.total}")
        self.stream.flush()

    def close(self) -> None:
        if self.active:
            if self._drawn != self.done:
                self._draw()
            self.stream.write("\n")
            self.stream.flush()


@contextmanager
def task(label: str, total: int):
    bar = Bar(label, total, _stream, _enabled)
    try:
        yield bar
    finally:
        bar.close()
