"""The one validator of kernels read from files (pickle, JSON, tinygrad import).

A kernel file describes a *front-end* kernel and nothing else: only the ops a kernel
body may hold (no lowered-only ``SPECIAL``/``REG``/``SHARED``, whose string args reach
generated code), each with its arity and argument types, dtypes that are the canonical
objects of ``ir.dtype``, constants representable in their dtype, and every index
expression's range (from the axes' bounds) inside its buffer. Everything is iterative
(no recursion over the graph). Limits are module attributes, overridable::

    import superopt.validate as v; v.LIMITS["max_elements"] = 1 << 36
"""
from __future__ import annotations

import math
from typing import Any

from superopt.ir import dtype as dt
from superopt.ir.node import BINARY, REDUCE_OPS, TRUE, UNARY, Node, Ops

LIMITS: dict[str, int] = {
    "max_elements": 1 << 34,     # elements of one buffer
    "max_points": 1 << 40,       # points of the iteration space (product of the axes)
    "max_dims": 8,               # dimensions of a buffer
    "max_axes": 16,              # kernel axes
    "max_nodes": 20000,          # distinct nodes of body + store
    "max_depth": 256,            # longest source chain
    "max_name": 128,             # characters of a kernel or buffer name
}

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.+=,:@^ "
FRONT_END_OPS = {Ops.CONST, Ops.VAR, Ops.LOAD, Ops.WHERE, Ops.REDUCE} | UNARY | BINARY
# int32 constants may be folded index arithmetic (linear forms), so they get 64 bits
_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-(1 << 63), (1 << 63) - 1)}


_FLOAT_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38, "float32": 3.4028234663852886e38}


class ValidationError(ValueError):
    """One line saying what is wrong."""


def _fail(msg: str) -> None: raise ValidationError(msg)


def check_name(s: Any, what: str) -> None:
    if type(s) is not str or not s or len(s) > LIMITS["max_name"] or not all(c in NAME_CHARS for c in s):
        _fail(f"bad {what} name {str(s)[:40]!r} (ASCII letters, digits and {NAME_CHARS[62:]!r} only)")


def check_dtype(d: Any) -> None:
    if type(d) is not dt.DType or dt.ALL.get(d.name) is not d: _fail("dtype is not one of superopt's dtypes")


def check_shape(shape: Any, what: str) -> int:
    if type(shape) is not tuple or not 0 < len(shape) <= LIMITS["max_dims"] \
            or not all(type(x) is int and x > 0 for x in shape):
        _fail(f"bad shape for {what}")
    n = math.prod(shape)
    if n > LIMITS["max_elements"]: _fail(f"{what} has {n:.3g} elements (limit {LIMITS['max_elements']})")
    return n


def check_const(value: Any, d: dt.DType) -> None:
    if d.kind == "b":
        if type(value) is not bool: _fail("bool constant is not a bool")
    elif d.is_int:
        lo, hi = _INT_RANGE.get(d.name, (-(1 << 63), (1 << 63) - 1))
        if type(value) is not int or not lo <= value <= hi: _fail(f"constant not representable in {d.name}")
    elif type(value) is not float: _fail(f"{d.name} constant is not a float")
    elif math.isfinite(value) and abs(value) > _FLOAT_MAX.get(d.name, math.inf):
        _fail(f"constant {value:.3g} overflows {d.name}")


def validate_kernel(k: Any) -> None:
    """Raise ValidationError (one line) unless ``k`` is a well-formed front-end Kernel."""
    from superopt.ir.kernel import Axis, Buffer
    check_name(k.name, "kernel")
    if type(k.axes) is not tuple or not 0 < len(k.axes) <= LIMITS["max_axes"]: _fail("bad axes")
    for a in k.axes:
        if type(a) is not Axis or type(a.size) is not int or a.size <= 0 or type(a.reduce) is not bool:
            _fail("malformed axis")
    pts = math.prod(a.size for a in k.axes)
    if pts > LIMITS["max_points"]: _fail(f"iteration space of {pts:.3g} points (limit {LIMITS['max_points']})")
    if type(k.inputs) is not tuple: _fail("bad inputs")
    sizes = []
    for b in k.inputs + (k.output,):
        if type(b) is not Buffer: _fail("malformed buffer")
        check_name(b.name, "buffer"); check_dtype(b.dtype)  # noqa: E702
        sizes.append(check_shape(b.shape, f"buffer {b.name}"))
    out_axes = {i for i, a in enumerate(k.axes) if not a.reduce}
    # iterative walk: count, depth, types; sources are visited first
    order = _walk((k.body, k.store))
    depth: dict[int, int] = {}
    for n in order:
        _check_node(n, k, sizes)
        depth[id(n)] = d = 1 + max((depth[id(s)] for s in n.src), default=0)
        if d > LIMITS["max_depth"]: _fail(f"graph deeper than {LIMITS['max_depth']}")
        n._range()  # sources already cached: no recursion
    for n in order:  # every unmasked load's index inside its buffer
        if n.op is Ops.LOAD and n.src[1] is TRUE:
            lo, hi = n.src[0]._range()
            if not (0 <= lo and hi < sizes[n.arg]): _fail(f"load index range [{lo}, {hi}] outside input {n.arg} ({sizes[n.arg]} elements)")
    lo, hi = k.store._range()
    if not (0 <= lo and hi < sizes[-1]): _fail(f"store index range [{lo}, {hi}] outside the output ({sizes[-1]} elements)")
    if not k.store.dtype.is_int: _fail("store index is not an integer")
    for n in _walk((k.store,)):
        if n.op is Ops.VAR and n.arg[0] not in out_axes: _fail("store index uses a reduce axis")
        if n.op in (Ops.LOAD, Ops.REDUCE): _fail("store index reads data")


def _walk(roots: tuple[Node, ...]) -> list[Node]:
    out: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(r, False) for r in roots]
    while stack:
        n, done = stack.pop()
        if done: out.append(n); continue  # noqa: E702
        if id(n) in seen: continue
        if type(n) is not Node: _fail("graph holds a non-node")
        seen.add(id(n))
        if len(seen) > LIMITS["max_nodes"]: _fail(f"graph has more than {LIMITS['max_nodes']} nodes")
        if type(n.src) is not tuple: _fail("node sources are not a tuple")
        stack.append((n, True))
        stack.extend((s, False) for s in n.src)
    return out


def _check_node(n: Node, k: Any, sizes: list[int]) -> None:
    op, d, src, arg = n.op, n.dtype, n.src, n.arg
    if type(op) is not Ops or op not in FRONT_END_OPS: _fail(f"op {getattr(op, 'name', op)!s:.20} is not allowed in a kernel file")
    check_dtype(d)
    ar = {Ops.CONST: 0, Ops.VAR: 0, Ops.LOAD: 2, Ops.WHERE: 3, Ops.REDUCE: 1}.get(op, 1 if op in UNARY else 2)
    if len(src) != ar: _fail(f"{op.name} takes {ar} sources, has {len(src)}")
    if op is Ops.CONST:
        check_const(arg, d)
    elif op is Ops.VAR:
        if type(arg) is not tuple or len(arg) != 2 or type(arg[0]) is not int or type(arg[1]) is not int \
                or not 0 <= arg[0] < len(k.axes) or arg[1] != k.axes[arg[0]].size or d is not dt.int32:
            _fail("malformed VAR (axis, size)")
    elif op is Ops.LOAD:
        if type(arg) is not int or not 0 <= arg < len(k.inputs): _fail("LOAD names no input")
        if d is not k.inputs[arg].dtype or not src[0].dtype.is_int or src[1].dtype is not dt.bool_:
            _fail("malformed LOAD (dtype, index or valid)")
    elif op is Ops.REDUCE:
        if type(arg) is not tuple or len(arg) != 2 or arg[0] not in REDUCE_OPS or type(arg[1]) is not tuple \
                or not all(type(a) is int and 0 <= a < len(k.axes) for a in arg[1]):
            _fail("malformed REDUCE (op, axes)")
    elif arg is not None:
        _fail(f"{op.name} takes no argument")
    if op in (Ops.IDIV, Ops.MOD) and d.is_int and src[1].op is Ops.CONST and src[1].arg == 0:
        _fail("integer division by zero")
