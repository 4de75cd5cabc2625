"""GPU benchmark: our hand-rule schedules on the CUDA backend vs PyTorch, in one run.

For every workload of the chosen suites: each kernel is scheduled by the hand rules,
lowered, rendered, compiled, checked on fresh random inputs against the reference
interpreter, and timed (CUDA events, L2 flushed before every launch, input sets rotated,
median); the workload's time is the sum over its kernels. PyTorch runs the same workload
in the same process, timed the same way (events, L2 flush, median). "ours ms" is the
whole program back to back (L2 flushed once before it, as torch's op); "kernels ms" the
sum of its kernels timed alone, each after an L2 flush. Prints a table last
and writes every number to JSON together with the command that made it. "% roof" is the
share of the calibrated roofline: max(flops / fp32 FMA rate, min bytes / copy bandwidth)
(no tensor cores yet, so fp16 GEMMs are held to the fp32 FMA rate). ``--copy`` adds "%
copy": the calibration's copy kernel moving the workload's minimum bytes (half each way),
timed the same way, over our time: the share of what a plain copy of that size reaches,
fixed costs (launch, the flush's dirty L2 lines) included. ``SUPEROPT_L2_FLUSH=clean``
times everything (torch too) after a flush that leaves L2 clean (backends/cuda/runtime).

    python3 bench/gpu.py --suites membound,bert --out results.json [--small] [--calibrate] [--copy]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np

from superopt.backends.base import Failure, get
from superopt.backends.cuda.calibrate import copy_times
from superopt.backends.cuda.runtime import flush_mode
from superopt.ir.lower import lower
from superopt.kernels.suites import suite
from superopt.search.hand import gpu
from superopt.vendor import time_torch, torch_fn, torch_inputs  # shared with `superopt bench`
from superopt.verify import compare, poison, random_inputs


# ---- our side ---------------------------------------------------------------------------------
def run_ours(w, be, reps: int, rng) -> dict:
    """Each kernel verified and timed alone (L2 flushed before it), then the whole program
    run back to back on one set of buffers: its output checked against the workload's
    numpy reference and its time taken (L2 flushed once before each run, as for torch)."""
    kernels, total, compiled = [], 0.0, []
    for k in w.kernels:
        s = gpu(k, be.machine)
        rec = {"kernel": k.name, "kind": k.kind, "schedule": s.to_dict(), "describe": s.describe(k)}
        kernels.append(rec)
        c = be.compile(lower(k, s, be.machine))
        if isinstance(c, Failure):
            rec.update(ok=False, failure=str(c)); return {"kernels": kernels, "ok": False}  # noqa: E702
        rec.update(registers=c.handle.registers, local_bytes=c.handle.local_bytes, threads=c.handle.block, blocks=c.handle.grid)
        ins = random_inputs(k, rng)
        out = poison(k.output)
        t = be.time(c, [a.reshape(-1) for a in ins], out, runs=reps)  # first launch: poisoned output, checked below
        if isinstance(t, Failure):
            rec.update(ok=False, failure=str(t)); return {"kernels": kernels, "ok": False}  # noqa: E702
        v = compare(k, out, ins, rng)
        rec.update(ok=v.ok, rel_err=v.rel_err, checked=v.checked, reason=v.reason, median_s=t.median_s,
                   spread=(min(t.samples), max(t.samples)), runs=len(t.samples))
        if not v.ok: return {"kernels": kernels, "ok": False}
        total += t.median_s
        compiled.append(c)
    res = {"kernels": kernels, "ok": True, "kernels_s": total}
    res.update(run_program(w, be, compiled, reps))
    return res


def run_program(w, be, compiled, reps: int) -> dict:
    from superopt.verify import TOLERANCE, poison as poisoned
    names = {b.name: i for i, b in enumerate(w.inputs)}
    arrays = w.random_inputs(seed=2)
    bufs = [a.reshape(-1) for a in arrays]
    for st in w.steps:
        names[st.output] = len(bufs)
        bufs.append(poisoned(st.kernel.output))
    args = [[names[st.output]] + [names[n] for n in st.inputs] for st in w.steps]
    r = be.run_sequence(compiled, args, bufs, [names[w.steps[-1].output]], runs=reps)
    if isinstance(r, Failure): return {"ok": False, "failure": f"program: {r}"}
    (got,), t = r
    res = {"median_s": t.median_s, "spread": (min(t.samples), max(t.samples)), "runs": len(t.samples)}
    if w.flops < 5e10 and w.min_bytes < 3e9:  # end-to-end check against the independent numpy reference
        from superopt.ir import dtypes as dt
        ref = np.asarray(w.reference(arrays), dtype=np.float64).reshape(-1)
        val = dt.to_values(got, w.output.dtype).astype(np.float64)
        err = float(np.linalg.norm(val - ref) / max(np.linalg.norm(ref), 1e-30)) if not np.isnan(val).any() else math.inf
        res.update(program_rel_err=err, ok=err <= TOLERANCE.get(w.output.dtype.name, 1e-4))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suites", default="membound", help="comma-separated: bert,resnet,llm,membound")
    ap.add_argument("--small", action="store_true", help="the small CI shapes")
    ap.add_argument("--only", default="", help="comma-separated workload names to keep")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", default="", help="JSON file to write")
    ap.add_argument("--calibrate", action="store_true", help="measure and store the machine's ceilings first")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--copy", action="store_true", help="time a plain copy of each workload's minimum bytes too")
    args = ap.parse_args(argv)
    command = "python3 bench/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    cal = None
    if args.calibrate:
        from superopt.backends.cuda.calibrate import measure
        cal = measure()
        print(f"calibration: copy {cal['copy_bytes_per_s'] / 1e9:.0f} GB/s, fp32 FMA {cal['fma_flops_per_s'] / 1e12:.1f} TFLOP/s, "
              f"smem {cal['smem_bytes_per_s'] / 1e12:.1f} TB/s, launch {cal['launch_s'] * 1e6:.2f} us", flush=True)
    be = get("cuda")
    m = be.machine
    if cal:
        from dataclasses import replace
        m = replace(m, dram_bw=cal["copy_bytes_per_s"], flops_fp32=cal["fma_flops_per_s"], smem_bw=cal["smem_bytes_per_s"],
                    launch_s=cal["launch_s"], calibrated=True)
        from superopt.search.machine import save_calibration
        save_calibration(m)
    rng = np.random.default_rng(0)
    rows, results = [], []
    only = {x for x in args.only.split(",") if x}
    for sname in args.suites.split(","):
        for w in suite(sname, small=args.small):
            if only and w.name not in only: continue
            t0 = time.time()
            r = {"suite": sname, "workload": w.name, "kind": w.kind, "flops": w.flops, "min_bytes": w.min_bytes,
                 "kernel_bytes": w.kernel_bytes, **run_ours(w, be, args.reps, rng)}
            fn = None if args.no_torch else torch_fn(w, torch_inputs(w, w.random_inputs(seed=1)))
            if fn is not None:
                ts = time_torch(fn, args.reps, m.l2_bytes)
                r["torch_s"], r["torch_spread"] = statistics.median(ts), (min(ts), max(ts))
            if args.copy:
                ts = copy_times(w.min_bytes // 2, args.reps)
                r["copy_s"], r["copy_spread"] = statistics.median(ts), (min(ts), max(ts))
            roof = max(w.flops / m.flops_fp32, w.min_bytes / m.dram_bw)
            r["roofline_s"] = roof
            r["wall_s"] = time.time() - t0
            results.append(r)
            rows.append(_row(r))
            print(_fmt(rows[-1]), flush=True)
    out = {"command": command, "device": be.device, "machine": m.to_dict(), "calibration": cal, "l2_flush": flush_mode(),
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}
    be.close()
    if args.out:
        with open(args.out, "w") as f: json.dump(out, f, indent=1, default=str)
    print("\n" + _fmt(HEADER))
    for row in rows: print(_fmt(row))
    ok = sum(r["ok"] for r in results)
    ratios = [r["torch_s"] / r["median_s"] for r in results if r["ok"] and r.get("torch_s")]
    print(f"\n{ok}/{len(results)} workloads verified; geomean speed vs torch "
          f"{math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else float('nan'):.3f}x  ({be.device['name']})")
    return 0 if ok == len(results) else 1


HEADER = ("workload", "ok", "ours ms", "kernels ms", "torch ms", "vs torch", "ours rate", "torch rate", "% roof", "% copy")


def _row(r) -> tuple:
    ours, th = r.get("median_s"), r.get("torch_s")
    mem = r["flops"] / max(1, r["min_bytes"]) < 10  # memory-bound: GB/s, else TFLOP/s
    rate = (lambda s: f"{r['min_bytes'] / s / 1e9:.0f} GB/s") if mem else (lambda s: f"{r['flops'] / s / 1e12:.2f} TF/s")
    ks = r.get("kernels_s")
    return (r["workload"][:34], "yes" if r["ok"] else "NO", f"{ours * 1e3:.3f}" if ours else "-",
            f"{ks * 1e3:.3f}" if ks else "-", f"{th * 1e3:.3f}" if th else "-", f"{th / ours:.2f}x" if ours and th else "-",
            rate(ours) if ours else "-", rate(th) if th else "-", f"{100 * r['roofline_s'] / ours:.0f}%" if ours else "-",
            f"{100 * r['copy_s'] / ours:.0f}%" if ours and r.get("copy_s") else "-")


def _fmt(row) -> str:
    w = (34, 4, 9, 10, 9, 8, 13, 13, 7, 7)
    return " ".join(str(c).ljust(n) if i == 0 else str(c).rjust(n) for i, (c, n) in enumerate(zip(row, w)))


if __name__ == "__main__":
    sys.exit(main())
