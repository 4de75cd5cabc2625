"""fp32 GEMM: the packed cpu_gemm family against numpy (OpenBLAS) in the same run.

For each size and thread count: the family's solver ranks its space under the cost model,
the best few candidates are measured on the cpu backend, the fastest measured one is
verified against numpy and timed against numpy interleaved (rounds alternate, medians).
numpy runs in a child process after ours (OpenBLAS threads spin after a call and would take
the cores from the backend's workers), single-thread with OPENBLAS_NUM_THREADS=1
(threadpoolctl is not installed); OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the
child's environment where the caller has them set.
Verification: against float64 numpy, max error relative to the largest output.

    python bench/cpu_gemm.py [--sizes 512,1000,1024,2048] [--rounds 7] [--top 4] [--out bench/results/cpu-gemm.json]
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
from superopt.ir.lower import lower
from superopt.search.families.cpu_gemm import FAMILY, caches
from superopt.search.machine import load

_NUMPY_CHILD = r"""
import sys, time, json, numpy as np
n, rounds = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
for _ in range(2): a @ b
iters = max(1, int(0.05 / max(1e-6, (lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()))))
out = []
for _ in range(rounds):
    t = time.perf_counter()
    for _ in range(iters): a @ b
    out.append((time.perf_counter() - t) / iters)
print(json.dumps(out))
"""

UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")   # a caller's presets would hold OpenBLAS to other kernels


def numpy_child(n: int, rounds: int, workers: int) -> list[float]:
    """Seconds per a @ b, ``rounds`` batches, in a fresh process (OpenBLAS default threads
    for all cores, OPENBLAS_NUM_THREADS=1 for one)."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}   # OpenBLAS's own defaults, never presets
    if workers == 1: env["OPENBLAS_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-c", _NUMPY_CHILD, str(n), str(rounds)], env=env, capture_output=True,
                       text=True, check=True)
    return json.loads(r.stdout)


def one(be: CPUBackend, machine, n: int, workers: int, rounds: int, top: int) -> dict:
    m = dataclasses.replace(machine, cores=workers, flops_fp32=machine.flops_fp32 * workers / machine.cores)
    k = (Tensor.empty(n, n, name="a") @ Tensor.empty(n, n, name="b")).schedule()[0].kernel
    t0 = time.perf_counter()
    solved = FAMILY.solve(k, m, timeout_s=10, top=top)
    cands = [c for c in solved.candidates if dict(c.schedule.params)["workers"] == workers]
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    ins, out = [a.reshape(-1), b.reshape(-1)], np.full(n * n, np.nan, np.float32)
    measured = []
    for c in cands:
        comp = be.compile(lower(k, c.schedule, m))
        if isinstance(comp, Failure): raise RuntimeError(f"{c.schedule}: {comp}")
        t = be.time(comp, ins, out, runs=3, min_s=0.05)
        measured.append((t.median_s, c, comp))
    tune_s = time.perf_counter() - t0
    best_s, best, comp = min(measured, key=lambda x: x[0])
    # numpy runs in a child process after ours: OpenBLAS threads spin after a call, and a
    # spinning thread in this process would take the cores the backend's workers need
    ours = [be.time(comp, ins, out, runs=1, min_s=0.05).median_s for _ in range(rounds)]
    theirs = numpy_child(n, rounds, workers)
    got = be.run(comp, ins, np.full(n * n, np.nan, np.float32)).reshape(n, n)
    want = a.astype(np.float64) @ b.astype(np.float64)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    if not err < 1e-5: raise RuntimeError(f"n={n}: wrong result (max rel err {err:.2e})")
    o, t = statistics.median(ours), statistics.median(theirs)
    return {"n": n, "workers": workers, "superopt_us": round(o * 1e6, 1), "numpy_us": round(t * 1e6, 1),
            "ratio_vs_numpy": round(t / o, 3), "gflops": round(2 * n ** 3 / o / 1e9, 1), "max_rel_err": err,
            "params": dict(best.schedule.params), "modeled_us": round(best.modeled_s * 1e6, 1),
            "model_rank_of_best": [c for _, c, _ in measured].index(best),
            "candidates_us": [round(s * 1e6, 1) for s, _, _ in measured], "solve_s": round(solved.solve_s, 3),
            "proved_optimal": solved.proved_optimal, "tune_s": round(tune_s, 2),
            "superopt_samples_us": [round(x * 1e6, 1) for x in ours], "numpy_samples_us": [round(x * 1e6, 1) for x in theirs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="512,1000,1024,2048")
    ap.add_argument("--threads", default="2,1", help="worker counts (the first: all cores)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--top", type=int, default=4)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    machine = load("cpu")
    be = CPUBackend(machine, timeout_s=120)
    rows = []
    try:
        for w in (int(x) for x in args.threads.split(",")):
            for n in (int(x) for x in args.sizes.split(",")):
                r = one(be, machine, n, min(w, machine.cores), args.rounds, args.top)
                print(f"{n:5d}^3 workers {r['workers']}: superopt {r['superopt_us']:9.1f} us  numpy {r['numpy_us']:9.1f} us  "
                      f"x{r['ratio_vs_numpy']:.2f}  ({r['gflops']} GFLOP/s, {r['params']}, tune {r['tune_s']} s)", flush=True)
                rows.append(r)
    finally:
        be.close()
    doc = {"command": "python bench/cpu_gemm.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "cpu": platform.processor() or platform.machine(), "cores": machine.cores, "simd_bytes": machine.simd_bytes,
           "caches": caches(), "numpy": np.__version__,
           "note": "numpy in a child process after ours (OpenBLAS defaults; single-thread: OPENBLAS_NUM_THREADS=1); medians of rounds of >= 50 ms",
           "results": rows}
    if args.out:
        with open(args.out, "w") as f: json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
