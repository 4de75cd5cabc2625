"""``tune(kernel, backend, method, budget_s) -> Result``: the tuning engine's entry point.

Every method first measures the hand rules' schedule (the baseline: nothing worse is
kept), on one input set drawn once (its reference computed once) that every candidate is
checked and timed on. ``z3``: every applicable schedule family solves within its share of
the budget, the candidates of all families are ranked by modeled time, the best ones and
every family's hand rule measured, the fastest verified kept. ``hand``: the hand rules
alone. ``beam``: BEAM from the hand rules. ``z3+beam``: BEAM refining the z3 pick with the
budget left. On a GPU, the model's multi-kernel plan is then measured against the pick.

``budget_s`` is the search's budget (the solvers', BEAM's). ``deadline`` (a ``time.monotonic()``
instant; ``superopt tune --budget`` passes its start plus the budget) bounds the whole run:
solve, compile, verify, time, BEAM and the plan. The solve takes at most half the time
left, a candidate starts only while the time left covers one measurement's (the median so
far), BEAM gets what is left, and ``extra["budget"]`` says how many candidates were
skipped. The run can end past the deadline by the one measurement in flight, and by the
hand rules' measurement, which is always made (the baseline nothing worse is kept against)."""
from __future__ import annotations

import time

import numpy as np

from superopt import verify
from superopt.backends.base import get
from superopt.baseline import outside_baseline, ratio_phrase
from superopt.ir.kernel import Kernel

from . import strategies
from .plan import measure_plan
from .result import Result

METHODS = ("z3", "hand", "beam", "z3+beam")
METHOD_NOTE = "hand rules (asked for with --method hand)"


def tune(kernel: Kernel, backend="cpu", method: str = "z3", budget_s: float = 10.0, machine=None,
         progress=None, inputs: list | None = None, runs: int = 15, deadline: float | None = None) -> Result:
    """Pick a schedule for ``kernel`` on ``backend`` (a name, opened and closed here, or a
    Backend), verify and time it. ``progress(done, total, what)`` hears of each phase."""
    if method not in METHODS: raise ValueError(f"unknown method {method!r} (methods: {', '.join(METHODS)})")
    if not budget_s > 0: raise ValueError(f"budget must be > 0 seconds, got {budget_s!r}")
    own = isinstance(backend, str)
    be = get(backend, machine) if own else backend
    try:
        t0 = time.perf_counter()
        inputs = verify.random_inputs(kernel, np.random.default_rng()) if inputs is None else inputs
        progress = progress or strategies.quiet
        if isinstance(inputs, verify.InputSet): references(kernel, inputs, progress)
        run = strategies.Run(kernel, be, inputs, runs, progress, deadline=deadline)
        base = strategies.hand(run)
        if method == "hand":
            best = base
            best.extra["method_note"] = METHOD_NOTE
        elif method == "beam":
            best = strategies.beam(run, budget_s, base)
        else:
            best = strategies.z3(run, budget_s if method == "z3" else budget_s / 2, base)
            if method == "z3+beam":
                best = strategies.beam(run, max(1.0, budget_s - (time.perf_counter() - t0)), base, start=best)
        best.baseline_s, best.baseline_method = base.measured_s, "hand"
        if run.fits(): measure_plan(kernel, be, best)
        elif be.machine.sm and kernel.kind in ("gemm", "conv"): run.skipped.append("plan")
        best.tried = run.tried
        if deadline is not None: best.extra["budget"] = budget_report(run, deadline)
        best.tuning_s = time.perf_counter() - t0
        return best
    finally:
        if own: be.close()


def references(kernel: Kernel, inputs: verify.InputSet, progress) -> None:
    """The input set's reference and each special set's, computed now (once a tuning run, as
    the first verification would): their time is no candidate's, so a deadline's estimate of
    one measurement is not inflated by it."""
    sets = verify.special_sets(kernel)
    progress(0, 1 + len(sets), "reference: random inputs")
    inputs.reference(kernel)
    for i, name in enumerate(sets, 1):
        progress(i, 1 + len(sets), f"reference: {name} inputs")
        inputs.special(kernel, name)
    progress(1 + len(sets), 1 + len(sets), "reference: done")


def budget_report(run: strategies.Run, deadline: float) -> dict:
    """How the run kept its deadline: what was skipped, the longest single measurement (what
    one candidate in flight can add past it), seconds past it so far (``over_s``)."""
    return {"skipped": sum(w != "plan" for w in run.skipped), "skipped_what": list(run.skipped), "measured": len(run.tried),
            "longest_measurement_s": max(run.walls, default=0.0), "hand_measurement_s": run.walls[0] if run.walls else 0.0,
            "over_s": max(0.0, -run.left_s())}


def add_outside_baseline(r: Result, runs: int = 15, deadline: float | None = None) -> None:
    """The library a user of the backend compares with (numpy on cpu, torch on cuda), timed on
    the same kernel: ``extra["outside"]`` with the ratio said plainly (or why there is none).
    Under a ``deadline`` it is timed only where its runs (about twice our kernel's time each)
    still fit, with fewer runs (at least 3) where that makes them fit."""
    if deadline is not None and r.measured_s:
        left, each = deadline - time.monotonic(), 2 * r.measured_s
        runs = min(runs, int(left / each) - 2)
        if runs < 3:
            r.extra["outside"] = {"library": None, "time_s": None, "how": "",
                                  "reason": "not timed: the budget was spent (--budget)"}
            if "budget" in r.extra: r.extra["budget"]["skipped_what"].append("outside baseline")
            return
    b = outside_baseline(r.kernel, r.backend, runs)
    d = {"library": b.library, "time_s": b.time_s, "how": b.how, "reason": b.reason}
    if b.time_s and r.verified and r.measured_s: d["ratio"] = ratio_phrase(r.measured_s, b.time_s, b.library)
    r.extra["outside"] = d
