"""Shared-memory staged SIMT GEMM: fp32 GEMM (batched GEMM, convolution as implicit GEMM)
schedules with ``Schedule.staging`` set and no tensor core, lowered to a ``Program``.

Schedule convention (the GEMM view of ``ir/tensorcore.match(..., simt=True)``):
- M axis: ``GRID gm x THREAD wm x UPCAST tm``, N axis: ``GRID gn x THREAD wn x UPCAST tn``
  (THREAD counts threads here, not warps); M and N may be padded (``gm = ceil(M / BM)``,
  copies past the end zero-fill, stores are guarded);
- K axis: ``LOOP kt x UNROLL bk`` (bk: the K depth staged per step), dividing K exactly;
- batch axes GRID only; a convolution (implicit GEMM, ir/tensorcore.match) has its filter
  window as whole LOOP axes: the pipeline runs over window points x K tiles, copies honour
  the input's padding mask (zero-fill); M is one axis (no flattened M tiles);
- ``staging``: both operands, ``pad`` (elements appended to each shared tile row, a
  multiple of 4 so 16-byte rows stay aligned) and/or an XOR ``swizzle`` of 16-byte units
  (``smem_offset``: unit u of the tile, row-major, goes to u ^ ((u >> shift) & (2^swizzle
  - 1))); ``vector`` 4 (16-byte copies,
  where the operand is contiguous and aligned) or 1; ``stages`` the pipeline depth
  (cp.async from 2 on).
Per block a BM x BN tile (BM = wm*tm, BN = wn*tn), the TileView pipeline of
ir/lower_tc.py: per K step the A (BM x bk) and B (bk x BN) tiles are copied global ->
shared in their global orientation (row-major over the tile, copy q by thread q %
threads: a warp writes consecutive 16-byte rows), barrier, then every thread updates its
tm x tn accumulators from shared memory, barrier. With 2+ stages the copies of step
kt+S-1 are issued right after step kt's barrier, before its compute (``early``), so even
a double buffer has a whole step's compute to land them.

Thread -> tile mapping (``tile_rows``/``tile_cols``): thread t is (t // wn, t % wn), N
fastest, so the threads of a quarter warp share their rows and read adjacent columns.
Along a dimension that is contiguous in an operand's shared tile (N of a K-major B, M of
a K-major A) a thread's elements are strips of 4 (one 16-byte read each) spread a whole
thread row apart: columns ``(j // 4) * 4*wn + (t % wn) * 4 + j % 4``; a quarter warp's
8 threads then read 128 consecutive bytes (no bank conflict) and a warp's lanes distinct
words in scalar form too when wn >= 8. Elsewhere strips of 1 (``j * wn + t % wn``).
K is read in runs of 4 where an operand's tile rows run along K (a row-major A), so a
thread's A values come in 16-byte reads while the quarter warp broadcasts one address.
Compute per K step, per run of ``vk`` K values: the fragments of the operands read along K
(tm or tn x vk registers), then per k the fragments of the others (tm or tn registers,
read in strips) and tm*tn FMAs.
"""
from __future__ import annotations

from . import dtype as dt
from . import tensorcore as tcm
from .geometry_staged import MAX_CODE, STRIP, check, match, smem_elems, strips, tiles  # noqa: F401  (the geometry, re-exported)
from .lower_tc import ACC, SA, SB, TileView
from .node import Node, Ops, alu, const
from .program import Assign, Program, Reg, Shared, Stmt
from .schedule import Schedule

FA, FB = "fa", "fb"


def smem_offset(row, col, width: int, st) -> Node:
    """Shared element offset of tile element (row, col) (rows of ``width``; ints or index
    Nodes) under staging ``st``: pad, then the XOR swizzle of 16-byte units."""
    if not st.swizzle: return row * (width + st.pad) + col
    upr = width // STRIP
    u = row * upr + col // STRIP
    u = tcm.xor(u, (u // (1 << st.shift)) % (1 << st.swizzle))
    return (u // upr) * (width + st.pad) + (u % upr) * STRIP + col % STRIP


def tile_index(i: int, thread: Node, threads: int, strip: int) -> Node:
    """Block-tile row/column of a thread's register-tile element ``i`` along a dimension
    with ``threads`` threads, in strips of ``strip`` (module docstring)."""
    return (thread * strip) + const((i // strip) * strip * threads + i % strip, dt.int32)


def lower_staged(k, s: Schedule, machine) -> Program:
    m = match(k)
    t = tiles(k, s, m)
    v = TileView(k, s, machine.warp, m, t)
    st = v.st
    stage_size = smem_elems(k, s, m, t)
    width = {name: tcm.tile_shape(op, outer, t.bk)[1] for op, name, outer in v.ops}
    lay = {name: st[op.input] for op, name, _ in v.ops}
    vm, vn, vk = strips(m, t)
    tm_i, tn_i = v.thread // t.wn, v.thread % t.wn
    rows = [tile_index(i, tm_i, t.wm, vm) for i in range(t.tm)]
    cols = [tile_index(j, tn_i, t.wn, vn) for j in range(t.tn)]

    def at(name: str, op: tcm.Operand, outer: Node, kk: int, stage: Node) -> Node:
        r, c = (const(kk, dt.int32), outer) if op.k_major else (outer, const(kk, dt.int32))
        return stage * stage_size[name] + smem_offset(r, c, width[name], lay[name])

    def copies(step: Node, stage: Node) -> list[Stmt]:
        return v.copies(step, stage, stage_size, lambda name, op, row, col: smem_offset(row, col, width[name], lay[name]))

    reg = lambda name, i: Node(Ops.REG, dt.float32, (const(i, dt.int32),), name)  # noqa: E731
    smem = lambda name, idx: Node(Ops.SHARED, dt.float32, (idx,), name)  # noqa: E731

    # an operand whose shared rows run along K is read a run of vk K values at a time
    a_run, b_run = not m.a.k_major and vk > 1, not m.b.k_major and vk > 1
    fa = lambda i, kk: i * vk + kk if a_run else i  # noqa: E731
    fb = lambda j, kk: j * vk + kk if b_run else j  # noqa: E731

    def compute(stage: Node) -> list[Stmt]:
        body: list[Stmt] = []
        for k0 in range(0, t.bk, vk):
            load_a = lambda i, kk: Assign(FA, const(fa(i, kk), dt.int32), smem(SA, at(SA, m.a, rows[i], k0 + kk, stage)))  # noqa: E731
            load_b = lambda j, kk: Assign(FB, const(fb(j, kk), dt.int32), smem(SB, at(SB, m.b, cols[j], k0 + kk, stage)))  # noqa: E731
            if a_run: body += [load_a(i, kk) for i in range(t.tm) for kk in range(vk)]
            if b_run: body += [load_b(j, kk) for j in range(t.tn) for kk in range(vk)]
            for kk in range(vk):
                if not a_run: body += [load_a(i, kk) for i in range(t.tm)]
                if not b_run: body += [load_b(j, kk) for j in range(t.tn)]
                body += [Assign(ACC, const(i * t.tn + j, dt.int32),
                                alu(Ops.ADD, reg(ACC, i * t.tn + j), alu(Ops.MUL, reg(FA, fa(i, kk)), reg(FB, fb(j, kk)))))
                         for i in range(t.tm) for j in range(t.tn)]
        return body

    nacc = t.tm * t.tn
    body: list[Stmt] = [
        Shared(SA, m.dtype, s.stages * stage_size[SA]), Shared(SB, m.dtype, s.stages * stage_size[SB]),
        Reg(ACC, dt.float32, nacc), Reg(FA, dt.float32, t.tm * (vk if a_run else 1)), Reg(FB, dt.float32, t.tn * (vk if b_run else 1)),
        *[Assign(ACC, const(e, dt.int32), const(0.0, dt.float32)) for e in range(nacc)],
        *v.pipeline(copies, compute, early=True),
        *[v.store(rows[i], cols[j], i * t.tn + j) for i in range(t.tm) for j in range(t.tn)]]
    return Program(k.name, k.inputs, k.output, s.blocks(), t.threads, 1, 1, tuple(body), k, s)
