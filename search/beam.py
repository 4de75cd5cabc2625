"""BEAM search over schedule actions, every candidate timed on the device by a runner.

Actions are the space's neighbour moves (``Space.neighbors``): re-split one axis over
the levels, change the vector width, the workers or the loop order. Each step times
every new neighbour of the beam (up to ``max_candidates``, chosen at random or by the
cost model), keeps the ``width`` fastest, and stops when a step finds nothing faster,
after ``max_steps`` or when ``budget_s`` is spent. A candidate that fails to lower,
compile or run is recorded and skipped. The pick is checked against the reference by the
runner; a pick that fails is dropped for the next fastest.

BEAM does not lower, compile, run or verify anything itself: a ``Runner`` (the strategy /
runner split of TVM's MetaSchedule) times a schedule and checks a timed one; the tuning
engine passes one over a backend (``superopt.engine.measure.BackendRunner``).

The budget covers the whole search, verification included: every candidate is timed on
one input set, whose reference is computed once (before the search) and reused to check
the pick, and a candidate is started only when the time it is expected to take (the
median of those timed so far) plus one more for checking the pick still fits. What a
search still spends past the budget (a slow first timing, a pick that fails its check) is
reported as ``overrun_s``.

Uses: the fallback where the Z3 model does not apply, ``refine`` from the Z3 solution,
and the pure-BEAM baseline of the benchmarks (same space, same timer).
"""
from __future__ import annotations

import math
import random
import statistics
import time as _time
from dataclasses import dataclass, field
from typing import Callable

from typing import Protocol

from ..ir.kernel import Kernel
from ..ir.schedule import Schedule, check
from . import cost
from .hand import hand_schedule
from .space import Space, build

_clock = _time.monotonic   # the search's clock (a test steps it by hand)


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
    budget_s: float = math.inf
    verify_s: float = 0.0     # of elapsed_s: the reference and the checks of the pick

    @property
    def overrun_s(self) -> float:
        """Seconds spent past the budget (0 when it was kept)."""
        return max(0.0, self.elapsed_s - self.budget_s)

    def to_dict(self) -> dict:
        return {"schedule": self.best.to_dict(), "time_s": self.best_s, "start_schedule": self.start.to_dict(),
                "start_s": self.start_s, "verified": self.verified, "verify_reason": self.verify_reason,
                "steps": self.steps, "timed": self.timed, "elapsed_s": self.elapsed_s, "budget_s": self.budget_s,
                "overrun_s": self.overrun_s, "verify_s": self.verify_s, "history": self.history,
                "failures": [{"schedule": f.schedule.to_dict(), "reason": f.reason} for f in self.failures]}


class Runner(Protocol):
    """What BEAM needs of a device: ``machine``; ``prepare()`` computes the reference of the
    input set every candidate is timed on (counted in the budget); ``time(s)`` lowers,
    compiles and times ``s`` (a ``Timed``; ``time_s`` None and a reason when it fails);
    ``check(s)`` checks a timed ``s`` against the reference (None, or why it is wrong)."""
    machine: object

    def prepare(self) -> None: ...
    def time(self, s: Schedule) -> Timed: ...
    def check(self, s: Schedule) -> str | None: ...


class Timer:
    """The runner's timings of one search, memoized, with the wall time each candidate took."""
    def __init__(self, runner: Runner):
        self.runner = runner
        self.memo: dict[Schedule, Timed] = {}
        self.costs: list[float] = []

    def __call__(self, s: Schedule) -> Timed:
        if s not in self.memo:
            t0 = _clock()
            self.memo[s] = self.runner.time(s)
            self.costs.append(_clock() - t0)
        return self.memo[s]

    def expected_s(self) -> float:
        """What timing one more candidate is expected to take (median so far)."""
        return statistics.median(self.costs) if self.costs else 0.0


def beam(kernel: Kernel, runner: Runner, start: Schedule | None = None, width: int = 4, max_steps: int = 8,
         budget_s: float = 60.0, max_candidates: int = 32, rank: str = "random",
         progress: Callable[[dict], None] | None = None, space: Space | None = None, seed: int = 0,
         verify: bool = True) -> BeamResult:
    """BEAM from ``start`` (the hand rules' schedule when None).

    ``rank``: which neighbours to time when there are more than ``max_candidates`` per
    step: "random" (the pure-BEAM baseline) or "model" (the cost model's best first, for
    refining a solver result). ``seed`` drives that random choice; ``runner`` times every
    candidate on one input set and checks the pick on it."""
    t0 = _clock()
    machine = runner.machine
    sp = space or build(kernel, machine)
    if start is None: start = hand_schedule(kernel, machine)
    if check(kernel, start, machine): raise ValueError(f"start schedule is illegal: {check(kernel, start, machine)}")
    timer = Timer(runner)
    verify_s = _reference(runner) if verify else 0.0
    rnd = random.Random(seed)
    f = cost.facts(kernel)
    first = timer(start)
    if first.time_s is None: raise ValueError(f"start schedule does not run: {first.reason}")
    beam_: list[Timed] = [first]
    history, steps = [first.time_s], 0
    # time left for one more candidate and for checking the pick (about one more candidate)
    fits = lambda: _clock() - t0 + (2 if verify else 1) * timer.expected_s() <= budget_s  # noqa: E731
    while steps < max_steps and fits():
        steps += 1
        fresh = {n for b in beam_ for n in sp.neighbors(b.schedule)} - set(timer.memo)
        cands = _pick(sorted(fresh, key=lambda s: s.to_json()), max_candidates, rank, rnd, kernel, machine, f)
        for i, s in enumerate(cands):
            if not fits(): break
            r = timer(s)
            if progress: progress({"step": steps, "done": i + 1, "of": len(cands), "time_s": r.time_s,
                                   "best_s": min(b.time_s for b in beam_), "elapsed_s": _clock() - t0})
        ok = [t for t in timer.memo.values() if t.time_s is not None]
        new = sorted(ok, key=lambda t: t.time_s)[:width]
        improved = new[0].time_s < beam_[0].time_s
        beam_ = new
        history.append(beam_[0].time_s)
        if not improved: break
    return _finish(timer, start, first.time_s, steps, history, t0, verify, budget_s, verify_s)


def _reference(runner: Runner) -> float:
    """Compute the input set's reference now (inside the budget, before the search); its seconds."""
    t = _clock()
    runner.prepare()
    return _clock() - t


def _pick(cands: list[Schedule], n: int, rank: str, rnd: random.Random, kernel, machine, f) -> list[Schedule]:
    if len(cands) <= n: return cands
    if rank == "model":
        p = cost.params(machine)
        val = lambda s: float(cost.time(cost.NUMERIC, f, cost.vars_of(s), machine, p))  # noqa: E731
        return sorted(cands, key=val)[:n]
    return rnd.sample(cands, n)


def _finish(timer: Timer, start: Schedule, start_s: float, steps: int, history: list[float],
            t0: float, verify: bool, budget_s: float, verify_s: float) -> BeamResult:
    """The fastest timed schedule that verifies (checked on the timer's input set, against
    its reference); the fastest timed, unverified, when none of the first 8 does."""
    ranked = sorted((t for t in timer.memo.values() if t.time_s is not None), key=lambda t: t.time_s)
    failures = [t for t in timer.memo.values() if t.time_s is None]
    best, reason, ok = ranked[0], "", not verify
    if verify:
        tv = _clock()
        for t in ranked[:8]:
            why = timer.runner.check(t.schedule)
            if why is None:
                best, ok, reason = t, True, ""
                break
            failures.append(Timed(t.schedule, None, f"wrong: {why}"))
            reason = why
        verify_s += _clock() - tv
    return BeamResult(best.schedule, best.time_s, start, start_s, ok, reason if not ok else "", steps,
                      len(timer.memo), failures, _clock() - t0, history, budget_s, verify_s)


def refine(kernel: Kernel, runner: Runner, solution: Schedule, budget_s: float = 30.0, **kw) -> BeamResult:
    """BEAM from a solver's schedule, timing the model's favourite neighbours first."""
    kw.setdefault("rank", "model")
    return beam(kernel, runner, start=solution, budget_s=budget_s, **kw)
