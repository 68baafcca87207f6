"""Command queue: fetches software's commands from memory and carries them out (spec §7).

Software writes 16-byte commands into a circular buffer in memory (base ``cqb``,
2^(LOG2SZ-1+1) entries) and moves the tail ``cqt`` past them. This block reads them
one at a time from the head ``cqh``, executes each and moves ``cqh`` on, until the
queue is empty, disabled or stopped by an error:

    IDLE ─(cqh != cqt)─► FETCH ⇄ FETCH_WAIT (dword 0, then dword 1) ─► DECODE ─► EXECUTE
      ▲                                                                              │
      ├─ cqh := cqh + 1 ◄── IOTINVAL / IODIR: one ``inval`` transfer ◄────┤
      ├─ cqh := cqh + 1 ◄── ATS.* (only with capabilities.ATS) ◄──────────┤
      ├─ cqh := cqh + 1 ◄── FENCE_WRITE_WAIT ◄── FENCE_WRITE ◄── FENCE_WAIT ◄┘ IOFENCE.C
      │                     (AV = 1: the 4-byte DATA store)   (until inval_pending = 0)
      └─ HALTED ◄── an illegal command (cmd_ill), a fetch or fence-store fault (cqmf):
                    pulse the error, cqh stays on the offending command, wait until the
                    register block shows it as ``stopped``.

The error and ``fence_w_ip`` bits live in the register block (they are RW1C there);
this block only pulses ``set_*`` for one cycle and stops fetching while ``stopped``.
DECODE (issue 7, timing) registers the command's decode: its legality, the
invalidation operands offered to the core (``inval`` comes from flip-flops) and the
fence's operands, so EXECUTE and the core's invalidation logic start from registers;
each command takes one cycle more. The memory request (``mem_req``) is driven from
flip-flops too: its address is loaded in the state before the request.

Invalidations take effect in the core in the cycle they are accepted; walks that
started before them may still be in flight, which the core reports as
``inval_pending``. An IOFENCE.C waits for it to clear, so when it completes every
earlier invalidation is visible (§7.4).
"""

from amaranth.hdl import C, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from models import arch
from models.arch import Cmd

from . import layouts

__all__ = ["COMMAND_QUEUE_STATES", "CommandQueue"]

#: The FSM's states in declaration order (Amaranth numbers them this way in the Verilog).
COMMAND_QUEUE_STATES = ("OFF", "START", "IDLE", "FETCH", "FETCH_WAIT", "DECODE", "EXECUTE",
                        "FENCE_WAIT", "FENCE_WRITE", "FENCE_WRITE_WAIT", "HALTED")

_COMMAND_BITS = 8 * arch.COMMAND_SIZE
_COMMAND_LOG2 = arch.COMMAND_SIZE.bit_length() - 1  # 16-byte entries
_DWORD_LOG2 = 3
_INDEX_BITS = 32  # cqh / cqt are 32-bit registers (§8.6)


def _field(command, f: arch.Field):
    """``f`` of the 128-bit ``command`` (positions from ``arch.Cmd``)."""
    return command[f.lo:f.lo + f.width]


def _any_set(command, mask: int):
    return (command & Const(mask, _COMMAND_BITS)).any()


def _one_of(value, members):
    return Cat(value == int(x) for x in members).any()


def queue_index_mask(log2szm1):
    """``entries - 1`` for a queue of 2^(log2szm1 + 1) entries, as a 32-bit value."""
    return ~(Const(0xFFFF_FFFE, _INDEX_BITS) << log2szm1)[:_INDEX_BITS]


class CommandQueue(wiring.Component):
    """Fetches and executes commands from the in-memory command queue (§7, §8.6-§8.8).

    Ports:
      cqb_ppn, cqb_log2szm1: ``cqb``.PPN and ``cqb``.LOG2SZ-1 as the register holds them.
      cqt:          the software-owned tail (the register block keeps it WARL-masked).
      cqen:         ``cqcsr.cqen``. 0→1: ``busy`` for one cycle, ``cqh`` := 0, then ``cqon``.
                    1→0: a command already being fetched or executed finishes (``busy``),
                    then ``cqon`` := 0; no memory access is in flight once ``cqon`` is 0.
      stopped:      ``cmd_ill | cmd_to | cqmf``: fetch nothing while 1.
      cqh, cqon, busy: the registers' read values.
      set_cmd_ill, set_cqmf, set_fence_w_ip: one-cycle pulses for the register block,
                    which owns those RW1C bits and ``ipsr.cip``. After an error pulse the
                    queue fetches nothing until it sees ``stopped`` (or ``cqen`` = 0).
      inval:        IOTINVAL / IODIR operands to the core, one transfer per command.
      inval_pending: from the core: a walk older than the latest invalidation is in flight.
      fctl_wsi:     ``fctl.WSI``: an IOFENCE.C with WSI = 1 is illegal unless wired
                    interrupts are in use (§7.2). Read only when capabilities.IGS = BOTH;
                    for MSI-only / WSI-only the WARL value (0 / 1) is built in.
      mem_req, mem_resp: 8-byte READs of commands, the IOFENCE.C 4-byte WRITE32; always
                    id 0, at most one outstanding; responses need not check the id.

    ``capabilities`` (the register value) decides which command forms are legal: NL and S
    in IOTINVAL, ATS.*, WSI in IOFENCE.C (IGS), and the physical address size (PAS): a
    queue entry or fence address beyond it is an access fault (cqmf), as in the model.
    """

    def __init__(self, id_bits: int, capabilities: int):
        if not isinstance(id_bits, int) or id_bits < 1:
            raise ValueError(f"id_bits must be a positive integer, not {id_bits!r}")
        if not isinstance(capabilities, int) or capabilities < 0:
            raise ValueError(f"capabilities must be the register value, not {capabilities!r}")
        if arch.Cap.END.get(capabilities):
            raise ValueError("capabilities.END: big-endian queues (fctl.BE) are not "
                             "implemented; the queue is read little-endian")
        igs = arch.Cap.IGS.get(capabilities)
        if igs not in (arch.Igs.MSI, arch.Igs.WSI, arch.Igs.BOTH):
            raise ValueError(f"capabilities.IGS must be MSI, WSI or BOTH, not {igs}")
        pas = arch.Cap.PAS.get(capabilities)
        if not arch.PAGE_SHIFT < pas <= layouts.PA_BITS:
            raise ValueError(f"capabilities.PAS must be 13..{layouts.PA_BITS}, not {pas}")
        self.id_bits, self.capabilities, self.pas = id_bits, capabilities, pas
        self.igs = arch.Igs(igs)
        self.ats = bool(arch.Cap.ATS.get(capabilities))
        ports = {
            "cqb_ppn": In(layouts.PPN_BITS),
            "cqb_log2szm1": In(arch.QueueBase.LOG2SZ_1.width),
            "cqt": In(_INDEX_BITS),
            "cqen": In(1),
            "stopped": In(1),
            "cqh": Out(_INDEX_BITS),
            "cqon": Out(1),
            "busy": Out(1),
            "set_cmd_ill": Out(1),
            "set_cqmf": Out(1),
            "set_fence_w_ip": Out(1),
            "inval": Out(stream.Signature(layouts.Invalidation)),
            "inval_pending": In(1),
            "mem_req": Out(stream.Signature(layouts.mem_request(id_bits))),
            "mem_resp": In(stream.Signature(layouts.mem_response(id_bits))),
            "fctl_wsi": In(1),
        }
        super().__init__(ports)

    # ------------------------------------------------------------ decoding
    def _iotinval_reserved(self) -> int:
        reserved = Cmd.IOTINVAL_RESERVED
        # NL and S are reserved unless the capability says they are understood (§7.1).
        if not arch.Cap.NL.get(self.capabilities):
            reserved |= Cmd.NL.mask
        if not arch.Cap.S.get(self.capabilities):
            reserved |= Cmd.S.mask
        return reserved

    def _wsi_allowed(self):
        # WSI is reserved unless wired interrupts are supported and enabled (fctl.WSI,
        # which IGS forces to 0 for MSI-only and to 1 for WSI-only, §8.5).
        if self.igs == arch.Igs.BOTH:
            return self.fctl_wsi
        return C(int(self.igs == arch.Igs.WSI), 1)

    def elaborate(self, platform):
        m = Module()

        command = Signal(_COMMAND_BITS)
        dword = Signal(1)  # which half of the command the fetch is at
        index_mask = Signal(_INDEX_BITS)
        m.d.comb += index_mask.eq(queue_index_mask(self.cqb_log2szm1))

        # cqb + cqh * 16, wide enough to see an address beyond the 56-bit space.
        entry_addr = Signal(layouts.PA_BITS + _INDEX_BITS)
        m.d.comb += entry_addr.eq((self.cqb_ppn << arch.PAGE_SHIFT) + (self.cqh << _COMMAND_LOG2))
        # Aligned entries and stores: the access fits below 2^PAS iff its address does.
        entry_beyond_pas = entry_addr[self.pas:].any()

        # ------------------------------------------------------------ decode
        opcode, func3 = _field(command, Cmd.OPCODE), _field(command, Cmd.FUNC3)
        is_iotinval = (opcode == arch.Opcode.IOTINVAL) & _one_of(func3, arch.IotinvalFunc)
        is_iodir = (opcode == arch.Opcode.IODIR) & _one_of(func3, arch.IodirFunc)
        is_iofence = (opcode == arch.Opcode.IOFENCE) & _one_of(func3, arch.IofenceFunc)
        is_ats = (opcode == arch.Opcode.ATS) & _one_of(func3, arch.AtsFunc)
        gvma = func3 == arch.IotinvalFunc.GVMA
        pdt = func3 == arch.IodirFunc.INVAL_PDT
        av, pscv, dv = _field(command, Cmd.AV), _field(command, Cmd.PSCV), _field(command, Cmd.DV)
        wsi = _field(command, Cmd.WSI)

        illegal = Signal()
        with m.If(is_iotinval):
            m.d.comb += illegal.eq(_any_set(command, self._iotinval_reserved()) | (gvma & pscv))
        with m.Elif(is_iodir):
            # INVAL_DDT has no PID operand (reserved); INVAL_PDT needs DV = 1 (§7.3).
            m.d.comb += illegal.eq(_any_set(command, Cmd.IODIR_RESERVED)
                                   | Mux(pdt, ~dv, _field(command, Cmd.PID).any()))
        with m.Elif(is_iofence):
            m.d.comb += illegal.eq(_any_set(command, Cmd.IOFENCE_RESERVED)
                                   | (wsi & ~self._wsi_allowed()))
        with m.Elif(is_ats):
            if self.ats:
                m.d.comb += illegal.eq(_any_set(command, Cmd.ATS_RESERVED))
            else:
                m.d.comb += illegal.eq(1)  # ATS commands without capabilities.ATS
        with m.Else():
            # Reserved opcodes and func3 values, and custom opcodes 64-127 (digest §12.9).
            m.d.comb += illegal.eq(1)

        # The invalidation the core must apply (IOTINVAL / IODIR). With NL or S (only
        # legal when advertised) the caches are asked for the whole address space
        # (AV = 0), a superset the spec allows, exactly as the model does.
        kind = Signal(layouts.InvalKind)
        with m.If(is_iotinval):
            m.d.comb += kind.eq(Mux(gvma, layouts.InvalKind.IOTINVAL_GVMA,
                                    layouts.InvalKind.IOTINVAL_VMA))
        with m.Else():
            m.d.comb += kind.eq(Mux(pdt, layouts.InvalKind.IODIR_INVAL_PDT,
                                    layouts.InvalKind.IODIR_INVAL_DDT))
        narrowing = _field(command, Cmd.NL) | _field(command, Cmd.S)
        # Loaded in every cycle: the command is complete and stays from DECODE on, so
        # the payload is stable while ``inval.valid`` (set in DECODE) is 1.
        inv = self.inval.payload
        m.d.sync += [
            inv.kind.eq(kind),
            inv.gv.eq(is_iotinval & _field(command, Cmd.GV)),
            inv.av.eq(is_iotinval & av & ~narrowing),
            inv.pscv.eq(is_iotinval & pscv),
            inv.dv.eq(is_iodir & dv),
            inv.gscid.eq(Mux(is_iotinval, _field(command, Cmd.GSCID), 0)),
            inv.pscid.eq(Mux(is_iotinval, _field(command, Cmd.PSCID), 0)),
            inv.vpn.eq(Mux(is_iotinval, _field(command, Cmd.IOTINVAL_ADDR), 0)),
            inv.device_id.eq(Mux(is_iodir, _field(command, Cmd.DID), 0)),
            inv.process_id.eq(Mux(is_iodir, _field(command, Cmd.PID), 0)),
        ]

        # IOFENCE.C's store: DATA (4 bytes) at ADDR[63:2] * 4.
        fence_addr = Cat(C(0, 2), _field(command, Cmd.IOFENCE_ADDR))

        # The decode EXECUTE and FENCE_WAIT act on, registered (valid from EXECUTE on).
        cmd_illegal = Signal()
        cmd_fence = Signal()  # a legal IOFENCE.C
        fence_av = Signal()
        fence_wsi = Signal()
        fence_beyond_pas = Signal()
        m.d.sync += [
            cmd_illegal.eq(illegal),
            cmd_fence.eq(is_iofence),
            fence_av.eq(av),
            fence_wsi.eq(wsi),
            fence_beyond_pas.eq(fence_addr[self.pas:].any()),
        ]

        # ------------------------------------------------------------ memory port
        # op and addr are registers, loaded in the state before the request (IDLE:
        # dword 0 of the entry at cqh; FETCH_WAIT: dword 1; FENCE_WAIT: the fence store).
        m.d.comb += [
            self.mem_req.payload.id.eq(0),
            self.mem_req.payload.wdata.eq(_field(command, Cmd.DATA)),
            self.mem_req.payload.compare.eq(0),
        ]
        resp_ok = self.mem_resp.payload.err == layouts.MemErr.OK

        # inval_pending registered (issue 7: the core's walker states are not in front
        # of FENCE_WAIT's decisions). Seeing it a cycle late is safe: the core holds it
        # from the cycle an invalidation is offered, and an IOFENCE.C reaches FENCE_WAIT
        # at least a fetch, DECODE and EXECUTE after the command before it was accepted.
        inval_pending = Signal()
        m.d.sync += inval_pending.eq(self.inval_pending)

        def advance():
            m.d.sync += self.cqh.eq((self.cqh + 1) & index_mask)
            m.next = "IDLE"

        def stop(pulse):
            m.d.comb += pulse.eq(1)
            m.next = "HALTED"

        # ------------------------------------------------------------ FSM
        with m.FSM(name="cq"):
            with m.State("OFF"):
                with m.If(self.cqen):
                    m.next = "START"

            with m.State("START"):
                # cqen 0 -> 1: zero the IOMMU-owned index, then report the queue on (§8.8).
                m.d.comb += self.busy.eq(1)
                m.d.sync += [self.cqh.eq(0), self.cqon.eq(1)]
                m.next = "IDLE"

            with m.State("IDLE"):
                m.d.sync += [
                    dword.eq(0),
                    self.mem_req.payload.op.eq(layouts.MemOp.READ),
                    self.mem_req.payload.addr.eq(Cat(
                        C(0, _DWORD_LOG2 + 1), entry_addr[_COMMAND_LOG2:layouts.PA_BITS])),
                ]
                with m.If(~self.cqen):
                    m.d.sync += self.cqon.eq(0)
                    m.next = "OFF"
                with m.Elif(~self.stopped & (self.cqh != self.cqt)):
                    with m.If(entry_beyond_pas):
                        stop(self.set_cqmf)
                    with m.Else():
                        m.next = "FETCH"

            with m.State("FETCH"):
                m.d.comb += self.mem_req.valid.eq(1)
                with m.If(self.mem_req.ready):
                    m.next = "FETCH_WAIT"

            with m.State("FETCH_WAIT"):
                m.d.comb += self.mem_resp.ready.eq(1)
                with m.If(self.mem_resp.valid):
                    with m.If(~resp_ok):
                        stop(self.set_cqmf)  # access fault or poison: cqh stays (§7.4)
                    with m.Else():
                        with m.If(dword == 0):
                            m.d.sync += [command[:64].eq(self.mem_resp.payload.rdata),
                                         dword.eq(1),
                                         self.mem_req.payload.addr[_DWORD_LOG2].eq(1)]
                            m.next = "FETCH"
                        with m.Else():
                            m.d.sync += command[64:].eq(self.mem_resp.payload.rdata)
                            m.next = "DECODE"

            with m.State("DECODE"):
                # The command is complete: its decode is registered at the end of this
                # cycle (issue 7), and so is the offer of its invalidation.
                m.d.sync += self.inval.valid.eq(~illegal & (is_iotinval | is_iodir))
                m.next = "EXECUTE"

            with m.State("EXECUTE"):
                with m.If(cmd_illegal):
                    stop(self.set_cmd_ill)  # cqh keeps pointing at the illegal command
                with m.Elif(self.inval.valid):
                    with m.If(self.inval.ready):
                        m.d.sync += self.inval.valid.eq(0)
                        advance()
                with m.Elif(cmd_fence):
                    m.next = "FENCE_WAIT"
                with m.Else():
                    # ATS.INVAL / ATS.PRGR (legal only with capabilities.ATS): there is
                    # no PCIe port to send them on, so they complete at once and never
                    # time out, as in the reference model.
                    advance()

            with m.State("FENCE_WAIT"):
                # All earlier invalidations were accepted by the core; they are visible
                # once no walk older than them is in flight. PR/PW: this IOMMU moves no
                # device data itself (translations go back to the requester), so reads
                # and writes it translated earlier are already ordered by then.
                m.d.sync += [self.mem_req.payload.op.eq(layouts.MemOp.WRITE32),
                             self.mem_req.payload.addr.eq(fence_addr[:layouts.PA_BITS])]
                with m.If(~inval_pending):
                    with m.If(~fence_av):
                        m.d.comb += self.set_fence_w_ip.eq(fence_wsi)
                        advance()
                    with m.Elif(fence_beyond_pas):
                        stop(self.set_cqmf)
                    with m.Else():
                        m.next = "FENCE_WRITE"

            with m.State("FENCE_WRITE"):
                m.d.comb += self.mem_req.valid.eq(1)
                with m.If(self.mem_req.ready):
                    m.next = "FENCE_WRITE_WAIT"

            with m.State("FENCE_WRITE_WAIT"):
                m.d.comb += self.mem_resp.ready.eq(1)
                with m.If(self.mem_resp.valid):
                    with m.If(~resp_ok):
                        stop(self.set_cqmf)  # the command's own store faulted: no WSI
                    with m.Else():
                        m.d.comb += self.set_fence_w_ip.eq(fence_wsi)
                        advance()

            with m.State("HALTED"):
                # Wait for the register block to show the error (or for disable), so
                # that no command is fetched in between.
                with m.If(self.stopped | ~self.cqen):
                    m.next = "IDLE"

        # Disabling: the queue stays on, busy, until the command in progress finishes.
        with m.If(self.cqon & ~self.cqen):
            m.d.comb += self.busy.eq(1)
        return m
