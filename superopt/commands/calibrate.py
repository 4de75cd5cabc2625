"""``superopt calibrate --backend cuda|cpu``: measure the machine's ceilings and store them
(JSON in the user's cache dir) for the cost model; ``search.machine.load`` applies them.

Each measurement repeats until it is stable: the relative spread of its last ``STABLE_K``
timings, (max - min) / median, is at most ``--spread`` (default 5%), or ``--reps`` timings
were taken; the median of those last ones is the figure, and each measurement's spread and
count are stored with the calibration (``notes["spread"]``). A machine already busy gives
ceilings below what it can do, so calibrate refuses (one line, exit 2) when the 1-minute load
average exceeds ``--max-load`` per core or a quick timing-noise check (``NOISE_RUNS`` runs of a
small fixed numpy workload) spreads more than ``NOISE_LIMIT``, unless ``--force``."""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace

from superopt.commands.args import nonneg_float, positive_float, positive_int

STABLE_K = 5          # timings the spread is taken over
NOISE_RUNS = 9        # runs of the noise check's workload
NOISE_LIMIT = 0.5     # its (max - min) / median above this: the machine is busy

HELP = "measure copy bandwidth, FMA rate, shared-memory bandwidth, launch overhead and (GPU) tensor-core rate; store them"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("cuda", "cpu"), default="cpu")
    p.add_argument("--reps", type=positive_int, default=30, help="timed runs per measurement (median taken)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"machine", "copy_bytes_per_s", "fma_flops_per_s", "saved", ...} (cpu adds '
                        '"threads", "compiler", "gemm_model" (the cpu_gemm cost model fit), "gemm_fit_seconds", '
                        '"gemm_fit_rms_log"; cuda adds "smem_bytes_per_s", "launch_s", "launch_host_s", "device", '
                        '"tensor_core_fp16"); progress goes to stderr')
    p.add_argument("--no-save", action="store_true", help="measure only; keep the stored calibration")
    p.add_argument("--spread", type=positive_float, default=0.05, metavar="F",
                   help="repeat a measurement until (max - min) / median of its last 5 timings is at most F (default 0.05)")
    p.add_argument("--max-load", type=nonneg_float, default=0.5, metavar="L",
                   help="refuse when the 1-minute load average exceeds L per core (default 0.5)")
    p.add_argument("--force", action="store_true", help="calibrate even on a busy machine (the figures may be low)")
    p.add_argument("--copy-mib", type=positive_int, default=256, metavar="MIB", help=argparse.SUPPRESS)  # small runs in tests
    p.add_argument("--fma-iters", type=positive_int, default=1 << 22, metavar="N", help=argparse.SUPPRESS)


def spread(xs) -> float:
    """(max - min) / median: how far apart the timings are, relative to their middle."""
    med = statistics.median(xs)
    return (max(xs) - min(xs)) / med if med > 0 else float("inf")


def until_stable(timed, limit: int, threshold: float, k: int = STABLE_K) -> dict:
    """Call ``timed()`` (seconds of one timing) until the spread of its last ``k`` results is at
    most ``threshold`` or ``limit`` calls were made (at least ``min(k, limit)``); returns the
    median and spread of the last ``k``, the calls made and whether it became stable."""
    xs: list[float] = []
    while len(xs) < limit:
        xs.append(timed())
        if len(xs) >= k and spread(xs[-k:]) <= threshold: break
    last = xs[-k:]
    return {"median_s": statistics.median(last), "spread": spread(last), "runs": len(xs), "stable": spread(last) <= threshold}


def busy_reason(load1: float, cores: int, noise: float, max_load: float, max_noise: float = NOISE_LIMIT) -> str | None:
    """Why the machine is too busy to calibrate (None: quiet enough)."""
    if load1 > max_load * cores:
        return f"the machine is busy (1-minute load average {load1:.2f} on {cores} cores, above {max_load:g} a core)"
    if noise > max_noise:
        return f"timings on this machine are noisy (a fixed workload's spread is {noise:.0%}, above {max_noise:.0%})"
    return None


def noise_check(runs: int = NOISE_RUNS) -> float:
    """The spread of ``runs`` timings of a small fixed numpy workload (about a millisecond each)."""
    import numpy as np
    a = np.arange(1 << 18, dtype=np.float64)
    xs = []
    for _ in range(runs):
        t0 = time.perf_counter(); np.sqrt(a * a + 1.0).sum(); xs.append(time.perf_counter() - t0)  # noqa: E702
    return spread(xs)


def check_quiet(args) -> dict:
    """The load and noise seen before measuring; raises UserError (unless --force) when busy."""
    from superopt.cli import UserError
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load1, noise = os.getloadavg()[0], noise_check()
    why = busy_reason(load1, cores, noise, args.max_load)
    if why and not args.force: raise UserError(f"{why}: calibrating now would store low ceilings; retry when it is idle, or pass --force")
    return {"load1": load1, "cores": cores, "noise_spread": noise, "busy": why, "forced": bool(why)}


def measured_machine(backend: str, reps: int = 30, progress=None, stable: dict | None = None):
    """Measure ``backend``'s ceilings; returns (the calibrated Machine, the raw measurements).
    Stores nothing (``run`` and ``superopt bench --calibrate`` share this). ``progress(done,
    total, what)`` (superopt.progress) hears of each measurement as it starts. ``stable``
    (cpu): ``measure_cpu``'s keywords (``threshold``, ``copy_elems``, ``fma_iters``)."""
    progress = progress or (lambda done, total, what: None)
    from superopt.cli import UserError
    from superopt.search import machine as M
    if backend == "cuda":
        from superopt.backends.cuda.cuda_backend import machine_for, probe
        ok, why = probe()
        if not ok: raise UserError(f"no CUDA device is present ({why})")
        from superopt.backends.cuda.calibrate import measure
        progress(0, 2, "copy, FMA, shared memory, launch")
        r = measure(reps=reps)
        base = machine_for(r["device"])
        progress(1, 2, "tensor-core GEMM")
        r["tensor_core_fp16"] = tensor_core_rate(reps)
        progress(2, 2, "tensor-core GEMM")
        tc = r["tensor_core_fp16"] if isinstance(r["tensor_core_fp16"], float) else base.flops_tc_fp16
        m = replace(base, dram_bw=r["copy_bytes_per_s"], flops_fp32=r["fma_flops_per_s"], smem_bw=r["smem_bytes_per_s"],
                    launch_s=r["launch_s"], cores=r["device"]["sms"], l2_bytes=r["device"]["l2_bytes"], calibrated=True,
                    flops_tc_fp16=tc,
                    notes={"device": r["device"], "launch_host_s": r["launch_host_s"],
                           "tensor_core_fp16": r["tensor_core_fp16"], "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        if isinstance(r["tensor_core_fp16"], float):   # the model's rate under which it times that GEMM as measured
            r["tensor_core_model_fp16"] = model_rate(m, r["tensor_core_fp16"])
            m = replace(m, flops_tc_fp16=r["tensor_core_model_fp16"], notes={**m.notes, "tensor_core_model_fp16": r["tensor_core_model_fp16"]})
    elif backend == "cpu":
        from superopt.search.families.cpu_gemm import FITTED
        r = measure_cpu(M.host_cpu(), reps, progress, **(stable or {}))
        m = replace(M.host_cpu(), dram_bw=r["copy_bytes_per_s"], flops_fp32=r["fma_flops_per_s"], calibrated=True,
                    notes={"compiler": r["compiler"], "threads": r["threads"], "spread": r["spread"],
                           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        cases = gemm_fit_cases(m)
        r["gemm_fit_seconds"] = measure_gemm_cases(m, cases, reps, progress, r["spread"], (stable or {}).get("threshold", 0.05))
        fit, rms = fit_gemm_model(cases, r["gemm_fit_seconds"], m)
        r["gemm_model"], r["gemm_fit_rms_log"] = fit, rms
        m = replace(m, notes={**m.notes, FITTED: fit, "spread": r["spread"]})
    else:
        raise UserError(f"calibration is available for cpu and cuda, not {backend}")
    return m, r


TC_GEMM = 8192   # M = N = K of the fp16 GEMM whose rate calibrates the tensor cores


def tc_gemm():
    from superopt.kernels.registry import Workload
    return Workload.make("matmul", M=TC_GEMM, N=TC_GEMM, K=TC_GEMM, dtype="float16").kernels[0]


def model_rate(machine, achieved: float) -> float:
    """The tensor-core rate of the cost model (search/tc_cost.fit_rate) under which the hand
    rule's ``TC_GEMM`` GEMM on ``machine`` runs at the ``achieved`` FLOP/s measured."""
    from superopt.search.hand import gpu
    from superopt.search.tc_cost import fit_rate
    k = tc_gemm()
    s = gpu(k, machine)
    return fit_rate(k, s, machine, k.flops / achieved) if s.tensor_core is not None else achieved


def tensor_core_rate(reps: int = 30, size: int = TC_GEMM) -> float | str:
    """FLOP/s of our own fp16 tensor-core GEMM (the GPU hand rule's schedule: wgmma on sm_90)
    at ``size``^3, verified first, timed like every kernel; the rate the tensor-core cost
    model (search/tc_cost.py) then assumes. A string says why it was not measured."""
    from superopt.backends.base import get
    from superopt.engine import measure
    from superopt.kernels.registry import Workload
    from superopt.search.hand import gpu
    k = tc_gemm() if size == TC_GEMM else Workload.make("matmul", M=size, N=size, K=size, dtype="float16").kernels[0]
    try:
        be = get("cuda")
    except Exception as e:  # noqa: BLE001 - the other ceilings must not be lost to this one
        return f"not measured ({type(e).__name__}: {e})"
    try:
        s = gpu(k, be.machine)
        if s.tensor_core is None: return "not measured (no tensor-core schedule on this GPU)"
        m = measure(k, s, be, "calibrate", seed=0, runs=reps)   # verified, then timed
        if not (m.verified and m.measured_s): return f"not measured (the GEMM: {m.reason})"
        return 2.0 * size ** 3 / m.measured_s
    except Exception as e:  # noqa: BLE001 - as above
        return f"not measured ({type(e).__name__}: {e})"
    finally:
        be.close()


def run(args: argparse.Namespace) -> int:
    from superopt.cli import UserError
    from superopt.search import machine as M
    if args.reps < 3: raise UserError("--reps must be at least 3")
    if args.backend == "cuda":   # no device: say that first, not how busy the host is
        from superopt.backends.cuda.cuda_backend import probe
        ok, why = probe()
        if not ok: raise UserError(f"no CUDA device is present ({why})")
    quiet = check_quiet(args)
    from superopt.progress import progress_for
    stable = {"threshold": args.spread, "copy_elems": args.copy_mib << 18, "fma_iters": args.fma_iters}
    with progress_for(args, "calibrate", phase=False) as progress:
        m, r = measured_machine(args.backend, args.reps, progress, stable)
    r["machine_state"] = quiet
    if quiet["busy"]: m = replace(m, notes={**m.notes, "forced_busy": quiet["busy"]})
    path = None if args.no_save else M.save_calibration(m)
    if args.json:
        print(json.dumps({"machine": m.name, **r, "saved": str(path) if path else None}))
        return 0
    print(f"machine {m.name}" + (f" ({r['device']['name']}, {r['device']['sms']} SMs)" if "device" in r else ""))
    print(f"  copy bandwidth (read + write)  {r['copy_bytes_per_s'] / 1e9:10.1f} GB/s")
    print(f"  fp32 FMA rate                  {r['fma_flops_per_s'] / 1e12:10.2f} TFLOP/s")
    if "smem_bytes_per_s" in r:
        print(f"  shared-memory bandwidth        {r['smem_bytes_per_s'] / 1e12:10.2f} TB/s")
        print(f"  launch overhead                {r['launch_s'] * 1e6:10.2f} us (host side {r['launch_host_s'] * 1e6:.2f} us)")
        tc = r["tensor_core_fp16"]
        print("  fp16 tensor-core rate          " + (f"{tc / 1e12:10.1f} TFLOP/s (our {TC_GEMM}^3 GEMM; the model's pipe "
                                                          f"rate {r['tensor_core_model_fp16'] / 1e12:.1f})" if isinstance(tc, float) else tc))
    if "gemm_model" in r:
        g = r["gemm_model"]
        print(f"  cpu_gemm model fit             FMA efficiency {g['fma_eff']:.2f}, latency {g['fma_latency']:.1f} cycles, L2 {g['l2_bw']:.1f} and L3 "
              f"{g['l3_bw']:.1f} B/cycle, overlap {g['overlap']:.2f} ({len(r['gemm_fit_seconds'])} GEMMs, "
              f"rms log error {r['gemm_fit_rms_log']:.3f})")
    for name, sp in r.get("spread", {}).items():
        if isinstance(sp, dict):
            print(f"  spread of {name:21s} {sp['spread']:10.1%} ({sp['runs']} timings)"
                  + ("" if sp["stable"] else f" (not below {args.spread:.0%} within --reps)"))
    if quiet["busy"]: print(f"warning: {quiet['busy']} (--force)")
    print(f"saved to {path}" if path else "not saved (--no-save)")
    return 0


# ---- CPU: small C kernels built with the system compiler ---------------------------------
CPU_SOURCE = r"""
#include <stddef.h>
typedef float vf __attribute__((vector_size(VB)));
void copy(float* restrict d, const float* restrict s, long n) {
  #pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) d[i] = s[i];
}
double fma_chains(long iters, int* threads) {
  double total = 0;
  #pragma omp parallel reduction(+:total)
  {
    vf a[16], b = (vf){0} + 0.999f, c = (vf){0} + 0.001f;
    for (int j = 0; j < 16; ++j) a[j] = (vf){0} + (float)j;
    for (long i = 0; i < iters; ++i)
      for (int j = 0; j < 16; ++j) a[j] = a[j] * b + c;
    float s = 0;
    for (int j = 0; j < 16; ++j) for (int l = 0; l < (int)(VB / 4); ++l) s += a[j][l];
    total += s;
    #ifdef _OPENMP
    #pragma omp master
    *threads = omp_get_num_threads();
    #else
    *threads = 1;
    #endif
  }
  return total;
}
"""


def measure_cpu(machine, reps: int = 30, progress=None, threshold: float = 0.05, copy_elems: int = 1 << 26,
                fma_iters: int = 1 << 22) -> dict:
    """Copy bandwidth and FMA rate, each repeated until stable (``until_stable``: at most
    ``reps`` timings); ``spread`` says how stable each became."""
    import numpy as np
    progress = progress or (lambda done, total, what: None)
    progress(0, 3, "build the C kernels")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        from superopt.cli import UserError
        raise UserError("no C compiler found (set CC)")
    with tempfile.TemporaryDirectory() as d:
        src, lib = os.path.join(d, "cal.c"), os.path.join(d, "cal.so")
        with open(src, "w") as f: f.write("#include <omp.h>\n" + CPU_SOURCE)
        flags = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", f"-DVB={machine.simd_bytes}"]
        proc = subprocess.run([cc, *flags, src, "-o", lib], capture_output=True, text=True)
        if proc.returncode != 0:
            from superopt.cli import UserError
            raise UserError(f"{cc} could not build the calibration kernels: {proc.stderr.strip()[:400]}")
        so = ctypes.CDLL(lib)
        so.copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
        so.fma_chains.argtypes = [ctypes.c_long, ctypes.POINTER(ctypes.c_int)]
        so.fma_chains.restype = ctypes.c_double
        progress(1, 3, "copy bandwidth")
        n = copy_elems  # default 256 MiB each way: far past the caches
        a, b = np.ones(n, np.float32), np.empty(n, np.float32)
        so.copy(b.ctypes.data, a.ctypes.data, n)
        copy = until_stable(lambda: _seconds(so.copy, b.ctypes.data, a.ctypes.data, n), reps, threshold)
        progress(2, 3, "FMA rate")
        thr, iters = ctypes.c_int(0), fma_iters
        so.fma_chains(1 << 16, ctypes.byref(thr))
        fma = until_stable(lambda: _seconds(so.fma_chains, iters, ctypes.byref(thr)), reps, threshold)
        flops = 2 * 16 * (machine.simd_bytes // 4) * iters * thr.value / fma["median_s"]
        progress(3, 3, "FMA rate")
    return {"copy_bytes_per_s": 2 * n * 4 / copy["median_s"], "fma_flops_per_s": flops, "threads": thr.value, "compiler": cc,
            "spread": {"copy": copy, "fma": fma}}


def _seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


# ---- CPU: the packed GEMM's cost model fitted to timed GEMMs ----------------------------------
# (m, n, k) and the blocks of single-worker cpu_gemm runs (NR in vectors): a compute-bound
# textbook blocking, a latency-bound small tile, a B micro-panel past L1 (from L2), an A
# block past L2 (from L3), a memory-bound short K, a large tile with whole-K blocks. Each
# fitted constant moves at least one of their modeled times.
GEMM_CASES = (
    ((512, 512, 512), dict(MR=8, NR=2, MC=96, KC=256, NC=512)),
    ((256, 256, 256), dict(MR=2, NR=1, MC=64, KC=128, NC=256)),
    ((512, 512, 512), dict(MR=2, NR=4, MC=64, KC=512, NC=512)),
    ((2048, 256, 512), dict(MR=8, NR=1, MC=2048, KC=512, NC=256)),
    ((1024, 1024, 16), dict(MR=8, NR=2, MC=96, KC=16, NC=1024)),
    ((512, 2064, 1024), dict(MR=4, NR=3, MC=1024, KC=1024, NC=2064)),
)
# the fitted constants of search/families/cpu_gemm.MODEL and their ranges (bandwidths in bytes a cycle)
GEMM_FIT = {"fma_eff": (0.05, 4.0), "fma_latency": (1.0, 16.0), "l2_bw": (4.0, 512.0), "l3_bw": (1.0, 256.0),
            "overlap": (0.0, 1.0)}


def gemm_fit_cases(machine) -> list[tuple[dict[str, int], dict[str, int]]]:
    """(geometry, parameters) of each GEMM_CASES run on ``machine``'s ISA, one worker."""
    from superopt.ir.cpu_gemm import registers
    lanes, _ = registers(machine)
    return [({"batch": 1, "m": m, "n": n, "k": k}, dict(p, NR=p["NR"] * lanes, V=lanes, PF=0, workers=1))
            for (m, n, k), p in GEMM_CASES]


def measure_gemm_cases(machine, cases, reps: int = 30, progress=None, spreads: dict | None = None,
                       threshold: float = 0.05) -> list[float]:
    """Median seconds of each case on the cpu backend (checked against numpy first), its timing
    repeated (up to 3 times) until its samples' spread is at most ``threshold``; each case's
    spread lands in ``spreads["gemm WxHxK"]``."""
    import numpy as np
    from superopt.backends.base import Failure
    from superopt.backends.cpu import CPUBackend
    from superopt.ir.lower import lower
    from superopt.kernels.registry import Workload
    from superopt.search.families.cpu_gemm import schedule
    progress = progress or (lambda done, total, what: None)
    be, out = CPUBackend(machine, timeout_s=120), []
    try:
        for i, (g, p) in enumerate(cases):
            progress(i, len(cases), f"GEMM {g['m']}x{g['n']}x{g['k']} for the cost model fit")
            k = Workload.make("matmul", M=g["m"], N=g["n"], K=g["k"]).kernels[0]
            c = be.compile(lower(k, schedule(k, **p), machine))
            if isinstance(c, Failure): raise RuntimeError(f"calibration GEMM {g}: {c}")
            rng = np.random.default_rng(i)
            a, b = rng.random((g["m"], g["k"]), dtype=np.float32), rng.random((g["k"], g["n"]), dtype=np.float32)
            ins = [a.reshape(-1), b.reshape(-1)]
            got = be.run(c, ins, np.full(g["m"] * g["n"], np.nan, np.float32))
            if isinstance(got, Failure) or not np.allclose(got.reshape(g["m"], g["n"]), a @ b, rtol=1e-3):
                raise RuntimeError(f"calibration GEMM {g}: wrong result ({got})")
            for attempt in range(3):
                t = be.time(c, ins, got, runs=max(STABLE_K, reps // 5), min_s=0.02)
                if isinstance(t, Failure): raise RuntimeError(f"calibration GEMM {g}: {t}")
                if spread(t.samples) <= threshold: break
            if spreads is not None:
                spreads[f"gemm {g['m']}x{g['n']}x{g['k']} #{i}"] = {
                    "median_s": t.median_s, "spread": spread(t.samples), "runs": len(t.samples) * (attempt + 1),
                    "stable": spread(t.samples) <= threshold}
            out.append(t.median_s)
        progress(len(cases), len(cases), "GEMM cost model fit")
    finally:
        be.close()
    return out


def fit_gemm_model(cases, seconds: list[float], machine) -> tuple[dict[str, float], float]:
    """The GEMM_FIT constants under which the cpu_gemm model best times ``cases`` as
    ``seconds`` (least squares of log(modeled / measured), pattern search from the
    defaults in log space; overlap in linear space), and the fit's rms log error."""
    import math
    from superopt.search.families.cpu_gemm import MODEL, model
    names = list(GEMM_FIT)
    fwd = {n: (lambda v: v) if n == "overlap" else math.log for n in names}
    inv = {n: (lambda u: u) if n == "overlap" else math.exp for n in names}
    lo, hi = ({n: fwd[n](GEMM_FIT[n][j]) for n in names} for j in (0, 1))

    def err(u: dict[str, float]) -> float:
        P = {**MODEL, **{n: inv[n](u[n]) for n in names}}
        return sum(math.log(model(g, p, machine, P) / t) ** 2 for (g, p), t in zip(cases, seconds))

    u = {n: min(hi[n], max(lo[n], fwd[n](MODEL[n]))) for n in names}
    e, step = err(u), 0.5
    while step > 1e-6:  # try each coordinate up and down; halve the step when nothing improves
        moved = False
        for n in names:
            for d in (step, -step):
                v = dict(u, **{n: min(hi[n], max(lo[n], u[n] + d))})
                if (ev := err(v)) < e:
                    u, e, moved = v, ev, True
                    break
        if not moved: step /= 2
    return {n: inv[n](u[n]) for n in names}, math.sqrt(e / max(1, len(cases)))
