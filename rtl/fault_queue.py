"""Fault queue: writes the core's fault reports into memory as 32-byte records (spec §6.2-6.3).

The queue is a circular buffer in memory (base ``fqb``, 2^(LOG2SZ-1+1) records of 32
bytes). The IOMMU is the producer: it writes a record at the tail ``fqt`` and moves
the tail on; software reads records from the head ``fqh`` and moves the head on.

    IDLE ──report, queue on, not stopped──► SETTLE ─► CHECK ──room──► WRITE ─► WRITE_WAIT ─(4 dwords)─► IDLE
      │                                                 │               ▲   └──┘        fqt + 1, record_written
      │                              queue full: set_fqof ──────────► HALTED (until the register block shows
      │                         a store faults (WRITE_WAIT): set_fqmf ─┘     fqof/fqmf as ``stopped``)
      └──report while off or stopped: dropped

Timing (issue 7): IDLE takes the report into the record in every cycle; the checks of
the slot at ``fqt`` (queue full, record beyond the address space) are registered in
every cycle, the full check in two steps (fqt + 1, then the compare with fqh). SETTLE
waits for them and CHECK acts on them, so a record costs two cycles more. The checks
see the indices of the cycle before the report was taken. The memory request comes from
flip-flops: the record is shifted out a dword at a time and its address is registered.

No report is lost silently: one that finds the queue full sets ``fqof`` and one whose
store faults sets ``fqmf`` (both interrupt sources); either way the register block
stops the queue until software clears the bit, and reports meanwhile are dropped
(§6.3). The ``fault`` stream is never held for long: reports are taken at once when
they cannot be written, and only wait while a record is checked or stored.
"""

from amaranth.hdl import C, Cat, Const, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from models import arch

from . import layouts
from .command_queue import queue_index_mask

__all__ = ["FAULT_QUEUE_STATES", "FAULT_RECORD_LAYOUT", "FaultQueue"]

#: The FSM's states in declaration order (Amaranth numbers them this way in the Verilog).
FAULT_QUEUE_STATES = ("OFF", "START", "IDLE", "SETTLE", "CHECK", "HALTED", "WRITE", "WRITE_WAIT")

_INDEX_BITS = 32  # fqh / fqt are 32-bit registers (§8.6)
_RECORD_LOG2 = arch.FAULT_RECORD_SIZE.bit_length() - 1
_DWORD_LOG2 = 3
_DWORDS = arch.FAULT_RECORD_SIZE >> _DWORD_LOG2


#: The 32-byte record as four little-endian dwords (§6.2): header, reserved, iotval, iotval2.
FAULT_RECORD_LAYOUT = data.StructLayout({
    "header": layouts.dword_layout(arch.FaultRec),
    "reserved": unsigned(64),
    "iotval": unsigned(64),
    "iotval2": unsigned(64),
})


class FaultQueue(wiring.Component):
    """Writes fault reports to the in-memory fault queue (§6.2, §6.3, §8.6-§8.8).

    Ports:
      fqb_ppn, fqb_log2szm1: ``fqb``.PPN and ``fqb``.LOG2SZ-1 as the register holds them.
      fqh:          the software-owned head (kept WARL-masked by the register block).
      fqen:         ``fqcsr.fqen``. 0→1: ``busy`` for one cycle, ``fqt`` := 0, then ``fqon``.
                    1→0: a record being stored is finished (``busy``), then ``fqon`` := 0.
      stopped:      ``fqmf | fqof``: reports are dropped while 1.
      fqt, fqon, busy: the registers' read values.
      set_fqmf, set_fqof, record_written: one-cycle pulses for the register block (it
                    owns the RW1C bits and ``ipsr.fip``). After an error pulse reports
                    are dropped until ``stopped`` shows it (or ``fqen`` = 0).
      fault:        reports from the core; taken in the cycle they arrive unless a record
                    is being checked or stored.
      mem_req, mem_resp: four 8-byte WRITEs per record, always id 0, one outstanding.

    ``pas`` is the physical address size: a record beyond 2^pas is an access fault (fqmf)
    without a memory access, as in the reference model.
    """

    def __init__(self, id_bits: int, pas: int = layouts.PA_BITS):
        if not isinstance(id_bits, int) or id_bits < 1:
            raise ValueError(f"id_bits must be a positive integer, not {id_bits!r}")
        if not isinstance(pas, int) or not arch.PAGE_SHIFT < pas <= layouts.PA_BITS:
            raise ValueError(f"pas must be 13..{layouts.PA_BITS}, not {pas!r}")
        self.id_bits, self.pas = id_bits, pas
        super().__init__({
            "fqb_ppn": In(layouts.PPN_BITS),
            "fqb_log2szm1": In(arch.QueueBase.LOG2SZ_1.width),
            "fqh": In(_INDEX_BITS),
            "fqen": In(1),
            "stopped": In(1),
            "fqt": Out(_INDEX_BITS),
            "fqon": Out(1),
            "busy": Out(1),
            "set_fqmf": Out(1),
            "set_fqof": Out(1),
            "record_written": Out(1),
            "fault": In(stream.Signature(layouts.FaultReport)),
            "mem_req": Out(stream.Signature(layouts.mem_request(id_bits))),
            "mem_resp": In(stream.Signature(layouts.mem_response(id_bits))),
        })

    def elaborate(self, platform):
        m = Module()

        record = Signal(FAULT_RECORD_LAYOUT)
        dword = Signal(range(_DWORDS))  # the record's dword being stored
        index_mask = Signal(_INDEX_BITS)
        m.d.comb += index_mask.eq(queue_index_mask(self.fqb_log2szm1))
        next_fqt = (self.fqt + 1) & index_mask
        # fqt + 1 registered, then compared with fqh: the increment's carry chain and
        # the compare in one cycle were 7.7 levels (issue 7). The checks are two edges
        # behind fqt, which SETTLE waits for.
        next_fqt_q = Signal(_INDEX_BITS)
        m.d.sync += next_fqt_q.eq(next_fqt)
        full = next_fqt_q == self.fqh  # tail == head - 1 (mod N): N - 1 usable slots (§8.6)

        # fqb + fqt * 32, wide enough to see an address beyond the 56-bit space.
        record_addr = Signal(layouts.PA_BITS + _INDEX_BITS)
        m.d.comb += record_addr.eq((self.fqb_ppn << arch.PAGE_SHIFT) + (self.fqt << _RECORD_LOG2))
        # The slot's checks and address, registered in every cycle (used in CHECK and
        # while the record is stored, when fqt does not move).
        slot_full = Signal()
        slot_beyond_pas = Signal()
        slot_addr = Signal(layouts.PA_BITS - _RECORD_LOG2)
        m.d.sync += [
            slot_full.eq(full),
            slot_beyond_pas.eq(record_addr[self.pas:].any()),  # aligned: fits iff it starts below
            slot_addr.eq(record_addr[_RECORD_LOG2:layouts.PA_BITS]),
        ]

        report = self.fault.payload
        dwords = record.as_value()  # dword 0 is the one being stored: shifted out
        m.d.comb += [
            self.mem_req.payload.id.eq(0),
            self.mem_req.payload.op.eq(layouts.MemOp.WRITE),
            self.mem_req.payload.addr.eq(Cat(C(0, _DWORD_LOG2), dword, slot_addr)),
            self.mem_req.payload.wdata.eq(dwords[:64]),
            self.mem_req.payload.compare.eq(Const(0, 64)),
        ]

        def stop(pulse):
            m.d.comb += pulse.eq(1)
            m.next = "HALTED"

        with m.FSM(name="fq") as fsm:
            with m.State("OFF"):
                m.d.comb += self.fault.ready.eq(1)  # FQ off: nothing is written (§6.3)
                with m.If(self.fqen):
                    m.next = "START"

            with m.State("START"):
                # fqen 0 -> 1: zero the IOMMU-owned index, then report the queue on (§8.8).
                m.d.comb += [self.busy.eq(1), self.fault.ready.eq(1)]
                m.d.sync += [self.fqt.eq(0), self.fqon.eq(1)]
                m.next = "IDLE"

            with m.State("IDLE"):
                m.d.comb += self.fault.ready.eq(1)
                # Loaded in every cycle: kept only when a report moves to CHECK.
                m.d.sync += [
                    record.eq(0),
                    record.header.cause.eq(report.cause),
                    record.header.pid.eq(report.process_id),
                    record.header.pv.eq(report.pv),
                    record.header.priv.eq(report.priv),
                    record.header.ttyp.eq(report.ttyp),
                    record.header.did.eq(report.device_id),
                    record.iotval.eq(report.iotval),
                    record.iotval2.eq(report.iotval2),
                    dword.eq(0),
                ]
                with m.If(~self.fqen):
                    m.d.sync += self.fqon.eq(0)
                    m.next = "OFF"
                with m.Elif(self.fault.valid & ~self.stopped):
                    m.next = "SETTLE"

            with m.State("SETTLE"):
                # fqt moved at the edge into IDLE at the latest: its checks are
                # registered two edges later (next_fqt_q, then slot_full).
                m.next = "CHECK"

            with m.State("CHECK"):
                with m.If(slot_full):
                    stop(self.set_fqof)  # this report and later ones are dropped
                with m.Elif(slot_beyond_pas):
                    stop(self.set_fqmf)
                with m.Else():
                    m.next = "WRITE"

            with m.State("WRITE"):
                m.d.comb += self.mem_req.valid.eq(1)
                with m.If(self.mem_req.ready):
                    m.next = "WRITE_WAIT"

            with m.State("WRITE_WAIT"):
                m.d.comb += self.mem_resp.ready.eq(1)
                with m.If(self.mem_resp.valid):
                    with m.If(self.mem_resp.payload.err != layouts.MemErr.OK):
                        stop(self.set_fqmf)  # the record is lost; fqt stays (§6.3)
                    with m.Elif(dword == _DWORDS - 1):
                        m.d.comb += self.record_written.eq(1)
                        m.d.sync += self.fqt.eq(next_fqt)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [dword.eq(dword + 1), dwords.eq(dwords >> 64)]
                        m.next = "WRITE"

            with m.State("HALTED"):
                # Drop reports until the register block shows the error as ``stopped``.
                m.d.comb += self.fault.ready.eq(1)
                with m.If(self.stopped | ~self.fqen):
                    m.next = "IDLE"

        if tuple(fsm.encoding) != FAULT_QUEUE_STATES:
            raise AssertionError(f"fault queue FSM encoding {tuple(fsm.encoding)} differs "
                                 f"from FAULT_QUEUE_STATES, which the waveforms decode with")

        # Disabling: the queue stays on, busy, until the record being stored is written.
        with m.If(self.fqon & ~self.fqen):
            m.d.comb += self.busy.eq(1)
        return m
