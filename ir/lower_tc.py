"""Lowering of tensor-core GEMM and implicit-GEMM convolution schedules
(``Schedule.tensor_core``) to a ``Program``.

Per block (tile BM x BN, ``wm x wn`` warps each owning tm x tn):
  shared A/B tiles x ``stages``      (layout: ir/tensorcore.smem_offset, from ``staging``)
  acc[fp32] = 0                      (tm/16 x tn/8 mma tiles x 4 per lane)
  steps = window points x K tiles (a convolution's filter window outer, K tiles inner)
  stages == 1:  for kt in steps: copy tile kt; barrier; compute; barrier
  stages  > 1:  prologue copies tiles 0..S-2 (cp.async, one group each);
                for kt: wait <= S-2 groups; barrier; compute stage kt%S;
                        copy tile kt+S-1 into stage (kt+S-1)%S (if any); commit
  compute: for each 16-deep K step: ldmatrix.x4 A fragments (one per 16 rows),
           B fragments (one per 16 columns = two n8 tiles), then every mma
  epilogue: the kernel body with the reduction replaced by each accumulator, stored.
Copies: ``Staging.vector`` elements (16-byte units, else single elements) numbered
row-major over the tile in its global orientation, copy q handled by thread q % threads,
so a warp writes 32 consecutive copies (coalesced). A copy is guarded by the operand
load's mask (a convolution's padding) and, in a padded M/N tile, by the axis end; a
guarded-off copy writes zeros. Element copies are synchronous (cp.async has no 2-byte
form); they write a stage no warp reads until the next barrier.
"""
from __future__ import annotations

from . import dtype as dt
from . import tensorcore as tcm
from .node import Node, Ops, TRUE, and_, const, lt, special, substitute, var
from .program import (Assign, Barrier, CopyCommit, CopyWait, FragLoad, If, Loop, Mma, Program, Reg, Shared, SharedCopy,
                      Stmt, Store)

ACC, FA, FB = "acc", "fa", "fb"
SA, SB = "sa", "sb"


def lower_tensor_core(k, s, machine) -> Program:
    tc = s.tensor_core
    m = tcm.match_tc(k, tc)
    t = tcm.tiles(k, s)
    st = {x.input: x for x in s.staging}
    threads, S = t.threads, s.stages
    block, thread = special("block", s.blocks()), special("thread", threads)
    warp, lane = thread // tcm.WARP, thread % tcm.WARP
    wm_i, wn_i = warp // t.wn, warp % t.wn
    # grid pieces in axis order (as ir/lower does), M and N last-level block indices
    grid = [(a, p.size) for a in range(len(k.axes)) for p in s.splits[a] if p.level.value == "grid" and p.size > 1]
    gidx, stride = {}, 1
    for a, n in reversed(grid):
        gidx[a] = (block // stride) % n
        stride *= n
    zero = const(0, dt.int32)
    n0 = gidx.get(m.n, zero) * t.bn
    fixed = {var(a, k.axes[a].size): gidx.get(a, zero) for a in m.batch}
    N = k.axes[m.n].size
    vm = lambda a: var(a, k.axes[a].size)  # noqa: E731

    def m_at(row) -> tuple[dict[Node, Node], Node]:
        """The M axes' indices of block-tile row ``row`` (mixed radix over their extents,
        outer -> inner) and whether all are inside their axes (padded tiles)."""
        at, ok, rest = {}, TRUE, row
        for a, e, g in reversed(list(zip(m.m_axes, t.m_ext, t.m_grid))):
            i = gidx.get(a, zero) * e + rest % e
            rest = rest // e
            at[vm(a)] = i
            if g * e != k.axes[a].size: ok = and_(ok, lt(i, k.axes[a].size))
        return at, ok

    ops = ((m.a, SA, t.bm), (m.b, SB, t.bn))
    geo = {name: tcm.tile_shape(op, outer, t.bk) for op, name, outer in ops}
    stage_size = {name: rows * (width + st[op.input].pad) for (op, name, _), (rows, width) in
                  zip(ops, (geo[SA], geo[SB]))}

    def offset(name, op, row, unit):
        rows, width = geo[name]
        x = st[op.input]
        return tcm.smem_offset(row, unit, width, x.pad, x.swizzle, x.shift)

    def step_axes(step: Node) -> dict[Node, Node]:
        """Window positions and K offset of pipeline step ``step`` (window outer, K tiles inner)."""
        out, rest = {vm(m.k): (step % t.kt) * t.bk}, step // t.kt
        for a in reversed(m.window):
            out[vm(a)] = rest % k.axes[a].size
            rest = rest // k.axes[a].size
        return out

    def copies(step: Node, stage: Node) -> list[Stmt]:
        out: list[Stmt] = []
        at = step_axes(step)
        for op, name, outer in ops:
            rows, width = geo[name]
            vec = st[op.input].vector
            for c in range(rows * width // vec // threads):
                row, col = tcm.copy_elem(thread + c * threads, width, vec)
                o_idx, k_idx = (col, row) if op.k_major else (row, col)
                if op is m.a: o_at, inside = m_at(o_idx)
                else: o_at, inside = {vm(m.n): n0 + o_idx}, (lt(n0 + o_idx, N) if t.gn * t.bn != N else TRUE)
                ax = {**fixed, **at, **o_at, vm(m.k): at[vm(m.k)] + k_idx}
                src, ok = (substitute(x, ax) for x in op.load.src)
                ok = and_(ok, inside)  # rows of a padded tile past the axis end
                dst = stage * stage_size[name] + offset(name, op, row, col // tcm.UNIT) + col % tcm.UNIT
                # cp.async moves 4, 8 or 16 bytes: element (2-byte) copies are plain loads
                out.append(SharedCopy(name, dst, op.input, src, vec, ok, S > 1 and vec == tcm.UNIT))
        return out

    na, nb = t.tm // tcm.MMA_M, t.tn // 16           # A fragments, B fragment pairs per K step
    ntn = t.tn // tcm.MMA_N                           # n8 tiles per warp

    def compute(stage: Node) -> list[Stmt]:
        body: list[Stmt] = []
        for kk in range(t.bk // tcm.MMA_K):
            for i in range(na):
                row, unit = tcm.frag_coords(lane, tcm.A_MATS, wm_i * t.tm + i * tcm.MMA_M, kk * tcm.MMA_K, m.a.k_major)
                body.append(FragLoad(FA, i * 8, SA, stage * stage_size[SA] + offset(SA, m.a, row, unit), m.a.k_major))
            for j in range(nb):
                row, unit = tcm.frag_coords(lane, tcm.B_MATS, wn_i * t.tn + j * 16, kk * tcm.MMA_K, m.b.k_major)
                body.append(FragLoad(FB, j * 8, SB, stage * stage_size[SB] + offset(SB, m.b, row, unit), m.b.k_major))
            for i in range(na):
                for j in range(ntn):
                    body.append(Mma(tc.instr, ACC, (i * ntn + j) * 4, FA, i * 8, FB, j * 4))
        return body

    nsteps = t.steps
    kt = special("kt", nsteps)
    if S == 1:
        loop = [Loop(kt, (*copies(kt, zero), Barrier(), *compute(zero), Barrier()))]
        pro: list[Stmt] = []
    else:
        # only cp.async copies need groups (element copies land at once: the barrier publishes them)
        is_async = any(st[op.input].vector == tcm.UNIT for op, _, _ in ops)
        commit, wait = ([CopyCommit()], [CopyWait(S - 2)]) if is_async else ([], [])
        pro = []
        for i in range(S - 1):
            if i < nsteps: pro += copies(const(i, dt.int32), const(i, dt.int32))
            pro += commit
        nxt = kt + (S - 1)
        loop = [Loop(kt, (*wait, Barrier(), *compute(kt % S),
                          If(lt(nxt, nsteps), tuple(copies(nxt, nxt % S))), *commit))]

    nacc = na * ntn * 4
    red = k.reduce
    g, tq = lane // 4, lane % 4
    stores: list[Stmt] = []
    for i in range(na):
        for j in range(ntn):
            for c in range(4):
                m_idx, m_ok = m_at(wm_i * t.tm + i * tcm.MMA_M + g + 8 * (c // 2))
                ni = n0 + wn_i * t.tn + j * tcm.MMA_N + tq * 2 + c % 2
                at = {**fixed, **m_idx, vm(m.n): ni}
                acc = Node(Ops.REG, dt.float32, (const((i * ntn + j) * 4 + c, dt.int32),), ACC)
                st_ = Store(substitute(k.store, at), substitute(substitute(k.body, {red: acc}), at))
                # a padded tile's rows past the end: the whole epilogue is skipped (its loads too)
                ok = and_(m_ok, lt(ni, N)) if t.gn * t.bn != N else m_ok
                stores.append(st_ if ok is TRUE else If(ok, (st_,)))
    body: list[Stmt] = [
        Shared(SA, m.dtype, S * stage_size[SA]), Shared(SB, m.dtype, S * stage_size[SB]),
        Reg(ACC, dt.float32, nacc), Reg(FA, m.dtype, na * 8), Reg(FB, m.dtype, nb * 8),
        *[Assign(ACC, const(e, dt.int32), const(0.0, dt.float32)) for e in range(nacc)],
        *pro, *loop, *stores]
    return Program(k.name, k.inputs, k.output, s.blocks(), threads, 1, 1, tuple(body), k, s)
