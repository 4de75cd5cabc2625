"""numpy references of the library's workloads, written independently of the IR.

Every function takes values (float64 for floats, int64 for integers) and returns the
exact result: float64 accumulation, no rounding to the output dtype, integers exact.
"""
from __future__ import annotations

import numpy as np


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., M, K) @ (..., K, N); integer inputs give exact integer results."""
    return np.matmul(a, b)


def conv2d(x: np.ndarray, w: np.ndarray, stride: int = 1, pad: int = 0, groups: int = 1,
           layout: str = "nchw") -> np.ndarray:
    """nchw: x (N,C,H,W), w (K,C/g,R,S) -> (N,K,OH,OW); nhwc: x (N,H,W,C), w (K,R,S,C/g) -> (N,OH,OW,K)."""
    if layout == "nhwc":
        return conv2d(x.transpose(0, 3, 1, 2), w.transpose(0, 3, 1, 2), stride, pad, groups).transpose(0, 2, 3, 1)
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - r) // stride + 1, (wd + 2 * pad - s) // stride + 1
    kg = k // groups
    out = np.zeros((n, k, oh, ow), dtype=np.result_type(x, w))
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * kg:(g + 1) * kg]
        for i in range(r):
            for j in range(s):
                win = xs[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]  # (N, Cg, OH, OW)
                out[:, g * kg:(g + 1) * kg] += np.einsum("nchw,kc->nkhw", win, ws[:, :, i, j])
    return out


def dropout_keep(shape: tuple[int, ...], p: float, seed: int) -> np.ndarray:
    """The keep-mask of ``Tensor.dropout_mask``: a hash of each element's flat index (int32
    arithmetic wrapping mod 2^32), kept where its low 24 bits reach p * 2^24."""
    i = np.arange(int(np.prod(shape)), dtype=np.uint64)
    h = ((i * 0x5BD1E995) % (1 << 32)) ^ (seed & 0x7FFFFFFF)
    h &= 0x7FFFFFFF
    h = (((h ^ (h >> 15)) * 0x27D4EB2F) % (1 << 32)) & 0x7FFFFFFF
    h ^= h >> 13
    return ((h & 0xFFFFFF) >= int(round(p * (1 << 24)))).reshape(shape)


def embedding_dropout(ids: np.ndarray, table: np.ndarray, p: float, seed: int) -> np.ndarray:
    """Rows of ``table`` at ``ids`` (ids outside the table give zeros), dropout with ``dropout_keep``."""
    ok = (ids >= 0) & (ids < table.shape[0])
    rows = np.where(ok[..., None], table[np.clip(ids, 0, table.shape[0] - 1)], 0)
    return np.where(dropout_keep(rows.shape, p, seed), rows / (1.0 - p), 0.0)


def requantize(acc: np.ndarray, bias: np.ndarray, mult: np.ndarray, pre: int, post: int) -> np.ndarray:
    """int32 accumulator + per-channel bias, rounding shift right by ``pre`` saturated to
    int16, times the per-channel Q15 multiplier (rounded half up), rounding shift right by
    ``post`` saturated to int8. Channels are the last axis; shifts round half up."""
    y = np.clip((acc + bias + (1 << (pre - 1))) >> pre, -32768, 32767)
    z = (2 * y * mult + (1 << 15)) >> 16
    return np.clip((z + (1 << (post - 1))) >> post, -128, 127)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def rmsnorm(x: np.ndarray, gamma: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * gamma


def rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate-half rotary embedding. x (S, H, D); cos, sin (S, D/2)."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
