"""``superopt cache ls|show|export|import|prune``: inspect and maintain the kernel cache."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from superopt.commands.args import nonneg_float
from superopt.cache import Cache, CacheError, Candidate, Entry, default_path
from superopt.cli import UserError

HELP = "inspect and maintain the kernel cache (ls, show, export, import, prune)"
BACKENDS = ("cpu", "cuda", "emu", "hexagon")
JSON_HELP = ("one JSON object: ls {\"cache\", \"entries\": [ROW]}, show {\"cache\", \"entries\": [ROW + \"candidates\": "
             "[{schedule, method, time_s, samples, verified, note, created}]]}; ROW has the columns of `cache export`")


def add_cache_arg(p: argparse.ArgumentParser) -> None:
    """``--cache PATH``: shared by every command that reads or writes the cache."""
    p.add_argument("--cache", metavar="PATH", default=None,
                   help=f"kernel cache file (default {default_path()}; SUPEROPT_CACHE_DIR moves the dir)")


def open_cache(path: str | None, readonly: bool = False) -> Cache:
    try:
        return Cache(path, readonly=readonly)
    except CacheError as e:
        raise UserError(str(e)) from None


def add_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("ls", help="list cached kernels")
    show = sub.add_parser("show", help="show one cached kernel (by key or unambiguous key prefix) and its candidate log")
    show.add_argument("key")
    show.add_argument("--all", action="store_true", help="every kernel whose key starts with KEY, not only an unambiguous one")
    for sp in (ls, show):
        sp.add_argument("--json", action="store_true", help=JSON_HELP)
    ex = sub.add_parser("export", help="write rows as JSON lines")
    ex.add_argument("file", help="output file, '-' for stdout")
    im = sub.add_parser("import", help="read rows from JSON lines (keeps faster existing rows unless --force)")
    im.add_argument("file", help="input file, '-' for stdin")
    im.add_argument("--force", action="store_true", help="overwrite existing rows")
    pr = sub.add_parser("prune", help="delete unverified, stale-version or old rows")
    pr.add_argument("--older-than", type=nonneg_float, metavar="DAYS", default=None,
                    help="rows (and candidate-log entries) written more than DAYS days ago")
    pr.add_argument("--other-versions", action="store_true", help="rows of other tuner/schedule-format versions")
    pr.add_argument("--keep-unverified", action="store_true")
    pr.add_argument("--failures", action="store_true", help="also forget recorded tuning failures")
    pr.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    pr.add_argument("--yes", action="store_true", help="needed when the prune would delete every row")
    for sp, keys in ((ex, "rows, file"), (im, "written, kept, file"), (pr, "deleted, would_delete, total, log_entries, "
                                                                      "failures_forgotten, dry_run")):
        sp.add_argument("--json", action="store_true", help=f"print one JSON object ({keys})")
    for sp in (ls, show, ex, pr):
        sp.add_argument("--backend", default=None, choices=BACKENDS, help="only rows of this backend")
    for sp in (ls, show, ex, im, pr): add_cache_arg(sp)


def run(args: argparse.Namespace) -> int:
    with open_cache(args.cache, readonly=args.action in ("ls", "show", "export")) as c:
        try:
            return _ACTIONS[args.action](c, args)
        except CacheError as e:
            raise UserError(str(e)) from None


def _fmt_s(t: float | None) -> str:
    if t is None: return "-"
    return f"{t * 1e6:,.1f} us" if t < 1e-2 else f"{t * 1e3:,.2f} ms"


def entry_json(e: Entry) -> dict:
    """A row as JSON: the columns of ``cache export`` (schedule and kernel parsed) plus the speed-up."""
    from dataclasses import asdict
    d = asdict(e)
    d["schedule"] = json.loads(e.schedule)
    d["kernel"] = json.loads(e.kernel) if e.kernel else None
    d["speedup"] = e.speedup
    return d


def candidate_json(c: Candidate) -> dict:
    import json
    return {"schedule": json.loads(c.schedule), "method": c.method, "time_s": c.time_s, "samples": c.samples,
            "verified": c.verified, "note": c.note, "device": c.device, "tuner_version": c.tuner_version, "created": c.created}


def _ls(c: Cache, args) -> int:
    from rich.table import Table
    import json
    rows = c.entries(backend=args.backend)
    if args.json:
        print(json.dumps({"cache": str(c.path), "entries": [entry_json(e) for e in rows]}))
        return 0
    t = Table(title=f"{c.path}: {len(rows)} kernels")
    for col in ("key", "name", "backend", "device", "method", "verified", "baseline", "tuned", "speed-up", "date"):
        t.add_column(col, justify="right" if col in ("baseline", "tuned", "speed-up") else "left")
    for e in rows:
        t.add_row(e.kernel_key[:12], e.name or "", e.backend, e.device[:28], e.method, "yes" if e.verified else "NO",
                  _fmt_s(e.baseline_s), _fmt_s(e.measured_s), f"{e.speedup:.2f}x" if e.speedup else "-", e.created[:19])
    console().print(t)
    return 0


def console():
    """A rich console; wide when writing to a file or pipe so tables are not wrapped."""
    from rich.console import Console
    return Console() if sys.stdout.isatty() else Console(width=200)


def _find(c: Cache, key: str, backend: str | None, every: bool = False) -> list[Entry]:
    """The rows of the one kernel whose key starts with ``key`` (all matching kernels with ``every``)."""
    if not key.strip(): raise UserError("give a kernel key or key prefix (`superopt cache ls` lists them)")
    hits = c.entries(backend=backend, prefix=key)
    if not hits: raise UserError(f"no cached kernel with key {key!r}")
    keys = sorted({e.kernel_key for e in hits})
    if len(keys) > 1 and not every:
        raise UserError(f"key prefix {key!r} matches {len(keys)} kernels ({', '.join(k[:12] for k in keys[:6])}"
                        f"{', ...' if len(keys) > 6 else ''}); give more of the key, or --all")
    return hits


def _show(c: Cache, args) -> int:
    from superopt.ir.kernel import Kernel
    import json
    hits = _find(c, args.key, args.backend, args.all)
    if args.json:
        print(json.dumps({"cache": str(c.path), "entries": [
            {**entry_json(e), "candidates": [candidate_json(x) for x in c.candidates(e.kernel_key, e.backend, e.device)]}
            for e in hits]}))
        return 0
    for e in hits:
        print(f"key {e.kernel_key}  backend {e.backend}  device {e.device}")
        if e.kernel:
            k = Kernel.from_dict(json.loads(e.kernel))
            print(k.describe())
            print("schedule:", e.schedule_obj().describe(k))
        else:
            print("schedule:", e.schedule_obj().describe())
        print(f"method {e.method}  verified {'yes' if e.verified else 'NO'}  tuned {_fmt_s(e.measured_s)}  "
              f"modeled {_fmt_s(e.modeled_s)}  baseline {_fmt_s(e.baseline_s)} ({e.baseline_method or '-'})")
        if e.note: print(f"note: {e.note}")
        print(f"tuner {e.tuner_version}  schedule format v{e.schedule_version}  date {e.created}")
        _print_log(c.candidates(e.kernel_key, e.backend, e.device))
        print()
    return 0


def _print_log(cands: list[Candidate]) -> None:
    """The candidate log: every schedule timed for this kernel, per tuning run, fastest first."""
    if not cands:
        print("candidate log: empty (tuned before the log existed, or imported)")
        return
    print(f"candidate log: {len(cands)} timed schedules")
    print(f"  {'date':<20}{'method':<8}{'time':>12}{'samples':>8}  {'verified':<9}schedule")
    for x in cands:
        sched = x.schedule if len(x.schedule) <= 90 else x.schedule[:87] + "..."
        note = f"  ({x.note})" if x.note else ""
        print(f"  {x.created[:19]:<20}{x.method:<8}{_fmt_s(x.time_s):>12}{x.samples if x.samples is not None else '-':>8}  "
              f"{'yes' if x.verified else 'NO':<9}{sched}{note}")


def _export(c: Cache, args) -> int:
    if args.file == "-":
        n = c.export_jsonl(sys.stdout, backend=args.backend)
    else:
        with open(args.file, "w") as f:
            n = c.export_jsonl(f, backend=args.backend)
    if args.json and args.file != "-": print(json.dumps({"rows": n, "file": args.file}))
    else: print(f"exported {n} rows", file=sys.stderr)   # stdout may be the rows themselves
    return 0


def _import(c: Cache, args) -> int:
    if args.file == "-":
        w, k = c.import_jsonl(sys.stdin, force=args.force)
    else:
        if not Path(args.file).is_file(): raise UserError(f"{args.file}: no such file")
        with open(args.file) as f:
            w, k = c.import_jsonl(f, force=args.force)
    if args.json: print(json.dumps({"written": w, "kept": k, "file": args.file}))
    else: print(f"imported {w} rows, kept {k} existing rows that were as good or better")
    return 0


def _prune(c: Cache, args) -> int:
    how = dict(older_than_days=args.older_than, other_versions=args.other_versions,
               unverified=not args.keep_unverified, backend=args.backend)
    n, total = c.prune(**how, dry_run=True), len(c)
    logs = c.prune_candidates(args.older_than, args.backend, dry_run=True) if args.older_than is not None else 0
    if args.dry_run:
        if args.json: print(json.dumps(dict(deleted=0, would_delete=n, total=total, log_entries=logs, failures_forgotten=0,
                                            dry_run=True)))
        else: print(f"would delete {n} of {total} rows and {logs} candidate-log entries (dry run: nothing deleted)")
        return 0
    if n and n == total and not args.yes:
        raise UserError(f"this prune would delete all {total} rows of {c.path}; pass --yes to do it "
                        "(--dry-run counts without deleting)")
    n = c.prune(**how)
    logs = c.prune_candidates(args.older_than, args.backend) if args.older_than is not None else 0
    forgot = c.clear_failures() if args.failures else 0
    if args.json:
        print(json.dumps(dict(deleted=n, would_delete=n, total=total, log_entries=logs, failures_forgotten=forgot,
                              dry_run=False)))
        return 0
    msg = f"deleted {n} rows"
    if args.older_than is not None: msg += f" and {logs} candidate-log entries"
    if args.failures: msg += f", forgot {forgot} failures"
    print(msg)
    return 0


_ACTIONS = {"ls": _ls, "show": _show, "export": _export, "import": _import, "prune": _prune}
