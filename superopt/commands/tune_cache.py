"""``superopt tune-cache DIR``: tune every captured kernel into the kernel cache (resumable)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from superopt.commands.args import positive_float, positive_int
from superopt.cli import UserError
from superopt.commands.cache import add_cache_arg, console

HELP = "tune every kernel of a captured model into the cache (prioritized, parallel, resumable)"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="capture directory (manifest.json from `superopt capture`) or a folder of kernel files")
    p.add_argument("--budget-per-kernel", type=positive_float, default=10.0, metavar="S", help="tuning budget per kernel, seconds")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="parallel tuning processes (on cpu, concurrent timings disturb each other: keep 1 for "
                        "final numbers)")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--method", choices=("z3", "hand"), default="z3",
                   help="z3: the solver's candidates measured against the hand rules, fastest verified kept (default); "
                        "hand: hand rules only")
    p.add_argument("--gpus", default=None, metavar="LIST",
                   help="comma-separated GPU ordinals: one worker per GPU, each timing on its own device")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="tune on a Ray cluster: ADDRESS of its head (host:port, or 'auto' for the one `ray start` "
                        "made here); without ADDRESS a local cluster on this machine. Needs the ray extra")
    p.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                   help="kill a kernel's tuning after S seconds (default 4 x budget + 120)")
    p.add_argument("--retry-failed", action="store_true", help="retry kernels whose tuning failed before")
    p.add_argument("--summary", metavar="FILE", default=None,
                   help="also write the summary table as Markdown (default DIR/summary-BACKEND.md)")
    p.add_argument("--tune-fn", default=None, metavar="MODULE:FUNC", help=argparse.SUPPRESS)  # plug-in / tests
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object (keys: backend, device, kernels [name, key, kind, count, "
                        "baseline_s, measured_s, speedup, method, status, error], whole_model {before_s, after_s, "
                        "kernels_counted}, interrupted); progress lines stay on stderr")
    add_cache_arg(p)


def run(args: argparse.Namespace) -> int:
    from superopt.cache import CacheError, default_path
    from superopt.tune_cache import identify, load_jobs, prioritize, run_batch
    if args.workers < 1: raise UserError("--workers must be >= 1")
    if args.budget_per_kernel <= 0: raise UserError("--budget-per-kernel must be > 0")
    try:
        jobs = load_jobs(args.dir)
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None
    cache_path = Path(args.cache) if args.cache else default_path()
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    if gpus is not None and not gpus: raise UserError("--gpus needs at least one GPU ordinal")
    try:
        device, machine = identify(args.backend)
    except Exception as e:  # no such backend, or its device cannot start here
        raise UserError(f"backend {args.backend!r} is not usable here: {' '.join(str(e).split())[:200]}") from None
    jobs = prioritize(jobs, machine)
    opts = dict(device=device, gpus=gpus, method=args.method)
    out = console()
    if args.ray is not None and gpus is not None:
        raise UserError("--ray and --gpus: choose one (on Ray, each GPU of the cluster is a timing slot)")
    try:
        if args.ray is not None:
            res = _on_ray(jobs, cache_path, args, device)
        elif args.no_progress or not sys.stderr.isatty():
            res = run_batch(jobs, cache_path, args.backend, args.budget_per_kernel, args.workers, args.timeout,
                            args.retry_failed, args.tune_fn, progress=_plain_progress(jobs), **opts)
        else:
            res = _with_bar(jobs, cache_path, args, opts)
    except CacheError as e:
        raise UserError(str(e)) from None
    table, md = summary(res, args.backend, device)
    if not args.json: out.print(table)
    path = Path(args.summary) if args.summary else Path(args.dir) / f"summary-{args.backend}.md"
    try:
        write_atomic(path, md)
        if not args.json: out.print(f"summary written to {path}")
    except OSError as e:
        print(f"superopt tune-cache: could not write {path}: {e}", file=sys.stderr)
    if args.json: print(json.dumps(summary_json(res, args.backend, device)))
    if res.interrupted:
        print("superopt tune-cache: interrupted; every finished kernel is in the cache; rerun to resume", file=sys.stderr)
        return 130
    return 1 if [o for o in res.failed if not o.skipped] else 0


def _on_ray(jobs, cache_path, args, device):
    try:
        from superopt.cluster import run_batch_ray
        import ray  # noqa: F401
    except ImportError:
        raise UserError("--ray needs ray: pip install 'superopt[ray]'") from None
    progress = _plain_progress(jobs)   # plain lines with ETA (a bar would fight the workers' logs)
    try:
        return run_batch_ray(jobs, cache_path, args.backend, args.budget_per_kernel, args.ray or None, args.timeout,
                             args.retry_failed, args.tune_fn, progress=progress, device=device, method=args.method)
    except ConnectionError as e:
        raise UserError(f"cannot reach the Ray cluster at {args.ray!r}: {' '.join(str(e).split())[:200]}") from None


def _plain_progress(jobs):
    last = [-1]
    t0 = time.monotonic()

    def report(done: int, total: int, running: list[str]) -> None:
        if done != last[0]:
            eta = ""
            if 0 < done < total:
                eta = f"; eta {(time.monotonic() - t0) / done * (total - done):.0f} s"
            print(f"tune-cache: {done}/{total} kernels tuned{eta}" + (f"; running {', '.join(running)}" if running else ""),
                  file=sys.stderr, flush=True)
            last[0] = done
    return report


def _with_bar(jobs, cache_path, args, opts):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from superopt.tune_cache import run_batch
    with Progress(TextColumn("[bold]tune-cache"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.description}"), transient=False) as bar:
        task = bar.add_task("", total=None)

        def report(done: int, total: int, running: list[str]) -> None:
            bar.update(task, completed=done, total=total, description=", ".join(running)[:60])
        return run_batch(jobs, cache_path, args.backend, args.budget_per_kernel, args.workers, args.timeout,
                         args.retry_failed, args.tune_fn, progress=report, **opts)


def _t(s: float | None) -> str:
    if s is None: return "-"
    return f"{s * 1e6:,.1f} us" if s < 1e-2 else f"{s * 1e3:,.2f} ms"


def summary(res, backend: str, device: str):
    """(rich table, Markdown text) of the batch: per kernel before/after/speed-up/method, and the whole model."""
    from rich.table import Table
    cols = ["kernel", "key", "kind", "count", "before", "after", "speed-up", "method", "status"]
    rows = []
    for o in sorted(res.outcomes, key=lambda o: -o.job.priority):
        e = o.entry
        status = ("cached" if o.skipped else "tuned") if e is not None else f"failed: {o.error}"[:70]
        rows.append([o.job.name, o.job.key[:8], o.job.kind, str(o.job.count), _t(e.baseline_s if e else None),
                     _t(e.measured_s if e else None), f"{e.speedup:.2f}x" if e and e.speedup else "-",
                     e.method if e else "-", status])
    before, after, n = res.model_estimate()
    total = (f"whole model ({n} of {len(res.outcomes)} kernels, time x count): before {_t(before)}, after {_t(after)}"
             + (f", speed-up {before / after:.2f}x" if after else ""))
    t = Table(title=f"tune-cache on {backend} ({device})", caption=total)
    for c in cols:
        t.add_column(c, justify="right" if c in ("count", "before", "after", "speed-up") else "left",
                     overflow="fold", no_wrap=c not in ("kernel", "status"))
    for r in rows: t.add_row(*r)
    md = [f"# tune-cache on {backend} ({device})", "", "| " + " | ".join(cols) + " |",
          "|" + "|".join("---" for _ in cols) + "|"]
    md += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    md += ["", total, ""]
    notes = [f"- {o.job.name} ({o.job.key[:8]}): {o.entry.note}" for o in res.outcomes if o.entry and o.entry.note]
    if notes: md += ["Tuner notes:", ""] + notes + [""]
    return t, "\n".join(md)


def summary_json(res, backend: str, device: str) -> dict:
    """``tune-cache --json``: the summary table's rows and the whole-model estimate."""
    rows = []
    for o in sorted(res.outcomes, key=lambda o: -o.job.priority):
        e = o.entry
        rows.append(dict(name=o.job.name, key=o.job.key, kind=o.job.kind, count=o.job.count,
                         baseline_s=e.baseline_s if e else None, measured_s=e.measured_s if e else None,
                         speedup=e.speedup if e else None, method=e.method if e else None,
                         status=("cached" if o.skipped else "tuned") if e is not None else "failed", error=o.error))
    before, after, n = res.model_estimate()
    return dict(backend=backend, device=device, kernels=rows, interrupted=res.interrupted,
                whole_model=dict(before_s=before, after_s=after, kernels_counted=n))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path`` and rename it over: a reader (or a killed run)
    never sees half a summary."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
