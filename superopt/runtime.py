"""Run lazy Tensors on a backend with tuned schedules from the kernel cache.

    superopt.runtime.use("cpu")        # every realize now looks kernels up in the cache
    y = model(x).numpy()
    superopt.runtime.reset()           # back to the reference interpreter (the default)

A cache hit runs the stored schedule; a miss runs the hand-rule schedule (or, with
``on_miss="tune"``, tunes the kernel now with the solver and stores the result). Compiled kernels are
kept per process. On a GPU, a kernel the model says runs faster as a plan of several
(``search/plan.py``: a tensor-core GEMM leaving SMs idle split along K, a convolution reading
channels-last copies of its operands) runs as its steps, each scheduled like any kernel; a
tuned (measured) kernel runs a plan only where tuning measured it faster.
If a backend run fails, the step is computed by the reference interpreter and a warning
names the kernel: a result is never silently wrong or lost.
"""
from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from superopt import debug
from superopt.backends.base import Failure, get
from superopt.cache import Cache, device_of
from superopt.engine.store import tune_and_store
from superopt.ir.interpret import run_kernel
from superopt.ir.kernel import Kernel
from superopt.ir.kernelize import Step
from superopt.ir.lower import lower
from superopt.verify import verify_compiled
from superopt.ir.schedule import Schedule, check
from superopt.ir import context
from superopt.search.hand import hand_schedule as hand_rule
from superopt.search.plan import best as best_plan


def hand_schedule(kernel: Kernel, machine) -> Schedule:
    """The hand-rule schedule for a cache miss."""
    return hand_rule(kernel, machine)


class Runtime:
    """A ``Tensor.runner``: cache lookup, compile (memoized), run on the backend."""

    def __init__(self, backend: str = "cpu", cache: str | Path | Cache | None = None, on_miss: str = "hand",
                 tune: Callable | None = None, tune_budget_s: float = 5.0):
        if on_miss not in ("hand", "tune"): raise ValueError(f"on_miss must be 'hand' or 'tune', not {on_miss!r}")
        self.backend = get(backend)
        self.device = device_of(self.backend)
        self.cache = cache if isinstance(cache, Cache) else Cache(cache)
        self.on_miss, self.tune, self.tune_budget_s = on_miss, tune, tune_budget_s
        self.compiled: dict[tuple[str, str], object] = {}
        self.schedules: dict[str, tuple[Schedule, str]] = {}
        self.plans: dict[str, object] = {}    # kernel key -> its plan (search/plan.py), or None
        self.stats: Counter = Counter()

    def schedule_for(self, k: Kernel, planned: Schedule | None = None) -> tuple[Schedule, str]:
        """(schedule, source) where source is 'cache', 'hand', 'tuned' or 'plan' (a plan's
        step on a cache miss: the schedule its plan chose, ``planned``)."""
        if k.key in self.schedules: return self.schedules[k.key]
        e = self.cache.get(k.key, self.backend.name, self.device)
        got: tuple[Schedule, str] | None = None
        if e is not None:
            s = e.schedule_obj()
            if not check(k, s, self.backend.machine): got = (s, "cache")
        if got is None and planned is not None: got = (planned, "plan")
        if got is None and self.on_miss == "tune":
            got = self._tune(k)
        if got is None: got = (hand_schedule(k, self.backend.machine), "hand")
        self.schedules[k.key] = got
        return got

    def _tune(self, k: Kernel) -> tuple[Schedule, str] | None:
        e = tune_and_store(k, self.cache, self.backend.name, budget_s=self.tune_budget_s, tune=self.tune,
                           device=self.device)
        return (e.schedule_obj(), "tuned") if e is not None and e.verified else None

    def plan_for(self, k: Kernel):
        """The model's plan (search/plan.py: split-K for a tensor-core GEMM leaving SMs idle,
        split fp32 for an fp32 GEMM, relayout for a convolution whose operands are not
        channels-last) for ``k``, else None: only on GPUs, never for a plan's own steps. A
        tuned (measured) kernel runs a plan only where tuning measured it faster and stored
        its steps."""
        if k.key not in self.plans:
            self.plans[k.key] = None
            source = self.schedule_for(k)[1]
            if self.backend.machine.sm and k.kind in ("gemm", "conv"):
                plan = self._plan(k)
                if plan is not None:
                    for x in plan.steps: self.plans.setdefault(x.kernel.key, None)
                    if source != "cache" or all(self._stored(x.kernel) for x in plan.steps):
                        self.plans[k.key] = plan
        return self.plans[k.key]

    def _plan(self, k: Kernel):
        try:
            return best_plan(k, self.backend.machine)
        except Exception as e:  # noqa: BLE001 - an optimization must not take the run down
            warnings.warn(f"superopt runtime: no plan for {k.name} ({type(e).__name__}: {e})",
                          RuntimeWarning, stacklevel=3)
            return None

    def _stored(self, k: Kernel) -> bool:
        return self.cache.get(k.key, self.backend.name, self.device) is not None

    def _run_plan(self, plan, step: Step, bufs: dict[str, np.ndarray]) -> np.ndarray:
        """The plan's steps in order, intermediates in scratch buffers, the last into the output."""
        bufs, names = dict(bufs), []
        for j, x in enumerate(plan.steps):
            out = step.output if x is plan.final else f"{step.output}__{plan.kind}{j}"
            ins = tuple(x.operands(step.inputs, names))
            self.schedule_for(x.kernel, x.schedule)
            bufs[out] = self(Step(x.kernel, ins, out), bufs)
            names.append(out)
        self.stats[plan.kind] += 1
        return bufs[step.output]

    def __call__(self, step: Step, bufs: dict[str, np.ndarray]) -> np.ndarray:
        k = step.kernel
        plan = self.plan_for(k)
        if plan is not None: return self._run_plan(plan, step, bufs)
        inputs = [np.ascontiguousarray(bufs[n]) for n in step.inputs]
        s, source = self.schedule_for(k)
        self.stats[source] += 1
        ck = (k.key, s.to_json())
        if ck not in self.compiled:
            try:
                self.compiled[ck] = self.backend.compile(lower(k, s, self.backend.machine))
            except ValueError as e:  # a schedule the lowering rejects: same as a compile failure
                self.compiled[ck] = Failure("compile", str(e))
            debug.compiled(self.backend.name, k, s, self.compiled[ck])
            if not isinstance(self.compiled[ck], Failure):
                # never return the result of a schedule that fails verification: checked once,
                # on random inputs, before its first result is used
                v = verify_compiled(k, self.compiled[ck], self.backend, np.random.default_rng(0))
                if not v.ok: self.compiled[ck] = Failure(v.failure_kind or "wrong", f"failed verification: {v.reason}")
        c = self.compiled[ck]
        if not isinstance(c, Failure):
            out = np.empty(k.output.shape, dtype=k.output.dtype.np)
            debug.log(1, lambda: f"launch {k.name} ({k.key[:12]}) on {self.backend.name}: {source} schedule")
            r = self.backend.run(c, inputs, out)
            if not isinstance(r, Failure): return out
            c = r
        warnings.warn(f"superopt runtime: kernel {k.name} ({k.key[:12]}) failed on {self.backend.name} ({c}); "
                      "computed by the reference interpreter", RuntimeWarning, stacklevel=2)
        self.stats["interpreter"] += 1
        return run_kernel(k, inputs)

    def close(self) -> None:
        self.backend.close()
        self.cache.close()


def use(backend: str = "cpu", cache: str | Path | Cache | None = None, on_miss: str = "hand") -> Runtime:
    """Enter a runtime as the context's runner until ``reset()``; returns it."""
    reset()
    rt = Runtime(backend, cache, on_miss)
    _installed.append((rt, context.enter(runner=rt, cache=rt.cache, target=rt.backend.machine)))
    return rt


_installed: list = []   # what use() entered, for reset() to leave (with-scopes: ``using``)


def reset() -> None:
    """Leave what ``use`` entered: back to the runner before it."""
    while _installed:
        rt, token = _installed.pop()
        context.leave(token)
        rt.close()


@contextmanager
def using(backend: str = "cpu", cache: str | Path | Cache | None = None, on_miss: str = "hand") -> Iterator[Runtime]:
    """``with runtime.using("cpu") as rt:`` the runtime is the context's runner inside the block only."""
    rt = Runtime(backend, cache, on_miss)
    try:
        with context.use(runner=rt, cache=rt.cache, target=rt.backend.machine):
            yield rt
    finally:
        rt.close()
