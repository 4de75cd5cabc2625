"""CPU benchmark: hand-rule schedules on the cpu backend vs numpy, workload by workload.

Every kernel of a workload is scheduled by the hand rules, lowered, rendered to C,
compiled, verified on fresh random inputs against the reference interpreter and timed
(median of repeated runs, timed inside the compiled code); the workload's time is the sum
over its kernels. numpy runs the library's own reference function of the workload on
float32 arrays (float inputs; integer inputs as int64), timed the same way (median of
repeated calls). Prints a table and writes every number, with the command, to JSON.

    python3 bench/cpu.py --suites membound,bert --small --out bench/results/cpu-small.json
    python3 bench/cpu.py --medium --out bench/results/cpu-medium.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from superopt.backends.base import get
from superopt.engine import measure
from superopt.kernels.suites import SUITES, suite
from superopt.search.hand import hand_schedule
from superopt.vendor import numpy_time  # shared with `superopt bench`


# CPU-sized workloads (the suites' full shapes are GPU-sized), fp32: figures worth reading
MEDIUM = [("matmul", dict(M=512, N=512, K=512)), ("matmul", dict(M=1024, N=1024, K=1024)),
          ("rowsum", dict(M=4096, N=4096)), ("softmax", dict(M=2048, N=2048)), ("layernorm", dict(M=4096, N=1024)),
          ("fma", dict(n=1 << 22)), ("conv2d", dict(N=4, C=64, H=56, W=56, K=64))]


def medium() -> list:
    from superopt.kernels.registry import Workload
    return [Workload.make(kind, **params) for kind, params in MEDIUM]


def bench_workload(w, be) -> dict:
    kernels, total, ok, flops, why = [], 0.0, True, 0, ""
    for k in w.kernels:
        s = hand_schedule(k, be.machine)
        m = measure(k, s, be, "hand")
        kernels.append(m.to_json())
        flops += k.flops
        if not m.verified or m.measured_s is None:
            ok, why = False, m.reason
        else:
            total += m.measured_s
    np_s = numpy_time(w)
    return {"workload": w.name, "kind": w.kind, "params": {k: getattr(v, "name", v) for k, v in w.args.items()},
            "kernels": kernels, "verified": ok, "reason": why, "ours_s": total if ok else None, "numpy_s": np_s,
            "speedup_vs_numpy": (np_s / total) if ok and np_s and total else None,
            "gflops": flops / total / 1e9 if ok and total else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated ({', '.join(SUITES)})")
    p.add_argument("--small", action="store_true", help="the CI shapes of each suite")
    p.add_argument("--medium", action="store_true", help="CPU-sized fp32 workloads instead of the suites")
    p.add_argument("--out", default=None, help="JSON file to write")
    args = p.parse_args(argv)
    be = get("cpu")
    rows = []
    try:
        groups = [("medium", medium())] if args.medium else \
            [(name, suite(name, small=args.small)) for name in args.suites.split(",")]
        for name, ws in groups:
            for w in ws:
                r = bench_workload(w, be)
                r["suite"] = name
                rows.append(r)
                print(_row(r), flush=True)
    finally:
        be.close()
    m = be.machine
    doc = {"command": "python3 " + " ".join(["bench/cpu.py", *(argv if argv is not None else sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"name": m.name, "cores": m.cores, "simd_bytes": m.simd_bytes, "cpu": platform.processor() or platform.machine()},
           "load_average": [round(x, 2) for x in __import__("os").getloadavg()],  # other processes share the cores
           "method": "hand rules", "numpy": np.__version__,
           "notes": "ours: sum of per-kernel medians timed inside the compiled code; numpy: median of the reference "
                    "function on float32 arrays, including Python call overhead",
           "rows": rows}
    if args.out:
        with open(args.out, "w") as f: json.dump(doc, f, indent=1)
        print(f"wrote {args.out}")
    ok = sum(r["verified"] for r in rows)
    print(f"{ok}/{len(rows)} workloads verified")
    return 0 if ok == len(rows) else 1


def _row(r: dict) -> str:
    ours = f"{r['ours_s'] * 1e6:10.1f}" if r["ours_s"] else "    failed"
    nps = f"{r['numpy_s'] * 1e6:10.1f}" if r["numpy_s"] else "       n/a"
    ratio = f"{r['speedup_vs_numpy']:7.2f}x" if r["speedup_vs_numpy"] else "     - "
    gf = f"{r['gflops']:8.2f}" if r["gflops"] else "       -"
    return f"{r['suite']:9s} {r['workload'][:38]:38s} ours {ours} us  numpy {nps} us  {ratio}  {gf} GFLOP/s" + \
        ("" if r["verified"] else f"   FAILED: {r['reason'][:80]}")


if __name__ == "__main__":
    sys.exit(main())
