"""Whole models end to end against torch: each model's kernels (the tuned cache, a plan's
steps, or the hand rule on a miss: ``schedules`` says which per kernel) run as ONE CUDA
graph (``superopt.backends.cuda.graph``), next to torch eager and
``torch.compile(mode="max-autotune")`` on the same inputs in the same run.

Per model (``superopt.kernels.models``: bert_layer, resnet_block, bottleneck, embed):
- every kernel verified first on random inputs (``superopt.verify``, through the backend);
- ``ours_s``: median of graph replays, CUDA events, L2 flushed before each replay;
  ``ours_warm_s`` the same without the flush; ``ours_eager_s`` the same launches issued
  one by one from the host (L2 flushed before each run); ``kernels_sum_s`` the sum of each
  kernel's median alone (L2 flushed before each launch, as the backend's timer does):
  ``kernels_sum_s`` against ``ours_s`` shows the launch gaps the graph removes;
- ``torch_s``, ``torch_compile_s``: medians under CUDA events with the L2 flushed
  (``superopt.vendor.time_torch``); torch.compile's compile time (first call) is excluded
  from its time and reported as ``torch_compile_compile_s``;
- ``rel_err``: max |ours - ref| / max |ref| against torch run in fp32 (TF32 off) on the same
  arrays; for ``embed`` against the numpy float64 reference, since torch draws its own
  dropout mask (``reference`` says which);
- ``tuning_s``: the tuning time this run spent (``--tune-budget``), else ``--cache-tuning-s``
  (the time of the tune-cache run that filled ``--cache``), else 0 where every kernel ran
  its hand rule (None where cached schedules of unknown tuning time were used).

On cuda each model runs in a child process (a crash or a time-out costs that model only;
what it measured before is kept), in two passes under one ``--budget``: first ours, torch
eager and rel_err of every model, then torch.compile of each (its autotuning is the slow part). ``--backend cpu`` (small shapes) runs the same path
without a graph: the kernels one by one on the host, timed by wall clock, the reference
numpy's (float64), no torch.

    python bench/e2e.py --backend cuda --out bench/results/e2e-h100.json
    python bench/e2e.py --backend cpu --small --out /tmp/e2e-cpu-small.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from superopt.ir.dtype import to_values
from superopt.ir.kernelize import kernelize
from superopt.kernels.models import MODELS, Model

ORDER = ("embed", "resnet_block", "bottleneck", "bert_layer")   # small to large: a time-out costs the last


@dataclass
class Resolved:
    """A model's launches (``graph.Item``s, plans expanded) and what checking them found."""
    items: list
    compiled: list           # the backend's Compiled per item (or its Failure)
    checks: list[dict]       # per item: name, kind, source, verified, reason


def resolve(model: Model, rt) -> list:
    """The model's kernels in order as launch items (``graph.expand``): each kernel's
    schedule from the runtime (cache, hand rule, tuned), a kernel the model plans as several
    (split-K, relayout, split fp32) expanded into its steps."""
    from superopt.backends.cuda.graph import expand
    return expand(kernelize(model.out.node), rt.schedule_for, rt.plan_for)


def check_items(items: list, backend, seed: int = 0) -> Resolved:
    """Compile every item on ``backend`` and verify it against the reference on random inputs."""
    from superopt.backends.base import Failure
    from superopt.ir.lower import lower
    from superopt.verify import verify_compiled
    rng = np.random.default_rng(seed)
    compiled, checks = [], []
    seen: dict[tuple[str, str], tuple] = {}   # (kernel key, schedule): one compile and check (BERT's Q, K, V GEMMs are one kernel)
    for it in items:
        ck = (it.kernel.key, it.schedule.to_json())
        if ck not in seen:
            try:
                c = backend.compile(lower(it.kernel, it.schedule, backend.machine))
            except ValueError as e:
                c = Failure("compile", str(e))
            seen[ck] = (c, None if isinstance(c, Failure) else verify_compiled(it.kernel, c, backend, rng))
        c, v = seen[ck]
        ok = v is not None and v.ok
        checks.append({"name": it.kernel.name, "kind": it.kernel.kind, "key": it.kernel.key, "output": it.output,
                       "source": it.source, "verified": ok, "reason": "" if ok else str(c) if v is None else v.reason,
                       "schedule": it.schedule.to_dict()})
        compiled.append(c)
    return Resolved(items, compiled, checks)


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (float64); NaN anywhere is infinite error."""
    g, w = np.asarray(got, np.float64).reshape(-1), np.asarray(want, np.float64).reshape(-1)
    if g.shape != w.shape: raise ValueError(f"output of {g.size} elements, reference {w.size}")
    if not np.isfinite(g).all(): return float("inf")
    return float(np.max(np.abs(g - w)) / max(1e-30, float(np.max(np.abs(w)))))


# ---- cpu: the launches one by one on the host --------------------------------------------
def run_host(r: Resolved, model: Model, backend, reps: int = 5) -> tuple[np.ndarray, list[float], list[float]]:
    """The output, wall-clock seconds of the whole sequence per run, and each kernel's
    median (the backend's timer). Buffers live where the graph's would
    (``graph.plan_buffers``: an intermediate's bytes reused after its last reader), so a
    wrong reuse shows here as a wrong result."""
    from superopt.backends.base import Failure
    from superopt.backends.cuda.graph import buffer_specs, plan_buffers
    bad = [c["name"] for c, x in zip(r.checks, r.compiled) if isinstance(x, Failure) or not c["verified"]]
    if bad: raise RuntimeError(f"kernels {bad} did not verify: nothing to run")
    final = r.items[-1].output
    meta = buffer_specs(r.items, model.arrays)
    plan = plan_buffers(r.items, {n: m[0] for n, m in meta.items()}, [final])
    slots = [np.empty(n, np.uint8) for n in plan.sizes]

    def view(n: str) -> np.ndarray:
        nb, d = meta[n]
        return slots[plan.slot[n]][:nb].view(d)
    for n, a in model.arrays.items():
        if n in plan.slot: view(n)[:] = a.reshape(-1)
    for n in meta:
        if n not in model.arrays: view(n).view(np.uint8)[:] = 0xFF   # poison, as on the device

    def once() -> None:
        for it, c in zip(r.items, r.compiled):
            got = backend.run(c, [view(n) for n in it.inputs], view(it.output))
            if isinstance(got, Failure): raise RuntimeError(f"kernel {it.kernel.name}: {got}")
    once()
    out = view(final).copy()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter(); once(); times.append(time.perf_counter() - t0)  # noqa: E702
    per = []
    for it, c in zip(r.items, r.compiled):   # each alone, on the model's own intermediates
        ins = [np.ascontiguousarray(view(n)) for n in it.inputs]
        t = backend.time(c, ins, np.empty(meta[it.output][0] // meta[it.output][1].itemsize, meta[it.output][1]))
        per.append(t.median_s if not isinstance(t, Failure) else float("nan"))
    return out, times, per


# ---- cuda: one graph -----------------------------------------------------------------------
def run_graph(r: Resolved, model: Model, machine, reps: int) -> dict:
    """Build the model's graph, run it eagerly once, capture, replay; outputs and times."""
    from superopt.backends.cuda.graph import ModelGraph
    final = r.items[-1].output
    with ModelGraph(r.items, model.arrays, [final], machine, programs=[c.program for c in r.compiled]) as g:
        g.run_eager()
        eager_out = g.output()
        g.buffer(final).fill_bytes(0xFF)       # the replay must write every element again
        g.capture()
        g.replay()
        out = g.output()
        same = bool(np.array_equal(out.view(np.uint8), eager_out.view(np.uint8)))
        res = {"device": g.dev.name, "graph_nodes": g.nodes, "device_bytes": g.plan.total_bytes,
               "buffers_bytes": sum(m[0] for m in g.meta.values()), "graph_equals_eager": same, "out": out}
        res["ours_s"] = statistics.median(g.time_graph(reps, flush=True))
        res["ours_warm_s"] = statistics.median(g.time_graph(reps, flush=False))
        res["ours_eager_s"] = statistics.median(g.time_eager(reps))
        res["per_kernel_s"] = g.time_kernels()
    return res


# ---- torch -----------------------------------------------------------------------------------
def torch_reference(model: Model) -> np.ndarray:
    """The model in torch at fp32 (TF32 off) on the same arrays, as float64."""
    import torch
    mm, cd = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        t = {k: (v.float() if v.is_floating_point() else v) for k, v in model.torch_inputs(torch).items()}
        with torch.no_grad():
            return model.torch_forward(torch, t).double().cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = mm, cd


def torch_eager_s(model: Model, l2_bytes: int, reps: int) -> float:
    import torch
    from superopt.vendor import time_torch
    t = model.torch_inputs(torch)
    with torch.no_grad():
        return statistics.median(time_torch(lambda: model.torch_forward(torch, t), reps, l2_bytes))


def torch_compiled_s(model: Model, l2_bytes: int, reps: int, mode: str) -> tuple[float, float]:
    """(median seconds, compile seconds: the first call, synchronized) of torch.compile."""
    import torch
    from superopt.vendor import time_torch
    t = model.torch_inputs(torch)
    fn = torch.compile(lambda x: model.torch_forward(torch, x), mode=mode)
    with torch.no_grad():
        t0 = time.perf_counter(); fn(t); torch.cuda.synchronize(); compile_s = time.perf_counter() - t0  # noqa: E702
        return statistics.median(time_torch(lambda: fn(t), reps, l2_bytes)), compile_s


# ---- one model -------------------------------------------------------------------------------
def measure(name: str, a, save=lambda e: None) -> dict:
    """One model's entry; ``save(entry)`` after every phase, so a later failure keeps it."""
    from superopt import runtime
    model = MODELS[name](small=a.small)
    e: dict = {"model": name, "small": a.small, "ours_s": None, "torch_s": None, "torch_compile_s": None}
    on_miss = "tune" if a.tune_budget else "hand"
    rt = runtime.Runtime(a.backend, a.cache, on_miss, tune_budget_s=a.tune_budget or 5.0)
    try:
        t0 = time.perf_counter()
        items = resolve(model, rt)
        resolve_s = time.perf_counter() - t0
        r = check_items(items, rt.backend)
        src = Counter(c["source"] for c in r.checks)
        e.update(kernels=len(items), model_kernels=sum("__" not in it.output for it in items), schedules=dict(src), per_kernel=r.checks,
                 all_verified=all(c["verified"] for c in r.checks), tuning_s=_tuning_s(a, src, resolve_s))
        save(e)
        if a.backend == "cpu":
            out, times, per = run_host(r, model, rt.backend, a.repeat)
            out = to_values(out, items[-1].kernel.output.dtype)
            e.update(ours_s=statistics.median(times), kernels_sum_s=sum(per), timer="wall clock, whole sequence")
            for c, t in zip(e["per_kernel"], per): c["time_s"] = t
            e.update(reference="numpy-float64", rel_err=rel_err(out, model.reference()))
            return e
        if not e["all_verified"]:
            e["error"] = "not run: kernels failed verification: " + ", ".join(c["name"] for c in r.checks if not c["verified"])
            return e
        g = run_graph(r, model, rt.backend.machine, a.repeat)
        out = to_values(g.pop("out"), items[-1].kernel.output.dtype)
        per = g.pop("per_kernel_s")
        for c, t in zip(e["per_kernel"], per): c["time_s"] = t
        e.update(g, kernels_sum_s=sum(per), timer="CUDA events; L2 flushed before each replay (ours_warm_s: not)")
    finally:
        rt.close()
    save(e)
    ref = model.reference() if name == "embed" else torch_reference(model)
    e.update(reference="numpy-float64" if name == "embed" else "torch-fp32", rel_err=rel_err(out, ref))
    save(e)
    e["torch_s"] = torch_eager_s(model, rt.backend.machine.l2_bytes, a.repeat)
    e["l2_bytes"] = rt.backend.machine.l2_bytes
    return e


def measure_compiled(name: str, a, l2_bytes: int) -> dict:
    """torch.compile's figures for one model (a second pass: every model's own figures come first)."""
    model = MODELS[name](small=a.small)
    t, c = torch_compiled_s(model, l2_bytes, a.repeat, a.compile_mode)
    return {"torch_compile_s": t, "torch_compile_compile_s": c, "torch_compile_mode": a.compile_mode}


def _tuning_s(a, sources: Counter, resolve_s: float) -> float | None:
    if a.tune_budget: return resolve_s          # schedules resolved with tuning on a miss: this run's time
    if a.cache_tuning_s is not None: return a.cache_tuning_s
    return 0.0 if set(sources) <= {"hand", "plan"} else None


def _write(path: str, doc: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f: json.dump(doc, f, indent=1, default=float)
    os.replace(path + ".tmp", path)


def _child(name: str, a, argv: list[str], limit_s: float, phase: str = "ours", l2_bytes: int = 0) -> dict:
    """``measure`` (phase 'ours') or ``measure_compiled`` ('compile') in a child process for
    at most ``limit_s``; what it saved survives a crash."""
    part = f"{a.out}.{name}.part"
    if os.path.exists(part): os.remove(part)
    rest = [x for i, x in enumerate(argv) if not _dropped(argv, i)]
    cmd = [sys.executable, *(["-P"] if sys.flags.safe_path else []), os.path.abspath(__file__), *rest,
           "--models", name, "--part", part, "--phase", phase, "--l2-bytes", str(l2_bytes)]
    t0 = time.perf_counter()
    # a session of its own: on a time-out its whole group goes (the CUDA worker, torch's autotuning processes)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = p.communicate(timeout=limit_s)
        why = "" if p.returncode == 0 else f"exit {p.returncode}: {err.strip()[-1500:]}"
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        try:
            _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:   # a process that left the group still holds the pipe
            err = ""
        why = f"timed out after {limit_s:.0f} s"
    sys.stderr.write(err[-3000:])
    e = json.load(open(part)) if os.path.exists(part) else {"model": name}
    if os.path.exists(part): os.remove(part)
    if why: e["error"] = (e.get("error", "") + "; " if e.get("error") else "") + why
    e["wall_s"] = time.perf_counter() - t0
    return e


def _dropped(argv: list[str], i: int) -> bool:
    """--models, --part, --phase, --l2-bytes (and their values) are set per child."""
    own = ("--models", "--part", "--phase", "--l2-bytes")
    x = argv[i]
    if x.startswith(tuple(o + "=" for o in own)): return True
    return x in own or (i > 0 and argv[i - 1] in own)


def _run_one(name: str, a, argv: list[str], isolate: bool, left: float, phase: str, l2_bytes: int = 0) -> dict:
    """One model's phase, in a child process or here; never raises (one model's failure must not lose the others)."""
    if left < 5: return {"model": name, "error": f"not run ({phase}): the run's --budget of {a.budget:.0f} s was spent"}
    if isolate: return _child(name, a, argv, min(a.model_timeout, left), phase, l2_bytes)   # never past the budget
    try:
        return measure(name, a) if phase == "ours" else measure_compiled(name, a, l2_bytes)
    except Exception as x:  # noqa: BLE001
        return {"model": name, "error": f"{type(x).__name__}: {x}"}


def _say(e: dict) -> None:
    print(f"{e['model']}: ours {e.get('ours_s')} s, torch {e.get('torch_s')} s, compile {e.get('torch_compile_s')} s, "
          f"rel_err {e.get('rel_err')}" + (f"  ({e['error'][:200]})" if e.get("error") else "")
          + (f"  (torch.compile: {e['torch_compile_error'][:200]})" if e.get("torch_compile_error") else ""), flush=True)


def table(models: list[dict]) -> str:
    def ms(x): return f"{x * 1e3:9.3f}" if isinstance(x, (int, float)) and x == x else f"{'-':>9}"

    def ratio(a, b): return f"{b / a:6.2f}x" if a and b else f"{'-':>7}"
    lines = [f"{'model':<13} {'kern':>4} {'ours ms':>9} {'sum ms':>9} {'torch ms':>9} {'compile':>9} {'vs torch':>8} "
             f"{'vs comp':>8} {'rel_err':>8}  note"]
    for e in models:
        err = e.get("rel_err")
        lines.append(f"{e['model']:<13} {e.get('kernels', '-'):>4} {ms(e.get('ours_s'))} {ms(e.get('kernels_sum_s'))} "
                     f"{ms(e.get('torch_s'))} {ms(e.get('torch_compile_s'))} {ratio(e.get('ours_s'), e.get('torch_s')):>8} "
                     f"{ratio(e.get('ours_s'), e.get('torch_compile_s')):>8} "
                     f"{(f'{err:8.1e}' if err is not None else '-'):>8}  "
                     + ("graph != eager! " if e.get("graph_equals_eager") is False else "") + (e.get("error") or "")[:60]
                     + (f"torch.compile: {e['torch_compile_error'][:40]}" if e.get("torch_compile_error") else ""))
    return "\n".join(lines)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--models", default=",".join(ORDER))
    ap.add_argument("--small", action="store_true", help="the small (CI) shapes")
    ap.add_argument("--cache", default=None, help="kernel cache (default: the user's)")
    ap.add_argument("--tune-budget", type=float, default=0.0, help="tune each cache miss for this many seconds (0: hand rule)")
    ap.add_argument("--cache-tuning-s", type=float, default=None, help="the tuning time of the run that filled --cache")
    ap.add_argument("--compile-mode", default="max-autotune", help="torch.compile mode ('none': skip torch.compile)")
    ap.add_argument("--repeat", type=int, default=30, help="timing samples per median")
    ap.add_argument("--model-timeout", type=float, default=150.0, help="seconds per model (cuda: each in a child process)")
    ap.add_argument("--budget", type=float, default=0.0, help="seconds for the whole run (0: none); models past it are not run")
    ap.add_argument("--isolate", choices=["auto", "yes", "no"], default="auto", help="a child process per model (auto: on cuda)")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)   # a child: write this model's entry here
    ap.add_argument("--phase", default="ours", choices=["ours", "compile"], help=argparse.SUPPRESS)
    ap.add_argument("--l2-bytes", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", required=True)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse(argv)
    names = a.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown: raise SystemExit(f"unknown models {unknown} (known: {', '.join(MODELS)})")
    if a.part:   # a child: one model, one phase
        save = lambda e: _write(a.part, e)  # noqa: E731
        save(measure(names[0], a, save) if a.phase == "ours" else measure_compiled(names[0], a, a.l2_bytes))
        return 0
    doc = {"command": "python bench/e2e.py " + " ".join(argv), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "backend": a.backend, "host": platform.node(), "load_avg_before": os.getloadavg(), "models": []}
    isolate = a.isolate == "yes" or (a.isolate == "auto" and a.backend == "cuda")
    start = time.perf_counter()
    left = lambda: a.budget - (time.perf_counter() - start) if a.budget else float("inf")  # noqa: E731
    for name in names:   # pass 1: ours, torch eager, rel_err of every model
        e = _run_one(name, a, argv, isolate, left(), "ours")
        doc["models"].append(e)
        _write(a.out, {**doc, "partial": True})
        _say(e)
    if a.backend == "cuda" and a.compile_mode != "none":   # pass 2: torch.compile, as the budget allows
        for e in doc["models"]:
            if e.get("torch_s") is None: continue
            c = _run_one(e["model"], a, argv, isolate, left(), "compile", e.get("l2_bytes", 0))
            e.update({k: v for k, v in c.items() if k.startswith("torch_compile")})
            if c.get("error"): e["torch_compile_error"] = c["error"]
            _write(a.out, {**doc, "partial": True})
            _say(e)
    doc["load_avg_after"] = os.getloadavg()
    _write(a.out, doc)
    print(f"wrote {a.out}")
    print(table(doc["models"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
