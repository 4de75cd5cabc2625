"""Batch tuning of a captured kernel set into the kernel cache.

Kernels are tuned most-valuable first (expected gain x launch count), each in its own
worker process (a crash, hang or runaway tune costs that kernel only), and each result is
committed to the cache by the worker the moment it is done. Resuming is therefore just
running again: kernels with a verified row for this backend/device are skipped, kernels
whose tuning failed with this tuner version are skipped unless retried, and nothing else
is ever redone. A worker dies with its parent (Linux parent-death signal), so a killed
batch leaves no orphan tuning behind that a rerun could duplicate; a batch claims each
kernel in the cache before tuning it, so two batches sharing a cache split the work
instead of repeating it (a dead batch's claims are taken over at once).
"""
from __future__ import annotations

import ctypes
import importlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from superopt.backends.base import get
from superopt.cache import Cache, Entry, device_id, device_of
from superopt.capture import MANIFEST, read_manifest
from superopt.engine import tune as engine_tune
from superopt.engine.store import entries_of, entry_from_result, tune_and_store  # noqa: F401 - the batch's rows
from superopt.io import load_kernel
from superopt.ir.kernel import Kernel
from superopt.search import cost
from superopt.search.hand import hand_schedule
from superopt.search.machine import load


@dataclass
class Job:
    key: str
    name: str
    kind: str
    count: int
    kernel: Kernel
    priority: float = 0.0


@dataclass
class Outcome:
    job: Job
    entry: Entry | None = None
    error: str | None = None
    skipped: bool = False      # done in an earlier run (or failed earlier and not retried)


@dataclass
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False

    @property
    def tuned(self) -> list[Outcome]: return [o for o in self.outcomes if o.entry is not None]
    @property
    def failed(self) -> list[Outcome]: return [o for o in self.outcomes if o.error is not None]

    def model_estimate(self) -> tuple[float, float, int]:
        """(sum count x baseline time, sum count x tuned time, kernels counted): over kernels with both."""
        before = after = 0.0
        n = 0
        for o in self.tuned:
            e = o.entry
            if e.baseline_s is not None and e.measured_s is not None:
                before += o.job.count * e.baseline_s
                after += o.job.count * e.measured_s
                n += 1
        return before, after, n


# ---- the kernel set -----------------------------------------------------------------------
def load_jobs(d: str | Path) -> list[Job]:
    """Kernels of a capture directory (manifest.json with counts), or every kernel file
    (.json/.pkl, count 1) of a directory without a manifest."""
    d = Path(d)
    if not d.is_dir(): raise ValueError(f"{d}: not a directory")
    jobs: dict[str, Job] = {}
    if (d / MANIFEST).exists():
        for e in read_manifest(d)["kernels"]:
            k = load_kernel(d / e["file"])
            if k.key in jobs: jobs[k.key].count += int(e["count"]); continue  # noqa: E702
            jobs[k.key] = Job(k.key, e.get("name", k.name), k.kind, int(e["count"]), k)
    else:
        for p in sorted([*d.glob("*.json"), *d.glob("*.pkl")]):
            k = load_kernel(p)
            if k.key in jobs: jobs[k.key].count += 1
            else: jobs[k.key] = Job(k.key, p.stem, k.kind, 1, k)
    if not jobs: raise ValueError(f"{d}: no kernels (expected manifest.json from `superopt capture`, or .json/.pkl kernel files)")
    return list(jobs.values())


def expected_gain_s(k: Kernel, machine) -> float:
    """Modeled time of the hand-rule schedule minus the roofline bound: what tuning could win."""
    try:
        base = cost.modeled_time(k, hand_schedule(k, machine), machine)
    except Exception:  # a kernel the model or hand rules do not cover still gets tuned, last
        return 0.0
    return max(0.0, base - cost.roofline_s(k, machine))


def prioritize(jobs: list[Job], machine) -> list[Job]:
    for j in jobs: j.priority = j.count * expected_gain_s(j.kernel, machine)
    return sorted(jobs, key=lambda j: (-j.priority, -j.count, j.key))


# ---- tuning one kernel -------------------------------------------------------------------
def default_tune() -> Callable:
    """The engine behind ``superopt tune``: ``tune(kernel, backend=, budget_s=, method=) -> Result``."""
    return engine_tune


def identify(backend: str):
    """(device id for cache rows, Machine) of a backend; starts it briefly for GPUs."""
    if backend == "cpu": return device_id("cpu"), load("cpu")
    b = get(backend)
    try:
        return device_of(b), b.machine
    finally:
        b.close()


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans after kill -9)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent: os._exit(3)  # parent already gone


def _worker(kernel_json: str, cache_path: str, backend: str, budget_s: float, parent: int, tune_ref: str | None,
            device: str, gpu: str | None, method: str) -> None:
    _die_with_parent(parent)
    if gpu is not None: os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything opens the GPU
    k = Kernel.from_dict(json.loads(kernel_json))
    tune = _resolve(tune_ref) if tune_ref else None
    with Cache(cache_path) as c:
        try:
            e = tune_and_store(k, c, backend, budget_s, tune, device, method)
            err = None if e.verified else f"no verified schedule (method {e.method})"
        except Exception as ex:
            err = f"{type(ex).__name__}: {' '.join(str(ex).split())}"
        if err:
            c.put_failure(k.key, backend, device, err)
            sys.exit(1)


def _resolve(ref: str) -> Callable:
    """'module:function' -> the function (lets tests and plug-ins supply a tune engine)."""
    mod, _, fn = ref.partition(":")
    return getattr(importlib.import_module(mod), fn)


# ---- the batch ----------------------------------------------------------------------------
@dataclass
class _Running:
    job: Job
    proc: mp.Process
    started: float
    gpu: str | None = None


def run_batch(jobs: list[Job], cache_path: str | Path, backend: str = "cpu", budget_s: float = 10.0,
              workers: int = 1, timeout_s: float | None = None, retry_failed: bool = False,
              tune_ref: str | None = None, progress=None, device: str | None = None,
              gpus: list[str] | None = None, method: str = "z3") -> BatchResult:
    """Tune every job not already in the cache; ``progress(done, total, running_names)`` is
    called as things change. With ``gpus``, one worker per GPU (it sees only that GPU), so
    timings never share a device. Ctrl-C stops workers and returns what finished (all of it is in the cache)."""
    dev = device or device_id(backend)
    if gpus: workers = len(gpus)
    timeout_s = timeout_s or 4 * budget_s + 120
    res = BatchResult()
    todo: list[Job] = []
    with Cache(cache_path) as c:
        for j in jobs:
            e = c.get(j.key, backend, dev)
            err = None if retry_failed else c.failure(j.key, backend, dev)
            if e is not None: res.outcomes.append(Outcome(j, entry=e, skipped=True))
            elif err is not None: res.outcomes.append(Outcome(j, error=err, skipped=True))
            else: todo.append(j)
    ctx = mp.get_context("spawn")
    running: list[_Running] = []
    total, done = len(todo), 0
    report = progress or (lambda *a: None)
    report(0, total, [])
    waiting: list[Job] = []   # claimed by another live batch on this cache: looked at again later
    try:
        while todo or running or waiting:
            if not todo and waiting and len(running) < max(1, workers):
                time.sleep(0.5)
                todo, waiting = waiting, []
            while todo and len(running) < max(1, workers):
                j = todo.pop(0)
                state = _take(j, cache_path, backend, dev, timeout_s)
                if state == "busy": waiting.append(j); continue  # noqa: E702
                if isinstance(state, Entry):  # another batch finished it meanwhile
                    res.outcomes.append(Outcome(j, entry=state, skipped=True)); done += 1; continue  # noqa: E702
                gpu = next(g for g in gpus if g not in {r.gpu for r in running}) if gpus else None
                p = ctx.Process(target=_worker, args=(json.dumps(j.kernel.to_dict()), str(cache_path), backend,
                                                       budget_s, os.getpid(), tune_ref, dev, gpu, method), daemon=True)
                p.start()
                running.append(_Running(j, p, time.monotonic(), gpu))
                report(done, total, [r.job.name for r in running])
            time.sleep(0.05)
            for r in list(running):
                late = time.monotonic() - r.started > timeout_s
                if r.proc.is_alive() and not late: continue
                if r.proc.is_alive():
                    r.proc.kill()
                r.proc.join()
                running.remove(r)
                res.outcomes.append(_collect(r, cache_path, backend, dev, late, timeout_s))
                done += 1
                report(done, total, [x.job.name for x in running])
    except KeyboardInterrupt:
        for r in running: r.proc.kill()
        for r in running: r.proc.join()
        with Cache(cache_path) as c:
            for r in running: c.release(r.job.key, backend, dev)
        res.interrupted = True
    return res


def _take(j: Job, cache_path, backend: str, dev: str, timeout_s: float):
    """Claim a job: "ok", "busy" (another live batch tunes it) or the Entry another batch stored."""
    with Cache(cache_path) as c:  # looking for a result and claiming are one transaction (no double tuning)
        return c.take(j.key, backend, dev, ttl_s=timeout_s + 60)


def _collect(r: _Running, cache_path, backend: str, dev: str, late: bool, timeout_s: float) -> Outcome:
    with Cache(cache_path) as c:
        c.release(r.job.key, backend, dev)
        e = c.get(r.job.key, backend, dev)
        if e is not None: return Outcome(r.job, entry=e)  # committed (even if the worker died after)
        err = c.failure(r.job.key, backend, dev)
        if err is None:
            err = f"timed out after {timeout_s:.0f} s" if late else f"worker died (exit code {r.proc.exitcode})"
            c.put_failure(r.job.key, backend, dev, err)
        return Outcome(r.job, entry=e, error=err)
