"""``superopt tune FILE``: choose a schedule for a kernel, verify it and time it.

Argument parsing and printing only: the work is the tuning engine's (``superopt.engine``).
``--method z3`` (the default) asks every schedule family that applies to the kernel on the
backend for its best schedules under its model, measures the best of all of them and every
family's hand rule, and keeps the fastest verified one (never worse than the hand rules);
``--method hand`` uses the hand rules alone; ``--method beam`` runs BEAM from the hand rules'
schedule within the budget; ``--method z3+beam`` refines the solvers' pick with BEAM. The
report names each family's proof status and the outside library (numpy / torch) timed on the
same kernel. The result is stored in the kernel cache (``--cache PATH``, ``--no-cache``).

``--budget S`` bounds the whole command's wall time (load, solve, compile, verify, time, BEAM,
the outside library, the cache): the engine gets the deadline (``tune(..., deadline=)``) and
stops starting candidates when it would pass; the report says the wall time, whether the
budget held and what was skipped. It can be exceeded by the one measurement in flight at
the deadline and by the hand rules' measurement, which is always made (the baseline)."""
from __future__ import annotations

import argparse
import json
import time

from superopt.backends.base import get
from superopt.cache import Cache, CacheError
from superopt.cli import UserError
from superopt.commands.args import nonneg_int, positive_float
from superopt.engine import METHODS, Result, add_outside_baseline, tune
from superopt.engine.store import store
from superopt.io import KernelFileError, load_kernel
from superopt.ir.kernel import Kernel
from superopt.progress import progress_for
from superopt.validate import ValidationError, check_fits

HELP = "tune a kernel file: pick a schedule, verify it against the reference, time it"


def _us(s: float | None) -> str: return "-" if s is None else f"{s * 1e6:,.1f} us"


def family_lines(m: Result) -> list[str]:
    """One line per schedule family: how it solved, its proof status, what it measured."""
    out = []
    for f in m.families:
        if f.get("method") is None:
            out.append(f"  family {f['family']}: solver failed ({f.get('error', 'no answer')})")
            continue
        proof = "optimum proved under its model" if f["proved_optimal"] else \
            f"not proved (bound {_us(f['bound_s'])})" if f.get("bound_s") else "not proved, no bound"
        ok = [t["time_s"] for t in f["measured"] if t["time_s"]]
        out.append(f"  family {f['family']}: {f['method']} in {f['solve_s']:.2f} s, {proof}; modeled best "
                   f"{_us(f['modeled_best_s'])}; measured {len(f['measured'])}"
                   + (f", fastest {_us(min(ok))}" if ok else ""))
    return out


def report(m: Result) -> str:
    k = m.kernel
    lines = [f"kernel {k.name}  [{k.kind}]  key {k.key}",
             "axes: " + "  ".join(f"{'r' if a.reduce else 'o'}{i}={a.size}" for i, a in enumerate(k.axes)) +
             f"   flops {k.flops:,}   min bytes {k.min_bytes:,}",
             f"backend: {m.backend}   method: {m.method}" + (f" ({m.family} family)" if m.family else "")
             + (f" — {m.extra['method_note']}" if m.extra.get("method_note") else ""),
             f"schedule: {m.schedule.describe(k)}",
             f"schedule json: {m.schedule.to_json()}",
             f"verified: {'yes' if m.verified else 'NO'}" + (f" (relative error {m.rel_err:.2g})" if m.verified else f" — {m.reason}")]
    if m.measured_s:
        lines.append(f"time: {m.measured_s * 1e6:,.1f} us (median of {len(m.samples)})   "
                     f"{m.gflops:,.2f} GFLOP/s   {m.gbps:,.2f} GB/s")
    if m.extra.get("packets"):
        lines.append(f"counted: {m.extra['packets']:,} packets, {m.extra.get('instructions', 0):,} instructions, "
                     f"{m.extra.get('hvx_instructions', 0):,} HVX; {m.extra['macs_per_packet']:.2f} MACs/packet "
                     f"(time = packets / {m.extra.get('clock_hz', 0) / 1e9:g} GHz, {m.extra.get('clock_source', '')})")
    if m.extra.get("time_model"): lines.append(f"time model: {m.extra['time_model']}")
    if m.modeled_s: lines.append(f"modeled: {m.modeled_s * 1e6:,.1f} us")
    if m.baseline_s and m.method != "hand" and m.measured_s:
        lines.append(f"hand rules: {m.baseline_s * 1e6:,.1f} us ({m.baseline_s / m.measured_s:.2f}x slower)")
    out = m.extra.get("outside")
    if out: lines.append(f"{out['library']}: {_us(out['time_s'])}, {out['ratio']} ({out['how']})" if out.get("ratio")
                         else f"outside baseline: {out['reason'] or 'not timed'}")
    if m.extra.get("solver"):
        sv = m.extra["solver"]
        lines.append(f"solver: {sv['method']} over {len(m.families)} famil{'y' if len(m.families) == 1 else 'ies'}, "
                     f"{'the optimum over all of them proved' if sv['proved_optimal'] else 'the optimum over all of them not proved'}"
                     f"{' (' + sv['joint']['method'] + ')' if sv.get('joint') else ''} in {sv['solve_s']:.2f} s")
        lines += family_lines(m)
    for c in m.extra.get("solver", {}).get("candidates", []):
        t = _us(c["time_s"]) if c["time_s"] else f"failed: {c['reason'][:80]}"
        lines.append(f"  candidate ({c['family']}): modeled {_us(c['modeled_s'])}, measured {t}")
    for kind, what in (("split_k", "split-K into {splits}"), ("relayout", "channels-last copies, then the kernel"),
                       ("split_fp32", "bf16 pieces ({pieces} an operand), then one bf16 GEMM over {products} products")):
        if not m.extra.get(kind): continue
        p = m.extra[kind]
        lines.append(what.format(**p) + ": " + (f"{p['time_s'] * 1e6:,.1f} us measured ({p['steps']} kernels), "
                     + ("faster: the runtime runs the plan" if p["faster"] else "slower: kept whole") if p["verified"]
                     else f"failed: {p['reason']}") + f"; modeled {p['modeled_s'] * 1e6:,.1f} us")
    if m.extra.get("beam"):
        b = m.extra["beam"]
        lines.append(f"beam: {b['timed']} schedules timed in {b['elapsed_s']:.1f} s ({b['failures']} failed)"
                     + (f", {b['overrun_s']:.1f} s over its {b['budget_s']:.1f} s budget" if b.get("overrun_s") else ""))
    lines.append(f"tuning: {m.tuning_s:.2f} s")
    if m.extra.get("budget"): lines.append(budget_line(m.extra["budget"]))
    if m.extra.get("cache"): lines.append(f"cache: {m.extra['cache']}")
    return "\n".join(lines)


def budget_line(b: dict) -> str:
    """The wall time against ``--budget``, and what the deadline left out."""
    if b["held"]: held = f"within the {b['budget_s']:g} s budget"
    else:
        why = f"the hand rules' measurement, always made, took {b['hand_measurement_s']:.1f} s" \
            if b["hand_measurement_s"] >= b["budget_s"] / 2 else \
            f"the measurement in flight at the deadline; the longest took {b['longest_measurement_s']:.1f} s"
        held = f"{b['wall_s'] - b['budget_s']:.1f} s over the {b['budget_s']:g} s budget ({why})"
    skipped = f"; skipped at the deadline: {b['skipped']} candidate(s)" if b["skipped"] else ""
    extra = [w for w in b["skipped_what"] if w in ("plan", "outside baseline")]
    return f"wall time: {b['wall_s']:.2f} s, {held}{skipped}" + (f" and the {' and the '.join(extra)}" if extra else "")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a .pkl or .json kernel file")
    p.add_argument("--backend", default="cpu", help="backend to tune for: cpu, cuda, emu, hexagon (default: cpu)")
    p.add_argument("--step", type=nonneg_int, metavar="I", help="tune step I of a multi-kernel file (default: its main kernel)")
    p.add_argument("--method", choices=METHODS, default="z3",
                   help="z3 (default): every schedule family's best candidates, measured, vs the hand rules; hand: "
                        "hand rules alone; beam: BEAM search timed on the device; z3+beam: BEAM refining the solvers' pick")
    p.add_argument("--cache", metavar="PATH", help="kernel cache file (default: the user's cache dir)")
    p.add_argument("--no-cache", action="store_true", help="do not store the result in the kernel cache")
    p.add_argument("--no-baseline", action="store_true", help="do not time the outside library (numpy / torch)")
    p.add_argument("--budget", type=positive_float, default=10.0, metavar="S", help="wall-time budget of the whole tune in seconds (default 10): the solve, "
                   "every candidate's compile, verification and timing, BEAM and the outside library; candidates that "
                   "would start past it are skipped (the one in flight and the hand rules' measurement may overrun it)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def load(args) -> Kernel:
    try:
        return load_kernel(args.file, args.step)
    except KernelFileError as e:
        raise UserError(str(e)) from None


def get_backend(name: str):
    try:
        return get(name)
    except (ValueError, RuntimeError) as e:
        raise UserError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    deadline = t0 + args.budget
    k = load(args)
    be = get_backend(args.backend)
    try:
        warning = fits(k, be.machine, args)
        with progress_for(args, "tune") as progress:
            progress.deadline = deadline
            m = tune(k, be, args.method, args.budget, progress=progress, deadline=deadline)
            if not args.no_baseline:
                progress(0, 1, "outside baseline: time the vendor library")
                add_outside_baseline(m, deadline=deadline)
    finally:
        be.close()
    if not args.no_cache and m.verified:
        m.extra["cache"] = _store(k, m, args.backend, args.cache)
    if warning: m.extra["warnings"] = [warning]
    wall = time.monotonic() - t0
    m.extra["budget"] = {"budget_s": args.budget, "wall_s": wall, "held": wall <= args.budget, **m.extra["budget"]}
    print(json.dumps(m.to_json()) if args.json else report(m))
    return 0 if m.verified else 1


def fits(k: Kernel, machine, args) -> str | None:
    """``validate.check_fits`` before compiling: a kernel whose buffers exceed the machine's
    memory is a one-line error; one modeled past a minute a run is a warning (stderr, unless
    -q; in ``--json`` under "warnings")."""
    try:
        warning = check_fits(k, machine)
    except ValidationError as e:
        raise UserError(str(e)) from None
    if warning and getattr(args, "verbosity", 0) >= 0:
        import sys
        print(f"superopt {getattr(args, 'command', 'tune')}: warning: {warning}", file=sys.stderr)
    return warning


def _store(k: Kernel, m: Result, backend: str, path: str | None) -> str:
    """Put the verified result (and every measured candidate) into the kernel cache; returns
    where (or why not). A kernel measured faster as a plan stores its steps too: the runtime
    then runs the plan (superopt/runtime.py), each step with its stored schedule."""
    try:
        with Cache(path) as c:
            store(c, k, m, backend)
            where = str(c.path) if hasattr(c, "path") else "stored"
            return f"{where} (its plan's steps: measured faster)" if m.plan_parts else where
    except (CacheError, OSError) as e:
        return f"not stored: {e}"
