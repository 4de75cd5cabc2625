"""``superopt cache ls|show|export|import|prune``: inspect and maintain the kernel cache."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from superopt.commands.args import nonneg_float
from superopt.cache import Cache, CacheError, Entry, default_path
from superopt.cli import UserError

HELP = "inspect and maintain the kernel cache (ls, show, export, import, prune)"


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
    ls.add_argument("--backend", default=None)
    show = sub.add_parser("show", help="show one cached kernel (by key or key prefix)")
    show.add_argument("key")
    show.add_argument("--backend", default=None)
    ex = sub.add_parser("export", help="write rows as JSON lines")
    ex.add_argument("file", help="output file, '-' for stdout")
    ex.add_argument("--backend", default=None)
    im = sub.add_parser("import", help="read rows from JSON lines (keeps faster existing rows unless --force)")
    im.add_argument("file", help="input file, '-' for stdin")
    im.add_argument("--force", action="store_true", help="overwrite existing rows")
    pr = sub.add_parser("prune", help="delete unverified, stale-version or old rows")
    pr.add_argument("--older-than", type=nonneg_float, metavar="DAYS", default=None)
    pr.add_argument("--other-versions", action="store_true", help="rows of other tuner/schedule-format versions")
    pr.add_argument("--keep-unverified", action="store_true")
    pr.add_argument("--backend", default=None)
    pr.add_argument("--failures", action="store_true", help="also forget recorded tuning failures")
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


def _ls(c: Cache, args) -> int:
    from rich.table import Table
    rows = c.entries(backend=args.backend)
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


def _find(c: Cache, key: str, backend: str | None) -> list[Entry]:
    hits = c.entries(backend=backend, prefix=key)
    if not hits: raise UserError(f"no cached kernel with key {key!r}")
    return hits


def _show(c: Cache, args) -> int:
    from superopt.ir.kernel import Kernel
    import json
    for e in _find(c, args.key, args.backend):
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
        print(f"tuner {e.tuner_version}  schedule format v{e.schedule_version}  date {e.created}\n")
    return 0


def _export(c: Cache, args) -> int:
    if args.file == "-":
        n = c.export_jsonl(sys.stdout, backend=args.backend)
    else:
        with open(args.file, "w") as f:
            n = c.export_jsonl(f, backend=args.backend)
    print(f"exported {n} rows", file=sys.stderr)
    return 0


def _import(c: Cache, args) -> int:
    if args.file == "-":
        w, k = c.import_jsonl(sys.stdin, force=args.force)
    else:
        if not Path(args.file).is_file(): raise UserError(f"{args.file}: no such file")
        with open(args.file) as f:
            w, k = c.import_jsonl(f, force=args.force)
    print(f"imported {w} rows, kept {k} existing rows that were as good or better")
    return 0


def _prune(c: Cache, args) -> int:
    n = c.prune(older_than_days=args.older_than, other_versions=args.other_versions,
                unverified=not args.keep_unverified, backend=args.backend)
    msg = f"deleted {n} rows"
    if args.failures: msg += f", forgot {c.clear_failures()} failures"
    print(msg)
    return 0


_ACTIONS = {"ls": _ls, "show": _show, "export": _export, "import": _import, "prune": _prune}
