"""Geometry and legality of the shared-memory staged SIMT GEMM (schedules with
``Schedule.staging`` and no tensor core): its GEMM view, block/thread/K tiles, read strips
and shared-tile sizes, counted from the schedule alone. ``ir/schedule.check`` asks
``check`` here; the lowering (``ir/lower_staged.py``, whose docstring gives the schedule
convention) builds on the same functions, so the two cannot disagree.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from . import tensorcore as tcm
from .tensorcore import SA, SB

if TYPE_CHECKING:
    from .schedule import Schedule

STRIP = 4           # elements of a 16-byte fp32 read
MAX_CODE = 2048     # bk x tm x tn: FMAs of one unrolled K step (code size)


def match(kernel) -> tcm.Match | str:
    """The GEMM view of an fp32 kernel, or why it has none."""
    if kernel.kind not in ("gemm", "conv"): return f"a {kernel.kind} kernel (the staged SIMT lowering covers GEMMs and convolutions)"
    return tcm.match(kernel, simt=True)


def tiles(kernel, s: Schedule, m: tcm.Match) -> tcm.Tiles | str:
    """The block/thread/K tiles of a staged SIMT schedule (module docstring), or why not."""
    from .schedule import Level   # schedule imports this module: Level once the check runs
    G, T, U, L, R = Level.GRID, Level.THREAD, Level.UPCAST, Level.LOOP, Level.UNROLL
    if m.m_outer: return "M tiles flattened over several axes are not lowered with SIMT staging"

    def pieces(axis: int, allowed: tuple, pad: bool) -> dict | str:
        got = {p.level: p.size for p in s.splits[axis]}
        if any(lv not in allowed for lv in got if got[lv] > 1):
            return f"axis {axis}: staged GEMM axes use {'/'.join(lv.value for lv in allowed)} only"
        size, tile = kernel.axes[axis].size, math.prod(n for lv, n in got.items() if lv is not G)
        if not pad and math.prod(got.values()) != size: return f"axis {axis}: the K tiles must divide {size} exactly"
        if pad and got.get(G, 1) != -(-size // tile): return f"axis {axis}: {got.get(G, 1)} blocks do not cover {size} in tiles of {tile}"
        return got
    pm, pn, pk = pieces(m.m, (G, T, U), True), pieces(m.n, (G, T, U), True), pieces(m.k, (L, R), False)
    for p in (pm, pn, pk):
        if isinstance(p, str): return p
    for a in m.batch:
        p = pieces(a, (G,), False)
        if isinstance(p, str): return f"batch {p}"
    for a in m.window:  # a convolution's filter window: serial loops around the K tiles
        p = pieces(a, (L,), False)
        if isinstance(p, str): return f"window {p}"
    return tcm.Tiles(pm.get(G, 1), pm.get(T, 1), pm.get(U, 1), pn.get(G, 1), pn.get(T, 1), pn.get(U, 1),
                     pk.get(L, 1), pk.get(R, 1), math.prod(kernel.axes[a].size for a in m.window),
                     (pm.get(T, 1) * pm.get(U, 1),), (pm.get(G, 1),), per=1)


def strips(m: tcm.Match, t: tcm.Tiles) -> tuple[int, int, int]:
    """(vm, vn, vk): runs of elements read as one 16-byte vector along M, N and K."""
    vm = STRIP if m.a.k_major and t.tm % STRIP == 0 else 1
    vn = STRIP if m.b.k_major and t.tn % STRIP == 0 else 1
    vk = STRIP if (not m.a.k_major or not m.b.k_major) and t.bk % STRIP == 0 else 1
    return vm, vn, vk


def smem_elems(kernel, s: Schedule, m: tcm.Match, t: tcm.Tiles) -> dict[str, int]:
    """Elements of one stage of each shared tile."""
    st = {x.input: x for x in s.staging}
    out = {}
    for op, name, outer in ((m.a, SA, t.bm), (m.b, SB, t.bn)):
        rows, width = tcm.tile_shape(op, outer, t.bk)
        out[name] = rows * (width + st[op.input].pad)
    return out


def check(kernel, s: Schedule, machine) -> list[str]:
    """Why a staged schedule without tensor core is illegal (empty: legal)."""
    m = match(kernel)
    if isinstance(m, str): return [f"staged SIMT GEMM: {m}"]
    if s.vector != 1 or s.order: return ["staged SIMT GEMM schedules take no vector width or loop order"]
    t = tiles(kernel, s, m)
    if isinstance(t, str): return [f"staged SIMT GEMM: {t}"]
    by_input = {st.input: st for st in s.staging}
    if sorted(by_input) != sorted([m.a.input, m.b.input]) or len(s.staging) != 2:
        return ["staged SIMT GEMM: both operands must be staged exactly once"]
    errs = []
    for op, outer in ((m.a, t.bm), (m.b, t.bn)):
        st = by_input[op.input]
        rows, width = tcm.tile_shape(op, outer, t.bk)
        if st.vector not in (1, op.vec):
            errs.append(f"input {op.input}: staged copies are 1 element" + (f" or {op.vec} (16 bytes)" if op.vec > 1 else " (unaligned operand)"))
        elif width % st.vector: errs.append(f"input {op.input}: tile rows of {width} are not whole {st.vector}-element copies")
        if width % STRIP: errs.append(f"input {op.input}: tile rows of {width} are not whole 16-byte units")
        elif st.swizzle and (st.swizzle < 0 or st.shift < st.swizzle or (rows * width // STRIP) % (1 << st.swizzle)):
            errs.append(f"input {op.input}: swizzle {st.swizzle} bits at shift {st.shift} is not a bijection of the tile")
        if st.pad < 0 or st.pad % STRIP: errs.append(f"input {op.input}: pad {st.pad} is not a multiple of {STRIP} (16-byte rows)")
        if (rows * width // max(1, st.vector)) % t.threads:
            errs.append(f"input {op.input}: {rows}x{width} tile is not a whole number of copies per thread ({t.threads} threads)")
    if t.bk * t.tm * t.tn > MAX_CODE: errs.append(f"K step of {t.bk} x {t.tm}x{t.tn} tile: {t.bk * t.tm * t.tn} FMAs unrolled > {MAX_CODE}")
    smem = sum(smem_elems(kernel, s, m, t).values()) * m.dtype.itemsize * s.stages
    if smem > machine.smem_per_block: errs.append(f"shared memory {smem} B > {machine.smem_per_block} B per block")
    return errs
