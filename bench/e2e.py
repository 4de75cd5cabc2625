"""Whole models end to end against torch: each model realized by the runtime
(``superopt.runtime.Runtime.run_steps``: every kernel from the tuned cache, a plan's steps,
tuning on a miss with ``--tune-budget`` or the hand rule: ``schedules`` says which per
kernel) as ONE CUDA graph (the runtime's own ``backends/cuda/graph.py`` path, not a copy),
next to torch eager and ``torch.compile(mode="max-autotune")`` on the same inputs in the same run.

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
- ``tuning_s``: the tuning time this run spent (``--tune-budget`` seconds per missed kernel,
  ``--tune-limit`` seconds at most per model: later misses take the hand rule, counted in
  ``tune_skipped``), else ``--cache-tuning-s``
  (the time of the tune-cache run that filled ``--cache``), else 0 where every kernel ran
  its hand rule (None where cached schedules of unknown tuning time were used).

On cuda each model runs in a child process (a crash or a time-out costs that model only;
what it measured before is kept), in two passes under one ``--budget``: first ours, torch
eager and rel_err of every model, then torch.compile of each (its autotuning is the slow
part; a failure or a time-out is recorded as ``torch_compile_error``, never fatal).
``--backend cpu`` (small shapes) runs the same runtime path without a graph: the launch plan
kernel by kernel on the host, timed by wall clock, the reference numpy's (float64), no torch.

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

import numpy as np

from superopt.backends.base import Failure
from superopt.ir.dtype import to_values
from superopt.ir.kernelize import kernelize
from superopt.kernels.models import MODELS, Model

ORDER = ("embed", "resnet_block", "bottleneck", "bert_layer")   # small to large: a time-out costs the last


def prepare(model: Model, rt) -> tuple[list, object, list[dict]]:
    """The model's steps, the runtime's ``Model`` for them (``Runtime.prepare``: each kernel's
    schedule from the cache, tuning or the hand rule, a kernel the model plans as several
    expanded into its steps, every kernel compiled and verified once, the launch plan) and a
    check row per launch."""
    steps = kernelize(model.out.node)
    m = rt.prepare(steps)
    checks = [{"name": it.kernel.name, "kind": it.kernel.kind, "key": it.kernel.key, "output": it.output,
               "source": it.source, "verified": not isinstance(c, Failure), "reason": str(c) if isinstance(c, Failure) else "",
               "schedule": it.schedule.to_dict()} for it, c in zip(m.plan.items, m.compiled)]
    return steps, m, checks


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (float64); NaN anywhere is infinite error."""
    g, w = np.asarray(got, np.float64).reshape(-1), np.asarray(want, np.float64).reshape(-1)
    if g.shape != w.shape: raise ValueError(f"output of {g.size} elements, reference {w.size}")
    if not np.isfinite(g).all(): return float("inf")
    return float(np.max(np.abs(g - w)) / max(1e-30, float(np.max(np.abs(w)))))


# ---- cpu: the launch plan kernel by kernel on the host ---------------------------------------
def run_host(steps: list, m, model: Model, rt, reps: int = 5) -> tuple[np.ndarray, list[float], list[float]]:
    """The output (``Runtime.run_steps``: the launch plan in host memory, an intermediate's
    bytes reused after its last reader, so a wrong reuse shows as a wrong result), wall-clock
    seconds of the whole realize per run, and each kernel's median (the backend's timer, on
    the model's own intermediates)."""
    if m.failed: raise RuntimeError(f"kernels {m.failed} did not verify: nothing to run")
    final = steps[-1].output
    out = rt.run_steps(steps, model.arrays)[final]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter(); rt.run_steps(steps, model.arrays); times.append(time.perf_counter() - t0)  # noqa: E702
    per: list[float] = []

    def timed(i: int, ins: list, o: np.ndarray) -> None:   # each launch run, then timed alone on its inputs
        rt.launch(m, i, ins, o)
        t = rt.backend.time(m.compiled[i], [np.ascontiguousarray(x) for x in ins], np.empty_like(o))
        per.append(t.median_s if not isinstance(t, Failure) else float("nan"))
    m.plan.run_host({pn: model.arrays[pn] for pn in m.plan.inputs}, timed)
    return out, times, per


# ---- cuda: one graph, the runtime's -------------------------------------------------------
def run_graph(steps: list, m, model: Model, rt, reps: int) -> dict:
    """The model realized by the runtime (its graph built, captured and replayed:
    ``Runtime.run_steps``), the same launches issued one by one into the graph's buffers
    (must give the same bytes), then the graph's times."""
    final = steps[-1].output
    out = rt.run_steps(steps, model.arrays)[final].reshape(-1)
    g = m.graph
    if g is None: raise RuntimeError(f"not one CUDA graph: {m.no_graph}")
    g.buffer(final).fill_bytes(0xFF)       # the launches one by one must write every element again
    g.run_eager()
    eager_out = g.output()
    same = bool(np.array_equal(out.view(np.uint8), eager_out.view(np.uint8)))
    res = {"device": g.dev.name, "graph_nodes": g.nodes, "device_bytes": g.plan.total_bytes,
           "buffers_bytes": sum(x[0] for x in g.meta.values()), "graph_equals_eager": same, "out": out,
           "graph_replays": rt.stats["graph_replays"]}
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
    rt = runtime.Runtime(a.backend, a.cache, on_miss, tune_budget_s=a.tune_budget or 5.0, tune_limit_s=a.tune_limit or None)
    try:
        t0 = time.perf_counter()
        steps, m, checks = prepare(model, rt)
        items = m.plan.items
        src = Counter(c["source"] for c in checks)
        e.update(kernels=len(items), model_kernels=len(steps), schedules=dict(src), per_kernel=checks,
                 all_verified=not m.failed, tuning_s=_tuning_s(a, src, rt.tuning_s), prepare_s=time.perf_counter() - t0,
                 tune_skipped=rt.stats["tune_skipped"])
        save(e)
        if a.backend == "cpu":
            out, times, per = run_host(steps, m, model, rt, a.repeat)
            out = to_values(out, items[-1].kernel.output.dtype)
            e.update(ours_s=statistics.median(times), kernels_sum_s=sum(per), timer="wall clock, whole realize (Runtime.run_steps)")
            for c, t in zip(e["per_kernel"], per): c["time_s"] = t
            e.update(reference="numpy-float64", rel_err=rel_err(out, model.reference()))
            return e
        if m.failed:
            e["error"] = "not run: kernels failed verification: " + ", ".join(m.failed)
            return e
        g = run_graph(steps, m, model, rt, a.repeat)
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
    """torch.compile's figures for one model (a second pass: every model's own figures come
    first); a failure is recorded (``error``), never fatal."""
    model = MODELS[name](small=a.small)
    try:
        t, c = torch_compiled_s(model, l2_bytes, a.repeat, a.compile_mode)
    except Exception as x:  # noqa: BLE001 - torch.compile's failure is a result of the run
        return {"torch_compile_s": None, "torch_compile_mode": a.compile_mode, "error": f"{type(x).__name__}: {str(x)[:1500]}"}
    return {"torch_compile_s": t, "torch_compile_compile_s": c, "torch_compile_mode": a.compile_mode}


def _tuning_s(a, sources: Counter, tuned_s: float) -> float | None:
    if a.tune_budget: return tuned_s            # misses tuned in this run: the runtime's tuning time
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
    ap.add_argument("--tune-limit", type=float, default=0.0,
                    help="the most seconds one model's tuning may take (later misses: hand rule; 0: no limit)")
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
