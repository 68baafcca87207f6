"""AxiIommu: the IOMMU with AXI4 ports, the top to drop into an FPGA design.

    device DMA ─► s_axi (AXI4 slave, IOVA, identity on AWUSER/ARUSER)
                   └► AxiDmaBridge ─translate─► Iommu ─► AxiDmaBridge ─► m_axi (SPA) ─► memory
    CPU ─► s_axil (AXI4-Lite slave) ─► AxiLiteRegisters ─► Iommu register page
    Iommu's own memory traffic (walks, queues, MSIs) ─► AxiMemoryPort ─► m_axi_mem
        (or, with merge_memory_ports, merged with the DMA traffic onto m_axi by AxiMerge)
    wsi[15:0] ◄─ wired interrupts

Ports keep AMBA names under a prefix (``s_axi_awaddr``, ``m_axi_rdata``,
``s_axil_wstrb``...); ``aclk`` is the only clock, ``aresetn`` an active-low reset
sampled on ``aclk``. See ``docs/fpga.md``.

Command line: ``python -m rtl.axi_top -o build/axi_iommu.v [--preset small|default|large]
[--merge] [NAME=VALUE ...]`` writes the Verilog (top module ``axi_iommu``) and prints
the port list.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from amaranth.hdl import ClockDomain, ClockSignal, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from . import params as P
from .axi import AxiLiteSignature, AxiSignature, connect_flat, dma_user_layout, flat_members
from .axi_dma import AxiDmaBridge
from .axi_lite_regs import AxiLiteRegisters
from .axi_mem import AxiMemoryPort
from .axi_mux import AxiMerge


@dataclass(frozen=True)
class AxiParams:
    """The AXI side of an ``AxiIommu``.

    iova_width: s_axi address bits (IOVAs; zero-extended to 64).
    pa_width: m_axi / m_axi_mem address bits (at most the IOMMU's 56-bit PAS; a
      translation to an address that does not fit is refused with DECERR).
    data_width: s_axi and m_axi data bits (64..1024; m_axi_mem has the same width).
    id_width: s_axi ID bits. device_id_bits / process_id_bits: the AxUSER fields.
    lite_addr_width: s_axil address bits (the register page decodes bits 11:2).
    outstanding: translated bursts in flight per channel of the DMA bridge.
    merge_memory_ports: the IOMMU's own traffic shares m_axi (no m_axi_mem port).
    """

    iova_width: int = 64
    pa_width: int = layouts.PA_BITS
    data_width: int = 64
    id_width: int = 4
    device_id_bits: int = layouts.DEVICE_ID_BITS
    process_id_bits: int = layouts.PROCESS_ID_BITS
    lite_addr_width: int = layouts.REG_OFFSET_BITS
    outstanding: int = 4
    merge_memory_ports: bool = False

    def __post_init__(self):
        if not 12 <= self.iova_width <= 64:
            raise ValueError(f"iova_width must be 12..64, not {self.iova_width!r}")
        if not 12 <= self.pa_width <= layouts.PA_BITS:
            raise ValueError(f"pa_width must be 12..{layouts.PA_BITS}, not {self.pa_width!r}")
        if self.data_width not in (64, 128, 256, 512, 1024):
            raise ValueError(f"data_width must be a power of two from 64 to 1024, "
                             f"not {self.data_width!r}")
        if not 1 <= self.id_width <= 32:
            raise ValueError(f"id_width must be 1..32, not {self.id_width!r}")
        dma_user_layout(self.device_id_bits, self.process_id_bits)  # checks both
        if not 12 <= self.lite_addr_width <= 64:
            raise ValueError(f"lite_addr_width must be 12..64, not {self.lite_addr_width!r}")

    @property
    def user_width(self) -> int:
        return dma_user_layout(self.device_id_bits, self.process_id_bits).size


class AxiIommu(wiring.Component):
    """``Iommu(params)`` behind AXI4 / AXI4-Lite (see module doc and ``AxiParams``).

    ``iommu``: the component to wrap (default ``rtl.iommu.Iommu(params)``); anything with
    its ports (request/response, mmio_req/mmio_resp, mem_req/mem_resp, wsi).
    """

    def __init__(self, params: P.IOMMUParams = P.DEFAULT, axi: AxiParams = AxiParams(),
                 iommu=None):
        if iommu is None:
            from .iommu import Iommu

            iommu = Iommu(params)
        self.params, self.axi = params, axi
        self.iommu = iommu
        self.mem_id_bits = len(self.iommu.mem_req.payload.id)
        # The DMA bridge sends every burst with ID 0 (it keeps responses in order itself).
        self.dma_m_id_width = 1
        members = {"aclk": In(1), "aresetn": In(1)}
        members |= flat_members("s_axi", self.device_signature, In)
        members |= flat_members("m_axi", self.memory_signature, Out)
        if not axi.merge_memory_ports:
            members |= flat_members("m_axi_mem", self.iommu_memory_signature, Out)
        members |= flat_members("s_axil", AxiLiteSignature(axi.lite_addr_width, 32), In)
        members["wsi"] = Out(16)
        super().__init__(members)

    @property
    def device_signature(self) -> AxiSignature:
        a = self.axi
        return AxiSignature(a.iova_width, a.data_width, a.id_width, a.user_width)

    @property
    def iommu_memory_signature(self) -> AxiSignature:
        return AxiSignature(self.axi.pa_width, self.axi.data_width, self.mem_id_bits)

    @property
    def memory_signature(self) -> AxiSignature:
        a = self.axi
        if a.merge_memory_ports:
            return AxiSignature(a.pa_width, a.data_width,
                                max(self.dma_m_id_width, self.mem_id_bits) + 1)
        return AxiSignature(a.pa_width, a.data_width, self.dma_m_id_width)

    def elaborate(self, platform):
        m = Module()
        a = self.axi
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("sync").eq(self.aclk), ResetSignal("sync").eq(~self.aresetn)]

        m.submodules.iommu = iommu = self.iommu
        m.submodules.dma = dma = AxiDmaBridge(
            iova_width=a.iova_width, pa_width=a.pa_width, data_width=a.data_width,
            id_width=a.id_width, m_id_width=self.dma_m_id_width,
            device_id_bits=a.device_id_bits, process_id_bits=a.process_id_bits,
            tag_bits=self.params.tag_bits, outstanding=a.outstanding)
        m.submodules.registers = regs = AxiLiteRegisters(a.lite_addr_width)
        m.submodules.memory_port = mem = AxiMemoryPort(
            self.mem_id_bits, pa_width=a.pa_width, data_width=a.data_width)

        wiring.connect(m, dma.tr_req, iommu.request)
        wiring.connect(m, iommu.response, dma.tr_resp)
        wiring.connect(m, dma.fault, iommu.bridge_fault)  # MRIF access faults (264)
        wiring.connect(m, regs.mmio_req, iommu.mmio_req)
        wiring.connect(m, iommu.mmio_resp, regs.mmio_resp)
        wiring.connect(m, iommu.mem_req, mem.mem_req)
        wiring.connect(m, mem.mem_resp, iommu.mem_resp)
        m.d.comb += self.wsi.eq(iommu.wsi)

        connect_flat(m, self, "s_axi", dma.s_axi)
        connect_flat(m, self, "s_axil", regs.s_axil)
        if a.merge_memory_ports:
            m.submodules.merge = merge = AxiMerge(
                a.pa_width, a.data_width, (self.dma_m_id_width, self.mem_id_bits),
                write_depth=2 * a.outstanding)
            wiring.connect(m, dma.m_axi, merge.s0)
            wiring.connect(m, mem.m_axi, merge.s1)
            connect_flat(m, self, "m_axi", merge.m)
        else:
            connect_flat(m, self, "m_axi", dma.m_axi)
            connect_flat(m, self, "m_axi_mem", mem.m_axi)
        return m


def merged(params: P.IOMMUParams = P.DEFAULT) -> AxiIommu:
    """``AxiIommu`` with ``merge_memory_ports`` (a factory for ``tb.runner``'s ``design``)."""
    return AxiIommu(params, AxiParams(merge_memory_ports=True))


def merged_wide(params: P.IOMMUParams = P.DEFAULT) -> AxiIommu:
    """Merged ports, 128-bit data, 48-bit IOVAs, 6-bit IDs: the non-default widths
    (8-byte IOMMU accesses on a lane of a wider bus) for ``tb.runner``'s ``design``."""
    return AxiIommu(params, AxiParams(merge_memory_ports=True, data_width=128, iova_width=48,
                                      id_width=6))


# --------------------------------------------------------------------------- #
# Verilog
# --------------------------------------------------------------------------- #
def ports(top: AxiIommu) -> list[tuple[str, str, int]]:
    """(name, "input"/"output", width) of every port, in declaration order."""
    out = []
    for name, member in top.signature.members.items():
        width = len(getattr(top, name))
        out.append((name, "input" if member.flow == In else "output", width))
    return out


def generate(params: P.IOMMUParams, axi: AxiParams, path: Path,
             name: str = "axi_iommu") -> AxiIommu:
    """Write the Verilog of ``AxiIommu(params, axi)`` to ``path``; return the component."""
    from amaranth.back import verilog

    top = AxiIommu(params, axi)
    text = verilog.convert(top, name=name, emit_src=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return top


def main(argv: list[str] | None = None) -> int:
    from .generate import PRESETS, parse_overrides

    ap = argparse.ArgumentParser(description="Verilog of the IOMMU with AXI4 ports")
    ap.add_argument("-o", "--output", type=Path, default=Path("build/axi_iommu.v"))
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--merge", action="store_true",
                    help="the IOMMU's own memory traffic shares m_axi (no m_axi_mem)")
    for field, default in asdict(AxiParams()).items():
        if field != "merge_memory_ports":
            ap.add_argument(f"--{field.replace('_', '-')}", type=int, default=default)
    ap.add_argument("param", nargs="*", help="IOMMU parameters such as iotlb_entries=64")
    args = ap.parse_args(argv)
    try:
        params = replace(PRESETS[args.preset], **parse_overrides(args.param))
        axi = AxiParams(**{f: getattr(args, f) for f in asdict(AxiParams())
                           if f != "merge_memory_ports"}, merge_memory_ports=args.merge)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    top = generate(params, axi, args.output)
    print(f"wrote {args.output} (module axi_iommu; {params}; {axi})")
    for name, direction, width in ports(top):
        print(f"  {direction:6} {'[' + str(width - 1) + ':0]' if width > 1 else '':8} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
