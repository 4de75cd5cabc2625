"""``tune-cache`` on a Ray cluster: kernels tuned as Ray tasks, the driver the one cache writer.

Each kernel is one Ray task that runs the tune engine (solve, compile, verify, time) and
returns the cache rows it would store; the driver, and only the driver, writes them into the
SQLite cache (no SQLite on a shared file system, no two writers). For a GPU backend every
task asks Ray for one GPU, so Ray runs at most one tuning per GPU at a time and sets
``CUDA_VISIBLE_DEVICES`` for it: no two processes ever time on one device.

Faults: a worker process (or its node) lost mid-kernel is retried by Ray elsewhere
(``max_retries``); a task that outlives its timeout is cancelled and recorded as a failure;
the driver claims each kernel in the cache before submitting it, so a driver killed with
SIGKILL leaves claims a rerun takes over at once (the claim holder is dead), and the rerun
skips every kernel already stored. A result is stored once, by the driver, when its task
returns: nothing is stored twice, nothing is lost.

What is not split yet: solving and compiling run inside the GPU task (they do not overlap
the timing of another kernel on that GPU).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from superopt.cache import Cache, Entry, device_id
from superopt.tune_cache import BatchResult, Job, Outcome

GPU_BACKENDS = ("cuda",)


def _tune_task(kernel_json: str, backend: str, budget_s: float, method: str, tune_ref: str | None,
               device: str) -> dict:
    """Body of one Ray task: tune a kernel; {"entries": [row dicts], "tried": [candidate log rows]}
    or {"error": one line}."""
    from superopt.engine.store import entries_of
    from superopt.ir.kernel import Kernel
    from superopt.tune_cache import _resolve, default_tune
    k = Kernel.from_dict(json.loads(kernel_json))
    tune = _resolve(tune_ref) if tune_ref else default_tune()
    try:
        r = tune(k, backend=backend, budget_s=budget_s, method=method)
        es = entries_of(k, r, backend, device)
    except Exception as ex:  # a kernel that fails to tune is a recorded failure, not a lost task
        return {"error": f"{type(ex).__name__}: {' '.join(str(ex).split())}"[:2000]}
    if not es[0].verified: return {"error": f"no verified schedule (method {es[0].method})"}
    tried = [t.log_row() for t in getattr(r, "tried", None) or []]
    for row in tried:
        if hasattr(row.get("schedule"), "to_json"): row["schedule"] = row["schedule"].to_json()
    return {"entries": [asdict(e) for e in es], "tried": tried}


def connect(address: str | None, num_cpus: int | None = None):
    """Join the cluster at ``address`` ("auto" = the one ``ray start`` made on this host), or
    start a local one (``address`` None). Raises ImportError when ray is not installed."""
    import ray
    if not ray.is_initialized():
        kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address: ray.init(address=address, **kw)
        else: ray.init(address="local", num_cpus=num_cpus, **kw)
    return ray


def slots(ray, backend: str) -> int:
    """How many kernels the cluster can tune at once: its GPUs for a GPU backend, else its CPUs."""
    res = ray.cluster_resources()
    n = int(res.get("GPU", 0)) if backend in GPU_BACKENDS else int(res.get("CPU", 1))
    if n < 1: raise RuntimeError(f"the Ray cluster has no {'GPU' if backend in GPU_BACKENDS else 'CPU'} to tune {backend} kernels on")
    return n


def run_batch_ray(jobs: list[Job], cache_path: str | Path, backend: str = "cpu", budget_s: float = 10.0,
                  address: str | None = None, timeout_s: float | None = None, retry_failed: bool = False,
                  tune_ref: str | None = None, progress: Callable | None = None, device: str | None = None,
                  method: str = "z3", max_retries: int = 3, num_cpus: int | None = None) -> BatchResult:
    """Tune every job not already in the cache on a Ray cluster, most valuable first;
    ``progress(done, total, running_names)`` as in ``tune_cache.run_batch``."""
    dev = device or device_id(backend)
    timeout_s = timeout_s or 4 * budget_s + 120
    res = BatchResult()
    todo = _todo(jobs, cache_path, backend, dev, retry_failed, res)
    report = progress or (lambda *a: None)
    total, done = len(todo), 0
    report(0, total, [])
    if not todo: return res
    ray = connect(address, num_cpus)
    gpu = 1 if backend in GPU_BACKENDS else 0
    task = ray.remote(_tune_task).options(num_cpus=1, num_gpus=gpu, max_retries=max_retries)
    width = slots(ray, backend)
    running: dict = {}   # ref -> (job, submitted at)
    waiting: list[Job] = []
    try:
        while todo or running or waiting:
            if not todo and waiting and len(running) < width:
                time.sleep(0.5)
                todo, waiting = waiting, []
            while todo and len(running) < width:   # never more in flight than can run: timeouts mean run time
                j = todo.pop(0)
                with Cache(cache_path) as c: state = c.take(j.key, backend, dev, ttl_s=timeout_s + 60)
                if state == "busy": waiting.append(j); continue  # noqa: E702
                if isinstance(state, Entry):
                    res.outcomes.append(Outcome(j, entry=state, skipped=True)); done += 1; continue  # noqa: E702
                ref = task.remote(json.dumps(j.kernel.to_dict()), backend, budget_s, method, tune_ref, dev)
                running[ref] = (j, time.monotonic())
                report(done, total, [x[0].name for x in running.values()])
            if not running: continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            for ref in ready:
                j, _t0 = running.pop(ref)
                res.outcomes.append(_store(j, _result(ray, ref), cache_path, backend, dev))
                done += 1
                report(done, total, [x[0].name for x in running.values()])
            for ref, (j, t0) in list(running.items()):
                if time.monotonic() - t0 > timeout_s:
                    ray.cancel(ref, force=True)
                    running.pop(ref)
                    res.outcomes.append(_store(j, {"error": f"timed out after {timeout_s:.0f} s"}, cache_path, backend, dev))
                    done += 1
                    report(done, total, [x[0].name for x in running.values()])
    except KeyboardInterrupt:
        for ref in running: ray.cancel(ref, force=True)
        with Cache(cache_path) as c:
            for j, _ in running.values(): c.release(j.key, backend, dev)
        res.interrupted = True
    return res


def _todo(jobs: list[Job], cache_path, backend: str, dev: str, retry_failed: bool, res: BatchResult) -> list[Job]:
    todo = []
    with Cache(cache_path) as c:
        for j in jobs:
            e = c.get(j.key, backend, dev)
            err = None if retry_failed else c.failure(j.key, backend, dev)
            if e is not None: res.outcomes.append(Outcome(j, entry=e, skipped=True))
            elif err is not None: res.outcomes.append(Outcome(j, error=err, skipped=True))
            else: todo.append(j)
    return todo


def _result(ray, ref) -> dict:
    """A task's answer; a task Ray gave up on (workers lost more than max_retries times) is an error."""
    try:
        return ray.get(ref)
    except Exception as ex:  # WorkerCrashedError, NodeDiedError, TaskCancelledError, ...
        return {"error": f"{type(ex).__name__}: {' '.join(str(ex).split())}"[:300]}


def _store(j: Job, out: dict, cache_path, backend: str, dev: str) -> Outcome:
    """The driver's one write per kernel: its rows (or its failure), then its claim released."""
    with Cache(cache_path) as c:
        try:
            if "error" in out:
                c.put_failure(j.key, backend, dev, out["error"])
                return Outcome(j, error=out["error"])
            for d in out["entries"]: c.put(Entry(**d))
            if out.get("tried"): c.log_candidates(j.key, backend, out["tried"], dev)
            return Outcome(j, entry=c.get(j.key, backend, dev) or Entry(**out["entries"][0]))
        finally:
            c.release(j.key, backend, dev)
