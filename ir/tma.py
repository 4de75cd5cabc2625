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

Tensor view of an operand (``view``): its LOAD reads input ``load.arg`` at an index that
is an affine form of the kernel's axes (sums of constants and axes times constants: no
division, modulo or mask) whose origin (all axes 0) is a multiple of 8 elements (a
16-byte aligned global address). Dimensions, innermost first: the tile's contiguous axis
(stride 1: K for a K-major operand, M or N for an MN-major one), the tile's other axis,
then every batch axis the load reads; each dimension is the axis' full size and every
stride but the first a multiple of 8 elements (16 bytes, below 2^40 bytes).
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
    """An operand's tensor map and, per dimension, the kernel axis it runs along."""
    map: TensorMap
    axes: tuple[int, ...]


def swizzle_span(width: int) -> int:
    """Bytes of the TMA swizzle span of a tile with rows of ``width`` 16-bit elements (the
    panel's row: the wgmma layout's swizzle width)."""
    return 2 * wg.panel(width)


def view(kernel, m: tcm.Match, op: tcm.Operand, rows: int, width: int) -> View | str:
    """The tensor map of operand ``op`` (tile ``rows x width``), or why TMA cannot copy it."""
    idx, valid = op.load.src
    if valid is not TRUE: return "its load is masked (TMA copies whole boxes, zeros only outside the tensor)"
    if m.window or m.m_outer: return "a convolution's windowed or flattened tile is not a box of one tensor"
    if any(n.op not in AFFINE for n in idx.toposort()): return "its index is not an affine form of the axes"
    used = sorted({n.arg[0] for n in idx.toposort() if n.op is Ops.VAR})
    stride = {a: axis_stride(idx, a, kernel.axes[a].size) for a in used}
    inner, second = (op.outer, m.k) if op.k_major else (m.k, op.outer)
    if stride.get(inner) != 1: return f"axis {inner} (the tile's rows) is not contiguous in memory"
    if not stride.get(second): return f"axis {second} does not move the index"
    batch = [a for a in used if a not in (inner, second)]
    if any(a not in m.batch for a in batch): return "it reads axes other than the tile's and the batch axes"
    axes = (inner, second, *batch)
    if len(axes) > MAX_RANK: return f"{len(axes)} dimensions (TMA has at most {MAX_RANK})"
    isz = m.dtype.itemsize
    strides = tuple(stride[a] for a in axes)
    for a, st in zip(axes[1:], strides[1:]):
        if st < 0 or (st * isz) % ALIGN or st * isz >= 1 << 40: return f"axis {a} strides {st * isz} bytes (a multiple of {ALIGN} below 2^40 is needed)"
    origin = substitute(idx, {n: const(0, n.dtype) for n in idx.toposort() if n.op is Ops.VAR})
    if origin.op is not Ops.CONST or (origin.arg * isz) % ALIGN: return "its first element is not 16-byte aligned"
    p = wg.panel(width)
    box = (p, rows, *(1 for _ in batch))
    if rows > MAX_BOX: return f"a box of {rows} rows (at most {MAX_BOX})"
    return View(TensorMap(op.input, int(origin.arg), tuple(kernel.axes[a].size for a in axes), strides, box, swizzle_span(width)),
                axes)


def check(kernel, m: tcm.Match, op: tcm.Operand, rows: int, width: int) -> list[str]:
    """Why operand ``op`` of a wgmma schedule cannot be copied by TMA (empty: it can)."""
    v = view(kernel, m, op, rows, width)
    if isinstance(v, str): return [f"input {op.input}: TMA copy impossible: {v}"]
    if swizzle_span(width) not in (32, 64, 128): return [f"input {op.input}: TMA has no swizzle for {width}-element rows"]
    return []


def boxes(v: View, rows: int, width: int, row0: Node, col0: Node, batch: dict[int, Node]) -> list[tuple[int, tuple[Node, ...]]]:
    """(element offset in the stage, coordinates) of each box copying the tile whose first
    row/column sit at ``row0``/``col0`` of the tile's axes (rows: the second dimension,
    columns: the first), batch axes at ``batch``."""
    p = v.map.box[0]
    return [(j * rows * p, (col0 + j * p, row0, *(batch[a] for a in v.axes[2:]))) for j in range(width // p)]
