"""``lower(kernel, schedule, machine) -> Program``: make every scheduling decision explicit.

Each axis index is the mixed-radix number of its split pieces (outer -> inner):
GRID pieces come from the block index, THREAD pieces from the thread index (output-axis
pieces outer, reduce-axis pieces inner, so the threads that share a reduction are
adjacent), LOOP pieces are serial loops nested in ``schedule.loop_order()``, UNROLL
pieces are fully unrolled loops, UPCAST pieces are register-tile slots (separate
register elements, statements repeated per slot). The vector axis' last UPCAST piece
contributes ``slot * vector + lane``. Axes padded past their size are guarded: loads
that touch a padded axis are masked, reduction updates skip padded points, stores skip
padded outputs.

A reduction keeps one register per (output point of the tile): output LOOPs nested
inside the first reduce loop (by ``order``) index a register array around it, so any
loop order is honoured.

Tensor-core schedules lower in ``ir/lower_tc.py`` (shared staging, ldmatrix, mma), staged
SIMT GEMMs (``staging`` without tensor core) in ``ir/lower_staged.py``.
"""
from __future__ import annotations

import math

from . import dtype as dt
from .interpret import identity
from .kernel import Kernel
from .node import Node, Ops, TRUE, all_of, and_, alu, const, lt, special, substitute, var
from .program import Assign, Barrier, If, Loop, Program, Reg, Shared, SharedStore, Stmt, Store, walk
from .schedule import Level, Schedule, check, vector_axis

ACC = "acc"


class LoweringError(ValueError):
    """The schedule is illegal for this kernel on this machine."""


def lower(kernel: Kernel, schedule: Schedule, machine) -> Program:
    if schedule.family == "attention":  # a fused attention (ir/attention.py): its own lowering and checks
        from .attention_lower import lower_attention
        return lower_attention(kernel, schedule, machine)
    errs = check(kernel, schedule, machine)
    if errs: raise LoweringError("; ".join(errs))
    if schedule.family:
        from .native import lower_native
        return lower_native(kernel, schedule, machine)
    if schedule.tensor_core is not None and schedule.tensor_core.instr.startswith("wgmma."):
        from .lower_wgmma import lower_wgmma
        return lower_wgmma(kernel, schedule, machine)
    if schedule.tensor_core is not None:
        from .lower_tc import lower_tensor_core
        return lower_tensor_core(kernel, schedule, machine)
    if schedule.staging:
        from .lower_staged import lower_staged
        return lower_staged(kernel, schedule, machine)
    return _Lowerer(kernel, schedule, machine).program()


class _Lowerer:
    def __init__(self, k: Kernel, s: Schedule, machine):
        self.k, self.s = k, s
        self.lanes = s.vector
        self.vaxis = vector_axis(k) if s.vector > 1 else None
        self.blocks, self.threads = s.blocks(), s.threads()
        self.tr = math.prod(s.size(a, Level.THREAD) for a in k.reduce_axes or k.row_axes)  # threads sharing a reduction
        self.workers = s.workers if machine.has("threads") else 1
        self.warp = machine.warp               # a row fold goes a warp at a time past this many threads
        self.block, self.thread = special("block", self.blocks), special("thread", self.threads)
        self.lane = special("lane", self.lanes) if self.lanes > 1 else const(0, dt.int32)
        self.loop_var: dict[int, Node] = {}     # axis -> LOOP variable
        self.unroll_var: dict[int, Node] = {}   # axis -> UNROLL variable
        self.slot_radix: list[tuple[int, int]] = []  # (axis, slots) of the register tile, outer -> inner
        self.base = self._axis_indices()

    # ---- axis index expressions ---------------------------------------------------
    def _axis_indices(self) -> dict[int, Node]:
        """Each axis index with the register-tile slot part left as a placeholder VAR."""
        k, s = self.k, self.s
        grid = [(a, p.size) for a in range(len(k.axes)) for p in s.splits[a] if p.level is Level.GRID]
        inner = k.reduce_axes or k.row_axes  # threads that share a reduction are adjacent
        thr = [(a, p.size) for a in range(len(k.axes)) if a not in inner for p in s.splits[a] if p.level is Level.THREAD] + \
              [(a, p.size) for a in inner for p in s.splits[a] if p.level is Level.THREAD]
        gidx, tidx = _decompose(self.block, grid), _decompose(self.thread, thr)
        # each axis takes its own thread pieces (the thread order need not be the axis order)
        kept = [p for p in thr if p[1] > 1]
        tidx = {a: [t for (b, _), t in zip(kept, tidx) if b == a] for a in range(len(k.axes))}
        out: dict[int, Node] = {}
        for a, ax in enumerate(k.axes):
            idx = const(0, dt.int32)
            for j, p in enumerate(s.splits[a]):
                idx = idx * p.size + self._piece(a, j, p.level, p.size, gidx, tidx)
            out[a] = idx
        return out

    def _piece(self, a: int, j: int, level: Level, size: int, gidx, tidx) -> Node:
        if size == 1: return const(0, dt.int32)
        if level is Level.GRID: return gidx.pop(0)
        if level is Level.THREAD: return tidx[a].pop(0)
        if level is Level.LOOP:
            self.loop_var[a] = special(f"L{a}", size); return self.loop_var[a]  # noqa: E702
        if level is Level.UNROLL:
            self.unroll_var[a] = special(f"U{a}", size); return self.unroll_var[a]  # noqa: E702
        # UPCAST: the slot along this axis (and the lane on the vector axis)
        if a == self.vaxis and j == len(self.s.splits[a]) - 1:
            n = size // self.lanes
            if n > 1: self.slot_radix.append((a, n))
            return (_slot(a) * self.lanes if n > 1 else const(0, dt.int32)) + self.lane
        self.slot_radix.append((a, size))
        return _slot(a)

    @property
    def nslots(self) -> int: return math.prod(n for _, n in self.slot_radix)

    def slot_map(self, slot: int) -> dict[Node, Node]:
        """Axis VAR -> index expression for one register-tile slot."""
        vals, rem = {}, slot
        for a, n in reversed(self.slot_radix):
            vals[a], rem = rem % n, rem // n
        m = {_slot(a): const(v, dt.int32) for a, v in vals.items()}
        return {var(a, ax.size): substitute(self.base[a], m) for a, ax in enumerate(self.k.axes)}

    def guard(self, axes, m: dict[Node, Node]) -> Node:
        """Padded axes among ``axes`` stay inside their size."""
        return all_of(lt(m[var(a, self.k.axes[a].size)], self.k.axes[a].size) for a in axes
                      if math.prod(p.size for p in self.s.splits[a]) > self.k.axes[a].size)

    def expr(self, n: Node, m: dict[Node, Node]) -> Node:
        """A kernel expression at one slot: axes substituted, loads on padded axes masked."""
        rep = {}
        for ld in (x for x in n.toposort() if x.op is Ops.LOAD):
            used = {v.arg[0] for v in ld.toposort() if v.op is Ops.VAR}
            g = self.guard(sorted(used), m)
            if g is not TRUE: rep[ld] = Node(Ops.LOAD, ld.dtype, (ld.src[0], and_(ld.src[1], g)), ld.arg)
        return substitute(substitute(n, rep) if rep else n, m)

    # ---- statements ------------------------------------------------------------
    def program(self) -> Program:
        k = self.k
        body = self._rows() if k.row_axes else self._elementwise() if k.reduce is None else self._reduction()
        shared = [x for x in walk(tuple(body)) if isinstance(x, Shared)]  # allocated once per block: hoist
        body = shared + [_drop_shared(x) for x in body if not isinstance(x, Shared)]
        return Program(k.name, k.inputs, k.output, self.blocks, self.threads, self.lanes, self.workers,
                       tuple(body), k, self.s)

    def _stores(self, value_of, acc_index=None) -> list[Stmt]:
        out: list[Stmt] = []
        for slot in range(self.nslots):
            m = self.slot_map(slot)
            valid = self.guard(self.k.output_axes, m)
            out.append(Store(substitute(self.k.store, m), value_of(slot, m), valid))
        return out

    def _ordered(self, axes) -> list[int]:
        return [a for a in self.s.loop_order() if a in axes and a in self.loop_var]

    def _elementwise(self) -> list[Stmt]:
        body: list[Stmt] = self._stores(lambda slot, m: self.expr(self.k.body, m))
        body = _nest([self.unroll_var[a] for a in self.k.output_axes if a in self.unroll_var], body, unroll=True)
        return _nest([self.loop_var[a] for a in self._ordered(self.k.output_axes)], body)

    def _reduction(self) -> list[Stmt]:
        k, red = self.k, self.k.reduce
        op, rdt = red.arg[0], red.dtype
        order = [a for a in self.s.loop_order() if a in self.loop_var]
        first_r = next((i for i, a in enumerate(order) if k.axes[a].reduce), len(order))
        outer, rest = order[:first_r], order[first_r:]
        inner_out = [a for a in rest if not k.axes[a].reduce]
        # register array: one element per (inner output loop point, tile slot)
        lin = const(0, dt.int32)
        for a in inner_out: lin = lin * self.loop_var[a].arg[1] + self.loop_var[a]
        nacc = math.prod(self.loop_var[a].arg[1] for a in inner_out) * self.nslots
        at = lambda slot: lin * self.nslots + slot  # noqa: E731
        reg = lambda slot: Node(Ops.REG, rdt, (at(slot),), ACC)  # noqa: E731
        ident = const(identity(op, rdt), rdt)
        fold = _folder(op)
        inner_nest = lambda stmts: _nest([self.loop_var[a] for a in inner_out], stmts)  # noqa: E731

        init = inner_nest([Assign(ACC, at(s), ident) for s in range(self.nslots)])
        upd: list[Stmt] = []
        for slot in range(self.nslots):
            m = self.slot_map(slot)
            x = self.expr(red.src[0], m)
            g = self.guard(k.reduce_axes, m)
            new = fold(reg(slot), x)
            upd.append(Assign(ACC, at(slot), new if g is TRUE else alu(Ops.WHERE, g, new, reg(slot))))
        upd = _nest([self.unroll_var[a] for a in k.reduce_axes if a in self.unroll_var], upd, unroll=True)
        loops = _nest([self.loop_var[a] for a in rest], upd)
        stores = inner_nest(self._stores(lambda slot, m: self.expr(substitute(k.body, {red: reg(slot)}), m)))
        body: list[Stmt] = [Reg(ACC, rdt, nacc), *init, *loops]
        if self.tr > 1:
            body += self._combine_stage(ACC, rdt, nacc, fold, self.tr, stores)
        else:
            body += stores
        body = _nest([self.unroll_var[a] for a in k.output_axes if a in self.unroll_var], body, unroll=True)
        return _nest([self.loop_var[a] for a in outer], body)

    # ---- row kernels --------------------------------------------------------------------
    def row_slot(self, slot: int) -> int:
        """Index of a register-tile slot's row (its digits off the row axes)."""
        digits, rem = {}, slot
        for a, n in reversed(self.slot_radix):
            digits[a], rem = rem % n, rem // n
        e = 0
        for a, n in self.slot_radix:
            if a not in self.k.row_axes: e = e * n + digits[a]
        return e

    def _rows(self) -> list[Stmt]:
        """Row kernel: per row tile, one pass over the row per REDUCE (inner ones first)
        folding into a register per row, whose total every thread of the row gets; then
        a last pass computes and stores the body with the totals."""
        k, J = self.k, self.k.row_axes
        nrow = math.prod(n for a, n in self.slot_radix if a not in J)
        loops = [self.loop_var[a] for a in J if a in self.loop_var]
        unrolls = [self.unroll_var[a] for a in J if a in self.unroll_var]
        over_row = lambda stmts: _nest(loops, _nest(unrolls, stmts, unroll=True))  # noqa: E731
        done: dict[Node, Node] = {}
        with_totals = lambda n, e: substitute(n, {r: Node(Ops.REG, r.dtype, (const(e, dt.int32),), name)  # noqa: E731
                                                  for r, name in done.items()})
        body: list[Stmt] = []
        for i, red in enumerate(k.reduces):
            name, op, rdt = f"row{i}", red.arg[0], red.dtype
            fold = _folder(op)
            body += [Reg(name, rdt, nrow)] + [Assign(name, const(e, dt.int32), const(identity(op, rdt), rdt)) for e in range(nrow)]
            upd: list[Stmt] = []
            for slot in range(self.nslots):
                m, e = self.slot_map(slot), self.row_slot(slot)
                reg = Node(Ops.REG, rdt, (const(e, dt.int32),), name)
                new, g = fold(reg, self.expr(with_totals(red.src[0], e), m)), self.guard(J, m)
                upd.append(Assign(name, const(e, dt.int32), new if g is TRUE else alu(Ops.WHERE, g, new, reg)))
            body += over_row(upd) + self._row_total(name, rdt, nrow, fold)
            done[red] = name
        stores = []
        for slot in range(self.nslots):
            m = self.slot_map(slot)
            stores.append(Store(substitute(k.store, m), self.expr(with_totals(k.body, self.row_slot(slot)), m),
                                self.guard(k.output_axes, m)))
        body += over_row(stores)
        body = _nest([self.unroll_var[a] for a in k.output_axes if a not in J and a in self.unroll_var], body, unroll=True)
        return _nest([self.loop_var[a] for a in k.output_axes if a not in J and a in self.loop_var], body)

    def _row_total(self, name: str, rdt, nrow: int, fold) -> list[Stmt]:
        """Fold a row register's partials into its total, in every lane and thread of the
        row: the vector lanes through the thread's own shared cells, then the threads
        (a warp at a time when there are more than the target's warp, partials in shared memory or warp
        shuffles) with the total broadcast through shared memory."""
        out: list[Stmt] = []
        reg = lambda e: Node(Ops.REG, rdt, (e,), name)  # noqa: E731
        e = special(f"{name}_e", nrow)
        unroll = nrow <= 16
        if self.lanes > 1 and self.vaxis in self.k.row_axes:
            lanes = f"{name}_lanes"
            tid = self.thread if self.threads > 1 else const(0, dt.int32)
            cell = lambda l: (l * self.threads + tid) * nrow + e  # noqa: E731  (lane-major: a warp's cells are adjacent)
            total = Node(Ops.SHARED, rdt, (cell(const(0, dt.int32)),), lanes)
            for l in range(1, self.lanes):
                total = fold(total, Node(Ops.SHARED, rdt, (cell(const(l, dt.int32)),), lanes))
            out += [Shared(lanes, rdt, self.threads * nrow * self.lanes),
                    Loop(e, (SharedStore(lanes, cell(self.lane), reg(e)),), unroll),
                    Loop(e, (Assign(name, e, total),), unroll)]
        if self.tr == 1: return out
        t1 = self.warp if self.tr > self.warp and self.tr % self.warp == 0 else self.tr
        group = lambda t, x: Node(Ops.SHARED, rdt, (((self.thread // t + x) * nrow + e) * self.lanes + self.lane,), f"{name}_mid")  # noqa: E731
        bc = f"{name}_bc"
        at_bc = ((self.thread // self.tr) * nrow + e) * self.lanes + self.lane
        publish = Loop(e, (SharedStore(bc, at_bc, reg(e)),), unroll)
        if t1 == self.tr:
            out += self._combine_stage(name, rdt, nrow, fold, self.tr, [publish])
        else:  # leaders of each warp -> shared; the row's leader folds them
            mid = f"{name}_mid"
            keep = Loop(e, (SharedStore(mid, ((self.thread // t1) * nrow + e) * self.lanes + self.lane, reg(e)),), unroll)
            j = special(f"{name}_w", self.tr // t1 - 1)
            take = Loop(j, (Loop(e, (Assign(name, e, fold(reg(e), group(t1, j + 1))),), unroll),))
            out += [Shared(mid, rdt, self.threads // t1 * nrow * self.lanes)]
            out += self._combine_stage(name, rdt, nrow, fold, t1, [keep])
            out += [If(lt(self.thread % self.tr, 1), (take, publish)), Barrier()]
        return out + [Shared(bc, rdt, self.threads // self.tr * nrow * self.lanes),
                      Loop(e, (Assign(name, e, Node(Ops.SHARED, rdt, (at_bc,), bc)),), unroll)]

    def _combine_stage(self, name: str, rdt, nacc: int, fold, tr: int, leader: list[Stmt]) -> list[Stmt]:
        """Partials of ``tr`` adjacent threads meet in shared memory; the first of them
        folds them and runs ``leader`` (the shape ``backends/cuda/shuffle`` matches)."""
        red = f"{name}_red"
        e, j = special(f"{name}_ce", nacc), special(f"{name}_cj", tr - 1)
        cell = lambda t: (t * nacc + e) * self.lanes + self.lane  # noqa: E731
        reg_e = Node(Ops.REG, rdt, (e,), name)
        put = Loop(e, (SharedStore(red, cell(self.thread), reg_e),), unroll=nacc <= 16)
        take = Loop(j, (Loop(e, (Assign(name, e, fold(reg_e, Node(Ops.SHARED, rdt, (cell(self.thread + j + 1),), red))),),
                             unroll=nacc <= 16),))
        return [Shared(red, rdt, self.threads * nacc * self.lanes), put, Barrier(),
                If(lt(self.thread % tr, 1), (take, *leader)), Barrier()]


def _folder(op: str):
    return (lambda x, y: alu(Ops.ADD, x, y)) if op == "sum" else (lambda x, y: alu(Ops.MAX, x, y))


def _drop_shared(s: Stmt) -> Stmt:
    if isinstance(s, Loop): return Loop(s.var, tuple(_drop_shared(x) for x in s.body if not isinstance(x, Shared)), s.unroll)
    return s


def _slot(a: int) -> Node:
    """Placeholder for the register-tile slot along axis ``a`` (substituted per slot)."""
    return Node(Ops.VAR, dt.int32, (), (-1 - a, 1 << 20))


def _decompose(idx: Node, pieces: list[tuple[int, int]]) -> list[Node]:
    """Split a flat index into pieces (first piece outermost); size-1 pieces skipped."""
    pieces = [p for p in pieces if p[1] > 1]
    out, stride = [], math.prod(n for _, n in pieces)
    for _, n in pieces:
        stride //= n
        out.append((idx // stride) % n)
    return out


def _nest(vars_: list[Node], body: list[Stmt], unroll: bool = False) -> list[Stmt]:
    for v in reversed(vars_):
        body = [Loop(v, tuple(body), unroll)]
    return body
