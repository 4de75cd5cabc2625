"""Honest outside baselines for one ``Kernel``: the time the library a user already has
takes for the same computation, so a tuning report can say plainly which side is faster.

- ``numpy`` (CPU): the kernel as numpy would compute it. Every input is a zero-copy strided
  view over the kernel's own layout (``as_strided``: a transposed operand or a convolution's
  window is just strides, no index arithmetic), a sum of a product is one batched ``np.matmul``
  (numpy's BLAS, as a user's ``a @ b``), other ops are numpy ufuncs;
  the result is written into an output array in the kernel's store layout. float32 and
  float64 compute in their own dtype; float16/bfloat16 compute in float32 (numpy has no
  half-precision BLAS; its float16 matmul is a plain loop, far slower than a user would
  accept); integers compute in int64 (numpy has no integer BLAS). ``blas()`` names the BLAS.
- ``torch`` (CUDA, where torch and a GPU are present): the same program with torch ops on
  device tensors in the kernel's dtype, timed with CUDA events, the L2 flushed before each
  call (``vendor.time_torch``).

A kernel that is not a strided contraction or elementwise/reduce program over strided views
(masked loads such as padded convolutions, gathers, index arithmetic in the body, row
kernels) gets ``Baseline(time_s=None, reason="no outside baseline for this kernel: ...")``.
This module works on a ``Kernel``; ``superopt.vendor`` times whole library workloads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from superopt.ir import dtype as dt
from superopt.ir.interpret import apply
from superopt.ir.kernel import Kernel
from superopt.ir.node import TRUE, Node, Ops, toposort

NO_BASELINE = "no outside baseline for this kernel"


@dataclass(frozen=True)
class Baseline:
    """``time_s`` of ``library`` for the kernel (None: ``reason`` says why); ``how`` says what ran."""
    library: str
    time_s: float | None
    how: str = ""
    reason: str | None = None


class Unsupported(ValueError):
    """The kernel has no outside-library equivalent here; the message says what is missing."""


# ---- the kernel as strided views ---------------------------------------------------------
def _eval_index(n: Node, point: dict[int, np.ndarray], memo: dict) -> np.ndarray:
    """An index expression's value at the given axis values (int64 arrays)."""
    if n in memo: return memo[n]
    if n.op is Ops.VAR: v = point[n.arg[0]]
    elif n.op is Ops.CONST: v = np.asarray(n.arg, dtype=np.int64 if not isinstance(n.arg, bool) else np.bool_)
    elif n.op in (Ops.LOAD, Ops.REDUCE): raise Unsupported(f"{NO_BASELINE}: an index reads data (a gather)")
    else: v = apply(n.op, n.dtype, [_eval_index(s, point, memo) for s in n.src], [s.dtype for s in n.src])
    memo[n] = v
    return v


def strides(index: Node, sizes: list[int]) -> tuple[int, list[int]]:
    """(offset, stride per axis) of an index expression that is affine in the axes, checked
    at the origin, every unit step, the far corner and random points; else Unsupported."""
    nd = len(sizes)
    at = lambda pt: int(_eval_index(index, {i: np.asarray(pt[i], np.int64) for i in range(nd)}, {}))  # noqa: E731
    base = at([0] * nd)
    st = [at([int(i == j) for j in range(nd)]) - base if sizes[i] > 1 else 0 for i in range(nd)]
    rng = np.random.default_rng(0)
    pts = [[s - 1 for s in sizes]] + [[int(rng.integers(s)) for s in sizes] for _ in range(8)]
    for pt in pts:
        if at(pt) != base + sum(a * b for a, b in zip(st, pt)):
            raise Unsupported(f"{NO_BASELINE}: an index is not affine in the axes (div/mod of a reshape)")
    return base, st


class _Lib:
    """The few array operations the program needs, for numpy (torch subclasses it)."""
    name = "numpy"

    def work_dtype(self, d: dt.DType):
        if d.is_float: return np.float64 if d is dt.float64 else np.float32
        return np.bool_ if d.kind == "b" else np.int64

    def view(self, flat, offset: int, shape: list[int], st: list[int]):
        item = flat.itemsize
        return np.lib.stride_tricks.as_strided(flat[offset:], shape=shape, strides=[s * item for s in st], writeable=False)

    def permute(self, x, order: list[int]): return x.transpose(order)
    def reduce(self, op: str, x, axes: tuple): return (np.sum if op == "sum" else np.max)(x, axis=axes, keepdims=True)
    def cast(self, x, d: dt.DType): return x.astype(self.work_dtype(d))
    def const(self, v, d: dt.DType): return np.asarray(v, dtype=self.work_dtype(d))
    def where(self, c, a, b): return np.where(c, a, b)
    def store(self, out, v): np.copyto(out, np.broadcast_to(v, out.shape), casting="unsafe")

    UNARY = {Ops.NEG: np.negative, Ops.EXP2: np.exp2, Ops.LOG2: np.log2, Ops.RECIP: np.reciprocal,
             Ops.SQRT: np.sqrt, Ops.SIN: np.sin}
    BINARY = {Ops.ADD: np.add, Ops.MUL: np.multiply, Ops.MAX: np.maximum, Ops.CMPLT: np.less,
              Ops.CMPEQ: np.equal, Ops.CMPNE: np.not_equal}


def program(k: Kernel, lib: _Lib, inputs: list) -> tuple[Callable[[], object], object]:
    """(a callable computing ``k`` with ``lib`` on flat ``inputs`` in work dtypes, the output
    array it writes, flat, in the kernel's storage layout). Unsupported when there is no such program."""
    if k.row_axes: raise Unsupported(f"{NO_BASELINE}: a row kernel (softmax/layernorm-like) has no one-call equivalent")
    sizes = [a.size for a in k.axes]
    nd, red = len(sizes), tuple(k.reduce_axes)
    views: dict[Node, object] = {}
    for ld in k.loads:
        if ld.src[1] is not TRUE: raise Unsupported(f"{NO_BASELINE}: masked loads (padding) are not a strided view")
        off, st = strides(ld.src[0], sizes)
        views[ld] = lib.view(inputs[ld.arg], off, [s if t else 1 for s, t in zip(sizes, st)], st)
    out_off, out_st = strides(k.store, sizes)
    out = lib.output(k.output) if hasattr(lib, "output") else np.zeros(k.output.size, lib.work_dtype(k.output.dtype))
    out_view = _writable(lib, out, out_off, k, out_st)
    _check_body(k.body, lib)
    body = _compile(k.body, lib, views, nd, red)

    def run():
        lib.store(out_view, body())
    return run, out


def _check_body(body: Node, lib: _Lib) -> None:
    """Every op of the body outside load indices (which the views' strides compute) has a library op."""
    seen, todo = set(), [body]
    while todo:
        n = todo.pop()
        if n in seen: continue
        seen.add(n)
        if n.op is Ops.LOAD: continue
        if n.op not in (Ops.CONST, Ops.REDUCE, Ops.CAST, Ops.WHERE) and n.op not in lib.UNARY and n.op not in lib.BINARY:
            what = "index arithmetic" if n.op is Ops.VAR else f"the op {n.op.name.lower()}"
            raise Unsupported(f"{NO_BASELINE}: its body uses {what}, which {lib.name} is not asked to run")
        todo.extend(n.src)


def _writable(lib: _Lib, out, off: int, k: Kernel, st: list[int]):
    shape = [1 if a.reduce else a.size for a in k.axes]
    if lib.name == "numpy":
        return np.lib.stride_tricks.as_strided(out[off:], shape=shape, strides=[s * out.itemsize for s in st])
    return lib.view(out, off, shape, st)


def _compile(n: Node, lib: _Lib, views: dict, nd: int, red: tuple) -> Callable[[], object]:
    """A closure computing node ``n`` (arrays over all axes, size 1 where it does not depend on one)."""
    if n.op is Ops.LOAD:
        v = views[n]
        return lambda: v
    if n.op is Ops.CONST:
        c = lib.const(n.arg, n.dtype)
        return lambda: c
    if n.op is Ops.REDUCE:
        x = n.src[0]
        if n.arg[0] == "sum" and x.op is Ops.MUL:
            a, b = _compile(x.src[0], lib, views, nd, red), _compile(x.src[1], lib, views, nd, red)
            return lambda: _contract(lib, a(), b(), red, nd)
        f = _compile(x, lib, views, nd, red)
        op = n.arg[0]
        return lambda: lib.reduce(op, f(), red)
    srcs = [_compile(s, lib, views, nd, red) for s in n.src]
    if n.op is Ops.CAST:
        (f,), d = srcs, n.dtype
        return lambda: lib.cast(f(), d)
    if n.op is Ops.WHERE:
        c, a, b = srcs
        return lambda: lib.where(c(), a(), b())
    if n.op in lib.UNARY:
        fn, (f,) = lib.UNARY[n.op], srcs
        return lambda: fn(f())
    fn, (f, g) = lib.BINARY[n.op], srcs
    return lambda: fn(f(), g())


def _contract(lib: _Lib, a, b, red: tuple, nd: int):
    """sum over ``red`` of a * b as one batched matmul (the BLAS call a user's ``a @ b`` makes),
    keepdims. Dims: batch (both operands, kept), M (a only), N (b only), K (both, reduced)."""
    da = {i for i in range(nd) if a.shape[i] != 1}
    db = {i for i in range(nd) if b.shape[i] != 1}
    only = lambda x, d: lib.reduce("sum", x, tuple(sorted(d))) if d else x  # noqa: E731 - reduced in one operand only
    a, b = only(a, (da - db) & set(red)), only(b, (db - da) & set(red))
    da, db = da - ((da - db) & set(red)), db - ((db - da) & set(red))
    batch, k_ = sorted((da & db) - set(red)), sorted(da & db & set(red))
    m_, n_ = sorted(da - db), sorted(db - da)
    size = lambda x, ds: math.prod(x.shape[i] for i in ds)  # noqa: E731
    rest = lambda ds: [i for i in range(nd) if i not in ds]  # noqa: E731 - the size-1 dims, moved last
    a2 = lib.permute(a, batch + m_ + k_ + rest(batch + m_ + k_)).reshape(size(a, batch), size(a, m_), size(a, k_))
    b2 = lib.permute(b, batch + k_ + n_ + rest(batch + k_ + n_)).reshape(size(b, batch), size(b, k_), size(b, n_))
    r = (a2 @ b2).reshape([a.shape[i] for i in batch] + [a.shape[i] for i in m_] + [b.shape[i] for i in n_])
    kept = batch + m_ + n_
    full = [1] * nd
    for i in kept: full[i] = max(a.shape[i], b.shape[i])
    return lib.permute(r, sorted(range(len(kept)), key=lambda j: kept[j])).reshape(full)


# ---- inputs --------------------------------------------------------------------------------
def inputs_for(k: Kernel, lib: _Lib, seed: int = 0) -> list[np.ndarray]:
    """Random flat numpy inputs in the library's work dtypes (small integers for int kernels)."""
    rng = np.random.default_rng(seed)
    out = []
    for b in k.inputs:
        w = lib.work_dtype(b.dtype)
        if b.dtype.is_float: a = rng.standard_normal(b.size).astype(w)
        elif b.dtype.kind == "b": a = rng.integers(0, 2, b.size).astype(np.bool_)
        else: a = rng.integers(-4 if b.dtype.name.startswith("int") else 0, 5, b.size).astype(w)
        out.append(a)
    return out


def numpy_program(k: Kernel, seed: int = 0) -> tuple[Callable[[], object], list[np.ndarray], np.ndarray]:
    """(run, flat inputs, flat output written by run) for numpy; Unsupported without one."""
    lib = _Lib()
    ins = inputs_for(k, lib, seed)
    run, out = program(k, lib, ins)
    return run, ins, out


def blas() -> str:
    """The BLAS numpy was built with, as numpy.show_config reports it."""
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # noqa: BLE001 - older numpy without mode="dicts"
        return "unknown BLAS"
    cfg = str(info.get("openblas configuration", "")).split()
    name = " ".join(cfg[:2]) if cfg[:1] == ["OpenBLAS"] else f"{info.get('name', '?')} {info.get('version', '')}".strip()
    return f"{name} ({info.get('name', '?')})" if cfg[:1] == ["OpenBLAS"] else name


def _dtypes_note(k: Kernel) -> str:
    names = sorted({b.dtype.name for b in k.inputs})
    work = sorted({np.dtype(_Lib().work_dtype(b.dtype)).name for b in k.inputs})
    return "/".join(names) + ("" if names == work else f" computed as {'/'.join(work)}")


def numpy_baseline(k: Kernel, runs: int = 15, min_s: float = 1e-3) -> Baseline:
    """Median seconds of numpy computing ``k`` (see the module doc for what runs)."""
    from superopt.vendor import _median_wall
    try:
        run, _, _ = numpy_program(k)
    except Unsupported as e:
        return Baseline("numpy", None, reason=str(e))
    uses = "numpy.matmul" if k.reduce is not None and k.reduce.src[0].op is Ops.MUL else "numpy ufuncs"
    how = f"{uses}, {_dtypes_note(k)}" + (f", {blas()}" if uses == "numpy.matmul" else "")
    with np.errstate(all="ignore"):
        return Baseline("numpy", _median_wall(run, runs, min_s), how=how)


# ---- torch ------------------------------------------------------------------------------------
class _Torch(_Lib):
    name = "torch"

    def __init__(self):
        import torch
        self.t = torch
        self.UNARY = {Ops.NEG: torch.neg, Ops.EXP2: torch.exp2, Ops.LOG2: torch.log2, Ops.RECIP: torch.reciprocal,
                      Ops.SQRT: torch.sqrt, Ops.SIN: torch.sin}
        self.BINARY = {Ops.ADD: torch.add, Ops.MUL: torch.mul, Ops.MAX: torch.maximum, Ops.CMPLT: torch.lt,
                       Ops.CMPEQ: torch.eq, Ops.CMPNE: torch.ne}

    def work_dtype(self, d: dt.DType):
        t = self.t
        return {"float32": t.float32, "float16": t.float16, "bfloat16": t.bfloat16, "float64": t.float64,
                "int8": t.int8, "uint8": t.uint8, "int32": t.int32, "bool": t.bool}.get(d.name, t.float32)

    def view(self, flat, offset: int, shape: list[int], st: list[int]): return self.t.as_strided(flat, shape, st, offset)
    def permute(self, x, order: list[int]): return x.permute(order)

    def reduce(self, op: str, x, axes: tuple):
        return x.sum(dim=axes, keepdim=True) if op == "sum" else x.amax(dim=axes, keepdim=True)

    def cast(self, x, d: dt.DType): return x.to(self.work_dtype(d))
    def const(self, v, d: dt.DType): return self.t.tensor(v, dtype=self.work_dtype(d), device="cuda")
    def where(self, c, a, b): return self.t.where(c, a, b)
    def store(self, out, v): out.copy_(v.expand(out.shape) if v.shape != out.shape else v)
    def output(self, b): return self.t.zeros(b.size, dtype=self.work_dtype(b.dtype), device="cuda")


def torch_available() -> str | None:
    """None when the torch baseline can run here, else why not."""
    from superopt.vendor import available
    return available("torch")


def torch_baseline(k: Kernel, reps: int = 30, l2_bytes: int = 50 << 20) -> Baseline:
    """Median CUDA-event seconds of torch computing ``k`` on the GPU in the kernel's dtypes."""
    why = torch_available()
    if why: return Baseline("torch", None, reason=f"{NO_BASELINE} from torch: {why}")
    from superopt.vendor import time_torch
    import statistics
    lib = _Torch()
    flat = [lib.t.from_numpy(a).to(device="cuda", dtype=lib.work_dtype(b.dtype))
            for a, b in zip(inputs_for(k, _Lib()), k.inputs)]
    try:
        run, _ = program(k, lib, flat)
    except Unsupported as e:
        return Baseline("torch", None, reason=str(e))
    import torch
    how = f"torch {torch.__version__} on {torch.cuda.get_device_name()}, {'/'.join(sorted({b.dtype.name for b in k.inputs}))}"
    return Baseline("torch", statistics.median(time_torch(run, reps, l2_bytes)), how=how)


# ---- dispatch and wording ---------------------------------------------------------------------
def outside_baseline(k: Kernel, backend: str, runs: int = 15, l2_bytes: int = 50 << 20) -> Baseline:
    """The library a user of ``backend`` would compare with: numpy on cpu, torch on cuda."""
    if backend == "cpu": return numpy_baseline(k, runs)
    if backend == "cuda": return torch_baseline(k, runs, l2_bytes)
    return Baseline("-", None, reason=f"{NO_BASELINE}: no outside library is timed on the {backend} backend")


def ratio_phrase(ours_s: float, theirs_s: float, library: str) -> str:
    """Which side is faster, said plainly: "1.8x slower than numpy", "1.23x faster than torch"."""
    if not (ours_s > 0 and theirs_s > 0 and math.isfinite(ours_s) and math.isfinite(theirs_s)):
        raise ValueError(f"times must be positive and finite (got {ours_s!r}, {theirs_s!r})")
    faster = ours_s <= theirs_s
    r = theirs_s / ours_s if faster else ours_s / theirs_s
    digits = 1 if r >= 10 else 2 if r >= 1.1 or round(r, 2) > 1 else 3
    return f"{r:.{digits}f}x {'faster' if faster else 'slower'} than {library}"
