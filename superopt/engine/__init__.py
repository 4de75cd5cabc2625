"""The tuning engine as a library: ``tune(kernel, backend, method, budget_s) -> Result``.

The CLI (``superopt tune``/``run``/``bench``/``fidelity``), batch tuning (``tune_cache``),
the runtime's tuning on a cache miss and the research benchmark all call it.
- ``result``: ``Result`` (the one result type) and ``Tried`` (one measured candidate);
- ``measure``: lower, compile, verify, time one schedule; BEAM's runner over a backend;
- ``strategies``: hand rules, the schedule families' solvers (z3), BEAM, z3+beam;
- ``plan``: multi-kernel plans measured against the pick;
- ``tuner``: the entry point ``tune`` (a module not named after its function: no shadowing); ``store``: results into the kernel cache;
- ``fidelity``: the cost model's ranking checked by measurement.
"""
from __future__ import annotations

from .measure import BackendRunner, measure
from .result import Result, Tried
from .tuner import METHODS, add_outside_baseline, tune

__all__ = ["BackendRunner", "METHODS", "Result", "Tried", "add_outside_baseline", "measure", "tune"]
