"""TMA (``cp.async.bulk.tensor``, sm_90a) copies of wgmma operand tiles: which operands a
tensor map can copy, the map's geometry and the boxes of one stage, written once for the
legality check, the lowering, the emulator and the CUDA runtime.

A staged wgmma operand with ``Staging.tma`` is copied per pipeline stage by one thread:
one box per panel of the stage's layout (ir/wgmma.py: the tile, ``rows x width`` in its
global orientation, cut into panels of ``P = min(width, 64)`` columns, 128/64/32-byte
rows, 1024-byte aligned), box ``(P, rows, 1, ...)`` at ``(col0 + j P, row0, batch ...)``,
written to panel j with the TMA swizzle of span ``2 P`` bytes (``CU_TENSOR_MAP_SWIZZLE_128B
/ 64B / 32B``): 16-byte chunk c of box row r lands at chunk ``c ^ (r's address bits 7..)``,
the same XOR of shared address bits [4, 7) by bits [7, 10) the wgmma descriptors read
(every panel starts on a multiple of the pattern's repeat, 8 rows, so the swizzle of the
absolute address and of the offset in the box agree). Elements of a box outside the
tensor (a padded M or N tile) read as zeros; the stage still receives every box byte, so
a stage's transaction count is the sum of its boxes' bytes.

Tensor view of an operand (``view``): its LOAD reads input ``load.arg`` at an affine form of
the kernel's axes (sums of constants and axes times constants: no division or modulo).
Axes stepping the index equally share a dimension whose coordinate is their sum (a
convolution's output row and filter row: ``y + ky``) plus a constant; the load's mask, if
any, must be exactly ``0 <= coordinate < size`` of such dimensions (a convolution's
padding), which TMA's zero fill outside the tensor reproduces, and fixes the constant (``-pad``).
Dimensions, innermost first: the tile's contiguous axis (stride 1: K for a K-major operand,
M or N for an MN-major one), then the others by stride (the tile's row axes, K, N or a
flattened M tile's, landing densely, must come inner -> outer; batch and window axes have
boxes of 1 and may sit anywhere); each dimension spans
the coordinates its axes reach (or the mask allows), every stride but the first a
multiple of 8 elements (16 bytes, below 2^40 bytes). A box is one panel: ``P`` along the
contiguous axis, each row axis' tile extent (a flattened MN-major M tile: one outer row a
panel), 1 elsewhere; its coordinates are the panel's first element's axis values summed
per dimension plus the constants (``boxes``), negative or past the end where the tile
pads or the window overhangs (zeros). Only the tile's own axis may move along the
contiguous dimension (by whole panels): a box starting off a 16-byte boundary there (an
NCHW input's filter column, ``x + kx - 1``) faulted on the H100 (illegal instruction,
bench/results/h100-2026-12-06).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import tensorcore as tcm
from . import wgmma as wg
from .node import TRUE, Node, Ops, axis_stride, const, substitute
from .program import TensorMap

MAX_BOX = 256            # elements a box spans per dimension
MAX_RANK = 5
AFFINE = {Ops.ADD, Ops.MUL, Ops.VAR, Ops.CONST}
ALIGN = 16               # bytes: global address and strides


@dataclass(frozen=True)
class View:
    """An operand's tensor map, per dimension the kernel axes whose sum (plus ``offsets``)
    is its coordinate."""
    map: TensorMap
    dims: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]


def swizzle_span(width: int) -> int:
    """Bytes of the TMA swizzle span of a tile with rows of ``width`` 16-bit elements (the
    panel's row: the wgmma layout's swizzle width)."""
    return 2 * wg.panel(width)


def affine(expr: Node, kernel) -> tuple[dict[int, int], int] | None:
    """(coefficient per axis, constant) of an affine index expression, or None."""
    if any(n.op not in AFFINE for n in expr.toposort()): return None
    used = sorted({n.arg[0] for n in expr.toposort() if n.op is Ops.VAR})
    coef = {a: axis_stride(expr, a, kernel.axes[a].size) for a in used}
    if any(c is None for c in coef.values()): return None
    c0 = substitute(expr, {n: const(0, n.dtype) for n in expr.toposort() if n.op is Ops.VAR})
    return ({a: c for a, c in coef.items() if c}, int(c0.arg)) if c0.op is Ops.CONST else None


def mask_bounds(valid: Node, kernel) -> dict[frozenset, list[int]] | str:
    """The mask as ``lo <= sum of multiplier x axis < hi`` per such sum ({frozenset of
    (axis, multiplier): [lo, hi]}, None where unbounded), or why not."""
    terms, out = [valid], {}
    while terms:
        t = terms.pop()
        if t is TRUE: continue
        if t.op is Ops.AND: terms += t.src; continue  # noqa: E702
        if t.op is not Ops.CMPLT: return "its mask is not a conjunction of bounds"
        lhs, rhs = (affine(x, kernel) for x in t.src)
        if lhs is None or rhs is None or (lhs[0] and rhs[0]) or not (lhs[0] or rhs[0]): return "its mask is not bounds of axis sums"
        expr, c = (lhs, rhs[1]) if lhs[0] else (rhs, lhs[1])
        b = out.setdefault(frozenset(expr[0].items()), [None, None])
        if lhs[0]: b[1] = c - expr[1]               # sum + e < c  ->  sum < c - e
        else: b[0] = c - expr[1] + 1                # c < sum + e  ->  sum >= c - e + 1
    return out


def view(kernel, m: tcm.Match, t: tcm.Tiles, op: tcm.Operand) -> View | str:
    """The tensor map of operand ``op`` of tiles ``t``, or why TMA cannot copy it."""
    idx, valid = op.load.src
    aff = affine(idx, kernel)
    if aff is None: return "its index is not an affine form of the axes"
    coef, origin = aff
    if any(c < 0 for c in coef.values()): return "an axis steps its index backwards"
    bounds = mask_bounds(valid, kernel)
    if isinstance(bounds, str): return bounds
    if any(m != 1 for key in bounds for _, m in key): return "its mask bounds a scaled axis"
    bounds = {frozenset(a for a, _ in key): b for key, b in bounds.items()}
    outer = m.m_axes if op is m.a else (m.n,)
    rows_axes, inner = ((m.k,), outer[-1]) if op.k_major else (tuple(reversed(outer)), m.k)
    if op.k_major and len(outer) > 1 and (t.m_ext[-1] % wg.panel(t.bm)): return "a panel spans rows of the flattened M tile"
    # axes stepping the index equally share a dimension; the tile's axes one each
    by_stride: dict[int, list[int]] = {}
    for a, c in coef.items(): by_stride.setdefault(c, []).append(a)
    tile_axes = {m.k, *outer}
    for st_, axes in by_stride.items():
        if len([a for a in axes if a in tile_axes]) > 1: return f"axes {axes} step its index by the same {st_}"
    dim_of = {a: st_ for st_, axes in by_stride.items() for a in axes}
    for a in (m.k, *outer):
        if a not in dim_of: return f"axis {a} does not move the index"
    # innermost first, the rest by stride (maps with strides stepping outward, as the driver's
    # examples build them)
    order = [dim_of[inner], *sorted(st_ for st_ in by_stride if st_ != dim_of[inner])]
    if order[0] != 1: return f"axis {inner} (the tile's rows) is not contiguous in memory"
    # a box starting off a 16-byte boundary along the contiguous dimension (an NCHW input's
    # filter column) faulted (CUDA_ERROR_ILLEGAL_INSTRUCTION) in every variant on the H100
    if set(by_stride[1]) != {inner}: return f"axes {sorted(set(by_stride[1]) - {inner})} move its boxes along the contiguous dimension by single elements"
    if len(order) > MAX_RANK: return f"{len(order)} dimensions (TMA has at most {MAX_RANK})"
    # each dimension's extent and constant: the mask's bounds where it has them, else what its axes reach
    dims, offsets, left = [], [], dict(bounds)
    for st_ in order:
        axes = frozenset(by_stride[st_])
        lo, hi = left.pop(axes, (None, None))
        reach = sum(kernel.axes[a].size - 1 for a in axes) + 1
        lo, hi = lo or 0, reach if hi is None else hi
        dims.append(hi - lo); offsets.append(-lo)
    if left: return "its mask bounds axes that do not form one dimension"
    base = origin - sum(o * st_ for o, st_ in zip(offsets, order))   # element (0, ..., 0) of the map
    if any(n < 1 for n in dims): return "its mask leaves nothing"
    if base < 0 or base + sum((n - 1) * st_ for n, st_ in zip(dims, order)) >= kernel.inputs[op.input].size:
        return "its tensor reaches outside the input"
    isz = m.dtype.itemsize
    for st_ in order[1:]:
        if (st_ * isz) % ALIGN or st_ * isz >= 1 << 40: return f"a dimension strides {st_ * isz} bytes (a multiple of {ALIGN} below 2^40 is needed)"
    if (base * isz) % ALIGN: return "its first element is not 16-byte aligned"
    if (offsets[0] * isz) % ALIGN: return "its boxes start off 16-byte boundaries along the contiguous dimension"
    rows, width = tcm.tile_shape(op, t.bm if op is m.a else t.bn, t.bk)
    p = wg.panel(width)
    ext = {m.k: t.bk, m.n: t.bn, **dict(zip(m.m_axes, t.m_ext))}
    box_of = {a: ext[a] for a in rows_axes}
    box_of[inner] = p
    if op.k_major and len(outer) > 1: box_of.update({a: 1 for a in outer[:-1]})   # one outer row a panel
    box = tuple(max([box_of.get(a, 1) for a in by_stride[st_]]) for st_ in order)
    # a box lands densely, dimension 0 fastest: the tile's rows (those of more than one) must step outward in order
    rows_order = [order.index(dim_of[a]) for a in rows_axes if box_of[a] > 1]
    if rows_order != sorted(rows_order): return "its tile's row axes step memory out of order"
    if max(box) > MAX_BOX: return f"a box of {max(box)} rows (at most {MAX_BOX} along a dimension)"
    return View(TensorMap(op.input, base, tuple(dims), tuple(order), box, swizzle_span(width)),
                tuple(tuple(sorted(by_stride[st_])) for st_ in order), tuple(offsets))


def check(kernel, m: tcm.Match, t: tcm.Tiles, op: tcm.Operand) -> list[str]:
    """Why operand ``op`` of a wgmma schedule cannot be copied by TMA (empty: it can)."""
    v = view(kernel, m, t, op)
    if isinstance(v, str): return [f"input {op.input}: TMA copy impossible: {v}"]
    if v.map.swizzle not in (32, 64, 128): return [f"input {op.input}: TMA has no swizzle for {v.map.box[0]}-element rows"]
    return []


def boxes(v: View, rows: int, width: int, at) -> list[tuple[int, tuple[Node, ...]]]:
    """(element offset in the stage, coordinates) of each box copying a tile of ``rows x
    width``: box j is panel j, ``at(j)`` the axis values ({axis: Node}) of its first element."""
    p = v.map.box[0]
    out = []
    for j in range(width // p):
        a = at(j)
        out.append((j * rows * p, tuple(sum((a[x] for x in axes[1:]), a[axes[0]]) + o for axes, o in zip(v.dims, v.offsets))))
    return out
