"""``superopt tune FILE``: choose a schedule for a kernel, verify it and time it.

``--method z3`` (the default) asks the Z3 solver (search/z3opt) for its top candidates,
verifies and times each of them and the hand rules' schedule, and keeps the fastest
verified one, so it is never worse than the hand rules; a solver failure falls back to the
hand rules and the output says why. ``--method hand`` uses the hand rules alone;
``--method beam`` runs BEAM (search/beam) from the hand rules' schedule within the budget;
``--method z3+beam`` refines the solver's pick with BEAM. The result is stored in the
kernel cache (``--cache PATH``, ``--no-cache``)."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field

from superopt.commands.args import nonneg_int, positive_float
from superopt.ir.kernel import Kernel
from superopt.ir.schedule import Schedule

HELP = "tune a kernel file: pick a schedule, verify it against the reference, time it"
METHOD_NOTE = "hand rules (asked for with --method hand)"


@dataclass
class Measured:
    """A schedule checked and timed on a backend."""
    kernel: Kernel
    backend: str
    schedule: Schedule
    method: str
    verified: bool
    reason: str = ""                # why not verified
    measured_s: float | None = None  # median
    samples: tuple[float, ...] = ()
    tuning_s: float = 0.0
    rel_err: float = 0.0
    modeled_s: float | None = None         # the cost model's time for this schedule (solver methods)
    baseline_s: float | None = None        # the hand rules' measured time
    baseline_method: str | None = None
    extra: dict = field(default_factory=dict)
    plan_parts: list = field(default_factory=list)  # (kernel, Measured) of each step of a plan measured faster

    @property
    def gflops(self) -> float | None:
        return self.kernel.flops / self.measured_s / 1e9 if self.measured_s else None

    @property
    def gbps(self) -> float | None:
        return self.kernel.min_bytes / self.measured_s / 1e9 if self.measured_s else None

    def to_json(self) -> dict:
        return {"kernel": self.kernel.key, "name": self.kernel.name, "kind": self.kernel.kind, "backend": self.backend,
                "method": self.method, "schedule": self.schedule.to_dict(), "verified": self.verified,
                "reason": self.reason, "rel_err": self.rel_err, "time_s": self.measured_s,
                "samples_s": list(self.samples), "gflops": self.gflops, "gbps": self.gbps, "tuning_s": self.tuning_s,
                "modeled_s": self.modeled_s, "baseline_s": self.baseline_s, "baseline_method": self.baseline_method,
                **self.extra}


def measure(kernel: Kernel, schedule: Schedule, backend, method: str, seed: int | None = None,
            runs: int = 15, inputs: list | None = None) -> Measured:
    """Verify on ``inputs`` (default: fresh random ones), then time on them (median of ``runs``
    runs). Never raises for a bad candidate."""
    import numpy as np
    from superopt.ir.lower import LoweringError, lower
    from superopt.verify import poison, random_inputs, verify_compiled
    m = Measured(kernel, backend.name, schedule, method, False)
    try:
        program = lower(kernel, schedule, backend.machine)
    except LoweringError as e:
        m.reason = f"illegal schedule: {e}"
        return m
    compiled = backend.compile(program)
    if not hasattr(compiled, "handle"):
        m.reason = str(compiled)
        return m
    rng = np.random.default_rng(seed)
    inputs = random_inputs(kernel, rng) if inputs is None else inputs
    v = verify_compiled(kernel, compiled, backend, rng, inputs)
    m.verified, m.reason, m.rel_err = v.ok, v.reason, v.rel_err
    if not v.ok: return m
    t = backend.time(compiled, [a.reshape(-1) for a in inputs], poison(kernel.output), runs=runs)
    if hasattr(t, "median_s"):
        m.measured_s, m.samples = t.median_s, t.samples
        counters = dict(getattr(t, "counters", None) or {})   # e.g. the Hexagon backend's qemu counts
        if counters.get("packets"):
            counters["macs_per_packet"] = kernel.flops / 2 / counters["packets"]
        m.extra.update(counters)
    else:
        m.verified, m.reason = False, f"timing failed: {t}"
    return m


def tune_kernel(kernel: Kernel, backend="cpu", budget_s: float = 10.0, machine=None, method: str = "hand") -> Measured:
    """Pick a schedule for ``kernel`` on ``backend`` (a name or a Backend), verify and time it."""
    import numpy as np
    from superopt.backends.base import get
    from superopt.search.hand import hand_schedule
    from superopt.verify import random_inputs
    if method not in METHODS: raise ValueError(f"unknown method {method!r} (methods: {', '.join(METHODS)})")
    own = isinstance(backend, str)
    be = get(backend, machine) if own else backend
    try:
        t0 = time.perf_counter()
        # one input set for every candidate (hand, solver, BEAM): drawn once, its reference computed
        # once (superopt.verify.InputSet); per candidate both took most of a tuning of a GB kernel
        inputs = random_inputs(kernel, np.random.default_rng())
        hand = measure(kernel, hand_schedule(kernel, be.machine), be, "hand", inputs=inputs)
        hand.baseline_s, hand.baseline_method = hand.measured_s, "hand"
        if method == "hand":
            best = hand
            best.extra["method_note"] = METHOD_NOTE
        elif method == "beam":
            best = _beam(kernel, be, budget_s, hand, None, inputs)
        else:
            best = _solver(kernel, be, budget_s if method == "z3" else budget_s / 2, hand, inputs)
            if method == "z3+beam":
                best = _beam(kernel, be, max(1.0, budget_s - (time.perf_counter() - t0)), hand, best, inputs)
        _plan(kernel, be, best)
        best.tuning_s = time.perf_counter() - t0
        return best
    finally:
        if own: be.close()


METHODS = ("z3", "hand", "beam", "z3+beam")


def _beam(kernel: Kernel, be, budget_s: float, hand: Measured, start: Measured | None, inputs: list) -> Measured:
    """BEAM from the hand rules' schedule (or refining ``start``); kept only if it measures
    faster, verified, than what we already have."""
    from superopt.search import beam
    base = start or hand
    try:
        r = beam.refine(kernel, be, base.schedule, budget_s=budget_s, inputs=inputs) if start is not None else \
            beam.beam(kernel, be, budget_s=budget_s, inputs=inputs)
    except Exception as e:  # a search failure must not take tuning down
        base.extra["method_note"] = f"{base.method} (BEAM failed: {type(e).__name__}: {' '.join(str(e).split())[:200]})"
        return base
    info = {"steps": r.steps, "timed": r.timed, "failures": len(r.failures), "elapsed_s": r.elapsed_s,
            "budget_s": r.budget_s, "overrun_s": r.overrun_s}
    if not r.verified or r.best == base.schedule:
        base.extra["beam"] = info
        return base
    m = measure(kernel, r.best, be, "z3+beam" if start is not None else "beam", inputs=inputs)
    if not (m.verified and m.measured_s and (base.measured_s is None or m.measured_s < base.measured_s)):
        base.extra["beam"] = info
        return base
    m.baseline_s, m.baseline_method = hand.measured_s, "hand"
    m.extra.update({k: v for k, v in base.extra.items() if k == "solver"})
    m.extra["beam"] = info
    return m


def _plan(kernel: Kernel, be, best: Measured) -> None:
    """On a GPU, the model's plan of a GEMM or convolution (search/plan.py: split-K for a
    tensor-core GEMM leaving SMs idle, bf16 pieces for an fp32 GEMM, channels-last copies for
    a convolution; the runtime runs it as its steps) measured against ``best``: each step
    verified and timed on its own (their sum: one launch each, intermediates written and
    read). Recorded in ``best.extra[plan.kind]``, with the steps' results."""
    if not be.machine.sm or kernel.kind not in ("gemm", "conv") or not best.measured_s:
        return
    from superopt.search.plan import best as plan_of
    plan = plan_of(kernel, be.machine)
    if plan is None: return
    parts = [measure(x.kernel, x.schedule, be, plan.kind) for x in plan.steps]
    ok = all(p.verified and p.measured_s for p in parts)
    t = sum(p.measured_s for p in parts) if ok else None
    faster = bool(ok and t < best.measured_s)
    best.extra[plan.kind] = {**_jsonable(plan.detail), "steps": len(parts), "modeled_s": plan.modeled_s, "time_s": t,
                             "verified": ok, "faster": faster,
                             "reason": None if ok else next(p.reason for p in parts if not (p.verified and p.measured_s))}
    if faster: best.plan_parts = [(x.kernel, p) for x, p in zip(plan.steps, parts)]


def _jsonable(detail: dict) -> dict:
    """A plan's detail for JSON (relayout orders keyed by input slot)."""
    return {k: ({str(a): list(b) for a, b in v.items()} if isinstance(v, dict) else v) for k, v in detail.items()}


def _solver(kernel: Kernel, be, budget_s: float, hand: Measured, inputs: list) -> Measured:
    """The fastest verified of the solver's candidates and the hand rules' schedule."""
    try:
        from superopt.search.z3opt import solve
        r = solve(kernel, be.machine, timeout_s=max(1.0, budget_s / 2))
    except Exception as e:  # the solver is one candidate source; it must not take tuning down
        hand.extra["method_note"] = f"hand rules (the Z3 solver failed: {type(e).__name__}: {' '.join(str(e).split())[:200]})"
        return hand
    tried = []
    best = hand
    for c in r.candidates:
        m = measure(kernel, c.schedule, be, "z3", inputs=inputs)
        m.modeled_s = c.modeled_s
        tried.append({"schedule": c.schedule.to_dict(), "modeled_s": c.modeled_s, "verified": m.verified,
                      "time_s": m.measured_s, "reason": m.reason})
        if m.verified and m.measured_s and (best.measured_s is None or m.measured_s < best.measured_s):
            best = m
    best.baseline_s, best.baseline_method = hand.measured_s, "hand"
    best.extra.update({"solver": {"method": r.method, "proved_optimal": r.proved_optimal, "solve_s": r.solve_s, "fallback": r.fallback,
                                  "candidates": tried}})
    if best is hand: best.extra["method_note"] = "hand rules (no solver candidate measured faster)"
    return best


def report(m: Measured) -> str:
    k = m.kernel
    lines = [f"kernel {k.name}  [{k.kind}]  key {k.key}",
             "axes: " + "  ".join(f"{'r' if a.reduce else 'o'}{i}={a.size}" for i, a in enumerate(k.axes)) +
             f"   flops {k.flops:,}   min bytes {k.min_bytes:,}",
             f"backend: {m.backend}   method: {m.method}" + (f" — {m.extra['method_note']}" if m.extra.get("method_note") else ""),
             f"schedule: {m.schedule.describe(k)}",
             f"schedule json: {m.schedule.to_json()}",
             f"verified: {'yes' if m.verified else 'NO'}" + (f" (relative error {m.rel_err:.2g})" if m.verified else f" — {m.reason}")]
    if m.measured_s:
        lines.append(f"time: {m.measured_s * 1e6:,.1f} us (median of {len(m.samples)})   "
                     f"{m.gflops:,.2f} GFLOP/s   {m.gbps:,.2f} GB/s")
    if m.modeled_s: lines.append(f"modeled: {m.modeled_s * 1e6:,.1f} us")
    if m.baseline_s and m.method != "hand": lines.append(f"hand rules: {m.baseline_s * 1e6:,.1f} us "
                                                         f"({m.baseline_s / m.measured_s:.2f}x slower)")
    if m.extra.get("solver"):
        sv = m.extra["solver"]
        lines.append(f"solver: {sv.get('method', 'z3')} over the cost model, {'optimum proved' if sv['proved_optimal'] else 'optimum not proved'}"
                     f" in {sv['solve_s']:.2f} s" + (f" ({sv['fallback']})" if sv.get("fallback") else ""))
    for c in m.extra.get("solver", {}).get("candidates", []):
        t = f"{c['time_s'] * 1e6:,.1f} us" if c["time_s"] else f"failed: {c['reason'][:80]}"
        lines.append(f"  solver candidate: modeled {c['modeled_s'] * 1e6:,.1f} us, measured {t}")
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
    if m.extra.get("cache"): lines.append(f"cache: {m.extra['cache']}")
    return "\n".join(lines)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a .pkl or .json kernel file")
    p.add_argument("--backend", default="cpu", help="backend to tune for (default: cpu)")
    p.add_argument("--step", type=nonneg_int, metavar="I", help="tune step I of a multi-kernel file (default: its main kernel)")
    p.add_argument("--method", choices=METHODS, default="z3",
                   help="z3 (default): the solver's top candidates, measured, vs the hand rules; hand: hand rules "
                        "alone; beam: BEAM search timed on the device; z3+beam: BEAM refining the solver's pick")
    p.add_argument("--cache", metavar="PATH", help="kernel cache file (default: the user's cache dir)")
    p.add_argument("--no-cache", action="store_true", help="do not store the result in the kernel cache")
    p.add_argument("--budget", type=positive_float, default=10.0, metavar="S", help="tuning budget in seconds (solver time)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def load(args) -> Kernel:
    from superopt.cli import UserError
    from superopt.io import KernelFileError, load_kernel
    try:
        return load_kernel(args.file, args.step)
    except KernelFileError as e:
        raise UserError(str(e)) from None


def get_backend(name: str):
    from superopt.backends.base import get
    from superopt.cli import UserError
    try:
        return get(name)
    except (ValueError, RuntimeError) as e:
        raise UserError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    k = load(args)
    be = get_backend(args.backend)
    try:
        m = tune_kernel(k, be, args.budget, method=args.method)
    finally:
        be.close()
    if not args.no_cache and m.verified:
        m.extra["cache"] = _store(k, m, args.backend, args.cache)
    print(json.dumps(m.to_json()) if args.json else report(m))
    return 0 if m.verified else 1


def _store(k: Kernel, m: Measured, backend: str, path: str | None) -> str:
    """Put the verified result into the kernel cache; returns where (or why not). A kernel
    measured faster as a plan (split-K, relayout, split fp32) stores its steps too: the runtime then
    runs the plan (superopt/runtime.py), each step with its stored schedule."""
    from superopt.cache import Cache, CacheError
    from superopt.tune_cache import entries_of
    try:
        with Cache(path) as c:
            for e in entries_of(k, m, backend, None): c.put(e)
            where = str(c.path) if hasattr(c, "path") else "stored"
            return f"{where} (its plan's steps: measured faster)" if m.plan_parts else where
    except (CacheError, OSError) as e:
        return f"not stored: {e}"
