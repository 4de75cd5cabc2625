"""``superopt script SCRIPT.py``: run an unmodified lazy-Tensor script through the kernel cache
on a backend, and time it end to end against the vendor library.

(``superopt run FILE`` keeps its meaning, one kernel file with one schedule; ``run X.py``
points here.) The script runs as ``__main__`` with ``superopt.runtime`` as the runner: every
realize looks its kernels up in the cache (``--cache``), a miss runs the hand rule or, with
``--on-miss tune``, is tuned now (``--budget`` each) and stored. Running a script executes it:
that is what the user asks for; kernel files it loads still go through ``superopt.io``'s
safe loaders. What the script may define, at top level:

- ``forward()``: the model (returns a Tensor, an array, or a tuple / list / dict of them). It is
  called ``--repeat`` times after the script's own run (warm: every kernel compiled and
  verified once), and the median of those calls is the end-to-end time;
- ``reference()``: the same computation with the vendor library (numpy), timed the same way
  and compared with ``forward()``'s outputs (relative error per dtype as in verification:
  1e-4 fp32, 5e-3 fp16, 1.5e-2 bf16, integers exact); on ``cuda`` a ``reference_torch()``
  (torch on the GPU, where torch and a GPU are present) is timed instead, synchronized.

Without ``forward`` the time is the script's one run (cold, compiles included). The report
adds the cache hits and misses per distinct kernel and per launch."""
from __future__ import annotations

import argparse
import contextlib
import json
import runpy
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from superopt.cli import UserError
from superopt.commands.args import positive_float, positive_int

HELP = "run a lazy-Tensor Python script through the kernel cache on a backend; time it against numpy/torch"
TOLERANCE = {"float16": 5e-3, "bfloat16": 1.5e-2, "float32": 1e-4, "float64": 1e-9}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("script", metavar="SCRIPT", help="a Python script that builds and realizes superopt Tensors")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script (after '--')")
    p.add_argument("--backend", default="cpu", help="backend the kernels run on: cpu, cuda, emu, hexagon (default: cpu)")
    p.add_argument("--cache", metavar="PATH", help="kernel cache file (default: the user's cache dir)")
    p.add_argument("--on-miss", choices=("hand", "tune"), default="hand",
                   help="a kernel not in the cache: run the hand rule (default) or tune it now and store it")
    p.add_argument("--budget", type=positive_float, default=5.0, metavar="S", help="tuning budget per missed kernel (--on-miss tune)")
    p.add_argument("--repeat", type=positive_int, default=5, metavar="N", help="timed calls of forward() and reference() (median)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"script", "backend", "script_status", "cold_s", "time_s", "samples_s", '
                        '"timed", "reference": {"library", "time_s", "ratio", "match", "rel_err"} | null, "kernels": '
                        '{"distinct", "hits", "misses", "launches", "by_source"}}; the script\'s stdout goes to stderr')


def _own_options(args: argparse.Namespace) -> None:
    """Options given after SCRIPT land in script_args (argparse.REMAINDER); take ours back."""
    rest = list(args.script_args)
    takes = {"--backend": ("backend", str), "--cache": ("cache", str), "--on-miss": ("on_miss", str),
             "--budget": ("budget", float), "--repeat": ("repeat", int)}
    while rest:
        a = rest[0]
        if a == "--": rest.pop(0); break  # noqa: E702
        if a in takes and len(rest) > 1:
            name, conv = takes[a]
            try:
                v = conv(rest[1])
            except ValueError:
                raise UserError(f"{a}: bad value {rest[1]!r}") from None
            if conv is not str and not v > 0: raise UserError(f"{a}: must be positive, got {rest[1]!r}")
            if a == "--on-miss" and v not in ("hand", "tune"): raise UserError(f"--on-miss: hand or tune, not {v!r}")
            setattr(args, name, v)
            del rest[:2]
        elif a == "--json": args.json = True; rest.pop(0)  # noqa: E702
        elif a in ("-q", "--quiet"): args.verbosity = -1; rest.pop(0)  # noqa: E702
        elif a in ("-v", "--verbose"): args.verbosity = max(getattr(args, "verbosity", 0), 0) + 1; rest.pop(0)  # noqa: E702
        else: break
    args.script_args = rest


def _arrays(out) -> list[np.ndarray]:
    """A forward()/reference() result as a flat list of arrays (Tensors realized)."""
    if isinstance(out, dict): out = [out[k] for k in sorted(out)]
    if not isinstance(out, (list, tuple)): out = [out]
    return [np.asarray(o.numpy() if hasattr(o, "numpy") and not isinstance(o, np.ndarray) else o) for o in out]


def compare(got: list[np.ndarray], want: list[np.ndarray]) -> tuple[bool, float]:
    """(every output within its dtype's tolerance, the largest relative error (norm-wise))."""
    if len(got) != len(want): return False, float("inf")
    worst, ok = 0.0, True
    for g, w in zip(got, want):
        if g.shape != w.shape: return False, float("inf")
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        if np.isnan(g64).any() != np.isnan(w64).any(): return False, float("inf")
        err = float(np.linalg.norm(np.nan_to_num(g64 - w64)) / max(np.linalg.norm(np.nan_to_num(w64)), 1e-300))
        tol = TOLERANCE.get(g.dtype.name, 0.0 if g.dtype.kind in "iub" else 1e-4)
        worst, ok = max(worst, err), ok and err <= tol
    return ok, worst


def _timed(fn, repeat: int, sync=None) -> tuple[list[float], object]:
    """``repeat`` calls of ``fn`` (seconds each; ``sync`` waits for a device), and the last result."""
    out, samples = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        if sync: sync()
        samples.append(time.perf_counter() - t0)
    return samples, out


def _vendor(ns: dict, backend: str):
    """(library, callable, sync) of the script's reference for this backend, or None."""
    if backend == "cuda" and callable(ns.get("reference_torch")):
        try:
            import torch
            if torch.cuda.is_available(): return "torch", ns["reference_torch"], torch.cuda.synchronize
        except ImportError:
            pass
    if callable(ns.get("reference")): return "numpy", ns["reference"], None
    return None


def _kernels(rt) -> dict:
    """Cache hits and misses: per distinct kernel (its schedule's source) and per launch."""
    sources = [src for _, src in rt.schedules.values()]
    launches = {k: v for k, v in rt.stats.items() if k in ("cache", "hand", "tuned", "plan", "interpreter")}
    missed = [{"key": key, "source": src} for key, (_, src) in rt.schedules.items() if src != "cache"]
    return {"distinct": len(sources), "missed": missed, "hits": sources.count("cache"), "misses": len(sources) - sources.count("cache"),
            "tuned": sources.count("tuned"), "launches": sum(launches.values()), "launch_hits": launches.get("cache", 0),
            "by_source": launches}


def _execute(args, script: Path, rt) -> tuple[int, dict]:
    """Run the script as __main__ under the runtime; (its exit status, its globals)."""
    from superopt.ir import context
    argv, path0, status, ns = sys.argv, sys.path[0], 0, {}
    sys.argv, sys.path[0] = [str(script)] + list(args.script_args), str(script.parent.resolve())
    try:
        with context.use(runner=rt, cache=rt.cache, target=rt.backend.machine):
            try:
                ns = runpy.run_path(str(script), run_name="__main__")
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:
                traceback.print_exc()
                status = 1
    finally:
        sys.argv, sys.path[0] = argv, path0
    return status, ns


def measure_script(args, script: Path) -> dict:
    """Run, time and compare ``script`` (see the module docstring); the report as a dict."""
    from superopt.cache import CacheError
    from superopt.ir import context
    from superopt.runtime import Runtime
    try:
        rt = Runtime(args.backend, args.cache, args.on_miss, tune_budget_s=args.budget)
    except (ValueError, RuntimeError, OSError, CacheError) as e:
        raise UserError(str(e)) from None
    try:
        t0 = time.perf_counter()
        status, ns = _execute(args, script, rt)
        d = {"script": str(script), "backend": args.backend, "script_status": status, "cold_s": time.perf_counter() - t0,
             "time_s": None, "samples_s": [], "timed": "the script's one run (no forward())", "reference": None}
        if status == 0 and callable(ns.get("forward")):
            with context.use(runner=rt, cache=rt.cache, target=rt.backend.machine):
                _arrays(ns["forward"]())   # a first call: anything the script's own run did not realize yet
                samples, out = _timed(lambda: _arrays(ns["forward"]()), args.repeat)
            d.update(time_s=statistics.median(samples), samples_s=samples, timed=f"forward(), median of {args.repeat} warm calls")
            vendor = _vendor(ns, args.backend)
            if vendor is not None: d["reference"] = _reference(vendor, out, d["time_s"], args.repeat)
        elif status == 0:
            d["time_s"] = d["cold_s"]
        d["kernels"] = _kernels(rt)
        d["cache"] = str(getattr(rt.cache, "path", "") or "")
        return d
    finally:
        rt.close()


def _reference(vendor, out: list[np.ndarray], ours_s: float, repeat: int) -> dict:
    from superopt.baseline import ratio_phrase
    lib, fn, sync = vendor
    _timed(fn, 1, sync)   # a first call: the library's own warm-up (thread pools, allocations)
    samples, want = _timed(lambda: _arrays(fn()), repeat, sync)
    t = statistics.median(samples)
    ok, err = compare(out, [np.asarray(w.detach().cpu().numpy()) if hasattr(w, "detach") else w for w in want])
    return {"library": lib, "time_s": t, "samples_s": samples, "ratio": ratio_phrase(ours_s, t, lib), "match": ok, "rel_err": err}


def run(args: argparse.Namespace) -> int:
    _own_options(args)
    script = Path(args.script)
    if not script.is_file(): raise UserError(f"{script}: no such file")
    if script.suffix != ".py": raise UserError(f"{script}: not a Python script (.py); kernel files: superopt run FILE")
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet_stdout:
        d = measure_script(args, script)
    ref = d["reference"]
    status = d["script_status"] or (1 if ref is not None and not ref["match"] else 0)
    if args.json:
        print(json.dumps(d))
        return status
    print(report(d))
    return status


def report(d: dict) -> str:
    k = d["kernels"]
    lines = [f"script {d['script']} on {d['backend']}" + (f": exited with status {d['script_status']}" if d["script_status"] else ""),
             f"first run: {d['cold_s'] * 1e3:,.1f} ms (compiling and verifying each kernel once)"]
    if d["time_s"] is not None: lines.append(f"time: {d['time_s'] * 1e3:,.3f} ms ({d['timed']})")
    r = d["reference"]
    if r: lines.append(f"{r['library']}: {r['time_s'] * 1e3:,.3f} ms; superopt is {r['ratio']}; outputs "
                       + (f"match (relative error {r['rel_err']:.2g})" if r["match"] else f"DIFFER (relative error {r['rel_err']:.3g})"))
    elif d["time_s"] is not None and d["timed"].startswith("forward"):
        lines.append("no reference() in the script: nothing to compare with")
    lines.append(f"kernels: {k['distinct']} distinct, {k['hits']} cache hits, {k['misses']} misses"
                 + (f" ({k['tuned']} tuned now)" if k["tuned"] else "") + f"; {k['launches']} launches "
                 + ", ".join(f"{n} {s}" for s, n in sorted(k["by_source"].items())))
    if d.get("cache"): lines.append(f"cache: {d['cache']}")
    return "\n".join(lines)
