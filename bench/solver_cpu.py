"""Z3 solver on the CPU: modeled vs measured time, solve time, and the Z3 pick against
the hand rules and a short pure BEAM, kernel by kernel (same backend, same timer).

For each kernel: ``search.z3opt.solve`` (top-k), every candidate verified and timed
(``commands.tune.measure``); the hand rules' schedule verified and timed; BEAM from the
hand rules for ``--beam-budget`` seconds, its pick verified and re-timed by the same
``measure``; with ``--numpy``, numpy's reference of each workload, timed in the same run
(``superopt.vendor.numpy_time``), next to the sum of its kernels' best times. Every row
records the load average (the machine is shared). Writes every number to JSON and
prints medians.

    python3 bench/solver_cpu.py --out bench/results/solver-cpu.json
    python3 bench/solver_cpu.py --workload matmul:M=1024,N=1024,K=1024 --beam-budget 0 --numpy --out ...
    OPENBLAS_NUM_THREADS=1 python3 bench/solver_cpu.py --cores 1 ...   # one core each (steadier when shared)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

from superopt.backends.base import get
from superopt.engine import BackendRunner, measure
from superopt.kernels.registry import Workload
from superopt.search import beam, cost, z3opt
from superopt.search.hand import hand_schedule
from superopt.vendor import numpy_time

WORKLOADS = [("matmul", dict(M=256, N=256, K=256)), ("matmul", dict(M=512, N=512, K=512)),
             ("softmax", dict(M=512, N=1024)), ("rowsum", dict(M=1024, N=4096)),
             ("conv2d", dict(N=1, C=32, H=32, W=32, K=32))]


def run_kernel(k, be, top_k: int, timeout_s: float, beam_budget: float, repeat: int) -> dict:
    r = z3opt.solve(k, be.machine, top_k=top_k, timeout_s=timeout_s)
    cands = []
    for c in r.candidates:
        m = measure(k, c.schedule, be, "z3", runs=repeat)
        cands.append({"schedule": c.schedule.to_dict(), "modeled_s": c.modeled_s, "time_s": m.measured_s,
                      "verified": m.verified, "reason": m.reason})
    ok = [c for c in cands if c["verified"] and c["time_s"]]
    pick = min(ok, key=lambda c: c["time_s"]) if ok else None
    hand_s = hand_schedule(k, be.machine)
    hand = measure(k, hand_s, be, "hand", runs=repeat)
    top1 = cands[0]
    row = {"kernel": k.name, "kind": k.kind, "axes": [a.size for a in k.axes], "flops": k.flops,
           "solve_s": r.solve_s, "proved_optimal": r.proved_optimal, "fallback": r.fallback,
           "z3_top1": top1, "z3_pick": pick, "candidates": cands,
           "modeled_over_measured_top1": (top1["modeled_s"] / top1["time_s"]) if top1["time_s"] else None,
           "hand": {"schedule": hand_s.to_dict(), "time_s": hand.measured_s, "verified": hand.verified,
                    "modeled_s": cost.modeled_time(k, hand_s, be.machine)}, "beam": None}
    if beam_budget <= 0: return row
    t0 = time.perf_counter()
    b = beam.beam(k, BackendRunner(k, be), budget_s=beam_budget, max_candidates=16, width=4)
    beam_search_s = time.perf_counter() - t0
    bm = measure(k, b.best, be, "beam", runs=repeat)
    row["beam"] = {"schedule": b.best.to_dict(), "time_s": bm.measured_s, "verified": bm.verified and b.verified,
                   "search_s": beam_search_s, "timed": b.timed, "steps": b.steps,
                   "modeled_s": cost.modeled_time(k, b.best, be.machine)}
    return row


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(rows: list[dict]) -> dict:
    ratio = lambda a, b: a / b if a and b else None  # noqa: E731
    return {
        "kernels": len(rows),
        "median_solve_s": _med([r["solve_s"] for r in rows]),
        "max_solve_s": max(r["solve_s"] for r in rows),
        "proved_optimal": sum(bool(r["proved_optimal"]) for r in rows),
        "median_modeled_over_measured_top1": _med([r["modeled_over_measured_top1"] for r in rows]),
        "median_hand_over_z3pick": _med([ratio(r["hand"]["time_s"], r["z3_pick"] and r["z3_pick"]["time_s"]) for r in rows]),
        "median_hand_over_z3top1": _med([ratio(r["hand"]["time_s"], r["z3_top1"]["time_s"]) for r in rows]),
        "median_beam_over_z3pick": _med([ratio(r["beam"]["time_s"], r["z3_pick"] and r["z3_pick"]["time_s"])
                                         for r in rows if r["beam"]]),
        "z3pick_at_least_hand": sum(1 for r in rows if r["z3_pick"] and r["hand"]["time_s"]
                                    and r["z3_pick"]["time_s"] <= r["hand"]["time_s"]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--timeout", type=float, default=10.0, help="Z3 time limit per kernel (s)")
    p.add_argument("--beam-budget", type=float, default=20.0, help="BEAM search time per kernel (s)")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--out", default="bench/results/solver-cpu.json")
    p.add_argument("--workload", action="append", metavar="KIND:k=v,...",
                   help="workload to run instead of the default list (repeatable), e.g. matmul:M=1024,N=1024,K=1024")
    p.add_argument("--numpy", action="store_true", help="time numpy's reference of each workload in the same run")
    p.add_argument("--cores", type=int, help="schedule for this many cores (set OPENBLAS_NUM_THREADS to match for numpy)")
    a = p.parse_args(argv)
    workloads = [_parse(w) for w in a.workload] if a.workload else WORKLOADS
    machine = None
    if a.cores:
        from dataclasses import replace
        from superopt.search.machine import load
        m = load("cpu")
        machine = replace(m, cores=a.cores, flops_fp32=m.flops_fp32 * a.cores / m.cores)
    be = get("cpu", machine)
    load_before = os.getloadavg()  # timings on a shared machine: say how busy it was
    rows = []
    try:
        for kind, params in workloads:
            w = Workload.make(kind, **params)
            first = len(rows)
            for k in w.kernels:
                row = run_kernel(k, be, a.top_k, a.timeout, a.beam_budget, a.repeat)
                row["workload"] = w.name
                row["load_avg"] = [round(x, 2) for x in os.getloadavg()]
                rows.append(row)
                us = lambda x: f"{x * 1e6:9.1f}" if x else "      n/a"  # noqa: E731
                print(f"{k.name[:28]:28s} solve {row['solve_s']:5.2f}s proved={row['proved_optimal']!s:5s} "
                      f"modeled {us(row['z3_top1']['modeled_s'])}us  z3 top1 {us(row['z3_top1']['time_s'])}us "
                      f"pick {us(row['z3_pick'] and row['z3_pick']['time_s'])}us  hand {us(row['hand']['time_s'])}us "
                      f"beam {us(row['beam'] and row['beam']['time_s'])}us  load {row['load_avg'][0]}", flush=True)
            if a.numpy: _vs_numpy(w, rows[first:])
    finally:
        be.close()
    summary = summarize(rows)
    print(json.dumps(summary, indent=1))
    doc = {"command": "python3 bench/solver_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": be.machine.to_dict(), "python": platform.python_version(),
           "load_avg_before": load_before, "cores": be.machine.cores,
           "threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}, "load_avg_after": os.getloadavg(),
           "summary": summary, "kernels": rows}
    with open(a.out, "w") as f: json.dump(doc, f, indent=1)
    return 0


def _parse(text: str) -> tuple[str, dict]:
    kind, _, rest = text.partition(":")
    return kind, dict(kv.split("=", 1) for kv in rest.split(",") if kv)


def _vs_numpy(w, rows: list[dict]) -> None:
    """numpy's time for the workload, and ours (sum of each kernel's best verified time) against it."""
    np_s = numpy_time(w)
    best = [min((x for x in (r["z3_pick"] and r["z3_pick"]["time_s"], r["hand"]["time_s"]) if x), default=None)
            for r in rows]
    ours = sum(best) if best and all(best) else None
    flops = sum(r["flops"] for r in rows)
    rows[-1]["numpy"] = {"time_s": np_s, "ours_s": ours, "ours_over_numpy_speed": np_s / ours if np_s and ours else None,
                         "numpy_gflops": flops / np_s / 1e9 if np_s else None,
                         "ours_gflops": flops / ours / 1e9 if ours else None,
                         "load_avg": [round(x, 2) for x in os.getloadavg()]}
    n = rows[-1]["numpy"]
    print(f"{w.name}: numpy {np_s * 1e6 if np_s else float('nan'):.1f}us ({n['numpy_gflops'] or 0:.1f} GFLOP/s), ours "
          f"{ours * 1e6 if ours else float('nan'):.1f}us ({n['ours_gflops'] or 0:.1f} GFLOP/s): "
          f"{n['ours_over_numpy_speed'] or 0:.2f}x numpy's speed; load {n['load_avg'][0]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
