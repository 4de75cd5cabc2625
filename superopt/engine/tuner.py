"""``tune(kernel, backend, method, budget_s) -> Result``: the tuning engine's entry point.

Every method first measures the hand rules' schedule (the baseline: nothing worse is
kept), on one input set drawn once (its reference computed once) that every candidate is
checked and timed on. ``z3``: every applicable schedule family solves within its share of
the budget, the candidates of all families are ranked by modeled time, the best ones and
every family's hand rule measured, the fastest verified kept. ``hand``: the hand rules
alone. ``beam``: BEAM from the hand rules. ``z3+beam``: BEAM refining the z3 pick with the
budget left. On a GPU, the model's multi-kernel plan is then measured against the pick."""
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
         progress=None, inputs: list | None = None, runs: int = 15) -> Result:
    """Pick a schedule for ``kernel`` on ``backend`` (a name, opened and closed here, or a
    Backend), verify and time it. ``progress(done, total, what)`` hears of each phase."""
    if method not in METHODS: raise ValueError(f"unknown method {method!r} (methods: {', '.join(METHODS)})")
    if not budget_s > 0: raise ValueError(f"budget must be > 0 seconds, got {budget_s!r}")
    own = isinstance(backend, str)
    be = get(backend, machine) if own else backend
    try:
        t0 = time.perf_counter()
        inputs = verify.random_inputs(kernel, np.random.default_rng()) if inputs is None else inputs
        run = strategies.Run(kernel, be, inputs, runs, progress or strategies.quiet)
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
        measure_plan(kernel, be, best)
        best.tried = run.tried
        best.tuning_s = time.perf_counter() - t0
        return best
    finally:
        if own: be.close()


def add_outside_baseline(r: Result, runs: int = 15) -> None:
    """The library a user of the backend compares with (numpy on cpu, torch on cuda), timed on
    the same kernel: ``extra["outside"]`` with the ratio said plainly (or why there is none)."""
    b = outside_baseline(r.kernel, r.backend, runs)
    d = {"library": b.library, "time_s": b.time_s, "how": b.how, "reason": b.reason}
    if b.time_s and r.verified and r.measured_s: d["ratio"] = ratio_phrase(r.measured_s, b.time_s, b.library)
    r.extra["outside"] = d
