"""Hand rules: the heuristic schedules every solver result is compared with.

``hand_schedule(kernel, machine)`` picks the rule for the machine's kind; the result
always passes ``ir.schedule.check``.

CPU rules (``cpu``), per kernel class:
- gemm / conv: a register tile rows x vector columns (8 x 32 with 16-lane vectors on
  AVX-512) along the store-contiguous axis, the reduction innermost, the column loop
  outside the row loop (the reused panel of the other operand stays in cache), rows in
  GRID chunks shared by all cores;
- elementwise: vectors along the contiguous axis, a few per iteration, rows or chunks
  over the cores;
- reduce: vectors along the output's contiguous axis when every load is contiguous
  there, otherwise 8 independent scalar accumulators; the reduction unrolled by 4.


GPU rules (``gpu``), per kernel class:
- elementwise: 16-byte vectors on the store-contiguous axis, 2 vectors per thread,
  256 threads a block, everything else on the grid;
- reduce over a contiguous axis: threads split the reduction, ``LOOP x THREAD x UNROLL
  v`` with v elements = 16 bytes, so each thread's unrolled loads merge into one vector
  load and a warp reads 512 contiguous bytes (else ``LOOP x UNROLL 4 x THREAD``): 256
  threads a row for rows of 8192 or more, else one warp a row and 8 rows a block;
  reduce over a strided axis: threads along the contiguous output axis, serial reduce;
- gemm / conv (no tensor cores yet): a 16x16 thread block of 4x4 register tiles over the
  two largest output axes (the store-contiguous one vectorized where an operand is
  contiguous along it too), K in LOOP x UNROLL (16 bytes of K); a narrow contiguous axis
  shares the threads with the next output axis;
  a GEMV (one output row, contiguous K) is scheduled like a reduction.
- row kernels (softmax, layernorm: REDUCEs over an output axis): a block per row, the
  row as ``LOOP x THREAD x UPCAST v`` (16-byte vectors, up to 512 threads, coalesced each
  pass); short rows share a block (a warp or more per row).
- fp16/bf16 GEMMs (and batched ones) and convolutions (implicit GEMM: output pixels x
  output channels x input channels, the filter window as outer K loops): tensor cores
  (``_tensor_core``): 128x128 block tiles (smaller, or padded by at most an eighth, where
  the sizes need: a 56-pixel row takes 64) of 2x2 warps, K 32 deep a step, a 3-stage
  pipeline, shared layouts from the Z3 bank-conflict solver (search/banks.py); on sm_90
  wgmma first (``WGMMA_TILES`` for GEMMs, ``_wgmma_conv`` for convolutions).
Every rule's result is checked with ``ir.schedule.check``; on a failure the rule falls
back to a plainer variant, ending at one thread per output point.
"""
from __future__ import annotations

import math
from dataclasses import replace

from ..ir.kernel import Kernel
from ..ir.node import Ops
from ..ir.schedule import Level, Schedule, Split, check, vector_axis

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
    from ..ir.node import axis_stride
    a = k.reduce_axes[-1]
    return any(axis_stride(ld.src[0], a, k.axes[a].size) == 1 for ld in k.loads)


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
        # long rows: a block of 256 threads per row; shorter ones: a warp per row and several
        # rows a block (the partials are folded serially, so fewer threads fold faster)
        t = min(256 if n >= 8192 else 32, 1 << (n.bit_length() - 1))
        vec = 16 // max(ld.dtype.itemsize for ld in k.loads)
        if n % (t * vec) == 0:  # each thread reads 16 contiguous bytes a step (one vector load)
            splits[ra] = tuple(Split(lv, s) for lv, s in ((L, n // (t * vec)), (T, t), (R, vec)) if s > 1)
        else:
            unroll = 4 if n % (t * 4) == 0 else 1
            splits[ra] = tuple(Split(lv, s) for lv, s in ((L, -(-n // (t * unroll))), (R, unroll), (T, t)) if s > 1)
        outs = [a for a in k.output_axes if k.axes[a].size > 1]
        if t < 256 and outs:
            out = max(outs, key=lambda a: k.axes[a].size)
            rows = _pow2_divisor(k.axes[out].size, 256 // t)
            if rows > 1: splits[out] = _pieces(k.axes[out].size, [(T, rows)])
        return Schedule(tuple(splits))
    va = vector_axis(k)
    out = va if va is not None else max(k.output_axes, key=lambda a: k.axes[a].size)
    splits[out] = _pieces(k.axes[out].size, [(T, 256)])
    unroll = _pow2_divisor(n, 4)
    splits[ra] = tuple(Split(lv, s) for lv, s in ((L, n // unroll), (R, unroll)) if s > 1) or (Split(L, 1),)
    return Schedule(tuple(splits))


def _contraction(k: Kernel, m) -> Schedule:
    from ..ir.node import axis_stride
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
    tn = min(16, -(-nn // un))
    rest = [a for a in others if a != m_ax and k.axes[a].size > 1]
    if tn < 16 and rest:  # a narrow contiguous axis (a 7- or 14-wide image row): threads on the next axis too
        a3 = min(rest, key=lambda a: axis_stride(k.store, a, k.axes[a].size) or 1 << 40)  # the next axis out in memory
        splits[a3] = _pieces(k.axes[a3].size, [(T, 16 // tn)])
    for a in k.reduce_axes: splits[a] = (Split(L, k.axes[a].size),)
    ra = k.reduce_axes[-1]
    # unroll K so that loads contiguous along K merge into 16-byte vector loads
    r = _pow2_divisor(k.axes[ra].size, 16 // max(ld.dtype.itemsize for ld in k.loads))
    splits[ra] = tuple(Split(lv, s) for lv, s in ((L, k.axes[ra].size // r), (R, r)) if s > 1) or (Split(L, 1),)
    # vector lanes along N only where some operand is contiguous along N (else each
    # register-tile slot loads on its own and merges along K)
    along_n = any(axis_stride(ld.src[0], n_ax, nn) == 1 for ld in k.loads)
    vec = un if va is not None and un > 1 and along_n else 1
    return Schedule(tuple(splits), vector=vec)


def _row_axis(k: Kernel) -> int:
    """The row axis a row rule spreads: the store-contiguous one, else the longest."""
    va = vector_axis(k)
    return va if va in k.row_axes else max(k.row_axes, key=lambda a: k.axes[a].size)


def _rows(k: Kernel, m) -> Schedule:
    splits: list[tuple[Split, ...]] = [(Split(G, ax.size),) for ax in k.axes]
    for a in k.row_axes: splits[a] = (Split(L, k.axes[a].size),)
    ra, va = _row_axis(k), vector_axis(k)
    if va is not None and va != ra:  # rows along a strided axis: threads along the contiguous one, rows serial
        splits[va] = _pieces(k.axes[va].size, [(T, _pow2_divisor(k.axes[va].size, 256))])
        return Schedule(tuple(splits))
    n = k.axes[ra].size
    vec = _pow2_divisor(n, 16 // max(ld.dtype.itemsize for ld in k.loads)) if ra == vector_axis(k) else 1
    # at least two vector loads a thread: a 1024-wide fp32 row as 128 threads x 2 unrolled
    # float4s ran 22.0 us on the H100 where 256 threads x 1 float4 ran 27.0 (8192 rows, clean
    # L2; bench/results/h100-2026-12-06d); two serial steps are unrolled (the row share stays
    # in registers, read once: 21.9 vs 23.3 us as a loop)
    t = _pow2_divisor(n // vec, min(512, max(1, n // vec // 2)))
    serial = n // (t * vec)
    splits[ra] = tuple(Split(lv, s) for lv, s in ((R if serial == 2 else L, serial), (T, t), (U, vec)) if s > 1) or (Split(L, 1),)
    outs = [a for a in k.output_axes if a not in k.row_axes and k.axes[a].size > 1]
    if t < 128 and outs:  # short rows: several a block
        out = max(outs, key=lambda a: k.axes[a].size)
        rows = _pow2_divisor(k.axes[out].size, 256 // t)
        if rows > 1: splits[out] = _pieces(k.axes[out].size, [(T, rows)])
    return Schedule(tuple(splits), vector=vec)


def _is_gemv(k: Kernel) -> bool:
    big = [a for a in k.output_axes if k.axes[a].size > 1]
    return len(big) <= 1 and _contiguous_reduce(k)


def _tensor_core(k: Kernel, machine) -> Schedule | None:
    """A tensor-core schedule for an fp16/bf16 GEMM or convolution (implicit GEMM), or
    None where none fits."""
    from . import banks, tc_space
    view = _tc_view(k)
    if view is None: return None
    m, ext = view
    bn = _tc_tile(k.axes[m.n].size)
    K = k.axes[m.k].size
    bk = next((c for c in (32, 16) if K % c == 0), None)
    if bk is None: return None
    bm, steps = math.prod(ext), K // bk * math.prod(k.axes[a].size for a in m.window)
    # 2x2 warps where the tiles allow; fewer where a small tile has too few copies for them
    for wm, wn in dict.fromkeys(((2 if bm >= 32 else 1, 2 if bn >= 32 else 1), (1, 2 if bn >= 32 else 1), (1, 1))):
        if ext[0] % wm: continue
        s = tc_space.make(k, m, bm, bn, bk, wm, wn, min(3, steps), ext)
        s = replace(s, staging=banks.staging(k, s, machine.warp)[0])
        if not check(k, s, machine): return s
    return None


def _tc_view(k: Kernel):
    """(match, M extents) of the GEMM view and M tiling that pad least (a conv: a flattened
    image x row x column tile); ties: the default view, then the view whose A rows are
    densest in memory. None: no tensor-core view."""
    from ..ir import tensorcore as tcm
    from . import tc_space
    dense = lambda v: abs(tcm.axis_stride(v.a.load.src[0], v.m, k.axes[v.m].size) or 1 << 40)  # noqa: E731
    choices = []
    for i, v in enumerate(tc_space.orientations(k)):
        mm, ext = _tc_m_tile(k, v)
        choices.append(((round(_tc_waste(k, mm, ext, _tc_tile(k.axes[v.n].size)), 6), i > 0, dense(v)), mm, ext))
    return min(choices, key=lambda x: x[0])[1:] if choices else None


def _tc_tile(size: int) -> int:
    """The block tile of an M or N axis: the least padding, then the largest of
    128/64/32/16 that fits (search/tc_space.tile_fits; 56 conv pixels: 64)."""
    from .tc_space import tile_fits
    return min((c for c in (128, 64, 32, 16) if tile_fits(size, c)), key=lambda c: (-size % c, -c))


def _tc_m_tile(k: Kernel, m):
    """(match, extents) of the M tile: along the M axis alone where a tile divides it,
    else the flattened tile (search/tc_space.m_tilings) with the least padding, nearest
    128 rows, largest inner extents (a 56x56 conv map: 2 images x 8 rows x 8 columns)."""
    from .tc_space import m_tilings
    size = k.axes[m.m].size
    bm = _tc_tile(size)
    if size % bm == 0: return m, (bm,)
    opts = [(mm, e) for mm, e in m_tilings(k, m) if len(e) > 1] + [(m, (bm,))]
    return min(opts, key=lambda x: (_tc_waste(k, *x), abs(math.log2(math.prod(x[1]) / 128)), [-e for e in reversed(x[1])]))


def _tc_waste(k: Kernel, mt, m_ext: tuple[int, ...], bn: int = 1) -> float:
    """Padded / real points of an M tiling (times N's for a block tile ``bn``)."""
    pad = lambda n, e: -(-n // e) * e / n  # noqa: E731
    return math.prod(pad(k.axes[a].size, e) for a, e in zip(mt.m_axes, m_ext)) * pad(k.axes[mt.n].size, bn)


# fp32 GEMMs through shared memory (ir/lower_staged.py) instead of register tiles fed from L1.
# Timed on the H100 (bench/results/h100-2026-11-23b/gpu-staged.json): every staged variant beat the
# register-tile rule on all five fp32 GEMMs (0.78-1.12x torch against 0.24-0.59x), the 64x64 tile
# fastest on all five. Convolutions keep the register tile until a staged one is timed on a GPU.
STAGED_KINDS = ("gemm",)
# (bm, bn, tm, tn, bk, stages) of the staged SIMT GEMM variants timed on the GPU; the first is the rule's
# (8x16 registers: 6 instead of 4 16-byte shared reads per k for twice the FMAs, at 255 registers)
STAGED_TILES = ((64, 64, 8, 4, 16, 2), (128, 128, 8, 8, 8, 2), (128, 128, 8, 8, 16, 2), (128, 128, 8, 8, 8, 3),
                (128, 128, 8, 8, 16, 3), (128, 256, 8, 16, 8, 2), (128, 64, 8, 8, 8, 2))


def staged_simt(k: Kernel, machine, bm: int = 128, bn: int = 128, tm: int = 8, tn: int = 8, bk: int = 8,
                stages: int = 2) -> Schedule | None:
    """An fp32 GEMM (batched GEMM, convolution) staged through shared memory (ir/lower_staged.py):
    BM x BN block tiles of (BM/tm) x (BN/tn) threads, tm x tn registers each, K ``bk``
    deep a step through a ``stages``-deep cp.async pipeline, 16-byte copies where the
    operand allows; a tile row running along K that threads of a quarter warp read at
    different rows (a B stored N x K) has its 16-byte units XOR-swizzled within each 128
    bytes (conflict-free 16-byte reads and copies; a pad of 4 would serve the reads only).
    Tiles shrink to the axes; None where the kernel or the machine does not fit it."""
    from ..ir import geometry_staged
    from ..ir.schedule import Staging
    if not machine.is_simt: return None
    m = geometry_staged.match(k)
    if isinstance(m, str): return None
    M, N, K = (k.axes[a].size for a in (m.m, m.n, m.k))
    bm, bn = min(bm, 1 << (M - 1).bit_length()), min(bn, 1 << (N - 1).bit_length())
    tm, tn = min(tm, bm), min(tn, bn)
    bk = next((c for c in (bk, 16, 8, 4) if c <= bk and K % c == 0), None)
    if bk is None: return None
    splits: list[tuple[Split, ...]] = [(Split(G, ax.size),) for ax in k.axes]
    splits[m.m] = tuple(Split(lv, n) for lv, n in ((G, -(-M // bm)), (T, bm // tm), (U, tm)) if n > 1) or (Split(G, 1),)
    splits[m.n] = tuple(Split(lv, n) for lv, n in ((G, -(-N // bn)), (T, bn // tn), (U, tn)) if n > 1) or (Split(G, 1),)
    splits[m.k] = tuple(Split(lv, n) for lv, n in ((L, K // bk), (R, bk)) if n > 1) or (Split(L, 1),)
    for a in m.window: splits[a] = (Split(L, k.axes[a].size),)
    # B rows along K, read 16 bytes a thread by 8 threads at 8 rows: XOR-swizzle its units within 128 bytes
    sw = min(3, (bk // 4).bit_length() - 1) if not m.b.k_major else 0
    staging = (Staging(m.a.input, vector=m.a.vec), Staging(m.b.input, swizzle=sw, shift=3 if sw else 0, vector=m.b.vec))
    s = Schedule(tuple(splits), staging=staging, stages=min(stages, K // bk))
    return None if check(k, s, machine) else s


def _staged_rule(k: Kernel, machine) -> Schedule | None:
    """The first tile of STAGED_TILES that fits the kernel."""
    return next((s for t in STAGED_TILES if (s := staged_simt(k, machine, *t)) is not None), None)


def staged_variants(k: Kernel, machine) -> list[Schedule]:
    """The distinct legal ``staged_simt`` variants of ``STAGED_TILES`` (for timing)."""
    out: list[Schedule] = []
    for tile in STAGED_TILES:
        s = staged_simt(k, machine, *tile)
        if s is not None and s not in out: out.append(s)
    return out


# The wgmma tiles of the hand rule (bm, bn, bk, warpgroups along M, along N, stages), first
# that fits: warp-specialized 256x128x64 (a persistent kernel, TMA copies from a producer warp,
# the epilogue through shared memory), on the H100 0.89-0.98x torch on the BERT GEMMs and
# 4096^3 (bench/results/h100-2026-11-23d); then the 128x128x64 cp.async tile, the fastest of
# all six BERT GEMMs, fp16 and bf16, before (bench/results/h100-2026-11-23); then the
# warp-specialized 128x64x64, 1.05x torch on the attention-context bmm (N = 64) where the
# mma.sync rule ran 0.83x. Taken only where they divide M, N and K exactly, as measured;
# elsewhere (and for convolutions) the mma.sync rule stays.
WGMMA_TILES = (((256, 128, 64, 2, 1, 3), True), ((128, 128, 64, 2, 1, 3), False),
               ((128, 64, 64, 2, 1, 3), True))   # (tile, producer warp)


def _wgmma(k: Kernel, machine) -> Schedule | None:
    from ..ir import tensorcore as tcm
    from . import wgmma_space
    if not machine.has("wgmma") or k.kind != "gemm": return None
    m = tcm.match(k)
    if isinstance(m, str) or m.window or m.m_outer: return None
    M, N, K = (k.axes[a].size for a in (m.m, m.n, m.k))
    for (bm, bn, bk, wgm, wgn, stages), producer in WGMMA_TILES:   # a producer's stages run on across tiles
        if M % bm or N % bn or K % bk or (K // bk < stages and not producer): continue
        s = wgmma_space.make(k, m, bm, bn, bk, wgm, wgn, stages, producer=producer)
        if not check(k, s, machine): return s
    return None


# Convolutions on wgmma (sm_90a), timed on the H100's ResNet 3x3 conv (bench/results/h100-2026-12-06):
# where TMA can box both operands (NHWC), warp-specialized 128x64x64 tiles of one consumer
# warpgroup, 4 stages, over the least-padding M tiling (2 images x 8 rows x 8 columns), the
# fastest of 30 variants (282 TF/s; the mma.sync rule 176); else (NCHW: element copies) 256x64x64
# cp.async tiles of 4 whole output rows, two warpgroups, 3 stages (102 TF/s; the mma.sync rule
# 85, 2 x 8 x 8 tiles 70-75: element copies along rows of 8 pixels waste their sectors).
CONV_WS_TILE, CONV_ROWS_TILE = (64, 64, 1, 1, 4), (64, 64, 2, 1, 3)   # (bn, bk, wgm, wgn, stages)


def _wgmma_conv(k: Kernel, machine) -> Schedule | None:
    from ..ir import tensorcore as tcm
    from . import tc_space, wgmma_space
    if not machine.has("wgmma") or k.kind != "conv": return None
    view = _tc_view(k)
    if view is None: return None
    m, ext = view
    N, K = (k.axes[a].size for a in (m.n, m.k))
    bn, bk, wgm, wgn, stages = CONV_WS_TILE
    if math.prod(ext) == 128 and N % bn == 0 and K % bk == 0:
        s = wgmma_space.make(k, m, 128, bn, bk, wgm, wgn, stages, ext, producer=True)
        if not check(k, s, machine): return s
    bn, bk, wgm, wgn, stages = CONV_ROWS_TILE
    if N % bn or K % bk: return None
    rows = [(mm, e) for mm, e in tc_space.m_tilings(k, tcm.match(k, m.m, m.n, m.k)) if len(e) > 1 and math.prod(e) == 256 and e[-1] % 64 == 0]
    for mm, e in sorted(rows, key=lambda x: _tc_waste(k, *x)):
        steps = K // bk * math.prod(k.axes[a].size for a in mm.window)
        s = wgmma_space.make(k, mm, 256, bn, bk, wgm, wgn, min(stages, steps), e)
        if not check(k, s, machine): return s
    return None


def gpu(k: Kernel, machine) -> Schedule:
    """A reasonable GPU schedule for any kernel (legal for ``machine`` by ``check``)."""
    if k.kind == "attention":   # a fused attention (ir/attention.py): its family's rule
        from .families.attention import FAMILY
        return FAMILY.hand(k, machine)
    if k.kind in ("gemm", "conv") and not _is_gemv(k):
        s = _wgmma(k, machine) or _wgmma_conv(k, machine) or _tensor_core(k, machine)
        if s is not None: return s
    if k.kind in STAGED_KINDS and not _is_gemv(k):
        s = _staged_rule(k, machine)
        if s is not None: return s
    return gpu_plain(k, machine)


def gpu_plain(k: Kernel, machine) -> Schedule:
    """The plain SIMT rule (no shared-memory staging, no tensor core) for any kernel."""
    rule = {"elementwise": _elementwise, "reduce": _reduce, "gemm": _contraction, "conv": _contraction, "row": _rows}[k.kind]
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



# ---- CPU ---------------------------------------------------------------------------
def hand_schedule(kernel: Kernel, machine) -> Schedule:
    """The hand-rule schedule of ``kernel`` for ``machine`` (always legal)."""
    if machine.is_simt: return gpu(kernel, machine)
    s = cpu(kernel, machine)
    if not check(kernel, s, machine): return s
    fallback = _cpu_fallback(kernel, machine)
    return fallback if not check(kernel, fallback, machine) else Schedule.naive(kernel)


schedule = hand_schedule  # the name the solver's fallback looks for


def plain_schedule(kernel: Kernel, machine) -> Schedule:
    """The hand rules' loop nest (on a GPU: plain SIMT, no staging or tensor core)."""
    return gpu_plain(kernel, machine) if machine.is_simt else hand_schedule(kernel, machine)


SMALL_POINTS = 1 << 18  # below this many loop-nest points, waking a second core costs more than it saves


def cpu(k: Kernel, m) -> Schedule:
    """The CPU rule for the kernel's class (may be illegal only in corner cases; see hand_schedule)."""
    if k.kind in ("gemm", "conv"): s = _cpu_tile(k, m)
    elif k.kind == "reduce": s = _cpu_reduce(k, m)
    elif k.kind == "row": s = _cpu_rows(k, m)
    else: s = _cpu_elementwise(k, m)
    return replace(s, workers=1) if k.points < SMALL_POINTS else s


def load_strides(kernel: Kernel, axis: int) -> set[int | None]:
    """Strides of every load's index along ``axis`` (None: irregular). A mask that moves
    along the axis is fine: the cpu backend renders a masked vector load."""
    from ..ir import dtype as dt
    from ..ir.node import const, substitute, var
    v = var(axis, kernel.axes[axis].size)
    out: set[int | None] = set()
    for ld in kernel.loads:
        if v not in ld.toposort():
            out.add(0); continue  # noqa: E702
        if kernel.axes[axis].size < 2:
            out.add(None); continue  # noqa: E702
        d = substitute(ld.src[0], {v: const(1, dt.int32)}) - substitute(ld.src[0], {v: const(0, dt.int32)})
        out.add(int(d.arg) if d.op is Ops.CONST else None)
    return out


def cpu_lanes(machine) -> int:
    """fp32 SIMD lanes (fp16/bf16/int compute in 32-bit on the CPU too)."""
    return max(1, min(16, machine.simd_bytes // 4))


def _divisor(n: int, options) -> int:
    return next((c for c in options if c <= n and n % c == 0), 1)


def _vector_ok(k: Kernel, axis: int | None) -> bool:
    return axis is not None and load_strides(k, axis) <= {0, 1}


def _chunks(size: int, inner: int, workers: int, loop_pref: int = 1) -> tuple[Split, ...]:
    """``size`` = GRID x LOOP x UPCAST ``inner`` (inner divides size); the loop as large as
    ``loop_pref`` allows while GRID keeps >= 2 chunks per worker (when there are enough)."""
    n = size // inner
    loop = 1
    for c in range(min(loop_pref, n), 0, -1):
        if n % c == 0 and n // c >= min(n, 2 * workers):
            loop = c
            break
    parts = [(G, n // loop), (L, loop), (U, inner)]
    return tuple(Split(lv, s) for lv, s in parts if s > 1) or (Split(L, 1),)


def _no_grid(sp: tuple[Split, ...]) -> tuple[Split, ...]:
    """The same pieces with GRID and LOOP merged into one LOOP."""
    loops = math.prod(p.size for p in sp if p.level in (G, L))
    rest = tuple(p for p in sp if p.level not in (G, L))
    return ((Split(L, loops),) if loops > 1 else ()) + rest or (Split(L, 1),)


def _cpu_elementwise(k: Kernel, m) -> Schedule:
    w, nl = m.cores, cpu_lanes(m)
    va = vector_axis(k)
    splits: dict[int, tuple[Split, ...]] = {}
    vec = 1
    outer = [a for a in k.output_axes if a != va]
    if va is not None:
        n = k.axes[va].size
        vec = _divisor(n, [nl, 8, 4]) if _vector_ok(k, va) else 1
        vec = vec if vec > 1 else 1
        up = vec * _divisor(n // vec, [4, 2]) if vec > 1 else _divisor(n, [4, 2])
        splits[va] = _chunks(n, up, w, loop_pref=n)
        if outer: splits[va] = _no_grid(splits[va])
    for i, a in enumerate(outer):  # the outermost axis over the cores, the rest serial
        splits[a] = (Split(G if i == 0 else L, k.axes[a].size),)
    return Schedule(tuple(splits[a] for a in range(len(k.axes))), vector=vec, workers=w)


def _cpu_reduce(k: Kernel, m) -> Schedule:
    w, nl = m.cores, cpu_lanes(m)
    va = vector_axis(k)
    splits: dict[int, tuple[Split, ...]] = {}
    vec, tile_axis, tile = 1, None, 1
    if _vector_ok(k, va) and k.axes[va].size % nl == 0:
        vec, tile_axis = nl, va
        tile = nl * _divisor(k.axes[va].size // nl, [2])
    elif k.output_axes:  # independent scalar accumulators break the add chain
        tile_axis = max(k.output_axes, key=lambda a: (k.axes[a].size, a))
        tile = _divisor(k.axes[tile_axis].size, [8, 4, 2])
    outs = [a for a in k.output_axes if a != tile_axis]
    if tile_axis is not None:
        splits[tile_axis] = _chunks(k.axes[tile_axis].size, tile, w, loop_pref=k.axes[tile_axis].size)
        if outs: splits[tile_axis] = _no_grid(splits[tile_axis])
    for i, a in enumerate(outs):
        splits[a] = (Split(G if i == 0 else L, k.axes[a].size),)
    for j, a in enumerate(k.reduce_axes):
        n = k.axes[a].size
        u = _divisor(n, [4, 2]) if j == len(k.reduce_axes) - 1 else 1
        splits[a] = tuple(Split(lv, s) for lv, s in ((L, n // u), (R, u)) if s > 1) or (Split(L, 1),)
    order = tuple(k.output_axes) + tuple(k.reduce_axes)
    return Schedule(tuple(splits[a] for a in range(len(k.axes))), order=order, vector=vec, workers=w)


def _cpu_rows(k: Kernel, m) -> Schedule:
    """Rows over the cores; along a contiguous row axis, vectors (two a step, so two
    accumulators per pass); along a strided one, rows in the vector lanes instead."""
    w, nl = m.cores, cpu_lanes(m)
    va = vector_axis(k)
    splits: dict[int, tuple[Split, ...]] = {a: (Split(L, k.axes[a].size),) for a in k.row_axes}
    vec = nl if _vector_ok(k, va) and k.axes[va].size % nl == 0 else 8 if _vector_ok(k, va) and k.axes[va].size % 8 == 0 else 1
    outs = [a for a in k.output_axes if a not in k.row_axes]
    if va in k.row_axes:
        n = k.axes[va].size
        up = vec * _divisor(n // vec, [2]) if vec > 1 else _divisor(n, [4, 2])
        splits[va] = tuple(Split(lv, s) for lv, s in ((L, n // up), (U, up)) if s > 1) or (Split(L, 1),)
    elif va is not None and vec > 1:  # rows side by side in the lanes
        splits[va] = _chunks(k.axes[va].size, vec, w, loop_pref=k.axes[va].size)
        outs = [a for a in outs if a != va]
        if outs: splits[va] = _no_grid(splits[va])
    else:
        vec = 1
    for i, a in enumerate(outs):
        splits[a] = (Split(G if i == 0 else L, k.axes[a].size),)
    return Schedule(tuple(splits[a] for a in range(len(k.axes))), vector=vec, workers=w)


COLUMN_VECTORS = [2, 4, 3, 7, 5, 6]  # vectors per tile row, first that divides (2: 8 x 32 on AVX-512 gemms)


def _cpu_tile(k: Kernel, m) -> Schedule:
    """Register tile rows x columns; column loop outside the row loop; reduction innermost."""
    w, nl = m.cores, cpu_lanes(m)
    va = vector_axis(k)
    splits: dict[int, tuple[Split, ...]] = {}
    vec, ncols = 1, 1
    if va is not None:
        n = k.axes[va].size
        if _vector_ok(k, va) and n % nl == 0:
            vec, ncols = nl, nl * _divisor(n // nl, COLUMN_VECTORS)
        elif _vector_ok(k, va) and n % 8 == 0:
            vec, ncols = 8, 8 * _divisor(n // 8, COLUMN_VECTORS)
        else:
            ncols = _divisor(n, [8, 4, 2])
        splits[va] = tuple(Split(lv, s) for lv, s in ((L, n // ncols), (U, ncols)) if s > 1) or (Split(L, 1),)
    outs = [a for a in k.output_axes if a != va]
    # rows: an output axis some load does not depend on (that operand is reused), largest first
    reuse = [a for a in outs if 0 in load_strides(k, a)]
    rows = max(reuse or outs, key=lambda a: (k.axes[a].size, a), default=None)
    others = [a for a in outs if a != rows]
    if rows is not None:
        cap = max(1, m.max_upcast // max(1, ncols))
        rtile = _divisor(k.axes[rows].size, [c for c in (8, 6, 4, 3, 2) if c <= cap])
        splits[rows] = _chunks(k.axes[rows].size, rtile, 1 if others else w, loop_pref=4)
    for a in others:  # batch-like axes over the grid
        splits[a] = (Split(G, k.axes[a].size),)
    for a in k.reduce_axes:
        splits[a] = (Split(L, k.axes[a].size),)
    order = tuple(others) + ((va,) if va is not None else ()) + ((rows,) if rows is not None else ()) + tuple(k.reduce_axes)
    return Schedule(tuple(splits[a] for a in range(len(k.axes))), order=order, vector=vec, workers=w)


def _cpu_fallback(k: Kernel, m) -> Schedule:
    """Plain loops with the outermost output axis over the cores."""
    sp = [(Split(L, a.size),) for a in k.axes]
    if k.output_axes:
        sp[k.output_axes[0]] = (Split(G, k.axes[k.output_axes[0]].size),)
    return Schedule(tuple(sp), workers=m.cores)


__all__ = ["hand_schedule", "schedule", "cpu", "gpu"]
