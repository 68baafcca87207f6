"""Scenarios: each is a real use of an IOMMU, run on a backend, returning a report.

A scenario is a function ``run(backend: str, seed: int, **params) -> Report``
registered with ``@scenario``. Parameters are declared with their types and
defaults so the command line can check them before anything runs; ``quick`` names
the short configuration the tour and the tests use.

Every scenario obtains its IOMMU from ``make_iommu(backend, memory, **kw)`` and then
only programs it through the OS driver (registers, memory) and asks it for
translations (``translate``), so an object with the same doors as
``models.iommu.IOMMU`` (the RTL under cocotb) is all another backend needs: register
its factory in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

REGISTRY: dict[str, Scenario] = {}


class BackendError(ValueError):
    """The asked-for backend does not exist or cannot run here."""


def _model_iommu(memory, **kw):
    from models.iommu import IOMMU

    return IOMMU(memory, **kw)


#: backend name -> factory(memory, **kw) returning an object with IOMMU's doors
#: (read_register, write_register, translate, process_commands, tick).
BACKENDS: dict[str, Callable] = {"model": _model_iommu}


def set_rtl_factory(factory: Callable) -> None:
    """Install the RTL backend's factory (tb/tests/scenario_rtl.py does, under cocotb).
    That backend makes one IOMMU per run, so a scenario boots one platform only."""
    BACKENDS["rtl"] = factory


def make_iommu(backend: str, memory, **kw):
    """The one place a scenario gets its IOMMU from.

    ``kw`` are the implementation's choices in ``models.iommu.IOMMU``'s terms
    (``iotlb_entries``, ``capabilities``, ...); a backend ignores those it cannot honour.
    """
    factory = BACKENDS.get(backend)
    if factory is None:
        raise BackendError(f"backend {backend!r} is not available; available: "
                           f"{', '.join(BACKENDS)}")
    return factory(memory, **kw)


@dataclass
class Scenario:
    name: str
    summary: str
    func: Callable
    params: dict[str, tuple[type, object, str]]  # name -> (type, default, help)
    backends: tuple[str, ...] = ("model",)
    quick: dict = field(default_factory=dict)  # a short configuration (tour, tests)


def scenario(name: str, summary: str, params=None, backends=("model",), quick=None):
    def register(func):
        REGISTRY[name] = Scenario(name, summary, func, params or {}, backends, quick or {})
        return func
    return register


@dataclass
class Plot:
    """A figure a scenario wants drawn (rendered to PNG by ``sim.plot``).

    ``series`` maps a label to ``(xs, ys)``; ``kind`` is "line" or "bar" (bars: xs are
    category names, one group per x). ``vlines`` are ``(x, label)`` markers.
    """

    filename: str
    title: str
    xlabel: str
    ylabel: str
    series: dict
    kind: str = "line"
    logx: bool = False
    logy: bool = False
    vlines: list = field(default_factory=list)
    xticklabels: list | None = None


@dataclass
class Report:
    """What a scenario prints: a title, ordered figures, and free-form checks."""

    name: str
    figures: dict = field(default_factory=dict)  # label -> value
    checks: dict = field(default_factory=dict)  # label -> bool (must all be True)
    details: list = field(default_factory=list)  # lines printed after the figures
    plots: list = field(default_factory=list)  # Plot objects; drawn when the report is saved
    key: list = field(default_factory=list)  # figure labels the tour's table shows
    data: dict = field(default_factory=dict)  # raw series for report.json (per frame, ...)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def as_dict(self) -> dict:
        out = {"name": self.name, "figures": self.figures, "checks": self.checks,
               "passed": self.passed, "details": self.details,
               "plots": [p.filename for p in self.plots]}
        if self.data:
            out["data"] = self.data
        return out


#: scenario modules; the ones another helper adds may be missing in a given tree.
_MODULES = ("dma_basic", "scatter_gather", "camera", "huge_pages", "dma_window",
            "microkernel", "smartnic", "tour")
_OPTIONAL = ("vm_passthrough", "msi_numa")


def load_all() -> None:
    """Import every scenario module so that it registers itself."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
    for name in _OPTIONAL:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise  # the module exists but something it imports is missing: say so
