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
so a warp's lanes write consecutive copies (coalesced). A copy is guarded by the operand
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
from .tensorcore import SA, SB  # noqa: F401  (the shared tile names; lower_staged and lower_wgmma import them here)

ACC, FA, FB = "acc", "fa", "fb"


class TileView:
    """What the tensor-core lowerings (mma.sync here, wgmma in ir/lower_wgmma.py) share:
    block indices, where a block-tile row/column and a pipeline step sit in the kernel's
    axes, the global->shared tile copies, and the epilogue's stores. The SIMT staged GEMM
    (ir/lower_staged.py) passes its own match and tiles."""

    def __init__(self, k, s, warp: int, m: tcm.Match | None = None, t: tcm.Tiles | None = None):
        self.k, self.s, self.warp_lanes = k, s, warp
        self.m, self.t = m or tcm.match_tc(k, s.tensor_core), t or tcm.tiles(k, s, warp)
        self.st = {x.input: x for x in s.staging}
        self.threads, self.S = self.t.threads, s.stages
        # the block's threads: a producer warp's included (s.threads()), not in ``threads``
        self.block, self.thread = special("block", s.blocks()), special("thread", s.threads(warp))
        self.warp, self.lane = self.thread // warp, self.thread % warp
        # grid pieces in axis order (as ir/lower does), M and N last-level block indices
        grid = [(a, p.size) for a in range(len(k.axes)) for p in s.splits[a] if p.level.value == "grid" and p.size > 1]
        self.gidx, stride = {}, 1
        for a, n in reversed(grid):
            self.gidx[a] = (self.block // stride) % n
            stride *= n
        self.zero = const(0, dt.int32)
        self.n0 = self.gidx.get(self.m.n, self.zero) * self.t.bn
        self.fixed = {self.vm(a): self.gidx.get(a, self.zero) for a in self.m.batch}
        self.N = k.axes[self.m.n].size
        self.ops = ((self.m.a, SA, self.t.bm), (self.m.b, SB, self.t.bn))
        self.geo = {name: tcm.tile_shape(op, outer, self.t.bk) for op, name, outer in self.ops}

    def vm(self, a: int) -> Node: return var(a, self.k.axes[a].size)

    def m_at(self, row) -> tuple[dict[Node, Node], Node]:
        """The M axes' indices of block-tile row ``row`` (mixed radix over their extents,
        outer -> inner) and whether all are inside their axes (padded tiles)."""
        at, ok, rest = {}, TRUE, row
        for a, e, g in reversed(list(zip(self.m.m_axes, self.t.m_ext, self.t.m_grid))):
            i = self.gidx.get(a, self.zero) * e + rest % e
            rest = rest // e
            at[self.vm(a)] = i
            if g * e != self.k.axes[a].size: ok = and_(ok, lt(i, self.k.axes[a].size))
        return at, ok

    def step_axes(self, step: Node) -> dict[Node, Node]:
        """Window positions and K offset of pipeline step ``step`` (window outer, K tiles inner)."""
        out, rest = {self.vm(self.m.k): (step % self.t.kt) * self.t.bk}, step // self.t.kt
        for a in reversed(self.m.window):
            out[self.vm(a)] = rest % self.k.axes[a].size
            rest = rest // self.k.axes[a].size
        return out

    def copies(self, step: Node, stage: Node, stage_size: dict, offset) -> list[Stmt]:
        """Copy q of each operand tile (row-major in its global orientation) by thread
        q % threads, into ``stage * stage_size[name] + offset(name, op, row, col)``."""
        out: list[Stmt] = []
        at, vk = self.step_axes(step), self.vm(self.m.k)
        for op, name, outer in self.ops:
            rows, width = self.geo[name]
            vec = self.st[op.input].vector
            for c in range(rows * width // vec // self.threads):
                row, col = tcm.copy_elem(self.thread + c * self.threads, width, vec)
                o_idx, k_idx = (col, row) if op.k_major else (row, col)
                if op is self.m.a: o_at, inside = self.m_at(o_idx)
                else: o_at, inside = {self.vm(self.m.n): self.n0 + o_idx}, self.n_inside(self.n0 + o_idx)
                src, ok = (substitute(x, {**self.fixed, **at, **o_at, vk: at[vk] + k_idx}) for x in op.load.src)
                dst = stage * stage_size[name] + offset(name, op, row, col)
                # cp.async moves 4, 8 or 16 bytes: element (2-byte) copies are plain loads;
                # rows of a padded tile past the axis end copy zeros
                out.append(SharedCopy(name, dst, op.input, src, vec, and_(ok, inside), self.S > 1 and self.is_async(op)))
        return out

    def pipeline(self, copies, compute, early: bool = False) -> list[Stmt]:
        """The main loop over the pipeline steps: ``copies(step, stage)`` fills a stage,
        ``compute(stage)`` reads it. One stage: copy, barrier, compute, barrier. More:
        a prologue copies steps 0..S-2 (one cp.async group each); step kt waits for its
        group, barrier, computes stage kt%S, then copies step kt+S-1 into the stage step
        kt-1 read (every thread passed the barrier after reading it); ``early``: those
        copies are issued before the compute (in flight during it)."""
        S, nsteps, zero = self.S, self.t.steps, self.zero
        kt = special("kt", nsteps)
        if S == 1: return [Loop(kt, (*copies(kt, zero), Barrier(), *compute(zero), Barrier()))]
        # only cp.async copies need groups (element copies land at once: the barrier publishes them)
        is_async = any(self.is_async(op) for op, _, _ in self.ops)
        commit, wait = ([CopyCommit()], [CopyWait(S - 2)]) if is_async else ([], [])
        pro: list[Stmt] = []
        for i in range(S - 1):
            if i < nsteps: pro += copies(const(i, dt.int32), const(i, dt.int32))
            pro += commit
        nxt = kt + (S - 1)
        refill = [If(lt(nxt, nsteps), tuple(copies(nxt, nxt % S))), *commit]
        body = [*refill, *compute(kt % S)] if early else [*compute(kt % S), *refill]
        return pro + [Loop(kt, (*wait, Barrier(), *body))]

    def is_async(self, op) -> bool:
        """Whether copies of operand ``op`` can be cp.async (4, 8 or 16 bytes)."""
        return self.st[op.input].vector * self.m.dtype.itemsize in (4, 8, 16)

    def n_inside(self, col: Node) -> Node:
        return lt(col, self.N) if self.t.gn * self.t.bn != self.N else TRUE

    def at(self, row, col) -> tuple[dict[Node, Node], Node]:
        """The kernel axes' indices at block-tile (row, col), and whether it is inside them."""
        m_idx, m_ok = self.m_at(row)
        return {**self.fixed, **m_idx, self.vm(self.m.n): self.n0 + col}, and_(m_ok, self.n_inside(self.n0 + col))

    def result(self, at: dict[Node, Node], acc: int) -> Node:
        """The kernel body at ``at`` with the reduction read from accumulator ``acc``."""
        reg = Node(Ops.REG, dt.float32, (const(acc, dt.int32),), ACC)
        return substitute(substitute(self.k.body, {self.k.reduce: reg}), at)

    def store(self, row, col, acc: int) -> Stmt:
        """The kernel body at block-tile (row, col) with the reduction read from accumulator
        ``acc``; a padded tile's points past the end skip it (its loads too)."""
        at, ok = self.at(row, col)
        st_ = Store(substitute(self.k.store, at), self.result(at, acc))
        return st_ if ok is TRUE else If(ok, (st_,))


def lower_tensor_core(k, s, machine) -> Program:
    v = TileView(k, s, machine.warp)
    tc, m, t, st, threads, S = s.tensor_core, v.m, v.t, v.st, v.threads, v.S
    lane = v.lane
    wm_i, wn_i = v.warp // t.wn, v.warp % t.wn
    geo = v.geo
    stage_size = {name: rows * (width + st[op.input].pad) for (op, name, _), (rows, width) in
                  zip(v.ops, (geo[SA], geo[SB]))}

    def offset(name, op, row, unit):
        rows, width = geo[name]
        x = st[op.input]
        return tcm.smem_offset(row, unit, width, x.pad, x.swizzle, x.shift)

    def copies(step: Node, stage: Node) -> list[Stmt]:
        return v.copies(step, stage, stage_size, lambda name, op, row, col: offset(name, op, row, col // tcm.UNIT) + col % tcm.UNIT)

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

    nacc = na * ntn * 4
    g, tq = lane // 4, lane % 4
    stores = [v.store(wm_i * t.tm + i * tcm.MMA_M + g + 8 * (c // 2), wn_i * t.tn + j * tcm.MMA_N + tq * 2 + c % 2,
                      (i * ntn + j) * 4 + c) for i in range(na) for j in range(ntn) for c in range(4)]
    body: list[Stmt] = [
        Shared(SA, m.dtype, S * stage_size[SA]), Shared(SB, m.dtype, S * stage_size[SB]),
        Reg(ACC, dt.float32, nacc), Reg(FA, m.dtype, na * 8), Reg(FB, m.dtype, nb * 8),
        *[Assign(ACC, const(e, dt.int32), const(0.0, dt.float32)) for e in range(nacc)],
        *v.pipeline(copies, compute), *stores]
    return Program(k.name, k.inputs, k.output, s.blocks(), threads, 1, 1, tuple(body), k, s)
