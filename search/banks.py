"""Shared-memory layouts chosen by Z3 so warp-wide accesses are free of bank conflicts.

Every shared access of a staged GEMM tile is served 128 bytes at a time: a 16-byte
``SharedCopy`` phase is 8 consecutive threads, a 2-byte (element) copy phase a whole warp
(64 bytes), an ``ldmatrix`` phase one 8x8 matrix (its 8 row addresses). A phase is conflict-free when its 8 16-byte units fall in 8 distinct
bank groups (``unit mod 8``) or are the same unit. The lanes' logical (row, unit)
come from ``ir/tensorcore.py`` (the functions the lowering uses); the layout maps them
through ``smem_offset`` with unknowns pad, swizzle bits and shift, posed here as
bit-vectors. Z3 finds the layout with no conflicting pair and the least padding (then
the fewest swizzle bits); where none exists it minimizes the number of conflicting pairs.
``conflicts`` re-counts a layout numerically with the lowering's own formula.
"""
from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass, replace

import z3

from ..ir import tensorcore as tcm
from ..ir.schedule import Schedule, Staging

BITS = 16
Phase = tuple[tuple[int, int], ...]   # the (row, unit) of each thread of one phase


@dataclass(frozen=True)
class Layout:
    pad: int           # elements
    swizzle: int
    shift: int
    conflicts: int     # conflicting lane pairs over all phases (0: conflict-free)
    proved: bool       # optimal under the model (conflict-free with least pad, or proven minimum)
    solve_s: float
    phases: int


def operand_phases(kernel, s: Schedule, which: str, warp: int) -> tuple[int, int, list[Phase]]:
    """(rows, width, distinct phases) of operand ``which`` ("a" | "b") under ``s`` on a
    target of ``warp`` lanes."""
    tc = s.tensor_core
    m = tcm.match_tc(kernel, tc)
    t = tcm.tiles(kernel, s, warp)
    op, outer_tile, warps_o, tile_o, mats = ((m.a, t.bm, t.wm, t.tm, tcm.A_MATS) if which == "a"
                                             else (m.b, t.bn, t.wn, t.tn, tcm.B_MATS))
    step = tcm.MMA_M if which == "a" else 16
    rows, width = tcm.tile_shape(op, outer_tile, t.bk)
    vec = _vector(s, op)
    out: set[Phase] = set()
    n = rows * width // vec
    per = 8 if vec == tcm.UNIT else warp  # 16-byte copies: 8 threads a phase (128 bytes); element copies: a warp
    for q0 in range(0, n, per):   # consecutive threads take consecutive copies
        out.add(tuple((r, c // tcm.UNIT) for r, c in (tcm.copy_elem(q, width, vec) for q in range(q0, min(n, q0 + per)))))
    for w in range(warps_o):
        for kk in range(0, t.bk, tcm.MMA_K):
            for o in range(0, tile_o, step):
                for j in range(4):
                    out.add(tuple(tcm.frag_coords(l, mats, w * tile_o + o, kk, op.k_major) for l in range(8 * j, 8 * j + 8)))
    return rows, width, sorted(out)


def _vector(s: Schedule, op) -> int:
    """The copy width the schedule's staging gives the operand (else its widest legal one)."""
    return next((x.vector for x in s.staging if x.input == op.input), op.vec)


def _group(row, unit, upr: int, pad_u, swz, shift):
    """Bank group (16-byte unit mod 8) of a logical unit, as a Z3 bit-vector."""
    u = z3.BitVecVal(row * upr + unit, BITS)
    mask = (z3.BitVecVal(1, BITS) << swz) - 1
    u2 = u ^ (z3.LShR(u, shift) & mask)
    lg = upr.bit_length() - 1
    phys = z3.LShR(u2, lg) * (upr + pad_u) + (u2 & (upr - 1))
    return phys & 7


def _pairs(phases: list[Phase]) -> list:
    """Distinct unordered pairs of different units that share a phase."""
    return sorted({(min(x, y), max(x, y)) for ph in phases for x, y in itertools.combinations(set(ph), 2)})


def solve(rows: int, width: int, phases: list[Phase], max_pad: int = 64, timeout_ms: int = 20000) -> Layout:
    t0 = time.perf_counter()
    upr = width // tcm.UNIT
    units = rows * upr
    pad_u, swz, shift = z3.BitVecs("pad_u swz shift", BITS)
    base = [z3.ULE(pad_u, max_pad // tcm.UNIT), z3.ULE(swz, 3), z3.ULE(shift, 12),
            z3.Or(swz == 0, z3.UGE(shift, swz))]
    # the swizzle permutes within aligned groups of 2**swz units: the tile must hold whole groups
    base.append(z3.Or(*[z3.And(swz == b, z3.BoolVal(units % (1 << b) == 0)) for b in range(4)]))
    group: dict = {}
    for x in {x for ph in phases for x in ph}: group[x] = _group(*x, upr, pad_u, swz, shift)
    diff = [group[x] != group[y] for x, y in _pairs(phases)]
    sol = z3.Solver()
    sol.set("timeout", timeout_ms)
    sol.add(*base, *diff)
    # least padding first, then fewest swizzle bits: the first satisfiable budget is optimal
    for p_max in range(max_pad // tcm.UNIT + 1):
        for b_max in range(4):
            r = sol.check(pad_u == p_max, swz == b_max)
            if r == z3.sat:
                sh = sol.model().eval(shift).as_long()
                return Layout(p_max * tcm.UNIT, b_max, sh if b_max else 0, 0, True, time.perf_counter() - t0, len(phases))
    # none is conflict-free: fewest conflicting pairs
    opt = z3.Optimize()
    opt.set("timeout", timeout_ms)
    opt.add(*base)
    for d in diff: opt.add_soft(d)
    r2 = opt.check()
    if r2 != z3.sat: return Layout(0, 0, 0, conflicts(rows, width, phases, 0, 0, 0), False, time.perf_counter() - t0, len(phases))
    md = opt.model()
    p, b, sh = (md.eval(v).as_long() for v in (pad_u, swz, shift))
    c = conflicts(rows, width, phases, p * tcm.UNIT, b, sh)
    return Layout(p * tcm.UNIT, b, sh if b else 0, c, True, time.perf_counter() - t0, len(phases))


def conflicts(rows: int, width: int, phases: list[Phase], pad: int, swizzle: int, shift: int) -> int:
    """Conflicting lane pairs of a layout, counted with the lowering's formula."""
    def group(x): return (tcm.smem_offset(x[0], x[1], width, pad, swizzle, shift) // tcm.UNIT) % 8
    return sum(group(x) == group(y) for x, y in _pairs(phases))


def ways(rows: int, width: int, phases: list[Phase], pad: int, swizzle: int, shift: int) -> float:
    """Mean wavefronts a phase takes under a layout: a phase's 16-byte units are served one
    wavefront per bank group's distinct units (1: conflict-free), with the lowering's offsets."""
    if not phases: return 1.0
    total = 0
    for ph in phases:
        per: dict[int, set] = {}
        for x in set(ph):
            per.setdefault((tcm.smem_offset(x[0], x[1], width, pad, swizzle, shift) // tcm.UNIT) % 8, set()).add(x)
        total += max(len(u) for u in per.values())
    return total / len(phases)


def schedule_ways(kernel, s: Schedule, warp: int) -> tuple[float, float]:
    """(A, B): the mean wavefronts of each operand's shared accesses under ``s``'s layouts."""
    m = tcm.match_tc(kernel, s.tensor_core)
    st = {x.input: x for x in s.staging}
    out = []
    for which, op in (("a", m.a), ("b", m.b)):
        rows, width, ph = operand_phases(kernel, s, which, warp)
        x = st.get(op.input)
        out.append(_ways_cached(rows, width, tuple(ph), x.pad if x else 0, x.swizzle if x else 0, x.shift if x else 0))
    return out[0], out[1]


@functools.lru_cache(maxsize=1 << 14)
def _ways_cached(rows: int, width: int, phases: tuple, pad: int, swizzle: int, shift: int) -> float:
    return ways(rows, width, list(phases), pad, swizzle, shift)


def staging(kernel, s: Schedule, warp: int) -> tuple[tuple[Staging, ...], dict[str, Layout]]:
    """Conflict-free (or minimal) layouts for both operands of tensor-core schedule ``s`` on a
    target of ``warp`` lanes (its ``staging`` may hold placeholders: only the inputs are read)."""
    tc = s.tensor_core
    m = tcm.match_tc(kernel, tc)
    if not s.staging:
        s = replace(s, staging=(Staging(m.a.input, vector=m.a.vec), Staging(m.b.input, vector=m.b.vec)))
    out, info = [], {}
    for which, op in (("a", m.a), ("b", m.b)):
        rows, width, ph = operand_phases(kernel, s, which, warp)
        lay = _cached(rows, width, tuple(ph))
        info[which] = lay
        out.append(Staging(op.input, lay.pad, lay.swizzle, _vector(s, op), lay.shift))
    return tuple(out), info


_CACHE: dict = {}


def _cached(rows: int, width: int, phases: tuple) -> Layout:
    key = (rows, width, phases)
    if key not in _CACHE: _CACHE[key] = solve(rows, width, list(phases))
    return _CACHE[key]
