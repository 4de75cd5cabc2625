"""``superopt fidelity FILE...``: how well the cost model ranks a kernel's schedules.

For each kernel file, ``--schedules`` distinct legal schedules (the solver's top-k, the
hand rules, neighbours of the solver's pick, random ones spread over the model's range;
``search.fidelity.sample``) are verified and timed (``engine.fidelity.measure_kernel``); the report gives the Spearman rank
correlation of modeled against measured time, the measured rank of the model's top-1 and
the gap of the model's top-1 to the best measured of the solver's top-k.
``--calibrate-model`` then fits a few cost-model constants to the timings and stores them
in the machine's calibration (``notes['cost']``), where ``cost.params`` reads them."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time

from dataclasses import replace

from superopt.backends.base import get
from superopt.cli import UserError
from superopt.commands.args import nonneg_int, positive_int
from superopt.commands.tune import get_backend
from superopt.engine import fidelity as measured
from superopt.io import KernelFileError, load_steps
from superopt.search import fidelity
from superopt.search.machine import load

HELP = "time many schedules of kernels and report how well the cost model ranks them (Spearman)"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", metavar="FILE", nargs="+", help=".pkl or .json kernel files")
    p.add_argument("--backend", default="cpu", help="backend to time on (default: cpu)")
    p.add_argument("--schedules", type=positive_int, default=50, metavar="N", help="schedules per kernel (default: 50)")
    p.add_argument("--topk", type=nonneg_int, default=4, metavar="K", help="solver candidates in the sample (default: 4)")
    p.add_argument("--runs", type=positive_int, default=7, metavar="R", help="timed runs per schedule, median (default: 7)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed of the sample")
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="figure of the runs ranked: median (default) or min (steadier on a shared machine)")
    p.add_argument("--cores", type=positive_int, metavar="N",
                   help="cpu: schedule for N cores only (one core times steadily on a machine others share)")
    p.add_argument("--all-steps", action="store_true", help="every kernel of a multi-kernel file (default: its main one)")
    p.add_argument("--calibrate-model", action="store_true",
                   help="fit cost-model constants to the timings and store them in the machine's calibration")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--save", metavar="FILE", help="write the result JSON to FILE")


def _kernels(args) -> list:
    out = []
    for path in args.files:
        try:
            steps, main = load_steps(path)
        except KernelFileError as e:
            raise UserError(str(e)) from None
        out += [s.kernel for s in steps] if args.all_steps else [steps[main].kernel]
    return out


def _backend(args):
    if args.cores is None: return get_backend(args.backend)
    if args.backend != "cpu": raise UserError("--cores applies to the cpu backend only")
    m = load("cpu")
    if not 1 <= args.cores <= m.cores: raise UserError(f"--cores must be between 1 and {m.cores}, got {args.cores}")
    return get("cpu", replace(m, cores=args.cores, flops_fp32=m.flops_fp32 * args.cores / m.cores))


def _progress(k, quiet: bool):
    def show(i: int, n: int, q) -> None:
        if quiet: return
        t = f"{q.measured_s * 1e6:10.1f} us" if q.measured_s else f"failed: {q.reason[:60]}"
        print(f"  [{i:3d}/{n}] {q.source:9s} modeled {q.modeled_s * 1e6:10.1f} us  measured {t}  "
              f"{q.schedule.describe(k)}", file=sys.stderr, flush=True)
    return show


def run(args: argparse.Namespace) -> int:
    if args.schedules < 3: raise UserError(f"--schedules must be at least 3 (a rank correlation needs 3 points), got {args.schedules}")
    if args.topk < 1 or args.runs < 1: raise UserError("--topk and --runs must be at least 1")
    kernels = _kernels(args)
    be = _backend(args)
    load_before, t0 = os.getloadavg(), time.perf_counter()
    results = []

    def document(partial: bool) -> dict:
        return {"command": _command(args), "partial": partial,
                "backend": args.backend, "statistic": args.stat, "runs": args.runs,
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                "elapsed_s": time.perf_counter() - t0, "machine": be.machine.to_dict(), "summary": _summary(results),
                "kernels": [r.to_dict() for r in results]}
    try:
        for i, k in enumerate(kernels):
            print(f"{k.name}: timing {args.schedules} schedules", file=sys.stderr, flush=True)
            r = measured.measure_kernel(k, be, args.schedules, args.topk, args.runs, args.seed, _progress(k, args.json),
                                        args.stat)
            results.append(r)
            if not args.json: print(_line(r), flush=True)
            if args.save and i + 1 < len(kernels): _save(args.save, document(partial=True))   # nothing lost if cut short
        machine = be.machine
    finally:
        be.close()
    doc = document(partial=False)
    if args.calibrate_model:
        try:
            p, before, after = fidelity.calibrate(results, machine)
        except ValueError as e:
            raise UserError(f"cannot calibrate: {e}") from None
        path = fidelity.store(machine, p) if after > before else None
        doc["calibration"] = {"mean_spearman_before": before, "mean_spearman_after": after,
                              "params": {n: getattr(p, n) for n in fidelity.calibrated(machine)},
                              "stored": str(path) if path else None}
        if not args.json:
            print(f"calibration: mean Spearman {before:.3f} -> {after:.3f}; " +
                  (f"stored in {path}" if path else "no improvement, nothing stored"))
    if args.save: _save(args.save, doc)
    if args.json: print(json.dumps(doc))
    else: print(_summary_line(doc["summary"]))
    return 0 if all(r.ok for r in results) else 1


def _save(path: str, doc: dict) -> None:
    try:
        with open(path, "w") as f: json.dump(doc, f, indent=1)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None


def _command(args) -> str:
    """The command line that reproduces this run."""
    opts = [f"--backend {args.backend}", f"--schedules {args.schedules}", f"--topk {args.topk}", f"--runs {args.runs}",
            f"--seed {args.seed}", f"--stat {args.stat}"] + ([f"--cores {args.cores}"] if args.cores else []) + [f for f, on in (("--all-steps", args.all_steps), ("--calibrate-model", args.calibrate_model)) if on]
    return " ".join(["superopt fidelity", *map(shlex.quote, args.files), *opts] +
                    ([f"--save {shlex.quote(args.save)}"] if args.save else []))


def _fmt(x, spec: str) -> str: return "n/a" if x is None else format(x, spec)


def _line(r) -> str:
    return (f"{r.kernel.name}: {len(r.ok)}/{len(r.points)} verified  Spearman {_fmt(r.spearman(), '.3f')}  "
            f"model top-1 measured rank {_fmt(r.top1_rank(), 'd')}  top-1 gap in top-k {_fmt(r.topk_gap(), '.1%')}  "
            f"(spread p90/p10 {_fmt(r.noise()['spread_p90_over_p10'], '.2f')}, "
            f"runs max/min {_fmt(r.noise()['runs_max_over_min_median'], '.2f')})")


def _summary(results) -> dict:
    rhos = [r.spearman() for r in results]
    good = sorted(x for x in rhos if x is not None)
    gaps = [r.topk_gap() for r in results]
    return {"kernels": len(results), "schedules": sum(len(r.points) for r in results),
            "verified": sum(len(r.ok) for r in results),
            "spearman_per_kernel": {r.kernel.name: x for r, x in zip(results, rhos)},
            "spearman_min": good[0] if good else None,
            "spearman_median": statistics.median(good) if good else None,
            "top1_gap_max": max((g for g in gaps if g is not None), default=None)}


def _summary_line(s: dict) -> str:
    return (f"{s['kernels']} kernels, {s['verified']}/{s['schedules']} schedules verified; Spearman min "
            f"{_fmt(s['spearman_min'], '.3f')}, median {_fmt(s['spearman_median'], '.3f')}; worst top-1 gap in top-k "
            f"{_fmt(s['top1_gap_max'], '.1%')}")
