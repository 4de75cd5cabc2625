"""Tensor-core GEMM geometry, written once for the legality check, the lowering, the
emulator, the CUDA renderer and the bank-conflict solver.

Instruction: ``mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32`` (one
warp; fp32 accumulators), fragments loaded from shared memory with ``ldmatrix``.

Schedule convention (``Schedule.tensor_core`` set; see ``tiles``):
- M axis: ``GRID gm x THREAD wm x UPCAST tm`` (tm a multiple of 16: the rows one warp owns),
- N axis: ``GRID gn x THREAD wn x UPCAST tn`` (tn a multiple of 16: pairs of n8 tiles),
- K axis: ``LOOP kt x UNROLL bk`` (bk a multiple of 16: the K depth staged per step),
- other reduce axes (the window of a convolution as implicit GEMM): LOOP only; the
  pipeline runs over ``steps = window points x kt`` (window outer, K tiles inner),
- any other output axis (batch): GRID only, except ``TensorCore.m_outer`` axes: more M
  axes outside the M axis, ``GRID x THREAD x UPCAST`` each; the block's M tile is their
  flattened product, row ``r`` the mixed-radix number over the axes' extents (outer ->
  inner), so a conv's (image, row, column) tile of 2x8x8 pixels is 128 rows without
  padding 56-pixel rows; the warps (THREAD pieces, outer axes' more significant) take
  consecutive row ranges, so no axis with THREAD > 1 lies inside one with UPCAST > 1 (2
  rows x 64 columns for 8 warps: THREAD 2 x 4, UPCAST 1 x 16);
M and N may be padded (``gm = ceil(M / BM)``): copies of rows past the end zero-fill and
the epilogue's stores are guarded; K divides exactly.
THREAD counts *warps* here (``Schedule.threads(warp)`` = the target's warp x warps); a
warp's lanes are the instruction's: the fragment layouts below hold for a 32-lane warp
(``LANE_GROUPS`` groups of ``GROUP_LANES``), so ``check`` refuses any other warp size. Block tile BM = wm*tm, BN = wn*tn.

Implicit GEMM: a convolution's input read through windowed indices (``y + ky - 1``) with
a padding mask is operand A (M: an output pixel axis, its other pixel axes batch), the
filter is B (N: output channels), K the input channels. A copy honours the load's mask
(zero-fill). A copy is 16 bytes (``Staging.vector`` = 8) where the operand is contiguous
and 16-byte aligned along its tile rows (NHWC: channels), else one element (NCHW).

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

import functools
import math
from dataclasses import dataclass

from . import dtype as dt
from .node import Node, Ops, axis_stride, const, substitute

INSTRS = {"mma.m16n8k16.f16.f32": dt.float16, "mma.m16n8k16.bf16.f32": dt.bfloat16}
MMA_M, MMA_N, MMA_K = 16, 8, 16
UNIT = 8            # elements per 16-byte unit (16-bit operands)
SA, SB = "sa", "sb"  # the shared tiles of operands A and B (names of their buffers in a lowered program)
LANE_GROUPS, GROUP_LANES = 8, 4   # mma fragments: groupID = lane // 4 (8 groups), threadID_in_group = lane % 4
# x4 fragment matrices as (outer offset, k offset): A's a0..a7 and two n8 tiles of B
A_MATS = ((0, 0), (8, 0), (0, 8), (8, 8))
B_MATS = ((0, 0), (0, 8), (8, 0), (8, 8))


@dataclass(frozen=True)
class Operand:
    """One GEMM operand as the kernel reads it."""
    input: int          # kernel input slot
    load: Node          # the LOAD node (its valid, e.g. a convolution's padding, guards the copies)
    outer: int          # the M (for A) or N (for B) axis
    k_major: bool       # True: contiguous along the outer axis (stored [k][outer]); False: along K (or neither)
    vec: int = UNIT     # widest legal global->shared copy in elements: UNIT (16 bytes, aligned) or 1


@dataclass(frozen=True)
class Match:
    m: int
    n: int
    k: int
    a: Operand
    b: Operand
    dtype: dt.DType
    batch: tuple[int, ...]       # other output axes (GRID only)
    window: tuple[int, ...] = ()  # other reduce axes (a convolution's filter window): serial loops around K
    m_outer: tuple[int, ...] = ()  # more output axes of A flattened into M outside ``m`` (outer -> inner)

    @property
    def m_axes(self) -> tuple[int, ...]:
        """Every M axis, outer -> inner (the flattened M tile's mixed radix)."""
        return (*self.m_outer, self.m)


def match(kernel, m_axis: int | None = None, n_axis: int | None = None, k_axis: int | None = None,
          m_outer: tuple[int, ...] = (), simt: bool = False) -> Match | str:
    """The (implicit) GEMM structure of ``kernel``, or why not (a string): a float32 sum of
    a product of two 16-bit loads. K is a reduce axis both operands read (the one whose
    size is a multiple of 16, contiguous in an operand, largest); the other reduce axes
    are the window. Each operand's outer axis is one output axis only it reads (the
    given M/N axis, else the one it steps through most densely); its other own axes are
    batch, unless listed in ``m_outer`` (flattened into M outside the M axis). Loads may
    be masked (a convolution's padding): the copies honour the mask. ``simt``: the
    operands are both float32 instead (the shared-memory staged SIMT GEMM of
    ir/lower_staged.py; 16-byte copies are then 4 elements)."""
    return _match(kernel, m_axis, n_axis, k_axis, tuple(m_outer), simt)


def match_tc(kernel, tc) -> Match | str:
    """The match a ``TensorCore`` (ir/schedule.py) describes."""
    return _match(kernel, tc.m_axis, tc.n_axis, tc.k_axis, tc.m_outer)


@functools.lru_cache(maxsize=512)  # every check() of a schedule space asks again
def _match(kernel, m_axis: int | None, n_axis: int | None, k_axis: int | None, m_outer: tuple[int, ...],
           simt: bool = False) -> Match | str:
    red = kernel.reduce
    if red is None or red.arg[0] != "sum" or not kernel.reduce_axes: return "not a sum over reduce axes"
    if red.dtype is not dt.float32: return f"accumulates in {red.dtype.name}, tensor cores accumulate in float32"
    x = red.src[0]
    if x.op is not Ops.MUL: return "the reduced value is not a product"
    loads = []
    for f in x.src:
        while f.op is Ops.CAST: f = f.src[0]
        if f.op is not Ops.LOAD: return "a factor is not a plain load"
        loads.append(f)
    if simt and {ld.dtype for ld in loads} != {dt.float32}: return "operands are not both float32"
    if not simt and {ld.dtype for ld in loads} not in ({dt.float16}, {dt.bfloat16}): return "operands are not both fp16 or both bf16"
    used = [{v.arg[0] for v in ld.toposort() if v.op is Ops.VAR} for ld in loads]
    reds = kernel.reduce_axes
    if any(r not in used[0] | used[1] for r in reds): return "a reduce axis no operand reads"
    both = [r for r in reds if r in used[0] and r in used[1]]
    if k_axis is None:
        def score(r):
            size = kernel.axes[r].size
            dense = any(_stride(ld, r, kernel) == 1 for ld in loads)
            return (size % MMA_K == 0, dense, size)
        if not both: return "no reduce axis both operands read"
        k_axis = max(both, key=score)
    if k_axis not in both: return f"axis {k_axis} is not a reduce axis both operands read"
    outs = kernel.output_axes
    own = [[a for a in outs if a in u and a not in v] for u, v in ((used[0], used[1]), (used[1], used[0]))]
    if not own[0] or not own[1]: return "an operand reads no output axis of its own"
    ai = 0
    if m_axis is not None: ai = 0 if m_axis in own[0] else 1 if m_axis in own[1] else -1
    elif n_axis is not None: ai = 1 if n_axis in own[0] else 0 if n_axis in own[1] else -1
    if ai < 0: return "the M/N axes do not match the operands"

    def outer(i: int, given: int | None) -> int:
        if given is not None: return given
        return min(own[i], key=lambda a: (abs(_stride(loads[i], a, kernel) or 1 << 40), -kernel.axes[a].size))
    oa, ob = outer(ai, m_axis), outer(1 - ai, n_axis)
    if oa not in own[ai] or ob not in own[1 - ai]: return "the M/N axes do not match the operands"
    if m_axis is None and n_axis is None and _stride_store(kernel, ob) != 1 and _stride_store(kernel, oa) == 1:
        ai, oa, ob = 1 - ai, ob, oa  # N = the output's contiguous axis
    unit = 16 // loads[0].dtype.itemsize
    a, b = (_operand(kernel, loads[i], o, k_axis, unit) for i, o in ((ai, oa), (1 - ai, ob)))
    if m_outer and (m_axis is None or len(set(m_outer)) != len(m_outer) or any(x not in own[ai] or x == oa for x in m_outer)):
        return "the outer M axes are not other own axes of the M operand"
    batch = tuple(x for x in outs if x not in (oa, ob, *m_outer))
    return Match(oa, ob, k_axis, a, b, loads[0].dtype, batch, tuple(r for r in reds if r != k_axis), m_outer)


def _stride(ld: Node, axis: int, kernel) -> int | None:
    return axis_stride(ld.src[0], axis, kernel.axes[axis].size)


def _stride_store(kernel, axis: int) -> int | None:
    return axis_stride(kernel.store, axis, kernel.axes[axis].size)


def _operand(kernel, ld: Node, outer: int, k: int, unit: int = UNIT) -> Operand:
    """Orientation (contiguous along K, else along the outer axis, else neither: stored
    like K-contiguous, copied element by element) and the widest legal copy (``unit``
    elements = 16 bytes, else 1)."""
    if _stride(ld, k, kernel) != 1 and _stride(ld, outer, kernel) == 1:
        return Operand(ld.arg, ld, outer, True, unit if _vector_ok(kernel, ld, outer, unit) else 1)
    return Operand(ld.arg, ld, outer, False, unit if _vector_ok(kernel, ld, k, unit) else 1)


def _vector_ok(kernel, ld: Node, along: int, unit: int = UNIT) -> bool:
    """16-byte copies (``unit`` elements) along ``along`` are legal: unit stride there, every
    other step and the offset a multiple of ``unit`` (16-byte aligned), and the mask
    constant over the copy."""
    idx, valid = ld.src
    size = kernel.axes[along].size
    if _stride(ld, along, kernel) != 1 or size % unit: return False
    if any(v.op is Ops.VAR and v.arg[0] == along for v in valid.toposort()): return False
    vs = [v for v in idx.toposort() if v.op is Ops.VAR and v.arg[1] > 1]
    if any((axis_stride(idx, v.arg[0], v.arg[1]) or 1) % unit for v in vs if v.arg[0] != along): return False
    base = substitute(idx, {v: const(0, dt.int32) for v in idx.toposort() if v.op is Ops.VAR})
    return base.op is Ops.CONST and base.arg % unit == 0


def warp_fits(target) -> str | None:
    """Why the fragment layouts do not fit ``target``'s warp (None: they do)."""
    lanes = LANE_GROUPS * GROUP_LANES
    return None if target.warp == lanes else f"mma fragments are laid out over {lanes} lanes, {target.name} has a warp of {target.warp}"


@dataclass(frozen=True)
class Tiles:
    gm: int; wm: int; tm: int  # noqa: E702
    gn: int; wn: int; tn: int  # noqa: E702
    kt: int; bk: int           # noqa: E702
    rs: int = 1                # window points (product of the window axes' sizes)
    m_ext: tuple[int, ...] = ()   # per M axis (outer -> inner) its extent in the block tile
    m_grid: tuple[int, ...] = ()  # per M axis its blocks
    per: int = 1               # threads per THREAD unit: the target's warp (tensor cores), 1 (SIMT, ir/lower_staged.py)

    @property
    def bm(self) -> int: return self.wm * self.tm
    @property
    def bn(self) -> int: return self.wn * self.tn
    @property
    def warps(self) -> int: return self.wm * self.wn
    @property
    def threads(self) -> int: return self.per * self.warps
    @property
    def steps(self) -> int:
        """Pipelined K steps: the window points times the K tiles."""
        return self.rs * self.kt


def tiles(kernel, s, warp: int) -> Tiles | str:
    """The tile sizes of a tensor-core schedule (see the module docstring) on a target of
    ``warp`` lanes, or why not. M and N may be padded (ragged last block tile, guarded); K
    divides exactly."""
    return _tiles(kernel, s, warp)


@functools.lru_cache(maxsize=1 << 14)  # a space's legality check, model and ranking each ask
def _tiles(kernel, s, warp: int) -> Tiles | str:
    from .schedule import Level
    tc = s.tensor_core
    G, T, U, L, R = Level.GRID, Level.THREAD, Level.UPCAST, Level.LOOP, Level.UNROLL

    def pieces(axis: int, allowed: tuple, pad: bool) -> dict | str:
        got = {p.level: p.size for p in s.splits[axis]}
        if any(lv not in allowed for lv in got if got[lv] > 1): return f"axis {axis}: tensor-core axes use {[lv.value for lv in allowed]} only"
        size, tile = kernel.axes[axis].size, math.prod(n for lv, n in got.items() if lv is not G)
        if not pad and math.prod(got.values()) != size: return f"axis {axis}: tensor-core tiles must divide the axis exactly"
        if pad and got.get(G, 1) != -(-size // tile): return f"axis {axis}: {got.get(G, 1)} blocks do not cover {size} in tiles of {tile}"
        return got
    m_axes = (*tc.m_outer, tc.m_axis)
    pms = [pieces(a, (G, T, U), True) for a in m_axes]
    pn, pk = pieces(tc.n_axis, (G, T, U), True), pieces(tc.k_axis, (L, R), False)
    for p in (*pms, pn, pk):
        if isinstance(p, str): return p
    # warps take whole consecutive row ranges of the flattened tile: their THREAD pieces lead it
    for i, p in enumerate(pms):
        if p.get(T, 1) > 1 and any(q.get(U, 1) > 1 for q in pms[:i]):
            return f"axis {m_axes[i]}: warps split an M axis inside one with rows of its own (UPCAST)"
    ext = tuple(p.get(T, 1) * p.get(U, 1) for p in pms)
    pm = {G: math.prod(p.get(G, 1) for p in pms), T: math.prod(p.get(T, 1) for p in pms), U: math.prod(p.get(U, 1) for p in pms)}
    rs = 1
    for a in (r for r in kernel.reduce_axes if r != tc.k_axis):  # the window (Match.window)
        pw = pieces(a, (L,), False)
        if isinstance(pw, str): return f"window {pw}"
        rs *= kernel.axes[a].size
    t = Tiles(pm[G], pm[T], pm[U], pn.get(G, 1), pn.get(T, 1), pn.get(U, 1), pk.get(L, 1), pk.get(R, 1), rs,
              ext, tuple(p.get(G, 1) for p in pms), per=warp)
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


def copy_elem(q, width: int, vec: int):
    """Tile (row, column) of the first element of copy number ``q`` of ``vec`` elements
    (row-major over the tile: consecutive threads, consecutive columns)."""
    per_row = width // vec
    return q // per_row, (q % per_row) * vec


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
