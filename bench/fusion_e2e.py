"""Whole models under three fusion plans, on one backend, against the vendor library in the
same run: the BERT-large encoder layer, the ResNet basic and bottleneck blocks and BERT's
embedding input (``superopt.kernels.models``).

Plans (each kernelized from the same lazy graph):
- ``per-reduction``: every reduction its own kernel, elementwise work fused into its
  consumers (the fixed rule before row kernels and the planner);
- ``default``: today's default rule (adds row kernels: a reduction broadcast back along
  the axes it folds is computed in its consumer's kernel);
- ``planned``: the fusion planner's plan (``search.fusion.plan``, Z3).
The fully unfused plan (every intermediate written) is reported as modeled only: at the
full shapes its buffers do not fit on the device.

Per plan: kernels, bytes moved (each kernel's compulsory traffic), peak memory of
intermediates, modeled time (the planner's), and the measured time = the sum of each
kernel's median time under ``--method`` schedules (every kernel verified on random
inputs first). Then the whole model runs once through the backend with the plan and is
compared with the numpy reference (cpu) or torch eager (cuda), whose time is the vendor
baseline (CUDA events, L2 flushed; there is none on cpu).

    python bench/fusion_e2e.py --backend cpu --small --out bench/results/fusion-e2e-cpu-small.json
    python bench/fusion_e2e.py --backend cuda --out bench/results/fusion-e2e-h100.json
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from superopt import runtime
from superopt.backends.base import get
from superopt.engine import tune as tune_kernel
from superopt.ir import context
from superopt.ir.node import Ops
from superopt.kernels.models import MODELS
from superopt.search import fusion

kz = importlib.import_module("superopt.ir.kernelize")


def plans(root, machine, timeout_s: float) -> tuple[dict, fusion.Plan]:
    p = fusion.plan(root, machine, timeout_s=timeout_s)
    per_red = frozenset(n for n in fusion.candidates(root) if n.op is Ops.REDUCE)
    return {"per-reduction": per_red, "default": fusion.default_plan(root), "planned": p.materialize}, p


def run_plan(model, mat, be, method: str, budget_s: float) -> dict:
    steps = kz.kernelize(model.out.node, plan=mat)
    kernels, total, ok = [], 0.0, True
    for s in steps:
        m = tune_kernel(s.kernel, be, budget_s=budget_s, method=method)
        ok = ok and m.verified
        total += m.measured_s or 0.0
        kernels.append({"name": s.kernel.name, "kind": s.kernel.kind, "key": s.kernel.key, "verified": m.verified,
                        "reason": m.reason, "time_s": m.measured_s, "schedule": m.schedule.to_dict(),
                        "min_bytes": s.kernel.min_bytes, "flops": s.kernel.flops, "method": m.method})
    c = fusion.cost_of(steps, be.machine)
    return {"kernels": len(steps), "bytes": c.bytes, "flops": c.flops, "peak_bytes": c.peak_bytes,
            "modeled_s": c.time_s, "time_s": total if ok else None, "all_verified": ok, "per_kernel": kernels}


def end_to_end(model, mat, backend: str, want: np.ndarray) -> dict:
    """The whole model through the backend under the plan, against ``want``."""
    with context.use(planner=lambda r: mat if r is model.out.node else None), runtime.using(backend) as rt:
        got = model.out.numpy()
        stats = dict(rt.stats)
    err = float(np.max(np.abs(got.astype(np.float64) - want)) / max(1e-30, float(np.max(np.abs(want)))))
    return {"max_rel_err": err, "runtime": stats}


def torch_model(model, l2_bytes: int, repeat: int) -> tuple[float, np.ndarray]:
    import torch
    from superopt.vendor import time_torch
    t = model.torch_inputs(torch)
    with torch.no_grad():
        fn = lambda: model.torch_forward(torch, t)  # noqa: E731
        return statistics.median(time_torch(fn, repeat, l2_bytes))


def _write(path: str, doc: dict) -> None:
    """Written after every plan too, so a run stopped early keeps what it measured."""
    with open(path + ".tmp", "w") as f: json.dump(doc, f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--small", action="store_true", help="the small (CI) shapes")
    ap.add_argument("--method", default="hand", choices=["hand", "z3"], help="schedules of every kernel")
    ap.add_argument("--budget", type=float, default=10.0, help="z3 time per kernel")
    ap.add_argument("--plan-timeout", type=float, default=60.0, help="the fusion planner's time per model")
    ap.add_argument("--repeat", type=int, default=15, help="torch timing samples")
    ap.add_argument("--plans", default="per-reduction,default,planned", help="which plans to run")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    be = get(a.backend)
    doc = {"command": "python bench/fusion_e2e.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "backend": a.backend, "machine": be.machine.name,
           "host": platform.node(), "load_avg_before": os.getloadavg(), "models": []}
    rows = []
    try:
        for name in a.models.split(","):
            model = MODELS[name](small=a.small)
            root = model.out.node
            ps, planned = plans(root, be.machine, a.plan_timeout)
            entry = {"model": name, "small": a.small, "unfused_modeled": vars(planned.unfused),
                     "planner": {"source": planned.source, "proved": planned.proved, "solve_s": planned.solve_s},
                     "plans": {}}
            # torch is timed only: it draws its own dropout masks, so the reference is numpy (float64)
            vt = torch_model(model, be.machine.l2_bytes, a.repeat) if a.backend == "cuda" else None
            entry["torch_s"] = vt
            want = model.reference()
            for pname, mat in ps.items():
                if pname not in a.plans.split(","): continue
                r = run_plan(model, mat, be, a.method, a.budget)
                r["end_to_end"] = end_to_end(model, mat, a.backend, want)
                entry["plans"][pname] = r
                rows.append((name, pname, r, vt))
                print(f"{name:<13} {pname:<14} {r['kernels']:>3} kernels {r['bytes'] / 2**20:>10.1f} MB "
                      f"peak {r['peak_bytes'] / 2**20:>8.1f} MB  modeled {r['modeled_s'] * 1e3:8.3f} ms  measured "
                      + (f"{r['time_s'] * 1e3:8.3f} ms" if r["time_s"] else "unverified")
                      + (f"  torch {vt * 1e3:.3f} ms ({vt / r['time_s']:.2f}x)" if vt and r["time_s"] else "")
                      + f"  e2e err {r['end_to_end']['max_rel_err']:.1e}", flush=True)
                _write(a.out, {**doc, "models": doc["models"] + [entry], "partial": True})
            doc["models"].append(entry)
    finally:
        be.close()
    doc["load_avg_after"] = os.getloadavg()
    _write(a.out, doc)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
