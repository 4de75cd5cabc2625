"""Lowering of Hopper wgmma schedules (``TensorCore.instr`` ``wgmma.*``; convention and
shared layout in ``ir/wgmma.py``) to a ``Program``.

Per block (tile BM x BN, warpgroups ``wgm x wgn``, each owning ``mt`` m64 tiles x N):
  shared A/B tiles x ``stages``   (panels of 128/64/32-byte swizzled rows: the layout the
                                   descriptors describe; every stage 1024-byte aligned)
  acc[fp32] = 0                   (mt x N/2 a thread)
  steps = window points x K tiles, copies exactly as for mma.sync (ir/lower_tc.py):
  stages == 1: for kt: copy tile kt; fence; barrier; MMA; barrier
  stages  > 1: W = wgmma groups kept in flight (``wgmma_in_flight``: 1 from 4 stages on
               with bk <= 32, else 0), D = S-1-W tiles copied ahead;
               prologue copies tiles 0..D-1 (cp.async groups);
               for kt: wait <= D-1 copy groups; fence; barrier; MMA;
                       copy tile kt+D into stage (kt+D)%S (if any); commit
               wait <= 0 wgmma groups (the epilogue reads the accumulators)
  MMA: wgmma.fence; per 16-deep K step and m64 tile one wgmma (descriptors of the
       warpgroup's A rows and B columns in stage kt%S); commit; wait <= W groups.
Why the copies of step kt may overwrite stage (kt+D)%S = (kt-1-W)%S: every warpgroup
retired its wgmmas of step kt-1-W at its wait of step kt-1-W+W = kt-1, before the
barrier of step kt.
The fence (``SharedFence``) publishes each thread's shared writes to the async proxy
that wgmma reads through, before the barrier.
Epilogue: the kernel body with the reduction replaced by each accumulator (layout of
the m64nNk16 D fragment: warp q of the warpgroup, lane l, element i holds row
16q + l/4 + 8*((i/2)%2), column 8*(i/4) + 2*(l%4) + i%2), stored where inside the axes.
"""
from __future__ import annotations

from . import dtype as dt
from . import tensorcore as tcm
from . import wgmma as wg
from .node import Node, Ops, TRUE, and_, const, lt, special, substitute, var
from .program import (Assign, Barrier, CopyCommit, CopyWait, If, Loop, Program, Reg, Shared, SharedCopy, SharedFence,
                      Stmt, Store, Wgmma, WgmmaCommit, WgmmaFence, WgmmaWait)

ACC, SA, SB = "acc", "sa", "sb"


def wgmma_in_flight(stages: int, bk: int) -> int:
    """wgmma groups left in flight after each step's wait: 1 from 4 stages on with at
    most 2 K steps a group (the step's wgmmas overlap the next step's copy wait and
    barrier; copies then run ``stages - 2`` tiles ahead), else 0 (``stages - 1`` tiles
    ahead). ptxas 13.0 serializes every wgmma (warning C7514) when 4 K steps chain in a
    group with one kept in flight, hence the bk limit."""
    return 1 if stages >= 4 and bk <= 2 * wg.WG_K else 0


def lower_wgmma(k, s, machine) -> Program:
    tc = s.tensor_core
    m = tcm.match_tc(k, tc)
    t = tcm.tiles(k, s)
    g = wg.groups(t)
    st = {x.input: x for x in s.staging}
    threads, S = t.threads, s.stages
    block, thread = special("block", s.blocks()), special("thread", threads)
    warp, lane = thread // tcm.WARP, thread % tcm.WARP
    grp, q = warp // wg.WARPS_PER_GROUP, warp % wg.WARPS_PER_GROUP
    gm_i, gn_i = grp // g.wgn, grp % g.wgn
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
        """The M axes' indices of block-tile row ``row`` (mixed radix over their extents)
        and whether all lie inside their axes (padded tiles)."""
        at, ok, rest = {}, TRUE, row
        for a, e, gr in reversed(list(zip(m.m_axes, t.m_ext, t.m_grid))):
            i = gidx.get(a, zero) * e + rest % e
            rest = rest // e
            at[vm(a)] = i
            if gr * e != k.axes[a].size: ok = and_(ok, lt(i, k.axes[a].size))
        return at, ok

    ops = ((m.a, SA, t.bm), (m.b, SB, t.bn))
    geo = {name: tcm.tile_shape(op, outer, t.bk) for op, name, outer in ops}
    stage = {name: wg.stage_bytes(*geo[name]) // m.dtype.itemsize for _, name, _ in ops}

    def step_axes(step: Node) -> dict[Node, Node]:
        out, rest = {vm(m.k): (step % t.kt) * t.bk}, step // t.kt
        for a in reversed(m.window):
            out[vm(a)] = rest % k.axes[a].size
            rest = rest // k.axes[a].size
        return out

    def copies(step: Node, at_stage: Node) -> list[Stmt]:
        """Copy q of a tile (row-major in its global orientation) by thread q % threads."""
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
                src, ok = (substitute(x, {**fixed, **at, **o_at, vm(m.k): at[vm(m.k)] + k_idx}) for x in op.load.src)
                dst = at_stage * stage[name] + wg.smem_offset(row, col, rows, width)
                out.append(SharedCopy(name, dst, op.input, src, vec, and_(ok, inside), S > 1 and vec == tcm.UNIT))
        return out

    desc = {name: wg.operand_desc(op, *geo[name]) for op, name, _ in ops}

    keep = wgmma_in_flight(S, t.bk)

    def mma(at_stage: Node) -> list[Stmt]:
        body: list[Stmt] = [WgmmaFence()]
        for kk in range(0, t.bk, wg.WG_K):
            b0 = at_stage * stage[SB] + wg.operand_start(m.b, *geo[SB], gn_i * g.n, kk)
            for i in range(g.mt):
                a0 = at_stage * stage[SA] + wg.operand_start(m.a, *geo[SA], gm_i * 4 * t.tm + i * wg.WG_M, kk)
                body.append(Wgmma(tc.instr, g.n, ACC, i * g.n // 2, SA, a0, desc[SA].fields, desc[SA].trans,
                                  SB, b0, desc[SB].fields, desc[SB].trans))
        return body + [WgmmaCommit(), WgmmaWait(keep)]

    nsteps = t.steps
    kt = special("kt", nsteps)
    publish = [SharedFence(), Barrier()]
    if S == 1:
        pro: list[Stmt] = []
        loop = [Loop(kt, (*copies(kt, zero), *publish, *mma(zero), Barrier()))]
    else:
        is_async = any(st[op.input].vector == tcm.UNIT for op, _, _ in ops)
        ahead = S - 1 - keep        # tiles in flight ahead of the one computed
        commit, wait = ([CopyCommit()], [CopyWait(ahead - 1)]) if is_async else ([], [])
        pro = []
        for i in range(ahead):
            if i < nsteps: pro += copies(const(i, dt.int32), const(i, dt.int32))
            pro += commit
        nxt = kt + ahead
        loop = [Loop(kt, (*wait, *publish, *mma(kt % S), If(lt(nxt, nsteps), tuple(copies(nxt, nxt % S))), *commit)),
                *([WgmmaWait(0)] if keep else [])]

    red = k.reduce
    gr, tq = lane // 4, lane % 4
    stores: list[Stmt] = []
    for i in range(g.mt):
        for e in range(g.n // 2):
            j, c = e // 4, e % 4
            m_idx, m_ok = m_at(gm_i * 4 * t.tm + i * wg.WG_M + q * 16 + gr + 8 * (c // 2))
            ni = n0 + gn_i * g.n + j * 8 + tq * 2 + c % 2
            at = {**fixed, **m_idx, vm(m.n): ni}
            acc = Node(Ops.REG, dt.float32, (const(i * g.n // 2 + e, dt.int32),), ACC)
            st_ = Store(substitute(k.store, at), substitute(substitute(k.body, {red: acc}), at))
            ok = and_(m_ok, lt(ni, N)) if t.gn * t.bn != N else m_ok
            stores.append(st_ if ok is TRUE else If(ok, (st_,)))
    body: list[Stmt] = [
        Shared(SA, m.dtype, S * stage[SA]), Shared(SB, m.dtype, S * stage[SB]),
        Reg(ACC, dt.float32, g.acc),
        *[Assign(ACC, const(e, dt.int32), const(0.0, dt.float32)) for e in range(g.acc)],
        *pro, *loop, *stores]
    return Program(k.name, k.inputs, k.output, s.blocks(), threads, 1, 1, tuple(body), k, s)
