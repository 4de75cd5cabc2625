"""Reference semantics: a small numpy interpreter of ``Kernel``.

This is the ground truth every backend is checked against. Floats are evaluated in
float64 (casts round to their dtype), integers in int64 (casts wrap), so a backend's
only licence is its own rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from . import dtype as dt
from .kernel import Kernel
from .node import Node, Ops, toposort

_NP_BIN = {Ops.ADD: np.add, Ops.MUL: np.multiply, Ops.MAX: np.maximum, Ops.CMPLT: np.less,
           Ops.CMPEQ: np.equal, Ops.CMPNE: np.not_equal, Ops.IDIV: np.floor_divide, Ops.MOD: np.mod,
           Ops.AND: np.bitwise_and, Ops.OR: np.bitwise_or, Ops.XOR: np.bitwise_xor,
           Ops.SHL: np.left_shift, Ops.SHR: np.right_shift}


def _unary(op: Ops, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if op is Ops.NEG: return np.negative(x) if x.dtype != np.bool_ else ~x
        if op is Ops.EXP2: return np.exp2(x)
        if op is Ops.LOG2: return np.log2(x)
        if op is Ops.RECIP: return 1.0 / x
        if op is Ops.SQRT: return np.sqrt(x)
        if op is Ops.SIN: return np.sin(x)
    raise ValueError(f"unknown unary op {op}")


def compute_dtype(d: dt.DType) -> np.dtype:
    return np.dtype(np.float64) if d.is_float else np.dtype(np.bool_) if d.kind == "b" else np.dtype(np.int64)


def cast_values(x: np.ndarray, to: dt.DType) -> np.ndarray:
    """Round/wrap values to ``to`` and return them in compute precision."""
    with np.errstate(all="ignore"):
        if to is dt.bool_: return x != 0
        if to.is_float:
            if to is dt.float64: return x.astype(np.float64)
            return dt.to_values(dt.to_storage(x.astype(np.float64), to), to).astype(np.float64)
        if np.issubdtype(x.dtype, np.floating):
            x = np.trunc(np.nan_to_num(x, nan=0.0, posinf=2**62, neginf=-2**62))
        return x.astype(np.int64).astype(to.np).astype(np.int64)


def apply(op: Ops, out_dt: dt.DType, vals: list[np.ndarray], src_dts: Sequence[dt.DType]) -> np.ndarray:
    if op is Ops.CAST: return cast_values(vals[0], out_dt)
    if op is Ops.WHERE: return np.where(vals[0], vals[1], vals[2])
    if len(vals) == 1: return _unary(op, vals[0])
    with np.errstate(all="ignore"):
        if op in (Ops.IDIV, Ops.MOD) and src_dts[0].is_float:
            raise ValueError("integer division on floats")
        r = _NP_BIN[op](vals[0], vals[1])
    if out_dt.is_int and op in (Ops.ADD, Ops.MUL, Ops.SHL):  # wrap like the machine
        r = r.astype(out_dt.np).astype(np.int64)
    return r


def eval_scalar(op: Ops, out_dt: dt.DType, args: list[Any], src_dts: Sequence[dt.DType]) -> Any:
    vals = [np.asarray(a, dtype=compute_dtype(d)) for a, d in zip(args, src_dts)]
    return apply(op, out_dt, vals, src_dts).item()


def identity(op: str, d: dt.DType) -> float:
    if op == "sum": return 0
    return -math.inf if d.is_float else np.iinfo(d.np).min


def run_kernel(k: Kernel, inputs: Sequence[np.ndarray], points: np.ndarray | None = None,
               chunk: int = 1 << 22) -> np.ndarray:
    """Evaluate ``k`` on storage arrays. Without ``points``, returns the whole output
    (storage dtype, output shape); with ``points`` (output linear indices), returns just
    those values (compute precision) — cheap checks of large kernels."""
    ins = [_Input(np.asarray(a).reshape(-1), b.dtype) for a, b in zip(inputs, k.inputs)]
    for a, b in zip(ins, k.inputs):
        if a.size != b.size:
            raise ValueError(f"input {b.name}: expected {b.size} elements, got {a.size}")
    pt_axes, fold = _point_axes(k), _folded_axes(k)
    red_pts = math.prod(k.axes[a].size for a in fold)
    step = max(1, chunk // max(1, red_pts))
    if points is not None:
        if not k.row_axes:
            return np.concatenate([_eval(k, ins, points[i:i + step]) for i in range(0, len(points), step)] or [np.zeros(0)])
        # a row kernel evaluates whole rows: each point's row once, then its element of it
        coords = _unravel(np.asarray(points, dtype=np.int64), [k.axes[a].size for a in k.output_axes])
        at = dict(zip(k.output_axes, coords))
        rows, inv = np.unique(_ravel([at[a] for a in pt_axes], [k.axes[a].size for a in pt_axes]), return_inverse=True)
        vals = np.concatenate([_eval(k, ins, rows[i:i + step]) for i in range(0, len(rows), step)] or [np.zeros(0)])
        return vals.reshape(len(rows), red_pts)[inv.reshape(-1), _ravel([at[a] for a in fold], [k.axes[a].size for a in fold])]
    out = np.zeros(k.output.size, dtype=compute_dtype(k.output.dtype))
    total = math.prod(k.axes[a].size for a in pt_axes)
    for i in range(0, total, step):
        pts = np.arange(i, min(total, i + step))
        vals, where = _eval(k, ins, pts, with_store=True)
        out[where] = vals
    return dt.to_storage(cast_values(out, k.output.dtype), k.output.dtype).reshape(k.output.shape)


@dataclass(frozen=True)
class _Input:
    """An input in storage form, converted to compute precision only where it is read: a
    sampled check of a GB-sized kernel reads a fraction of it, and a whole float64 copy of
    the input cost seconds and twice its memory."""
    data: np.ndarray      # flat, storage dtype
    dtype: dt.DType

    @property
    def size(self) -> int: return self.data.size

    def gather(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(dt.to_values(self.data[idx], self.dtype)).astype(compute_dtype(self.dtype), copy=False)


def _point_axes(k: Kernel) -> list[int]:
    """Axes a chunk of evaluation points runs over (a row kernel's rows stay whole)."""
    return [a for a in k.output_axes if a not in k.row_axes]


def _folded_axes(k: Kernel) -> list[int]:
    """Axes evaluated as whole ranges inside a point: reduce axes, or a row kernel's row axes."""
    return k.row_axes or k.reduce_axes


def _unravel(flat: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    out, rem = [], flat
    for n in reversed(sizes):
        out.insert(0, rem % n)
        rem = rem // n
    return out


def _ravel(coords: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    out = np.zeros_like(coords[0]) if coords else np.zeros((), np.int64)
    for c, n in zip(coords, sizes): out = out * n + c
    return out


def _eval(k: Kernel, ins: list[_Input], pts: np.ndarray, with_store: bool = False):
    """Values at points ``pts`` (row kernels: whole rows, point-major)."""
    pt_axes, fold = _point_axes(k), _folded_axes(k)
    nd = 1 + len(fold)
    env: dict[int, np.ndarray] = {}
    for a, c in zip(pt_axes, _unravel(pts.astype(np.int64), [k.axes[a].size for a in pt_axes])):
        env[a] = c.reshape((-1,) + (1,) * (nd - 1))
    for j, a in enumerate(fold):
        shp = [1] * nd
        shp[1 + j] = k.axes[a].size
        env[a] = np.arange(k.axes[a].size, dtype=np.int64).reshape(shp)
    full = (len(pts),) + (tuple(k.axes[a].size for a in fold) if k.row_axes else (1,) * (nd - 1))
    vals = np.broadcast_to(_eval_node(k.body, env, ins, nd), full).reshape(-1)
    if not with_store: return vals
    st = np.broadcast_to(_eval_node(k.store, env, ins, nd), full).reshape(-1)
    return vals, st


def _eval_node(root: Node, env: dict[int, np.ndarray], ins: list[_Input], nd: int) -> np.ndarray:
    """The value of ``root`` with dim 0 the evaluation points and dims 1.. the folded axes."""
    return evaluate(toposort(root), env, ins, nd, tuple(range(1, nd)))[root]


Hook = Callable[[Node, dict], Any]


def evaluate(order: Sequence[Node], env: dict[int, np.ndarray], ins: list[_Input], nd: int,
             red: tuple[int, ...], hook: Hook | None = None, check: Callable[[tuple], None] | None = None) -> dict:
    """The one evaluator: every node of ``order`` (sources first) as an nd-dimensional array
    that spans only the dims its value depends on; ``env`` maps an axis to its index array,
    a REDUCE folds dims ``red`` (keepdims). Floats are float64, integers int64.

    Two modes share it: the interpreter's (dim 0 the evaluation points, dims 1.. the folded
    axes) and ``superopt.fastref``'s whole-array mode (one dim per axis), which passes
    ``hook`` -- asked first for each node, a value it returns (not None) is used instead:
    fastref keeps a reduced product lazy and sums it with einsum -- and ``check``, called
    with each value's shape before it is made (fastref refuses huge intermediates)."""
    val: dict = {}
    for n in order:
        if hook is not None and (v := hook(n, val)) is not None:
            val[n] = v
            continue
        if n.op is Ops.CONST:
            v = np.asarray(n.arg, dtype=compute_dtype(n.dtype)).reshape((1,) * nd)
        elif n.op is Ops.VAR:
            v = env[n.arg[0]]
        elif n.op is Ops.LOAD:
            v = _load(n, val[n.src[0]], val[n.src[1]], ins[n.arg], check)
        elif n.op is Ops.REDUCE:
            x = val[n.src[0]]
            shape = list(x.shape)
            for i in red: shape[i] = max(shape[i], _size(env, i, nd))
            if check: check(shape)
            v = (np.sum if n.arg[0] == "sum" else np.max)(np.broadcast_to(x, shape), axis=red, keepdims=True)
        else:
            srcs = [val[s] for s in n.src]
            if check: check(np.broadcast_shapes(*[x.shape for x in srcs]))
            v = apply(n.op, n.dtype, srcs, [s.dtype for s in n.src])
            if n.dtype.is_float and v.dtype != np.float64: v = v.astype(np.float64)
        val[n] = v
    return val


def _load(n: Node, idx: np.ndarray, ok: np.ndarray, buf: _Input, check) -> np.ndarray:
    """A (masked) load: masked-off points read nothing and yield 0."""
    if check: check(np.broadcast_shapes(idx.shape, ok.shape))
    safe = np.where(ok, idx, 0)
    if safe.size and (safe.min() < 0 or safe.max() >= buf.size):
        raise IndexError(f"load from input {n.arg} out of bounds (index range {safe.min()}..{safe.max()}, size {buf.size})")
    return np.where(ok, buf.gather(safe), np.zeros((), compute_dtype(buf.dtype)))


def _size(env: dict[int, np.ndarray], dim: int, nd: int) -> int:
    return max((a.shape[dim] for a in env.values() if a.ndim == nd), default=1)
