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

Tensor-core schedules lower in ``ir/lower_tc.py`` (shared staging, ldmatrix, mma).
"""
from __future__ import annotations

import math

from . import dtype as dt
from .interpret import identity
from .kernel import Kernel
from .node import Node, Ops, TRUE, all_of, and_, alu, const, lt, special, substitute, var
from .program import Assign, Barrier, If, Loop, Program, Reg, Shared, SharedStore, Stmt, Store, walk
from .schedule import Level, Schedule, check, vector_axis

ACC, RED = "acc", "red"


class LoweringError(ValueError):
    """The schedule is illegal for this kernel on this machine."""


def lower(kernel: Kernel, schedule: Schedule, machine) -> Program:
    errs = check(kernel, schedule, machine)
    if errs: raise LoweringError("; ".join(errs))
    if schedule.tensor_core is not None:
        from .lower_tc import lower_tensor_core
        return lower_tensor_core(kernel, schedule, machine)
    return _Lowerer(kernel, schedule, machine).program()


class _Lowerer:
    def __init__(self, k: Kernel, s: Schedule, machine):
        self.k, self.s = k, s
        self.lanes = s.vector
        self.vaxis = vector_axis(k) if s.vector > 1 else None
        self.blocks, self.threads = s.blocks(), s.threads()
        self.tr = math.prod(s.size(a, Level.THREAD) for a in k.reduce_axes)  # threads sharing a reduction
        self.workers = s.workers if machine.kind == "cpu" else 1
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
        thr = [(a, p.size) for a in k.output_axes for p in s.splits[a] if p.level is Level.THREAD] + \
              [(a, p.size) for a in k.reduce_axes for p in s.splits[a] if p.level is Level.THREAD]
        gidx, tidx = _decompose(self.block, grid), _decompose(self.thread, thr)
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
        if level is Level.THREAD: return tidx.pop(0)
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
        body = self._elementwise() if k.reduce is None else self._reduction()
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
        fold = (lambda x, y: alu(Ops.ADD, x, y)) if op == "sum" else (lambda x, y: alu(Ops.MAX, x, y))
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
            body += self._combine(nacc, rdt, fold, stores)
        else:
            body += stores
        body = _nest([self.unroll_var[a] for a in k.output_axes if a in self.unroll_var], body, unroll=True)
        return _nest([self.loop_var[a] for a in outer], body)

    def _combine(self, nacc: int, rdt, fold, stores: list[Stmt]) -> list[Stmt]:
        """Partials of the ``tr`` threads sharing a reduction meet in shared memory."""
        e, j = special("e", nacc), special("j", self.tr - 1)
        cell = lambda t: (t * nacc + e) * self.lanes + self.lane  # noqa: E731
        reg_e = Node(Ops.REG, rdt, (e,), ACC)
        put = Loop(e, (SharedStore(RED, cell(self.thread), reg_e),), unroll=nacc <= 16)
        take = Loop(j, (Loop(e, (Assign(ACC, e, fold(reg_e, Node(Ops.SHARED, rdt, (cell(self.thread + j + 1),), RED))),),
                             unroll=nacc <= 16),))
        leader = lt(self.thread % self.tr, 1)
        return [Shared(RED, rdt, self.threads * nacc * self.lanes), put, Barrier(),
                If(leader, (take, *stores)), Barrier()]


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
