"""AXI4 and AXI4-Lite as Amaranth signatures, and the constants and payloads the bridges share.

Signals are named exactly as in the AMBA AXI specification (``awaddr``, ``wstrb``,
``rresp``...) and seen from the manager (master): ``Out`` members are driven by the
manager, ``In`` members by the subordinate (slave). A slave port is ``In(signature)``.

``AxiSignature`` carries the AXI4 signals the bridges use: ``*id``, ``*addr``,
``*len``, ``*size``, ``*burst``, ``*lock``, ``*cache``, ``*prot``, ``*qos`` and, when
``user_width`` > 0, ``awuser``/``aruser`` (no ``*region``, ``wuser``, ``buser``,
``ruser``: interconnects tie them off). ``AxiLiteSignature`` is AXI4-Lite.

A top-level port list with readable Verilog names (``s_axi_awaddr``, not
``s_axi__awaddr``) is made by ``flat_members`` and wired by ``connect_flat``.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from . import layouts


class Burst(enum.Enum, shape=2):
    FIXED = 0
    INCR = 1
    WRAP = 2  # 3 is reserved


class Resp(enum.Enum, shape=2):
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


#: AXI4 bursts must not cross a 4 KiB boundary (AMBA AXI A3.4.1).
BOUNDARY = 4096
#: AxPROT[2]: 1 = instruction access (the DMA bridge asks for EXECUTE permission).
PROT_INSTRUCTION = 2


def _check_width(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, not {value!r}")


def _check_data_width(value: int, low: int = 8) -> None:
    if value not in (8, 16, 32, 64, 128, 256, 512, 1024) or value < low:
        raise ValueError(f"data_width must be a power of two from {low} to 1024, "
                         f"not {value!r}")


class AxiSignature(wiring.Signature):
    """An AXI4 manager interface (five channels).

    addr_width: AxADDR bits; data_width: xDATA bits (8..1024, a power of two);
    id_width: AxID/xID bits (>= 1); user_width: AxUSER bits (0 = absent).
    """

    def __init__(self, addr_width: int, data_width: int, id_width: int, user_width: int = 0):
        _check_width("addr_width", addr_width, 12, 64)
        _check_data_width(data_width)
        _check_width("id_width", id_width, 1, 32)
        _check_width("user_width", user_width, 0, 1024)
        self.addr_width, self.data_width = addr_width, data_width
        self.id_width, self.user_width = id_width, user_width
        members = {}
        for ax in ("aw", "ar"):
            members.update({
                f"{ax}id": Out(id_width), f"{ax}addr": Out(addr_width), f"{ax}len": Out(8),
                f"{ax}size": Out(3), f"{ax}burst": Out(2), f"{ax}lock": Out(1),
                f"{ax}cache": Out(4), f"{ax}prot": Out(3), f"{ax}qos": Out(4),
            })
            if user_width:
                members[f"{ax}user"] = Out(user_width)
            members.update({f"{ax}valid": Out(1), f"{ax}ready": In(1)})
        members.update({
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })
        super().__init__(members)

    def __eq__(self, other):
        return (isinstance(other, AxiSignature) and self.addr_width == other.addr_width
                and self.data_width == other.data_width and self.id_width == other.id_width
                and self.user_width == other.user_width)

    def __repr__(self):
        return (f"AxiSignature(addr_width={self.addr_width}, data_width={self.data_width}, "
                f"id_width={self.id_width}, user_width={self.user_width})")


class AxiLiteSignature(wiring.Signature):
    """An AXI4-Lite manager interface: addr_width address bits, 32- or 64-bit data."""

    def __init__(self, addr_width: int, data_width: int = 32):
        _check_width("addr_width", addr_width, 12, 64)
        if data_width not in (32, 64):
            raise ValueError(f"AXI4-Lite data_width must be 32 or 64, not {data_width!r}")
        self.addr_width, self.data_width = addr_width, data_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (isinstance(other, AxiLiteSignature) and self.addr_width == other.addr_width
                and self.data_width == other.data_width)

    def __repr__(self):
        return f"AxiLiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


# --------------------------------------------------------------------------- #
# The device's identity on AxUSER
# --------------------------------------------------------------------------- #
def dma_user_layout(device_id_bits: int = layouts.DEVICE_ID_BITS,
                    process_id_bits: int = layouts.PROCESS_ID_BITS) -> data.StructLayout:
    """AxUSER of the DMA slave port, first field at bit 0 (spec §1.1 request inputs).

    device_id: the requester (PCIe RID, optionally with segment), zero-extended to 24 bits;
    process_id / pv: the PASID and its valid bit; priv: 1 = Supervisor (only with pv).
    """
    _check_width("device_id_bits", device_id_bits, 1, layouts.DEVICE_ID_BITS)
    _check_width("process_id_bits", process_id_bits, 1, layouts.PROCESS_ID_BITS)
    return data.StructLayout({
        "device_id": unsigned(device_id_bits),
        "process_id": unsigned(process_id_bits),
        "pv": unsigned(1),
        "priv": unsigned(1),
    })


# --------------------------------------------------------------------------- #
# Readable top-level port names
# --------------------------------------------------------------------------- #
def flat_members(prefix: str, signature: wiring.Signature, flow=Out) -> dict:
    """``{f"{prefix}_{name}": member}`` for every port of ``signature``, as a component
    whose port is ``flow(signature)`` would see them (``In`` for a slave port)."""
    members = {}
    for name, member in signature.members.items():
        port_flow = member.flow if flow is Out else member.flow.flip()
        members[f"{prefix}_{name}"] = port_flow(member.shape)
    return members


def connect_flat(m, top, prefix: str, interface) -> None:
    """Wire ``top``'s flat ports ``prefix_*`` to a submodule's port ``interface`` of the
    same signature (the submodule drives what its port declares ``Out``)."""
    for name, member in interface.signature.members.items():
        outer, inner = getattr(top, f"{prefix}_{name}"), getattr(interface, name)
        if member.flow == Out:
            m.d.comb += outer.eq(inner)
        else:
            m.d.comb += inner.eq(outer)
