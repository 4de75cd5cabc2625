"""Where a warp-specialized wgmma GEMM's time goes (H100): the hand rule's schedule of each
GEMM timed whole and with parts cut out of its program (``ir.program.rewrite``), next to
torch in the same run. A cut program computes wrong numbers on purpose, so only the whole
one is verified; the others are timings only.

  whole          the kernel as lowered (verified)
  no-epilogue    each output store behind a test no sum passes (the compiler keeps the
                 accumulators, the stores do not run): mainloop, pipeline and tile changes
  no-copy        without the TMA copies (the producer arms each stage for 0 bytes)
  mma-only       neither copies nor stores: the wgmmas and the hand-overs

Usage (on a machine with an H100):
    python3 bench/ws_probe.py --out probe.json [--reps 30]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace

import numpy as np

from superopt.ir import dtype as dt
from superopt.ir.lower import lower
from superopt.ir.lower_tc import ACC
from superopt.ir.node import Node, Ops, const, lt
from superopt.ir.program import If, MbarArriveTx, Store, TmaLoad, rewrite
from superopt.kernels.registry import Workload

SHAPES = {"qkv_out_gemm_8192x1024x1024": (8192, 1024, 1024), "ffn_up_gemm_8192x4096x1024": (8192, 4096, 1024),
          "ffn_down_gemm_8192x1024x4096": (8192, 1024, 4096), "matmul_4096x4096x4096_fp16": (4096, 4096, 4096)}


NEVER = lt(Node(Ops.REG, dt.float32, (const(0, dt.int32),), ACC), const(-3e38, dt.float32))   # no sum is below it


def cuts(p):
    """The probe's programs: name -> program."""
    def no_copy(x):
        if isinstance(x, TmaLoad): return None
        return replace(x, bytes=0) if isinstance(x, MbarArriveTx) else x

    def no_store(x):
        return If(NEVER, (x,)) if isinstance(x, Store) else x
    return {"whole": p, "no-epilogue": rewrite(p, no_store), "no-copy": rewrite(p, no_copy),
            "mma-only": rewrite(rewrite(p, no_copy), no_store)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args(argv)
    from superopt.backends.base import Failure, get
    from superopt.search.hand import gpu
    from superopt.vendor import time_torch, torch_inputs
    from superopt.verify import compare, poison, random_inputs
    be = get("cuda")
    M_ = be.machine
    rng = np.random.default_rng(0)
    rows = []
    for name, (M, N, K) in SHAPES.items():
        w = Workload.make("matmul", name=name, M=M, N=N, K=K, dtype="float16")
        (k,) = w.kernels
        s = gpu(k, M_)
        ins = random_inputs(k, rng)
        row = {"workload": name, "flops": w.flops, "schedule": s.to_dict(), "describe": s.describe(k), "cuts": {}}
        for cut, p in cuts(lower(k, s, M_)).items():
            c = be.compile(p)
            if isinstance(c, Failure):
                row["cuts"][cut] = {"failure": str(c)}
                continue
            out = poison(k.output)
            t = be.time(c, [a.reshape(-1) for a in ins], out, runs=args.reps)
            r = {"failure": str(t)} if isinstance(t, Failure) else {"median_s": t.median_s}
            if cut == "whole" and "median_s" in r: r["ok"] = compare(k, out, ins, rng).ok
            row["cuts"][cut] = r
        a, b = torch_inputs(w, w.random_inputs(seed=1))
        row["torch_s"] = statistics.median(time_torch(lambda: a @ b, args.reps, M_.l2_bytes))
        rows.append(row)
        us = {c: f"{r['median_s'] * 1e6:7.1f}" if "median_s" in r else "   fail" for c, r in row["cuts"].items()}
        print(f"{name:32s} torch {row['torch_s'] * 1e6:7.1f} us | " + " | ".join(f"{c} {v}" for c, v in us.items())
              + f" | whole ok={row['cuts']['whole'].get('ok')}", flush=True)
    with open(args.out, "w") as f:
        json.dump({"device": be.machine.name, "rows": rows, "command": " ".join(sys.argv)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
