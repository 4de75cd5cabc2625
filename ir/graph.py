"""Shapes of lazy-graph nodes and the constructors that check them."""
from __future__ import annotations

import math

from . import dtype as dt
from .node import Node, Ops, ALU, MOVEMENT, REDUCE_OPS, alu

Shape = tuple[int, ...]


def shape(n: Node) -> Shape:
    """Shape of a lazy-graph node (cached on the node)."""
    c = n._cache
    if "shape" not in c:
        c["shape"] = _shape(n)
    return c["shape"]


def _shape(n: Node) -> Shape:
    if n.op is Ops.BUFFER: return tuple(n.arg[1])
    if n.op is Ops.CONST: return ()
    if n.op in ALU: return shape(n.src[0])
    if n.op is Ops.REDUCE:
        s = shape(n.src[0])
        return tuple(1 if i in n.arg[1] else d for i, d in enumerate(s))
    if n.op in (Ops.RESHAPE, Ops.EXPAND): return tuple(n.arg)
    if n.op is Ops.PERMUTE:
        s = shape(n.src[0])
        return tuple(s[i] for i in n.arg)
    if n.op is Ops.PAD:
        return tuple(d + b + a for d, (b, a) in zip(shape(n.src[0]), n.arg))
    if n.op is Ops.SHRINK: return tuple(e - b for b, e in n.arg)
    if n.op is Ops.ARANGE: return (n.arg,)
    if n.op is Ops.GATHER: return shape(n.src[1]) + shape(n.src[0])[1:]
    raise ValueError(f"{n.op} has no graph shape")


def buffer(name: str, shp: Shape, dtype: dt.DType) -> Node:
    shp = tuple(int(d) for d in shp)
    if any(d <= 0 for d in shp): raise ValueError(f"buffer {name!r}: dimensions must be positive, got {shp}")
    return Node(Ops.BUFFER, dtype, (), (name, shp))


def ewise(op: Ops, *src: Node, dtype: dt.DType | None = None) -> Node:
    shapes = {shape(s) for s in src}
    if len(shapes) != 1: raise ValueError(f"{op.name}: operand shapes differ: {sorted(shapes)}")
    if all(s.op is Ops.CONST for s in src) or op is Ops.CAST:
        return alu(op, *src, dtype=dtype) if op is not Ops.CAST else Node(Ops.CAST, dtype, src)
    out_dt = dtype or (dt.bool_ if op in (Ops.CMPLT, Ops.CMPEQ, Ops.CMPNE) else src[-1].dtype if op is Ops.WHERE else src[0].dtype)
    return Node(op, out_dt, tuple(src))


def reduce(x: Node, op: str, axes: tuple[int, ...]) -> Node:
    if op not in REDUCE_OPS: raise ValueError(f"unknown reduce op {op!r}")
    nd = len(shape(x))
    axes = tuple(sorted({a % nd if nd else a for a in axes}))
    if any(not 0 <= a < nd for a in axes): raise ValueError(f"reduce axes {axes} out of range for rank {nd}")
    if not axes: return x
    return Node(Ops.REDUCE, x.dtype, (x,), (op, axes))


def reshape(x: Node, new: Shape) -> Node:
    new = tuple(int(d) for d in new)
    old = shape(x)
    if math.prod(new) != math.prod(old) or any(d <= 0 for d in new):
        raise ValueError(f"cannot reshape {old} to {new}")
    if new == old: return x
    if x.op is Ops.RESHAPE: x = x.src[0]
    return x if shape(x) == new else Node(Ops.RESHAPE, x.dtype, (x,), new)


def permute(x: Node, order: tuple[int, ...]) -> Node:
    order = tuple(int(o) for o in order)
    if sorted(order) != list(range(len(shape(x)))): raise ValueError(f"bad permutation {order} for rank {len(shape(x))}")
    if order == tuple(range(len(order))): return x
    return Node(Ops.PERMUTE, x.dtype, (x,), order)


def expand(x: Node, new: Shape) -> Node:
    old, new = shape(x), tuple(int(d) for d in new)
    if len(old) != len(new) or any(o != n and o != 1 for o, n in zip(old, new)):
        raise ValueError(f"cannot expand {old} to {new}")
    return x if old == new else Node(Ops.EXPAND, x.dtype, (x,), new)


def pad(x: Node, p: tuple[tuple[int, int], ...]) -> Node:
    p = tuple((int(b), int(a)) for b, a in p)
    if len(p) != len(shape(x)) or any(b < 0 or a < 0 for b, a in p):
        raise ValueError(f"bad padding {p} for shape {shape(x)}")
    return x if all(b == a == 0 for b, a in p) else Node(Ops.PAD, x.dtype, (x,), p)


def shrink(x: Node, s: tuple[tuple[int, int], ...]) -> Node:
    s = tuple((int(b), int(e)) for b, e in s)
    if len(s) != len(shape(x)) or any(not 0 <= b < e <= d for (b, e), d in zip(s, shape(x))):
        raise ValueError(f"bad shrink {s} for shape {shape(x)}")
    return x if all(b == 0 and e == d for (b, e), d in zip(s, shape(x))) else Node(Ops.SHRINK, x.dtype, (x,), s)


def arange(n: int) -> Node:
    if int(n) <= 0: raise ValueError(f"arange({n}): the length must be positive")
    return Node(Ops.ARANGE, dt.int32, (), int(n))


def gather(table: Node, ids: Node) -> Node:
    """Rows of ``table`` (along its first axis) at integer ``ids``; ids out of range read 0."""
    if not shape(table): raise ValueError("gather: the table needs at least one axis")
    if not ids.dtype.is_int: raise ValueError(f"gather: ids must be integers, not {ids.dtype.name}")
    return Node(Ops.GATHER, table.dtype, (table, ids))


def is_movement(n: Node) -> bool: return n.op in MOVEMENT
