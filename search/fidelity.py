"""Model fidelity: how well the cost model ranks the schedules of a kernel, measured.

``sample`` draws a spread of distinct legal schedules from the space: the solver's
top-k, the hand rules, neighbours of the solver's pick (one BEAM action away) and
random legal schedules taken at evenly spaced ranks of their modeled times (so the
sample covers the model's whole range, not just its favourites). The tuning engine's
``superopt.engine.fidelity.measure_kernel`` verifies and times each one (this module
measures nothing: it is the model-only half). ``KernelFidelity`` reports
the Spearman rank correlation of modeled against measured times, the measured rank of
the model's top-1, and how far the model's top-1 of the solver's top-k is from the best
measured of that top-k. ``calibrate`` fits a few ``cost.Params`` constants to such
measurements (a coordinate search on multiplicative steps) for ``machine.notes['cost']``.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields, replace
from typing import Iterable, Sequence

import numpy as np

from ..ir.kernel import Kernel
from ..ir.schedule import Schedule
from . import cost
from .hand import hand_schedule
from .machine import save_calibration
from .space import Space, build
from .z3opt import solve


# ---- statistics (one Spearman for model fidelity and the bench reports, superopt/report.py) ----
def ranks(x: Iterable[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    a = np.asarray(list(x), dtype=np.float64)
    order = np.argsort(a, kind="stable")
    r = np.empty(len(a))
    r[order] = np.arange(1, len(a) + 1)
    for v in np.unique(a):
        tie = a == v
        if tie.sum() > 1: r[tie] = r[tie].mean()
    return r


def spearman(x: Iterable[float], y: Iterable[float]) -> float | None:
    """Spearman rank correlation (Pearson on tie-averaged ranks); None for < 3 points or a constant side."""
    rx, ry = ranks(x), ranks(y)
    if len(rx) < 3 or rx.std() == 0 or ry.std() == 0: return None
    return float(np.corrcoef(rx, ry)[0, 1])


SOURCES = ("z3", "hand", "neighbour", "random")
CALIBRATED = ("loop_cycles", "overlap_loss", "l2_load_cost", "max_streams", "cache_bytes", "fma_latency", "add_latency")
GPU_CALIBRATED = ("mem_latency_s", "sm_bw_share", "l2_bw_factor", "combine_s", "l1_lines_per_cycle")   # the GPU model's constants
STEPS = (0.25, 0.5, 0.7, 1.4, 2.0, 4.0)      # multiplicative moves of the calibration search
BOUNDS = {"overlap_loss": (0.0, 1.0), "l2_load_cost": (1.0, 16.0), "loop_cycles": (0.0, 16.0),
          "max_streams": (1.0, 64.0), "fma_latency": (1.0, 32.0), "add_latency": (0.5, 16.0),
          "cache_bytes": (32 * 1024.0, 64 * 2.0**20), "mem_latency_s": (1e-8, 2e-6), "sm_bw_share": (1.0, 8.0),
          "l2_bw_factor": (1.0, 8.0), "combine_s": (1e-9, 2e-6), "l1_lines_per_cycle": (0.05, 4.0)}


def calibrated(machine) -> tuple[str, ...]:
    """The ``cost.Params`` constants ``calibrate`` fits for ``machine``'s model."""
    return GPU_CALIBRATED if machine.is_simt else CALIBRATED


# ---- the sample ---------------------------------------------------------------------------
@dataclass
class Point:
    """One schedule of the sample, modeled and (once measured) timed."""
    schedule: Schedule
    source: str
    modeled_s: float
    measured_s: float | None = None   # the statistic ranked: median, or fastest, of the runs
    verified: bool = False
    reason: str = ""
    samples: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {"schedule": self.schedule.to_dict(), "source": self.source, "modeled_s": self.modeled_s,
                "measured_s": self.measured_s, "verified": self.verified, "reason": self.reason,
                "samples_s": list(self.samples)}


def _random_legal(sp: Space, rnd: random.Random) -> Schedule | None:
    s = sp.schedule([rnd.randrange(len(o)) for o in sp.axis_options], rnd.choice(sp.vectors),
                    rnd.choice(sp.workers), rnd.choice(sp.orders))
    if sp.legal(s): return s
    s = replace(s, vector=1)   # most illegal draws only break the vector width
    return s if sp.legal(s) else None


def sample(kernel: Kernel, machine, n: int = 50, top_k: int = 4, seed: int = 0, timeout_s: float = 10.0,
           space: Space | None = None, solved: list | None = None) -> tuple[list[Point], list[Schedule]]:
    """``n`` distinct legal schedules (fewer when the space is smaller) and the solver's top-k
    (its ``SolveResult`` is appended to ``solved`` when given)."""
    if n < 1: raise ValueError(f"need at least one schedule, got n={n}")
    sp = space or build(kernel, machine)
    f, p = cost.facts(kernel), cost.params(machine)
    val = lambda s: cost.modeled_time(kernel, s, machine, f, p)  # noqa: E731
    rnd = random.Random(seed)
    out: dict[Schedule, Point] = {}

    def add(s: Schedule, source: str) -> None:
        if len(out) < n and s not in out and sp.legal(s): out[s] = Point(s, source, val(s))

    r = solve(kernel, machine, top_k=top_k, timeout_s=timeout_s, space=sp)
    if solved is not None: solved.append(r)
    top = [c.schedule for c in r.candidates]
    for s in top: add(s, "z3")
    add(hand_schedule(kernel, machine), "hand")
    near = sp.neighbors(top[0]) if sp.contains(top[0]) else []
    for s in rnd.sample(near, min(len(near), max(0, n // 4))): add(s, "neighbour")
    pool: dict[Schedule, float] = {}
    for _ in range(40 * n):   # a wide random pool, then evenly spaced modeled ranks of it
        s = _random_legal(sp, rnd)
        if s is not None and s not in out: pool.setdefault(s, val(s))
    ranked = sorted(pool, key=pool.get)
    want = n - len(out)
    if want > 0 and ranked:
        picks = sorted({round(i * (len(ranked) - 1) / max(1, want - 1)) for i in range(want)})
        for i in picks: add(ranked[i], "random")
        for s in ranked:   # duplicates of the spacing on a small pool: fill from the rest
            if len(out) >= n: break
            add(s, "random")
    return list(out.values()), top


# ---- measurement and figures ------------------------------------------------------------------
@dataclass
class KernelFidelity:
    kernel: Kernel
    points: list[Point]
    top: list[Schedule] = field(default_factory=list)   # the solver's top-k, best modeled first
    solve_s: float | None = None

    @property
    def ok(self) -> list[Point]: return [q for q in self.points if q.verified and q.measured_s]

    def spearman(self) -> float | None:
        ok = self.ok
        return spearman([q.modeled_s for q in ok], [q.measured_s for q in ok])

    def top1_rank(self) -> int | None:
        """Measured rank (1 = fastest) of the model's favourite among the verified points."""
        ok = self.ok
        if not ok: return None
        best = min(ok, key=lambda q: q.modeled_s)
        return 1 + sum(q.measured_s < best.measured_s for q in ok)

    def topk_gap(self) -> float | None:
        """Measured time of the model's top-1 within the solver's top-k over the best
        measured of that top-k, minus 1 (0 = the model picked the fastest)."""
        topk = [q for q in self.ok if q.schedule in set(self.top)]
        if not topk: return None
        first = min(topk, key=lambda q: q.modeled_s)
        return first.measured_s / min(q.measured_s for q in topk) - 1.0

    def noise(self) -> dict:
        """How far apart the schedules measure, against how much one schedule's runs scatter:
        where the scatter is as wide as the spread, no model can rank them (report both)."""
        ms = sorted(q.measured_s for q in self.ok)
        runs = sorted(max(q.samples) / min(q.samples) for q in self.ok if q.samples and min(q.samples) > 0)
        at = lambda xs, f: xs[min(len(xs) - 1, int(f * len(xs)))]  # noqa: E731
        return {"spread_p90_over_p10": at(ms, 0.9) / at(ms, 0.1) if ms else None,
                "runs_max_over_min_median": at(runs, 0.5) if runs else None}

    def remodel(self, machine, p: cost.Params) -> list[float]:
        """Modeled seconds of the verified points under other parameters (those of the
        SIMT model: tensor-core and staged points keep their own models' times)."""
        f = cost.facts(self.kernel)
        return [cost.modeled_time(self.kernel, q.schedule, machine, f, p) for q in self.ok]

    def to_dict(self) -> dict:
        k = self.kernel
        return {"kernel": k.name, "key": k.key, "kind": k.kind, "axes": [a.size for a in k.axes],
                "schedules": len(self.points), "verified": len(self.ok), "spearman": self.spearman(),
                "top1_measured_rank": self.top1_rank(), "top1_gap_in_topk": self.topk_gap(),
                "solve_s": self.solve_s, **self.noise(),
                "topk": [s.to_dict() for s in self.top], "points": [q.to_dict() for q in self.points]}


# ---- calibration ------------------------------------------------------------------------------
def score(results: Sequence[KernelFidelity], machine, p: cost.Params) -> float:
    """Mean per-kernel Spearman under ``p`` (kernels with too few points count as 0)."""
    rhos = []
    for r in results:
        rho = spearman(r.remodel(machine, p), [q.measured_s for q in r.ok]) if len(r.ok) >= 3 else None
        rhos.append(rho if rho is not None else 0.0)
    return sum(rhos) / len(rhos) if rhos else 0.0


def calibrate(results: Sequence[KernelFidelity], machine, names: Sequence[str] | None = None,
              rounds: int = 3) -> tuple[cost.Params, float, float]:
    """Coordinate search over ``names`` (multiplicative steps, clamped to sane bounds) for the
    parameters maximizing the mean per-kernel Spearman. Returns (params, score before, after)."""
    names = calibrated(machine) if names is None else names
    known = {f.name for f in fields(cost.Params)}
    bad = [x for x in names if x not in known]
    if bad: raise ValueError(f"unknown cost parameter(s) {', '.join(bad)}")
    if not any(len(r.ok) >= 3 for r in results): raise ValueError("calibration needs >= 3 verified timings of a kernel")
    p = cost.params(machine)
    before = best = score(results, machine, p)
    for _ in range(rounds):
        moved = False
        for name in names:
            lo, hi = BOUNDS.get(name, (0.0, math.inf))
            for step in STEPS:
                v = min(hi, max(lo, getattr(p, name) * step))
                if v == getattr(p, name): continue
                q = replace(p, **{name: v})
                s = score(results, machine, q)
                if s > best + 1e-6: p, best, moved = q, s, True
        if not moved: break
    return p, before, best


def store(machine, p: cost.Params, names: Sequence[str] | None = None):
    """Save the fitted constants in the machine's calibration (``notes['cost']``); returns the path."""
    names = calibrated(machine) if names is None else names
    notes = dict(machine.notes or {})
    notes["cost"] = {**notes.get("cost", {}), **{x: getattr(p, x) for x in names}}
    return save_calibration(replace(machine, notes=notes))
