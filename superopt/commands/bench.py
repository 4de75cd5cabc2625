"""``superopt bench``: hand rules vs the Z3 solver vs BEAM (vs vendor libraries) on shape
suites, one run, the same timer; Markdown table, JSON and PNG plots into ``--out``.
See ``superopt.benchmark`` for what is timed and ``bench/README.md`` for reading the output."""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from superopt import benchmark, report
from superopt.backends.base import get
from superopt.benchmark import TINYGRAD, Config, parse_methods
from superopt.cli import UserError
from superopt.commands.args import positive_float, positive_int
from superopt.commands.calibrate import measured_machine
from superopt.kernels.suites import SUITES, suite
from superopt.plots import MISSING, have_matplotlib
from superopt.vendor import TINYGRAD_DEVICE, VENDORS, available

HELP = "research benchmark: hand rules vs Z3 vs BEAM (vs numpy/torch) on suites; tables, JSON, plots"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", metavar="NAME[,NAME]", help="suites: bert, resnet, llm, membound, dsp (required unless --replot)")
    p.add_argument("--backend", default="cpu", help="cpu | cuda | hexagon (default: cpu)")
    p.add_argument("--methods", default="hand,z3,beam", metavar="M[,M]",
                   help="hand, z3, beam, z3+beam, tinygrad-hand, tinygrad-beam, numpy (cpu), torch (cuda) "
                        "(default: hand,z3,beam)")
    p.add_argument("--budget", type=positive_float, default=10.0, metavar="S",
                   help="tuning budget per kernel in seconds: z3's time limit, BEAM's search time (default 10)")
    p.add_argument("--repeat", type=positive_int, default=15, metavar="R", help="timing samples per median (default 15)")
    p.add_argument("--small", action="store_true", help="the small CI shapes of each suite")
    p.add_argument("--only", default="", metavar="NAME[,NAME]", help="keep only these workloads")
    p.add_argument("--out", default="bench-out", metavar="DIR", help="output folder (default: bench-out)")
    p.add_argument("--calibrate", action="store_true",
                   help="measure the machine's ceilings first and use them as the roofline of this run (not "
                        "stored, and not given to the cost model: `superopt calibrate` does that)")
    p.add_argument("--warm", action="store_true",
                   help="reuse kernels compiled by earlier runs (default: an empty build cache, so tuning times "
                        "include every compile)")
    p.add_argument("--no-plots", action="store_true", help="write the table and JSON only")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object at the end: out, files, wall_s and the summary (per method: geomean "
                        "speed-up vs hand, faster/slower, unverified, median tuning); progress lines go to stderr")
    p.add_argument("--replot", metavar="DIR", help="only redraw the table and plots of an earlier run from DIR/results.json "
                                                   "(e.g. a run made where matplotlib is missing)")


def command_line(a: argparse.Namespace) -> str:
    """The exact command that reproduces this run."""
    parts = ["superopt", "bench", "--suite", a.suite, "--backend", a.backend, "--methods", a.methods,
             "--budget", f"{a.budget:g}", "--repeat", str(a.repeat)]
    parts += ["--small"] * a.small + (["--only", a.only] if a.only else []) + ["--out", a.out]
    parts += ["--calibrate"] * a.calibrate + ["--warm"] * a.warm + ["--no-plots"] * a.no_plots
    return " ".join(shlex.quote(p) for p in parts)


def config(a: argparse.Namespace):
    try:
        methods = parse_methods(a.methods)
    except ValueError as e:
        raise UserError(str(e)) from None
    suites = tuple(s.strip() for s in a.suite.split(",") if s.strip())
    bad = [s for s in suites if s not in SUITES]
    if bad or not suites: raise UserError(f"unknown suite(s) {', '.join(bad) or '(none)'} (suites: {', '.join(SUITES)})")
    if a.budget <= 0 or a.repeat < 1: raise UserError("--budget must be > 0 and --repeat >= 1")
    for m in methods:
        if m in TINYGRAD:
            if a.backend not in TINYGRAD_DEVICE: raise UserError(f"{m}: tinygrad runs on cpu and cuda here, not {a.backend}")
            try:
                import tinygrad  # noqa: F401 - an optional dependency: asked for only when a method needs it
            except ImportError:
                raise UserError(f"{m}: tinygrad is not installed (pip install 'superopt[tinygrad]')") from None
        if m in VENDORS:
            if VENDORS[m] != a.backend: raise UserError(f"{m} is the vendor baseline of --backend {VENDORS[m]}, not {a.backend}")
            why = available(m)
            if why: raise UserError(f"{m}: {why}")
    return Config(suites, a.backend, methods, a.budget, a.repeat, a.small, command_line(a),
                  tuple(x for x in a.only.split(",") if x))


def run(args: argparse.Namespace) -> int:
    if args.replot: return _replot(args.replot)
    if not args.suite: raise UserError("--suite is required (or --replot DIR)")
    cfg = config(args)
    work = [(s, w) for s in cfg.suites for w in suite(s, small=cfg.small) if not cfg.only or w.name in cfg.only]
    if not work: raise UserError(f"no workload of {', '.join(cfg.suites)} matches --only {args.only}")
    plots = not args.no_plots
    if plots and not have_matplotlib():
        print(f"superopt bench: {MISSING}; writing the table and JSON only", file=sys.stderr)
        plots = False
    calibration = None
    if args.calibrate:
        ceilings, calibration = measured_machine(cfg.backend)
        cfg = replace(cfg, ceilings=ceilings)
        print(f"roofline (measured): DRAM {ceilings.dram_bw / 1e9:,.1f} GB/s, fp32 {ceilings.flops_fp32 / 1e9:,.0f} GFLOP/s",
              file=sys.stderr if args.json else sys.stdout, flush=True)
    # without --warm every method pays for its own compiles: an empty build folder for this run
    build = None if args.warm else Path(tempfile.mkdtemp(prefix="superopt-bench-"))
    try:
        be = get(cfg.backend, build_dir=build)
    except Exception as e:  # e.g. no GPU: one line, not a traceback
        raise UserError(f"backend {cfg.backend}: {e}") from None
    n = sum(len(w.steps) for _, w in work)
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else (lambda line: print(line, flush=True))
    say(f"superopt bench: {len(work)} workloads, {n} kernels, methods {','.join(cfg.methods)}, "
        f"budget {cfg.budget_s:g} s, backend {cfg.backend}")
    try:
        doc = benchmark.run(cfg, be, work, log=say,
                            checkpoint=lambda d: report.write(d, args.out, plots=False))
    finally:
        be.close()
        if build is not None: shutil.rmtree(build, ignore_errors=True)
    doc["calibration"] = calibration
    doc["config"]["cold_build_cache"] = not args.warm
    files = report.write(doc, args.out, plots=plots)
    s = doc["summary"]
    unverified = sum(d["unverified"] for d in s["methods"].values())
    if args.json:
        print(json.dumps(dict(out=args.out, files=[str(f) for f in files], wall_s=doc["wall_s"], summary=s)))
        return 0 if unverified == 0 else 1
    for name, d in s["methods"].items():
        gm = d["geomean_speedup_vs_hand"]
        print(f"{name:8s} geomean speed-up vs hand {gm:.2f}x" if gm else f"{name:8s} -", end="")
        print(f"  faster/slower {d['faster_than_hand']}/{d['slower_than_hand']}  unverified {d['unverified']}  "
              f"median tuning {d['median_tuning_s']:.2f} s")
    print(f"wrote {', '.join(str(f) for f in files)}  ({doc['wall_s']:.0f} s)")
    return 0 if unverified == 0 else 1


def _replot(folder: str) -> int:
    path = Path(folder) / "results.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: {e}") from None
    if not isinstance(doc, dict) or "summary" not in doc or "workloads" not in doc:
        raise UserError(f"{path}: not the results of superopt bench")
    if not have_matplotlib(): raise UserError(MISSING)
    files = report.write(doc, folder, plots=True)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


