"""Tuning results into the kernel cache: the kernel's row (and its plan's steps'), and every
measured candidate into the cache's candidates log."""
from __future__ import annotations

import json
from typing import Callable

from superopt.cache import Cache, Entry, device_id
from superopt.ir.kernel import Kernel
from superopt.search import cost
from superopt.search.machine import load

from .result import Result
from .tuner import tune as engine_tune


def entry_from_result(k: Kernel, r: Result, backend: str, device: str | None = None) -> Entry:
    """A cache row from an engine result (modeled time: the family's, else the SIMT/CPU model's on cpu)."""
    modeled = getattr(r, "modeled_s", None)
    if modeled is None and backend == "cpu" and not r.schedule.family:
        try:
            modeled = cost.modeled_time(k, r.schedule, load("cpu"))
        except Exception:  # the model not covering a schedule must not lose a measured result
            modeled = None
    return Entry(kernel_key=k.key, backend=backend, device=device or device_id(backend), schedule=r.schedule.to_json(),
                 method=r.method, verified=bool(r.verified), measured_s=r.measured_s,
                 modeled_s=modeled, baseline_s=getattr(r, "baseline_s", None),
                 baseline_method=getattr(r, "baseline_method", None), name=k.name, kernel=json.dumps(k.to_dict()),
                 note=(getattr(r, "extra", None) or {}).get("method_note"))


def entries_of(k: Kernel, r: Result, backend: str, device: str | None = None) -> list[Entry]:
    """The cache rows of a tune result: the kernel's, then, for a kernel measured faster as a
    plan (search/plan.py), its steps' (their rows tell the runtime to run the plan, each
    step as stored)."""
    return [entry_from_result(k, r, backend, device)] + \
        [entry_from_result(pk, pm, backend, device) for pk, pm in getattr(r, "plan_parts", None) or ()]


def store(cache: Cache, k: Kernel, r: Result, backend: str, device: str | None = None) -> list[Entry]:
    """Commit ``r``'s rows and log every candidate it measured; returns the rows."""
    es = entries_of(k, r, backend, device)
    for e in es: cache.put(e)
    tried = getattr(r, "tried", None) or []
    if tried: cache.log_candidates(k.key, backend, [t.log_row() for t in tried], es[0].device)
    return es


def tune_and_store(k: Kernel, cache: Cache, backend: str, budget_s: float = 10.0, tune: Callable | None = None,
                   device: str | None = None, method: str = "z3") -> Entry:
    """Tune ``k`` (``tune(kernel, backend=, budget_s=, method=)``: the engine's by default, or a
    plug-in's) and commit the result; returns the stored entry (or the better one already
    there). Raises if tuning fails."""
    r = (tune or engine_tune)(k, backend=backend, budget_s=budget_s, method=method)
    es = store(cache, k, r, backend, device)
    return cache.get(k.key, backend, es[0].device) or es[0]
