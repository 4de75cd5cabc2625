"""``superopt capture SCRIPT.py -o DIR``: run a lazy-Tensor script and save every kernel it realizes."""
from __future__ import annotations

import argparse
import contextlib
import json
import runpy
import sys
import traceback
from pathlib import Path

from superopt.cli import UserError

HELP = "run a Python script and record every kernel it realizes (deduplicated, with counts)"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("script", help="Python script that builds and realizes superopt Tensors")
    p.add_argument("script_args", nargs=argparse.REMAINDER,
                   help="arguments passed to the script (after this command's options; '--' separates them)")
    p.add_argument("-o", "--out", metavar="DIR", help="directory for kernel files and manifest.json (required)")
    p.add_argument("--no-execute", action="store_true",
                   help="record without computing (outputs read as zeros): fast for big shapes, "
                        "only for scripts whose control flow does not depend on tensor values")
    p.add_argument("--replace", action="store_true", help="start a fresh manifest instead of adding counts to DIR's")
    p.add_argument("--tinygrad", action="store_true",
                   help="the script is a tinygrad program: record the kernels tinygrad realizes (needs superopt[tinygrad])")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"out", "manifest", "script_status", "distinct", "launches", "skipped", '
                        '"kernels": [{"key", "name", "kind", "count", "flops", "min_bytes"}]} (this run\'s kernels); '
                        "the script's own stdout goes to stderr")


def _own_options(args: argparse.Namespace) -> None:
    """Options given after SCRIPT land in script_args (argparse.REMAINDER); take ours back."""
    rest = list(args.script_args)
    while rest:
        a = rest[0]
        if a == "--": rest.pop(0); break  # noqa: E702
        if a in ("-o", "--out") and len(rest) > 1: args.out = rest[1]; del rest[:2]  # noqa: E702
        elif a.startswith("--out="): args.out = a.split("=", 1)[1]; rest.pop(0)  # noqa: E702
        elif a == "--no-execute": args.no_execute = True; rest.pop(0)  # noqa: E702
        elif a == "--replace": args.replace = True; rest.pop(0)  # noqa: E702
        elif a == "--tinygrad": args.tinygrad = True; rest.pop(0)  # noqa: E702
        elif a == "--json": args.json = True; rest.pop(0)  # noqa: E702
        elif a in ("-q", "--quiet"): args.verbosity = -1; rest.pop(0)  # noqa: E702
        else: break
    args.script_args = rest


def _recorder(args: argparse.Namespace, out: Path, script: Path, progress=None):
    if args.tinygrad:
        if args.no_execute: raise UserError("--no-execute applies to superopt Tensor programs, not --tinygrad")
        try:
            from superopt.tinygrad_import import capture_tinygrad
            import tinygrad  # noqa: F401
        except ImportError:
            raise UserError("--tinygrad needs the optional extra: pip install 'superopt[tinygrad]'") from None
        return capture_tinygrad(out)
    from superopt.capture import capture
    return capture(out, execute=not args.no_execute, source=script.name, progress=progress)


def run(args: argparse.Namespace) -> int:
    from superopt.capture import MANIFEST
    _own_options(args)
    if not args.out: raise UserError("-o DIR is required (where the kernel files and manifest go)")
    script = Path(args.script)
    if not script.is_file(): raise UserError(f"{script}: no such file")
    out = Path(args.out)
    if out.exists() and not out.is_dir(): raise UserError(f"{out} exists and is not a directory")
    if args.replace and (out / MANIFEST).exists(): (out / MANIFEST).unlink()
    argv, path0 = sys.argv, sys.path[0]
    sys.argv = [str(script)] + list(args.script_args)
    sys.path[0] = str(script.parent.resolve())
    status = 0
    from superopt.progress import progress_for
    # with --json the script's prints must not mix into the one JSON object on stdout
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    try:
        with progress_for(args, "capture") as progress, quiet_stdout, _recorder(args, out, script, progress) as cap:
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:
                traceback.print_exc()
                status = 1
    finally:
        sys.argv, sys.path[0] = argv, path0
    if not cap.kernels:
        msg = "the script realized no kernels (call .numpy() on a Tensor)"
        if args.json: print(json.dumps({"error": msg, "kind": "script", "command": "capture", "script_status": status}))
        else: print(f"superopt capture: {msg}", file=sys.stderr)
        return status or 1
    if args.json:
        print(json.dumps(_summary(cap, out, status)))
        return status
    note = " (script failed; kernels realized before the failure were saved)" if status else ""
    for reason, n in getattr(cap, "skipped", {}).items():
        print(f"superopt capture: skipped {n} tinygrad kernel(s): {reason}", file=sys.stderr)
    print(f"captured {len(cap.kernels)} distinct kernels from {cap.launches} launches into {out}/{note}")
    return status


def _summary(cap, out: Path, status: int) -> dict:
    from superopt.capture import MANIFEST
    return {"out": str(out), "manifest": str(out / MANIFEST), "script_status": status, "distinct": len(cap.kernels),
            "launches": cap.launches, "skipped": dict(getattr(cap, "skipped", {})),
            "kernels": [{"key": key, "name": k.name, "kind": k.kind, "count": cap.counts[key], "flops": k.flops,
                         "min_bytes": k.min_bytes} for key, k in cap.kernels.items()]}
