"""Tensor-core GEMM geometry, written once for the legality check, the lowering, the
emulator, the CUDA renderer and the bank-conflict solver.

Instruction: ``mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32`` (one
warp; fp32 accumulators), fragments loaded from shared memory with ``ldmatrix``.

Schedule convention (``Schedule.tensor_core`` set; see ``tiles``):
- M axis: ``GRID gm x THREAD wm x UPCAST tm`` (tm a multiple of 16: the rows one warp owns),
- N axis: ``GRID gn x THREAD wn x UPCAST tn`` (tn a multiple of 16: pairs of n8 tiles),
- K axis: ``LOOP kt x UNROLL bk`` (bk a multiple of 16: the K depth staged per step),
- any other output axis (batch): GRID only. Sizes divide exactly (no padding).
THREAD counts *warps* here (``Schedule.threads()`` = 32 x warps); the 32 lanes of a warp
are the instruction's. Block tile BM = wm*tm, BN = wn*tn.

Shared layout of a staged tile (``Staging.pad``, ``.swizzle``, ``.shift``): the tile is
stored in its global orientation, rows of ``width`` elements (the contiguous axis), in
16-byte units (8 elements). Logical unit ``u = row * width/8 + unit`` is swizzled to
``u ^ ((u >> shift) & (2**swizzle - 1))`` (a bijection when ``shift >= swizzle``) and
placed at element ``(u' // upr) * (width + pad) + (u' % upr) * 8`` (upr = width/8).

Lane layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16", "ldmatrix"):
groupID g = lane // 4, t = lane % 4;
- A (16x16) a0..a7: row g + 8*((i//2)%2), col 2t + i%2 + 8*(i//4);
- B (16x8)  b0..b3: row (k) 2t + i%2 + 8*(i//2), col (n) g;
- C/D (16x8) c0..c3: row g + 8*(i//2), col 2t + i%2;
- ldmatrix .x4: lanes 8j..8j+7 address the 8 rows (16 bytes each) of matrix j; lane l
  receives in register j the elements (row l//4, cols 2(l%4), 2(l%4)+1) of matrix j, or
  with ``.trans`` (rows 2(l%4), 2(l%4)+1 at col l//4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import dtype as dt
from .node import Node, Ops, axis_stride

INSTRS = {"mma.m16n8k16.f16.f32": dt.float16, "mma.m16n8k16.bf16.f32": dt.bfloat16}
MMA_M, MMA_N, MMA_K = 16, 8, 16
UNIT = 8            # elements per 16-byte unit (16-bit operands)
WARP = 32
# x4 fragment matrices as (outer offset, k offset): A's a0..a7 and two n8 tiles of B
A_MATS = ((0, 0), (8, 0), (0, 8), (8, 8))
B_MATS = ((0, 0), (0, 8), (8, 0), (8, 8))


@dataclass(frozen=True)
class Operand:
    """One GEMM operand as the kernel reads it."""
    input: int          # kernel input slot
    load: Node          # the LOAD node
    outer: int          # the M (for A) or N (for B) axis
    k_major: bool       # True: contiguous along the outer axis (stored [k][outer]); False: along K


@dataclass(frozen=True)
class Match:
    m: int
    n: int
    k: int
    a: Operand
    b: Operand
    dtype: dt.DType
    batch: tuple[int, ...]   # other output axes


def match(kernel, m_axis: int | None = None, n_axis: int | None = None) -> Match | "str":
    """The GEMM structure of ``kernel`` (sum over one K axis of A*B, 16-bit operands each
    contiguous along K or along its outer axis), or why not (a string)."""
    red = kernel.reduce
    if red is None or red.arg[0] != "sum" or len(kernel.reduce_axes) != 1: return "not a sum over one reduce axis"
    if red.dtype is not dt.float32: return f"accumulates in {red.dtype.name}, tensor cores accumulate in float32"
    x = red.src[0]
    if x.op is not Ops.MUL: return "the reduced value is not a product"
    loads = []
    for f in x.src:
        while f.op is Ops.CAST: f = f.src[0]
        if f.op is not Ops.LOAD: return "a factor is not a plain load"
        loads.append(f)
    if {ld.dtype for ld in loads} not in ({dt.float16}, {dt.bfloat16}): return "operands are not both fp16 or both bf16"
    if any(ld.src[1].op is not Ops.CONST or not ld.src[1].arg for ld in loads): return "masked operand loads"
    k = kernel.reduce_axes[0]
    used = [{v.arg[0] for v in ld.toposort() if v.op is Ops.VAR} for ld in loads]
    outs = kernel.output_axes
    ops = []
    for ld, u in zip(loads, used):
        own = [a for a in outs if a in u and all(a not in v for v in used if v is not u)]
        if k not in u or len(own) != 1: return "an operand does not read exactly one own output axis and K"
        o = own[0]
        so, sk = axis_stride(ld.src[0], o, kernel.axes[o].size), axis_stride(ld.src[0], k, kernel.axes[k].size)
        if sk == 1: ops.append(Operand(ld.arg, ld, o, False))
        elif so == 1: ops.append(Operand(ld.arg, ld, o, True))
        else: return "an operand is contiguous along neither K nor its own axis"
    a, b = ops
    if m_axis is not None and a.outer != m_axis: a, b = b, a
    if (m_axis is not None and a.outer != m_axis) or (n_axis is not None and b.outer != n_axis):
        return "the M/N axes do not match the operands"
    if axis_stride(kernel.store, b.outer, kernel.axes[b.outer].size) != 1 and m_axis is None \
            and axis_stride(kernel.store, a.outer, kernel.axes[a.outer].size) == 1:
        a, b = b, a  # N = the output's contiguous axis
    batch = tuple(x for x in outs if x not in (a.outer, b.outer))
    return Match(a.outer, b.outer, k, a, b, loads[0].dtype, batch)


@dataclass(frozen=True)
class Tiles:
    gm: int; wm: int; tm: int  # noqa: E702
    gn: int; wn: int; tn: int  # noqa: E702
    kt: int; bk: int           # noqa: E702

    @property
    def bm(self) -> int: return self.wm * self.tm
    @property
    def bn(self) -> int: return self.wn * self.tn
    @property
    def warps(self) -> int: return self.wm * self.wn
    @property
    def threads(self) -> int: return WARP * self.warps


def tiles(kernel, s) -> Tiles | str:
    """The tile sizes of a tensor-core schedule (see the module docstring), or why not."""
    from .schedule import Level
    tc = s.tensor_core

    def pieces(axis: int, allowed: tuple) -> dict | str:
        got = {p.level: p.size for p in s.splits[axis]}
        if any(lv not in allowed for lv in got if got[lv] > 1): return f"axis {axis}: tensor-core axes use {[lv.value for lv in allowed]} only"
        if math.prod(got.values()) != kernel.axes[axis].size: return f"axis {axis}: tensor-core tiles must divide the axis exactly"
        return got
    G, T, U, L, R = Level.GRID, Level.THREAD, Level.UPCAST, Level.LOOP, Level.UNROLL
    pm, pn, pk = pieces(tc.m_axis, (G, T, U)), pieces(tc.n_axis, (G, T, U)), pieces(tc.k_axis, (L, R))
    for p in (pm, pn, pk):
        if isinstance(p, str): return p
    t = Tiles(pm.get(G, 1), pm.get(T, 1), pm.get(U, 1), pn.get(G, 1), pn.get(T, 1), pn.get(U, 1), pk.get(L, 1), pk.get(R, 1))
    if t.tm % MMA_M or t.tn % 16 or t.bk % MMA_K: return f"warp tile {t.tm}x{t.tn}x{t.bk} is not a multiple of 16x16x16"
    return t


# ---- shared-memory layout ---------------------------------------------------------
def xor(a, b):
    """``a ^ b`` for ints and index Nodes."""
    if isinstance(a, Node) or isinstance(b, Node):
        from .node import alu, as_node
        return alu(Ops.XOR, as_node(a), as_node(b))
    return a ^ b


def smem_offset(row, unit, width: int, pad: int, swizzle: int, shift: int):
    """Element offset of 16-byte unit ``unit`` of tile row ``row`` (ints or index Nodes)."""
    upr = width // UNIT
    u = row * upr + unit
    if swizzle: u = xor(u, (u // (1 << shift)) % (1 << swizzle))
    return (u // upr) * (width + pad) + (u % upr) * UNIT


def tile_shape(op: Operand, outer_tile: int, bk: int) -> tuple[int, int]:
    """(rows, width) of an operand's staged tile in its global orientation."""
    return (bk, outer_tile) if op.k_major else (outer_tile, bk)


def copy_coords(q, width: int):
    """Tile (row, unit) of 16-byte copy number ``q`` (consecutive threads: consecutive units)."""
    upr = width // UNIT
    return q // upr, q % upr


def frag_coords(lane, mats, outer0, k0, k_major: bool):
    """Tile (row, unit) that ``lane`` addresses in an ldmatrix.x4 of the fragment at
    (outer0, k0); the matrices ``mats`` as (outer, k) offsets."""
    j, r = lane // 8, lane % 8
    if isinstance(lane, int):
        oo, ko = mats[j]
    else:  # index Node: pick the offsets arithmetically (mats are 0/8 patterns)
        oo, ko = _mat_offset(j, mats, 0), _mat_offset(j, mats, 1)
    if k_major: return k0 + ko + r, (outer0 + oo) // UNIT
    return outer0 + oo + r, (k0 + ko) // UNIT


def _mat_offset(j: Node, mats, which: int):
    vals = [m[which] for m in mats]
    if vals == [0, 8, 0, 8]: return (j % 2) * 8
    if vals == [0, 0, 8, 8]: return (j // 2) * 8
    raise ValueError(f"unsupported fragment matrix order {mats}")
