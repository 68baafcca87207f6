"""Picking one requester out of many: the arbiters' shared helpers.

Each is built for a short path (issue 7): the candidates of a round-robin pick are
constants per value of the last grant (no adder or modulo on the way), and the lowest
set bit of a wide vector is isolated with a carry chain (``bits & -bits``), which the
ECP5's fast carry logic resolves in a fraction of a LUT level per bit.
"""

from functools import reduce
from operator import or_

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value


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


def round_robin_one_hot(bits, last):
    """One-hot of the first set bit of ``bits`` after the one-hot ``last``, wrapping
    around (``last``'s own bit comes last; zero when none is set).

    Each grant bit is its request AND "no request ahead of it in the order ``last``
    gives": a sum of products over the request bits and ``last``, two or three LUT
    levels, with no index to decode afterwards (issue 7)."""
    n = len(bits)
    grant = []
    for i in range(n):
        blocked = []
        for prev in range(n):
            order = [(prev + k) % n for k in range(1, n + 1)]  # served after ``prev``
            ahead = order[:order.index(i)]
            if ahead:
                blocked.append(last[prev] & Cat(bits[j] for j in ahead).any())
        grant.append(bits[i] & ~Cat(*blocked).any() if blocked else bits[i])
    return Cat(*grant)


def one_hot_index(one_hot, n: int):
    """The index of the set bit of a one-hot (or zero) vector, as an OR of constants."""
    width = max(1, (n - 1).bit_length())
    return Cat(Cat(one_hot[i] for i in range(n) if (i >> b) & 1).any()
               if any((i >> b) & 1 for i in range(n)) else Const(0, 1)
               for b in range(width))


def and_or(one_hot, values):
    """``values[i]`` for the set bit ``i`` of ``one_hot`` (zero when none): an AND-OR."""
    width = len(Value.cast(values[0]))
    return reduce(or_, (Value.cast(v) & one_hot[i].replicate(width)
                        for i, v in enumerate(values)))


def registered_pick(m: Module, clients, port, *, registered_grant=False):
    """Round-robin merge of the streams ``clients`` onto ``port``, registered on both
    sides (issue 7): each client's request waits in a register of its own (its
    ``ready`` is that register being empty, a flip-flop), and a one-hot pick of the
    waiting ones is moved into the register that drives ``port`` while that is empty.
    Neither a client's state logic nor the port's ``ready`` reaches the pick or the
    port register's enables in the same cycle; each client and the port move at most
    one request per two cycles.

    ``registered_grant``: the pick is a register too, made a cycle ahead from the
    requests waiting then, so that the port register's data is an AND-OR of registers
    (the round robin in front of it was 0.2 ns short of 100 MHz in the core's arbiter,
    issue 7). A request then waits a cycle more before it is picked.

    Returns ``(requests, grant, load, out)``: the waiting requests, the one-hot pick,
    the edge that moves it, and the port's payload register, which the caller loads
    under ``m.If(load)`` from ``and_or(grant, requests)`` and ``one_hot_index(grant)``
    as its id scheme needs."""
    n = len(clients)
    waiting = Signal(n)
    requests = [Signal(c.payload.shape(), name=f"client{i}_request")
                for i, c in enumerate(clients)]
    out_valid = Signal()
    out = Signal(port.payload.shape())
    last = Signal(n, init=1 << (n - 1))  # one-hot: the client served last
    grant = Signal(n)
    load = Signal()
    m.d.comb += [port.valid.eq(out_valid), port.payload.eq(out)]
    if registered_grant:
        # The requests still waiting after this edge, in the order after the one
        # served last (a request arriving now is seen from the next cycle).
        m.d.comb += load.eq(~out_valid & grant.any())
        served = Mux(load, grant, last)
        m.d.sync += grant.eq(round_robin_one_hot(waiting & ~Mux(load, grant, 0), served))
    else:
        m.d.comb += [grant.eq(round_robin_one_hot(waiting, last)),
                     load.eq(~out_valid & waiting.any())]
    with m.If(port.valid & port.ready):
        m.d.sync += out_valid.eq(0)
    with m.If(load):
        m.d.sync += [out_valid.eq(1), last.eq(grant)]
    for i, c in enumerate(clients):
        m.d.comb += c.ready.eq(~waiting[i])
        with m.If(load & grant[i]):
            m.d.sync += waiting[i].eq(0)
        with m.If(c.valid & c.ready):  # never the granted one: it is waiting
            m.d.sync += [waiting[i].eq(1), requests[i].eq(c.payload)]
    return requests, grant, load, out
