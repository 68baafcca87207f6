"""Picking one requester out of many: the arbiters' shared helpers.

Each is built for a short path (issue 7): the candidates of a round-robin pick are
constants per value of the last grant (no adder or modulo on the way), and the lowest
set bit of a wide vector is isolated with a carry chain (``bits & -bits``), which the
ECP5's fast carry logic resolves in a fraction of a LUT level per bit.
"""

from amaranth.hdl import Module, Signal


def round_robin(m: Module, bits, last, n: int, name: str):
    """Index of the first set bit of ``bits`` after ``last``, wrapping around (``last``
    itself comes last; 0 when none): every requester is served within ``n`` picks."""
    index = Signal(range(max(n, 2)), name=name)
    with m.Switch(last):
        for prev in range(n):
            with m.Case(prev):
                # Later matches win: scan from the farthest candidate to the nearest.
                for offset in reversed(range(1, n + 1)):
                    candidate = (prev + offset) % n
                    with m.If(bits[candidate]):
                        m.d.comb += index.eq(candidate)
    return index


def lowest_set(m: Module, bits, n: int, name: str):
    """Index of the lowest set bit of ``bits`` (0 when none): a fixed-priority pick."""
    index = Signal(range(max(n, 2)), name=name)
    for i in reversed(range(n)):
        with m.If(bits[i]):
            m.d.comb += index.eq(i)
    return index


def lowest_one_hot(bits):
    """One-hot of the lowest set bit of ``bits`` (zero when none), as ``bits & -bits``."""
    width = len(bits)
    return (bits & (~bits + 1)[:width])[:width]
