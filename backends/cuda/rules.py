"""GPU hand-written scheduling rules: the baseline every search is compared with.

GPU rules (``gpu``), per kernel class:
- elementwise: 16-byte vectors on the store-contiguous axis, 2 vectors per thread,
  256 threads a block, everything else on the grid;
- reduce over a contiguous axis: one output point per block, 256 threads splitting the
  reduction, interleaved (``LOOP x UNROLL 4 x THREAD``) so every warp load is coalesced;
  reduce over a strided axis: threads along the contiguous output axis, serial reduce;
- gemm / conv (no tensor cores yet): a 16x16 thread block of 4x4 register tiles over the
  two largest output axes (the store-contiguous one vectorized), K in LOOP x UNROLL 4;
  a GEMV (one output row, contiguous K) is scheduled like a reduction.
Every rule's result is checked with ``ir.schedule.check``; on a failure the rule falls
back to a plainer variant, ending at one thread per output point.
"""
from __future__ import annotations

import math

from superopt.ir.kernel import Kernel
from superopt.ir.node import Ops
from superopt.ir.schedule import Level, Schedule, Split, check, vector_axis

G, T, L, U, R = Level.GRID, Level.THREAD, Level.LOOP, Level.UPCAST, Level.UNROLL


def _pieces(size: int, inner: list[tuple[Level, int]], outer: Level = G) -> tuple[Split, ...]:
    """``outer`` covers what the inner pieces (outer -> inner) leave of ``size``; inner
    sizes are cut down so they never exceed the axis."""
    kept, cover = [], 1
    for lv, n in reversed(inner):
        n = max(1, min(n, -(-size // cover)))
        kept.insert(0, (lv, n)); cover *= n  # noqa: E702
    rest = -(-size // cover)
    out = [(outer, rest)] + kept
    return tuple(Split(lv, n) for lv, n in out if n > 1) or (Split(L, 1),)


def _pow2_divisor(n: int, cap: int) -> int:
    d = 1
    while d * 2 <= cap and n % (d * 2) == 0: d *= 2
    return d


def _contiguous_reduce(k: Kernel) -> bool:
    """Some load moves by one element along the innermost reduce axis."""
    from superopt.ir.schedule import _stride
    a = k.reduce_axes[-1]
    return any(_stride(ld.src[0], a, k.axes[a].size) == 1 for ld in k.loads)


def _naive_gpu(k: Kernel) -> Schedule:
    splits = []
    for i, ax in enumerate(k.axes):
        splits.append((Split(L, ax.size),) if ax.reduce else _pieces(ax.size, [(T, 64)]))
    return Schedule(tuple(splits))


def _elementwise(k: Kernel, m) -> Schedule:
    va = vector_axis(k)
    vec = 16 // k.output.dtype.itemsize
    splits: list[tuple[Split, ...]] = [(Split(G, ax.size),) for ax in k.axes]
    threads_left = 256
    if va is not None:
        n = k.axes[va].size
        v = _pow2_divisor(n, vec)
        u = _pow2_divisor(n, 2 * v) if n >= 2 * v * 256 * 64 else v
        t = min(threads_left, max(1, n // u))
        splits[va] = _pieces(n, [(T, t), (U, u)])
        threads_left //= max(1, t)
        for a in reversed(k.output_axes):  # leftover threads go to the next axes out
            if a == va or threads_left < 2: continue
            ta = min(threads_left, _pow2_divisor(k.axes[a].size, threads_left))
            if ta > 1: splits[a] = _pieces(k.axes[a].size, [(T, ta)]); threads_left //= ta  # noqa: E702
        s = Schedule(tuple(splits), vector=v if v > 1 else 1)
    else:
        last = max(k.output_axes, key=lambda a: k.axes[a].size)
        splits[last] = _pieces(k.axes[last].size, [(T, threads_left)])
        s = Schedule(tuple(splits))
    return s


def _reduce(k: Kernel, m) -> Schedule:
    splits: list[tuple[Split, ...]] = [(Split(G, ax.size),) for ax in k.axes]
    ra = k.reduce_axes[-1]
    for a in k.reduce_axes: splits[a] = (Split(L, k.axes[a].size),)
    n = k.axes[ra].size
    if _contiguous_reduce(k) and n >= 64:
        t = min(256, 1 << (n.bit_length() - 1))
        unroll = 4 if n % (t * 4) == 0 else 1
        splits[ra] = tuple(Split(lv, s) for lv, s in ((L, -(-n // (t * unroll))), (R, unroll), (T, t)) if s > 1)
        return Schedule(tuple(splits))
    va = vector_axis(k)
    out = va if va is not None else max(k.output_axes, key=lambda a: k.axes[a].size)
    splits[out] = _pieces(k.axes[out].size, [(T, 256)])
    unroll = _pow2_divisor(n, 4)
    splits[ra] = tuple(Split(lv, s) for lv, s in ((L, n // unroll), (R, unroll)) if s > 1) or (Split(L, 1),)
    return Schedule(tuple(splits))


def _contraction(k: Kernel, m) -> Schedule:
    outs = k.output_axes
    va = vector_axis(k)
    n_ax = va if va is not None else max(outs, key=lambda a: k.axes[a].size)
    others = [a for a in outs if a != n_ax]
    m_ax = max(others, key=lambda a: k.axes[a].size) if others else None
    splits: list[tuple[Split, ...]] = [(Split(G, ax.size),) for ax in k.axes]
    nn = k.axes[n_ax].size
    un = _pow2_divisor(nn, 4)
    splits[n_ax] = _pieces(nn, [(T, 16), (U, un)])
    if m_ax is not None:
        splits[m_ax] = _pieces(k.axes[m_ax].size, [(T, 16), (U, 4)])
    for a in k.reduce_axes: splits[a] = (Split(L, k.axes[a].size),)
    ra = k.reduce_axes[-1]
    r = _pow2_divisor(k.axes[ra].size, 4)
    splits[ra] = tuple(Split(lv, s) for lv, s in ((L, k.axes[ra].size // r), (R, r)) if s > 1) or (Split(L, 1),)
    vec = un if va is not None and un > 1 else 1
    return Schedule(tuple(splits), vector=vec)


def _is_gemv(k: Kernel) -> bool:
    big = [a for a in k.output_axes if k.axes[a].size > 1]
    return len(big) <= 1 and _contiguous_reduce(k)


def gpu(k: Kernel, machine) -> Schedule:
    """A reasonable GPU schedule for any kernel (legal for ``machine`` by ``check``)."""
    rule = {"elementwise": _elementwise, "reduce": _reduce, "gemm": _contraction, "conv": _contraction}[k.kind]
    if k.kind == "gemm" and _is_gemv(k): rule = _reduce  # one output row: split K over threads instead
    for make in (rule, _plain_variant(rule), lambda k, m: _naive_gpu(k)):
        s = make(k, machine)
        if not check(k, s, machine): return s
    s = _naive_gpu(k)
    raise ValueError(f"no legal GPU hand schedule for {k.name}: {'; '.join(check(k, s, machine))}")


def _plain_variant(rule):
    """The same rule without vector width (vectors need an unpadded, divisible axis)."""
    def make(k: Kernel, m) -> Schedule:
        s = rule(k, m)
        from dataclasses import replace
        return replace(s, vector=1)
    return make


__all__ = ["gpu"]
_ = (math, Ops)  # imported for readers extending the rules
