"""The register page (§8): the CPU's door to the IOMMU, on a simple MMIO stream.

    mmio_req ─► decode (offset, 4/8 bytes) ─► WARL / RW1C / RO rules ─► mmio_resp (2 cycles)
                  │ configuration out: ddtp, fctl, queue bases and indices, enables
                  │ status in: cqh/fqt, xqon, busy, error pulses from the queues
                  ├─ Hpm (rtl/hpm.py): iohpmcycles, iohpmctrN, iohpmevtN, fed by core events
                  └─ Interrupts (rtl/interrupts.py): ipsr, icvec, msi_cfg_tbl delivery, wsi

Every register behaves as ``models/iommu.py``'s ``read_register`` / ``write_register``
for the same capabilities: a 4-byte write to one half of a 64-bit register keeps
the other half; reserved and absent registers read 0 and ignore writes. Accesses the
spec leaves UNSPECIFIED (misaligned, 8 bytes on a 32-bit register) read 0 and write
nothing. Unlike the model, some things take cycles here: ``xqon``/``busy`` come from
the queues, and ``tr_req_ctl.Busy`` stays 1 until the debug translation completes
(writes to ``tr_req_iova``/``tr_req_ctl`` are ignored meanwhile).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from models import arch
from models.arch import (
    Cap,
    Cqcsr,
    Ddtp,
    DdtpMode,
    Fctl,
    Fqcsr,
    Igs,
    MsiAddr,
    QueueBase,
    Reg,
    TrReqCtl,
    TrResponse,
)

from . import layouts
from .hpm import EventSource, Hpm
from .interrupts import IPSR_RW1C, MSI_ADDR_BITS, VECTORS, Interrupts
from .params import DEFAULT, IOMMUParams

#: tr_req_ctl bits software writes (Go/Busy is handled apart, §8.11).
_TR_REQ_CTL_WRITABLE = (TrReqCtl.PRIV.mask | TrReqCtl.EXE.mask | TrReqCtl.NW.mask
                        | TrReqCtl.PID.mask | TrReqCtl.PV.mask | TrReqCtl.DID.mask)


def legal_fctl(capabilities: int, value):
    """fctl WARL (§8.5): BE only with END, WSI as IGS allows, GXL only with Sv32x4.
    ``value`` may be an int (reset value) or an Amaranth value."""
    igs = Cap.IGS.get(capabilities)
    if isinstance(value, int):
        be = Fctl.BE.get(value) if Cap.END.get(capabilities) else 0
        wsi = {Igs.MSI: 0, Igs.WSI: 1}.get(igs, Fctl.WSI.get(value))
        gxl = Fctl.GXL.get(value) if Cap.SV32X4.get(capabilities) else 0
        return Fctl.BE.put(be) | Fctl.WSI.put(wsi) | Fctl.GXL.put(gxl)
    be = value[Fctl.BE.lo] if Cap.END.get(capabilities) else Const(0, 1)
    wsi = {Igs.MSI: Const(0, 1), Igs.WSI: Const(1, 1)}.get(igs, value[Fctl.WSI.lo])
    gxl = value[Fctl.GXL.lo] if Cap.SV32X4.get(capabilities) else Const(0, 1)
    return Cat(be, wsi, gxl)


def field(value, f: arch.Field):
    return value[f.lo:f.hi + 1]


def index_mask(log2szm1):
    """entries - 1 of a queue whose xqb.LOG2SZ-1 is ``log2szm1`` (2^(LOG2SZ-1+1) entries)."""
    return ((Const(2, 33) << log2szm1) - 1)[:32]


class RegisterFile(wiring.Component):
    """The register page with the HPM and the interrupt controller behind it.

    Ports (configuration outputs hold their register's value):
      mmio_req / mmio_resp: register accesses (layouts.MmioRequest / MmioResponse), one
                    response per request, 3 cycles after it is accepted; one access
                    every 2 cycles. The access takes effect 1 cycle after it is accepted;
                    after a write to cqb, fqb or an HPM register (which settles a
                    cycle later) the next access is performed and answered a cycle later.
      ddtp, fctl:   to the translation core.
      cqb_ppn, cqb_log2szm1, cqt, cqen, cq_stopped: to the command queue; it answers with
                    cqh, cqon, cq_busy and the pulses set_cmd_ill, set_cqmf, set_fence_w_ip.
      fqb_ppn, fqb_log2szm1, fqh, fqen, fq_stopped: to the fault queue; it answers with
                    fqt, fqon, fq_busy and the pulses set_fqmf, set_fqof, fq_record_written.
      ev_*:         the core's HPM events (see rtl/hpm.py).
      tr_request:   the debug translation (§8.11) once tr_req_ctl.Go is written: an
                    Untranslated request built from tr_req_iova / tr_req_ctl (tag 0).
      tr_result:    its completion; fills tr_response and clears Busy. Always ready.
      wsi:          wired interrupt lines (fctl.WSI = 1).
      msi_req / msi_resp, msi_fault: the interrupt controller's MSI stores and the fault
                    record of a refused one.
    """

    def __init__(self, params: IOMMUParams = DEFAULT):
        self.params = params
        caps = params.capabilities
        self.hpm_counters = params.hpm_counters if Cap.HPM.get(caps) else 0
        super().__init__({
            "mmio_req": In(stream.Signature(layouts.MmioRequest)),
            "mmio_resp": Out(stream.Signature(layouts.MmioResponse)),
            "ddtp": Out(64),
            "fctl": Out(32, init=legal_fctl(caps, params.fctl_reset)),
            "cqb_ppn": Out(layouts.PPN_BITS),
            "cqb_log2szm1": Out(5),
            "cqt": Out(32),
            "cqen": Out(1),
            "cq_stopped": Out(1),
            "cqh": In(32),
            "cqon": In(1),
            "cq_busy": In(1),
            "set_cmd_ill": In(1),
            "set_cqmf": In(1),
            "set_fence_w_ip": In(1),
            "fqb_ppn": Out(layouts.PPN_BITS),
            "fqb_log2szm1": Out(5),
            "fqh": Out(32),
            "fqen": Out(1),
            "fq_stopped": Out(1),
            "fqt": In(32),
            "fqon": In(1),
            "fq_busy": In(1),
            "set_fqmf": In(1),
            "set_fqof": In(1),
            "fq_record_written": In(1),
            "ev_request": In(1),
            "ev_request_src": In(EventSource),
            "ev_ddt_walk": In(1),
            "ev_pdt_walk": In(1),
            "ev_context_src": In(EventSource),
            "ev_walk": In(1),
            "ev_walk_src": In(EventSource),
            "tr_request": Out(stream.Signature(layouts.translation_request(1))),
            "tr_result": In(stream.Signature(layouts.translation_response(1))),
            "wsi": Out(VECTORS),
            "msi_req": Out(stream.Signature(layouts.mem_request(1))),
            "msi_resp": In(stream.Signature(layouts.mem_response(1))),
            "msi_fault": Out(stream.Signature(layouts.FaultReport)),
        })

    def elaborate(self, platform):
        m = Module()
        caps = self.params.capabilities
        pas = Cap.PAS.get(caps)
        ppn_mask = (1 << (pas - arch.PAGE_SHIFT)) - 1
        counters = self.hpm_counters
        has_dbg = bool(Cap.DBG.get(caps))
        has_msi = Cap.IGS.get(caps) != Igs.WSI

        m.submodules.interrupts = irq = Interrupts(1)
        wiring.connect(m, irq.mem_req, wiring.flipped(self.msi_req))
        wiring.connect(m, wiring.flipped(self.msi_resp), irq.mem_resp)
        wiring.connect(m, irq.fault, wiring.flipped(self.msi_fault))
        m.d.comb += self.wsi.eq(irq.wsi)
        hpm = None
        if counters:
            m.submodules.hpm = hpm = Hpm(counters)
            m.d.comb += [
                hpm.ev_request.eq(self.ev_request), hpm.ev_request_src.eq(self.ev_request_src),
                hpm.ev_ddt_walk.eq(self.ev_ddt_walk), hpm.ev_pdt_walk.eq(self.ev_pdt_walk),
                hpm.ev_context_src.eq(self.ev_context_src),
                hpm.ev_walk.eq(self.ev_walk), hpm.ev_walk_src.eq(self.ev_walk_src),
            ]

        # ------------------------------------------------------ access decode
        # Two registered steps (issue 7, timing), one access per cycle:
        #   A  the accepted access and its decode: one flag per register (and per half
        #      of a 64-bit register), made from the request port;
        #   R  the response: the registers' values AND-ed with the flags and OR-ed
        #      together. A write takes effect as its access leaves A, so an access
        #      reads what every earlier one wrote.
        # No address compare sits between a flip-flop and a register's enable or the
        # read data; the read data is ORed in two steps (R, then the response), so the
        # response comes 3 cycles after the request is accepted.
        # Some writes finish a cycle after they leave A (issue 7: the HPM registers
        # them before its counters, a queue base masks its index a cycle later); the
        # access after such a "settling" write waits in A for that cycle, so it
        # still reads what every earlier one wrote.
        req = self.mmio_req.payload
        fire = Signal()
        acc_valid = Signal()
        acc = Signal.like(req, name="acc")
        acc_move = Signal()  # the access in A is performed and its response loaded
        settling = Signal()  # the previous access was a settling write, finishing now
        settling_hits = []  # the decode flags of the registers whose writes settle
        read_valid = Signal()  # step R holds a read's partial ORs (or a write's reply)
        m.d.comb += [
            # Not behind the response port's ready: acc_move is every register's write
            # enable, and mmio_resp.ready through it was a routed critical path
            # (issue 7). A is performed when R is empty: one access every 2 cycles.
            acc_move.eq(acc_valid & ~settling & ~read_valid),
            self.mmio_req.ready.eq(~acc_valid | acc_move),
            fire.eq(self.mmio_req.valid & self.mmio_req.ready),
        ]
        with m.If(fire):
            m.d.sync += [acc_valid.eq(1), acc.eq(req)]
        with m.Elif(acc_move):
            m.d.sync += acc_valid.eq(0)
        write = acc_move & acc.write
        read_terms = []

        def decoded(name, condition):
            """A flag of step A: ``condition`` on the request, registered as it is accepted."""
            flag = Signal(name=name)
            with m.If(fire):
                m.d.sync += flag.eq(condition)
            return flag

        def register(offset: int, size: int, value, on_write=None, merge_base=None,
                     settles=False):
            """Decode one register; ``on_write(v)`` runs on a write with ``v`` the new
            full-width value (a 4-byte half merged with ``merge_base``, default the
            register's read value). ``settles``: the write finishes a cycle later."""
            value = Cat(value, Const(0, 64))[:8 * size]
            if size == 8:
                full = decoded(f"acc_{offset:03x}_full", req.wide & (req.addr == offset))
                low = decoded(f"acc_{offset:03x}_low", ~req.wide & (req.addr == offset))
                high = decoded(f"acc_{offset:03x}_high", ~req.wide & (req.addr == offset + 4))
                hit = full | low | high
                read_terms.extend([value & full.replicate(64),
                                   value[:32] & low.replicate(32),
                                   value[32:] & high.replicate(32)])
                base = value if merge_base is None else merge_base
                merged = Mux(full, acc.wdata, Mux(low, Cat(acc.wdata[:32], base[32:]),
                                                  Cat(base[:32], acc.wdata[:32])))
            else:
                hit = decoded(f"acc_{offset:03x}", ~req.wide & (req.addr == offset))
                read_terms.append(value & hit.replicate(32))
                merged = acc.wdata[:32]
            if settles:
                settling_hits.append(hit)
            if on_write is not None:
                new = Signal(8 * size, name=f"write_{offset:03x}")
                m.d.comb += new.eq(merged)
                with m.If(write & hit):
                    on_write(new)

        # ----------------------------------------------------- capabilities, fctl
        register(Reg.CAPABILITIES, 8, Const(caps, 64))

        def write_fctl(v):
            m.d.sync += self.fctl.eq(legal_fctl(caps, v))

        # Changing fctl while the IOMMU is on is UNSPECIFIED (§8.5): applied, as the model does.
        register(Reg.FCTL, 4, self.fctl, write_fctl)

        # ------------------------------------------------------------------ ddtp
        ddtp_mode = Signal(4)
        ddtp_ppn = Signal(layouts.PPN_BITS)
        # busy reads 0: a new ddtp takes effect at the write (the core reads it per request).
        m.d.comb += self.ddtp.eq(Cat(ddtp_mode, Const(0, Ddtp.PPN.lo - 4), ddtp_ppn))

        def write_ddtp(v):
            mode = field(v, Ddtp.IOMMU_MODE)
            with m.If(mode <= max(DdtpMode)):  # WARL: a reserved/custom mode keeps the old
                m.d.sync += ddtp_mode.eq(mode)
            m.d.sync += ddtp_ppn.eq(field(v, Ddtp.PPN) & ppn_mask)

        register(Reg.DDTP, 8, self.ddtp, write_ddtp)

        # ---------------------------------------------------------------- queues
        def queue_base_value(log2szm1, ppn):
            return Cat(log2szm1, Const(0, QueueBase.PPN.lo - 5), ppn)

        def write_base(log2szm1, ppn, sw_index):
            # The SW-owned index keeps only its low LOG2SZ bits (§8.6). It is masked
            # the cycle after the write, with the new LOG2SZ from its register, so no
            # write decode sits in front of the mask (issue 7); the write settles.
            remask = Signal(name=f"remask_{sw_index.name}")
            m.d.sync += remask.eq(0)
            with m.If(remask):
                m.d.sync += sw_index.eq(sw_index & index_mask(log2szm1))

            def write(v):
                m.d.sync += [log2szm1.eq(field(v, QueueBase.LOG2SZ_1)),
                             ppn.eq(field(v, QueueBase.PPN) & ppn_mask), remask.eq(1)]
            return write

        def write_index(log2szm1, sw_index):
            def write(v):
                m.d.sync += sw_index.eq(v & index_mask(log2szm1))
            return write

        register(Reg.CQB, 8, queue_base_value(self.cqb_log2szm1, self.cqb_ppn),
                 write_base(self.cqb_log2szm1, self.cqb_ppn, self.cqt), settles=True)
        register(Reg.CQH, 4, self.cqh)  # owned by the command queue: RO
        register(Reg.CQT, 4, self.cqt, write_index(self.cqb_log2szm1, self.cqt))
        register(Reg.FQB, 8, queue_base_value(self.fqb_log2szm1, self.fqb_ppn),
                 write_base(self.fqb_log2szm1, self.fqb_ppn, self.fqh), settles=True)
        register(Reg.FQH, 4, self.fqh, write_index(self.fqb_log2szm1, self.fqh))
        register(Reg.FQT, 4, self.fqt)  # owned by the fault queue: RO
        # pqb, pqh, pqt, pqcsr: no page-request queue without ATS; they read 0.

        cie, cqmf, cmd_to, cmd_ill, fence_w_ip = (Signal(name=n) for n in (
            "cie", "cqmf", "cmd_to", "cmd_ill", "fence_w_ip"))
        fie, fqmf, fqof = (Signal(name=n) for n in ("fie", "fqmf", "fqof"))
        cq_rw1c = [(Cqcsr.CQMF, cqmf), (Cqcsr.CMD_TO, cmd_to), (Cqcsr.CMD_ILL, cmd_ill),
                   (Cqcsr.FENCE_W_IP, fence_w_ip)]
        fq_rw1c = [(Fqcsr.FQMF, fqmf), (Fqcsr.FQOF, fqof)]
        cqcsr = Signal(32)
        fqcsr = Signal(32)
        m.d.comb += cqcsr.eq(sum((bit << f.lo for f, bit in
                                  [(Cqcsr.CQEN, self.cqen), (Cqcsr.CIE, cie), *cq_rw1c,
                                   (Cqcsr.CQON, self.cqon), (Cqcsr.BUSY, self.cq_busy)]),
                                 Const(0, 32)))
        m.d.comb += fqcsr.eq(sum((bit << f.lo for f, bit in
                                  [(Fqcsr.FQEN, self.fqen), (Fqcsr.FIE, fie), *fq_rw1c,
                                   (Fqcsr.FQON, self.fqon), (Fqcsr.BUSY, self.fq_busy)]),
                                 Const(0, 32)))

        def write_csr(enable, interrupt_enable, enable_field, ie_field, rw1c):
            def write(v):
                for f, bit in rw1c:
                    with m.If(v[f.lo]):
                        m.d.sync += bit.eq(0)
                with m.If(v[enable_field.lo] & ~enable):
                    # xqen 0 -> 1 clears every error bit; the queue zeroes its own index (§8.8)
                    m.d.sync += [bit.eq(0) for _, bit in rw1c]
                m.d.sync += [enable.eq(v[enable_field.lo]),
                             interrupt_enable.eq(v[ie_field.lo])]
            return write

        register(Reg.CQCSR, 4, cqcsr, write_csr(self.cqen, cie, Cqcsr.CQEN, Cqcsr.CIE, cq_rw1c))
        register(Reg.FQCSR, 4, fqcsr, write_csr(self.fqen, fie, Fqcsr.FQEN, Fqcsr.FIE, fq_rw1c))
        # Error reports from the queues win over a same-cycle write: nothing is lost.
        for pulse, bit in ((self.set_cmd_ill, cmd_ill), (self.set_cqmf, cqmf),
                           (self.set_fence_w_ip, fence_w_ip), (self.set_fqmf, fqmf),
                           (self.set_fqof, fqof)):
            with m.If(pulse):
                m.d.sync += bit.eq(1)
        m.d.comb += [
            self.cq_stopped.eq(cqmf | cmd_to | cmd_ill),
            self.fq_stopped.eq(fqmf | fqof),
        ]

        # ------------------------------------------------------------ interrupts
        icvec = Signal(16)
        msi_addr = [Signal(MSI_ADDR_BITS, name=f"msi_addr_{x}") for x in range(VECTORS)]
        msi_data = [Signal(32, name=f"msi_data_{x}") for x in range(VECTORS)]
        msi_masked = [Signal(name=f"msi_masked_{x}") for x in range(VECTORS)]
        m.d.comb += [
            irq.cq_condition.eq(cie & (cqmf | cmd_to | cmd_ill | fence_w_ip)),
            irq.fq_condition.eq(fie & (fqmf | fqof)),
            irq.fq_record.eq(fie & self.fq_record_written),
            irq.wsi_enable.eq(self.fctl[Fctl.WSI.lo]),
            irq.icvec.eq(icvec),
        ]
        for x in range(VECTORS):
            m.d.comb += [irq.msi_addr[x].eq(msi_addr[x]), irq.msi_data[x].eq(msi_data[x]),
                         irq.msi_masked[x].eq(msi_masked[x])]

        def write_ipsr(v):
            m.d.comb += irq.ipsr_clear.eq(v & IPSR_RW1C)

        register(Reg.IPSR, 4, irq.ipsr, write_ipsr)

        def write_icvec(v):
            # 16 vectors: civ, fiv, pmiv keep 4 bits; piv is 0 without a page-request queue.
            m.d.sync += icvec.eq(v[:12])

        register(Reg.ICVEC, 8, icvec, write_icvec)

        if has_msi:
            for x in range(VECTORS):
                addr, data, vec_ctl = arch.msi_cfg(x)

                def write_addr(v, x=x):
                    m.d.sync += msi_addr[x].eq(
                        Cat(Const(0, 2), field(v, MsiAddr.ADDR))[:pas])

                register(addr, 8, msi_addr[x], write_addr)
                register(data, 4, msi_data[x],
                         lambda v, x=x: m.d.sync.__iadd__(msi_data[x].eq(v)))
                register(vec_ctl, 4, msi_masked[x],
                         lambda v, x=x: m.d.sync.__iadd__(msi_masked[x].eq(v[0])))

        # ------------------------------------------------------------------- HPM
        if hpm is not None:
            inhibit = Signal(counters + 1)
            m.d.comb += [hpm.inhibit.eq(inhibit), irq.hpm_overflow.eq(hpm.overflow)]

            # The HPM merges a 4-byte write with the half it keeps when it applies it
            # (a cycle later, rtl/hpm.py), so it gets the raw data in place and the
            # halves written, not this file's merged value.
            low_half = acc.wide | ~acc.addr[2]
            m.d.comb += [
                hpm.wdata.eq(Cat(acc.wdata[:32], Mux(acc.wide, acc.wdata[32:], acc.wdata[:32]))),
                hpm.write_halves.eq(Cat(low_half, acc.wide | acc.addr[2])),
            ]

            def write_hpm(strobe):
                def write(v):
                    m.d.comb += strobe.eq(1)
                return write

            register(Reg.IOCOUNTOVF, 4, Cat(hpm.cycles[63], *(hpm.evt[n][63]
                                                              for n in range(counters))))
            register(Reg.IOCOUNTINH, 4, inhibit,
                     lambda v: m.d.sync.__iadd__(inhibit.eq(v[:counters + 1])))
            register(Reg.IOHPMCYCLES, 8, hpm.cycles, write_hpm(hpm.write_cycles), settles=True)
            for n in range(counters):
                register(arch.iohpmctr(n + 1), 8, hpm.ctr[n], write_hpm(hpm.write_ctr[n]),
                         settles=True)
                register(arch.iohpmevt(n + 1), 8, hpm.evt[n], write_hpm(hpm.write_evt[n]),
                         settles=True)

        # ----------------------------------------------------- debug translation
        if has_dbg:
            self._debug_translation(m, register)
        else:
            m.d.comb += self.tr_result.ready.eq(1)

        # ------------------------------------------------------------- response
        m.d.sync += settling.eq(write & Cat(*settling_hits).any())
        # At most one term is nonzero. The OR of the register values (from all over
        # the chip) is made in two registered steps: partial ORs of groups of 8
        # neighbouring registers as the access leaves A (step R), then their OR into
        # the response (issue 7: one OR tree of ~100 terms was 6 levels).
        groups = [read_terms[i:i + 8] for i in range(0, len(read_terms), 8)]
        partials = [Signal(64, name=f"read_part{k}") for k in range(len(groups))]
        read_write = Signal()  # R holds a write: its response carries no data
        with m.If(acc_move):
            m.d.sync += [read_valid.eq(1), read_write.eq(acc.write),
                         *(part.eq(_or_all(terms)) for part, terms in zip(partials, groups))]
        read_move = Signal()
        m.d.comb += read_move.eq(read_valid & (~self.mmio_resp.valid | self.mmio_resp.ready))
        with m.If(read_move):
            m.d.sync += [read_valid.eq(0), self.mmio_resp.valid.eq(1),
                         self.mmio_resp.payload.rdata.eq(Mux(read_write, 0, _or_all(partials)))]
        with m.Elif(self.mmio_resp.ready):
            m.d.sync += self.mmio_resp.valid.eq(0)
        return m

    def _debug_translation(self, m, register):
        """tr_req_iova / tr_req_ctl / tr_response (§8.11)."""
        tr_req_iova = Signal(64)
        tr_req_ctl = Signal(64)  # the software-written fields, Go/Busy apart
        tr_response = Signal(64)
        busy = Signal()  # tr_req_ctl.Go/Busy: set by writing Go = 1, cleared on completion
        issued = Signal()  # the request has entered the core

        def write_iova(v):
            with m.If(~busy):
                m.d.sync += tr_req_iova.eq(v & ~((1 << arch.PAGE_SHIFT) - 1))

        def write_ctl(v):
            with m.If(~busy):
                m.d.sync += [tr_req_ctl.eq(v & _TR_REQ_CTL_WRITABLE),
                             busy.eq(v[TrReqCtl.GO_BUSY.lo]), issued.eq(0)]

        register(Reg.TR_REQ_IOVA, 8, tr_req_iova, write_iova)
        register(Reg.TR_REQ_CTL, 8, tr_req_ctl | busy, write_ctl, merge_base=tr_req_ctl)
        register(Reg.TR_RESPONSE, 8, tr_response)

        # The request (§8.11): Untranslated; NW=0 asks for read and write (a write
        # request), NW=1 for read, or execute with EXE; Supervisor only with a PID.
        ctl = tr_req_ctl
        pv = ctl[TrReqCtl.PV.lo]
        out = self.tr_request.payload
        m.d.comb += [
            self.tr_request.valid.eq(busy & ~issued),
            out.tag.eq(0),
            out.device_id.eq(field(ctl, TrReqCtl.DID)),
            out.pv.eq(pv),
            out.process_id.eq(Mux(pv, field(ctl, TrReqCtl.PID), 0)),
            out.priv.eq(pv & ctl[TrReqCtl.PRIV.lo]),
            out.access.eq(Mux(ctl[TrReqCtl.NW.lo],
                              Mux(ctl[TrReqCtl.EXE.lo], layouts.Access.EXECUTE,
                                  layouts.Access.READ),
                              layouts.Access.WRITE)),
            out.addr_type.eq(layouts.AddrType.UNTRANSLATED),
            out.iova.eq(tr_req_iova),
            self.tr_result.ready.eq(1),
        ]
        with m.If(self.tr_request.valid & self.tr_request.ready):
            m.d.sync += issued.eq(1)

        # tr_response: a superpage of 2^(k+1) pages has S = 1 and PPN bits below k set
        # to 1, bit k to 0 (the NAPOT-like encoding of §8.11).
        res = self.tr_result.payload
        ppn = res.spa[arch.PAGE_SHIFT:arch.PAGE_SHIFT + TrResponse.PPN.width]
        pages_m1 = Signal(TrResponse.PPN.width)  # pages - 1 of the translation
        # Bit i is set for a page of more than 2^i 4 KiB pages: compares with constants,
        # no shift and no carry chain behind the core's result (issue 7).
        m.d.comb += pages_m1.eq(Cat(res.size_log2 > arch.PAGE_SHIFT + i
                                    for i in range(TrResponse.PPN.width)))
        encoded = Signal(64)
        m.d.comb += encoded.eq(Cat(
            Const(0, TrResponse.PBMT.lo), res.pbmt, pages_m1.any(),
            (ppn & ~pages_m1) | (pages_m1 >> 1)))
        # An MRIF-mode MSI page has no PPN to report: the debug interface answers it
        # with a fault (cause 260, "transaction type disallowed", §9.3 / §8.11).
        with m.If(self.tr_result.valid & busy):
            m.d.sync += [busy.eq(0), issued.eq(0),
                         tr_response.eq(Mux(res.fault | res.mrif, 1 << TrResponse.FAULT.lo,
                                            encoded))]


def _or_all(values):
    """OR of ``values`` (64 bits wide), as a balanced tree."""
    values = [Cat(v, Const(0, 64))[:64] for v in values] or [Const(0, 64)]
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]
