"""Lowering of tensor-core GEMM schedules (``Schedule.tensor_core``) to a ``Program``.

Per block (tile BM x BN, ``wm x wn`` warps each owning tm x tn):
  shared A/B tiles x ``stages``      (layout: ir/tensorcore.smem_offset, from ``staging``)
  acc[fp32] = 0                      (tm/16 x tn/8 mma tiles x 4 per lane)
  stages == 1:  for kt: copy tile kt; barrier; compute; barrier
  stages  > 1:  prologue copies tiles 0..S-2 (cp.async, one group each);
                for kt: wait <= S-2 groups; barrier; compute stage kt%S;
                        copy tile kt+S-1 into stage (kt+S-1)%S (if any); commit
  compute: for each 16-deep K step: ldmatrix.x4 A fragments (one per 16 rows),
           B fragments (one per 16 columns = two n8 tiles), then every mma
  epilogue: the kernel body with the reduction replaced by each accumulator, stored.
Copies: 16-byte units numbered row-major over the tile in its global orientation, unit
q handled by thread q % threads, so a warp writes 32 consecutive units (coalesced).
"""
from __future__ import annotations

from . import dtype as dt
from . import tensorcore as tcm
from .node import Node, Ops, TRUE, const, lt, special, substitute, var
from .program import (Assign, Barrier, CopyCommit, CopyWait, FragLoad, If, Loop, Mma, Program, Reg, Shared, SharedCopy,
                      Stmt, Store)

ACC, FA, FB = "acc", "fa", "fb"
SA, SB = "sa", "sb"


def lower_tensor_core(k, s, machine) -> Program:
    tc = s.tensor_core
    m = tcm.match(k, tc.m_axis, tc.n_axis)
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
    m0 = gidx.get(m.m, zero) * t.bm
    n0 = gidx.get(m.n, zero) * t.bn
    fixed = {var(a, k.axes[a].size): gidx.get(a, zero) for a in m.batch}

    ops = ((m.a, SA, t.bm), (m.b, SB, t.bn))
    geo = {name: tcm.tile_shape(op, outer, t.bk) for op, name, outer in ops}
    stage_size = {name: rows * (width + st[op.input].pad) for (op, name, _), (rows, width) in
                  zip(ops, (geo[SA], geo[SB]))}

    def offset(name, op, row, unit):
        rows, width = geo[name]
        x = st[op.input]
        return tcm.smem_offset(row, unit, width, x.pad, x.swizzle, x.shift)

    def copies(kt: Node, stage: Node) -> list[Stmt]:
        out: list[Stmt] = []
        for op, name, outer in ops:
            rows, width = geo[name]
            origin = m0 if op is m.a else n0
            for c in range(rows * width // tcm.UNIT // threads):
                row, unit = tcm.copy_coords(thread + c * threads, width)
                o_idx, k_idx = (unit * tcm.UNIT, row) if op.k_major else (row, unit * tcm.UNIT)
                ax = {var(op.outer, k.axes[op.outer].size): origin + o_idx, var(m.k, k.axes[m.k].size): kt * t.bk + k_idx}
                src = substitute(op.load.src[0], {**fixed, **ax})
                dst = stage * stage_size[name] + offset(name, op, row, unit)
                out.append(SharedCopy(name, dst, op.input, src, tcm.UNIT, TRUE, S > 1))
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

    kt = special("kt", t.kt)
    if S == 1:
        loop = [Loop(kt, (*copies(kt, zero), Barrier(), *compute(zero), Barrier()))]
        pro: list[Stmt] = []
    else:
        pro = []
        for i in range(S - 1):
            if i < t.kt: pro += copies(const(i, dt.int32), const(i, dt.int32))
            pro.append(CopyCommit())
        nxt = kt + (S - 1)
        loop = [Loop(kt, (CopyWait(S - 2), Barrier(), *compute(kt % S),
                          If(lt(nxt, t.kt), tuple(copies(nxt, nxt % S))), CopyCommit()))]

    nacc = na * ntn * 4
    red = k.reduce
    g, tq = lane // 4, lane % 4
    stores: list[Stmt] = []
    for i in range(na):
        for j in range(ntn):
            for c in range(4):
                mi = m0 + wm_i * t.tm + i * tcm.MMA_M + g + 8 * (c // 2)
                ni = n0 + wn_i * t.tn + j * tcm.MMA_N + tq * 2 + c % 2
                at = {**fixed, var(m.m, k.axes[m.m].size): mi, var(m.n, k.axes[m.n].size): ni}
                acc = Node(Ops.REG, dt.float32, (const((i * ntn + j) * 4 + c, dt.int32),), ACC)
                stores.append(Store(substitute(k.store, at), substitute(substitute(k.body, {red: acc}), at)))
    body: list[Stmt] = [
        Shared(SA, m.dtype, S * stage_size[SA]), Shared(SB, m.dtype, S * stage_size[SB]),
        Reg(ACC, dt.float32, nacc), Reg(FA, m.dtype, na * 8), Reg(FB, m.dtype, nb * 8),
        *[Assign(ACC, const(e, dt.int32), const(0.0, dt.float32)) for e in range(nacc)],
        *pro, *loop, *stores]
    return Program(k.name, k.inputs, k.output, s.blocks(), threads, 1, 1, tuple(body), k, s)
