"""``superopt new KIND key=value ... -o FILE``: write a library kernel (or program) file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "write a kernel from the library (matmul, conv2d, softmax, ...) to a .pkl or .json file"


def _kinds_text() -> str:
    from superopt.kernels import KINDS
    lines = ["kinds (parameters with defaults):"]
    for k in KINDS.values():
        lines.append(f"  {k.usage()}")
        lines.append(f"      {k.help}")
    lines += ["", "dtype takes float32, float16, bfloat16, int8, uint8, int32 (or fp32, fp16, bf16, ...).",
              "A kind that needs several kernels (softmax, layernorm, rmsnorm) is written as a program",
              "file; tools that tune one kernel take its main kernel (--main-only writes just that).",
              "", "example: superopt new conv2d N=32 C=64 H=56 W=56 K=64 dtype=fp16 -o conv.pkl"]
    return "\n".join(lines)


def add_args(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _kinds_text()
    p.add_argument("kind", metavar="KIND", help="what to build (see the list below)")
    p.add_argument("params", metavar="key=value", nargs="*", help="parameters; unset ones take their defaults")
    p.add_argument("-o", "--output", metavar="FILE", help="output file, .pkl or .json (default: NAME.pkl)")
    p.add_argument("--main-only", action="store_true", help="write only the main kernel of a multi-kernel program")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: path, name, kernels, main, key (the main kernel's), kind, flops, min_bytes")


def run(args: argparse.Namespace) -> int:
    from superopt.cli import UserError
    from superopt.io import save_kernel
    from superopt.kernels import Workload
    try:
        w = Workload.from_args(args.kind, args.params)
        steps = w.steps
        from superopt.validate import validate_kernel
        for s in steps: validate_kernel(s.kernel)  # the limits a kernel file is read under (sizes, ...)
    except ValueError as e:
        raise UserError(str(e)) from None
    out = Path(args.output or f"{w.name}.pkl")
    if out.suffix.lower() not in (".pkl", ".pickle", ".json"):
        raise UserError(f"{out}: output must end in .pkl or .json")
    try:
        save_kernel(w.kernel if args.main_only or len(steps) == 1 else steps, out, main=None if args.main_only else w.main)
    except OSError as e:
        raise UserError(f"{out}: cannot write ({e.strerror or e})") from None
    n = 1 if args.main_only else len(steps)
    k = w.kernel
    what = f"{n} kernels, main {w.main} ({k.kind})" if n > 1 else f"1 kernel ({k.kind})"
    if args.json:
        print(json.dumps(dict(path=str(out), name=w.name, kernels=n, main=0 if n == 1 else w.main, key=k.key,
                              kind=k.kind, flops=k.flops, min_bytes=k.min_bytes)))
    else:
        print(f"wrote {out}: {w.name}, {what}; {k.flops:,} flops, {k.min_bytes:,} min bytes in the main kernel")
    return 0
