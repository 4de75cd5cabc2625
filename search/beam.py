"""BEAM search over schedule actions, every candidate timed on the backend.

Actions are the space's neighbour moves (``Space.neighbors``): re-split one axis over
the levels, change the vector width, the workers or the loop order. Each step times
every new neighbour of the beam (up to ``max_candidates``, chosen at random or by the
cost model), keeps the ``width`` fastest, and stops when a step finds nothing faster,
after ``max_steps`` or when ``budget_s`` is spent. A candidate that fails to lower,
compile or run is recorded and skipped. The pick is verified against the reference
(``superopt.verify``); a pick that fails is dropped for the next fastest.

Uses: the fallback where the Z3 model does not apply, ``refine`` from the Z3 solution,
and the pure-BEAM baseline of the benchmarks (same space, same timer).
"""
from __future__ import annotations

import random
import time as _time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..ir.kernel import Kernel
from ..ir.lower import LoweringError, lower
from ..ir.schedule import Schedule, check
from . import cost
from .space import Space, build


@dataclass
class Timed:
    schedule: Schedule
    time_s: float | None      # median; None when it failed
    reason: str = ""          # why it failed


@dataclass
class BeamResult:
    best: Schedule
    best_s: float
    start: Schedule
    start_s: float
    verified: bool
    verify_reason: str
    steps: int
    timed: int                # candidates compiled and timed
    failures: list[Timed]
    elapsed_s: float
    history: list[float] = field(default_factory=list)   # best time after each step

    def to_dict(self) -> dict:
        return {"schedule": self.best.to_dict(), "time_s": self.best_s, "start_schedule": self.start.to_dict(),
                "start_s": self.start_s, "verified": self.verified, "verify_reason": self.verify_reason,
                "steps": self.steps, "timed": self.timed, "elapsed_s": self.elapsed_s, "history": self.history,
                "failures": [{"schedule": f.schedule.to_dict(), "reason": f.reason} for f in self.failures]}


class Timer:
    """Times schedules of one kernel on one backend, on fixed random inputs, with a memo."""
    def __init__(self, kernel: Kernel, backend, runs: int = 5, seed: int = 0):
        from superopt.verify import poison, random_inputs
        self.kernel, self.backend, self.runs = kernel, backend, runs
        self.inputs = [a.reshape(-1) for a in random_inputs(kernel, np.random.default_rng(seed))]
        self.out = poison(kernel.output)
        self.memo: dict[Schedule, Timed] = {}

    def __call__(self, s: Schedule) -> Timed:
        if s not in self.memo: self.memo[s] = self._time(s)
        return self.memo[s]

    def _time(self, s: Schedule) -> Timed:
        try:
            program = lower(self.kernel, s, self.backend.machine)
        except LoweringError as e:
            return Timed(s, None, f"illegal: {e}")
        except Exception as e:  # a lowering bug must not take the search down
            return Timed(s, None, f"lowering failed: {type(e).__name__}: {e}")
        compiled = self.backend.compile(program)
        if not hasattr(compiled, "handle"): return Timed(s, None, str(compiled))
        t = self.backend.time(compiled, self.inputs, self.out, warmup=1, runs=self.runs)
        if not hasattr(t, "median_s"): return Timed(s, None, str(t))
        return Timed(s, t.median_s)


def beam(kernel: Kernel, backend, start: Schedule | None = None, width: int = 4, max_steps: int = 8,
         budget_s: float = 60.0, max_candidates: int = 32, rank: str = "random", runs: int = 5,
         progress: Callable[[dict], None] | None = None, space: Space | None = None, seed: int = 0,
         verify: bool = True) -> BeamResult:
    """BEAM from ``start`` (the hand rules' schedule when None).

    ``rank``: which neighbours to time when there are more than ``max_candidates`` per
    step: "random" (the pure-BEAM baseline) or "model" (the cost model's best first, for
    refining a solver result)."""
    t0 = _time.monotonic()
    machine = backend.machine
    sp = space or build(kernel, machine)
    if start is None:
        from .hand import hand_schedule
        start = hand_schedule(kernel, machine)
    if check(kernel, start, machine): raise ValueError(f"start schedule is illegal: {check(kernel, start, machine)}")
    timer = Timer(kernel, backend, runs=runs, seed=seed)
    rnd = random.Random(seed)
    f = cost.facts(kernel)
    first = timer(start)
    if first.time_s is None: raise ValueError(f"start schedule does not run: {first.reason}")
    beam_: list[Timed] = [first]
    history, steps = [first.time_s], 0
    out_of_time = lambda: _time.monotonic() - t0 > budget_s  # noqa: E731
    while steps < max_steps and not out_of_time():
        steps += 1
        fresh = {n for b in beam_ for n in sp.neighbors(b.schedule)} - set(timer.memo)
        cands = _pick(sorted(fresh, key=lambda s: s.to_json()), max_candidates, rank, rnd, kernel, machine, f)
        for i, s in enumerate(cands):
            if out_of_time(): break
            r = timer(s)
            if progress: progress({"step": steps, "done": i + 1, "of": len(cands), "time_s": r.time_s,
                                   "best_s": min(b.time_s for b in beam_), "elapsed_s": _time.monotonic() - t0})
        ok = [t for t in timer.memo.values() if t.time_s is not None]
        new = sorted(ok, key=lambda t: t.time_s)[:width]
        improved = new[0].time_s < beam_[0].time_s
        beam_ = new
        history.append(beam_[0].time_s)
        if not improved: break
    return _finish(kernel, backend, timer, start, first.time_s, steps, history, t0, verify)


def _pick(cands: list[Schedule], n: int, rank: str, rnd: random.Random, kernel, machine, f) -> list[Schedule]:
    if len(cands) <= n: return cands
    if rank == "model":
        p = cost.params(machine)
        val = lambda s: float(cost.time(cost.NUMERIC, f, cost.vars_of(s), machine, p))  # noqa: E731
        return sorted(cands, key=val)[:n]
    return rnd.sample(cands, n)


def _finish(kernel, backend, timer: Timer, start: Schedule, start_s: float, steps: int, history: list[float],
            t0: float, verify: bool) -> BeamResult:
    """The fastest timed schedule that verifies (the start when none does)."""
    from superopt.verify import verify as verify_schedule
    ranked = sorted((t for t in timer.memo.values() if t.time_s is not None), key=lambda t: t.time_s)
    failures = [t for t in timer.memo.values() if t.time_s is None]
    best, reason, ok = ranked[0], "", not verify
    if verify:
        for t in ranked[:8]:
            v = verify_schedule(kernel, t.schedule, backend)
            if v.ok:
                best, ok, reason = t, True, ""
                break
            failures.append(Timed(t.schedule, None, f"wrong: {v.reason}"))
            reason = v.reason
    return BeamResult(best.schedule, best.time_s, start, start_s, ok, reason if not ok else "", steps,
                      len(timer.memo), failures, _time.monotonic() - t0, history)


def refine(kernel: Kernel, backend, solution: Schedule, budget_s: float = 30.0, **kw) -> BeamResult:
    """BEAM from a solver's schedule, timing the model's favourite neighbours first."""
    kw.setdefault("rank", "model")
    return beam(kernel, backend, start=solution, budget_s=budget_s, **kw)
