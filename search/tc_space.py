"""The tensor-core schedule space of a GEMM-like kernel (GEMMs, batched GEMMs and
convolutions as implicit GEMM) and its exact optimum under the tensor-core time model
(search/tc_cost.py).

Points: every GEMM view of the kernel (which output axis is M: ``orientations``), block
tile BM x BN (16..256, dividing M and N or padding them by at most an eighth; BM also
flattened over the M operand's other own axes: ``m_tilings``), K step 16/32/64, warps wm x wn
(a warp's tile a multiple of 16 on both sides, at most 128 fp32 accumulators a thread,
at most 8 warps), pipeline stages 1..4 (at most the K steps). Kept only if at least two
blocks stay resident per SM by the register estimate (accumulators + fragments +
addressing; the one-block-per-SM 8-warp tiles measured ~15% slower on the H100, see
bench/results/gpu-tc-h100.md) and ``check`` passes with the Z3-solved layouts. The space
is a few hundred points, so it is enumerated and ranked exactly (the optimum under the
model is proved by enumeration); each candidate's shared layouts come from the Z3
bank-conflict solver (search/banks.py).

On sm_90 machines the space also holds the wgmma (sm_90a) schedules of
``wgmma_space.variants`` (the tiles measured on the H100, with cp.async copies or a producer
warp, a convolution's over every view and M tiling; their shared layouts are fixed by the
descriptors, not solved), ranked with the mma.sync points by the same model.
"""
from __future__ import annotations

import itertools
import math
import time as _time
from dataclasses import replace

from ..ir import tensorcore as tcm
from ..ir import wgmma as wg
from ..ir.node import Ops
from ..ir.schedule import Level, Schedule, Split, Staging, TensorCore, check

from . import banks
from .cost import NUMERIC
from .tc_cost import mma_facts, mma_time, resident_blocks, time_s

TIE = 1 + 1e-9   # times this close are equal (float round-off of one formula)
G, T, U, L, R = Level.GRID, Level.THREAD, Level.UPCAST, Level.LOOP, Level.UNROLL
TILES, KSTEPS, WARPS, STAGES = (16, 32, 64, 128, 256), (16, 32, 64), (1, 2, 4), (1, 2, 3, 4)
MAX_ACC = 128          # fp32 accumulators a thread
# element (2-byte) copies a thread issues per K step (both operands), each with its own
# index math: the ResNet 3x3 NCHW conv compiled by ptxas (sm_90) in 167 registers with 48
# (32 + 16), but spilled 912 bytes at 255 registers with 160 (128 + 32)
MAX_ELEMENT_COPIES = 48


def instr_for(m: tcm.Match) -> str:
    return "mma.m16n8k16.bf16.f32" if m.dtype.name == "bfloat16" else "mma.m16n8k16.f16.f32"


def make(kernel, m: tcm.Match, bm: int, bn: int, bk: int, wm: int, wn: int, stages: int,
         m_ext: tuple[int, ...] = ()) -> Schedule:
    """The tensor-core schedule of these tiles, with placeholder (plain) layouts; M and N
    tiles may overhang the axis (padded), window axes are serial loops. ``m_ext``: the
    block tile's extent along each of ``m.m_axes`` (outer -> inner; product ``bm``), the
    warps splitting the outer ones first (ir/tensorcore.py); default all of ``bm`` along ``m.m``."""
    N, K = (kernel.axes[a].size for a in (m.n, m.k))
    m_ext = m_ext or (bm,)
    sp = [(Split(G, ax.size),) for ax in kernel.axes]
    for a in m.window: sp[a] = (Split(L, kernel.axes[a].size),)
    left = wm   # warps still to place, outer axes first (whole consecutive row ranges each)
    for a, e in zip(m.m_axes, m_ext):
        size, w = kernel.axes[a].size, math.gcd(left, e)
        left //= w
        sp[a] = tuple(Split(lv, n) for lv, n in ((G, -(-size // e)), (T, w), (U, e // w)) if n > 1) or (Split(U, 1),)
    sp[m.n] = tuple(Split(lv, n) for lv, n in ((G, -(-N // bn)), (T, wn), (U, bn // wn)) if n > 1) or (Split(U, 1),)
    sp[m.k] = tuple(Split(lv, n) for lv, n in ((L, K // bk), (R, bk)) if n > 1) or (Split(L, 1),)
    plain = (Staging(m.a.input, vector=m.a.vec), Staging(m.b.input, vector=m.b.vec))
    tc = TensorCore(instr_for(m), m.m, m.n, m.k, m.m_outer)
    return Schedule(tuple(sp), tensor_core=tc, staging=plain, stages=stages)


def m_tilings(kernel, m: tcm.Match) -> list[tuple[tcm.Match, tuple[int, ...]]]:
    """Ways to tile M: a block tile along the M axis alone (every ``TILES`` size that
    fits), and, where that axis is too short or ragged for a 128-row tile, flattened
    tiles over it and the M operand's sparser own axes (a conv's image and row around its
    column): power-of-two extents, one axis at most padded, by at most an eighth of its
    padded size (a 56-pixel row in a 64-row panel), 32..256 rows in all."""
    size = kernel.axes[m.m].size
    out = [(m, (bm,)) for bm in TILES if tile_fits(size, bm)]
    if size % 128 == 0: return out
    ld = m.a.load
    stride = lambda a: abs(tcm.axis_stride(ld.src[0], a, kernel.axes[a].size) or 1 << 40)  # noqa: E731
    own = sorted((a for a in m.batch if kernel.axes[a].size > 1 and stride(a) > stride(m.m) and
                  any(v.op is Ops.VAR and v.arg[0] == a for v in ld.toposort())), key=stride)
    for depth in (1, 2):
        if len(own) < depth: break
        mm = tcm.match(kernel, m.m, m.n, m.k, tuple(reversed(own[:depth])))
        if isinstance(mm, str): continue
        sizes = [kernel.axes[a].size for a in mm.m_axes]
        for ext in itertools.product(*[(2, 4, 8, 16, 32, 64)] * len(sizes)):
            padded = [n + -n % e for n, e in zip(sizes, ext)]
            if math.prod(ext) not in TILES[1:] or 7 * math.prod(padded) > 8 * math.prod(sizes) or \
                    sum(p != n for p, n in zip(padded, sizes)) > 1: continue
            out.append((mm, ext))
    return out


def orientations(kernel) -> list[tcm.Match]:
    """The distinct GEMM views of ``kernel``: the default one, then every other output
    axis as M (a convolution's other pixel axes, or the operands swapped)."""
    out: list[tcm.Match] = []
    for m_axis in (None, *kernel.output_axes):
        m = tcm.match(kernel, m_axis)
        if not isinstance(m, str) and all((m.m, m.n, m.k) != (x.m, x.n, x.k) for x in out): out.append(m)
    return out


def tile_fits(size: int, tile: int) -> bool:
    """A block tile fits an axis: divides it, pads it by at most an eighth (a conv row of
    56 pixels takes 64), or is the smallest tile (16: an axis shorter than it pads anyway)."""
    pad = -size % tile
    return pad * 8 <= size + pad or tile == tcm.MMA_M


def points(kernel, machine, wgmma: bool = True) -> list[tuple[float, Schedule]]:
    """Every point of the space with its modeled time (mma.sync points as with conflict-free layouts, ``free_time_s``), fastest first
    (``wgmma`` False: the mma.sync points only)."""
    if not machine.has("mma.sync"): return []
    out = []
    for m0 in orientations(kernel):
        N, K = (kernel.axes[a].size for a in (m0.n, m0.k))
        win = math.prod(kernel.axes[a].size for a in m0.window)
        for (m, ext), bn, bk, wm, wn, st in itertools.product(m_tilings(kernel, m0), TILES, KSTEPS, WARPS, WARPS, STAGES):
            bm = math.prod(ext)
            if not tile_fits(N, bn) or K % bk or st > max(1, K // bk * win): continue
            tm, tn = bm // wm, bn // wn
            if tm % 16 or tn % 16 or tm * tn // machine.warp > MAX_ACC or wm * wn > 8: continue
            s = make(kernel, m, bm, bn, bk, wm, wn, st, ext)
            if resident_blocks(tcm.tiles(kernel, s, machine.warp), machine) < 2 or _element_copies(kernel, s, machine.warp) > MAX_ELEMENT_COPIES: continue
            if check(kernel, s, machine): continue
            out.append((free_time_s(kernel, s, machine), s))
    if wgmma: out += _wgmma_points(kernel, machine)
    # ties (memory-bound GEMMs tie at the DRAM bound): a producer warp first (TMA copies: on the
    # H100 the attention bmms, both DRAM-bound in the model, ran 1.4-2.2x faster with it than with
    # mma.sync, bench/results/h100-2026-11-23d), less ldmatrix traffic (squarer warp tiles), then
    # fewer stages (less shared memory); times to the picosecond: the two models' equal bounds
    # differ in the last bits
    out = [(round(t, 12), s) for t, s in out]
    out.sort(key=lambda x: (x[0], not x[1].tensor_core.producer, _frag_traffic(kernel, x[1], machine.warp), x[1].stages))
    return out


def free_time_s(kernel, s: Schedule, machine) -> float:
    """The modeled time of mma.sync point ``s`` as with conflict-free shared layouts (the
    layouts are solved afterwards, for the points ranked first: ``best``)."""
    return float(mma_time(NUMERIC, mma_facts(kernel, s, machine, ways=(1.0, 1.0)), machine))


def _wgmma_points(kernel, machine) -> list[tuple[float, Schedule]]:
    """wgmma schedules (sm_90 machines only; ``wgmma_space.variants`` checks them): the
    cp.async and the warp-specialized ones. The TMA twins stay out: on the H100 they ran no
    faster than their cp.async variants (-16% to +5%, bench/results/h100-2026-11-23c), and the
    model ties or ranks them behind those."""
    if not machine.has("wgmma"): return []
    from . import wgmma_space
    return [(time_s(kernel, s, machine), s) for key, s in wgmma_space.variants(kernel, machine) if "tma" not in key]


def _conflict_free(kernel, s: Schedule, machine) -> bool:
    """Whether both operands' layouts under ``s`` take one wavefront a phase."""
    return banks.schedule_ways(kernel, s, machine.warp) == (1.0, 1.0)


def _element_copies(kernel, s: Schedule, warp: int) -> int:
    """Element copies one thread issues per K step (16-byte copies do not count)."""
    t = tcm.tiles(kernel, s, warp)
    m = tcm.match_tc(kernel, s.tensor_core)
    vec = {x.input: x.vector for x in s.staging}
    return sum(outer * t.bk // t.threads for op, outer in ((m.a, t.bm), (m.b, t.bn)) if vec[op.input] == 1)


def _frag_traffic(kernel, s: Schedule, warp: int) -> float:
    t = tcm.tiles(kernel, s, warp)
    return (t.tm + t.tn) / (t.tm * t.tn)


def best(kernel, machine, top_k: int = 4, wgmma: bool = True) -> list[tuple[float, Schedule]]:
    """The ``top_k`` fastest points under the model, each with its Z3-solved layouts
    (points whose solved layouts break a resource limit are skipped)."""
    return ranked(kernel, machine, top_k, wgmma, deadline=-math.inf)[0]


def ranked(kernel, machine, top_k: int = 4, wgmma: bool = True,
           deadline: float = math.inf) -> tuple[list[tuple[float, Schedule]], bool]:
    """``best``, and whether its first point is proved optimal over the whole space, layouts
    included (branch and bound). A point's time with conflict-free layouts (``free_time_s``)
    is a lower bound on its time under any layout (conflicts only add shared-memory
    wavefronts), and exact where the solved layouts are conflict-free. Points are visited in
    that bound's order, so once the best exact time is at most the next point's bound, no
    later point can beat it: proved. Past ``deadline``, with ``top_k`` points found, the walk
    stops unproved (``best``: at once)."""
    out: list[tuple[float, Schedule]] = []
    unresolved = math.inf   # the least bound of the points whose best layout is not known
    for _, s in points(kernel, machine, wgmma):
        mma = not wg.is_wgmma(s.tensor_core.instr)
        free = free_time_s(kernel, s, machine) if mma else time_s(kernel, s, machine)  # unrounded
        if len(out) >= top_k and out[0][0] <= min(free, unresolved) * TIE: return out[:top_k], True
        if len(out) >= top_k and _time.monotonic() > deadline: return out[:top_k], False
        if mma:
            solved = replace(s, staging=banks.staging(kernel, s, machine.warp)[0])
            # solved layouts past a resource limit: the point runs with its plain ones (legal:
            # ``points`` checked them), and layouts between the two stay unexplored
            if check(kernel, solved, machine): unresolved = min(unresolved, free)
            else: s = solved
        t = time_s(kernel, s, machine)
        if t > free * TIE and s.staging and not _conflict_free(kernel, s, machine):
            unresolved = min(unresolved, free)   # conflicts left: only the bound is known
        out.append((t, s))
        out.sort(key=lambda x: x[0])
    return out[:top_k], out[0][0] <= unresolved * TIE if out else True   # every point visited
