"""fp32 convolutions: the implicit-GEMM cpu_conv family against im2col + numpy (OpenBLAS).

For each ResNet shape and thread count: the family's solver ranks its space under the cost
model, the best few candidates are measured on the cpu backend, the fastest measured one is
verified against a float64 numpy convolution and timed in rounds (medians), alternating with
the numpy route's rounds. That runs in a child process per round (OpenBLAS threads spin
after a call and would take the cores from the backend's workers): im2col as the Caffe route does it (pad, a strided window
view copied to a (C*R*S, OH*OW) matrix, so W @ col gives NCHW directly), then np.matmul;
reported with the im2col copy and without it (the GEMM alone). The int8 row (int8 input and
filter, int32 out: the VNNI variant) has numpy's int32 matmul of the same values beside it
(numpy has no int8 GEMM; that one is not BLAS). Single-thread numpy:
OPENBLAS_NUM_THREADS=1 (threadpoolctl is not installed); OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are removed from the child's environment where the caller has them set. torch's CPU conv where ``import torch`` works.

    python bench/cpu_conv.py [--shapes 3x3,stem,1x1] [--threads 2,1] [--rounds 9] [--top 4] [--out bench/results/cpu-conv.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from superopt import Tensor
from superopt.backends.base import Failure
from superopt.backends.cpu import CPUBackend
from superopt.ir import dtypes as dt
from superopt.ir.lower import lower
from superopt.kernels import reference as ref
from superopt.kernels.registry import Workload
from superopt.search.families.cpu_conv import FAMILY
from superopt.search.families.cpu_gemm import caches
from superopt.search.machine import load

# name -> conv2d parameters (NCHW, batch 1)
SHAPES = {
    "3x3": dict(N=1, C=64, H=56, W=56, K=64, R=3, S=3, stride=1, pad=1),
    "stem": dict(N=1, C=3, H=224, W=224, K=64, R=7, S=7, stride=2, pad=3),
    "1x1": dict(N=1, C=256, H=56, W=56, K=64, R=1, S=1, stride=1, pad=0),
    "3x3-int8": dict(N=1, C=64, H=56, W=56, K=64, R=3, S=3, stride=1, pad=1, int8=1),
}

# the rule: numpy is timed with OpenBLAS's own core detection and cache sizes (this
# environment presets both for other uses; a preset Haswell core type means AVX2 kernels)
UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

_NUMPY_CHILD = r"""
import sys, time, json, numpy as np
from numpy.lib.stride_tricks import sliding_window_view
p, rounds = json.loads(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
if p.get("int8"):  # numpy has no int8 GEMM: int32 matmul of the int8 values (no BLAS)
    x = rng.integers(-128, 128, (p["N"], p["C"], p["H"], p["W"])).astype(np.int8)
    w = rng.integers(-128, 128, (p["K"], p["C"], p["R"], p["S"])).astype(np.int8)
else:
    x = rng.standard_normal((p["N"], p["C"], p["H"], p["W"]), dtype=np.float32)
    w = rng.standard_normal((p["K"], p["C"], p["R"], p["S"]), dtype=np.float32)
st, pd = p["stride"], p["pad"]
w2 = w.reshape(p["K"], -1).astype(np.int32 if p.get("int8") else np.float32)
def im2col():
    xp = np.pad(x[0], ((0, 0), (pd, pd), (pd, pd))) if pd else x[0]
    v = sliding_window_view(xp, (p["R"], p["S"]), axis=(1, 2))[:, ::st, ::st]   # C, OH, OW, R, S
    return np.ascontiguousarray(v.transpose(0, 3, 4, 1, 2), dtype=w2.dtype).reshape(w2.shape[1], -1)
def whole(): return w2 @ im2col()
col = im2col()
def gemm(): return w2 @ col
def timed(f):
    for _ in range(2): f()
    t = time.perf_counter(); f(); one = time.perf_counter() - t
    iters = max(1, int(0.05 / max(one, 1e-6)))
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(iters): f()
        out.append((time.perf_counter() - t) / iters)
    return out
res = {"im2col_matmul": timed(whole), "matmul_only": timed(gemm)}
y = whole().reshape(p["K"], -1).astype(np.float64)
from superopt.kernels import reference as ref
want = ref.conv2d(x.astype(np.float64), w.astype(np.float64), st, pd, 1, "nchw").reshape(p["K"], -1)
res["max_rel_err"] = float(np.abs(y - want).max() / np.abs(want).max())
try:
    if p.get("int8"): raise ImportError("no torch row for int8")
    import torch
    torch.set_num_threads(int(sys.argv[3]))
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    with torch.no_grad():
        res["torch"] = timed(lambda: torch.nn.functional.conv2d(tx, tw, stride=st, padding=pd))
    res["torch_version"] = torch.__version__
except ImportError:
    res["torch"] = None
print(json.dumps(res))
"""


def numpy_child(p: dict, rounds: int, workers: int, inherit: bool = False) -> dict:
    """Seconds per call of im2col + matmul and of the matmul alone (and torch's conv where
    installed), ``rounds`` batches each, in a fresh process (``inherit``: with this
    environment's OpenBLAS presets left in, to show what they cost)."""
    env = {k: v for k, v in os.environ.items() if inherit or k not in UNSET}
    if workers == 1: env["OPENBLAS_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-c", _NUMPY_CHILD, json.dumps(p), str(rounds), str(workers)], env=env,
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def kernel(p: dict):
    """The conv2d kernel of ``p`` (int8: int8 input and filter, int32 accumulate)."""
    if not p.get("int8"): return Workload.make("conv2d", **{k: v for k, v in p.items() if k != "int8"}).kernels[0]
    x = Tensor.empty(p["N"], p["C"], p["H"], p["W"], name="x", dtype=dt.int8)
    w = Tensor.empty(p["K"], p["C"], p["R"], p["S"], name="w", dtype=dt.int8)
    return x.conv2d(w, p["stride"], p["pad"]).schedule()[-1].kernel


def inputs(k, p: dict) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if p.get("int8"): return tuple(rng.integers(-128, 128, b.shape).astype(np.int8) for b in k.inputs)
    return tuple(rng.standard_normal(b.shape, dtype=np.float32) for b in k.inputs)


def one(be: CPUBackend, machine, name: str, workers: int, rounds: int, top: int) -> dict:
    p = dict(SHAPES[name], layout="nchw")
    m = dataclasses.replace(machine, cores=workers, flops_fp32=machine.flops_fp32 * workers / machine.cores)
    k = kernel(p)
    t0 = time.perf_counter()
    solved = FAMILY.solve(k, m, timeout_s=10, top=top)
    cands = [c for c in solved.candidates if dict(c.schedule.params)["workers"] == workers]
    x, w = inputs(k, p)
    ins, out = [x.reshape(-1), w.reshape(-1)], np.full(k.output.size, -7, k.output.dtype.np)
    measured = []
    for c in cands:
        comp = be.compile(lower(k, c.schedule, m))
        if isinstance(comp, Failure): raise RuntimeError(f"{c.schedule}: {comp}")
        t = be.time(comp, ins, out, runs=5, min_s=0.02)
        measured.append((min(t.samples), c, comp))  # the fastest sample: other jobs only ever add time
    tune_s = time.perf_counter() - t0
    best_s, best, comp = min(measured, key=lambda x: x[0])
    # rounds alternate between ours and the numpy child (one batch each), so a change in
    # the shared machine's load hits both sides alike
    ours, theirs = [], {"im2col_matmul": [], "matmul_only": [], "torch": []}
    for _ in range(rounds):
        ours.append(be.time(comp, ins, out, runs=1, min_s=0.05).median_s)
        r = numpy_child(p, 1, workers)
        for key in ("im2col_matmul", "matmul_only", "torch"): theirs[key] += r.get(key) or []
        theirs["max_rel_err"] = r["max_rel_err"]
    got = be.run(comp, ins, np.full(k.output.size, -7 if p.get("int8") else np.nan, k.output.dtype.np)).reshape(k.output.shape)
    want = ref.conv2d(x.astype(np.float64), w.astype(np.float64), p["stride"], p["pad"], 1, "nchw")
    err = float(np.abs(got - want).max() / np.abs(want).max())
    if not err < (1e-12 if p.get("int8") else 1e-5): raise RuntimeError(f"{name}: wrong result (max rel err {err:.2e})")
    o = statistics.median(ours)
    i2c, mm = statistics.median(theirs["im2col_matmul"]), statistics.median(theirs["matmul_only"])
    flops = 2 * k.output.size * p["C"] * p["R"] * p["S"]
    row = {"shape": name, "conv": p, "workers": workers, "superopt_us": round(o * 1e6, 1),
           "im2col_matmul_us": round(i2c * 1e6, 1), "matmul_only_us": round(mm * 1e6, 1),
           "ratio_vs_im2col_matmul": round(i2c / o, 3), "ratio_vs_matmul_only": round(mm / o, 3),
           "min_us": {"superopt": round(min(ours) * 1e6, 1), "im2col_matmul": round(min(theirs["im2col_matmul"]) * 1e6, 1),
                      "matmul_only": round(min(theirs["matmul_only"]) * 1e6, 1)},
           "gops": round(flops / o / 1e9, 1), "max_rel_err": err, "numpy_route_max_rel_err": theirs["max_rel_err"],
           "params": dict(best.schedule.params), "modeled_us": round(best.modeled_s * 1e6, 1),
           "model_rank_of_best": [c for _, c, _ in measured].index(best),
           "candidates_us": [round(s * 1e6, 1) for s, _, _ in measured], "solve_s": round(solved.solve_s, 3),
           "solve_points": solved.detail.get("points"), "proved_optimal": solved.proved_optimal, "tune_s": round(tune_s, 2),
           "superopt_samples_us": [round(x * 1e6, 1) for x in ours],
           "im2col_matmul_samples_us": [round(x * 1e6, 1) for x in theirs["im2col_matmul"]],
           "matmul_only_samples_us": [round(x * 1e6, 1) for x in theirs["matmul_only"]]}
    if theirs["torch"]:
        row["torch_us"] = round(statistics.median(theirs["torch"]) * 1e6, 1)
        row["ratio_vs_torch"] = round(statistics.median(theirs["torch"]) / o, 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"of {', '.join(SHAPES)}")
    ap.add_argument("--threads", default="2,1", help="worker counts (the first: all cores)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--top", type=int, default=4)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    machine = load("cpu")
    be = CPUBackend(machine, timeout_s=120)
    rows, load_before = [], os.getloadavg()[0]
    try:
        for w in (int(x) for x in args.threads.split(",")):
            for name in args.shapes.split(","):
                r = one(be, machine, name, min(w, machine.cores), args.rounds, args.top)
                print(f"{name:5s} workers {r['workers']}: superopt {r['superopt_us']:8.1f} us  im2col+matmul {r['im2col_matmul_us']:8.1f} us "
                      f"(x{r['ratio_vs_im2col_matmul']:.2f})  matmul alone {r['matmul_only_us']:8.1f} us (x{r['ratio_vs_matmul_only']:.2f})  "
                      f"{r['gops']} GOP/s, {r['params']}, solve {r['solve_s']} s, tune {r['tune_s']} s", flush=True)
                rows.append(r)
    finally:
        be.close()
    presets = {k: os.environ[k] for k in UNSET if k in os.environ}
    env_effect = None
    if presets:  # what the presets would have cost numpy: the 3x3 GEMM alone, single-thread, both ways
        p3 = dict(SHAPES["3x3"], layout="nchw")
        env_effect = {"presets": presets, "rounds": 5,
                      "matmul_only_us_with_presets": round(statistics.median(numpy_child(p3, 5, 1, inherit=True)["matmul_only"]) * 1e6, 1),
                      "matmul_only_us_without": round(statistics.median(numpy_child(p3, 5, 1)["matmul_only"]) * 1e6, 1)}
    try:
        import torch  # noqa: F401
        torch_note = "torch's CPU conv2d in the same child process"
    except ImportError:
        torch_note = "torch is not installed: no torch column"
    doc = {"command": "python bench/cpu_conv.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "cpu": platform.processor() or platform.machine(), "cores": machine.cores, "simd_bytes": machine.simd_bytes,
           "caches": caches(), "numpy": np.__version__, "calibrated": machine.calibrated,
           "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
           "note": "the machine was shared with other jobs while timing (load average above; medians of rounds of >= 50 ms, "
                   "ours and numpy's alternating); numpy in a child process (OpenBLAS defaults: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE "
                   "removed from its environment; single-thread: OPENBLAS_NUM_THREADS=1, threadpoolctl not installed); "
                   "im2col + matmul: Caffe-style (C*R*S, OH*OW) matrix, W @ col; " + torch_note,
           "openblas_presets_effect": env_effect, "results": rows}
    if args.out:
        with open(args.out, "w") as f: json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
