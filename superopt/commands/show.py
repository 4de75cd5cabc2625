"""``superopt show FILE``: print a kernel file (axes, buffers, index expressions, sizes)."""
from __future__ import annotations

import argparse
import json

from superopt.commands.args import nonneg_int

HELP = "print a kernel file: axes, buffers, index expressions, flops, bytes, intensity"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a .pkl or .json kernel file")
    p.add_argument("--step", type=nonneg_int, metavar="I", help="only step I of a multi-kernel program")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"file", "main", "flops", "min_bytes", "steps": [{"step", "inputs", "output", '
                        '"name", "key", "kind", "flops", "min_bytes", "intensity", "kernel"}]} ("kernel": the kernel file JSON)')


def run(args: argparse.Namespace) -> int:
    from superopt.cli import UserError
    from superopt.io import KernelFileError, load_steps
    try:
        steps, main = load_steps(args.file)
    except KernelFileError as e:
        raise UserError(str(e)) from None
    if args.step is not None and not 0 <= args.step < len(steps):
        raise UserError(f"{args.file}: no step {args.step} (the file holds {len(steps)})")
    if args.json:
        print(json.dumps(as_json(args.file, steps, main, args.step)))
        return 0
    if args.step is not None:
        print(steps[args.step].kernel.describe())
        return 0
    if len(steps) == 1:
        print(steps[0].kernel.describe())
        return 0
    flops = sum(s.kernel.flops for s in steps)
    print(f"program: {len(steps)} kernels, main kernel: step {main}; total {flops:,} flops, "
          f"min bytes {_program_bytes(steps):,} (inputs and output once), {sum(s.kernel.min_bytes for s in steps):,} over kernels")
    for i, s in enumerate(steps):
        print(f"\n== step {i}{' (main)' if i == main else ''}: {', '.join(s.inputs)} -> {s.output}")
        print(s.kernel.describe())
    return 0


def _program_bytes(steps) -> int:
    """Bytes of the program's own inputs (read by some step, written by none) and final output."""
    made = {s.output for s in steps}
    ext = {n: b.nbytes for s in steps for n, b in zip(s.inputs, s.kernel.inputs) if n not in made}
    return sum(ext.values()) + steps[-1].kernel.output.nbytes


def _step_json(i: int, s) -> dict:
    k = s.kernel
    return {"step": i, "inputs": list(s.inputs), "output": s.output, "name": k.name, "key": k.key, "kind": k.kind,
            "flops": k.flops, "min_bytes": k.min_bytes, "intensity": k.intensity, "kernel": k.to_dict()}


def as_json(file: str, steps, main: int, only: int | None = None) -> dict:
    """``show --json``: the program (or one step of it) with the same figures the text prints."""
    chosen = [only] if only is not None else range(len(steps))
    return {"file": str(file), "main": main, "flops": sum(s.kernel.flops for s in steps),
            "min_bytes": _program_bytes(steps), "steps": [_step_json(i, steps[i]) for i in chosen]}
