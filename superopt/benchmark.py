"""The research benchmark behind ``superopt bench``: hand rules vs the Z3 solver vs BEAM
(vs vendor libraries) on the same kernels, with the same timer, in one run.

What is timed: every kernel (step) of every workload is tuned by every method and then
verified and timed with the tuning engine's ``measure`` (fresh random inputs checked against
the reference interpreter, then the backend's timer: median of ``repeat`` samples). A
workload's time under a method is the sum of its steps' medians; vendor baselines
(``superopt.vendor``) time the whole workload as one call. A schedule that did not verify
has no time: it is reported as unverified and never counted as a win.

Tuning time of a method is its wall time end to end: choosing, compiling, verifying and
timing its candidates. For z3 that is the solve of every schedule family that applies
(``engine.strategies.solve_families``, the budget shared among them) plus measuring the
top-k of all families ranked by modeled time (and each family's best), the fastest
verified of which is its answer (the hand rules are not among them: z3 is compared with
them); ``modeled_s`` is its family's modeled time, ``solve_s`` the families' solve time and
``families`` the proof status of each.
BEAM (``search.beam``) gets the budget; its progress callback gives the trace of best
measured time against elapsed tuning time. z3+beam refines the z3 answer with BEAM for
the budget left after z3 (at least a fifth of it); its trace starts at z3's point.
"""
from __future__ import annotations

import math
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import numpy as np
import z3

from superopt import vendor
from superopt.backends.cpu import compiler
from superopt.engine import BackendRunner, measure
from superopt.engine import strategies
from superopt.engine.result import Result as Measured
from superopt.ir.kernel import Kernel
from superopt.ir.schedule import Schedule
from superopt.kernels.registry import Workload
from superopt.search import beam
from superopt.search import cost
from superopt.search.hand import hand_schedule
from superopt.verify import random_inputs

TUNERS = ("hand", "z3", "beam", "z3+beam")
VENDORS = tuple(vendor.VENDORS)      # numpy (cpu), torch (cuda)
TINYGRAD = ("tinygrad-hand", "tinygrad-beam")
METHODS = TUNERS + TINYGRAD + VENDORS
Z3_TOP_K = 4
MIN_REFINE_FRACTION = 0.2  # z3+beam: BEAM keeps at least this share of the budget


@dataclass(frozen=True)
class Config:
    suites: tuple[str, ...]
    backend: str
    methods: tuple[str, ...]
    budget_s: float = 10.0
    repeat: int = 15
    small: bool = False
    command: str = ""
    only: tuple[str, ...] = ()   # workload names to keep (all when empty)
    ceilings: Any = None         # Machine whose peak and bandwidth make the roofline (None: the backend's)

    @property
    def tuners(self) -> list[str]: return [m for m in TUNERS if m in self.methods]
    @property
    def baselines(self) -> list[str]:
        """Whole-workload baselines: tinygrad's own kernels, vendor libraries."""
        return [m for m in TINYGRAD + VENDORS if m in self.methods]


def parse_methods(text: str) -> tuple[str, ...]:
    """Comma-separated method names -> tuple (ValueError with the known names)."""
    ms = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in ms if m not in METHODS]
    if bad or not ms:
        raise ValueError(f"unknown method(s) {', '.join(bad) or '(none)'} (known: {', '.join(METHODS)})")
    return tuple(dict.fromkeys(ms))


# ---- one kernel, one method --------------------------------------------------------------
@dataclass
class Trace:
    """Best measured seconds so far against elapsed tuning seconds (BEAM's progress)."""
    points: list[tuple[float, float]] = field(default_factory=list)

    def add(self, elapsed_s: float, best_s: float | None) -> None:
        if best_s is None or not math.isfinite(best_s): return
        if not self.points or best_s < self.points[-1][1]: self.points.append((elapsed_s, best_s))


def run_hand(k: Kernel, be, cfg: Config, inputs: list | None = None) -> Measured:
    t0 = time.perf_counter()
    m = measure(k, hand_schedule(k, be.machine), be, "hand", runs=cfg.repeat, inputs=inputs)
    m.tuning_s = time.perf_counter() - t0
    return m


def run_z3(k: Kernel, be, cfg: Config, inputs: list | None = None) -> Measured:
    """Every family solves, the top-k over all families (and each family's best) are measured,
    the fastest verified kept (the model's top-1 when none verifies). Raises when no family's
    solver answered."""
    t0 = time.perf_counter()
    sv = strategies.solve_families(k, be.machine, cfg.budget_s, Z3_TOP_K)
    if not sv.solved or not sv.ranked():
        raise RuntimeError("no schedule family's solver answered: " + "; ".join(f"{n}: {e}" for n, e in sv.errors.items()))
    if inputs is None: inputs = random_inputs(k, np.random.default_rng())  # one set for all candidates
    run = strategies.Run(k, be, inputs, cfg.repeat)
    jr = strategies._joint(run, sv, time.monotonic() + max(0.5, cfg.budget_s - (time.perf_counter() - t0)))
    picks = sv.picks(Z3_TOP_K)
    ms = [run.measure(c.schedule, "z3", name, c.modeled_s) for name, c in picks]
    ok = [i for i, m in enumerate(ms) if m.verified and m.measured_s]
    pick = min(ok, key=lambda i: ms[i].measured_s) if ok else 0
    best = ms[pick]
    best.tuning_s = time.perf_counter() - t0
    best.families = strategies.family_report(sv, run)
    best.extra.update(
        solve_s=sum(s.solve_s for s in sv.solved.values()), solve_method="+".join(sorted({s.method for s in sv.solved.values()})),
        proved_optimal=bool(jr and jr.proved_optimal), joint=jr.to_dict() if jr else None,
        fallback="; ".join(f"{n}: {s.detail['fallback']}" for n, s in sv.solved.items() if s.detail.get("fallback")) or None,
        model_rank=pick,
        candidates=[{"modeled_s": c.modeled_s, "time_s": m.measured_s, "verified": m.verified, "family": name,
                     "schedule": c.schedule.to_dict()} for (name, c), m in zip(picks, ms)])
    return best


def run_beam(k: Kernel, be, cfg: Config, start: Measured | None = None, budget_s: float | None = None,
             t_offset: float = 0.0, inputs: list | None = None) -> Measured:
    """``search.beam`` for ``budget_s`` (default: the budget): pure BEAM from the hand rules,
    or ``refine`` from ``start``'s schedule. The trace (best time so far against elapsed
    tuning time, shifted by ``t_offset``, the time spent before BEAM started) comes from
    BEAM's progress callback, in BEAM's own measurements: compare it with ``trace_start_s``,
    BEAM's time of its start schedule, never with other timings (two timings of one
    sub-microsecond kernel can differ by tens of per cent). BEAM verifies only its pick,
    so the trace is clamped at the verified pick's time: an unverified candidate never
    shows as a win."""
    budget = cfg.budget_s if budget_s is None else budget_s
    method = "z3+beam" if start is not None else "beam"
    trace = Trace()
    rec = _Recorder(be, k)
    events: list[tuple[float, float]] = []

    def progress(ev: dict) -> None:
        if ev.get("time_s") is not None: events.append((t_offset + ev["elapsed_s"], ev["time_s"]))

    t0 = time.perf_counter()
    try:
        runner = BackendRunner(k, rec, inputs=inputs)
        if start is None: res = beam.beam(k, runner, budget_s=budget, progress=progress)
        else: res = beam.refine(k, runner, _nest(start, k, be), budget_s=budget, progress=progress)
    except ValueError as e:  # BEAM could not start (its start schedule does not run)
        m = Measured(k, be.name, start.schedule if start else hand_schedule(k, be.machine), method, False, f"beam: {e}")
        m.tuning_s = t_offset + time.perf_counter() - t0
        return m
    m = measure(k, res.best, be, method, runs=cfg.repeat, inputs=inputs)
    m.tuning_s = t_offset + time.perf_counter() - t0
    # the start was timed before any candidate (pure BEAM) or is z3's answer (refine)
    trace.add(t_offset if start is not None else (events[0][0] if events else m.tuning_s), res.start_s)
    floor = res.best_s if res.verified else math.inf
    for e, t in events: trace.add(e, max(t, floor))
    m.extra.update(trace=trace.points, trace_start_s=res.start_s, evaluated=rec.timed, beam_steps=res.steps,
                   beam_timed=res.timed, beam_verified=res.verified, beam_elapsed_s=res.elapsed_s,
                   beam_overrun_s=res.overrun_s)
    return m


def _nest(start: Measured, k: Kernel, be) -> Schedule:
    """BEAM refines loop nests: a native template's pick (a family's packed GEMM) is refined
    from the fastest loop nest among the solver's candidates, else the hand rules'."""
    if not start.schedule.family: return start.schedule
    nests = [c for c in start.extra.get("candidates", []) if c["verified"] and c["time_s"] and "family" not in c["schedule"]]
    best = min(nests, key=lambda c: c["time_s"]) if nests else None
    return Schedule.from_dict(best["schedule"]) if best else hand_schedule(k, be.machine)


class _Recorder:
    """The backend, passed through, keeping each timed schedule's median (the model-fidelity
    points of the run). BEAM's progress events carry times but not schedules."""
    def __init__(self, be, kernel: Kernel):
        self._be, self._k, self.timed = be, kernel, []

    def __getattr__(self, name: str): return getattr(self._be, name)

    def time(self, compiled, inputs, out, **kw):
        t = self._be.time(compiled, inputs, out, **kw)
        s = getattr(compiled.program, "schedule", None)
        if hasattr(t, "median_s") and s is not None:
            self.timed.append({"schedule": s.to_dict(), "time_s": t.median_s,
                               "modeled_s": _modeled(self._k, s, self._be.machine)})
        return t


def run_z3_beam(k: Kernel, be, cfg: Config, z3: Measured | None, inputs: list | None = None) -> Measured:
    z3 = z3 if z3 is not None and "solve_s" in z3.extra else run_z3(k, be, cfg, inputs)
    left = max(cfg.budget_s * MIN_REFINE_FRACTION, cfg.budget_s - z3.tuning_s)
    m = run_beam(k, be, cfg, start=z3, budget_s=left, t_offset=z3.tuning_s, inputs=inputs)
    if z3.verified and (not m.verified or (m.measured_s or math.inf) > (z3.measured_s or math.inf)):
        m.extra["refine_slower_than_z3"] = True  # re-measured slower than z3's own measurement (timer noise)
    m.extra.update(solve_s=z3.extra.get("solve_s"), z3_time_s=z3.measured_s)
    return m


# ---- records -------------------------------------------------------------------------------
def throughput(flops: float, nbytes: float, seconds: float | None, machine) -> tuple[float | None, str]:
    """GFLOP/s for compute-heavy work (intensity past the machine's ridge), else GB/s."""
    if not seconds: return None, ""
    ridge = machine.flops_fp32 / machine.dram_bw
    if flops / max(1, nbytes) >= ridge / 4: return flops / seconds / 1e9, "GFLOP/s"
    return nbytes / seconds / 1e9, "GB/s"


def method_record(m: Measured, k: Kernel, machine, roof_s: float, ceilings) -> dict:
    d = m.to_json()
    d.pop("samples_s", None)
    d["describe"] = m.schedule.describe(k)
    d["model_s"] = m.modeled_s if m.modeled_s is not None else _modeled(k, m.schedule, machine)  # of the schedule it ended with
    t = m.measured_s if m.verified else None
    d["time_s"] = t
    d["rate"], d["rate_unit"] = throughput(k.flops, k.min_bytes, t, ceilings)
    d["roofline_pct"] = 100.0 * roof_s / t if t else None
    return d


def _modeled(k: Kernel, s: Schedule, machine) -> float | None:
    """The loop-nest model's time (native templates are priced by their family, in ``modeled_s``)."""
    if s.family: return None
    try:
        return cost.modeled_time(k, s, machine)
    except Exception:  # a schedule the model does not cover keeps its measurement
        return None


def kernel_record(k: Kernel, step: int, machine) -> dict:
    roof = cost.roofline_s(k, machine)
    return {"name": k.name, "key": k.key, "step": step, "kind": k.kind, "flops": k.flops, "min_bytes": k.min_bytes,
            "intensity": k.flops / max(1, k.min_bytes), "roofline_s": roof, "methods": {}}


def bench_kernel(k: Kernel, step: int, be, cfg: Config) -> dict:
    """Every tuner on ``k``. They share one random input set and its reference, drawn and
    computed first (``inputs_s``, counted in no method's tuning time: each pays the same)."""
    ceilings = cfg.ceilings or be.machine
    rec = kernel_record(k, step, ceilings)
    got: dict[str, Measured] = {}
    t0 = time.perf_counter()
    inputs = random_inputs(k, np.random.default_rng())
    inputs.reference(k)
    rec["inputs_s"] = time.perf_counter() - t0
    for name in cfg.tuners:
        t0 = time.perf_counter()
        try:
            if name == "hand": got[name] = run_hand(k, be, cfg, inputs)
            elif name == "z3": got[name] = run_z3(k, be, cfg, inputs)
            elif name == "beam": got[name] = run_beam(k, be, cfg, inputs=inputs)
            elif name == "z3+beam": got[name] = run_z3_beam(k, be, cfg, got.get("z3"), inputs)
        except Exception as e:  # a method that breaks on one kernel is recorded against it; the run goes on
            got[name] = Measured(k, be.name, Schedule.naive(k), name, False, f"{name} failed: {_where(e)}")
            got[name].tuning_s = time.perf_counter() - t0
        rec["methods"][name] = method_record(got[name], k, be.machine, rec["roofline_s"], ceilings)
    hand = rec["methods"].get("hand", {}).get("time_s")
    for d in rec["methods"].values():
        d["speedup_vs_hand"] = hand / d["time_s"] if hand and d["time_s"] else None
    return rec


def bench_workload(w: Workload, suite: str, be, cfg: Config, log: Callable[[str], None]) -> dict:
    kernels = []
    for i, k in enumerate(w.kernels):
        rec = bench_kernel(k, i, be, cfg)
        kernels.append(rec)
        log(progress_line(suite, rec, cfg))
    methods = {}
    for name in cfg.tuners:
        ts = [r["methods"][name]["time_s"] for r in kernels]
        methods[name] = {"time_s": sum(ts) if all(ts) else None, "verified": all(ts),
                         "tuning_s": sum(r["methods"][name]["tuning_s"] for r in kernels)}
    for name in cfg.baselines:
        methods[name] = _baseline(name, w, cfg, be)
    if cfg.baselines:
        log(f"{suite:9s} {w.name[:44]:44s} (whole workload) " + "  ".join(
            f"{n} {_us(methods[n]['time_s']) if methods[n]['time_s'] else 'n/a'}" for n in cfg.baselines))
    roof = sum(r["roofline_s"] for r in kernels)
    hand = methods.get("hand", {}).get("time_s")
    for d in methods.values():
        d["speedup_vs_hand"] = hand / d["time_s"] if hand and d["time_s"] else None
        d["roofline_pct"] = 100.0 * roof / d["time_s"] if d["time_s"] else None
    return {"suite": suite, "workload": w.name, "kind": w.kind,
            "params": {n: getattr(v, "name", v) for n, v in w.args.items()},
            "timed": "the only kernel" if len(kernels) == 1 else f"all {len(kernels)} steps (sum of per-kernel medians)",
            "flops": w.flops, "min_bytes": w.min_bytes, "roofline_s": roof, "kernels": kernels, "methods": methods}


def _where(e: BaseException) -> str:
    """The exception and the innermost place it was raised (for the report)."""
    tb = traceback.extract_tb(e.__traceback__)
    root = str(Path(__file__).resolve().parent.parent)
    ours = [f for f in tb if f.filename.startswith(root)]  # the last frame in this project, then the library's
    frames = ([ours[-1]] if ours else []) + ([tb[-1]] if tb and (not ours or tb[-1] is not ours[-1]) else [])
    at = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in reversed(frames))
    return f"{type(e).__name__}: {e}" + (f" (at {at})" if at else "")


def _baseline(name: str, w: Workload, cfg: Config, be) -> dict:
    """A whole-workload baseline; a library failing on one workload is recorded, not fatal."""
    try:
        if name in TINYGRAD:
            r = vendor.tinygrad_run(w, cfg.backend, 2 if name == "tinygrad-beam" else 0, cfg.repeat)
            return r or {"time_s": None, "verified": None, "tuning_s": 0.0, "reason": "no tinygrad equivalent"}
        return {"time_s": vendor.vendor_time(name, w, cfg.repeat, be.machine), "verified": None, "tuning_s": 0.0}
    except Exception as e:
        print(f"  {name} failed on {w.name}: {type(e).__name__}: {e}", file=sys.stderr)
        return {"time_s": None, "verified": False, "tuning_s": 0.0, "reason": f"{type(e).__name__}: {e}"}


def progress_line(suite: str, rec: dict, cfg: Config) -> str:
    parts = []
    for name, d in rec["methods"].items():
        t = d["time_s"]
        s = f"{name} {_us(t)}" if t else f"{name} UNVERIFIED"
        if name != "hand" and d.get("speedup_vs_hand"): s += f" ({d['speedup_vs_hand']:.2f}x)"
        parts.append(s + f" [{d['tuning_s']:.1f}s]")
    return f"{suite:9s} {rec['name'][:44]:44s} " + "  ".join(parts)


def _us(t: float) -> str: return f"{t * 1e6:.3g}us"


# ---- a whole run ------------------------------------------------------------------------------
def run(cfg: Config, be, workloads: list[tuple[str, Workload]], log: Callable[[str], None] = print,
        checkpoint: Callable[[dict], None] | None = None) -> dict:
    """Benchmark ``workloads`` ((suite, workload) pairs) on backend ``be``; the JSON document.
    ``checkpoint`` gets the document so far (``partial``: true) after every workload, so a run
    stopped early keeps what it measured."""
    t0 = time.time()
    doc = {"tool": "superopt bench", "command": cfg.command, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "wall_s": 0.0, "config": {"suites": list(cfg.suites), "backend": cfg.backend,
                                     "methods": list(cfg.methods), "budget_s": cfg.budget_s,
                                     "repeat": cfg.repeat, "small": cfg.small, "only": list(cfg.only)},
           "machine": be.machine.to_dict(), "roofline": _ceilings(cfg.ceilings or be.machine), "device": getattr(be, "device", None), "host": host_info(),
           "versions": versions(cfg), "notes": NOTES, "workloads": [], "partial": True}
    for s, w in workloads:
        doc["workloads"].append(bench_workload(w, s, be, cfg, log))
        doc["wall_s"] = time.time() - t0
        if checkpoint: checkpoint(doc)
    doc["partial"] = False
    return doc


def _ceilings(m) -> dict:
    return {"flops_fp32": m.flops_fp32, "dram_bw": m.dram_bw, "calibrated": m.calibrated}


NOTES = [
    "time: median of `repeat` samples of the backend's timer (cpu: timed inside the compiled code; "
    "cuda: CUDA events, L2 flushed before each launch); a workload's time is the sum of its kernels' medians",
    "every schedule is verified on fresh random inputs against the reference interpreter before it is timed; "
    "an unverified result has no time and never counts as a win",
    "vendor baselines time the whole workload as one library call (numpy: wall clock around the reference "
    "function on float32 arrays, Python overhead included; torch: CUDA events, L2 flushed)",
    "% roofline: max(flops / peak FLOP/s, compulsory bytes / DRAM bandwidth) over the measured time, with the "
    "ceilings in `roofline` (measured in this run with --calibrate, else the machine's: stored calibration or "
    "datasheet); the cost model and solver always use `machine`",
    "tuning time: wall time of the method end to end (solve or search, compile, verify, time its candidates); "
    "the kernel's random inputs and their reference are drawn once before any method and shared (inputs_s)",
]


def host_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip(); break  # noqa: E702
    except OSError:
        pass
    return info


def versions(cfg: Config) -> dict:
    out = {"numpy": np.__version__, "z3": z3.get_version_string()}
    try:
        out["superopt"] = version("superopt")
    except Exception:
        pass
    out["git"] = _git_head()
    for mod in ("matplotlib", "torch", "tinygrad", "scipy"):
        v = getattr(sys.modules.get(mod), "__version__", None)
        if v: out[mod] = v
    if cfg.backend == "cpu":
        try:
            cc = compiler()
            out["cc"] = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
        except Exception:
            pass
    return out


def _git_head() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None
    except Exception:
        return None
