"""Lazy graph -> kernels. Movement ops fold into index expressions and masks.

A plan (the set of nodes written to buffers; the output always is) decides the kernels:
``kernelize(root, plan=nodes)`` writes exactly those nodes, recomputes every other
elementwise node inside each kernel that reads it, and computes a reduction that is not
in the plan inside the elementwise kernel that reads it: as row reductions (each
broadcast back along the axes it folds: softmax, layernorm in one kernel; see
``ir.kernel.Kernel``) or as an epilogue (``body = f(REDUCE(...))``, legal when each output
point reads exactly one of its results: a GEMM's cast back to fp16, a requantize).

Without a plan, the default rule (``default_plan``, to be replaced by the solver's plan in
search/fusion): every reduction ends a kernel, and so does every elementwise operand of
a contraction (a GEMM keeps plain operands); then each elementwise kernel computes the
reductions only it reads as row reductions (rows up to ``ROW_MAX``) or an epilogue.
The context's planner (``ir.context``: ``with context.use(planner=p):``), when set, is asked
for a plan for every root the lazy front end realizes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import context
from . import dtype as dt
from .graph import shape
from .kernel import Axis, Buffer, Kernel
from .node import (Node, Ops, TRUE, ALU, alu, all_of, and_, const, lt, toposort, var, Node as _N)


@dataclass(frozen=True)
class Step:
    """One kernel launch: reads the named buffers, writes ``output``."""
    kernel: Kernel
    inputs: tuple[str, ...]
    output: str


def strides(shp: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shp):
        out.append(acc if d != 1 else 0)
        acc *= d
    return tuple(reversed(out))


def linear(idx: list[Node], shp: tuple[int, ...]) -> Node:
    out = const(0, dt.int32)
    for i, s in zip(idx, strides(shp)):
        if s: out = out + i * s
    return out


def unravel(flat: Node, shp: tuple[int, ...]) -> list[Node]:
    out = []
    for d, s in zip(shp, strides(shp)):
        out.append(const(0, dt.int32) if d == 1 else (flat // s) % d if s else flat % d)
    return out


def kernelize(root: Node, out_name: str = "out", plan: "frozenset[Node] | None" = None) -> list[Step]:
    """Split the graph under ``root`` into kernels, dependencies first; with ``plan``,
    materialize exactly the plan's nodes (see the module docstring), else the default
    rule's (``default_plan``); without ``plan``, the context's planner is asked first."""
    planner = context.current().planner
    if plan is None and planner is not None:
        plan = planner(root)
    chosen = plan if plan is not None else default_plan(root)
    base = output_node(root)
    order = toposort(base)
    return _kernelize_plan(root, out_name, frozenset(_narrowed(list(chosen), order)) - {base}, order)


def output_node(root: Node) -> Node:
    """The node whose kernel writes the output (a reshape of a reduction is written in place)."""
    base = root
    while base.op is Ops.RESHAPE and base.src[0].op is Ops.REDUCE:
        base = base.src[0]
    return base


# Longest row (elements) the default rule computes inside its consumer's kernel: one
# block (a GPU) or one chunk (a CPU) then holds a row, re-read from cache per pass.
ROW_MAX = 16384


def _names(realized: list[Node], base: Node, out_name: str) -> dict[Node, str]:
    return {n: (out_name if n is base else f"t{i}") for i, n in enumerate(realized)}


def default_plan(root: Node) -> frozenset[Node]:
    """The nodes the default rule materializes, besides the output node: every reduction,
    and every elementwise operand of a contraction (a GEMM or conv keeps a plain operand,
    which tensor cores need, instead of recomputing e.g. a layernorm per multiply-add);
    then, per elementwise kernel, the reductions only it reads are computed inside it as
    row reductions (rows up to ROW_MAX) or else as an epilogue."""
    base = output_node(root)
    order = toposort(base)
    want = {n for n in order if n.op is Ops.REDUCE} | _contraction_operands(order)
    realized = [n for n in order if n in want or n is base]
    for e in [n for n in realized if n.op is not Ops.REDUCE]:
        rs = set(realized)
        deps = {n: _direct_deps(n, rs) for n in realized}   # what each kernel reads
        mine = _own_reductions(e, deps)
        out_shape = shape(root) if e is base else shape(e)
        got = fuse_rows(e, realized, [r for r in mine if row_length(r) <= ROW_MAX], "out", out_shape, "k")
        if got is not None:
            realized = [n for n in realized if n not in got[0]]
            continue
        names = _names(realized, base, "out")
        others = set().union(*(d for n, d in deps.items() if n is not e))
        for r in (r for r in mine if r not in others):   # an epilogue: read by this kernel only
            try:
                _build_epilogue(e, r, names, out_shape, "k")
            except _NoFuse:
                continue
            realized.remove(r)
            break
    return frozenset(realized) - {base}


def _narrowed(realized: list[Node], order: list[Node]) -> list[Node]:
    """Each realized contraction whose only reader casts it (through reshapes) to a narrower
    float is realized at the cast instead, which every plan's kernels compute the same: a
    16-bit GEMM writes 16-bit results (half the bytes, no separate cast kernel for an
    output) and the contractions reading them keep 16-bit operands, which tensor cores need."""
    readers: dict[Node, list[Node]] = {}
    for n in order:
        for x in n.src: readers.setdefault(x, []).append(n)
    def sole_reader(n: Node) -> Node | None:
        rd = readers.get(n, [])
        return rd[0] if len(rd) == 1 and rd[0] not in realized else None

    out = []
    for n in realized:
        if n.op is Ops.REDUCE and n.arg[0] == "sum" and _through(n.src[0], movement=False)[0].op is Ops.MUL:
            c = sole_reader(n)
            while c is not None and c.op is Ops.RESHAPE: c = sole_reader(c)
            if c is not None and c.op is Ops.CAST and c.dtype.is_float and c.dtype.itemsize < n.dtype.itemsize: n = c
        out.append(n)
    return out


def _contraction_operands(order: list[Node]) -> set[Node]:
    """Elementwise nodes (reading data; casts and movement looked through) that a
    contraction reads as an operand: a sum of products of two operands each broadcast
    (expanded) along an axis the other one runs over, as in a GEMM or a conv."""
    out = set()
    for r in order:
        if r.op is not Ops.REDUCE or r.arg[0] != "sum": continue
        x, _ = _through(r.src[0], movement=False)
        if x.op is not Ops.MUL: continue
        ops = [_through(s) for s in x.src]
        if not all(expanded for _, expanded in ops): continue
        for y, _ in ops:
            if y.op in ALU and any(z.op is Ops.BUFFER for z in y.toposort()): out.add(y)
    return out


def _through(n: Node, movement: bool = True) -> tuple[Node, bool]:
    """The node below casts (and movement ops), and whether an EXPAND was passed."""
    expanded = False
    while n.op is Ops.CAST or (movement and n.op in (Ops.RESHAPE, Ops.PERMUTE, Ops.EXPAND, Ops.PAD, Ops.SHRINK)):
        expanded = expanded or n.op is Ops.EXPAND
        n = n.src[0]
    return n, expanded


def _own_reductions(e: Node, deps: dict[Node, set[Node]]) -> list[Node]:
    """Reductions only ``e``'s kernel needs (read by it, or by such reductions only), in
    the order of ``deps`` (each realized node's kernel -> the realized nodes it reads)."""
    own = {r for r in _computed_closure(e, deps) if r.op is Ops.REDUCE}
    changed = True
    while changed:
        changed = False
        for r in list(own):
            if any(r in d for n, d in deps.items() if n is not e and n not in own):
                own.discard(r); changed = True  # noqa: E702
    return [r for r in deps if r in own]


def _computed_closure(e: Node, deps: dict[Node, set[Node]]) -> set[Node]:
    """Realized nodes ``e`` reads, directly or through other realized nodes."""
    out, stack = set(), list(deps[e])
    while stack:
        x = stack.pop()
        if x in out: continue
        out.add(x)
        stack.extend(deps.get(x, ()))
    return out


def row_length(r: Node) -> int:
    """Elements one result of reduction ``r`` folds."""
    src = shape(r.src[0])
    return math.prod(src[d] for d in r.arg[1])


def fuse_rows(base: Node, realized: list[Node], cands: list[Node], out_name: str, out_shape: tuple[int, ...],
              kname: str) -> "tuple[frozenset[Node], Step] | None":
    """The largest subset of the reductions ``cands`` that ``base``'s kernel can compute
    as row reductions, with that kernel; None when there is none. A reduction another
    kept (materialized) reduction reads stays materialized with it."""
    rows = set(cands)
    while rows:
        kept = [r for r in realized if r not in rows and r is not base]
        stop = {n for n in realized if n not in rows}
        inside = set().union(*(_computed(r, stop) for r in kept))
        rows -= inside
        if not rows: return None
        left = [n for n in realized if n not in rows]
        try:
            return frozenset(rows), _build(base, _names(left, base, out_name), out_shape, kname, frozenset(rows))
        except _NoRow as e:
            rows.discard(e.node)
        except _NoFuse:
            return None
    return None


def _kernelize_plan(root: Node, out_name: str, plan: frozenset[Node], order: list[Node]) -> list[Step]:
    """The kernels of ``plan`` (``order``: the output node's graph, toposorted)."""
    bad = [n for n in plan if n.op not in ALU and n.op is not Ops.REDUCE]
    if bad: raise ValueError(f"a plan materializes elementwise or reduce nodes, not {sorted({n.op.name for n in bad})}")
    base = output_node(root)
    realized = [n for n in order if n in plan or n is base]
    names = _names(realized, base, out_name)
    done, steps = set(realized), []
    for n in realized:
        out_shape = shape(root) if n is base else shape(n)
        inner = inner_reductions(n, done)
        from .attention import fused_step  # a plan leaving an attention's scores and softmax unwritten fuses it
        if len(inner) > 1 and (fused := fused_step(n, names, done, out_shape, f"a{len(steps)}")) is not None:
            steps.append(fused)
            continue
        if inner and n.op is Ops.REDUCE:
            raise ValueError(f"plan puts {len(inner)} reductions inside one reduce kernel (a reduce kernel "
                             "holds only its own)")
        if not inner:
            steps.append(_build(n, names, out_shape, f"{'r' if n.op is Ops.REDUCE else 'e'}{len(steps)}"))
            continue
        try:
            steps.append(_build(n, names, out_shape, f"r{len(steps)}", frozenset(inner)))
            continue
        except _NoFuse:
            if len(inner) > 1:
                raise ValueError(f"plan puts {len(inner)} reductions inside one elementwise kernel that cannot compute "
                                 "them as row reductions (each must be broadcast back along the axes it folds)") from None
        try:
            steps.append(_build_epilogue(n, inner[0], names, out_shape, f"r{len(steps)}"))
        except _NoFuse:
            raise ValueError("plan fuses a reduction into a kernel whose output points do not each read "
                             "exactly one of its results") from None
    return steps


def _computed(n: Node, realized: set[Node]) -> set[Node]:
    """Nodes ``n``'s kernel computes: its graph, stopping at realized nodes and inputs."""
    out, stack = set(), list(n.src)
    while stack:
        x = stack.pop()
        if x in out or x in realized or x.op is Ops.BUFFER: continue
        out.add(x)
        stack.extend(x.src)
    return out


def inner_reductions(n: Node, realized: set[Node]) -> list[Node]:
    """Reductions, not realized, that n's kernel would compute, including any nested
    inside another."""
    return [x for x in _computed(n, realized) if x.op is Ops.REDUCE]


class _NoFuse(Exception):
    """The output's tail cannot be fused into this reduction."""


class _NoRow(_NoFuse):
    """Reduction ``node`` cannot be computed as a row reduction in its consumer's kernel."""
    def __init__(self, node: Node):
        super().__init__()
        self.node = node


def _direct_deps(n: Node, realized: set[Node]) -> set[Node]:
    """Realized nodes that n's kernel reads (its graph, stopping at realized nodes)."""
    out, stack, seen = set(), list(n.src), set()
    while stack:
        x = stack.pop()
        if x in seen: continue
        seen.add(x)
        if x in realized: out.add(x)
        elif x.op is not Ops.BUFFER: stack.extend(x.src)
    return out


def _build_epilogue(root: Node, r: Node, names: dict[Node, str], out_shape: tuple[int, ...], kname: str) -> Step:
    """The output kernel with reduction ``r`` computed inside it (raises _NoFuse)."""
    full, rfull = shape(root), shape(r.src[0])
    out_dims = [i for i, d in enumerate(full) if d > 1]
    red_dims = [i for i in r.arg[1] if rfull[i] > 1]
    axes = tuple(Axis(full[i]) for i in out_dims) + tuple(Axis(rfull[i], True) for i in red_dims) or (Axis(1),)
    idx = [const(0, dt.int32)] * len(full)
    for a, i in enumerate(out_dims):
        idx[i] = var(a, full[i])
    b = _Builder(root, names)
    b.fuse, b.n_out = r, len(out_dims)
    b.red_vars = reduce_vars(r, len(out_dims))
    body = b.visit(root, tuple(idx), TRUE)
    if b.fused is None: raise _NoFuse()
    store = linear(idx, full)
    out = Buffer(names[root], root.dtype, out_shape)
    try:
        k = Kernel(kname, axes, tuple(b.buffers), out, body, store)
    except ValueError:
        raise _NoFuse() from None
    return Step(k, tuple(x.name for x in b.buffers), out.name)


def root_index(root: Node) -> tuple[Node, list[int], set[int], list[Node]]:
    """The kernel of ``root`` iterates over its (reduction's source's) non-1 dimensions,
    output ones first: (node visited, those dimensions, reduced ones, index per dimension)."""
    src = root.src[0] if root.op is Ops.REDUCE else root
    full = shape(src)
    red = set(root.arg[1]) if root.op is Ops.REDUCE else set()
    dims = [i for i, d in enumerate(full) if d > 1 and i not in red] + [i for i, d in enumerate(full) if d > 1 and i in red]
    idx = [const(0, dt.int32)] * len(full)
    for a, i in enumerate(dims):
        idx[i] = var(a, full[i])
    return src, dims, red, idx


def _build(root: Node, names: dict[Node, str], out_shape: tuple[int, ...], kname: str,
           rows: frozenset[Node] = frozenset()) -> Step:
    """The kernel of ``root``; reductions in ``rows`` are computed inside it as row
    reductions (raises _NoRow/_NoFuse when they cannot be)."""
    src, dims, red, idx = root_index(root)
    full = shape(src)
    axes = tuple(Axis(full[i], i in red) for i in dims) or (Axis(1),)  # all dims 1: one point
    b = _Builder(root, names)
    b.rows = rows
    body = b.visit(src, tuple(idx), TRUE)
    reduce_axes = tuple(a for a, i in enumerate(dims) if i in red)
    if reduce_axes:
        body = Node(Ops.REDUCE, body.dtype, (body,), (root.arg[0], reduce_axes))
    store = linear([i if k not in red else const(0, dt.int32) for k, i in enumerate(idx)], shape(root))
    out = Buffer(names[root], root.dtype, out_shape)
    try:
        k = Kernel(kname, axes, tuple(b.buffers), out, body, store)
    except ValueError:
        if not rows: raise
        raise _NoFuse() from None
    return Step(k, tuple(x.name for x in b.buffers), out.name)


class _Builder:
    def __init__(self, root: Node, names: dict[Node, str]):
        self.root, self.names = root, names
        self.buffers: list[Buffer] = []
        self.memo: dict[tuple, Node] = {}
        self.fuse: Node | None = None  # a reduction computed inside this kernel (epilogue fusion)
        self.fused: Node | None = None
        self.n_out, self.red_vars = 0, {}
        self.rows: frozenset[Node] = frozenset()  # reductions computed inside as row reductions

    def slot(self, buf: Buffer) -> int:
        for i, b in enumerate(self.buffers):
            if b.name == buf.name: return i
        self.buffers.append(buf)
        return len(self.buffers) - 1

    def visit(self, n: Node, idx: tuple[Node, ...], gate: Node, rowvars: tuple = ()) -> Node:
        """``n`` at index ``idx``; ``rowvars``: (dim, variable) pairs an EXPAND broadcast
        away on the way here (where a row reduction finds its row)."""
        key = (n, idx, gate, rowvars)
        if key not in self.memo:
            self.memo[key] = self._visit(n, idx, gate, rowvars)
        return self.memo[key]

    def _visit(self, n: Node, idx: tuple[Node, ...], gate: Node, rowvars: tuple) -> Node:
        if n is self.fuse:
            return self._fused(n, idx, gate)
        if n in self.rows:
            return self._row(n, idx, gate, dict(rowvars))
        if n.op is Ops.BUFFER or (n in self.names and n is not self.root):
            name = n.arg[0] if n.op is Ops.BUFFER else self.names[n]
            s = self.slot(Buffer(name, n.dtype, shape(n)))
            return Node(Ops.LOAD, n.dtype, (linear(list(idx), shape(n)), gate), s)
        if n.op is Ops.CONST: return n
        if n.op is Ops.ARANGE:   # the index itself: nothing is read
            return idx[0] if gate is TRUE else alu(Ops.WHERE, gate, idx[0], const(0, dt.int32))
        if n.op is Ops.GATHER:   # the table read at an index computed from the ids
            nid = len(shape(n.src[1]))
            row = self.visit(n.src[1], idx[:nid], gate)
            row = row if row.dtype is dt.int32 else Node(Ops.CAST, dt.int32, (row,))
            inside = and_(lt(const(-1, dt.int32), row), lt(row, shape(n.src[0])[0]))
            inner = self.visit(n.src[0], (row,) + tuple(idx[nid:]), and_(gate, inside))
            if inner.op is Ops.LOAD or (inner.op is Ops.CONST and inner.arg == 0): return inner
            return alu(Ops.WHERE, inside, inner, const(0, inner.dtype))
        if n.op is Ops.CAST:
            return Node(Ops.CAST, n.dtype, (self.visit(n.src[0], idx, gate, rowvars),))
        if n.op in ALU:
            return alu(n.op, *(self.visit(s, idx, gate, rowvars) for s in n.src), dtype=n.dtype)
        if n.op is Ops.REDUCE:
            raise AssertionError("nested reductions are realized separately")
        s_shape = shape(n.src[0])
        if n.op is Ops.RESHAPE:
            return self.visit(n.src[0], tuple(unravel(linear(list(idx), shape(n)), s_shape)), gate)
        if n.op is Ops.PERMUTE:
            inv = [0] * len(idx)
            for i, o in enumerate(n.arg): inv[o] = idx[i]
            return self.visit(n.src[0], tuple(inv), gate)
        if n.op is Ops.EXPAND:
            rv = dict(rowvars)
            rv.update({k: i for k, (i, d) in enumerate(zip(idx, s_shape)) if d == 1 and i.op is Ops.VAR})
            return self.visit(n.src[0], tuple(const(0, dt.int32) if d == 1 else i for i, d in zip(idx, s_shape)), gate,
                              tuple(sorted(rv.items(), key=lambda kv: kv[0])))
        if n.op is Ops.SHRINK:
            return self.visit(n.src[0], tuple(i + b for i, (b, _) in zip(idx, n.arg)), gate)
        if n.op is Ops.PAD:
            conds = [and_(lt(i, b + d), lt(const(b - 1, dt.int32), i)) for i, (b, _), d in zip(idx, n.arg, s_shape) if b or _]
            cond = all_of(conds)
            inner = self.visit(n.src[0], tuple(i - b for i, (b, _) in zip(idx, n.arg)), and_(gate, cond))
            if cond is TRUE or inner.op is Ops.LOAD or (inner.op is Ops.CONST and inner.arg == 0):
                return inner
            return alu(Ops.WHERE, cond, inner, const(0, inner.dtype))
        raise ValueError(f"cannot kernelize {n.op}")

    def _row(self, r: Node, idx: tuple[Node, ...], gate: Node, rowvars: dict[int, Node]) -> Node:
        """A reduction computed in this kernel over the row its result was broadcast along."""
        got = row_index(r, idx, gate, rowvars)
        if got is None: raise _NoRow(r)
        inner = self.visit(r.src[0], got[0], TRUE)
        return Node(Ops.REDUCE, inner.dtype, (inner,), (r.arg[0], got[1])) if got[1] else inner

    def _fused(self, r: Node, idx: tuple[Node, ...], gate: Node) -> Node:
        """REDUCE inside the kernel (see ``epilogue_index``)."""
        inner_idx = epilogue_index(r, idx, gate, self.n_out, self.red_vars)
        if inner_idx is None: raise _NoFuse()
        inner = self.visit(r.src[0], inner_idx, TRUE)
        red = tuple(v.arg[0] for v in self.red_vars.values())
        out = Node(Ops.REDUCE, inner.dtype, (inner,), (r.arg[0], red)) if red else inner
        if self.fused is not None and self.fused is not out: raise _NoFuse()
        self.fused = out
        return out


def row_index(r: Node, idx: tuple[Node, ...], gate: Node, rowvars: dict[int, Node]) \
        -> "tuple[tuple[Node, ...], tuple[int, ...]] | None":
    """Where reduction ``r``, read at ``idx`` (ungated), reads its source when computed as
    a row reduction: each reduced dimension takes the variable an EXPAND dropped there
    (``rowvars``); and the kernel axes it then folds. None when a reduced dimension has
    no such variable of its size."""
    src = shape(r.src[0])
    red = [d for d in r.arg[1] if src[d] > 1]
    if gate is not TRUE or any(d not in rowvars or rowvars[d].arg[1] != src[d] for d in red): return None
    return tuple(rowvars[d] if d in red else i for d, i in enumerate(idx)), tuple(sorted(rowvars[d].arg[0] for d in red))


def reduce_vars(r: Node, n_out: int) -> dict[int, Node]:
    """Axis variables of reduction r's reduced dimensions inside a kernel with n_out output axes."""
    rfull = shape(r.src[0])
    red_dims = [i for i in r.arg[1] if rfull[i] > 1]
    return {i: var(n_out + j, rfull[i]) for j, i in enumerate(red_dims)}


def epilogue_index(r: Node, idx: tuple[Node, ...], gate: Node, n_out: int,
                   red_vars: dict[int, Node]) -> tuple[Node, ...] | None:
    """Where r's source is read when r is computed inside a kernel with n_out output axes
    that reads r at ``idx``; None unless each output point reads exactly one of r's
    results (r's kept dimensions indexed by distinct output variables, no mask)."""
    kept = [i for i, d in enumerate(shape(r)) if d > 1]
    vs = [idx[i] for i in kept]
    if gate is not TRUE or any(v.op is not Ops.VAR or v.arg[0] >= n_out for v in vs) \
            or len({v.arg[0] for v in vs}) != n_out or len(vs) != n_out:
        return None
    return tuple(red_vars.get(i, idx[i] if i in kept else const(0, dt.int32)) for i in range(len(idx)))
