"""Interrupt pending bits, wired lines and MSIs (§8.9).

    queue conditions / pulses, HPM overflow ─► ipsr (cip, fip, pmip) ─► icvec ─► vector v
        fctl.WSI = 1: wire ``wsi[v]`` is high while any bit mapped to v is pending (level)
        fctl.WSI = 0: a bit going 0 -> 1 owes vector v one MSI: a 4-byte store of
                      msi_data[v] to msi_addr[v] on the memory port, held while
                      msi_vec_ctl[v].M = 1 and sent once the vector is unmasked.
    a refused MSI store ─► fault record, cause 273 (IOMMU MSI write access fault)

pip is never set: this IOMMU has no page-request queue (capabilities.ATS = 0).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from models import arch
from models.arch import Icvec, Ipsr

from . import layouts

VECTORS = arch.MSI_CFG_TBL_ENTRIES
#: ipsr bits this IOMMU sets, with the icvec field naming each one's vector.
_SOURCES = ((Ipsr.CIP, Icvec.CIV), (Ipsr.FIP, Icvec.FIV), (Ipsr.PMIP, Icvec.PMIV))
#: ipsr bits software may clear (RW1C); pip is read-only 0 without ATS.
IPSR_RW1C = Ipsr.CIP.mask | Ipsr.FIP.mask | Ipsr.PMIP.mask
MSI_ADDR_BITS = layouts.PA_BITS


class Interrupts(wiring.Component):
    """ipsr and the delivery of its bits as wired interrupts or MSIs.

    Ports:
      cq_condition: cqcsr.cie & (cqmf | cmd_to | cmd_ill | fence_w_ip): cip is set, and
                    set again after software clears it, while this holds.
      fq_condition: fqcsr.fie & (fqmf | fqof), likewise for fip.
      fq_record:    pulse, a fault record was written with fqcsr.fie = 1: sets fip.
      hpm_overflow: pulse, an HPM OF bit went 0 -> 1: sets pmip.
      ipsr_clear:   one-cycle RW1C write mask from the register file.
      ipsr:         the register's value.
      wsi_enable:   fctl.WSI; icvec: the vector of each source.
      msi_addr / msi_data / msi_masked: the msi_cfg_tbl entries.
      wsi:          the 16 interrupt wires (level).
      mem_req / mem_resp: WRITE32 stores of MSIs (one outstanding).
      fault:        a fault record for a refused MSI store (to the fault queue).
    """

    def __init__(self, id_bits: int = 1):
        super().__init__({
            "cq_condition": In(1),
            "fq_condition": In(1),
            "fq_record": In(1),
            "hpm_overflow": In(1),
            "ipsr_clear": In(4),
            "ipsr": Out(4),
            "wsi_enable": In(1),
            "icvec": In(16),
            "msi_addr": In(MSI_ADDR_BITS).array(VECTORS),
            "msi_data": In(32).array(VECTORS),
            "msi_masked": In(1).array(VECTORS),
            "wsi": Out(VECTORS),
            "mem_req": Out(stream.Signature(layouts.mem_request(id_bits))),
            "mem_resp": In(stream.Signature(layouts.mem_response(id_bits))),
            "fault": Out(stream.Signature(layouts.FaultReport)),
        })

    def elaborate(self, platform):
        m = Module()

        # ------------------------------------------------------------------ ipsr
        sets = {Ipsr.CIP: self.cq_condition, Ipsr.FIP: self.fq_condition | self.fq_record,
                Ipsr.PMIP: self.hpm_overflow}
        rising = []  # (bit went 0 -> 1 this cycle, its vector)
        for bit, vector_field in _SOURCES:
            pending = self.ipsr[bit.lo]
            after_clear = pending & ~self.ipsr_clear[bit.lo]
            # A clear and a set in the same cycle leave the bit set, and it is a new
            # 0 -> 1 edge: the model clears first, then re-evaluates the condition.
            m.d.sync += pending.eq(after_clear | sets[bit])
            vector = self.icvec[vector_field.lo:vector_field.hi + 1]
            rising.append((sets[bit] & ~after_clear, vector))

        # ------------------------------------------------------- wired interrupts
        for v in range(VECTORS):
            m.d.comb += self.wsi[v].eq(self.wsi_enable & Cat(
                self.ipsr[bit.lo] & (self.icvec[field.lo:field.hi + 1] == v)
                for bit, field in _SOURCES).any())

        # ------------------------------------------------------------------ MSIs
        # owed[v]: vector v has an MSI to send (msi_pending of the model); an edge while
        # fctl.WSI = 0 owes one, a masked vector keeps owing until it is unmasked.
        owed = Signal(VECTORS)
        sendable = Signal(VECTORS)
        m.d.comb += sendable.eq(owed & ~Cat(*self.msi_masked))

        # The store is built from registers (issue 7): IDLE registers the lowest
        # sendable vector (one-hot), SELECT loads its address and data into the request
        # with an AND-OR (if it is still owed and unmasked), SEND offers it, WAIT takes
        # the response. An MSI leaves 2 cycles after it is owed (was at once); the
        # owed bit clears as the store is accepted, as before.
        pick = Signal(VECTORS)
        lowest = Cat(sendable[v] & ~sendable[:v].any() for v in range(VECTORS))
        req = self.mem_req.payload
        taken = Signal(VECTORS)  # the owed bit that leaves this cycle
        m.d.comb += [req.op.eq(layouts.MemOp.WRITE32), self.mem_resp.ready.eq(1)]
        with m.FSM(name="msi"):
            with m.State("IDLE"):
                m.d.sync += pick.eq(lowest)
                with m.If(sendable.any() & ~self.fault.valid):
                    m.next = "SELECT"
            with m.State("SELECT"):
                with m.If((pick & sendable).any()):
                    m.d.sync += [self.mem_req.valid.eq(1),
                                 req.addr.eq(_select(pick, self.msi_addr)),
                                 req.wdata.eq(_select(pick, self.msi_data))]
                    m.next = "SEND"
                with m.Else():
                    m.next = "IDLE"  # masked meanwhile: it waits in owed
            with m.State("SEND"), m.If(self.mem_req.ready):
                m.d.comb += taken.eq(pick)
                m.d.sync += self.mem_req.valid.eq(0)
                m.next = "WAIT"
            # A refused store is reported as cause 273 with iotval = msi_addr (§8.9); the
            # request's address register still holds it.
            with m.State("WAIT"), m.If(self.mem_resp.valid):
                m.next = "IDLE"
                with m.If(self.mem_resp.payload.err != layouts.MemErr.OK):
                    m.d.sync += [
                        self.fault.valid.eq(1),
                        self.fault.payload.eq(0),
                        self.fault.payload.cause.eq(arch.Cause.IOMMU_MSI_WRITE_ACCESS_FAULT),
                        self.fault.payload.ttyp.eq(arch.Ttyp.NONE),
                        self.fault.payload.iotval.eq(req.addr),
                    ]
        new_owed = Signal(VECTORS)
        m.d.comb += new_owed.eq(_or_all(
            Mux(edge & ~self.wsi_enable, Const(1, VECTORS) << vector, 0)
            for edge, vector in rising))
        m.d.sync += owed.eq((owed & ~taken) | new_owed)
        with m.If(self.fault.valid & self.fault.ready):
            m.d.sync += self.fault.valid.eq(0)
        return m


def _select(one_hot, values):
    """The element of ``values`` that ``one_hot`` names, as an AND-OR (no priority)."""
    width = len(values[0])
    result = Const(0, width)
    for bit, value in zip(one_hot, values, strict=True):
        result = result | (value & bit.replicate(width))
    return result


def _or_all(values):
    result = Const(0, VECTORS)
    for value in values:
        result = result | value
    return result
