"""Where candidate schedules come from: the hand rules, the schedule families' solvers
(``z3``), BEAM timed on the device (``beam``), and BEAM refining the solvers' pick
(``z3+beam``). Each strategy measures its candidates through one ``Run`` (one input set,
one reference, every measurement recorded) and returns the fastest verified ``Result``.

Under a deadline (``Run.deadline``, a ``time.monotonic()`` instant: the CLI's ``--budget``
bounds the whole tune), a candidate is started only while the time left covers what one
measurement has taken so far (the median of their wall times); the ones not started are
counted in ``Run.skipped``. What can still run past the deadline is the one measurement in
flight, and the hand rules' measurement, which is always made (it is the baseline)."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from superopt.ir.kernel import Kernel
from superopt.ir.schedule import Schedule
from superopt.search import beam as beam_search
from superopt.search import families as fam
from superopt.search import joint
from superopt.search.hand import hand_schedule
from superopt.validate import modeled_hand_s

from .measure import BackendRunner, measure
from .result import Result, Tried

Progress = Callable[[int, "int | None", str], None]
TOP = 4          # candidates measured from the ranking of all families (plus each family's best)


def quiet(done: int, total: int | None, what: str = "") -> None: return None


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


@dataclass
class Run:
    """One tuning run's shared state: the kernel, the backend, the input set every candidate
    is checked and timed on, and every measurement made (``tried``); under a ``deadline``,
    the wall seconds of each measurement (``walls``) and what was not started (``skipped``).
    ``phase``, ``done`` and ``total`` are what progress says while a candidate is measured."""
    kernel: Kernel
    be: object
    inputs: list
    runs: int = 15
    progress: Progress = quiet
    tried: list[Tried] = field(default_factory=list)
    deadline: float | None = None
    walls: list[float] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    phase: str = "measure"
    estimate_s: float | None = None    # modeled seconds of one run of the first candidate (the hand rules')
    done: int = 0
    total: int | None = None

    def left_s(self) -> float:
        """Seconds to the deadline (inf without one; negative once it has passed)."""
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def expected_s(self) -> float:
        """What one more measurement is expected to take: the median wall time of the
        candidates after the first (the hand rules', whose schedule may be far slower); with
        the first alone, its compile and verification plus the fewest timed runs (3 and 2
        warm-up) at its seconds a run, as ``_runs`` would cut them."""
        if len(self.walls) > 1: return statistics.median(self.walls[1:])
        if not self.walls: return 0.0
        first = self.tried[0]
        if not first.time_s: return self.walls[0]
        return max(0.0, self.walls[0] - (first.samples + 2) * first.time_s) + 5 * first.time_s

    def fits(self) -> bool:
        return self.left_s() >= self.expected_s()

    def measure(self, s: Schedule, method: str, family: str = "", modeled_s: float | None = None) -> Result:
        t0 = time.monotonic()
        who = f" ({family or method})"
        step = lambda what: self.progress(self.done, self.total, f"{self.phase}: {what}{who}")  # noqa: E731
        m = measure(self.kernel, s, self.be, method, runs=self._runs(), inputs=self.inputs, family=family, step=step,
                    time_allowance_s=self._allowance_s())
        self.walls.append(time.monotonic() - t0)
        m.modeled_s = modeled_s
        self.tried.append(Tried(s, method, family, modeled_s, m.verified, m.measured_s if m.verified else None,
                                len(m.samples), "" if m.verified else m.reason))
        return m

    def _allowance_s(self) -> float | None:
        """The timing's share of the time left (None without a deadline): a third for the
        first measurement (the hand rules'), else an equal share for each still to come."""
        if self.deadline is None: return None
        share = 3 if not self.tried else max(1, (self.total or 1) - self.done)
        return max(0.0, self.left_s()) / share

    def measure_in_budget(self, s: Schedule, method: str, family: str = "", modeled_s: float | None = None) -> Result | None:
        """``measure``, or None (counted in ``skipped``) when the deadline leaves no time for it."""
        if not self.fits():
            self.skipped.append(f"{method} {family}".strip())
            return None
        return self.measure(s, method, family, modeled_s)

    def _runs(self) -> int:
        """Timed runs of the next candidate: ``runs``, fewer (at least 3) where the deadline
        would not hold that many for each candidate still to measure (the first measurement,
        the hand rules', tells the seconds of one run and of the rest: compile, verify). The
        first itself gets what a third of the time left holds at its modeled seconds a run."""
        if self.deadline is None: return self.runs
        if not self.tried:
            return self.runs if not self.estimate_s else max(3, min(self.runs, int(self.left_s() / 3 / self.estimate_s)))
        if not self.tried[0].time_s: return self.runs
        first = self.tried[0]
        overhead = max(0.0, self.walls[0] - (first.samples + 2) * first.time_s)
        fit = int((self.left_s() / max(1, (self.total or 1) - self.done) - overhead) / first.time_s)
        return max(3, min(self.runs, fit))


def faster(a: Result, b: Result | None) -> bool:
    """``a`` verified and measured faster than ``b`` (or ``b`` has no time)."""
    return bool(a.verified and a.measured_s and (b is None or not b.verified or b.measured_s is None
                                                 or a.measured_s < b.measured_s))


# ---- hand rules ------------------------------------------------------------------------------
def hand(run: Run) -> Result:
    """The hand rules' schedule (``search.hand``): the baseline every other method is held to."""
    run.phase, run.done, run.total = "hand rules", 0, 1
    if run.deadline is not None: run.estimate_s = modeled_hand_s(run.kernel, run.be.machine)
    m = run.measure(hand_schedule(run.kernel, run.be.machine), "hand")
    run.progress(1, 1, "hand rules: measured")
    m.baseline_s, m.baseline_method = m.measured_s, "hand"
    return m


# ---- the families' solvers ---------------------------------------------------------------------
@dataclass
class Solve:
    """What the families said about a kernel: each applicable family's ``Solved`` (or why its
    solve failed) and its hand rule."""
    families: list
    solved: dict[str, fam.Solved]
    errors: dict[str, str]
    hands: dict[str, Schedule]

    def ranked(self) -> list[tuple[str, fam.Candidate]]:
        """Every family's candidates, ranked by modeled time (one problem over all families)."""
        out = [(n, c) for n, s in self.solved.items() for c in s.candidates]
        return sorted(out, key=lambda x: x[1].modeled_s)

    def picks(self, top: int = TOP) -> list[tuple[str, fam.Candidate]]:
        """The ``top`` best modeled over all families, and each family's best (every family measured)."""
        ranked = self.ranked()
        chosen = ranked[:top] + [(n, s.candidates[0]) for n, s in self.solved.items() if s.candidates]
        seen: set[Schedule] = set()
        return [(n, c) for n, c in chosen if not (c.schedule in seen or seen.add(c.schedule))]


def solve_families(kernel: Kernel, machine, budget_s: float, top: int = TOP) -> Solve:
    """Each family that applies solves within its share of the budget (what is left over the
    families left: time a fast family does not use goes to the next); a family whose solve
    fails is recorded (never fatal)."""
    fams = fam.applicable(kernel, machine)
    solved, errors, hands = {}, {}, {}
    t0 = time.monotonic()
    for i, f in enumerate(fams):
        share = max(0.5, (budget_s - (time.monotonic() - t0)) / (len(fams) - i))
        try:
            solved[f.name] = f.solve(kernel, machine, timeout_s=share, top=top)
        except Exception as e:  # one family's solver must not take tuning down
            errors[f.name] = _why(e)
        try:
            h = f.hand(kernel, machine)
        except Exception as e:
            h, errors[f.name + ".hand"] = None, _why(e)
        if h is not None: hands[f.name] = h
    return Solve(fams, solved, errors, hands)


def family_report(sv: Solve, run: Run) -> list[dict]:
    """Per family: how it solved, whether its optimum is proved (or its bound), and its
    candidates as measured in this run."""
    out = []
    for f in sv.families:
        s = sv.solved.get(f.name)
        d = {"family": f.name, "method": s.method if s else None, "proved_optimal": bool(s and s.proved_optimal),
             "bound_s": s.bound_s if s else None, "solve_s": s.solve_s if s else None,
             "modeled_best_s": s.candidates[0].modeled_s if s and s.candidates else None,
             "measured": [t.to_dict() for t in run.tried if t.family == f.name]}
        if f.name in sv.errors: d["error"] = sv.errors[f.name]
        if s and s.detail: d["detail"] = {k: v for k, v in s.detail.items() if isinstance(v, (str, int, float, bool))}
        out.append(d)
    return out


def z3(run: Run, budget_s: float, base: Result, top: int = TOP) -> Result:
    """Every applicable family solves; the best modeled candidates over all of them and every
    family's hand rule are measured; the fastest verified is kept (``base``, the hand rules'
    result, when nothing beats it: never worse than the hand rules)."""
    if run.deadline is not None:   # under a whole-run deadline the solve takes at most half the time left
        budget_s = min(budget_s, max(0.1, run.left_s() / 2))
    run.progress(0, None, f"solve (up to {budget_s:.1f} s)")
    t0 = time.monotonic()
    sv = solve_families(run.kernel, run.be.machine, budget_s, top)
    jr = _joint(run, sv, t0 + budget_s)
    if jr is not None and not any(c.schedule == jr.schedule for _, c in sv.ranked()):   # Z3 found better
        sv.solved[jr.family].candidates.insert(0, fam.Candidate(jr.schedule, jr.modeled_s))
    picks = _in_order(sv.picks(top), sv)
    chosen = {c.schedule for _, c in picks} | {base.schedule}
    todo = [(n, c.schedule, "z3", c.modeled_s) for n, c in picks] + \
        [(n, s, "hand", _modeled(sv, n, s, run)) for n, s in sv.hands.items() if s not in chosen]
    best = base
    run.phase, run.total = "measure", len(todo)
    for i, (name, sched, method, modeled) in enumerate(todo):
        run.done = i
        run.progress(i, run.total, f"measure: start ({name})")
        m = run.measure_in_budget(sched, method, name, modeled)
        if m is not None and faster(m, best): best = m
    run.progress(run.total, run.total, "measure: done" + (f", {len(run.skipped)} skipped at the deadline" if run.skipped else ""))
    best.families = family_report(sv, run)
    best.extra["solver"] = {"method": "+".join(sorted({s.method for s in sv.solved.values()})) or "none",
                            "proved_optimal": jr.proved_optimal if jr is not None else False,
                            "joint": jr.to_dict() if jr is not None else None,
                            "solve_s": sum(s.solve_s for s in sv.solved.values()) + (jr.solve_s if jr else 0.0),
                            "candidates": [t.to_dict() for t in run.tried if t.method == "z3"]}
    if sv.errors: best.extra["solver"]["errors"] = dict(sv.errors)
    if not sv.solved:
        best.extra["method_note"] = "hand rules (every family's solver failed: " + \
            "; ".join(f"{k}: {v}" for k, v in sv.errors.items()) + ")"
    elif best is base:
        best.extra["method_note"] = "hand rules (no solver candidate measured faster)"
    return best


def _joint(run: Run, sv: Solve, deadline: float) -> joint.JointResult | None:
    """The families' best checked in one problem over all of them (search/joint.py) in the
    solve's time left: proved there, or by every family's own proof (decomposed)."""
    ranked = sv.ranked()
    if not ranked: return None
    name, c = ranked[0]
    proved = not sv.errors and all(s.proved_optimal for s in sv.solved.values())
    try:
        return joint.confirm(run.kernel, run.be.machine, [f for f in sv.families if f.name in sv.solved],
                             (name, c.schedule, c.modeled_s, proved), deadline)
    except Exception as e:   # the check must not take tuning down
        return joint.JointResult(name, c.schedule, c.modeled_s, proved, "decomposed", 0.0, 0, f"joint check failed: {_why(e)}")


def _in_order(picks: list[tuple[str, fam.Candidate]], sv: Solve) -> list[tuple[str, fam.Candidate]]:
    """The picks in the order they are measured: the best modeled, then each family's best
    (so that a deadline leaves every family measured where it can), then the rest."""
    firsts = {id(s.candidates[0]) for s in sv.solved.values() if s.candidates}
    return picks[:1] + [p for p in picks[1:] if id(p[1]) in firsts] + [p for p in picks[1:] if id(p[1]) not in firsts]


def _modeled(sv: Solve, name: str, s: Schedule, run: Run) -> float | None:
    f = next(f for f in sv.families if f.name == name)
    try:
        return f.cost(run.kernel, s, run.be.machine)
    except Exception:  # a hand rule the family's model does not price still gets measured
        return None


# ---- BEAM ----------------------------------------------------------------------------------------
def beam(run: Run, budget_s: float, base: Result, start: Result | None = None,
         progress: Callable[[dict], None] | None = None) -> Result:
    """BEAM from the hand rules' schedule (or refining ``start``); kept only if it measures
    faster, verified, than ``start`` (or ``base``). BEAM's space is loop nests: a native
    template's pick is refined from the fastest loop nest measured."""
    prev = start or base
    if run.deadline is not None: budget_s = min(budget_s, max(0.0, run.left_s()))
    origin = _loop_nest_start(run, start) if start is not None else None
    runner = BackendRunner(run.kernel, run.be, inputs=run.inputs)
    try:
        r = beam_search.refine(run.kernel, runner, origin, budget_s=budget_s, progress=progress) \
            if origin is not None else beam_search.beam(run.kernel, runner, budget_s=budget_s, progress=progress)
    except Exception as e:  # a search failure must not take tuning down
        prev.extra["method_note"] = f"{prev.method} (BEAM failed: {_why(e)})"
        return prev
    info = {"steps": r.steps, "timed": r.timed, "failures": len(r.failures), "elapsed_s": r.elapsed_s,
            "budget_s": r.budget_s, "overrun_s": r.overrun_s}
    if not r.verified or r.best == prev.schedule:
        prev.extra["beam"] = info
        return prev
    run.phase, run.done, run.total = "beam: verify its pick", 0, 1
    m = run.measure_in_budget(r.best, "z3+beam" if start is not None else "beam")
    if m is None or not faster(m, prev):
        prev.extra["beam"] = info
        return prev
    m.baseline_s, m.baseline_method = base.measured_s, "hand"
    m.families, m.extra["beam"] = prev.families, info
    if "solver" in prev.extra: m.extra["solver"] = prev.extra["solver"]
    return m


def _loop_nest_start(run: Run, start: Result) -> Schedule:
    """``start``'s schedule, or where it is a native template, the fastest verified loop nest measured."""
    if not start.schedule.family: return start.schedule
    nests = [t for t in run.tried if t.verified and t.time_s and not t.schedule.family]
    return min(nests, key=lambda t: t.time_s).schedule if nests else hand_schedule(run.kernel, run.be.machine)

