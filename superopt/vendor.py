"""Vendor baselines: the same workload run by a library users already have.

- ``numpy`` (CPU): the workload's own numpy reference function on float32 arrays (integer
  inputs as int64), i.e. np.matmul / einsum / reductions as numpy and its BLAS run them,
  Python call overhead included. Timed with ``time.perf_counter``: the median of repeated
  samples, each averaging enough calls to last ``min_s``.
- ``torch`` (CUDA): the PyTorch op(s) for the workload on device tensors, timed with CUDA
  events, the L2 cache flushed before every call, median of ``reps``.

Both time the whole workload (every step), which is what a user calls.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np

from superopt.kernels.registry import Workload, values


# ---- numpy ------------------------------------------------------------------------------
def numpy_time(w: Workload, runs: int = 15, min_s: float = 1e-3) -> float | None:
    """Median seconds of the workload's numpy reference on float32 (or int64) arrays;
    None when the reference cannot run on float32 inputs."""
    arrs = [values(a, b) for a, b in zip(w.random_inputs(), w.inputs)]
    arrs = [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrs]
    fn = lambda: w.spec.reference(w.args, *arrs)  # noqa: E731
    try:
        fn()
    except Exception:
        return None
    return _median_wall(fn, runs, min_s)


def _median_wall(fn: Callable[[], object], runs: int, min_s: float) -> float:
    t0 = time.perf_counter(); fn(); one = time.perf_counter() - t0  # noqa: E702
    reps = max(1, int(min_s / max(one, 1e-9)))
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(reps): fn()
        samples.append((time.perf_counter() - t0) / reps)
    return statistics.median(samples)


# ---- torch --------------------------------------------------------------------------------
def torch_fn(w: Workload, xs) -> Callable[[], object] | None:
    """A PyTorch callable computing workload ``w`` on device tensors ``xs`` (None: no torch op)."""
    import torch
    import torch.nn.functional as F
    p = w.args
    k = w.kind
    if k == "matmul": return lambda: xs[0] @ xs[1]
    if k == "bmm": return (lambda: xs[0] @ xs[1].transpose(-1, -2)) if p["b_layout"] == "nk" else (lambda: xs[0] @ xs[1])
    if k == "gemv": return lambda: xs[0] @ xs[1].T
    if k == "conv2d":
        if p["layout"] != "nchw": return None
        return lambda: F.conv2d(xs[0], xs[1], stride=p["stride"], padding=p["pad"], groups=p["groups"])
    if k == "rowsum": return lambda: xs[0].sum(dim=1, dtype=torch.float32)
    if k == "softmax": return lambda: torch.softmax(xs[0], dim=-1)
    if k == "layernorm": return lambda: F.layer_norm(xs[0], (p["N"],), xs[1], xs[2], p["eps"])
    if k == "rmsnorm": return lambda: F.rms_norm(xs[0], (p["N"],), xs[1], p["eps"])
    if k == "fma": return lambda: torch.addcmul(xs[2], xs[0], xs[1])
    if k == "embedding":  # torch draws its own dropout mask: the same work, another mask
        ids = xs[0].long()
        return lambda: F.dropout(F.embedding(ids, xs[1]), p["p"], training=True)
    if k == "rotary":
        h = p["D"] // 2
        x, c, s = xs[0], xs[1][:, None, :], xs[2][:, None, :]
        return lambda: torch.cat([x[..., :h] * c - x[..., h:] * s, x[..., h:] * c + x[..., :h] * s], dim=-1)
    return None


def torch_inputs(w: Workload, arrays):
    """Storage arrays -> CUDA tensors (bfloat16 storage is uint16 bits)."""
    import torch
    return [torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).cuda().view(torch.bfloat16)
            if b.dtype.name == "bfloat16" else torch.from_numpy(np.ascontiguousarray(a)).cuda()
            for a, b in zip(arrays, w.inputs)]


def time_torch(fn: Callable[[], object], reps: int, l2_bytes: int) -> list[float]:
    """CUDA-event seconds of ``reps`` calls, the L2 flushed before each (as our kernels
    are: ``SUPEROPT_L2_FLUSH=clean`` reads the flush buffer after writing it)."""
    import torch
    from superopt.backends.cuda.runtime import flush_mode
    clean = flush_mode() == "clean"
    flush = torch.empty(max(2 * l2_bytes, 8 << 20) // 4, dtype=torch.float32, device="cuda")
    for _ in range(3): fn()
    torch.cuda.synchronize()
    evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in evs:
        flush.fill_(1.0)
        if clean: flush.sum()
        a.record(); fn(); b.record()  # noqa: E702
    torch.cuda.synchronize()
    return [a.elapsed_time(b) / 1e3 for a, b in evs]


def torch_time(w: Workload, reps: int, l2_bytes: int) -> float | None:
    """Median seconds of the workload's torch op(s); None without a torch op for it."""
    fn = torch_fn(w, torch_inputs(w, w.random_inputs(seed=1)))
    return None if fn is None else statistics.median(time_torch(fn, reps, l2_bytes))


# ---- dispatch ------------------------------------------------------------------------------
VENDORS = {"numpy": "cpu", "torch": "cuda"}  # vendor -> the backend it is compared on


def available(name: str) -> str | None:
    """None when vendor ``name`` can run here, else why not."""
    if name == "numpy": return None
    if name == "torch":
        try:
            import torch
        except ImportError:
            return "torch is not installed"
        return None if torch.cuda.is_available() else "torch sees no CUDA device"
    return f"unknown vendor {name!r} (known: {', '.join(VENDORS)})"


def vendor_time(name: str, w: Workload, repeat: int, machine) -> float | None:
    """Median seconds of the whole workload under vendor ``name``."""
    if name == "numpy": return numpy_time(w, runs=repeat)
    if name == "torch": return torch_time(w, repeat, machine.l2_bytes)
    raise ValueError(f"unknown vendor {name!r}")


# ---- tinygrad ------------------------------------------------------------------------------
TINYGRAD_DEVICE = {"cpu": "CPU", "cuda": "CUDA"}


def tinygrad_program(w: Workload, xs):
    """The workload as tinygrad Tensor ops on inputs ``xs`` (None: no such op here)."""
    p, k = w.args, w.kind
    if k == "matmul": return xs[0] @ xs[1]
    if k == "bmm": return xs[0] @ xs[1].transpose(-1, -2) if p["b_layout"] == "nk" else xs[0] @ xs[1]
    if k == "gemv": return xs[0] @ xs[1].T
    if k == "conv2d":
        return xs[0].conv2d(xs[1], groups=p["groups"], stride=p["stride"], padding=p["pad"]) if p["layout"] == "nchw" else None
    if k == "rowsum": return xs[0].sum(axis=1)
    if k == "softmax": return xs[0].softmax(-1)
    if k == "layernorm": return xs[0].layernorm(-1, p["eps"]) * xs[1] + xs[2]
    if k == "rmsnorm": return xs[0] * (xs[0].square().mean(-1, keepdim=True) + p["eps"]).rsqrt() * xs[1]
    if k == "fma": return xs[0] * xs[1] + xs[2]
    if k == "embedding": return None  # tinygrad's dropout draws its own random buffer: not the same program
    if k == "rotary":
        h = p["D"] // 2
        x, c, s = xs[0], xs[1].unsqueeze(1), xs[2].unsqueeze(1)
        return (x[..., :h] * c - x[..., h:] * s).cat(x[..., h:] * c + x[..., :h] * s, dim=-1)
    return None


def tinygrad_run(w: Workload, backend: str, beam: int, repeat: int) -> dict | None:
    """tinygrad's own kernels for the workload (BEAM=``beam``; 0 = its hand rules):
    ``tuning_s`` = the first run (scheduling, search with its BEAM cache ignored,
    compiling), ``time_s`` = median over ``repeat`` runs of the sum of tinygrad's
    per-kernel times, ``verified`` = the output matches the workload's reference.
    None when the workload has no tinygrad equivalent here."""
    from tinygrad import Tensor
    from tinygrad.engine.realize import run_linear
    from tinygrad.helpers import Context, GlobalCounters
    if any(b.dtype.name == "bfloat16" for b in w.inputs): return None
    arrays = w.random_inputs(seed=3)
    xs = [Tensor(np.ascontiguousarray(a), device=TINYGRAD_DEVICE[backend]).realize() for a in arrays]
    out = tinygrad_program(w, xs)
    if out is None: return None
    linear, var_vals = out.linear_with_vars()
    t0 = time.perf_counter()
    with Context(BEAM=beam, IGNORE_BEAM_CACHE=1):
        run_linear(linear, var_vals, wait=True)
    tuning_s = time.perf_counter() - t0
    got = out.numpy()
    ok = w.matches(got.reshape(w.output.shape), w.reference(arrays))
    samples = []
    with Context(BEAM=beam):
        for _ in range(repeat):
            GlobalCounters.reset()
            run_linear(linear, var_vals, wait=True)
            samples.append(GlobalCounters.time_sum_s)
    return {"time_s": statistics.median(samples) if ok else None, "verified": ok, "tuning_s": tuning_s,
            "kernels": GlobalCounters.kernel_count, "reason": "" if ok else "output differs from the reference"}
