"""The library's kinds: builders over ``superopt.Tensor`` and their numpy references.

Input names are fixed per kind (``a``, ``b``, ``x``, ``w``, ...); intermediates are named
``t0, t1, ...`` and the program's output ``out`` by ``kernelize``.
"""
from __future__ import annotations

import math

import numpy as np

from superopt.ir import dtypes as dt
from superopt.ir.tensor import Tensor

from . import reference as ref
from .registry import Kind, Param, register

F32, F16, I8 = dt.float32, dt.float16, dt.int8


def _in(name: str, *shape: int, dtype: dt.DType) -> Tensor:
    return Tensor.empty(*shape, dtype=dtype, name=name)


# ---- contractions -------------------------------------------------------------------
def _matmul(p):
    a, b = _in("a", p["M"], p["K"], dtype=p["dtype"]), _in("b", p["K"], p["N"], dtype=p["dtype"])
    return a @ b, [a, b]


register(Kind("matmul", "C[M,N] = A[M,K] @ B[K,N] (float accumulate in float32; int8 gives int32)",
              (Param("M", 512, "rows of A and C"), Param("N", 512, "columns of B and C"),
               Param("K", 512, "reduction length"), Param("dtype", F32, "input dtype")),
              _matmul, lambda p, a, b: ref.matmul(a, b)))


def _bmm(p):
    a = _in("a", p["B"], p["M"], p["K"], dtype=p["dtype"])
    if p["b_layout"] == "nk":  # B stored (B, N, K), e.g. attention's K for Q @ K^T
        b = _in("b", p["B"], p["N"], p["K"], dtype=p["dtype"])
        return a @ b.transpose(-1, -2), [a, b]
    b = _in("b", p["B"], p["K"], p["N"], dtype=p["dtype"])
    return a @ b, [a, b]


register(Kind("bmm", "batched C[B,M,N] = A[B,M,K] @ B[B,K,N] (b_layout=nk: B stored [B,N,K])",
              (Param("B", 16, "batch"), Param("M", 128), Param("N", 128), Param("K", 64),
               Param("b_layout", "kn", "layout of the second operand", ("kn", "nk")), Param("dtype", F32)),
              _bmm, lambda p, a, b: ref.matmul(a, b if p["b_layout"] == "kn" else b.swapaxes(-1, -2))))


def _gemv(p):
    x, w = _in("x", 1, p["K"], dtype=p["dtype"]), _in("w", p["N"], p["K"], dtype=p["dtype"])
    return x @ w.T, [x, w]


register(Kind("gemv", "decode GEMV y[1,N] = x[1,K] @ W[N,K]^T (weights stored like nn.Linear)",
              (Param("K", 4096, "input features"), Param("N", 4096, "output features"), Param("dtype", F16)),
              _gemv, lambda p, x, w: x @ w.T))


def _conv_weight_shape(p) -> tuple[int, ...]:
    cg = p["C"] // p["groups"]
    return (p["K"], cg, p["R"], p["S"]) if p["layout"] == "nchw" else (p["K"], p["R"], p["S"], cg)


def _conv_input_shape(p) -> tuple[int, ...]:
    return (p["N"], p["C"], p["H"], p["W"]) if p["layout"] == "nchw" else (p["N"], p["H"], p["W"], p["C"])


def _conv2d(p):
    x, w = _in("x", *_conv_input_shape(p), dtype=p["dtype"]), _in("w", *_conv_weight_shape(p), dtype=p["dtype"])
    return x.conv2d(w, p["stride"], p["pad"], p["groups"], p["layout"]), [x, w]


_CONV_PARAMS = (Param("N", 1, "batch"), Param("C", 64, "input channels"), Param("H", 56), Param("W", 56),
                Param("K", 64, "output channels"), Param("R", 3, "filter height"), Param("S", 3, "filter width"),
                Param("stride", 1), Param("pad", 1, minimum=0), Param("groups", 1))

register(Kind("conv2d", "2-D convolution, nchw: x[N,C,H,W] w[K,C/g,R,S]; nhwc: x[N,H,W,C] w[K,R,S,C/g]",
              _CONV_PARAMS + (Param("layout", "nchw", "memory layout", ("nchw", "nhwc")), Param("dtype", F32)),
              _conv2d, lambda p, x, w: ref.conv2d(x, w, p["stride"], p["pad"], p["groups"], p["layout"])))


def _qconv2d(p):
    q = dict(p, layout="nhwc")
    x, w = _in("x", *_conv_input_shape(q), dtype=I8), _in("w", *_conv_weight_shape(q), dtype=I8)
    bias, mult = _in("bias", p["K"], dtype=dt.int32), _in("mult", p["K"], dtype=dt.int32)
    acc = x.conv2d(w, p["stride"], p["pad"], p["groups"], "nhwc")  # int32
    return requantize(acc, bias, mult, *qshifts(p)), [x, w, bias, mult]


def _round_shift(x: Tensor, s: int) -> Tensor:
    """Arithmetic shift right by ``s`` rounding half up: (x + 2^(s-1)) >> s."""
    return (x + (1 << (s - 1))) >> s


def requantize(acc: Tensor, bias: Tensor, mult: Tensor, pre: int, post: int) -> Tensor:
    """int32 -> int8 in integer fixed point, per channel (last axis): bias (int32), then
    a rounding shift by ``pre`` saturated to int16, a Q15 multiply by ``mult`` (int32
    holding 0..32767) rounded half up, a rounding shift by ``post`` saturated to int8.
    Overall about (acc + bias) * mult / 2^(pre + 15 + post). Exact in int32 (no step
    overflows while |acc + bias| < 2^31 - 2^(pre-1)); ``kernels.reference.requantize``
    is the same formula in numpy, and HVX computes it with its rounding/saturating
    shift-and-pack and fractional-multiply instructions."""
    y = _round_shift(acc + bias, pre).maximum(-32768).minimum(32767)
    z = (y * mult * 2 + (1 << 15)) >> 16
    return _round_shift(z, post).maximum(-128).minimum(127).cast(I8)


def qshifts(p) -> tuple[int, int]:
    """(pre, post) of a qconv2d: ``pre`` brings |acc + bias| (4 standard deviations of a
    uniform-int8 dot product plus the bias range) into int16, ``post`` makes the output's
    standard deviation about 40 for ``mult`` in [2^14, 2^15)."""
    std = 74.0 * 74.0 * math.sqrt((p["C"] // p["groups"]) * p["R"] * p["S"])
    pre = min(15, max(1, math.ceil(math.log2(4 * std + 20000)) - 15))
    post = min(7, max(1, round(math.log2(std / 40 * 0.75)) - pre))
    return pre, post


register(Kind("qconv2d", "int8 NHWC conv, int32 accumulate, per-channel bias + fixed-point multiplier requantize to int8",
              _CONV_PARAMS, _qconv2d,
              lambda p, x, w, bias, mult: ref.requantize(ref.conv2d(x, w, p["stride"], p["pad"], p["groups"], "nhwc"),
                                                         bias, mult, *qshifts(p)),
              ranges=lambda p: {"mult": (1 << 14, (1 << 15) - 1), "bias": (-20000, 20000)}))


# ---- reductions and normalisations ---------------------------------------------------------
def _rowsum(p):
    x = _in("x", p["M"], p["N"], dtype=p["dtype"])
    return x.sum(axis=1, acc_dtype=F32 if p["dtype"].is_float else dt.int32), [x]


register(Kind("rowsum", "y[M] = sum over N of x[M,N] (floats accumulate in float32)",
              (Param("M", 1024), Param("N", 1024), Param("dtype", F32)), _rowsum, lambda p, x: x.sum(axis=1)))


def _softmax(p):
    x = _in("x", p["M"], p["N"], dtype=p["dtype"])
    return x.softmax(-1), [x]


register(Kind("softmax", "row softmax of x[M,N] (one row kernel: max, sum of exp, normalize)",
              (Param("M", 1024), Param("N", 1024), Param("dtype", F32)), _softmax, lambda p, x: ref.softmax(x)))


def _layernorm(p):
    x = _in("x", p["M"], p["N"], dtype=p["dtype"])
    g, b = _in("gamma", p["N"], dtype=p["dtype"]), _in("beta", p["N"], dtype=p["dtype"])
    return x.layernorm(-1, p["eps"]) * g + b, [x, g, b]


register(Kind("layernorm", "row layernorm of x[M,N] with gamma, beta (one row kernel: mean, variance, normalize)",
              (Param("M", 1024), Param("N", 1024), Param("eps", 1e-5), Param("dtype", F32)),
              _layernorm, lambda p, x, g, b: ref.layernorm(x, g, b, p["eps"])))


def _rmsnorm(p):
    x, g = _in("x", p["M"], p["N"], dtype=p["dtype"]), _in("gamma", p["N"], dtype=p["dtype"])
    return x.rmsnorm(-1, p["eps"]) * g, [x, g]


register(Kind("rmsnorm", "row RMSnorm of x[M,N] with gamma (one row kernel: mean square, normalize)",
              (Param("M", 1), Param("N", 4096), Param("eps", 1e-6), Param("dtype", F16)),
              _rmsnorm, lambda p, x, g: ref.rmsnorm(x, g, p["eps"])))


# ---- elementwise and movement ----------------------------------------------------------------
def _embedding(p):
    ids = _in("ids", p["T"], dtype=dt.int32)
    table = _in("table", p["V"], p["D"], dtype=p["dtype"])
    return table.embedding(ids).dropout(p["p"], p["seed"]), [ids, table]


register(Kind("embedding", "out[T,D] = dropout(table[V,D][ids[T]]) with an index-hash keep-mask (one kernel: "
              "gather, mask and scale; no range, mask or one-hot buffer)",
              (Param("T", 8192, "tokens"), Param("V", 30522, "vocabulary"), Param("D", 1024), Param("p", 0.1),
               Param("seed", 0, "mask seed", minimum=0), Param("dtype", F32)),
              _embedding, lambda p, ids, table: ref.embedding_dropout(ids, table, p["p"], p["seed"]),
              ranges=lambda p: {"ids": (0, p["V"] - 1)}))



def _rotary(p):
    s, h, d = p["S"], p["H"], p["D"]
    if d % 2: raise ValueError(f"rotary: D={d} must be even")
    x = _in("x", s, h, d, dtype=p["dtype"])
    cos, sin = _in("cos", s, d // 2, dtype=p["dtype"]), _in("sin", s, d // 2, dtype=p["dtype"])
    c, sn = (t.reshape(s, 1, d // 2).expand(s, h, d // 2) for t in (cos, sin))
    x1, x2 = x.shrink((None, None, (0, d // 2))), x.shrink((None, None, (d // 2, d)))
    lo, hi = x1 * c - x2 * sn, x2 * c + x1 * sn
    return lo.pad(((0, 0), (0, 0), (0, d // 2))) + hi.pad(((0, 0), (0, 0), (d // 2, 0))), [x, cos, sin]


register(Kind("rotary", "rotate-half rotary embedding of x[S,H,D] with cos, sin [S,D/2]",
              (Param("S", 1, "tokens"), Param("H", 32, "heads"), Param("D", 128, "head dim"), Param("dtype", F16)),
              _rotary, lambda p, x, c, s: ref.rotary(x, c, s)))


def _fma(p):
    a, b, c = (_in(n, p["n"], dtype=p["dtype"]) for n in "abc")
    return a * b + c, [a, b, c]


register(Kind("fma", "out[n] = a*b + c", (Param("n", 1 << 20, "elements"), Param("dtype", F32)),
              _fma, lambda p, a, b, c: a * b + c))


def _transpose(p):
    x = _in("x", p["M"], p["N"], dtype=p["dtype"])
    return x.T, [x]


register(Kind("transpose", "out[N,M] = x[M,N]^T", (Param("M", 1024), Param("N", 1024), Param("dtype", F32)),
              _transpose, lambda p, x: np.ascontiguousarray(x.T)))
