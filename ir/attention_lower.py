"""Lowering of a fused attention (``ir/attention.py``) under a ``Schedule(family="attention")``
to a ``Program`` of mma.sync statements (FlashAttention-2's structure).

Parameters (``Schedule.params``): ``block_m`` query rows a block, ``block_n`` keys a tile,
``warps`` (each owns ``block_m / warps`` rows, 16 or 32: one or two m16 tiles), ``stages``
(1: synchronous K/V copies; 2-3: cp.async pipeline, as ir/lower_tc.py).

Per block (one batch index, ``block_m`` query rows), threads = 32 * warps:
  Q tile -> shared (16-byte copies) -> ldmatrix into registers once
  m = -inf, l = 0, O = 0                       (per thread: rows g and g+8 of each m16 tile)
  for each key tile kt (K and V tiles through shared memory, ``stages`` deep):
    S = Q K^T                                   (mma.m16n8k16, K fragments by ldmatrix)
    S = logit(S, i, j)                          (the graph's scale / mask, elementwise)
    row max: each thread's partial -> shared ``red``; barrier; the 4 partials of a row read back
    m' = max(m, tile max); safe = m' == -inf ? 0 : m'   (a fully masked row so far: weights 0)
    a = exp(m - safe); P = exp(S - safe); l = l a + rowsum(P) (this thread's columns); O *= a
    O += P V                                    (P's accumulator layout is mma's A layout: no
                                                 data movement, a cast to 16 bits; V by ldmatrix.trans)
  l summed over a row's 4 threads (through ``red``); out = O / l  (a fully masked row: 0/0 = NaN,
  as numpy's softmax of a row of -inf)
Shared tiles are row-major with rows padded by 16 bytes: ldmatrix's 8 rows of 16 bytes fall in
8 different 4-bank groups, and a quarter warp's 16-byte copies fill one 128-byte row span,
so neither conflicts; ``red`` is written 32 consecutive words a warp and read as 8 distinct
words (4 banks apart) broadcast to a row's 4 threads.
"""
from __future__ import annotations

import math

from . import dtype as dt
from .attention import LOG2E, SCORE, AttentionKernel
from .node import Node, Ops, TRUE, alu, const, lt, special, substitute, var
from .program import (Assign, Barrier, CopyCommit, CopyWait, FragLoad, If, Loop, Mma, Program, Reg, Shared, SharedCopy,
                      SharedStore, Stmt, Store)

# ptxas (CUDA 13.0, sm_90a, -v) beyond the live fragments and statistics: addresses, loop state and
# temporaries, 24 plus one per 8 head-dim columns (the fragment addresses of Q, K, V rows). Fitted
# on 48 configurations (head dims 64/128, 1-8 warps, 1-2 m16 tiles a warp, 16-128 key tiles, 1-3
# stages, dense and causal): mean |error| 12, the estimate 3 below to 32 above ptxas's count.
OVERHEAD_REGS = 24
PAD = 8                     # elements of padding per shared row (16 bytes)
WARP = 32
NEG_INF = float("-inf")
SQ, SK, SV, RED = "sq_tile", "sk_tile", "sv_tile", "red"
QA, KB, VB, S_, PA, O_ = "qa", "kb", "vb", "s", "pa", "o"
M_, MN, MS, AL, L_, LI = "m", "mnew", "msafe", "alpha", "l", "linv"


def params_of(schedule) -> dict[str, int]:
    return {k: schedule.param(k) for k in ("block_m", "block_n", "warps", "stages")}


def shared_bytes(g, p: dict[str, int], itemsize: int = 2) -> int:
    """Shared memory a block declares: the Q tile, ``stages`` K and V tiles, ``red``."""
    bm, bn, st = p["block_m"], p["block_n"], p["stages"]
    return (bm * (g.d + PAD) + st * bn * (g.d + PAD) + st * bn * (g.dv + PAD)) * itemsize + bm * 4 * 4


def registers(g, p: dict[str, int]) -> int:
    """32-bit registers a thread uses: the live fragments of each of its m16 tiles (Q: d/4, the
    scores: bn/2, P packed: bn/4, the output: dv/2, the row statistics: 12) plus ptxas's
    allowance for addresses and temporaries (``OVERHEAD_REGS``)."""
    mt = p["block_m"] // p["warps"] // 16
    bn = p["block_n"]
    return mt * (g.d // 4 + bn // 2 + bn // 4 + g.dv // 2 + 12) + OVERHEAD_REGS + g.d // 8


def blocks_by_registers(regs: int, warps: int, machine) -> int:
    """Blocks an SM holds by its register file: a warp's registers are allocated in units of
    256 (8 a thread), and a block needs all its warps resident."""
    per_warp = -(-min(regs, machine.max_regs_per_thread) // 8) * 8 * machine.warp
    return machine.regs_per_sm // per_warp // warps


def tile_ranges(g, p: dict[str, int]) -> list[tuple[int, int, int, int]]:
    """Per query tile (in row order), ``KeyBand.tiles``: the key tiles its block visits
    [lo, hi) and the unmasked ones [full_lo, full_hi) among them."""
    bm, bn = p["block_m"], p["block_n"]
    return [g.band.tiles(t * bm, bm, bn, g.sk // bn) for t in range(g.sq // bm)]


def check(kernel, p: dict[str, int], machine) -> list[str]:
    """Every reason ``p`` cannot run ``kernel`` on ``machine`` (analytic counts)."""
    g, errs = kernel.geometry, []
    bm, bn, w, st = p["block_m"], p["block_n"], p["warps"], p["stages"]
    if not machine.has("mma.sync"): errs.append(f"{machine.name} has no mma.sync")
    if kernel.inputs[g.slots[0]].dtype not in (dt.float16, dt.bfloat16): errs.append("Q, K, V must be 16-bit floats")
    if len({kernel.inputs[s].dtype for s in g.slots}) != 1: errs.append("Q, K and V differ in dtype")
    if g.d % 16 or g.dv % 16 or g.d > 256 or g.dv > 256: errs.append(f"head dims {g.d}/{g.dv} must be multiples of 16 up to 256")
    if w not in (1, 2, 4, 8) or bm % (16 * w) or bm // w not in (16, 32): errs.append(f"block_m {bm} / warps {w}: 16 or 32 rows a warp")
    if bn % 16 or bn < 16: errs.append(f"block_n {bn} must be a multiple of 16")
    if st not in (1, 2, 3): errs.append(f"stages {st} not in 1..3")
    if g.sq % bm or g.sk % bn: errs.append(f"queries {g.sq} / keys {g.sk} not divisible by tiles {bm} x {bn}")
    threads = WARP * w
    for what, rows, width in (("Q", bm, g.d), ("K", bn, g.d), ("V", bn, g.dv)):
        if rows * width // 8 % threads: errs.append(f"{what} tile's 16-byte copies ({rows * width // 8}) do not split over {threads} threads")
    for name in ("q", "k", "v"):
        if (why := g.rows_ok(name)) is not None: errs.append(f"{name.upper()}: {why}")
    if shared_bytes(g, p) > machine.smem_per_block: errs.append(f"shared memory {shared_bytes(g, p)} B over {machine.smem_per_block}")
    if registers(g, p) > machine.max_regs_per_thread: errs.append(f"about {registers(g, p)} registers a thread (over {machine.max_regs_per_thread})")
    return errs


def _node(x: Node | int) -> Node: return x if isinstance(x, Node) else const(x, dt.int32)
def _reg(name: str, i: int, d: dt.DType = dt.float32) -> Node: return Node(Ops.REG, d, (const(i, dt.int32),), name)
def _f(x: float) -> Node: return const(x, dt.float32)


def _tree(op: Ops, xs: list[Node]) -> Node:
    while len(xs) > 1: xs = [alu(op, xs[i], xs[i + 1]) if i + 1 < len(xs) else xs[i] for i in range(0, len(xs), 2)]
    return xs[0]


class _Lower:
    def __init__(self, k: AttentionKernel, p: dict[str, int]):
        self.k, self.g = k, k.geometry
        g = self.g
        self.p = p
        self.bm, self.bn, self.w, self.st = p["block_m"], p["block_n"], p["warps"], p["stages"]
        self.mt = self.bm // self.w // 16
        self.threads = WARP * self.w
        self.qtiles, self.ktiles = g.sq // self.bm, g.sk // self.bn
        self.blocks = g.heads * self.qtiles
        self.dtype = k.inputs[g.slots[0]].dtype
        self.block, self.thread = special("block", self.blocks), special("thread", self.threads)
        self.warp, lane = self.thread // WARP, self.thread % WARP
        self.g8, self.t4, self.jm, self.r8 = lane // 4, lane % 4, lane // 8, lane % 8
        self.band = g.band
        # heaviest query tiles first (a causal band): the last wave's blocks are the short ones
        counts = [r[3] - r[0] for r in tile_ranges(g, p)]
        qt = self.block % self.qtiles
        self.qt = qt * -1 + (self.qtiles - 1) if counts[-1] > counts[0] else qt
        self.i0 = self.qt * self.bm
        bh, self.bvars = self.block // self.qtiles, {}
        for a in reversed(range(len(g.batch))):   # the batch coordinates, row-major
            self.bvars[var(a, g.batch[a])] = bh % g.batch[a]
            bh = bh // g.batch[a]
        self.instr = f"mma.m16n8k16.{'bf16' if self.dtype is dt.bfloat16 else 'f16'}.f32"

    # ---- indices -------------------------------------------------------------------
    def at(self, idx: Node, row: Node, col: Node, rows: int, cols: int) -> Node:
        nb = len(self.g.batch)
        return substitute(idx, {**self.bvars, var(nb, rows): row, var(nb + 1, cols): col})

    def row_local(self, mi: int, h: int) -> Node:
        """Block-tile row of this thread's accumulator rows (h: the upper or lower 8)."""
        return self.warp * (16 * self.mt) + (mi * 16 + 8 * h) + self.g8

    # ---- copies --------------------------------------------------------------------
    def copies(self, name: str, rows: int, width: int, idx: Node, row0: Node, nrows: int, slot: int, base: Node,
               valid: Node = TRUE, async_: bool = False) -> list[Stmt]:
        per_row, out = width // 8, []
        for c in range(rows * per_row // self.threads):
            q = self.thread + c * self.threads
            row, col = q // per_row, (q % per_row) * 8
            src = self.at(idx, row0 + row, col, nrows, width)
            out.append(SharedCopy(name, base + row * (width + PAD) + col, slot, src, 8, valid, async_))
        return out

    def kv_copies(self, kt: Node, stage: Node, valid: Node = TRUE) -> list[Stmt]:
        g, bn = self.g, self.bn
        a = self.st > 1
        return (self.copies(SK, bn, g.d, g.k, kt * bn, g.sk, g.slots[1], stage * (bn * (g.d + PAD)), valid, a)
                + self.copies(SV, bn, g.dv, g.v, kt * bn, g.sk, g.slots[2], stage * (bn * (g.dv + PAD)), valid, a))

    # ---- fragments -----------------------------------------------------------------
    def frag_addr(self, r0: Node | int, c0: int, width: int, row_hi_first: bool) -> Node:
        """ldmatrix.x4 row address of this lane: matrix jm = lane // 8 at rows r0 + (8 if the
        matrix's row bit) and columns c0 + (8 if its column bit). A (Q) and trans V: row bit
        = jm % 2; K (B, non-trans): row bit = jm // 2."""
        rb, cb = (self.jm % 2, self.jm // 2) if row_hi_first else (self.jm // 2, self.jm % 2)
        return (self.r8 + rb * 8 + r0) * (width + PAD) + cb * 8 + c0

    def q_frags(self) -> list[Stmt]:
        g, out = self.g, []
        for mi in range(self.mt):
            for kk in range(g.d // 16):
                r0 = self.warp * (16 * self.mt) + mi * 16
                out.append(FragLoad(QA, (mi * (g.d // 16) + kk) * 8, SQ, self.frag_addr(r0, kk * 16, g.d, True)))
        return out

    # ---- one key tile ----------------------------------------------------------------
    def tile(self, stage: Node, kt: Node, masked: bool) -> list[Stmt]:
        """Key tile ``kt`` from shared stage ``stage``; ``masked``: the band's edge crosses it
        (the whole logit), else every key is visible to every row (the band's inside)."""
        g, bn, mt = self.g, self.bn, self.mt
        logit = g.logit if masked else self.band.inside
        ns, out = bn // 8, []
        sidx = lambda mi, nt, c: (mi * ns + nt) * 4 + c  # noqa: E731
        out += [Assign(S_, const(i, dt.int32), _f(0.0)) for i in range(mt * ns * 4)]
        kbase = stage * (bn * (g.d + PAD))
        for kk in range(g.d // 16):
            for np_ in range(bn // 16):
                out.append(FragLoad(KB, 0, SK, kbase + self.frag_addr(np_ * 16, kk * 16, g.d, False)))
                for mi in range(mt):
                    a_off = (mi * (g.d // 16) + kk) * 8
                    out.append(Mma(self.instr, S_, sidx(mi, 2 * np_, 0), QA, a_off, KB, 0))
                    out.append(Mma(self.instr, S_, sidx(mi, 2 * np_ + 1, 0), QA, a_off, KB, 4))
        # the graph's logit, element by element (global row i, key j)
        j0 = kt * bn
        for mi in range(mt):
            for nt in range(ns):
                for c in range(4):
                    i = self.i0 + self.row_local(mi, c // 2)
                    j = j0 + (nt * 8 + c % 2) + self.t4 * 2
                    x = self.at(substitute(logit, {SCORE: _reg(S_, sidx(mi, nt, c))}), i, j, g.sq, g.sk)
                    out.append(Assign(S_, const(sidx(mi, nt, c), dt.int32), x))
        # row max: partial per thread -> red -> the row's 4 partials
        for mi in range(mt):
            for h in range(2):
                part = _tree(Ops.MAX, [_reg(S_, sidx(mi, nt, 2 * h + e)) for nt in range(ns) for e in range(2)])
                out.append(SharedStore(RED, self.row_local(mi, h) * 4 + self.t4, part))
        out.append(Barrier())
        for mi in range(mt):
            for h in range(2):
                r = mi * 2 + h
                row = self.row_local(mi, h) * 4
                tot = _tree(Ops.MAX, [Node(Ops.SHARED, dt.float32, (row + q,), RED) for q in range(4)])
                out.append(Assign(MN, const(r, dt.int32), alu(Ops.MAX, _reg(M_, r), tot)))
                mn = _reg(MN, r)
                out.append(Assign(MS, const(r, dt.int32), alu(Ops.WHERE, alu(Ops.CMPEQ, mn, _f(NEG_INF)), _f(0.0), mn)))
                ms = _reg(MS, r)
                out.append(Assign(AL, const(r, dt.int32), alu(Ops.EXP2, (_reg(M_, r) - ms) * _f(LOG2E))))
                out.append(Assign(M_, const(r, dt.int32), mn))
        for mi in range(mt):
            for nt in range(ns):
                for c in range(4):
                    ms = _reg(MS, mi * 2 + c // 2)
                    out.append(Assign(S_, const(sidx(mi, nt, c), dt.int32),
                                      alu(Ops.EXP2, (_reg(S_, sidx(mi, nt, c)) - ms) * _f(LOG2E))))
            for h in range(2):
                r = mi * 2 + h
                psum = _tree(Ops.ADD, [_reg(S_, sidx(mi, nt, 2 * h + e)) for nt in range(ns) for e in range(2)])
                out.append(Assign(L_, const(r, dt.int32), _reg(L_, r) * _reg(AL, r) + psum))
            for nt in range(g.dv // 8):
                for c in range(4):
                    oi = (mi * (g.dv // 8) + nt) * 4 + c
                    out.append(Assign(O_, const(oi, dt.int32), _reg(O_, oi) * _reg(AL, mi * 2 + c // 2)))
            # P in mma's A layout: chunk kc = key n-tiles 2kc, 2kc+1
            for kc in range(bn // 16):
                for e in range(8):
                    pv = _reg(S_, sidx(mi, 2 * kc + e // 4, e % 4))
                    out.append(Assign(PA, const((mi * (bn // 16) + kc) * 8 + e, dt.int32), Node(Ops.CAST, self.dtype, (pv,))))
        vbase = stage * (bn * (g.dv + PAD))
        for kc in range(bn // 16):
            for dp in range(g.dv // 16):
                out.append(FragLoad(VB, 0, SV, vbase + self.frag_addr(kc * 16, dp * 16, g.dv, True), trans=True))
                for mi in range(mt):
                    a_off = (mi * (bn // 16) + kc) * 8
                    o0 = (mi * (g.dv // 8) + 2 * dp) * 4
                    out.append(Mma(self.instr, O_, o0, PA, a_off, VB, 0))
                    out.append(Mma(self.instr, O_, o0 + 4, PA, a_off, VB, 4))
        return out

    # ---- the program -----------------------------------------------------------------------
    def epilogue(self) -> list[Stmt]:
        g, mt, out = self.g, self.mt, [Barrier()]   # every warp is done reading ``red``
        for mi in range(mt):
            for h in range(2):
                out.append(SharedStore(RED, self.row_local(mi, h) * 4 + self.t4, _reg(L_, mi * 2 + h)))
        out.append(Barrier())
        for mi in range(mt):
            for h in range(2):
                row = self.row_local(mi, h) * 4
                tot = _tree(Ops.ADD, [Node(Ops.SHARED, dt.float32, (row + q,), RED) for q in range(4)])
                out.append(Assign(LI, const(mi * 2 + h, dt.int32), alu(Ops.RECIP, tot)))
        for mi in range(mt):
            for nt in range(g.dv // 8):
                for c in range(4):
                    oi = (mi * (g.dv // 8) + nt) * 4 + c
                    i = self.i0 + self.row_local(mi, c // 2)
                    col = self.t4 * 2 + (nt * 8 + c % 2)
                    out.append(Store(self.at(g.out, i, col, g.sq, g.dv), _reg(O_, oi) * _reg(LI, mi * 2 + c // 2)))
        return out

    def program(self) -> Program:
        g, bm, bn, mt, S = self.g, self.bm, self.bn, self.mt, self.st
        zero = const(0, dt.int32)
        decl: list[Stmt] = [Shared(SQ, self.dtype, bm * (g.d + PAD)), Shared(SK, self.dtype, S * bn * (g.d + PAD)),
                            Shared(SV, self.dtype, S * bn * (g.dv + PAD)), Shared(RED, dt.float32, bm * 4),
                            Reg(QA, self.dtype, mt * (g.d // 16) * 8), Reg(KB, self.dtype, 8), Reg(VB, self.dtype, 8),
                            Reg(S_, dt.float32, mt * (bn // 8) * 4), Reg(PA, self.dtype, mt * (bn // 16) * 8),
                            Reg(O_, dt.float32, mt * (g.dv // 8) * 4)]
        decl += [Reg(n, dt.float32, mt * 2) for n in (M_, MN, MS, AL, L_, LI)]
        init = [Assign(M_, const(r, dt.int32), _f(NEG_INF)) for r in range(mt * 2)]
        init += [Assign(L_, const(r, dt.int32), _f(0.0)) for r in range(mt * 2)]
        init += [Assign(O_, const(i, dt.int32), _f(0.0)) for i in range(mt * (g.dv // 8) * 4)]
        qcopy = self.copies(SQ, bm, g.d, g.q, self.i0, g.sq, g.slots[0], zero, TRUE, S > 1)
        lo, full_lo, full_hi, hi = (_node(x) for x in self.band.tiles(self.i0, bm, bn, self.ktiles))
        n = hi - lo                      # key tiles this block visits, in order: position p is tile lo + p
        if S == 1:
            body = qcopy + [Barrier()] + self.q_frags() + init
            def step(p: Node, masked: bool) -> tuple[list[Stmt], list[Stmt], list[Stmt]]:
                return [], self.kv_copies(lo + p, zero) + [Barrier()] + self.tile(zero, lo + p, masked) + [Barrier()], []
        else:
            body = qcopy + [CopyCommit()]
            for t in range(S - 1):       # positions 0 .. S-2 ahead (a copy past the block's last tile reads nothing)
                if t < self.ktiles: body += self.kv_copies(lo + t, const(t, dt.int32), lt(const(t, dt.int32), n))
                body.append(CopyCommit())
            body += [CopyWait(S - 1), Barrier()] + self.q_frags() + init
            # wait and commit stay outside a skipped tile's condition, so every block commits the
            # same groups (a skipped iteration commits an empty one: later waits only wait longer)
            def step(p: Node, masked: bool) -> tuple[list[Stmt], list[Stmt], list[Stmt]]:
                nxt = p + (S - 1)
                work = [Barrier()] + self.tile(p % S, lo + p, masked) + self.kv_copies(lo + nxt, nxt % S, lt(nxt, n))
                return [CopyWait(S - 2)], work, [CopyCommit()]
        # three segments: the band's lower edge (masked), its inside (unmasked), its upper edge (masked)
        bounds = (_node(0), full_lo - lo, full_hi - lo, n)
        ranges = tile_ranges(g, self.p)
        for seg in range(3):
            size = max(r[seg + 1] - r[seg] for r in ranges)   # the longest over the blocks
            if size == 0: continue
            v = special(f"kt{seg}", size)
            pre, work, post = step(bounds[seg] + v, seg != 1)
            if any(r[seg + 1] - r[seg] != size for r in ranges):   # block-dependent: skip past its own count
                work = [If(lt(v, bounds[seg + 1] - bounds[seg]), tuple(work))]
            body.append(Loop(v, tuple(pre + work + post)))
        body += self.epilogue()
        return Program(f"{self.k.name}_attention", self.k.inputs, self.k.output, self.blocks, self.threads, 1, 1,
                       tuple(decl + body), self.k, None)


def lower_attention(kernel: AttentionKernel, schedule, machine) -> Program:
    p = params_of(schedule)
    errs = check(kernel, p, machine)
    if errs: raise ValueError("; ".join(errs))
    prog = _Lower(kernel, p).program()
    return Program(prog.name, prog.inputs, prog.output, prog.blocks, prog.threads, 1, 1, prog.body, kernel, schedule)
