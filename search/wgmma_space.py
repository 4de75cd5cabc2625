"""wgmma (sm_90a) schedules of GEMM-like kernels: the constructor the benchmarks and tests
use, and the wgmma points of the tensor-core space (search/tc_space.points ranks
``variants`` with the mma.sync points; model: search/tc_cost.wgmma_time_s).

A wgmma schedule is the mma.sync schedule of the same tiles (``tc_space.make``) with
``wm = 4 x warpgroups along M`` warps, the ``wgmma.*`` instruction and the shared layouts
the descriptors need (``ir/wgmma.staging``), see ir/wgmma.py; ``tma``: both operand tiles
are copied by TMA with mbarriers (ir/tma.py) instead of every thread's cp.async copies.

``producer``: warp specialization (ir/lower_wgmma.py): TMA copies issued by a producer
warp running ahead of the consumer warpgroups, stages released through mbarriers.

A convolution's variants (``conv_variants``) run over its GEMM views and M tilings, the TMA
twin boxing whichever operands TMA can copy (ir/tma.py: NHWC both, NCHW neither).

``variants`` lists each legal variant with cp.async copies, then its TMA twin (key
``(..., "tma")``) and its warp-specialized twin (key ``(..., "ws")``) where TMA can copy
both operands, so the benchmarks time all three; ``WS_DEEPER`` adds warp-specialized
points with more stages (a producer keeps every stage but the one read in flight). The model
(search/tc_cost.py) ties most twins with their cp.async variant (the cp.async one, listed
first, leads: a stable sort) and rates the rest slower: a TMA twin keeps no wgmma group in
flight (ir/lower_wgmma.wgmma_in_flight).
"""
from __future__ import annotations

import math
from dataclasses import replace

from ..ir import dtype as dt
from ..ir import tensorcore as tcm
from ..ir import wgmma as wg
from ..ir.schedule import Schedule, check

from . import tc_space

# (bm, bn, bk, warpgroups along M, along N, stages): the CUTLASS-like 128x256 tiles with
# two consumer warpgroups, waiting for every wgmma group (3 stages) or keeping one in
# flight (4-5 stages, bk 32: see ir/lower_wgmma.py), smaller tiles for two blocks an SM,
# N = 64 for the attention-context bmm
VARIANTS = ((128, 256, 64, 2, 1, 3), (128, 256, 32, 2, 1, 4), (128, 256, 32, 2, 1, 5), (128, 128, 64, 2, 1, 3),
            (128, 128, 64, 1, 1, 3), (128, 128, 32, 2, 1, 4), (256, 128, 64, 2, 1, 3), (64, 256, 64, 1, 1, 3),
            (64, 128, 32, 1, 1, 4), (128, 64, 64, 2, 1, 3), (128, 64, 32, 1, 1, 4))


# warp-specialized only: deeper pipelines (a producer keeps every stage but the one read in
# flight); beside the staged epilogue's tile shared memory holds 3 stages of 128x256x64, 5 of 128x128x64
WS_DEEPER = ((128, 128, 64, 2, 1, 4), (128, 128, 64, 2, 1, 5), (128, 256, 32, 2, 1, 6))
TWINS = ("tma", "ws")   # a variant key's optional last element


def instr_for(m: tcm.Match) -> str:
    return "wgmma.m64nNk16.bf16.f32" if m.dtype is dt.bfloat16 else "wgmma.m64nNk16.f16.f32"


def make(kernel, m: tcm.Match, bm: int, bn: int, bk: int, wgm: int, wgn: int, stages: int,
         m_ext: tuple[int, ...] = (), tma: bool = False, producer: bool = False) -> Schedule:
    """The wgmma schedule of block tile ``bm x bn``, K step ``bk``, ``wgm x wgn``
    warpgroups (each ``bm/wgm`` rows: whole m64 tiles, and ``bn/wgn`` columns: the
    instruction's N), ``stages`` pipeline stages, both operands copied by TMA if ``tma``,
    by a producer warp if ``producer`` (check it with ``ir.schedule.check``)."""
    if not all(isinstance(e, int) for e in m_ext):
        raise ValueError(f"M extents {m_ext!r} are not integers (a variant's key ending in {TWINS}: use from_key)")
    s = tc_space.make(kernel, m, bm, bn, bk, wg.WARPS_PER_GROUP * wgm, wgn, stages, m_ext)
    s = replace(s, tensor_core=replace(s.tensor_core, instr=instr_for(m), producer=producer))
    return copied_by_tma(replace(s, staging=wg.staging(kernel, s)), tma or producer)


def copied_by_tma(s: Schedule, tma: bool = True) -> Schedule:
    """``s`` with every staged operand copied by TMA (or, ``tma`` False, by threads)."""
    return replace(s, staging=tuple(replace(x, tma=tma) for x in s.staging))


def from_key(kernel, m: tcm.Match, key) -> Schedule:
    """The schedule of a ``variants`` key (``(bm, bn, bk, wgm, wgn, stages)``, or with a
    trailing ``"tma"`` for the TMA twin, ``"ws"`` for the warp-specialized one), e.g. one
    read back from a results file."""
    key = tuple(key)
    view = key[-1] if key and isinstance(key[-1], dict) else None
    if view is not None:   # a convolution's: the GEMM view with M over these axes and extents
        key = key[:-1]
        m = tcm.match(kernel, view["m_axes"][-1], view["n"], m.k, tuple(view["m_axes"][:-1]))
        if isinstance(m, str): raise ValueError(f"wgmma variant key: {m}")
    twin = key[6] if len(key) == 7 and key[6] in TWINS else None
    if len(key) != 6 + (twin is not None): raise ValueError(f"not a wgmma variant key: {key!r}")
    ext = tuple(view["m_ext"]) if view else ()
    s = make(kernel, m, *key[:6], ext, producer=twin == "ws")
    if twin == "tma" and view: return tma_where_possible(kernel, s) or copied_by_tma(s)
    return copied_by_tma(s, twin is not None)


def variants(kernel, machine, tma: bool = True) -> list[tuple[tuple, Schedule]]:
    """The legal ``VARIANTS`` of a GEMM or batched GEMM (default GEMM view; M/N padded
    as ``tc_space.tile_fits`` allows; stages at most the K steps), each followed by its
    legal TMA and warp-specialized twins (keys ending in ``"tma"``, ``"ws"``), then the
    legal ``WS_DEEPER`` points, unless ``tma`` is False (cp.async variants only). A
    convolution: ``conv_variants``."""
    m = tcm.match(kernel)
    if isinstance(m, str): return []
    if m.window: return conv_variants(kernel, machine, tma)
    if m.m_outer: return []
    M, N, K = (kernel.axes[a].size for a in (m.m, m.n, m.k))
    out: list[tuple[tuple, Schedule]] = []

    def add(key: tuple, s: Schedule) -> None:
        if all(key != k for k, _ in out) and not check(kernel, s, machine): out.append((key, s))

    for i, (bm, bn, bk, wgm, wgn, stages) in enumerate(VARIANTS + (WS_DEEPER if tma else ())):
        if not (tc_space.tile_fits(M, bm) and tc_space.tile_fits(N, bn)) or K % bk: continue
        s = make(kernel, m, bm, bn, bk, wgm, wgn, min(stages, K // bk))
        key = (bm, bn, bk, wgm, wgn, s.stages)
        if i < len(VARIANTS): add(key, s)
        if tma and i < len(VARIANTS): add((*key, "tma"), copied_by_tma(s))
        # a producer's pipeline runs on across a block's tiles: its stages are not capped by K's steps
        if tma: add((*key[:5], stages, "ws"), warp_specialized(replace(s, stages=stages)))
    return out


def warp_specialized(s: Schedule) -> Schedule:
    """``s`` with its operands copied by TMA from a producer warp."""
    return copied_by_tma(replace(s, tensor_core=replace(s.tensor_core, producer=True)))


# convolutions (implicit GEMM, N = output channels): (bm, bn, bk, warpgroups along M, along N,
# stages) over every GEMM view and flattened M tiling of that many rows (search/tc_space.m_tilings)
CONV_VARIANTS = ((128, 64, 64, 2, 1, 3), (128, 64, 64, 2, 1, 4), (128, 64, 64, 1, 1, 4), (256, 64, 64, 2, 1, 3),
                 (256, 64, 64, 2, 1, 4), (64, 64, 64, 1, 1, 4), (128, 64, 32, 2, 1, 5))


def conv_variants(kernel, machine, tma: bool = True) -> list[tuple[tuple, Schedule]]:
    """The legal ``CONV_VARIANTS`` of a convolution, over each GEMM view and M tiling, each
    followed by its TMA twin (the operands TMA can box, ir/tma.py: an NHWC conv's both, an
    NCHW one's neither) and its warp-specialized one (both by TMA). Keys: ``(bm, bn, bk, wgm, wgn, stages[, twin], view)``, ``view`` the M
    axes (outer -> inner), their extents and the N axis, ``{"m_axes": [...], "m_ext": [...], "n": ...}``."""
    out: list[tuple[tuple, Schedule]] = []
    for m0 in tc_space.orientations(kernel):
        N, K = (kernel.axes[a].size for a in (m0.n, m0.k))
        steps = K * math.prod(kernel.axes[a].size for a in m0.window)
        for m, ext in tc_space.m_tilings(kernel, m0):
            view = {"m_axes": list(m.m_axes), "m_ext": list(ext), "n": m.n}
            for bm, bn, bk, wgm, wgn, stages in CONV_VARIANTS:
                if math.prod(ext) != bm or not tc_space.tile_fits(N, bn) or K % bk: continue
                s = make(kernel, m, bm, bn, bk, wgm, wgn, min(stages, steps // bk), tuple(ext))
                key = (bm, bn, bk, wgm, wgn, s.stages)
                twins = [((*key, view), s)]
                if tma:
                    twins.append(((*key, "tma", view), tma_where_possible(kernel, s)))
                    twins.append(((*key[:5], stages, "ws", view), warp_specialized(replace(s, stages=stages))))
                out += [(k, x) for k, x in twins if x is not None and all(x != y for _, y in out) and not check(kernel, x, machine)]
    return out


def tma_where_possible(kernel, s: Schedule) -> Schedule | None:
    """``s`` with the operands TMA can copy copied by TMA (None where it can copy none)."""
    from ..ir import tma
    m, t = tcm.match_tc(kernel, s.tensor_core), tcm.tiles(kernel, s, warp=1)   # box shapes only (no thread count is read)
    ok = {op.input for op in (m.a, m.b) if not tma.check(kernel, m, t, op)}
    return replace(s, staging=tuple(replace(x, tma=x.input in ok) for x in s.staging)) if ok else None
