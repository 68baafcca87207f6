"""Scenarios: each is a real use of an IOMMU, run on a backend, returning a report.

A scenario is a function ``run(backend: str, seed: int, **params) -> Report``
registered with ``@scenario``. Parameters are declared with their types and
defaults so the command line can check them before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

REGISTRY: dict[str, "Scenario"] = {}


@dataclass
class Scenario:
    name: str
    summary: str
    func: Callable
    params: dict[str, tuple[type, object, str]]  # name -> (type, default, help)
    backends: tuple[str, ...] = ("model",)


def scenario(name: str, summary: str, params=None, backends=("model",)):
    def register(func):
        REGISTRY[name] = Scenario(name, summary, func, params or {}, backends)
        return func
    return register


@dataclass
class Report:
    """What a scenario prints: a title, ordered figures, and free-form checks."""

    name: str
    figures: dict = field(default_factory=dict)  # label -> value
    checks: dict = field(default_factory=dict)  # label -> bool (must all be True)
    details: list = field(default_factory=list)  # lines printed after the figures

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def as_dict(self) -> dict:
        return {"name": self.name, "figures": self.figures, "checks": self.checks,
                "passed": self.passed, "details": self.details}


def load_all() -> None:
    """Import every scenario module so that it registers itself."""
    from . import dma_basic  # noqa: F401
