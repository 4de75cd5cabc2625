"""Split fp32: an fp32 GEMM computed as one bf16 tensor-core GEMM over split operands.

Every fp32 value is three bf16 pieces, each the rounding of what the earlier ones leave:
``hi = bf16(x)``, ``mid = bf16(x - hi)``, ``lo = bf16(x - hi - mid)`` (the differences are
exact in fp32; bf16 keeps fp32's exponent range, so nothing overflows), and
``x - hi - mid - lo`` is below 2^-24 of ``|x|``. ``A B`` is the sum of the nine piece
products; the six with piece ranks summing to at most 2 (hi.hi, hi.mid, mid.hi, hi.lo,
lo.hi, mid.mid) leave out terms below 2^-25 of ``|A| |B|``, under fp32's own rounding.
Concatenated along K (``K' = 6K``; A' = [hi, hi, mid, hi, lo, mid], B' = [hi, mid, hi, lo,
hi, mid]) those six products are one GEMM accumulating in fp32, on bf16 tensor cores: on
the H100 about 700 TF/s against 65 TF/s of fp32 FMAs, so 6x the flops still run several
times faster (NVIDIA's libraries call the nine-product form BF16x9 fp32 emulation). The
emulator's exact fp32 sums give 1e-7 relative error; the H100's tensor cores truncate
their fp32 sums, and the plan measured 1.1e-5 to 4.3e-5 there (K 1024 to 4096; fp32 FMA
kernels 6e-7 to 8e-7), so search/plan.py splits only up to ``SPLIT_FP32_MAX_K``.

- ``split``: per operand, an elementwise kernel writing its six pieces, the piece index
  outside the K dimension (a row-major A [M, K] becomes [M, 6K], a row-major B [K, N]
  becomes [6K, N]);
- ``gemm``: the product of the two split buffers read as fp32, accumulated in fp32 into
  the planned kernel's own output (a bf16 GEMM to the tensor-core match: its loads are
  bf16 under casts).

Like split-K and relayout (ir/splitk.py, ir/relayout.py) a plan of ordinary kernels, each
scheduled, verified and timed by the existing paths; search/plan.split_fp32 weighs it.
"""
from __future__ import annotations

from dataclasses import replace

from . import dtype as dt
from .kernel import Buffer, Kernel
from .node import axis_stride

A_PIECES = (0, 0, 1, 0, 2, 1)   # per K block of A': its piece (0 hi, 1 mid, 2 lo)
B_PIECES = (0, 1, 0, 2, 0, 1)   # ... of B': A'[i] B'[i] runs over the six products


def _k_dim(kernel: Kernel, op, k_axis: int) -> int | str:
    """The dimension of operand ``op``'s 2-D buffer that axis ``k_axis`` runs along (the
    other is its M or N axis), or why the buffer is not read so plainly."""
    from .relayout import coordinates
    shape = kernel.inputs[op.input].shape
    if len(shape) != 2: return f"input {op.input} is not a matrix"
    try:
        coords = coordinates(op.load, kernel, shape)
    except ValueError as e:
        return f"input {op.input}: {e}"
    dims = {}
    for d, (axes, c0) in enumerate(coords):
        if c0 or len(axes) != 1 or next(iter(axes.values())) != 1: return f"input {op.input} is not read plainly"
        dims[next(iter(axes))] = d
    if set(dims) != {op.outer, k_axis}: return f"input {op.input} is not read plainly"
    return dims[k_axis]


def split_kernel(buf: Buffer, k_dim: int, pieces: tuple[int, ...], name: str) -> Kernel:
    """``name``: ``buf`` (fp32, 2-D) as bf16 pieces ``pieces`` concatenated along dimension
    ``k_dim`` (piece block outside it)."""
    from .tensor import Tensor
    R, C = buf.shape
    n = len(pieces)
    x = Tensor.empty(R, C, dtype=buf.dtype, name=buf.name)
    hi = x.cast(dt.bfloat16)
    rest = x - hi.cast(dt.float32)
    mid = rest.cast(dt.bfloat16)
    lo = (rest - mid.cast(dt.float32)).cast(dt.bfloat16)
    at, full = ((R, 1, C), (R, n, C)) if k_dim == 1 else ((1, R, C), (n, R, C))
    spread = lambda t: t.reshape(at).expand(full)  # noqa: E731
    j = Tensor.arange(n).reshape((1, n, 1) if k_dim == 1 else (n, 1, 1)).expand(full)
    val = spread(hi)
    for rank, piece in ((1, mid), (2, lo)):
        sel = None
        for i in (i for i, p in enumerate(pieces) if p == rank):
            sel = j.eq(i) if sel is None else sel | j.eq(i)
        if sel is not None: val = sel.where(spread(piece), val)
    shape = (R, n * C) if k_dim == 1 else (n * R, C)
    (item,) = val.reshape(shape).schedule()
    k = item.kernel
    return replace(k, name=f"{name}_split", output=Buffer(name, dt.bfloat16, shape))


def gemm_kernel(a: Buffer, a_k: int, b: Buffer, b_k: int, out: Buffer, name: str) -> Kernel:
    """``out`` (fp32, [M, N] row-major) = ``a`` @ ``b`` over K' read as fp32: ``a`` stored
    [M, K'] (``a_k`` 1) or [K', M], ``b`` [K', N] (``b_k`` 0) or [N, K']."""
    from .tensor import Tensor
    ta = Tensor.empty(*a.shape, dtype=a.dtype, name=a.name)
    tb = Tensor.empty(*b.shape, dtype=b.dtype, name=b.name)
    ta, tb = (ta if a_k == 1 else ta.T), (tb if b_k == 0 else tb.T)
    (item,) = (ta.cast(dt.float32) @ tb.cast(dt.float32)).schedule()
    k = item.kernel
    if k.output.shape != out.shape: raise ValueError(f"the GEMM writes {k.output.shape}, not {out.shape}")
    return replace(k, name=name, output=out)


def split_fp32(kernel: Kernel) -> tuple[Kernel, Kernel, Kernel, int, int] | str:
    """(split of A, split of B, the GEMM over them, A's input slot, B's input slot) computing
    ``kernel``, or why not: an fp32 GEMM ``out[m, n] = sum_k a * b`` over two plainly read
    matrices, its output [M, N] row-major with nothing after the sum."""
    from . import tensorcore as tcm
    m = tcm.match(kernel, simt=True)
    if isinstance(m, str): return m
    if m.batch or m.window or m.m_outer: return "a batched GEMM or a convolution"
    if kernel.body is not kernel.reduce or kernel.output.dtype is not dt.float32:
        return "the output is not the plain fp32 sum"
    M, N = kernel.axes[m.m].size, kernel.axes[m.n].size
    if kernel.output.shape != (M, N) or axis_stride(kernel.store, m.n, N) != 1 or axis_stride(kernel.store, m.m, M) != N:
        return "the output is not [M, N] row-major"
    dims = [_k_dim(kernel, op, m.k) for op in (m.a, m.b)]
    for d in dims:
        if isinstance(d, str): return d
    a_k, b_k = dims
    sa = split_kernel(kernel.inputs[m.a.input], a_k, A_PIECES, f"{kernel.name}_a6")
    sb = split_kernel(kernel.inputs[m.b.input], b_k, B_PIECES, f"{kernel.name}_b6")
    g = gemm_kernel(sa.output, a_k, sb.output, b_k, kernel.output, f"{kernel.name}_bf16x6")
    return sa, sb, g, m.a.input, m.b.input
