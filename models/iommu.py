"""The reference RISC-V IOMMU: its programming interface around the translation engine.

``IOMMU`` offers the three doors every implementation in this project offers
(``../shared/DESIGN.md``): the register page (``read_register`` /
``write_register``), the translation door (``translate``) and command processing
(``process_commands``). Address translation itself (DDT/PDT walks, page tables,
IOATC) lives in ``models/translate.py``; this file owns what surrounds it:

* the register map with its sizes, WARL, RO and RW1C rules (digest §8.1-§8.12);
* the command queue and its commands (§7), calling the engine's invalidations;
* the fault queue and fault records (§6.2, §6.3);
* interrupts: ``ipsr``, ``icvec``, wired lines and MSIs through ``msi_cfg_tbl`` (§8.9);
* the hardware performance monitor (§8.10, §10.6);
* the debug translation interface ``tr_req_*`` / ``tr_response`` (§8.11).

The model acts instantly: every ``busy`` bit reads 0, an enable takes effect at the
write (``xqon`` follows ``xqen``), ``tr_req_ctl.Go/Busy`` reads 0 again as soon as it
is set. The command queue runs only when ``process_commands()`` is called (the RTL
runs its queue by itself). Access mistakes that the spec calls UNSPECIFIED (size,
alignment, an 8-byte access to a 32-bit register) raise ``ValueError``: they are
errors of the model's user, not behaviour to imitate.

Section numbers refer to ``../shared/spec/riscv-iommu-digest.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from . import arch
from .arch import (
    Access,
    AddrType,
    Cap,
    Cmd,
    Cqcsr,
    DdtpMode,
    Fctl,
    Field,
    Fqcsr,
    HpmEvent,
    Hpmevt,
    Icvec,
    Igs,
    Iocount,
    Iohpmcycles,
    IommuQosid,
    Ipsr,
    MsiAddr,
    MsiVecCtl,
    Opcode,
    Pqcsr,
    Priv,
    QueueBase,
    Reg,
    TrReqCtl,
    TrReqIova,
    TrResponse,
)
from .memory import PA_BITS, AccessFault, DataCorruption, Memory
from .transaction import Request, Response

REGISTER_PAGE_SIZE = 4096
MASK32 = 0xFFFF_FFFF

# Names used in the memory access log for the IOMMU's own accesses.
WHO_CQ, WHO_FQ, WHO_MSI, WHO_FENCE = "iommu.cq", "iommu.fq", "iommu.msi", "iommu.iofence"


# --------------------------------------------------------------------------- #
# In-memory queues (§8.6, §8.7, §8.8)
# --------------------------------------------------------------------------- #
@dataclass
class _QueueCsrBits:
    """Where one queue's bits sit in its xqcsr (the three CSRs share the layout, §8.7)."""

    enable: Field
    interrupt_enable: Field
    errors: int  # RW1C bits that stop the queue
    rw1c: int  # every RW1C bit (errors plus CQ's fence_w_ip)
    on: Field


_CQ_BITS = _QueueCsrBits(
    Cqcsr.CQEN, Cqcsr.CIE, Cqcsr.CQMF.mask | Cqcsr.CMD_TO.mask | Cqcsr.CMD_ILL.mask,
    Cqcsr.CQMF.mask | Cqcsr.CMD_TO.mask | Cqcsr.CMD_ILL.mask | Cqcsr.FENCE_W_IP.mask, Cqcsr.CQON)
_FQ_BITS = _QueueCsrBits(Fqcsr.FQEN, Fqcsr.FIE, Fqcsr.FQMF.mask | Fqcsr.FQOF.mask,
                         Fqcsr.FQMF.mask | Fqcsr.FQOF.mask, Fqcsr.FQON)
_PQ_BITS = _QueueCsrBits(Pqcsr.PQEN, Pqcsr.PIE, Pqcsr.PQMF.mask | Pqcsr.PQOF.mask,
                         Pqcsr.PQMF.mask | Pqcsr.PQOF.mask, Pqcsr.PQON)


@dataclass
class _Queue:
    """One circular queue: base register, head, tail and control/status register."""

    name: str
    entry_size: int
    csr_bits: _QueueCsrBits
    base: int = 0  # the xqb register value
    head: int = 0
    tail: int = 0
    csr: int = 0

    @property
    def entries(self) -> int:
        # LOG2SZ-1 = 0 means 2 entries (§8.6)
        return 1 << (QueueBase.LOG2SZ_1.get(self.base) + 1)

    def entry_address(self, index: int) -> int:
        return (QueueBase.PPN.get(self.base) << arch.PAGE_SHIFT) + index * self.entry_size

    @property
    def on(self) -> bool:
        return bool(self.csr_bits.on.get(self.csr))

    @property
    def stopped(self) -> bool:
        return bool(self.csr & self.csr_bits.errors)

    def is_full(self) -> bool:
        # Full: tail == head - 1 (mod N); usable capacity N - 1 (§8.6)
        return (self.tail + 1) % self.entries == self.head


# ipsr bit -> the icvec field that holds its vector (§8.9)
_INTERRUPT_VECTOR = {Ipsr.CIP: Icvec.CIV, Ipsr.FIP: Icvec.FIV, Ipsr.PMIP: Icvec.PMIV,
                     Ipsr.PIP: Icvec.PIV}


class IOMMU:
    """Reference RISC-V IOMMU: the three doors of every implementation.

    ``memory`` is the physical memory the IOMMU reads its tables and queues from and
    writes fault records and MSIs to. The keyword arguments are the implementation's
    choices (§8.3, §8.4): ``capabilities`` is the RO capabilities register, ``fctl_reset``
    and ``ddtp_reset_mode`` the reset values, the ``*_entries`` the cache geometries handed
    to the translation engine, ``hpm_counters`` the number of iohpmctr/iohpmevt pairs
    (1..31) and ``msi_vectors`` the number of interrupt vectors (1, 2, 4, 8 or 16: the
    icvec fields keep only that many low bits). ``engine`` replaces the translation
    engine (tests pass a fake); by default a ``models.translate.TranslationEngine``.
    """

    def __init__(self, memory: Memory, *, capabilities: int = arch.DEFAULT_CAPABILITIES,
                 fctl_reset: int = 0, ddtp_reset_mode: DdtpMode = DdtpMode.OFF,
                 ddt_cache_entries: int = 16, pdt_cache_entries: int = 16,
                 iotlb_entries: int = 64, hpm_counters: int = 7, msi_vectors: int = 16,
                 engine=None):
        self._check_configuration(capabilities, ddtp_reset_mode, hpm_counters, msi_vectors)
        self.memory = memory
        self.capabilities = capabilities
        self.hpm_counters = hpm_counters if Cap.HPM.get(capabilities) else 0
        self.msi_vectors = msi_vectors
        if engine is None:
            from .translate import EngineConfig, TranslationEngine

            engine = TranslationEngine(memory, EngineConfig(
                capabilities=capabilities, ddt_cache_entries=ddt_cache_entries,
                pdt_cache_entries=pdt_cache_entries, iotlb_entries=iotlb_entries))
        self.engine = engine

        pas = Cap.PAS.get(capabilities)
        self._pa_limit = 1 << pas
        self._ppn_mask = (1 << (pas - arch.PAGE_SHIFT)) - 1  # PPN fields are limited by PAS

        # ---- register state (reset values §8.3; UNSPECIFIED ones reset to 0 here)
        self.fctl = self._legal_fctl(fctl_reset)
        self.ddtp = arch.Ddtp.IOMMU_MODE.put(ddtp_reset_mode)
        self.cq = _Queue("CQ", arch.COMMAND_SIZE, _CQ_BITS)
        self.fq = _Queue("FQ", arch.FAULT_RECORD_SIZE, _FQ_BITS)
        self.pq = _Queue("PQ", 16, _PQ_BITS)
        self.ipsr = 0
        self.icvec = 0
        self.msi_addr = [0] * arch.MSI_CFG_TBL_ENTRIES
        self.msi_data = [0] * arch.MSI_CFG_TBL_ENTRIES
        self.msi_vec_ctl = [0] * arch.MSI_CFG_TBL_ENTRIES
        self.msi_pending = [False] * arch.MSI_CFG_TBL_ENTRIES  # masked vectors owing an MSI
        self.iocountinh = 0
        self.iohpmcycles = 0
        self.iohpmctr = [0] * (arch.HPM_COUNTERS_MAX + 1)  # index N = iohpmctrN; [0] unused
        self.iohpmevt = [0] * (arch.HPM_COUNTERS_MAX + 1)
        self.tr_req_iova = 0
        self.tr_req_ctl = 0
        self.tr_response = 0
        self.iommu_qosid = 0

        #: MSIs the IOMMU sent, as (address, data); each was also written to memory.
        self.msi_log: list[tuple[int, int]] = []
        #: ATS.INVAL / ATS.PRGR commands executed (capabilities.ATS = 1), as (func3, command).
        self.ats_messages: list[tuple[int, int]] = []
        #: Why the command queue last stopped (cmd_ill / cqmf), for humans reading a failure.
        self.cq_error_reason: str | None = None

        self._registers: dict[int, tuple[str, int]] = {}  # offset -> (name, size)
        self._readers: dict[int, Callable[[], int]] = {}
        self._writers: dict[int, Callable[[int], None]] = {}
        self._build_register_map()

    # ================================================================== setup
    @staticmethod
    def _check_configuration(capabilities: int, ddtp_reset_mode, hpm_counters: int,
                             msi_vectors: int) -> None:
        if Cap.IGS.get(capabilities) not in (Igs.MSI, Igs.WSI, Igs.BOTH):
            raise ValueError(f"capabilities.IGS must be MSI, WSI or BOTH, not "
                             f"{Cap.IGS.get(capabilities)}")
        pas = Cap.PAS.get(capabilities)
        if not arch.PAGE_SHIFT < pas <= PA_BITS:
            raise ValueError(f"capabilities.PAS must be 13..{PA_BITS} (the memory model's "
                             f"width), not {pas}")
        if ddtp_reset_mode not in (DdtpMode.OFF, DdtpMode.BARE):
            raise ValueError(f"ddtp.iommu_mode must reset to Off or Bare (§8.3), not "
                             f"{ddtp_reset_mode!r}")
        if Cap.HPM.get(capabilities) and not 1 <= hpm_counters <= arch.HPM_COUNTERS_MAX:
            raise ValueError(f"hpm_counters must be 1..31 when capabilities.HPM=1, not "
                             f"{hpm_counters!r}")
        if msi_vectors not in (1, 2, 4, 8, 16):
            raise ValueError(f"msi_vectors must be 1, 2, 4, 8 or 16, not {msi_vectors!r}")

    def _has(self, cap: Field) -> bool:
        return bool(cap.get(self.capabilities))

    def _build_register_map(self) -> None:
        """Every architectural register with its size; readers/writers only if present."""

        def reg(offset: int, name: str, size: int, read=None, write=None, present=True):
            self._registers[offset] = (name, size)
            if present:
                self._readers[offset] = read or (lambda: 0)
                if write is not None:
                    self._writers[offset] = write

        reg(Reg.CAPABILITIES, "capabilities", 8, lambda: self.capabilities)
        reg(Reg.FCTL, "fctl", 4, lambda: self.fctl, self._write_fctl)
        reg(Reg.DDTP, "ddtp", 8, lambda: self.ddtp, self._write_ddtp)

        ats = self._has(Cap.ATS)
        for queue, (base, head, tail, csr), owns_head, present in (
                (self.cq, (Reg.CQB, Reg.CQH, Reg.CQT, Reg.CQCSR), True, True),
                (self.fq, (Reg.FQB, Reg.FQH, Reg.FQT, Reg.FQCSR), False, True),
                (self.pq, (Reg.PQB, Reg.PQH, Reg.PQT, Reg.PQCSR), False, ats)):
            q, lower = queue, queue.name.lower()
            reg(base, f"{lower}b", 8, lambda q=q: q.base,
                lambda v, q=q: self._write_queue_base(q, v), present)
            # The IOMMU owns cqh, fqt, pqt (RO); software owns cqt, fqh, pqh (§8.6).
            reg(head, f"{lower}h", 4, lambda q=q: q.head,
                None if owns_head else (lambda v, q=q: self._write_sw_head(q, v)), present)
            reg(tail, f"{lower}t", 4, lambda q=q: q.tail,
                (lambda v, q=q: self._write_sw_tail(q, v)) if owns_head else None, present)
            reg(csr, f"{lower}csr", 4, lambda q=q: q.csr,
                lambda v, q=q: self._write_queue_csr(q, v), present)

        reg(Reg.IPSR, "ipsr", 4, lambda: self.ipsr, self._write_ipsr)

        hpm = self._has(Cap.HPM)
        reg(Reg.IOCOUNTOVF, "iocountovf", 4, self._read_iocountovf, None, hpm)
        reg(Reg.IOCOUNTINH, "iocountinh", 4, lambda: self.iocountinh, self._write_iocountinh,
            hpm)
        reg(Reg.IOHPMCYCLES, "iohpmcycles", 8, lambda: self.iohpmcycles,
            self._write_iohpmcycles, hpm)
        for n in range(1, arch.HPM_COUNTERS_MAX + 1):
            present = n <= self.hpm_counters
            reg(arch.iohpmctr(n), f"iohpmctr{n}", 8, lambda n=n: self.iohpmctr[n],
                lambda v, n=n: self.iohpmctr.__setitem__(n, v), present)
            reg(arch.iohpmevt(n), f"iohpmevt{n}", 8, lambda n=n: self.iohpmevt[n],
                lambda v, n=n: self._write_iohpmevt(n, v), present)

        dbg = self._has(Cap.DBG)
        reg(Reg.TR_REQ_IOVA, "tr_req_iova", 8, lambda: self.tr_req_iova,
            self._write_tr_req_iova, dbg)
        reg(Reg.TR_REQ_CTL, "tr_req_ctl", 8, lambda: self.tr_req_ctl,
            self._write_tr_req_ctl, dbg)
        reg(Reg.TR_RESPONSE, "tr_response", 8, lambda: self.tr_response, None, dbg)
        reg(Reg.IOMMU_QOSID, "iommu_qosid", 4, lambda: self.iommu_qosid,
            self._write_iommu_qosid, self._has(Cap.QOSID))
        reg(Reg.ICVEC, "icvec", 8, lambda: self.icvec, self._write_icvec)

        # msi_cfg_tbl is hardwired 0 when IGS = WSI (§8.9); entries past msi_vectors are absent.
        msi = Cap.IGS.get(self.capabilities) != Igs.WSI
        for x in range(arch.MSI_CFG_TBL_ENTRIES):
            addr, data, vec_ctl = arch.msi_cfg(x)
            present = msi and x < self.msi_vectors
            reg(addr, f"msi_addr_{x}", 8, lambda x=x: self.msi_addr[x],
                lambda v, x=x: self._write_msi_addr(x, v), present)
            reg(data, f"msi_data_{x}", 4, lambda x=x: self.msi_data[x],
                lambda v, x=x: self.msi_data.__setitem__(x, v & MASK32), present)
            reg(vec_ctl, f"msi_vec_ctl_{x}", 4, lambda x=x: self.msi_vec_ctl[x],
                lambda v, x=x: self._write_msi_vec_ctl(x, v), present)

    # ========================================================= register door
    def _locate(self, offset: int, size: int) -> tuple[int | None, int]:
        """The register an access hits: (its offset, its size), or (None, size) for
        reserved/custom space. Raises ValueError for accesses §8.2 leaves UNSPECIFIED."""
        if size not in (4, 8):
            raise ValueError(f"register accesses are 4 or 8 bytes, not {size}")
        if not isinstance(offset, int) or offset < 0 or offset + size > REGISTER_PAGE_SIZE:
            raise ValueError(f"register offset {offset!r} (+{size}) is outside the 4 KiB "
                             f"register page")
        if offset % size:
            raise ValueError(f"a {size}-byte register access must be naturally aligned, "
                             f"not at offset {offset:#x}")
        if offset in self._registers:
            name, reg_size = self._registers[offset]
            if size > reg_size:
                raise ValueError(f"8-byte access to the 32-bit register {name} at "
                                 f"{offset:#x}; use 4-byte accesses")
            return offset, reg_size
        if size == 4 and self._registers.get(offset - 4, ("", 4))[1] == 8:
            return offset - 4, 8  # the high half of a 64-bit register
        if size == 8 and offset + 4 in self._registers:
            name = self._registers[offset + 4][0]
            raise ValueError(f"8-byte access at {offset:#x} spans the register {name}")
        return None, size

    def read_register(self, offset: int, size: int) -> int:
        """Read ``size`` (4 or 8) bytes at ``offset`` in the register page (§8.2)."""
        base, reg_size = self._locate(offset, size)
        if base is None:
            return 0  # reserved and unused custom space reads 0
        value = self._readers.get(base, lambda: 0)()  # absent optional register: 0
        if size == reg_size:
            return value
        return (value >> (8 * (offset - base))) & MASK32

    def write_register(self, offset: int, size: int, value: int) -> None:
        """Write ``size`` (4 or 8) bytes at ``offset`` in the register page (§8.2).

        A 4-byte write to one half of a 64-bit register keeps the other half.
        """
        base, reg_size = self._locate(offset, size)
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"value {value:#x} does not fit a {size}-byte access")
        writer = self._writers.get(base) if base is not None else None
        if writer is None:
            return  # RO register, absent register or reserved space: write ignored
        if size < reg_size:
            shift = 8 * (offset - base)
            current = self._readers[base]()
            value = (current & ~(MASK32 << shift)) | (value << shift)
        writer(value)

    # ------------------------------------------------------- fctl, ddtp (§8.5, §2.1)
    def _legal_fctl(self, value: int) -> int:
        # BE writable only with END=1 (the fixed endianness is little). WSI follows IGS:
        # forced 0 for MSI-only, 1 for WSI-only, writable for BOTH. GXL needs Sv32x4.
        be = Fctl.BE.get(value) if self._has(Cap.END) else 0
        igs = Cap.IGS.get(self.capabilities)
        wsi = {Igs.MSI: 0, Igs.WSI: 1}.get(igs, Fctl.WSI.get(value))
        gxl = Fctl.GXL.get(value) if self._has(Cap.SV32X4) else 0
        return Fctl.BE.put(be) | Fctl.WSI.put(wsi) | Fctl.GXL.put(gxl)

    def _write_fctl(self, value: int) -> None:
        # Changing fctl while the IOMMU is not Off or a queue is on is UNSPECIFIED (§8.5);
        # the model simply applies the write.
        self.fctl = self._legal_fctl(value)

    def _write_ddtp(self, value: int) -> None:
        # iommu_mode WARL: a reserved/custom mode keeps the old one. busy reads 0 because
        # the model acts at once. PPN is limited to the physical address size (§2.1).
        mode = arch.Ddtp.IOMMU_MODE.get(value)
        if mode not in DdtpMode.__members__.values():
            mode = arch.Ddtp.IOMMU_MODE.get(self.ddtp)
        ppn = arch.Ddtp.PPN.get(value) & self._ppn_mask
        self.ddtp = arch.Ddtp.IOMMU_MODE.put(mode) | arch.Ddtp.PPN.put(ppn)

    # ----------------------------------------------------------- queues (§8.6-§8.8)
    def _write_queue_base(self, queue: _Queue, value: int) -> None:
        # LOG2SZ-1: every 5-bit size is legal in the model. PPN limited to PAS.
        ppn = QueueBase.PPN.get(value) & self._ppn_mask
        queue.base = QueueBase.LOG2SZ_1.put(QueueBase.LOG2SZ_1.get(value)) | QueueBase.PPN.put(ppn)
        # After writing xqb the SW-owned index keeps only its low LOG2SZ bits (§8.6).
        if queue is self.cq:
            queue.tail &= queue.entries - 1
        else:
            queue.head &= queue.entries - 1

    def _write_sw_tail(self, queue: _Queue, value: int) -> None:  # cqt
        queue.tail = value & (queue.entries - 1)

    def _write_sw_head(self, queue: _Queue, value: int) -> None:  # fqh, pqh
        queue.head = value & (queue.entries - 1)

    def _write_queue_csr(self, queue: _Queue, value: int) -> None:
        bits = queue.csr_bits
        csr = queue.csr & ~(value & bits.rw1c)  # RW1C status bits
        enable, was_enabled = bits.enable.get(value), bits.enable.get(queue.csr)
        if enable and not was_enabled:
            # xqen 0 -> 1: zero the IOMMU-owned index, clear the error bits, go on (§8.8)
            if queue is self.cq:
                queue.head = 0
            else:
                queue.tail = 0
            csr = (csr & ~bits.rw1c) | bits.on.mask
        elif was_enabled and not enable:
            csr &= ~bits.on.mask  # nothing is in flight in the model: off at once
        csr = bits.enable.set(csr, enable)
        csr = bits.interrupt_enable.set(csr, bits.interrupt_enable.get(value))
        queue.csr = csr
        self._update_interrupts()

    def _write_iommu_qosid(self, value: int) -> None:
        # [ext] RCID/MCID WARL: the model keeps the full 12 bits of each (§8.12).
        self.iommu_qosid = (IommuQosid.RCID.put(IommuQosid.RCID.get(value))
                            | IommuQosid.MCID.put(IommuQosid.MCID.get(value)))

    # ----------------------------------------------------- interrupts (§8.9)
    def _write_ipsr(self, value: int) -> None:
        pending = Ipsr.CIP.mask | Ipsr.FIP.mask | Ipsr.PMIP.mask
        if self._has(Cap.ATS):
            pending |= Ipsr.PIP.mask
        self.ipsr &= ~(value & pending)
        # A cleared bit whose condition still holds is set again (§8.9).
        self._update_interrupts()

    def _write_icvec(self, value: int) -> None:
        vector_mask = self.msi_vectors - 1  # unsupported high vector bits are hardwired 0
        fields = [Icvec.CIV, Icvec.FIV, Icvec.PMIV]
        if self._has(Cap.ATS):
            fields.append(Icvec.PIV)
        self.icvec = 0
        for field in fields:
            self.icvec |= field.put(field.get(value) & vector_mask)

    def _write_msi_addr(self, vector: int, value: int) -> None:
        addr = (MsiAddr.ADDR.get(value) << 2) & (self._pa_limit - 1)
        self.msi_addr[vector] = addr

    def _write_msi_vec_ctl(self, vector: int, value: int) -> None:
        was_masked = MsiVecCtl.M.get(self.msi_vec_ctl[vector])
        self.msi_vec_ctl[vector] = MsiVecCtl.M.put(MsiVecCtl.M.get(value))
        if was_masked and not MsiVecCtl.M.get(value) and self.msi_pending[vector]:
            # A message held while masked is sent when the vector is unmasked (§8.9).
            self.msi_pending[vector] = False
            self._send_msi(vector)

    @property
    def wired_interrupts(self) -> set[int]:
        """The interrupt wires (icvec vectors) asserted now; level-sensitive, only when
        fctl.WSI = 1 (§8.9)."""
        if not Fctl.WSI.get(self.fctl):
            return set()
        return {vector.get(self.icvec) for bit, vector in _INTERRUPT_VECTOR.items()
                if bit.get(self.ipsr)}

    def _set_pending(self, bit: Field) -> None:
        """Set an ipsr bit; on a 0 -> 1 transition with fctl.WSI = 0 send its MSI (edge)."""
        if bit.get(self.ipsr):
            return
        self.ipsr |= bit.mask
        if not Fctl.WSI.get(self.fctl):
            vector = _INTERRUPT_VECTOR[bit].get(self.icvec)
            if MsiVecCtl.M.get(self.msi_vec_ctl[vector]):
                self.msi_pending[vector] = True
            else:
                self._send_msi(vector)

    def _update_interrupts(self) -> None:
        """Set cip / fip / pip while their queue conditions hold (§8.9)."""
        cq_sources = self.cq.csr & self.cq.csr_bits.rw1c  # errors and fence_w_ip
        if Cqcsr.CIE.get(self.cq.csr) and cq_sources:
            self._set_pending(Ipsr.CIP)
        if Fqcsr.FIE.get(self.fq.csr) and self.fq.csr & self.fq.csr_bits.errors:
            self._set_pending(Ipsr.FIP)
        if (self._has(Cap.ATS) and Pqcsr.PIE.get(self.pq.csr)
                and self.pq.csr & self.pq.csr_bits.errors):
            self._set_pending(Ipsr.PIP)

    def _send_msi(self, vector: int) -> None:
        """Write msi_data_x (4 bytes, fctl.BE order) to msi_addr_x; a refused write is
        reported as cause 273 with TTYP 0 and iotval = msi_addr_x (§8.9)."""
        addr, data = self.msi_addr[vector], self.msi_data[vector]
        try:
            self._store32(addr, data, WHO_MSI)
        except AccessFault:
            self._write_fault_record(arch.FaultRecord(
                cause=arch.Cause.IOMMU_MSI_WRITE_ACCESS_FAULT, ttyp=arch.Ttyp.NONE,
                iotval=addr))
            return
        self.msi_log.append((addr, data))

    # ----------------------------------------------------------- memory helpers
    def _big_endian(self) -> bool:
        return bool(Fctl.BE.get(self.fctl))

    def _store32(self, addr: int, value: int, who: str) -> None:
        """A 4-byte store in fctl.BE byte order; addresses beyond PAS are access faults."""
        if addr + 4 > self._pa_limit:
            raise AccessFault(addr, 4, who)
        order = "big" if self._big_endian() else "little"
        self.memory.write(addr, value.to_bytes(4, order), who)

    def _dwords_to_bytes(self, raw_le: bytes) -> bytes:
        """Re-order little-endian dwords into fctl.BE byte order (queues are dword arrays)."""
        if not self._big_endian():
            return raw_le
        return b"".join(raw_le[i:i + 8][::-1] for i in range(0, len(raw_le), 8))

    # ============================================================ fault queue (§6)
    def _write_fault_record(self, record: arch.FaultRecord) -> bool:
        """Append a fault record to the FQ; returns True if it was written (§6.3)."""
        fq = self.fq
        if not fq.on or fq.stopped:
            return False  # FQ off, or fqof/fqmf set: dropped until software clears them
        if fq.is_full():
            fq.csr |= Fqcsr.FQOF.mask
            self._update_interrupts()
            return False
        addr = fq.entry_address(fq.tail)
        try:
            if addr + arch.FAULT_RECORD_SIZE > self._pa_limit:
                raise AccessFault(addr, arch.FAULT_RECORD_SIZE, WHO_FQ)
            self.memory.write(addr, self._dwords_to_bytes(record.pack()), WHO_FQ)
        except AccessFault:
            fq.csr |= Fqcsr.FQMF.mask
            self._update_interrupts()
            return False
        fq.tail = (fq.tail + 1) % fq.entries
        if Fqcsr.FIE.get(fq.csr):
            self._set_pending(Ipsr.FIP)  # a new record is an fip source (§8.9)
        return True

    # ========================================================= translation door
    def translate(self, request: Request) -> Response:
        """Translate one device request: the engine's answer, its fault record written to
        the FQ, its events counted by the HPM. ``reported`` is True only if the record
        reached the fault queue."""
        outcome = self.engine.translate(request, self.ddtp, self.fctl)
        self._count_events(outcome.events)
        reported = outcome.record is not None and self._write_fault_record(outcome.record)
        response = outcome.response  # an MRIF-mode MSI's target is in response.mrif
        if response.reported != reported or response.tag != request.tag:
            response = replace(response, reported=reported, tag=request.tag)
        return response

    def report_fault(self, record: arch.FaultRecord) -> bool:
        """A fault the bridge found while performing a translated access: an MRIF
        access fault (264) or poisoned MRIF (271) during an MRIF-mode MSI's update
        (§9.4; the split of the MRIF work between IOMMU and bridge is the
        implementation's, §1.1). The record goes to the fault queue like any other;
        True if it was written."""
        return self._write_fault_record(record)

    # ====================================================== command queue (§7)
    def process_commands(self, limit: int | None = None) -> int:
        """Run the CQ from cqh towards cqt; returns the number of commands completed.

        Stops when the queue is empty, off, stopped by an error bit (cmd_ill, cqmf,
        cmd_to) or after ``limit`` commands. Every command completes before cqh moves
        past it, so an IOFENCE.C has nothing to wait for.
        """
        cq, done = self.cq, 0
        while cq.on and not cq.stopped and cq.head != cq.tail and (limit is None or done < limit):
            addr = cq.entry_address(cq.head)
            try:
                if addr + arch.COMMAND_SIZE > self._pa_limit:
                    raise AccessFault(addr, arch.COMMAND_SIZE, WHO_CQ)
                raw = self._dwords_to_bytes(self.memory.read(addr, arch.COMMAND_SIZE, WHO_CQ))
            except (AccessFault, DataCorruption) as error:
                self._stop_cq(Cqcsr.CQMF, f"command fetch at {addr:#x}: {error}")
                break
            if not self._execute(int.from_bytes(raw, "little")):
                break  # cqh stays at the offending command
            cq.head = (cq.head + 1) % cq.entries
            done += 1
        return done

    def _stop_cq(self, error: Field, reason: str) -> bool:
        self.cq.csr |= error.mask
        self.cq_error_reason = f"{self.cq.name}[{self.cq.head}]: {reason}"
        self._update_interrupts()
        return False

    def _illegal(self, reason: str) -> bool:
        return self._stop_cq(Cqcsr.CMD_ILL, reason)

    def _execute(self, command: int) -> bool:
        """Execute one 128-bit command; False if it stopped the queue (§7.4)."""
        opcode, func3 = Cmd.OPCODE.get(command), Cmd.FUNC3.get(command)
        if opcode == Opcode.IOTINVAL and func3 in arch.IotinvalFunc.__members__.values():
            return self._iotinval(command, arch.IotinvalFunc(func3))
        if opcode == Opcode.IOFENCE and func3 == arch.IofenceFunc.C:
            return self._iofence_c(command)
        if opcode == Opcode.IODIR and func3 in arch.IodirFunc.__members__.values():
            return self._iodir(command, arch.IodirFunc(func3))
        if opcode == Opcode.ATS and func3 in arch.AtsFunc.__members__.values():
            return self._ats(command, arch.AtsFunc(func3))
        # Reserved opcodes/func3 and (our reading, digest §12.9) custom opcodes 64-127.
        return self._illegal(f"reserved opcode {opcode} / func3 {func3}")

    def _iotinval(self, command: int, func: arch.IotinvalFunc) -> bool:
        reserved = Cmd.IOTINVAL_RESERVED
        if not self._has(Cap.NL):
            reserved |= Cmd.NL.mask
        if not self._has(Cap.S):
            reserved |= Cmd.S.mask
        if command & reserved:
            return self._illegal(f"IOTINVAL.{func.name} with reserved bits "
                                 f"{command & reserved:#x}")
        gv, av, pscv = Cmd.GV.get(command), Cmd.AV.get(command), Cmd.PSCV.get(command)
        if func == arch.IotinvalFunc.GVMA and pscv:
            return self._illegal("IOTINVAL.GVMA with PSCV=1")
        gscid, pscid = Cmd.GSCID.get(command), Cmd.PSCID.get(command)
        addr = Cmd.IOTINVAL_ADDR.get(command) << arch.PAGE_SHIFT
        # [ext] NL (non-leaf entries along ADDR too) and S (a NAPOT range at ADDR): the
        # engine invalidates leaves at one address, so widen to the whole scope (AV=0),
        # which is a superset the spec allows (digest §10.2).
        if av and (Cmd.NL.get(command) or Cmd.S.get(command)):
            av = 0
        if func == arch.IotinvalFunc.VMA:
            self.engine.iotinval_vma(bool(gv), bool(av), bool(pscv), gscid, pscid, addr)
        else:
            self.engine.iotinval_gvma(bool(gv), bool(av), gscid, addr)
        return True

    def _iodir(self, command: int, func: arch.IodirFunc) -> bool:
        if command & Cmd.IODIR_RESERVED:
            return self._illegal(f"IODIR.{func.name} with reserved bits "
                                 f"{command & Cmd.IODIR_RESERVED:#x}")
        dv, did, pid = Cmd.DV.get(command), Cmd.DID.get(command), Cmd.PID.get(command)
        if func == arch.IodirFunc.INVAL_DDT:
            if pid:
                return self._illegal("IODIR.INVAL_DDT with a nonzero PID (reserved)")
            self.engine.iodir_inval_ddt(bool(dv), did)
        else:
            if not dv:
                return self._illegal("IODIR.INVAL_PDT with DV=0")
            self.engine.iodir_inval_pdt(did, pid)
        return True

    def _iofence_c(self, command: int) -> bool:
        if command & Cmd.IOFENCE_RESERVED:
            return self._illegal(f"IOFENCE.C with reserved bits "
                                 f"{command & Cmd.IOFENCE_RESERVED:#x}")
        wsi = Cmd.WSI.get(command)
        if wsi and not Fctl.WSI.get(self.fctl):
            # WSI is reserved unless wired interrupts are supported and enabled (§7.2).
            return self._illegal("IOFENCE.C with WSI=1 while fctl.WSI=0")
        # Every earlier command has completed (the model executes them in order, at once)
        # and device traffic the IOMMU has handled is already in memory, so PR/PW hold.
        if Cmd.AV.get(command):
            addr = Cmd.IOFENCE_ADDR.get(command) << 2
            try:
                self._store32(addr, Cmd.DATA.get(command), WHO_FENCE)
            except AccessFault as error:
                return self._stop_cq(Cqcsr.CQMF, f"IOFENCE.C data write: {error}")
        if wsi:
            self.cq.csr |= Cqcsr.FENCE_W_IP.mask
            self._update_interrupts()
        return True

    def _ats(self, command: int, func: arch.AtsFunc) -> bool:
        if not self._has(Cap.ATS):
            return self._illegal(f"ATS.{func.name} needs capabilities.ATS=1 (unsupported)")
        if command & Cmd.ATS_RESERVED:
            return self._illegal(f"ATS.{func.name} with reserved bits "
                                 f"{command & Cmd.ATS_RESERVED:#x}")
        # No PCIe device model sits behind the IOMMU here: the message is recorded and
        # ATS.INVAL completes at once (never times out, so cmd_to is never set).
        self.ats_messages.append((func, command))
        return True

    # ================================================ performance monitor (§8.10)
    def _read_iocountovf(self) -> int:
        value = Iocount.CY.put(Iohpmcycles.OF.get(self.iohpmcycles))
        for n in range(1, self.hpm_counters + 1):
            value |= Hpmevt.OF.get(self.iohpmevt[n]) << n
        return value

    def _write_iocountinh(self, value: int) -> None:
        self.iocountinh = value & ((1 << (self.hpm_counters + 1)) - 1)

    def _write_iohpmcycles(self, value: int) -> None:
        self.iohpmcycles = value  # counter [62:0] and OF [63], both writable

    def _write_iohpmevt(self, n: int, value: int) -> None:
        # eventID is WARL: ids the model does not implement (reserved or custom) read 0.
        event_id = Hpmevt.EVENT_ID.get(value)
        if event_id not in HpmEvent.__members__.values():
            value = Hpmevt.EVENT_ID.set(value, 0)
        self.iohpmevt[n] = value

    def tick(self, cycles: int = 1) -> None:
        """Advance iohpmcycles by ``cycles`` unless inhibited (iocountinh.CY)."""
        if cycles < 0:
            raise ValueError(f"cycles must be >= 0, not {cycles}")
        if not self.hpm_counters or Iocount.CY.get(self.iocountinh):
            return
        count = Iohpmcycles.COUNTER.get(self.iohpmcycles) + cycles
        overflow = count >> Iohpmcycles.COUNTER.width
        of = Iohpmcycles.OF.get(self.iohpmcycles)
        self.iohpmcycles = (Iohpmcycles.COUNTER.put(count & Iohpmcycles.COUNTER.mask)
                            | Iohpmcycles.OF.put(1 if overflow else of))
        if overflow and not of:
            self._set_pending(Ipsr.PMIP)  # OF 0 -> 1 raises pmip; with OF=1 it just wraps

    def _count_events(self, events) -> None:
        for event in events:
            event_id, device_id, pv, process_id, gscid_valid, gscid, pscid_valid, pscid = event
            for n in range(1, self.hpm_counters + 1):
                selector = self.iohpmevt[n]
                if (self.iocountinh >> n & 1 or Hpmevt.EVENT_ID.get(selector) == 0
                        or Hpmevt.EVENT_ID.get(selector) != event_id):
                    continue
                if not _hpm_filter_matches(selector, event_id, device_id, pv, process_id,
                                           gscid_valid, gscid, pscid_valid, pscid):
                    continue
                self._increment_counter(n)

    def _increment_counter(self, n: int) -> None:
        count = self.iohpmctr[n] + 1
        if count >> 64:
            count = 0
            if not Hpmevt.OF.get(self.iohpmevt[n]):
                self.iohpmevt[n] |= Hpmevt.OF.mask
                self._set_pending(Ipsr.PMIP)
        self.iohpmctr[n] = count

    # ==================================================== debug interface (§8.11)
    def _write_tr_req_iova(self, value: int) -> None:
        self.tr_req_iova = TrReqIova.VPN.put(TrReqIova.VPN.get(value))

    def _write_tr_req_ctl(self, value: int) -> None:
        writable = (TrReqCtl.PRIV.mask | TrReqCtl.EXE.mask | TrReqCtl.NW.mask
                    | TrReqCtl.PID.mask | TrReqCtl.PV.mask | TrReqCtl.DID.mask)
        self.tr_req_ctl = value & writable
        if TrReqCtl.GO_BUSY.get(value):  # RW1S; the model finishes at once, so it reads 0
            self._run_debug_translation()

    def _run_debug_translation(self) -> None:
        """Translate tr_req_iova as an Untranslated request and fill tr_response."""
        ctl = self.tr_req_ctl
        pv = bool(TrReqCtl.PV.get(ctl))
        if TrReqCtl.NW.get(ctl):
            access = Access.EXECUTE if TrReqCtl.EXE.get(ctl) else Access.READ
        else:
            access = Access.WRITE  # NW=0 asks for read and write permission
        request = Request(
            device_id=TrReqCtl.DID.get(ctl), iova=self.tr_req_iova, access=access,
            process_id=TrReqCtl.PID.get(ctl) if pv else 0, pv=pv,
            priv=Priv.SUPERVISOR if pv and TrReqCtl.PRIV.get(ctl) else Priv.USER,
            addr_type=AddrType.UNTRANSLATED)
        response = self.translate(request)
        # An MRIF-mode MSI page has no PPN to report: the debug interface answers it
        # with a fault (cause 260, "transaction type disallowed"); the translation
        # itself did not fault, so no record is written.
        self.tr_response = (TrResponse.FAULT.put(1) if response.mrif is not None
                            else tr_response_value(response))


def tr_response_value(response: Response) -> int:
    """Encode a translation result as tr_response (§8.11): a superpage of 2^(X+1) pages
    has S=1 and a PPN whose bits below X are 1 and bit X is 0."""
    if not response.ok:
        return TrResponse.FAULT.put(1)
    ppn = response.spa >> arch.PAGE_SHIFT
    pages = max(response.page_size >> arch.PAGE_SHIFT, 1)
    superpage = pages > 1
    if superpage:
        ppn = (ppn & ~(pages - 1)) | ((pages >> 1) - 1)
    return (TrResponse.PBMT.put(response.pbmt) | TrResponse.S.put(int(superpage))
            | TrResponse.PPN.put(ppn & ((1 << TrResponse.PPN.width) - 1)))


def _hpm_filter_matches(selector: int, event_id: int, device_id: int, pv: bool,
                        process_id: int, gscid_valid: bool, gscid: int, pscid_valid: bool,
                        pscid: int) -> bool:
    """The ID filters of one iohpmevt selector (§8.10)."""
    idt = Hpmevt.IDT.get(selector)
    by_pid, by_did = Hpmevt.PV_PSCV.get(selector), Hpmevt.DV_GSCV.get(selector)
    if idt and event_id not in arch.HPM_EVENTS_WITH_IDT:
        return False  # an unsupported IDT setting never counts
    want_pid = Hpmevt.PID_PSCID.get(selector)
    if idt:
        pid_ok = pscid_valid and pscid == want_pid
        did_ok = gscid_valid and _did_gscid_match(selector, gscid)
    else:
        pid_ok = pv and process_id == want_pid
        did_ok = _did_gscid_match(selector, device_id)
    return (not by_pid or pid_ok) and (not by_did or did_ok)


def _did_gscid_match(selector: int, value: int) -> bool:
    """DID_GSCID comparison; with DMASK=1 the bits up to and including the lowest 0 bit
    of DID_GSCID are ignored (e.g. ``...yyyy_y011`` matches any function of one device)."""
    want = Hpmevt.DID_GSCID.get(selector)
    width = Hpmevt.DID_GSCID.width
    care = (1 << width) - 1
    if Hpmevt.DMASK.get(selector):
        lowest_zero = ((~want) & (want + 1)).bit_length() - 1
        care &= ~((1 << (lowest_zero + 1)) - 1)
    return (value & care) == (want & care)
