"""A fast whole-output reference for classic kernels (elementwise, GEMM, conv, reductions).

Every axis of the kernel is its own numpy dimension, so a node's value only spans the axes
it depends on (a GEMM's loads are M x K and K x N, never M x N x K); a sum over the reduce
axes of a product is one ``np.einsum`` (BLAS), other reductions fold the materialized
value. Values are float64 for floats (the interpreter's compute precision) and wrap like
the interpreter for integers. Any intermediate larger than ``LIMIT`` elements gives ``None``
(callers fall back to the point-wise interpreter). Row kernels (softmax, layernorm, rmsnorm)
are evaluated whole by the interpreter's whole-row mode of the same evaluator, up to
``ROW_LIMIT`` output elements."""
from __future__ import annotations

import math
import string

import numpy as np

from superopt.ir import dtype as dt
from superopt.ir.interpret import _Input, cast_values, compute_dtype, evaluate, run_kernel
from superopt.ir.kernel import Kernel
from superopt.ir.node import Ops, toposort

LIMIT = 1 << 26
ROW_LIMIT = 1 << 25        # output elements of a row kernel checked whole (1000x1000 softmax: ~0.2 s)


class _TooBig(Exception):
    pass


def _check(shape) -> None:
    if math.prod(shape) > LIMIT: raise _TooBig


def _einsum_sum(a: np.ndarray, b: np.ndarray, red: list[int], nd: int) -> np.ndarray:
    """sum over dims ``red`` of a * b (both nd-dimensional, broadcastable), keepdims."""
    shape = np.broadcast_shapes(a.shape, b.shape)
    letters = string.ascii_letters[:nd]
    def sub(x):
        keep = [i for i in range(nd) if x.shape[i] != 1]
        return x.reshape([x.shape[i] for i in keep]), "".join(letters[i] for i in keep)
    (xa, sa), (xb, sb) = sub(a), sub(b)
    out_dims = [i for i in range(nd) if i not in red and shape[i] != 1]
    _check([shape[i] for i in out_dims])
    r = np.einsum(f"{sa},{sb}->{''.join(letters[i] for i in out_dims)}", xa, xb, optimize=True)
    full = [1] * nd
    for i in out_dims: full[i] = shape[i]
    return r.reshape(full)


def whole_output(k: Kernel, inputs) -> np.ndarray | None:
    """The whole output (storage dtype, flat) or None where no fast path applies."""
    if k.row_axes:   # softmax, norms: the interpreter's whole-row mode, rows in chunks
        return run_kernel(k, inputs).reshape(-1) if k.out_points <= ROW_LIMIT else None
    try:
        return _run(k, inputs)
    except _TooBig:
        return None


def _run(k: Kernel, inputs) -> np.ndarray:
    nd, red = len(k.axes), list(k.reduce_axes)
    ins = [_Input(np.asarray(a).reshape(-1), b.dtype) for a, b in zip(inputs, k.inputs)]
    env = {}
    for i, a in enumerate(k.axes):
        shp = [1] * nd
        shp[i] = a.size
        env[i] = np.arange(a.size, dtype=np.int64).reshape(shp)
    order = toposort(k.body) if k.body is not None else []
    users: dict = {}
    for n in order:
        for s in n.src: users.setdefault(s, []).append(n)
    lazy = {n.src[0] for n in order if n.op is Ops.REDUCE and n.arg[0] == "sum" and n.src[0].op is Ops.MUL
            and all(u.op is Ops.REDUCE for u in users.get(n.src[0], []))}
    body = evaluate(order, env, ins, nd, tuple(red), _einsum_hook(lazy, red, nd), _check)[k.body]
    st = evaluate(toposort(k.store), env, ins, nd, tuple(red), check=_check)[k.store]
    grid = [1 if a.reduce else a.size for a in k.axes]
    _check(grid)
    out = np.zeros(k.output.size, dtype=compute_dtype(k.output.dtype))
    out[np.broadcast_to(st, grid).reshape(-1)] = np.broadcast_to(body, grid).reshape(-1)
    return dt.to_storage(cast_values(out, k.output.dtype), k.output.dtype)


class _Lazy:
    """A product under a sum-reduction, not materialized (a GEMM's M x N x K)."""
    def __init__(self, a: np.ndarray, b: np.ndarray): self.a, self.b = a, b


def _einsum_hook(lazy: set, red: list[int], nd: int):
    """The evaluator hook of the whole-array mode: a reduced product is summed by einsum."""
    def hook(n, val):
        if n in lazy: return _Lazy(val[n.src[0]], val[n.src[1]])
        if n.op is Ops.REDUCE and isinstance(m := val[n.src[0]], _Lazy):
            v = _einsum_sum(m.a, m.b, red, nd)
            return v.astype(np.int64) if n.dtype.is_int and v.dtype != np.int64 else v
        return None
    return hook
