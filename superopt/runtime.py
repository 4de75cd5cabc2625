"""Run lazy Tensors on a backend with tuned schedules from the kernel cache.

    superopt.runtime.use("cpu")        # every realize now looks kernels up in the cache
    y = model(x).numpy()
    superopt.runtime.reset()           # back to the reference interpreter (the default)

A realize hands the runtime its whole kernel sequence (``run_steps``). With ``graph=True``
(the default) the runtime resolves every kernel's schedule, compiles and verifies each once,
and builds the model's launch plan (``backends/cuda/launches.py``: buffers, launch order,
argument slots, reuse of an intermediate's allocation after its last reader). On ``cuda``
the plan's launches are captured as ONE CUDA graph over buffers allocated once
(``backends/cuda/graph.py``), replayed on every later realize of the same program (keyed by
the kernels, their schedules and their wiring, never by tensor names: the inputs are copied
into the graph's input buffers); per-kernel launch gaps disappear. On other backends the
plan runs kernel by kernel in host memory laid out as the plan says. ``graph=False`` runs
each step on its own arrays, kernel by kernel (for debugging and for comparing with the graph).
Every replay copies every input in (weights too: the runtime cannot know an array did not
change since the last realize), so a replay's time is the graph's plus those copies.

A cache hit runs the stored schedule; a miss runs the hand-rule schedule (on a DSP, the hand
rule of the HVX family that applies: ``hand_schedule``), or, with ``on_miss="tune"``, tunes the
kernel now with the solver and stores the result (``tune_limit_s`` bounds a runtime's tuning). Compiled kernels are
kept per process. On a GPU, a kernel the model says runs faster as a plan of several
(``search/plan.py``: a tensor-core GEMM leaving SMs idle split along K, a convolution reading
channels-last copies of its operands) runs as its steps, each scheduled like any kernel; a
tuned (measured) kernel runs a plan only where tuning measured it faster.
If a backend run fails, the step is computed by the reference interpreter and a warning
names the kernel: a result is never silently wrong or lost. A model with such a kernel, or
whose graph cannot be built, runs kernel by kernel on the GPU (a warning says why).
"""
from __future__ import annotations

import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from superopt import debug
from superopt.backends.base import Failure, get
from superopt.backends.cuda.launches import Item, LaunchPlan, PlanError, build, expand, external_inputs, program_key
from superopt.backends.cuda.runtime import CudaError
from superopt.cache import Cache, device_of
from superopt.engine.store import tune_and_store
from superopt.engine.tuner import tune as engine_tune
from superopt.ir.interpret import run_kernel
from superopt.ir.kernel import Kernel
from superopt.ir.kernelize import Step
from superopt.ir.lower import lower
from superopt.verify import verify_compiled
from superopt.ir.schedule import Schedule, check
from superopt.ir import context
from superopt.search.families import applicable
from superopt.search.hand import hand_schedule as hand_rule
from superopt.search.plan import best as best_plan


def hand_schedule(kernel: Kernel, machine) -> Schedule:
    """The hand-rule schedule for a cache miss: on a DSP (``hvx``), the hand rule of the schedule
    family (hvx_gemm, hvx_depthwise, hvx_firstlayer: ``search/families``) whose model prices
    it fastest, where one applies (the generic rule is a scalar loop nest there, a few MACs a
    packet against the families' vrmpy templates); elsewhere, and for every other kernel,
    the generic hand rules (``search/hand.py``)."""
    if machine.has("hvx"):
        s = family_hand(kernel, machine)
        if s is not None: return s
    return hand_rule(kernel, machine)


def family_hand(kernel: Kernel, machine) -> Schedule | None:
    """The legal hand rule, among every applicable family's, that its family's cost model
    prices fastest (the families the engine asks, ``search.families.applicable``), or None."""
    best: tuple[float, Schedule] | None = None
    for f in applicable(kernel, machine):
        try:
            h = f.hand(kernel, machine)
            if h is None or f.legal(kernel, h, machine) or check(kernel, h, machine): continue
            c = float(f.cost(kernel, h, machine))
        except Exception as e:  # noqa: BLE001 - one family's rule must not stop the kernel from running
            debug.log(1, lambda e=e, f=f: f"family {f.name}: no hand rule for {kernel.name} ({type(e).__name__}: {e})")
            continue
        if best is None or c < best[0]: best = (c, h)
    return best[1] if best else None


@dataclass
class Model:
    """One program ready to run: its launch plan, each launch's compiled kernel (or the
    ``Failure`` that sends it to the interpreter), and on a GPU its CUDA graph once built."""
    plan: LaunchPlan
    compiled: list
    graph: object = None          # backends.cuda.graph.ModelGraph, built on the first run
    no_graph: str = ""            # why it runs kernel by kernel on a GPU ('' : it runs as a graph)
    plans: Counter = field(default_factory=Counter)   # model plans (split_k, relayout, ...) among its steps

    @property
    def failed(self) -> list[str]:
        """Names of the kernels that did not compile or verify."""
        return [it.kernel.name for it, c in zip(self.plan.items, self.compiled) if isinstance(c, Failure)]


class Runtime:
    """A ``Tensor.runner``: cache lookup, compile (memoized), run on the backend; a whole
    realize at once through ``run_steps`` (one CUDA graph on ``cuda`` unless ``graph=False``)."""

    def __init__(self, backend: str = "cpu", cache: str | Path | Cache | None = None, on_miss: str = "hand",
                 tune: Callable | None = None, tune_budget_s: float = 5.0, graph: bool = True,
                 tune_limit_s: float | None = None):
        """``tune_budget_s``: each miss's tuning budget (``on_miss="tune"``); ``tune_limit_s``: the
        most seconds all tuning of this runtime may take (later misses get the hand rule), so a
        whole model's tuning fits a stated time; ``graph``: realize as one launch plan / CUDA graph."""
        if on_miss not in ("hand", "tune"): raise ValueError(f"on_miss must be 'hand' or 'tune', not {on_miss!r}")
        self.graph = bool(graph)
        self.models: dict[tuple, Model] = {}   # program key -> its launch plan, compiled kernels, graph
        self.backend = get(backend)
        self.device = device_of(self.backend)
        self.cache = cache if isinstance(cache, Cache) else Cache(cache)
        self.on_miss, self.tune, self.tune_budget_s, self.tune_limit_s = on_miss, tune, tune_budget_s, tune_limit_s
        self.tuning_s = 0.0    # seconds spent tuning misses so far
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
        """Tune a miss now and store it; None (the hand rule) once ``tune_limit_s`` is spent or
        where tuning fails (a warning says why: a tuning failure never takes the run down)."""
        if self.tune_limit_s is not None and self.tuning_s >= self.tune_limit_s:
            self.stats["tune_skipped"] += 1
            return None
        t0 = time.perf_counter()
        try:
            e = tune_and_store(k, self.cache, self.backend.name, budget_s=self.tune_budget_s, tune=self.tune or self._engine_tune,
                               device=self.device)
        except Exception as x:  # noqa: BLE001 - the hand rule still runs the kernel
            warnings.warn(f"superopt runtime: tuning {k.name} ({k.key[:12]}) failed ({type(x).__name__}: {x}); hand rule",
                          RuntimeWarning, stacklevel=3)
            return None
        finally:
            self.tuning_s += time.perf_counter() - t0
        return (e.schedule_obj(), "tuned") if e is not None and e.verified else None

    def _engine_tune(self, k: Kernel, backend: str, budget_s: float, method: str):
        """The engine's tuner on this runtime's own backend (a GPU's worker is not started again
        per kernel), under a deadline at the end of ``tune_limit_s`` where one is set (the
        engine then skips measurements that would run past it)."""
        left = None if self.tune_limit_s is None else self.tune_limit_s - self.tuning_s
        return engine_tune(k, backend=self.backend, budget_s=budget_s, method=method,
                           deadline=None if left is None else time.monotonic() + max(0.0, left))

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

    def compiled_for(self, k: Kernel, s: Schedule):
        """``k`` under ``s`` compiled on the backend and verified on random inputs (memoized),
        or the ``Failure`` that says why it cannot be used."""
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
        return self.compiled[ck]

    def __call__(self, step: Step, bufs: dict[str, np.ndarray]) -> np.ndarray:
        """One step on its own arrays (kernel by kernel)."""
        k = step.kernel
        plan = self.plan_for(k)
        if plan is not None: return self._run_plan(plan, step, bufs)
        inputs = [np.ascontiguousarray(bufs[n]) for n in step.inputs]
        s, source = self.schedule_for(k)
        self.stats[source] += 1
        c = self.compiled_for(k, s)
        if not isinstance(c, Failure):
            out = np.empty(k.output.shape, dtype=k.output.dtype.np)
            debug.log(1, lambda: f"launch {k.name} ({k.key[:12]}) on {self.backend.name}: {source} schedule")
            r = self.backend.run(c, inputs, out)
            if not isinstance(r, Failure): return out
            c = r
        return self._interpret(k, inputs, c)

    def _interpret(self, k: Kernel, inputs: list[np.ndarray], why) -> np.ndarray:
        warnings.warn(f"superopt runtime: kernel {k.name} ({k.key[:12]}) failed on {self.backend.name} ({why}); "
                      "computed by the reference interpreter", RuntimeWarning, stacklevel=3)
        self.stats["interpreter"] += 1
        return run_kernel(k, inputs)

    # ---- a whole realize -----------------------------------------------------------------
    def items_for(self, steps: Sequence[Step]) -> list[Item]:
        """The steps as launch items in order: each kernel's schedule (cache, tuned, hand
        rule), a kernel its plan splits (search/plan.py) expanded into the plan's steps."""
        return expand(steps, self.schedule_for, self.plan_for)

    def prepare(self, steps: Sequence[Step]) -> Model:
        """The program of ``steps`` ready to run (memoized by its program key): schedules
        resolved, every kernel compiled and verified once, the launch plan built."""
        items = self.items_for(steps)
        return self._model(items, program_key(items, [steps[-1].output]), steps)

    def _model(self, items: list[Item], key: tuple, steps: Sequence[Step]) -> Model:
        if key not in self.models:
            plans = Counter(p.kind for p in (self.plan_for(st.kernel) for st in steps) if p is not None)
            self.models[key] = Model(build(items, [steps[-1].output]), [self.compiled_for(it.kernel, it.schedule) for it in items],
                                     plans=plans)
        return self.models[key]

    def run_steps(self, steps: Sequence[Step], bufs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every step of one realize (``Tensor.numpy``); returns the last step's output by name.
        ``graph``: as the program's launch plan (one CUDA graph on cuda), else step by step."""
        final = steps[-1].output
        if not self.graph:
            bufs = dict(bufs)
            for st in steps: bufs[st.output] = self(st, bufs)
            return {final: bufs[final]}
        items = self.items_for(steps)
        m = self._model(items, program_key(items, [final]), steps)
        # this realize's names for the plan's inputs: the same program reads them in the same order
        arrays = {pn: np.ascontiguousarray(bufs[n]) for pn, n in zip(m.plan.inputs, external_inputs(items))}
        for it in m.plan.items: self.stats[it.source] += 1
        self.stats.update(m.plans)
        out = self._run_model(m, arrays)
        return {final: out.reshape(steps[-1].kernel.output.shape)}

    def _run_model(self, m: Model, arrays: dict[str, np.ndarray]) -> np.ndarray:
        g = self.graph_of(m)
        if g is not None:
            try:
                out = g.run(arrays)[m.plan.outputs[0]]
                self.stats["graph_replays"] += 1
                return out
            except CudaError as e:   # the graph failed to run: the same launches one by one say which kernel
                self._drop_graph(m, f"{type(e).__name__}: {e}")
        return m.plan.run_host(arrays, lambda i, ins, out: self.launch(m, i, ins, out))[m.plan.outputs[0]]

    def graph_of(self, m: Model):
        """The model's CUDA graph (built on the first call: buffers allocated, kernels loaded,
        launches captured), or None where it runs kernel by kernel: not on cuda, a kernel that
        failed (it runs in the interpreter), or a graph that could not be built (``m.no_graph``)."""
        if m.graph is not None or m.no_graph or self.backend.name != "cuda": return m.graph
        if m.failed:
            m.no_graph = f"kernels {m.failed} did not compile or verify"
            warnings.warn(f"superopt runtime: not one CUDA graph ({m.no_graph}): kernel by kernel", RuntimeWarning, stacklevel=3)
            return None
        from superopt.backends.cuda.graph import ModelGraph   # here: the cuda backend is already loaded
        try:
            m.graph = ModelGraph(m.plan, None, machine=self.backend.machine, programs=[c.program for c in m.compiled])
            m.graph.capture()
            self.stats["graphs"] += 1
        except (CudaError, PlanError) as e:
            self._drop_graph(m, f"{type(e).__name__}: {e}")
        return m.graph

    def _drop_graph(self, m: Model, why: str) -> None:
        if m.graph is not None: m.graph.close()
        m.graph, m.no_graph = None, why
        warnings.warn(f"superopt runtime: the model runs kernel by kernel, not as one CUDA graph ({why})",
                      RuntimeWarning, stacklevel=4)

    def launch(self, m: Model, i: int, ins: list[np.ndarray], out: np.ndarray) -> None:
        """Launch ``i`` of the model on the backend into ``out``; the interpreter where it fails."""
        it, c = m.plan.items[i], m.compiled[i]
        if not isinstance(c, Failure):
            debug.log(1, lambda: f"launch {it.kernel.name} ({it.kernel.key[:12]}) on {self.backend.name}: {it.source} schedule")
            r = self.backend.run(c, ins, out)
            if not isinstance(r, Failure):
                if r is not out: out[:] = np.asarray(r).reshape(-1)
                return
            c = r
        out[:] = np.asarray(self._interpret(it.kernel, ins, c)).reshape(-1)

    def close(self) -> None:
        for m in self.models.values():
            if m.graph is not None: m.graph.close()
        self.models.clear()
        self.backend.close()
        self.cache.close()


def use(backend: str = "cpu", cache: str | Path | Cache | None = None, on_miss: str = "hand",
        graph: bool = True) -> Runtime:
    """Enter a runtime as the context's runner until ``reset()``; returns it."""
    reset()
    rt = Runtime(backend, cache, on_miss, graph=graph)
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
def using(backend: str = "cpu", cache: str | Path | Cache | None = None, on_miss: str = "hand",
          graph: bool = True) -> Iterator[Runtime]:
    """``with runtime.using("cpu") as rt:`` the runtime is the context's runner inside the block
    only (``graph=False``: every step kernel by kernel on its own arrays)."""
    rt = Runtime(backend, cache, on_miss, graph=graph)
    try:
        with context.use(runner=rt, cache=rt.cache, target=rt.backend.machine):
            yield rt
    finally:
        rt.close()
