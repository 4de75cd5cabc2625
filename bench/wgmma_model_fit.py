"""How well the tensor-core model (search/tc_cost.py) ranks the wgmma tile variants the H100
measured (bench/results/h100-2026-11-23), with the mma.sync hand rule as one more point per
GEMM. No GPU needed: it re-models the measured schedules and compares ranks.

Measurements, one run per GEMM (never mixed within a GEMM):
- qkv_out and ffn_up fp16: ``gpu-tc-wgmma-after-fix.json`` (every variant with the current
  lowering, which keeps no wgmma group in flight with two warpgroups), hand rule included;
- the other GEMMs: ``gpu-tc-wgmma-sweep.txt`` (TF/s per variant, the hand rule on the
  workload's line), without the variants the old lowering computed wrongly or that the fix
  changed: (128,256,32,2,1,4), (128,256,32,2,1,5), (128,128,32,2,1,4).
The hand rule's schedule is the one recorded in ``gpu-tc-mma.json``; the machine is the
session's calibration (``calibration.json``). Prints per-GEMM Spearman rho (modeled vs
measured time), the mean of those, and two pooled figures: raw times over all GEMMs (size
dominates it) and times normalized by each GEMM's geometric mean on both sides (ranks
within GEMMs only).

    python3 bench/wgmma_model_fit.py [--out bench/results/wgmma-model-h100.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import replace

from superopt.ir import tensorcore as tcm
from superopt.ir.schedule import Schedule, check
from superopt.kernels.registry import Workload
from superopt.kernels.suites import suite
from superopt.report import spearman
from superopt.search.cost import modeled_time
from superopt.search.machine import H100
from superopt.search.wgmma_space import from_key

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RUN = os.path.join(RESULTS, "h100-2026-11-23")
WRONG_IN_SWEEP = {(128, 256, 32, 2, 1, 4), (128, 256, 32, 2, 1, 5), (128, 128, 32, 2, 1, 4)}
AFTER_FIX = ("qkv_out_gemm_8192x1024x1024", "ffn_up_gemm_8192x4096x1024")


def machine():
    cal = json.load(open(os.path.join(RUN, "calibration.json")))
    return replace(H100, **{k: v for k, v in cal.items() if k in H100.__dataclass_fields__ and k != "name"})


def kernels() -> dict:
    """The bench's GEMMs by name (bench/gpu_tc.workloads: the bert suite in fp16 and bf16)."""
    out = {}
    for w in suite("bert"):
        p = dict(w.params)
        p["dtype"] = "bfloat16"
        bf = Workload.make(w.kind, name=w.name.replace("gemm", "gemm_bf16").replace("bmm", "bmm_bf16"), **p)
        out[w.name], out[bf.name] = (w.kernels[0], w.flops), (bf.kernels[0], bf.flops)
    return out


def sweep() -> dict[str, dict]:
    """Per workload of the sweep log: its hand rule's TF/s and each variant's."""
    out, cur = {}, None
    for line in open(os.path.join(RUN, "gpu-tc-wgmma-sweep.txt")):
        v = re.match(r"\s+wgmma \(([\d, ]+)\): ok=(\w+) .* (\d+) TF/s", line)
        if v and cur:
            out[cur]["variants"].append((tuple(int(x) for x in v[1].split(",")), v[2] == "True", float(v[3])))
        elif line.strip() and not line[0].isspace():
            f = line.split()
            cur = f[0]
            out[cur] = {"hand_tfs": float(f[5]), "variants": []}
    return out


def points() -> list[dict]:
    """Every measured (GEMM, schedule, seconds) this fit uses."""
    ks, mma = kernels(), {r["workload"]: r for r in json.load(open(os.path.join(RUN, "gpu-tc-mma.json")))["results"]}
    fixed = {r["workload"]: r for r in json.load(open(os.path.join(RUN, "gpu-tc-wgmma-after-fix.json")))["results"]}
    out = []
    for name, rec in sweep().items():
        k, flops = ks[name]
        hand = Schedule.from_dict(mma[name]["schedule"])
        if name in AFTER_FIX:
            r = fixed[name]
            hand = Schedule.from_dict(r["schedule"])
            meas = [("mma.sync hand rule", hand, r["median_s"])]
            meas += [(tuple(v["tiles"]), None, v["median_s"]) for v in r["wgmma"] if v.get("ok")]
            source = "gpu-tc-wgmma-after-fix.json"
        else:
            meas = [("mma.sync hand rule", hand, flops / (rec["hand_tfs"] * 1e12))]
            meas += [(tiles, None, flops / (tfs * 1e12)) for tiles, ok, tfs in rec["variants"] if ok and tiles not in WRONG_IN_SWEEP]
            source = "gpu-tc-wgmma-sweep.txt"
        for tiles, s, sec in meas:
            if s is None: s = from_key(k, tcm.match(k), tiles)   # a key with "tma" is the TMA twin
            out.append({"gemm": name, "schedule": tiles, "kernel": k, "s": s, "measured_s": sec, "source": source})
    return out


def _normalized(xs: list[float]) -> list[float]:
    g = math.exp(sum(map(math.log, xs)) / len(xs))
    return [x / g for x in xs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(RESULTS, "wgmma-model-h100.json"))
    args = ap.parse_args(argv)
    m = machine()
    pts = points()
    for p in pts:
        errs = check(p["kernel"], p["s"], m)
        if errs: raise SystemExit(f"{p['gemm']} {p['schedule']}: {errs}")
        p["modeled_s"] = modeled_time(p["kernel"], p["s"], m)
    per, norm_mod, norm_meas = {}, [], []
    for gemm in dict.fromkeys(p["gemm"] for p in pts):
        q = [p for p in pts if p["gemm"] == gemm]
        mod, meas = [p["modeled_s"] for p in q], [p["measured_s"] for p in q]
        rho = spearman(mod, meas)
        fastest = min(q, key=lambda p: p["measured_s"])["schedule"]
        top = min(mod)
        picks = [p for p in q if p["modeled_s"] <= top * (1 + 1e-9)]  # the model's optimum, ties included
        worst = max(p["measured_s"] for p in picks)
        per[gemm] = {"spearman": rho, "points": len(q), "source": q[0]["source"], "measured_fastest": str(fastest),
                     "model_picks": [str(p["schedule"]) for p in picks], "worst_pick_vs_fastest": min(meas) / worst,
                     "points_detail": [{"schedule": str(p["schedule"]), "modeled_s": p["modeled_s"], "measured_s": p["measured_s"]}
                                       for p in q]}
        norm_mod += _normalized(mod)
        norm_meas += _normalized(meas)
        print(f"{gemm:40s} n={len(q):2d} rho={'-' if rho is None else round(rho, 3)!s:>6}  model optimum "
              f"({len(picks)} tied) runs at >= {min(meas) / worst:.2f}x the speed of the fastest {fastest}")
        for p in sorted(q, key=lambda p: p["measured_s"]):
            print(f"    {str(p['schedule']):24s} measured {p['measured_s'] * 1e6:8.1f} us  modeled {p['modeled_s'] * 1e6:8.1f} us")
    rhos = [r["spearman"] for r in per.values() if r["spearman"] is not None]  # None: one side constant
    pooled = {"raw": spearman([p["modeled_s"] for p in pts], [p["measured_s"] for p in pts]),
              "per_gemm_normalized": spearman(norm_mod, norm_meas), "mean_per_gemm": sum(rhos) / len(rhos)}
    print(f"pooled: raw {pooled['raw']:.3f} (size dominates), normalized per GEMM {pooled['per_gemm_normalized']:.3f}, "
          f"mean per-GEMM rho {pooled['mean_per_gemm']:.3f}")
    command = "python3 bench/wgmma_model_fit.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    doc = {"command": command, "machine": "h100 (calibration of bench/results/h100-2026-11-23)", "per_gemm": per, "pooled": pooled,
           "note": "spearman null: the model gives every point the same time (all bound by the same term). In-sample: "
                   "tc_cost's L2_PER_DRAM and MMA_SYNC_SM90 were set with these measurements in view (one value for all GEMMs)."}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
