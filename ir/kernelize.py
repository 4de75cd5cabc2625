"""Lazy graph -> kernels. Movement ops fold into index expressions and masks.

First fusion rule (to be replaced by the solver's plan in search/fusion): every
elementwise chain fuses into its consumer, each reduction ends a kernel, and the
graph's output ends one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


def kernelize(root: Node, out_name: str = "out") -> list[Step]:
    """Split the graph under ``root`` into kernels, dependencies first."""
    base = root
    while base.op is Ops.RESHAPE and base.src[0].op is Ops.REDUCE:
        base = base.src[0]  # a reshape of a contiguous result is free: write it in place
    realized = [n for n in toposort(base) if n.op is Ops.REDUCE]
    if base not in realized: realized.append(base)
    names = {n: (out_name if n is base else f"t{i}") for i, n in enumerate(realized)}
    steps = []
    for n in realized:
        out_shape = shape(root) if n is base else shape(n)
        steps.append(_build(n, names, out_shape, f"{'r' if n.op is Ops.REDUCE else 'e'}{len(steps)}"))
    return steps


def _build(root: Node, names: dict[Node, str], out_shape: tuple[int, ...], kname: str) -> Step:
    src = root.src[0] if root.op is Ops.REDUCE else root
    full = shape(src)
    red = set(root.arg[1]) if root.op is Ops.REDUCE else set()
    dims = [i for i, d in enumerate(full) if d > 1 and i not in red] + [i for i, d in enumerate(full) if d > 1 and i in red]
    axes = tuple(Axis(full[i], i in red) for i in dims)
    idx = [const(0, dt.int32)] * len(full)
    for a, i in enumerate(dims):
        idx[i] = var(a, full[i])
    b = _Builder(root, names)
    body = b.visit(src, tuple(idx), TRUE)
    reduce_axes = tuple(a for a, i in enumerate(dims) if i in red)
    if reduce_axes:
        body = Node(Ops.REDUCE, body.dtype, (body,), (root.arg[0], reduce_axes))
    store = linear([i if k not in red else const(0, dt.int32) for k, i in enumerate(idx)], shape(root))
    out = Buffer(names[root], root.dtype, out_shape)
    return Step(Kernel(kname, axes, tuple(b.buffers), out, body, store), tuple(x.name for x in b.buffers), out.name)


class _Builder:
    def __init__(self, root: Node, names: dict[Node, str]):
        self.root, self.names = root, names
        self.buffers: list[Buffer] = []
        self.memo: dict[tuple, Node] = {}

    def slot(self, buf: Buffer) -> int:
        for i, b in enumerate(self.buffers):
            if b.name == buf.name: return i
        self.buffers.append(buf)
        return len(self.buffers) - 1

    def visit(self, n: Node, idx: tuple[Node, ...], gate: Node) -> Node:
        key = (n, idx, gate)
        if key not in self.memo:
            self.memo[key] = self._visit(n, idx, gate)
        return self.memo[key]

    def _visit(self, n: Node, idx: tuple[Node, ...], gate: Node) -> Node:
        if n.op is Ops.BUFFER or (n in self.names and n is not self.root):
            name = n.arg[0] if n.op is Ops.BUFFER else self.names[n]
            s = self.slot(Buffer(name, n.dtype, shape(n)))
            return Node(Ops.LOAD, n.dtype, (linear(list(idx), shape(n)), gate), s)
        if n.op is Ops.CONST: return n
        if n.op is Ops.CAST:
            return Node(Ops.CAST, n.dtype, (self.visit(n.src[0], idx, gate),))
        if n.op in ALU:
            return alu(n.op, *(self.visit(s, idx, gate) for s in n.src), dtype=n.dtype)
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
            return self.visit(n.src[0], tuple(const(0, dt.int32) if d == 1 else i for i, d in zip(idx, s_shape)), gate)
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
