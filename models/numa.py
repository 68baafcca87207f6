"""A small NUMA cost model for interrupt delivery.

A machine has ``sockets`` sockets of ``harts_per_socket`` harts; a device sits on one
socket's I/O fabric. An MSI is a 4-byte write from the device to an interrupt file
(an IMSIC page) of some hart. The write crosses the fabric to the socket of that hart:

    cost(device socket s, hart h) = local_ns + hop_ns * hops(s, socket_of(h))

MSI remapping (the IOMMU's MSI page table) decides *which* interrupt file receives the
message: it follows the guest's vCPU to the hart it runs on. It cannot make a remote
hart local: only moving the vCPU (or the device) changes the number of hops. The
scenario ``msi_numa`` shows exactly that.

Defaults are round figures of the right order for a two-socket server, not
measurements: ``local_ns`` = 100 ns (device write through the root complex to an IMSIC
on the same socket), ``hop_ns`` = 150 ns per socket-to-socket link crossed. Sockets
are on a ring (``hops`` is the shorter way round), which for 2 sockets means 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NumaTopology:
    """Sockets, harts and what an interrupt costs between them."""

    sockets: int = 2
    harts_per_socket: int = 4
    local_ns: float = 100.0
    hop_ns: float = 150.0

    def __post_init__(self):
        if not isinstance(self.sockets, int) or self.sockets < 1:
            raise ValueError(f"sockets must be a positive integer, not {self.sockets!r}")
        if not isinstance(self.harts_per_socket, int) or self.harts_per_socket < 1:
            raise ValueError(f"harts_per_socket must be a positive integer, not "
                             f"{self.harts_per_socket!r}")
        if self.local_ns < 0 or self.hop_ns < 0:
            raise ValueError(f"costs must be >= 0, not local_ns={self.local_ns!r} "
                             f"hop_ns={self.hop_ns!r}")

    @property
    def harts(self) -> int:
        return self.sockets * self.harts_per_socket

    def socket_of(self, hart: int) -> int:
        if not isinstance(hart, int) or not 0 <= hart < self.harts:
            raise ValueError(f"hart {hart!r} is outside 0..{self.harts - 1}")
        return hart // self.harts_per_socket

    def harts_of(self, socket: int) -> list[int]:
        self._check_socket(socket)
        return list(range(socket * self.harts_per_socket, (socket + 1) * self.harts_per_socket))

    def _check_socket(self, socket: int) -> None:
        if not isinstance(socket, int) or not 0 <= socket < self.sockets:
            raise ValueError(f"socket {socket!r} is outside 0..{self.sockets - 1}")

    def hops(self, a: int, b: int) -> int:
        """Socket-to-socket links crossed from socket ``a`` to ``b`` (ring, shorter way)."""
        self._check_socket(a)
        self._check_socket(b)
        d = abs(a - b)
        return min(d, self.sockets - d)

    def delivery_ns(self, device_socket: int, hart: int) -> float:
        """What one MSI from a device on ``device_socket`` to ``hart``'s file costs."""
        return self.local_ns + self.hop_ns * self.hops(device_socket, self.socket_of(hart))


@dataclass
class Delivery:
    device: str
    device_socket: int
    hart: int
    ns: float
    local: bool


@dataclass
class InterruptCostLog:
    """Every delivered interrupt with its cost; summaries for reports."""

    topology: NumaTopology
    deliveries: list[Delivery] = field(default_factory=list)

    def record(self, device: str, device_socket: int, hart: int) -> Delivery:
        ns = self.topology.delivery_ns(device_socket, hart)
        d = Delivery(device, device_socket, hart, ns,
                     self.topology.socket_of(hart) == device_socket)
        self.deliveries.append(d)
        return d

    def summary(self) -> dict:
        local = [d.ns for d in self.deliveries if d.local]
        remote = [d.ns for d in self.deliveries if not d.local]
        allns = local + remote

        def mean(xs):
            return sum(xs) / len(xs) if xs else 0.0

        return {"delivered": len(allns), "local": len(local), "remote": len(remote),
                "mean_ns": mean(allns), "local_mean_ns": mean(local),
                "remote_mean_ns": mean(remote)}
