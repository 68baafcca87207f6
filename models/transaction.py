"""The translation door: what a device asks an IOMMU and what it gets back (§1.1).

Both the reference model (``models/iommu.py``) and the RTL under cocotb
(``tb/``) implement ``translate(Request) -> Response``; devices, OS models,
scenarios and the scoreboard only ever see these two types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .arch import Access, AddrType, Cause, Priv


class Status(enum.IntEnum):
    SUCCESS = 0
    FAULT = 1


@dataclass(frozen=True)
class Request:
    device_id: int
    iova: int
    access: Access = Access.READ
    process_id: int = 0
    pv: bool = False
    priv: Priv = Priv.USER
    addr_type: AddrType = AddrType.UNTRANSLATED
    tag: int = 0
    length: int = 8

    def __str__(self) -> str:
        pid = f" pid={self.process_id:#x}" if self.pv else ""
        return (f"dev={self.device_id:#x}{pid} iova={self.iova:#x} {self.access.name}"
                f" {self.priv.name} {self.addr_type.name} tag={self.tag}")


@dataclass(frozen=True)
class Response:
    status: Status
    tag: int = 0
    spa: int = 0
    page_size: int = 4096  # bytes of the translation (a power of two, >= 4 KiB)
    r: bool = False
    w: bool = False
    x: bool = False
    u: bool = False
    g: bool = False
    pbmt: int = 0
    msi: bool = False  # the IOVA was an MSI address translated through the MSI page table
    cause: int = 0  # the fault cause when status is FAULT (logged or not)
    reported: bool = False  # a fault record was written to the fault queue
    #: For an MSI translated through an MRIF-mode MSI PTE (§9.4): the MRIF address and
    #: the notice MSI's address and data (``models.translate.MrifTarget``), which the
    #: bridge performing the write needs; None otherwise.
    mrif: object = None

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESS

    @classmethod
    def fault(cls, cause: Cause | int, tag: int = 0, reported: bool = False) -> "Response":
        return cls(Status.FAULT, tag=tag, cause=int(cause), reported=reported)

    def __str__(self) -> str:
        if not self.ok:
            try:
                name = Cause(self.cause).name
            except ValueError:
                name = "?"
            return f"FAULT cause={self.cause} ({name})"
        perms = "".join(c if on else "-" for c, on in zip("RWXUG", (self.r, self.w, self.x,
                                                                    self.u, self.g)))
        return f"OK spa={self.spa:#x} size={self.page_size:#x} {perms} pbmt={self.pbmt}"
