"""``superopt run FILE [--schedule JSON|PATH]``: verify and time one given schedule."""
from __future__ import annotations

import argparse
import json
import os
import time

from superopt.cli import UserError
from superopt.commands.args import nonneg_int
from superopt.commands.tune import fits, get_backend, load, report
from superopt.engine import measure
from superopt.ir.lower import LoweringError, lower
from superopt.ir.schedule import Schedule, check
from superopt.runtime import hand_schedule   # on a DSP: the hand rule of the HVX family that applies

HELP = "verify and time a kernel with a given schedule (default: the hand rules)"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a .pkl or .json kernel file")
    p.add_argument("--schedule", metavar="JSON_OR_PATH", help="schedule as JSON text or a file holding it")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--step", type=nonneg_int, metavar="I", help="step I of a multi-kernel file (default: its main kernel)")
    p.add_argument("--seed", type=nonneg_int, default=None, help="seed of the random inputs")
    p.add_argument("--show-source", action="store_true", help="also print the rendered source")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def parse_schedule(text: str) -> Schedule:
    if not text.lstrip().startswith("{") and os.path.exists(text):
        with open(text) as f: text = f.read()
    try:
        return Schedule.from_json(text)
    except ValueError as e:
        raise UserError(f"--schedule: {e}") from None


def run(args: argparse.Namespace) -> int:
    if args.file.endswith(".py"):   # a script, not a kernel file: its own command (other flags)
        raise UserError(f"{args.file} is a Python script: run it with `superopt script {args.file}` "
                        "(through the kernel cache, timed against numpy/torch)", "usage")
    k = load(args)
    be = get_backend(args.backend)
    try:
        warning = fits(k, be.machine, args)
        s, method = (parse_schedule(args.schedule), "given") if args.schedule else (hand_schedule(k, be.machine), "hand")
        errs = check(k, s, be.machine)
        if errs: raise UserError("illegal schedule: " + "; ".join(errs))
        t0 = time.perf_counter()
        m = measure(k, s, be, method, args.seed)
        m.tuning_s = time.perf_counter() - t0
        if args.show_source and not args.json:
            try:
                print(be.render(lower(k, s, be.machine)))
            except LoweringError as e:
                raise UserError(str(e)) from None
    finally:
        be.close()
    if warning: m.extra["warnings"] = [warning]
    print(json.dumps(m.to_json()) if args.json else report(m))
    return 0 if m.verified else 1
