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

TMA operands (``Staging.tma``; boxes and tensor maps in ir/tma.py) replace their per-thread
copies with thread 0's ``arrive.expect_tx`` of the stage's bytes (all TMA operands' boxes)
on the stage's mbarrier followed by the boxes' bulk tensor copies; thread 0 initializes
the S mbarriers (one arrival a phase) first, then a proxy fence and a barrier publish
them. Step kt waits (every thread) for phase kt//S of mbarrier kt%S, parity (kt//S)%2,
besides the cp.async groups of any other operand; a stage's refill is issued after the
step's barrier exactly where its cp.async copies were, so the argument above holds. The
``SharedFence`` is only emitted while some operand is still written by threads (TMA
writes through the async proxy that wgmma reads through).

Warp specialization (``TensorCore.producer``, every operand by TMA): the block's THREAD
warps (consumer warpgroups) are followed by one producer warp, and the two roles run
concurrently (``Roles``), synchronized only by two mbarriers a stage:
  producer (its first thread):  for kp: wait "empty"[kp%S] phase kp//S - 1 (parity
                                (kp//S + 1) % 2: passes at once in the first round);
                                arrive.expect_tx "full"[kp%S]; the stage's boxes
  consumers:  acc = 0; for kc: wait "full"[kc%S] parity (kc//S) % 2; MMA (wait <= 0
              groups); thread 0 of each warpgroup arrives on "empty"[kc%S]; epilogue
"empty" expects one arrival a consumer warpgroup, after the ``WgmmaWait`` that retired
every wgmma reading the stage, so the producer refills a stage only once no warpgroup
reads it, and runs up to S tiles ahead with no block barrier in the loop. The kernel is
persistent: min(tiles, SMs) blocks each walk tiles b, b + grid, ... with both roles'
step counters running on across tiles (kp, kc above count from the block's first tile),
so the producer fills the next tile's stages while the consumers store the last one.
"""
from __future__ import annotations

from . import dtype as dt
from . import tensorcore as tcm
from . import tma
from . import wgmma as wg
from .lower_tc import ACC, SA, SB, TileView
from .node import TRUE, Node, Ops, axis_stride, const, lt, not_, special, substitute
from .program import (Assign, Barrier, CopyCommit, CopyWait, If, Loop, MbarArriveTx, MbarInit, Mbarriers, MbarWait, Program,
                      Reg, Roles, Shared, SharedFence, SharedStore, Stmt, Store, TmaLoad, subst_stmt, Wgmma, WgmmaCommit, WgmmaFence, WgmmaWait)

BAR = "full"    # the stages' mbarriers (TMA operands): the stage's tiles landed
SO, EPI = "so", "epi"   # a staged epilogue's shared output tile and a thread's piece of a row
EMPTY = "empty"  # with a producer warp: every consumer warpgroup is done reading the stage


def wgmma_in_flight(stages: int, bk: int, warpgroups: int, tma: bool = False, producer: bool = False) -> int:
    """wgmma groups left in flight after each step's wait: 1 from 4 stages on with at
    most 2 K steps a group and a single warpgroup (the step's wgmmas overlap the next
    step's copy wait and barrier; copies then run ``stages - 2`` tiles ahead), else 0
    (``stages - 1`` tiles ahead). ptxas 13.0 serializes every wgmma (warning C7514) when
    4 K steps chain in a group with one kept in flight, hence the bk limit. On the H100,
    two warpgroups keeping a group in flight gave wrong sums (relative error 1.6e-2 to
    3.6e-2 at K = 1024, where right ones are near 2e-5) while one warpgroup was right
    (bench/results/h100-2026-11-23); the emulator finds no race there, the cause on the
    hardware is not established, hence the warpgroup limit. With an operand copied by TMA
    (``tma``) none is kept: one warpgroup keeping a group in flight gave wrong sums there
    too (relative error 5.9e-2 to 7.0e-2, bench/results/h100-2026-11-23c), as did an
    mbarrier pipeline (per-stage "released" barriers instead of the block barrier) on
    every variant ptxas did not serialize, while the emulator found no race. With a
    ``producer`` warp none either: consumers keeping one in flight (releasing a stage one
    step late, after the wait that retired its group) summed wrongly on the H100 in every
    variant, 4 GEMMs x 6 tilings (bench/results/h100-2026-11-23d), the emulator finding no race."""
    if producer: return 0
    return 1 if stages >= 4 and bk <= 2 * wg.WG_K and warpgroups == 1 and not tma else 0


def lower_wgmma(k, s, machine) -> Program:
    v = TileView(k, s, machine.warp)
    tc, m, t, st, threads, S, zero, geo = s.tensor_core, v.m, v.t, v.st, v.threads, v.S, v.zero, v.geo
    g = wg.groups(t)
    lane = v.lane
    grp, q = v.warp // wg.WARPS_PER_GROUP, v.warp % wg.WARPS_PER_GROUP
    gm_i, gn_i = grp // g.wgn, grp % g.wgn
    stage = {name: wg.stage_bytes(*geo[name]) // m.dtype.itemsize for _, name, _ in v.ops}

    views = {name: tma.view(k, m, t, op) for op, name, _ in v.ops if st[op.input].tma}
    why = [f"{name}: {x}" for name, x in views.items() if isinstance(x, str)]
    if why: raise ValueError(f"TMA cannot copy {'; '.join(why)} (ir.schedule.check says so)")
    thread_copied = [name for _, name, _ in v.ops if name not in views]

    def copies(step: Node, at_stage: Node) -> list[Stmt]:
        """Every thread's copies of the operands not copied by TMA, then thread 0's boxes."""
        out = [c for c in v.copies(step, at_stage, stage, lambda name, op, row, col: wg.smem_offset(row, col, *geo[name]))
               if c.name in thread_copied] if thread_copied else []
        return out + tma_copies(step, at_stage) if views else out

    def tma_copies(step: Node, at_stage: Node) -> list[Stmt]:
        return [If(lt(v.thread, 1), tuple(tma_boxes(step, at_stage)))]   # thread 0 issues them

    def box_origin(op: tcm.Operand, name: str, step: Node, j: int) -> dict[int, Node]:
        """The kernel axes' values at the first element of panel ``j`` of the operand's tile
        at pipeline step ``step`` (K, window and batch; M or N along the tile)."""
        col = j * wg.panel(geo[name][1])          # the panel's first column (along the contiguous axis)
        at = {**v.fixed, **v.step_axes(step)}
        if not op.k_major: at[v.vm(m.k)] = at[v.vm(m.k)] + col
        at.update(v.m_at(col if op.k_major else 0)[0] if op is m.a else {v.vm(m.n): v.n0 + (col if op.k_major else 0)})
        return {x.arg[0]: e for x, e in at.items()}

    def tma_boxes(step: Node, at_stage: Node) -> list[Stmt]:
        """Arm the stage's mbarrier for its bytes, then every TMA operand's boxes."""
        nbytes = sum(geo[name][0] * geo[name][1] * m.dtype.itemsize for name in views)
        body: list[Stmt] = [MbarArriveTx(BAR, at_stage, nbytes)]
        for op, name, outer in v.ops:
            if name not in views: continue
            for off, coords in tma.boxes(views[name], *geo[name], lambda j: box_origin(op, name, step, j)):
                body.append(TmaLoad(name, at_stage * stage[name] + off, views[name].map, coords, BAR, at_stage))
        return body

    desc = {name: wg.operand_desc(op, *geo[name]) for op, name, _ in v.ops}

    keep = wgmma_in_flight(S, t.bk, g.wgm * g.wgn, bool(views), tc.producer)

    def mma(at_stage: Node) -> list[Stmt]:
        body: list[Stmt] = [WgmmaFence()]
        for kk in range(0, t.bk, wg.WG_K):
            b0 = at_stage * stage[SB] + wg.operand_start(m.b, *geo[SB], gn_i * g.n, kk)
            for i in range(g.mt):
                a0 = at_stage * stage[SA] + wg.operand_start(m.a, *geo[SA], gm_i * 4 * t.tm + i * wg.WG_M, kk)
                body.append(Wgmma(tc.instr, g.n, ACC, i * g.n // 2, SA, a0, desc[SA].fields, desc[SA].trans,
                                  SB, b0, desc[SB].fields, desc[SB].trans))
        return body + [WgmmaCommit(), WgmmaWait(keep)]

    gr, tq = lane // 4, lane % 4
    frag = [(gm_i * 4 * t.tm + i * wg.WG_M + q * 16 + gr + 8 * (e % 4 // 2), gn_i * g.n + e // 4 * 8 + tq * 2 + e % 2,
             i * g.n // 2 + e) for i in range(g.mt) for e in range(g.n // 2)]   # (tile row, column, accumulator)
    shared = [Shared(SA, m.dtype, S * stage[SA]), Shared(SB, m.dtype, S * stage[SB])]
    if wg.staged_epilogue(k, s):
        shared.append(Shared(SO, k.output.dtype, t.bm * (t.bn + wg.EPI_PAD)))
        stores = staged_stores(v, frag)
    else:
        stores = [v.store(*x) for x in frag]
    acc = [Reg(ACC, dt.float32, g.acc), *[Assign(ACC, const(e, dt.int32), const(0.0, dt.float32)) for e in range(g.acc)]]
    if s.tensor_core.producer:
        grid = min(s.blocks(), machine.cores)   # persistent: one block an SM walks the tiles
        body = warp_specialized(v, g, tma_boxes, mma, shared, acc, stores, grid)
        return Program(k.name, k.inputs, k.output, grid, s.threads(machine.warp), 1, 1, tuple(body), k, s)

    nsteps = t.steps
    kt = special("kt", nsteps)
    publish = [*([SharedFence()] if thread_copied else []), Barrier()]
    # TMA: thread 0 sets up one mbarrier a stage (one arrival a phase), published to every thread and the async proxy
    bars = [Mbarriers(BAR, S), If(lt(v.thread, 1), tuple(MbarInit(BAR, const(i, dt.int32), 1) for i in range(S))),
            SharedFence(), Barrier()] if views else []
    landed = [MbarWait(BAR, kt % S, (kt // S) % 2)] if views else []
    if S == 1:
        pro: list[Stmt] = []
        loop = [Loop(kt, (*copies(kt, zero), *landed, *publish, *mma(zero), Barrier()))]
    else:
        is_async = any(st[op.input].vector == tcm.UNIT for op, name, _ in v.ops if name in thread_copied)
        ahead = S - 1 - keep        # tiles in flight ahead of the one computed
        commit, wait = ([CopyCommit()], [CopyWait(ahead - 1)]) if is_async else ([], [])
        pro = []
        for i in range(ahead):
            if i < nsteps: pro += copies(const(i, dt.int32), const(i, dt.int32))
            pro += commit
        nxt = kt + ahead
        loop = [Loop(kt, (*wait, *landed, *publish, *mma(kt % S), If(lt(nxt, nsteps), tuple(copies(nxt, nxt % S))), *commit)),
                *([WgmmaWait(0)] if keep else [])]

    body: list[Stmt] = [*shared, *bars[:1], *acc, *bars[1:], *pro, *loop, *stores]
    return Program(k.name, k.inputs, k.output, s.blocks(), threads, 1, 1, tuple(body), k, s)


def pieces_along_m(k, m: tcm.Match, t: tcm.Tiles) -> bool:
    """Whether a staged epilogue writes 16-byte pieces along M (the output's contiguous
    axis is the tile's innermost M axis: an NCHW conv's output row) rather than along N."""
    vec = 16 // k.output.dtype.itemsize
    return axis_stride(k.store, m.m_axes[-1], k.axes[m.m_axes[-1]].size) == 1 and t.m_ext[-1] % vec == 0


def staged_stores(v: TileView, frag: list[tuple[Node, Node, int]]) -> list[Stmt]:
    """The epilogue through shared tile ``SO`` (rows padded by ``wg.EPI_PAD``): every
    consumer writes its fragments' results, then each writes whole 16-byte pieces of the
    tile to the output, along its rows (N) or, where the output is contiguous along M, its
    columns (``pieces_along_m``), the consumers' named barrier before each half (the
    first: the last tile's pieces are read)."""
    t, k, consumers = v.t, v.k, v.threads
    od, width = k.output.dtype, t.bn + wg.EPI_PAD
    vec = 16 // od.itemsize

    def guarded(st: Stmt, ok: Node) -> Stmt: return st if ok is TRUE else If(ok, (st,))

    fill = [guarded(SharedStore(SO, row * width + col, v.result(at, acc)), ok)
            for row, col, acc in frag for at, ok in (v.at(row, col),)]
    along_m = pieces_along_m(k, v.m, t)
    out: list[Stmt] = []
    for j in range(t.bm * t.bn // vec // consumers):
        c = v.thread + j * consumers
        # a piece: vec elements along the output's contiguous direction; lanes along the
        # tile's columns when that is M, so each lane's shared reads hit other banks
        row, col = (c // t.bn * vec, c % t.bn) if along_m else (c // (t.bn // vec), c % (t.bn // vec) * vec)
        elems = [(row + e, col) if along_m else (row, col + e) for e in range(vec)]
        out += [Assign(EPI, const(e, dt.int32), Node(Ops.SHARED, od, (r * width + cc,), SO)) for e, (r, cc) in enumerate(elems)]
        for e, (r, cc) in enumerate(elems):
            at, ok = v.at(r, cc)
            out.append(guarded(Store(substitute(k.store, at), Node(Ops.REG, od, (const(e, dt.int32),), EPI)), ok))
    return [Reg(EPI, od, vec), Barrier(consumers), *fill, Barrier(consumers), *out]


def warp_specialized(v: TileView, g: wg.Groups, boxes, mma, shared: list[Stmt], acc: list[Stmt],
                     stores: list[Stmt], grid: int) -> list[Stmt]:
    """The persistent producer warp / consumer warpgroups program (module docstring):
    ``boxes(step, stage)`` arms "full"[stage] and issues the step's TMA boxes,
    ``mma(stage)`` is one step's wgmma group ending in a wait for it, ``stores`` the
    epilogue; ``grid`` blocks walk the schedule's tiles (block b takes tiles b, b + grid, ...)."""
    S, nsteps, consumers, tiles = v.S, v.t.steps, v.threads, v.s.blocks()
    rounds = -(-tiles // grid)
    pblock = special("block", grid)

    def per_tile(role: str, body) -> Loop:
        """``body(step)`` for each of the block's tiles (skipped past the last tile), ``step(k)``
        the pipeline step of the tile's K step ``k`` (the steps run on across tiles); each
        role its own tile loop (the roles run apart)."""
        it = special(f"{role}tile", rounds)
        tile = pblock + it * grid
        stmts = tuple(subst_stmt(x, {v.block: tile}) for x in body(lambda k: it * nsteps + k))
        return Loop(it, stmts if tiles % grid == 0 else (If(lt(tile, tiles), stmts),))

    init = tuple(MbarInit(bar, const(i, dt.int32), n) for i in range(S) for bar, n in ((BAR, 1), (EMPTY, g.wgm * g.wgn)))
    kp, kc = special("kp", nsteps), special("kc", nsteps)
    leader = not_(v.thread % (wg.WARPS_PER_GROUP * v.warp_lanes))   # thread 0 of each warpgroup

    def producer(step) -> tuple[Stmt, ...]:
        return (Loop(kp, (MbarWait(EMPTY, step(kp) % S, (step(kp) // S + 1) % 2), *boxes(kp, step(kp) % S))),)

    def consumer(step) -> tuple[Stmt, ...]:
        release = If(leader, (MbarArriveTx(EMPTY, step(kc) % S, 0),))
        return (*acc[1:], Loop(kc, (MbarWait(BAR, step(kc) % S, (step(kc) // S) % 2), *mma(step(kc) % S), release)), *stores)
    roles = Roles((If(not_(v.thread - consumers), (per_tile("p", producer),)), If(lt(v.thread, consumers), (per_tile("c", consumer),))))
    return [*shared, Mbarriers(BAR, S), Mbarriers(EMPTY, S), acc[0], If(lt(v.thread, 1), init), SharedFence(), Barrier(), roles]
