"""A stand-in for TranslationCore with the same ports, for testing the testbench itself.

``MemoryEchoCore`` turns each request into one memory access on the memory port
(one slot per walker, slot index = memory id, so several are outstanding and the
responder may answer them out of order) and answers with what memory said:

* READ access    -> mem READ  at iova & ~7; response spa = the dword read;
* WRITE access   -> mem WRITE of iova ^ WRITE_PATTERN at iova & ~7; spa = 0;
* EXECUTE access -> mem CAS (compare 0, swap in iova) at iova & ~7; spa = old value;
* R = 1, W/X/U/G/PBMT = bits 0..5 of that dword (so every response field is exercised).

A memory error makes the response a fault (cause 5 for ACCESS_FAULT, 274 for
POISON) preceded by a fault report (ttyp = the access, iotval2 = iova >> 12).
``StubReference`` is the matching reference for the scoreboard. Nothing of this is
an IOMMU: it exercises packing, the responder (latency, reordering, CAS, errors),
driver, monitors, scoreboard and runner without depending on the real core.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring

from models import arch
from models.memory import PA_LIMIT, AccessFault, DataCorruption
from models.transaction import Response, Status
from rtl import layouts
from rtl.core import core_ports
from rtl.params import IOMMUParams

WRITE_PATTERN = 0x5A5A_5A5A_5A5A_5A5A
CAUSE_FOR_ERR = {layouts.MemErr.ACCESS_FAULT: arch.Cause.READ_ACCESS_FAULT,
                 layouts.MemErr.POISON: arch.Cause.PT_DATA_CORRUPTION}


class MemoryEchoCore(wiring.Component):
    def __init__(self, params: IOMMUParams):
        self.params = params
        super().__init__(core_ports(params))  # the same ports as the real core

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = p.walkers
        req_layout = layouts.translation_request(p.tag_bits)
        busy = [Signal(name=f"busy{i}") for i in range(n)]
        issued = [Signal(name=f"issued{i}") for i in range(n)]
        done = [Signal(name=f"done{i}") for i in range(n)]
        reported = [Signal(name=f"reported{i}") for i in range(n)]
        req = [Signal(req_layout, name=f"req{i}") for i in range(n)]
        err = [Signal(layouts.MemErr, name=f"err{i}") for i in range(n)]
        rdata = [Signal(64, name=f"rdata{i}") for i in range(n)]

        m.d.comb += [self.inval.ready.eq(1), self.mem_resp.ready.eq(1),
                     self.ev_request.eq(self.request.valid & self.request.ready)]

        # Accept into the lowest free slot.
        free = Cat(~b for b in busy)
        m.d.comb += self.request.ready.eq(free.any())
        alloc = Signal(range(max(n, 2)))
        for i in reversed(range(n)):
            with m.If(~busy[i]):
                m.d.comb += alloc.eq(i)

        # Issue the lowest busy slot that has not issued yet.
        want = Cat(b & ~s for b, s in zip(busy, issued))
        issue = Signal(range(max(n, 2)))
        for i in reversed(range(n)):
            with m.If(busy[i] & ~issued[i]):
                m.d.comb += issue.eq(i)
        m.d.comb += self.mem_req.valid.eq(want.any())
        for i in range(n):
            with m.If(issue == i):
                q = req[i]
                m.d.comb += [self.mem_req.payload.id.eq(i),
                             self.mem_req.payload.addr.eq(Cat(0, 0, 0, q.iova[3:56]))]
                with m.Switch(q.access):
                    with m.Case(layouts.Access.READ):
                        m.d.comb += self.mem_req.payload.op.eq(layouts.MemOp.READ)
                    with m.Case(layouts.Access.WRITE):
                        m.d.comb += [self.mem_req.payload.op.eq(layouts.MemOp.WRITE),
                                     self.mem_req.payload.wdata.eq(q.iova ^ WRITE_PATTERN)]
                    with m.Default():
                        m.d.comb += [self.mem_req.payload.op.eq(layouts.MemOp.CAS),
                                     self.mem_req.payload.compare.eq(0),
                                     self.mem_req.payload.wdata.eq(q.iova)]

        # Complete: a fault report first if memory failed, then the response.
        ready_out = Cat(d & (reported_i | (e == layouts.MemErr.OK))
                        for d, reported_i, e in zip(done, reported, err))
        needs_report = Cat(d & ~r & (e != layouts.MemErr.OK)
                           for d, r, e in zip(done, reported, err))
        out = Signal(range(max(n, 2)))
        rep = Signal(range(max(n, 2)))
        for i in reversed(range(n)):
            with m.If(ready_out[i]):
                m.d.comb += out.eq(i)
            with m.If(needs_report[i]):
                m.d.comb += rep.eq(i)
        m.d.comb += [self.response.valid.eq(ready_out.any()),
                     self.fault.valid.eq(needs_report.any())]
        for i in range(n):
            q = req[i]
            with m.If(out == i):
                r = self.response.payload
                m.d.comb += r.tag.eq(q.tag)
                with m.If(err[i] == layouts.MemErr.OK):
                    m.d.comb += [r.spa.eq(rdata[i][:56]), r.size_log2.eq(12), r.r.eq(1),
                                 Cat(r.w, r.x, r.u, r.g, r.pbmt).eq(rdata[i])]
                with m.Else():
                    m.d.comb += [r.fault.eq(1),
                                 r.cause.eq(Mux_(err[i] == layouts.MemErr.POISON,
                                                 CAUSE_FOR_ERR[layouts.MemErr.POISON],
                                                 CAUSE_FOR_ERR[layouts.MemErr.ACCESS_FAULT]))]
            with m.If(rep == i):
                f = self.fault.payload
                m.d.comb += [f.cause.eq(Mux_(err[i] == layouts.MemErr.POISON,
                                             CAUSE_FOR_ERR[layouts.MemErr.POISON],
                                             CAUSE_FOR_ERR[layouts.MemErr.ACCESS_FAULT])),
                             f.device_id.eq(q.device_id), f.process_id.eq(q.process_id),
                             f.pv.eq(q.pv), f.priv.eq(q.priv), f.iotval.eq(q.iova),
                             f.ttyp.eq(q.access), f.iotval2.eq(q.iova >> 12)]

        for i in range(n):
            with m.If(self.request.valid & self.request.ready & (alloc == i)):
                m.d.sync += [busy[i].eq(1), issued[i].eq(0), done[i].eq(0),
                             reported[i].eq(0), req[i].eq(self.request.payload)]
            with m.If(self.mem_req.valid & self.mem_req.ready & (issue == i)):
                m.d.sync += issued[i].eq(1)
            with m.If(self.mem_resp.valid & (self.mem_resp.payload.id == i)):
                m.d.sync += [done[i].eq(1), err[i].eq(self.mem_resp.payload.err),
                             rdata[i].eq(self.mem_resp.payload.rdata)]
            with m.If(self.fault.valid & self.fault.ready & (rep == i)):
                m.d.sync += reported[i].eq(1)
            with m.If(self.response.valid & self.response.ready & (out == i)):
                m.d.sync += [busy[i].eq(0), done[i].eq(0)]
        return m


def Mux_(cond, a, b):
    from amaranth.hdl import Mux

    return Mux(cond, a, b)


class StubReference:
    """What MemoryEchoCore should answer, computed on the reference's own memory."""

    def __init__(self, memory):
        self.memory = memory

    def __call__(self, request):
        addr = (request.iova & ~7) % PA_LIMIT
        try:
            if request.access == arch.Access.READ:
                spa = self.memory.read64(addr, "stub-model")
            elif request.access == arch.Access.WRITE:
                self.memory.write64(addr, request.iova ^ WRITE_PATTERN, "stub-model")
                spa = 0
            else:
                spa = self.memory.cas64(addr, 0, request.iova, "stub-model")
        except (AccessFault, DataCorruption) as error:
            err = (layouts.MemErr.POISON if isinstance(error, DataCorruption)
                   else layouts.MemErr.ACCESS_FAULT)
            cause = int(CAUSE_FOR_ERR[err])
            record = arch.FaultRecord(cause=cause, ttyp=int(request.access),
                                      device_id=request.device_id,
                                      process_id=request.process_id if request.pv else 0,
                                      pv=request.pv, priv=bool(request.priv),
                                      iotval=request.iova, iotval2=request.iova >> 12)
            return Response.fault(cause, tag=request.tag, reported=True), record
        bit = [bool(spa >> i & 1) for i in range(4)]
        return Response(Status.SUCCESS, tag=request.tag, spa=spa % PA_LIMIT, page_size=4096,
                        r=True, w=bit[0], x=bit[1], u=bit[2], g=bit[3],
                        pbmt=spa >> 4 & 3), None
