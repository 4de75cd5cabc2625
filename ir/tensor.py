"""Lazy ``Tensor`` front end: operations build a graph of Nodes; nothing runs until
``numpy()``/``realize()``, which splits the graph into kernels and executes them."""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np

from . import dtype as dt
from . import context
from . import graph as g
from .kernelize import Step, kernelize
from .node import Node, Ops, const

_ids = itertools.count()
LOG2E, LN2 = 1 / math.log(2), math.log(2)


_runner_default = context.interpret   # the reference interpreter, the runner outside any context


class _CurrentRunner:
    """``Tensor.runner``: the current context's runner (read-only; set it with ``context.use``)."""
    def __get__(self, obj, owner=None) -> Callable[[Step, dict[str, np.ndarray]], np.ndarray]:
        return context.current().runner


class Tensor:
    """A lazy n-d array. Build with ``Tensor(array)`` or ``Tensor.empty(shape)``."""
    # every realize goes through the context's runner (the runtime enters tuned backends)
    runner = _CurrentRunner()
    _data: dict[str, np.ndarray] = {}

    def __init__(self, data, dtype: dt.DType | None = None, name: str | None = None):
        if isinstance(data, Node):
            self.node = data
            return
        arr = np.asarray(data)
        dtype = dtype or _infer(arr)
        name = name or f"x{next(_ids)}"
        self.node = g.buffer(name, arr.shape or (1,), dtype)  # scalars become (1,)
        Tensor._data[name] = dt.to_storage(arr.reshape(arr.shape or (1,)), dtype)

    @staticmethod
    def empty(*shape, dtype: dt.DType = dt.float32, name: str | None = None) -> "Tensor":
        """A named input with no data (for building kernels)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)): shape = tuple(shape[0])
        return Tensor(g.buffer(name or f"x{next(_ids)}", shape, dtype))

    @staticmethod
    def full(shape: Sequence[int], value, dtype: dt.DType = dt.float32) -> "Tensor":
        c = Tensor(const(value, dtype))
        return c.reshape((1,) * len(shape)).expand(tuple(shape)) if shape else c

    @staticmethod
    def arange(n: int, dtype: dt.DType = dt.int32) -> "Tensor":
        """0, 1, ..., n-1. Never a buffer: every kernel that reads it computes it from its index."""
        t = Tensor(g.arange(n))
        return t if dtype is dt.int32 else t.cast(dtype)

    def one_hot(self, classes: int, dtype: dt.DType = dt.float32) -> "Tensor":
        """Integer ids -> one-hot rows along a new last axis (computed in place, like arange)."""
        ids = self.reshape(self.shape + (1,)).expand(self.shape + (classes,))
        rng = Tensor.arange(classes).reshape((1,) * self.ndim + (classes,)).expand(self.shape + (classes,))
        return ids.cast(dt.int32).eq(rng).cast(dtype)

    def embedding(self, ids: "Tensor") -> "Tensor":
        """Rows of this (vocab, ...) table at integer ``ids`` (shape ids.shape + row shape):
        one gather, no one-hot matmul; ids outside the table read zeros."""
        return Tensor(g.gather(self.node, ids.node))

    @staticmethod
    def dropout_mask(shape: Sequence[int], p: float, seed: int = 0) -> "Tensor":
        """Keep-mask (bool) dropping a fraction ``p``: an integer hash of each element's flat
        index and ``seed`` (deterministic, computed in place: no random buffer is read)."""
        if not 0.0 <= p < 1.0: raise ValueError(f"dropout probability {p} not in [0, 1)")
        n = math.prod(shape)
        h = (Tensor.arange(n) * 0x5BD1E995) ^ (int(seed) & 0x7FFFFFFF)   # wrapping int32 arithmetic
        h = h & 0x7FFFFFFF
        h = ((h ^ (h >> 15)) * 0x27D4EB2F) & 0x7FFFFFFF
        h = h ^ (h >> 13)
        return ((h & 0xFFFFFF) >= int(round(p * (1 << 24)))).reshape(tuple(shape))

    def dropout(self, p: float, seed: int = 0) -> "Tensor":
        """Zero a fraction ``p`` of the elements (``dropout_mask``), scale the rest by 1/(1-p)."""
        return Tensor.dropout_mask(self.shape, p, seed).where(self * (1.0 / (1.0 - p)), 0.0)

    # ---- properties ---------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]: return g.shape(self.node)
    @property
    def dtype(self) -> dt.DType: return self.node.dtype
    @property
    def ndim(self) -> int: return len(self.shape)
    def numel(self) -> int: return math.prod(self.shape)
    def __repr__(self) -> str: return f"<Tensor {self.shape} {self.dtype.name}>"

    # ---- execution ----------------------------------------------------------
    def schedule(self, out_name: str = "out") -> list[Step]:
        return kernelize(self.node, out_name)

    def numpy(self) -> np.ndarray:
        """Realize: run every kernel, return values (bf16 as float32)."""
        bufs = dict(Tensor._data)
        steps = self.schedule(out_name=f"out{next(_ids)}")
        made = {st.output for st in steps}
        missing = list(dict.fromkeys(n for st in steps for n in st.inputs if n not in bufs and n not in made))
        if missing: raise ValueError(f"inputs without data: {missing} (use Tensor(array) to give data)")
        run_all = getattr(context.current().runner, "run_steps", None)   # a runner taking the whole realize (one CUDA graph)
        if run_all is not None: bufs.update(run_all(steps, bufs))
        for st in steps if run_all is None else ():
            bufs[st.output] = context.current().runner(st, bufs)
        return dt.to_values(bufs[steps[-1].output], self.dtype).reshape(self.shape)

    # ---- elementwise --------------------------------------------------------
    def _const(self, x) -> "Tensor":
        if isinstance(x, Tensor): return x
        return Tensor.full(self.shape, x, self.dtype)

    def _bin(self, op: Ops, other, reverse: bool = False, dtype=None) -> "Tensor":
        a, b = _broadcast(self, self._const(other) if not isinstance(other, Tensor) else other)
        if a.dtype is not b.dtype:
            up = dt.least_upper(a.dtype, b.dtype)
            a, b = a.cast(up), b.cast(up)
        if reverse: a, b = b, a
        return Tensor(g.ewise(op, a.node, b.node, dtype=dtype))

    def _un(self, op: Ops) -> "Tensor": return Tensor(g.ewise(op, self.node))

    def __add__(self, o): return self._bin(Ops.ADD, o)
    def __radd__(self, o): return self._bin(Ops.ADD, o, True)
    def __mul__(self, o): return self._bin(Ops.MUL, o)
    def __rmul__(self, o): return self._bin(Ops.MUL, o, True)
    def __neg__(self): return self._un(Ops.NEG)
    def __sub__(self, o): return self + (-o if not isinstance(o, Tensor) else -o)
    def __rsub__(self, o): return (-self) + o
    def __truediv__(self, o): return self * (o.reciprocal() if isinstance(o, Tensor) else 1.0 / o)
    def __rtruediv__(self, o): return self.reciprocal() * o
    def __lt__(self, o): return self._bin(Ops.CMPLT, o)
    def __gt__(self, o): return self._bin(Ops.CMPLT, o, True)
    def __le__(self, o): return ~(self > o)
    def __ge__(self, o): return ~(self < o)
    def eq(self, o) -> "Tensor": return self._bin(Ops.CMPEQ, o)
    def ne(self, o) -> "Tensor": return self._bin(Ops.CMPNE, o)
    def __invert__(self): return self._bin(Ops.CMPNE, Tensor.full(self.shape, True, dt.bool_))
    def __and__(self, o): return self._bin(Ops.AND, o)
    def __or__(self, o): return self._bin(Ops.OR, o)
    def __xor__(self, o): return self._bin(Ops.XOR, o)
    def __lshift__(self, o): return self._bin(Ops.SHL, o)
    def __rshift__(self, o): return self._bin(Ops.SHR, o)
    def maximum(self, o) -> "Tensor": return self._bin(Ops.MAX, o)
    def minimum(self, o) -> "Tensor": return -((-self).maximum(-o if isinstance(o, Tensor) else -o))
    def where(self, a, b) -> "Tensor":
        a = a if isinstance(a, Tensor) else Tensor.full(self.shape, a, b.dtype if isinstance(b, Tensor) else dt.float32)
        b = b if isinstance(b, Tensor) else Tensor.full(self.shape, b, a.dtype)
        c, a, b = _broadcast(self, a, b)
        return Tensor(g.ewise(Ops.WHERE, c.node, a.node, b.node))
    def cast(self, dtype: dt.DType) -> "Tensor":
        return self if dtype is self.dtype else Tensor(g.ewise(Ops.CAST, self.node, dtype=dtype))
    def exp2(self): return self._un(Ops.EXP2)
    def log2(self): return self._un(Ops.LOG2)
    def exp(self): return (self * LOG2E).exp2()
    def log(self): return self.log2() * LN2
    def sqrt(self): return self._un(Ops.SQRT)
    def rsqrt(self): return self.sqrt().reciprocal()
    def reciprocal(self): return self._un(Ops.RECIP)
    def sin(self): return self._un(Ops.SIN)
    def cos(self): return (self + math.pi / 2).sin()
    def abs(self): return self.maximum(-self)
    def relu(self): return self.maximum(0.0)
    def sigmoid(self): return (1.0 + (-self).exp()).reciprocal()
    def tanh(self): return 2.0 * (2.0 * self).sigmoid() - 1.0
    def gelu(self): return 0.5 * self * (1.0 + (0.7978845608028654 * (self + 0.044715 * self * self * self)).tanh())

    # ---- reductions ---------------------------------------------------------
    def _axes(self, axis) -> tuple[int, ...]:
        if axis is None: return tuple(range(self.ndim))
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        for a in axes:
            if not -self.ndim <= a < self.ndim: raise ValueError(f"axis {a} out of range for shape {self.shape}")
        return tuple(a % self.ndim for a in axes)

    def _reduce(self, op: str, axis, keepdim: bool) -> "Tensor":
        axes = self._axes(axis)
        n = math.prod(self.shape[a] for a in axes)
        f = _split_factor(n) if n >= SPLIT_MIN and self.numel() // max(1, n) < SPLIT_RESULTS else 1
        if f > 1:   # two stages: partial results over f slices of the row, then their fold
            kept = [a for a in range(self.ndim) if a not in axes]
            x = self.permute(tuple(kept) + axes).reshape(tuple(self.shape[a] for a in kept) + (f, n // f))
            part = Tensor(g.reduce(x.node, op, (len(kept) + 1,)))
            out = Tensor(g.reduce(part.node, op, (len(kept),))).reshape(
                tuple(1 if i in axes else d for i, d in enumerate(self.shape)))
        else:
            out = Tensor(g.reduce(self.node, op, axes))
        return out if keepdim else out.reshape(tuple(d for i, d in enumerate(self.shape) if i not in axes))

    def sum(self, axis=None, keepdim: bool = False, acc_dtype: dt.DType | None = None) -> "Tensor":
        x = self.cast(acc_dtype) if acc_dtype else self
        return x._reduce("sum", axis, keepdim)
    def max(self, axis=None, keepdim: bool = False): return self._reduce("max", axis, keepdim)
    def min(self, axis=None, keepdim: bool = False): return -((-self).max(axis, keepdim))
    def mean(self, axis=None, keepdim: bool = False):
        n = math.prod(self.shape[a] for a in self._axes(axis))
        return self.sum(axis, keepdim) * (1.0 / n)
    def var(self, axis=None, keepdim: bool = False):
        d = self - self.mean(axis, keepdim=True)
        return (d * d).mean(axis, keepdim)

    def softmax(self, axis: int = -1) -> "Tensor":
        e = (self - self.max(axis, keepdim=True)).exp()
        return e / e.sum(axis, keepdim=True)

    def layernorm(self, axis: int = -1, eps: float = 1e-5) -> "Tensor":
        return (self - self.mean(axis, keepdim=True)) * (self.var(axis, keepdim=True) + eps).rsqrt()

    def rmsnorm(self, axis: int = -1, eps: float = 1e-6) -> "Tensor":
        return self * ((self * self).mean(axis, keepdim=True) + eps).rsqrt()

    # ---- movement -----------------------------------------------------------
    def reshape(self, *shape) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)): shape = tuple(shape[0])
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            shape = tuple(self.numel() // known if d == -1 else d for d in shape)
        return Tensor(g.reshape(self.node, shape))
    def permute(self, *order) -> "Tensor":
        if len(order) == 1 and isinstance(order[0], (tuple, list)): order = tuple(order[0])
        return Tensor(g.permute(self.node, tuple(o % self.ndim for o in order)))
    def expand(self, *shape) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)): shape = tuple(shape[0])
        return Tensor(g.expand(self.node, shape))
    def pad(self, padding, value: float = 0.0) -> "Tensor":
        out = Tensor(g.pad(self.node, tuple(padding)))
        if value == 0: return out
        mask = Tensor(g.pad(Tensor.full(self.shape, True, dt.bool_).node, tuple(padding)))
        return mask.where(out, Tensor.full(out.shape, value, self.dtype))
    def shrink(self, arg) -> "Tensor":
        return Tensor(g.shrink(self.node, tuple((0, d) if a is None else a for a, d in zip(arg, self.shape))))
    def transpose(self, a: int = -2, b: int = -1) -> "Tensor":
        order = list(range(self.ndim))
        order[a], order[b] = order[b], order[a]
        return self.permute(order)
    @property
    def T(self) -> "Tensor": return self.transpose()
    def flatten(self) -> "Tensor": return self.reshape(self.numel())
    def unsqueeze(self, dim: int) -> "Tensor":
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    # ---- derived: contractions ------------------------------------------------
    def matmul(self, w: "Tensor", acc_dtype: dt.DType | None = None) -> "Tensor":
        """(..., M, K) @ (..., K, N) with batch broadcasting; the result keeps the
        input dtype, accumulated in acc_dtype (default float32 for floats)."""
        if self.ndim < 2 or w.ndim < 2: raise ValueError("matmul needs operands of rank >= 2")
        (m, k), (k2, n) = self.shape[-2:], w.shape[-2:]
        if k != k2: raise ValueError(f"matmul: inner dimensions differ: {self.shape} @ {w.shape}")
        a = self.reshape(self.shape[:-1] + (1, k))            # (..., M, 1, K)
        b = w.transpose(-1, -2).reshape(w.shape[:-2] + (1, n, k))  # (..., 1, N, K)
        a, b = _broadcast(a, b)
        return _contract(a, b, acc_dtype, self.dtype)
    __matmul__ = matmul

    def dot_int8(self, w: "Tensor") -> "Tensor":
        """int8 x int8 -> int32 matmul."""
        return self.cast(dt.int32).matmul(w.cast(dt.int32))

    def conv2d(self, w: "Tensor", stride: int = 1, padding: int = 0, groups: int = 1,
               layout: str = "nchw", acc_dtype: dt.DType | None = None) -> "Tensor":
        """2-D convolution. nchw: x (N,C,H,W), w (K,C/g,R,S) -> (N,K,OH,OW);
        nhwc: x (N,H,W,C), w (K,R,S,C/g) -> (N,OH,OW,K)."""
        if layout not in ("nchw", "nhwc"): raise ValueError(f"layout must be nchw or nhwc, got {layout!r}")
        x = self if layout == "nchw" else self.permute(0, 3, 1, 2)
        wt = w if layout == "nchw" else w.permute(0, 3, 1, 2)
        (n, c, h, wd), (kout, cg, r, s) = x.shape, wt.shape
        if c % groups or kout % groups or cg != c // groups:
            raise ValueError(f"conv2d: channels {c}, weights {wt.shape} and groups {groups} do not fit")
        if h + 2 * padding < r or wd + 2 * padding < s: raise ValueError("conv2d: kernel larger than padded input")
        x = x.pad(((0, 0), (0, 0), (padding, padding), (padding, padding)))
        x = _windows(x, 2, r, stride)                          # (N,C,OH,R,W')
        x = _windows(x, 4, s, stride)                          # (N,C,OH,R,OW,S)
        oh, ow = x.shape[2], x.shape[4]
        x = x.reshape(n, groups, cg, oh, r, ow, s).permute(0, 1, 3, 5, 2, 4, 6)  # (N,G,OH,OW,Cg,R,S)
        x = x.reshape(n, groups, 1, oh, ow, cg, r, s)
        wt = wt.reshape(1, groups, kout // groups, 1, 1, cg, r, s)
        x, wt = _broadcast(x, wt)
        out = _contract_axes(x, wt, (5, 6, 7), acc_dtype, self.dtype)  # (N,G,Kg,OH,OW)
        out = out.reshape(n, kout, oh, ow)
        return out if layout == "nchw" else out.permute(0, 2, 3, 1)


# A reduction folding at least SPLIT_MIN elements into fewer than SPLIT_RESULTS results runs
# in two stages (partials over slices of each row, then their fold): one kernel per
# result could not keep a GPU's SMs (or a CPU's cores) busy.
SPLIT_MIN, SPLIT_RESULTS = 1 << 16, 64


def _split_factor(n: int) -> int:
    """Slices per row: the divisor of n nearest sqrt(n), within 64..4096 (1: none fits)."""
    ds = [d for d in range(64, min(4096, n // 64) + 1) if n % d == 0]
    return min(ds, key=lambda d: abs(math.log(d) - math.log(n) / 2)) if ds else 1


def _infer(arr: np.ndarray) -> dt.DType:
    if arr.dtype == np.bool_: return dt.bool_
    if arr.dtype.kind == "f": return dt.float16 if arr.dtype == np.float16 else dt.float32
    return {np.dtype(np.int8): dt.int8, np.dtype(np.uint8): dt.uint8}.get(arr.dtype, dt.int32)


def _broadcast(*ts: Tensor) -> list[Tensor]:
    nd = max(t.ndim for t in ts)
    ts = [t.reshape((1,) * (nd - t.ndim) + t.shape) if t.ndim < nd else t for t in ts]
    out_shape = []
    for dims in zip(*(t.shape for t in ts)):
        big = {d for d in dims if d != 1}
        if len(big) > 1: raise ValueError(f"shapes {[t.shape for t in ts]} do not broadcast")
        out_shape.append(big.pop() if big else 1)
    return [t.expand(tuple(out_shape)) for t in ts]


def _contract(a: Tensor, b: Tensor, acc_dtype, out_dtype) -> Tensor:
    return _contract_axes(a, b, (a.ndim - 1,), acc_dtype, out_dtype)


def _contract_axes(a: Tensor, b: Tensor, axes, acc_dtype, out_dtype) -> Tensor:
    acc = acc_dtype or (dt.float32 if out_dtype.is_float else dt.int32)
    prod = a.cast(acc) * b.cast(acc) if acc is not a.dtype else a * b
    out = prod.sum(axes)
    return out if out_dtype.is_int and acc.is_int else out.cast(out_dtype)


def _windows(x: Tensor, dim: int, k: int, stride: int) -> Tensor:
    """Replace dimension ``dim`` (length L) by (O, k): out[o, j] = x[o*stride + j]."""
    order = [i for i in range(x.ndim) if i != dim] + [dim]
    y = x.permute(order)
    pre, L = y.shape[:-1], y.shape[-1]
    full = L - k + 1
    y = y.reshape(pre + (1, L)).expand(pre + (k, L)).reshape(pre + (k * L,))
    y = y.pad(((0, 0),) * len(pre) + ((0, k),)).reshape(pre + (k, L + 1))
    y = y.shrink(tuple((0, d) for d in pre) + ((0, k), (0, full)))       # [j, o] = x[o + j]
    nd = len(pre)
    y = y.permute(tuple(range(nd)) + (nd + 1, nd))                           # (..., full, k)
    if stride > 1:
        o = (full - 1) // stride + 1
        if o * stride > full: y = y.pad(((0, 0),) * nd + ((0, o * stride - full), (0, 0)))
        elif o * stride < full: y = y.shrink(tuple((0, d) for d in pre) + ((0, o * stride), (0, k)))
        y = y.reshape(pre + (o, stride, k)).shrink(tuple((0, d) for d in pre) + ((0, o), (0, 1), (0, k))).reshape(pre + (o, k))
    # move (O, k) back to where dim was
    back = list(range(nd))
    back = back[:dim] + [nd, nd + 1] + back[dim:]
    return y.permute(back)
