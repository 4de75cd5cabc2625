"""Lowering of a fused attention (``ir/attention.py``) under a ``Schedule(family="attention")``
to a ``Program`` of mma.sync or wgmma statements (FlashAttention-2's structure).

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

Key band (``KeyBand`` of ir/attention.py, e.g. a causal ``j <= i``): a block visits only the
key tiles [lo, hi) that hold a key one of its rows sees, in three loops: the band's lower
edge, its inside (the logit without the band's comparisons) and its upper edge (the whole
logit). A loop runs the longest count over the blocks; a block past its own count skips the
tile under a block-uniform ``If`` (no copy, no product), while the cp.async waits and commits
stay outside it (every block commits the same groups; an empty one only makes later waits
wait longer). Query tiles run heaviest first (block 0 takes the last rows).

``wgmma`` (1): both products are warpgroup MMAs (ir/wgmma.py) from shared memory; a warpgroup
owns 64 rows. Q, K, V are copied into the descriptors' swizzled panels (a quarter warp's
copies fill one 128-byte panel row: no conflicts), the scores land in the same accumulator
layout as mma.sync's, the softmax is unchanged, and P is stored (16-bit) to its own shared
tile, which with V feeds O += P V. Each product: wgmma.fence, one wgmma a 16-deep step,
commit, wait for none in flight; a ``SharedFence`` before the barrier that publishes the
landed K/V copies and before the one that publishes P. Every buffer is whole 1024-byte
atoms, so the swizzle the descriptors assume holds at every buffer's start.
"""
from __future__ import annotations

import math

from . import dtype as dt
from . import wgmma as wg
from .attention import LOG2E, SCORE, AttentionKernel
from .node import Node, Ops, TRUE, alu, const, lt, special, substitute, var
from .program import (Assign, Barrier, CopyCommit, CopyWait, FragLoad, If, Loop, Mma, Program, Reg, Shared, SharedCopy,
                      SharedFence, SharedStore, Stmt, Store, Wgmma, WgmmaCommit, WgmmaFence, WgmmaWait)
from .tensorcore import Operand

# ptxas (CUDA 13.0, sm_90a, -v) beyond the live fragments and statistics: addresses, loop state and
# temporaries, 24 plus one per 8 head-dim columns (the fragment addresses of Q, K, V rows). Fitted
# on 48 configurations (head dims 64/128, 1-8 warps, 1-2 m16 tiles a warp, 16-128 key tiles, 1-3
# stages, dense and causal): mean |error| 12, the estimate 3 below to 32 above ptxas's count.
OVERHEAD_REGS = 24
PAD = 8                     # elements of padding per shared row (16 bytes)
WARP = 32
NEG_INF = float("-inf")
SQ, SK, SV, SP, RED = "sq_tile", "sk_tile", "sv_tile", "sp_tile", "red"
QA, KB, VB, S_, PA, O_ = "qa", "kb", "vb", "s", "pa", "o"
M_, MN, MS, AL, L_, LI = "m", "mnew", "msafe", "alpha", "l", "linv"


def params_of(schedule) -> dict[str, int]:
    p = {k: schedule.param(k) for k in ("block_m", "block_n", "warps", "stages")}
    if schedule.param("wgmma", 0): p["wgmma"] = 1
    return p


def sizes(g, p: dict[str, int]) -> dict[str, int]:
    """Elements of each shared buffer. mma.sync: rows padded by ``PAD``. wgmma: the
    descriptors' swizzled panels (ir/wgmma.py), every buffer a whole number of 1024-byte
    atoms (so the emulator's and the renderer's layouts agree), P's tile besides."""
    bm, bn, st = p["block_m"], p["block_n"], p["stages"]
    if not p.get("wgmma"):
        return {SQ: bm * (g.d + PAD), SK: st * bn * (g.d + PAD), SV: st * bn * (g.dv + PAD), RED: bm * 4}
    atoms = lambda rows, width: wg.stage_bytes(rows, width) // 2  # noqa: E731 (16-bit elements)
    return {SQ: atoms(bm, g.d), SK: st * atoms(bn, g.d), SV: st * atoms(bn, g.dv), SP: atoms(bm, bn),
            RED: -(-bm * 16 // wg.ATOM_ALIGN) * wg.ATOM_ALIGN // 4}


def shared_bytes(g, p: dict[str, int], itemsize: int = 2) -> int:
    """Shared memory a block declares: the Q tile, ``stages`` K and V tiles, ``red`` (and
    with wgmma P's tile)."""
    return sum(n * (4 if name == RED else itemsize) for name, n in sizes(g, p).items())


def registers(g, p: dict[str, int]) -> int:
    """32-bit registers a thread uses: the live fragments of each of its m16 tiles (Q: d/4, the
    scores: bn/2, P packed: bn/4, the output: dv/2, the row statistics: 12) plus ptxas's
    allowance for addresses and temporaries (``OVERHEAD_REGS``). wgmma reads Q and P from
    shared memory: the scores, the output and the statistics stay, with P's conversions
    (bn/4), 24 more a second warpgroup, and with synchronous copies (1 stage) one a 16-byte
    copy of a K/V tile, which ptxas keeps in flight (ptxas on 18 points, 112-240: this 4 to 31
    above)."""
    mt = p["block_m"] // p["warps"] // 16
    bn = p["block_n"]
    if p.get("wgmma"):
        sync = bn * (g.d + g.dv) // 8 // (WARP * p["warps"]) if p["stages"] == 1 else 0
        return (bn // 2 + bn // 4 + g.dv // 2 + 12 + OVERHEAD_REGS + g.d // 8 + 24 * (p["warps"] // wg.WARPS_PER_GROUP - 1)
                + sync)
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
    if p.get("wgmma"):
        if not machine.has("wgmma"): errs.append(f"{machine.name} has no wgmma")
        if w % wg.WARPS_PER_GROUP or bm != 16 * w: errs.append(f"wgmma: block_m {bm} / warps {w}: whole warpgroups of 64 rows")
        for what, width in (("head dim", g.d), ("value head dim", g.dv), ("key tile", bn)):
            if width % 64: errs.append(f"wgmma: {what} {width} is not whole 128-byte swizzled panels")
        if bn > 256 or g.dv > 256: errs.append("wgmma: N over 256")
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
    smem = shared_bytes(g, p) + (wg.ATOM_ALIGN if p.get("wgmma") else 0)   # the renderer aligns wgmma's base up
    if smem > machine.smem_per_block: errs.append(f"shared memory {smem} B over {machine.smem_per_block}")
    if registers(g, p) > machine.max_regs_per_thread: errs.append(f"about {registers(g, p)} registers a thread (over {machine.max_regs_per_thread})")
    return errs


def _orient(k_major: bool) -> Operand:
    """A wgmma operand of that orientation (the descriptor reads nothing else of it)."""
    return Operand(-1, TRUE, -1, k_major)


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
        ab = 'bf16' if self.dtype is dt.bfloat16 else 'f16'
        self.wgmma = bool(p.get("wgmma"))
        self.instr = f"wgmma.m64nNk16.{ab}.f32" if self.wgmma else f"mma.m16n8k16.{ab}.f32"
        self.size = sizes(g, p)
        self.stage = {SK: self.size[SK] // self.st, SV: self.size[SV] // self.st}   # elements a pipeline stage

    # ---- indices -------------------------------------------------------------------
    def at(self, idx: Node, row: Node, col: Node, rows: int, cols: int) -> Node:
        nb = len(self.g.batch)
        return substitute(idx, {**self.bvars, var(nb, rows): row, var(nb + 1, cols): col})

    def row_local(self, mi: int, h: int) -> Node:
        """Block-tile row of this thread's accumulator rows (h: the upper or lower 8)."""
        return self.warp * (16 * self.mt) + (mi * 16 + 8 * h) + self.g8

    # ---- copies --------------------------------------------------------------------
    def offset(self, row, col, rows: int, width: int):
        """Element offset of tile element (row, col) in its buffer (one stage): rows padded by
        ``PAD`` for ldmatrix, or wgmma's swizzled panels."""
        return wg.smem_offset(row, col, rows, width) if self.wgmma else row * (width + PAD) + col

    def copies(self, name: str, rows: int, width: int, idx: Node, row0: Node, nrows: int, slot: int, base: Node,
               valid: Node = TRUE, async_: bool = False) -> list[Stmt]:
        per_row, out = width // 8, []
        for c in range(rows * per_row // self.threads):
            q = self.thread + c * self.threads
            row, col = q // per_row, (q % per_row) * 8
            src = self.at(idx, row0 + row, col, nrows, width)
            out.append(SharedCopy(name, base + self.offset(row, col, rows, width), slot, src, 8, valid, async_))
        return out

    def kv_copies(self, kt: Node, stage: Node, valid: Node = TRUE) -> list[Stmt]:
        g, bn = self.g, self.bn
        a = self.st > 1
        return (self.copies(SK, bn, g.d, g.k, kt * bn, g.sk, g.slots[1], stage * self.stage[SK], valid, a)
                + self.copies(SV, bn, g.dv, g.v, kt * bn, g.sk, g.slots[2], stage * self.stage[SV], valid, a))

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
        ns = bn // 8
        sidx = lambda mi, nt, c: (mi * ns + nt) * 4 + c  # noqa: E731 (mma.sync's and wgmma's accumulator layout alike)
        out = self.scores_wgmma(stage) if self.wgmma else self.scores_mma(stage)
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
            if self.wgmma:   # P to its shared tile (wgmma's A operand), row-major in swizzled panels
                for nt in range(ns):
                    for c in range(4):
                        col = nt * 8 + self.t4 * 2 + c % 2
                        pv = Node(Ops.CAST, self.dtype, (_reg(S_, sidx(mi, nt, c)),))
                        out.append(SharedStore(SP, self.offset(self.row_local(mi, c // 2), col, self.bm, bn), pv))
                continue
            # P in mma's A layout: chunk kc = key n-tiles 2kc, 2kc+1
            for kc in range(bn // 16):
                for e in range(8):
                    pv = _reg(S_, sidx(mi, 2 * kc + e // 4, e % 4))
                    out.append(Assign(PA, const((mi * (bn // 16) + kc) * 8 + e, dt.int32), Node(Ops.CAST, self.dtype, (pv,))))
        return out + (self.pv_wgmma(stage) if self.wgmma else self.pv_mma(stage))

    # ---- the two products ------------------------------------------------------------
    def scores_mma(self, stage: Node) -> list[Stmt]:
        g, bn, mt, ns = self.g, self.bn, self.mt, self.bn // 8
        out: list[Stmt] = [Assign(S_, const(i, dt.int32), _f(0.0)) for i in range(mt * ns * 4)]
        kbase = stage * self.stage[SK]
        for kk in range(g.d // 16):
            for np_ in range(bn // 16):
                out.append(FragLoad(KB, 0, SK, kbase + self.frag_addr(np_ * 16, kk * 16, g.d, False)))
                for mi in range(mt):
                    a_off = (mi * (g.d // 16) + kk) * 8
                    out.append(Mma(self.instr, S_, (mi * ns + 2 * np_) * 4, QA, a_off, KB, 0))
                    out.append(Mma(self.instr, S_, (mi * ns + 2 * np_ + 1) * 4, QA, a_off, KB, 4))
        return out

    def pv_mma(self, stage: Node) -> list[Stmt]:
        g, bn, mt, out = self.g, self.bn, self.mt, []
        vbase = stage * self.stage[SV]
        for kc in range(bn // 16):
            for dp in range(g.dv // 16):
                out.append(FragLoad(VB, 0, SV, vbase + self.frag_addr(kc * 16, dp * 16, g.dv, True), trans=True))
                for mi in range(mt):
                    a_off = (mi * (bn // 16) + kc) * 8
                    o0 = (mi * (g.dv // 8) + 2 * dp) * 4
                    out.append(Mma(self.instr, O_, o0, PA, a_off, VB, 0))
                    out.append(Mma(self.instr, O_, o0 + 4, PA, a_off, VB, 4))
        return out

    def wgmma_product(self, n: int, d: str, a: str, a_rows: int, a_width: int, b: str, b_base: Node, b_rows: int,
                      b_width: int, b_kmajor: bool, first_zeroes: bool) -> list[Stmt]:
        """D (this warpgroup's 64 rows x n) (+)= A B over A's width, 16 deep a wgmma: A row-major
        in shared (its rows from the warpgroup's first), B ``b_kmajor`` (stored [k][n]) or not
        ([n][k]); then wait for them (the softmax reads the scores, the next tile rescales O)."""
        opa, opb = _orient(False), _orient(b_kmajor)
        da, db = wg.operand_desc(opa, a_rows, a_width), wg.operand_desc(opb, b_rows, b_width)
        r0 = (self.warp // wg.WARPS_PER_GROUP) * wg.WG_M
        out: list[Stmt] = [WgmmaFence()]
        for kk in range(0, a_width, wg.WG_K):
            out.append(Wgmma(self.instr, n, d, 0, a, wg.operand_start(opa, a_rows, a_width, r0, kk), da.fields, da.trans,
                             b, b_base + wg.operand_start(opb, b_rows, b_width, 0, kk), db.fields, db.trans,
                             scale_d=not (first_zeroes and kk == 0)))
        return out + [WgmmaCommit(), WgmmaWait(0)]

    def scores_wgmma(self, stage: Node) -> list[Stmt]:
        g, bn = self.g, self.bn
        return self.wgmma_product(bn, S_, SQ, self.bm, g.d, SK, stage * self.stage[SK], bn, g.d, False, True)

    def pv_wgmma(self, stage: Node) -> list[Stmt]:
        """P's stores published to wgmma's proxy and to the warpgroup, then O += P V."""
        g, bn = self.g, self.bn
        return [SharedFence(), Barrier()] + \
            self.wgmma_product(g.dv, O_, SP, self.bm, bn, SV, stage * self.stage[SV], bn, g.dv, True, False)

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
        sz = self.size
        decl: list[Stmt] = [Shared(SQ, self.dtype, sz[SQ]), Shared(SK, self.dtype, sz[SK]), Shared(SV, self.dtype, sz[SV])]
        if self.wgmma: decl.append(Shared(SP, self.dtype, sz[SP]))
        decl += [Shared(RED, dt.float32, sz[RED]), Reg(S_, dt.float32, mt * (bn // 8) * 4), Reg(O_, dt.float32, mt * (g.dv // 8) * 4)]
        if not self.wgmma:
            decl += [Reg(QA, self.dtype, mt * (g.d // 16) * 8), Reg(KB, self.dtype, 8), Reg(VB, self.dtype, 8),
                     Reg(PA, self.dtype, mt * (bn // 16) * 8)]
        decl += [Reg(n, dt.float32, mt * 2) for n in (M_, MN, MS, AL, L_, LI)]
        init = [Assign(M_, const(r, dt.int32), _f(NEG_INF)) for r in range(mt * 2)]
        init += [Assign(L_, const(r, dt.int32), _f(0.0)) for r in range(mt * 2)]
        init += [Assign(O_, const(i, dt.int32), _f(0.0)) for i in range(mt * (g.dv // 8) * 4)]
        qcopy = self.copies(SQ, bm, g.d, g.q, self.i0, g.sq, g.slots[0], zero, TRUE, S > 1)
        qfrags = [] if self.wgmma else self.q_frags()   # wgmma reads Q from shared memory
        fence = [SharedFence()] if self.wgmma else []   # the landed copies, visible to wgmma's proxy
        lo, full_lo, full_hi, hi = (_node(x) for x in self.band.tiles(self.i0, bm, bn, self.ktiles))
        n = hi - lo                      # key tiles this block visits, in order: position p is tile lo + p
        if S == 1:
            body = qcopy + [Barrier()] + qfrags + init
            def step(p: Node, masked: bool) -> tuple[list[Stmt], list[Stmt], list[Stmt]]:
                work = self.kv_copies(lo + p, zero) + fence + [Barrier()] + self.tile(zero, lo + p, masked) + [Barrier()]
                return [], work, []
        else:
            body = qcopy + [CopyCommit()]
            for t in range(S - 1):       # positions 0 .. S-2 ahead (a copy past the block's last tile reads nothing)
                if t < self.ktiles: body += self.kv_copies(lo + t, const(t, dt.int32), lt(const(t, dt.int32), n))
                body.append(CopyCommit())
            body += [CopyWait(S - 1), Barrier()] + qfrags + init
            # wait and commit stay outside a skipped tile's condition, so every block commits the
            # same groups (a skipped iteration commits an empty one: later waits only wait longer)
            def step(p: Node, masked: bool) -> tuple[list[Stmt], list[Stmt], list[Stmt]]:
                nxt = p + (S - 1)
                work = fence + [Barrier()] + self.tile(p % S, lo + p, masked) + self.kv_copies(lo + nxt, nxt % S, lt(nxt, n))
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
