"""The IOMMU: translation core, register page, command and fault queues on one memory port.

    request ──┬──────────────────────► TranslationCore ──┬─► response (device tags)
    tr_req ◄──┘ (debug: tag MSB = 1)    │   ▲ inval      └─► tr_response (tag MSB = 1)
                                         │   │
    mmio_req ─► RegisterFile ─ ddtp/fctl ┘   CommandQueue ◄── cqb/cqt/cqen
    mmio_resp ◄ (+ Hpm, Interrupts)          FaultQueue   ◄── core, refused MSIs, bridge_fault
    wsi ◄───────┘   └ MSI stores ┐              │                 │
                                 ▼              ▼                 ▼
                      MemoryMerge: core, CQ, FQ, MSI ─► mem_req / mem_resp

The debug translation interface (§8.11) shares the core with devices: its request
carries a tag one bit wider than the devices' with the top bit set, so its response
goes to ``tr_response`` and never to the device port. It is counted, and its faults
are recorded, like any request (as in the reference model).
"""

from dataclasses import replace

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from models import arch

from . import layouts
from .command_queue import CommandQueue
from .core import TranslationCore
from .fault_queue import FaultQueue
from .interrupts import VECTORS
from .mem_merge import MemoryMerge
from .params import DEFAULT, IOMMUParams
from .registers import RegisterFile

#: Memory clients on the merged port, by index (the high bits of mem_req.id).
CLIENT_CORE, CLIENT_CQ, CLIENT_FQ, CLIENT_MSI = range(4)


def iommu_mem_id_bits(params: IOMMUParams) -> int:
    """Id width of the top's memory port: the core's ids plus 2 bits of client index."""
    return params.mem_id_bits + 2


class Iommu(wiring.Component):
    """The whole IOMMU behind four doors.

    Ports:
      request / response: device translations (layouts.translation_request /
                    translation_response with ``params.tag_bits``), out of order by tag.
      mmio_req / mmio_resp: the register page (layouts.MmioRequest / MmioResponse).
      mem_req / mem_resp: the IOMMU's own memory port (walks, A/D updates, queue reads
                    and writes, IOFENCE.C data, MSIs); ``id`` = Cat(client's id, client
                    index: 0 core, 1 command queue, 2 fault queue, 3 MSI); responses may
                    return in any order.
      wsi:          wired interrupt lines, one per icvec vector (level, fctl.WSI = 1).
      bridge_fault: faults the bridge found while performing a translated access, to be
                    recorded in the fault queue (layouts.FaultReport): an MRIF-mode MSI's
                    update refused (cause 264) or poisoned (271), §9.4. Leave ``valid``
                    at 0 if the bridge has none.
    """

    def __init__(self, params: IOMMUParams = DEFAULT):
        if params.tag_bits > 15:
            raise ValueError(f"tag_bits must be 1..15 on the top (one more tag bit marks "
                             f"debug translations), not {params.tag_bits!r}")
        self.params = params
        ids = iommu_mem_id_bits(params)
        super().__init__({
            "request": In(stream.Signature(layouts.translation_request(params.tag_bits))),
            "response": Out(stream.Signature(layouts.translation_response(params.tag_bits))),
            "mmio_req": In(stream.Signature(layouts.MmioRequest)),
            "mmio_resp": Out(stream.Signature(layouts.MmioResponse)),
            "mem_req": Out(stream.Signature(layouts.mem_request(ids))),
            "mem_resp": In(stream.Signature(layouts.mem_response(ids))),
            "wsi": Out(VECTORS),
            "bridge_fault": In(stream.Signature(layouts.FaultReport)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        tag_bits = p.tag_bits
        core_params = replace(p, tag_bits=tag_bits + 1)
        inner = p.mem_id_bits
        pas = arch.Cap.PAS.get(p.capabilities)

        m.submodules.core = core = TranslationCore(core_params)
        m.submodules.registers = regs = RegisterFile(p)
        m.submodules.command_queue = cq = CommandQueue(inner, p.capabilities)
        m.submodules.fault_queue = fq = FaultQueue(inner, pas)
        m.submodules.mem_merge = merge = MemoryMerge(4, inner)
        # The blocks, for tests and waveform tools that look inside the top.
        self.core, self.registers, self.command_queue, self.fault_queue = core, regs, cq, fq

        # ------------------------------------------------------- register page
        wiring.connect(m, wiring.flipped(self.mmio_req), regs.mmio_req)
        wiring.connect(m, regs.mmio_resp, wiring.flipped(self.mmio_resp))
        m.d.comb += [
            self.wsi.eq(regs.wsi),
            core.ddtp.eq(regs.ddtp),
            core.fctl.eq(regs.fctl),
            regs.ev_request.eq(core.ev_request),
            regs.ev_request_src.eq(core.ev_request_src),
            regs.ev_ddt_walk.eq(core.ev_ddt_walk),
            regs.ev_pdt_walk.eq(core.ev_pdt_walk),
            regs.ev_context_src.eq(core.ev_context_src),
            regs.ev_walk.eq(core.ev_walk),
            regs.ev_walk_src.eq(core.ev_walk_src),
        ]

        # ------------------------------------------------------- command queue
        m.d.comb += [
            cq.cqb_ppn.eq(regs.cqb_ppn), cq.cqb_log2szm1.eq(regs.cqb_log2szm1),
            cq.cqt.eq(regs.cqt), cq.cqen.eq(regs.cqen), cq.stopped.eq(regs.cq_stopped),
            cq.fctl_wsi.eq(regs.fctl[arch.Fctl.WSI.lo]),
            cq.inval_pending.eq(core.inval_pending),
            regs.cqh.eq(cq.cqh), regs.cqon.eq(cq.cqon), regs.cq_busy.eq(cq.busy),
            regs.set_cmd_ill.eq(cq.set_cmd_ill), regs.set_cqmf.eq(cq.set_cqmf),
            regs.set_fence_w_ip.eq(cq.set_fence_w_ip),
        ]
        wiring.connect(m, cq.inval, core.inval)

        # --------------------------------------------------------- fault queue
        m.d.comb += [
            fq.fqb_ppn.eq(regs.fqb_ppn), fq.fqb_log2szm1.eq(regs.fqb_log2szm1),
            fq.fqh.eq(regs.fqh), fq.fqen.eq(regs.fqen), fq.stopped.eq(regs.fq_stopped),
            regs.fqt.eq(fq.fqt), regs.fqon.eq(fq.fqon), regs.fq_busy.eq(fq.busy),
            regs.set_fqmf.eq(fq.set_fqmf), regs.set_fqof.eq(fq.set_fqof),
            regs.fq_record_written.eq(fq.record_written),
        ]
        # Refused MSIs and the bridge's faults (both rare) go first; the core's reports
        # wait in its FIFO meanwhile.
        with m.If(regs.msi_fault.valid):
            m.d.comb += [fq.fault.valid.eq(1), fq.fault.payload.eq(regs.msi_fault.payload),
                         regs.msi_fault.ready.eq(fq.fault.ready)]
        with m.Elif(self.bridge_fault.valid):
            m.d.comb += [fq.fault.valid.eq(1), fq.fault.payload.eq(self.bridge_fault.payload),
                         self.bridge_fault.ready.eq(fq.fault.ready)]
        with m.Else():
            m.d.comb += [fq.fault.valid.eq(core.fault.valid),
                         fq.fault.payload.eq(core.fault.payload),
                         core.fault.ready.eq(fq.fault.ready)]

        # --------------------------------------------------------- memory port
        wiring.connect(m, core.mem_req, merge.client_req[CLIENT_CORE])
        wiring.connect(m, merge.client_resp[CLIENT_CORE], core.mem_resp)
        wiring.connect(m, cq.mem_req, merge.client_req[CLIENT_CQ])
        wiring.connect(m, merge.client_resp[CLIENT_CQ], cq.mem_resp)
        wiring.connect(m, fq.mem_req, merge.client_req[CLIENT_FQ])
        wiring.connect(m, merge.client_resp[CLIENT_FQ], fq.mem_resp)
        msi_req, msi_client = regs.msi_req, merge.client_req[CLIENT_MSI]
        msi_resp, msi_back = regs.msi_resp, merge.client_resp[CLIENT_MSI]
        m.d.comb += [  # the MSI sender's 1-bit ids widened to the merge's
            msi_client.valid.eq(msi_req.valid), msi_req.ready.eq(msi_client.ready),
            msi_client.payload.op.eq(msi_req.payload.op),
            msi_client.payload.addr.eq(msi_req.payload.addr),
            msi_client.payload.wdata.eq(msi_req.payload.wdata),
            msi_client.payload.id.eq(msi_req.payload.id),
            msi_resp.valid.eq(msi_back.valid), msi_back.ready.eq(msi_resp.ready),
            msi_resp.payload.err.eq(msi_back.payload.err),
            msi_resp.payload.rdata.eq(msi_back.payload.rdata),
            msi_resp.payload.id.eq(msi_back.payload.id),
        ]
        # The merge registers each client's request and drives the port from a register
        # (it replaces the register slice that followed it): memory's ready reaches no
        # client's state in the same cycle, and the merge's choice no wire outside
        # (issue 7).
        wiring.connect(m, merge.mem_req, wiring.flipped(self.mem_req))
        wiring.connect(m, wiring.flipped(self.mem_resp), merge.mem_resp)

        # ------------------------------------------- requests: devices + debug
        # The choice is a flip-flop (issue 7: decoded from the debug interface's state,
        # it selected ~100 payload bits in front of the IOTLB's first stage): made a
        # cycle ahead from the debug request's valid, and kept while the core has not
        # taken the offered request, so a valid request never changes under the core
        # (stream rule). The cycle after a debug request is taken offers nothing.
        dbg = regs.tr_request
        core_req = core.request
        choose_debug = Signal()
        m.d.sync += choose_debug.eq(Mux(core_req.valid & ~core_req.ready, choose_debug,
                                        dbg.valid))
        with m.If(choose_debug):
            m.d.comb += [core_req.valid.eq(dbg.valid), dbg.ready.eq(core_req.ready)]
            _copy_fields(m, core_req.payload, dbg.payload)
            m.d.comb += core_req.payload.tag.eq(1 << tag_bits)
        with m.Else():
            m.d.comb += [core_req.valid.eq(self.request.valid),
                         self.request.ready.eq(core_req.ready)]
            _copy_fields(m, core_req.payload, self.request.payload)

        # ------------------------------------------------------------ responses
        resp = core.response
        is_debug = resp.payload.tag[tag_bits]
        m.d.comb += [
            self.response.valid.eq(resp.valid & ~is_debug),
            regs.tr_result.valid.eq(resp.valid & is_debug),
            resp.ready.eq(Mux(is_debug, regs.tr_result.ready, self.response.ready)),
        ]
        _copy_fields(m, self.response.payload, resp.payload)
        _copy_fields(m, regs.tr_result.payload, resp.payload, skip=("tag",))
        return m


def _copy_fields(m, dst, src, skip=()):
    """Field-by-field copy between two views of the same struct with other tag widths."""
    for name in data.Layout.cast(dst.shape()).members:
        if name not in skip:
            m.d.comb += getattr(dst, name).eq(getattr(src, name))
