"""fp32 GEMM: what `superopt tune` picks on the cpu backend against numpy (OpenBLAS) in the same run.

For each size and worker count the engine tunes the kernel as `superopt tune` does (every
family that applies, the solvers' picks and the hand rules measured and verified, the
fastest kept; ``--budget`` seconds, 10 by default); the single-worker rows tune for a
machine of one core. The kept schedule is then verified against float64 numpy (max error
relative to the largest output) and timed against numpy round by round (ours, then numpy,
``--rounds`` times; medians). numpy runs in a child process that stays up for the whole run
(OpenBLAS threads spin after a call and would take the cores from the backend's workers: a
pause follows each of its rounds), single-thread with OPENBLAS_NUM_THREADS=1 (threadpoolctl
is not installed); OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the child's
environment where the caller has them set. Each row records the 1-minute load average
before and after it: the host is shared.

    python bench/cpu_gemm.py [--sizes 512,1000,1024,2048] [--threads 2,1] [--rounds 15] [--budget 10] [--out bench/results/cpu-gemm.json]
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
from superopt.engine.tuner import tune
from superopt.ir.lower import lower
from superopt.search.families.cpu_gemm import caches
from superopt.search.machine import load

_NUMPY_SERVER = r"""
import sys, time, json, numpy as np
rng, ops = np.random.default_rng(0), {}
for line in sys.stdin:
    n = int(line)
    if n not in ops:
        a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
        for _ in range(2): a @ b
        t = time.perf_counter(); a @ b
        ops[n] = (a, b, max(1, int(0.05 / max(1e-6, time.perf_counter() - t))))
    a, b, iters = ops[n]
    t = time.perf_counter()
    for _ in range(iters): a @ b
    print(json.dumps((time.perf_counter() - t) / iters), flush=True)
"""

UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")   # a caller's presets would hold OpenBLAS to other kernels
SPIN_S = 0.2   # OpenBLAS's idle threads spin about 2^28 cycles after a call before they sleep


class Numpy:
    """numpy's a @ b timed in a child process on request: one round of >= 50 ms a call
    (OpenBLAS default threads for all cores, OPENBLAS_NUM_THREADS=1 for one)."""

    def __init__(self, workers: int):
        env = {k: v for k, v in os.environ.items() if k not in UNSET}   # OpenBLAS's own defaults, never presets
        if workers == 1: env["OPENBLAS_NUM_THREADS"] = "1"
        self.proc = subprocess.Popen([sys.executable, "-c", _NUMPY_SERVER], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def round(self, n: int) -> float:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line: raise RuntimeError(f"the numpy child exited ({self.proc.wait()})")
        time.sleep(SPIN_S)   # its threads idle before ours run
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def one(machine, n: int, workers: int, rounds: int, budget_s: float, numpy_: Numpy) -> dict:
    m = dataclasses.replace(machine, cores=workers, flops_fp32=machine.flops_fp32 * workers / machine.cores)
    load0 = os.getloadavg()[0]
    k = (Tensor.empty(n, n, name="a") @ Tensor.empty(n, n, name="b")).schedule()[0].kernel
    be = CPUBackend(m, timeout_s=120)
    try:
        r = tune(k, backend=be, budget_s=budget_s)
        if not r.verified: raise RuntimeError(f"n={n}: tune kept an unverified schedule ({r.reason})")
        comp = be.compile(lower(k, r.schedule, m))
        if isinstance(comp, Failure): raise RuntimeError(f"{r.schedule}: {comp}")
        rng = np.random.default_rng(0)
        a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
        ins, out = [a.reshape(-1), b.reshape(-1)], np.full(n * n, np.nan, np.float32)
        got = be.run(comp, ins, out).reshape(n, n)
        want = a.astype(np.float64) @ b.astype(np.float64)
        err = float(np.abs(got - want).max() / np.abs(want).max())
        if not err < 1e-5: raise RuntimeError(f"n={n}: wrong result (max rel err {err:.2e})")
        ours, theirs = [], []
        for _ in range(rounds):   # interleaved: a burst of load lands on both
            t = be.time(comp, ins, out, runs=1, min_s=0.05)
            if isinstance(t, Failure): raise RuntimeError(f"n={n}: {t}")
            ours.append(t.median_s)
            theirs.append(numpy_.round(n))
    finally:
        be.close()
    o, t = statistics.median(ours), statistics.median(theirs)
    fam = next((f for f in r.families if f.get("family") == r.family), {})
    return {"n": n, "workers": workers, "superopt_us": round(o * 1e6, 1), "numpy_us": round(t * 1e6, 1),
            "ratio_vs_numpy": round(t / o, 3), "gflops": round(2 * n ** 3 / o / 1e9, 1), "max_rel_err": err,
            "family": r.family, "method": r.method, "params": dict(r.schedule.params),
            "modeled_us": round(r.modeled_s * 1e6, 1) if r.modeled_s else None,
            "proved_optimal": fam.get("proved_optimal"), "tune_s": round(r.tuning_s, 2),
            "tried": [{"family": x.family, "method": x.method, "us": round(x.time_s * 1e6, 1) if x.time_s else None,
                       "params": dict(x.schedule.params) if x.schedule.params else None} for x in r.tried],
            "load_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "superopt_samples_us": [round(x * 1e6, 1) for x in ours], "numpy_samples_us": [round(x * 1e6, 1) for x in theirs]}


def markdown(doc: dict) -> str:
    """The results as a table (what bench/README.md quotes)."""
    rows = ["| fp32 GEMM | workers | superopt µs | numpy µs | × numpy | GFLOP/s | pick (MR×NR, blocks) | tune s | load |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        p = r["params"]
        pick = f"{p['MR']}×{p['NR']} MC{p['MC']} KC{p['KC']} NC{p['NC']}" if r["family"] == "cpu_gemm" else r["family"]
        rows.append(f"| {r['n']}³ | {r['workers']} | {r['superopt_us']:.0f} | {r['numpy_us']:.0f} | {r['ratio_vs_numpy']:.2f}× | "
                    f"{r['gflops']:.0f} | {pick} | {r['tune_s']:.1f} | {r['load_1min'][0]:.1f}–{r['load_1min'][1]:.1f} |")
    return (f"`{doc['command']}` ({doc['date']}, {doc['cores']} cores; {doc['note']}). × numpy = numpy's time / ours.\n\n"
            + "\n".join(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="512,1000,1024,2048")
    ap.add_argument("--threads", default="2,1", help="worker counts (the first: all cores)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--budget", type=float, default=10.0, help="superopt tune's budget a kernel, seconds")
    ap.add_argument("--out", default="", help="JSON file (a .md beside it gets the table)")
    args = ap.parse_args()
    machine = load("cpu")
    rows = []
    for w in (min(int(x), machine.cores) for x in args.threads.split(",")):
        numpy_ = Numpy(w)
        try:
            for n in (int(x) for x in args.sizes.split(",")):
                r = one(machine, n, w, args.rounds, args.budget, numpy_)
                print(f"{n:5d}^3 workers {r['workers']}: superopt {r['superopt_us']:9.1f} us  numpy {r['numpy_us']:9.1f} us  "
                      f"x{r['ratio_vs_numpy']:.2f}  ({r['gflops']} GFLOP/s, {r['family']} {r['params']}, tune {r['tune_s']} s, "
                      f"load {r['load_1min']})", flush=True)
                rows.append(r)
        finally:
            numpy_.close()
    doc = {"command": "python bench/cpu_gemm.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "cpu": platform.processor() or platform.machine(), "cores": machine.cores, "simd_bytes": machine.simd_bytes,
           "caches": caches(), "numpy": np.__version__,
           "note": "tuned by the engine as `superopt tune` (budget per kernel as given); ours and numpy alternate round by round "
                   "(numpy in a child process, OpenBLAS defaults; single-thread: OPENBLAS_NUM_THREADS=1); medians of rounds of "
                   ">= 50 ms; shared host, the 1-minute load average before-after each row",
           "results": rows}
    if args.out:
        with open(args.out, "w") as f: json.dump(doc, f, indent=1)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f: f.write(markdown(doc))


if __name__ == "__main__":
    main()
