"""Lowering of Hopper wgmma schedules (``TensorCore.instr`` ``wgmma.*``; convention and
shared layout in ``ir/wgmma.py``) to a ``Program``.

Per block (tile BM x BN, warpgroups ``wgm x wgn``, each owning ``mt`` m64 tiles x N):
  shared A/B tiles x ``stages``   (panels of 128/64/32-byte swizzled rows: the layout the
                                   descriptors describe; every stage 1024-byte aligned)
  acc[fp32] = 0                   (mt x N/2 a thread)
  steps = window points x K tiles, copies exactly as for mma.sync (ir/lower_tc.py):
  stages == 1: for kt: copy tile kt; fence; barrier; MMA; barrier
  stages  > 1: W = wgmma groups kept in flight (``wgmma_in_flight``: 1 from 4 stages on
               with bk <= 32 and one warpgroup, else 0), D = S-1-W tiles copied ahead;
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
from .lower_tc import ACC, SA, SB, TileView
from .node import Node, const, lt, special
from .program import (Assign, Barrier, CopyCommit, CopyWait, If, Loop, Program, Reg, Shared, SharedFence,
                      Stmt, Wgmma, WgmmaCommit, WgmmaFence, WgmmaWait)


def wgmma_in_flight(stages: int, bk: int, warpgroups: int) -> int:
    """wgmma groups left in flight after each step's wait: 1 from 4 stages on with at
    most 2 K steps a group and a single warpgroup (the step's wgmmas overlap the next
    step's copy wait and barrier; copies then run ``stages - 2`` tiles ahead), else 0
    (``stages - 1`` tiles ahead). ptxas 13.0 serializes every wgmma (warning C7514) when
    4 K steps chain in a group with one kept in flight, hence the bk limit. On the H100,
    two warpgroups keeping a group in flight gave wrong sums (relative error 1.6e-2 to
    3.6e-2 at K = 1024, where right ones are near 2e-5) while one warpgroup was right
    (bench/results/h100-2026-11-23); the emulator finds no race there, the cause on the
    hardware is not established, hence the warpgroup limit."""
    return 1 if stages >= 4 and bk <= 2 * wg.WG_K and warpgroups == 1 else 0


def lower_wgmma(k, s, machine) -> Program:
    v = TileView(k, s)
    tc, m, t, st, threads, S, zero, geo = s.tensor_core, v.m, v.t, v.st, v.threads, v.S, v.zero, v.geo
    g = wg.groups(t)
    lane = v.lane
    grp, q = v.warp // wg.WARPS_PER_GROUP, v.warp % wg.WARPS_PER_GROUP
    gm_i, gn_i = grp // g.wgn, grp % g.wgn
    stage = {name: wg.stage_bytes(*geo[name]) // m.dtype.itemsize for _, name, _ in v.ops}

    def copies(step: Node, at_stage: Node) -> list[Stmt]:
        return v.copies(step, at_stage, stage, lambda name, op, row, col: wg.smem_offset(row, col, *geo[name]))

    desc = {name: wg.operand_desc(op, *geo[name]) for op, name, _ in v.ops}

    keep = wgmma_in_flight(S, t.bk, g.wgm * g.wgn)

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
        is_async = any(st[op.input].vector == tcm.UNIT for op, _, _ in v.ops)
        ahead = S - 1 - keep        # tiles in flight ahead of the one computed
        commit, wait = ([CopyCommit()], [CopyWait(ahead - 1)]) if is_async else ([], [])
        pro = []
        for i in range(ahead):
            if i < nsteps: pro += copies(const(i, dt.int32), const(i, dt.int32))
            pro += commit
        nxt = kt + ahead
        loop = [Loop(kt, (*wait, *publish, *mma(kt % S), If(lt(nxt, nsteps), tuple(copies(nxt, nxt % S))), *commit)),
                *([WgmmaWait(0)] if keep else [])]

    gr, tq = lane // 4, lane % 4
    stores = [v.store(gm_i * 4 * t.tm + i * wg.WG_M + q * 16 + gr + 8 * (e % 4 // 2), gn_i * g.n + e // 4 * 8 + tq * 2 + e % 2,
                      i * g.n // 2 + e) for i in range(g.mt) for e in range(g.n // 2)]
    body: list[Stmt] = [
        Shared(SA, m.dtype, S * stage[SA]), Shared(SB, m.dtype, S * stage[SB]),
        Reg(ACC, dt.float32, g.acc),
        *[Assign(ACC, const(e, dt.int32), const(0.0, dt.float32)) for e in range(g.acc)],
        *pro, *loop, *stores]
    return Program(k.name, k.inputs, k.output, s.blocks(), threads, 1, 1, tuple(body), k, s)
