"""Z3 solve time, kernel by kernel, on the H100 and CPU cost models (no device needed).

For every kernel of the small bert, resnet, llm and membound suites (plus the full-size
membound kernels and BERT GEMMs): ``search.z3opt.solve``'s solve time, whether it proved
the optimum, and the modeled time of its top-1 (and of the best schedule Z3 itself found,
i.e. without the tensor-core candidates). Writes JSON with the command and prints medians.
``--compare OLD.json`` checks that every kernel's top-1 modeled time is unchanged (1e-9
relative) against an earlier run and exits 1 when one is not.

    nice -n 5 python3 bench/solver_time.py --out bench/results/solver-time.json
    nice -n 5 python3 bench/solver_time.py --out new.json --compare bench/results/solver-time.json
    nice -n 5 python3 bench/solver_time.py --solver-rev 78e5e1c --out old.json   # an earlier solver
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time

from superopt.kernels.suites import suite
from superopt.search import z3opt
from superopt.search.machine import H100, load

SMALL = ("bert", "resnet", "llm", "membound")
FULL = (("membound", lambda w: True), ("bert", lambda w: "gemm" in w.name))


def kernels() -> list[tuple[str, object]]:
    """(suite label, kernel) of every workload's steps."""
    out = []
    for name in SMALL:
        out += [(f"{name}-small", s.kernel) for w in suite(name, small=True) for s in w.steps]
    for name, keep in FULL:
        out += [(f"{name}-full", s.kernel) for w in suite(name) if keep(w) for s in w.steps]
    return out


def solver_at(rev: str):
    """``search/z3opt.py`` as of git revision ``rev``, imported beside the current one
    (to time the solver before and after a change back to back)."""
    src = subprocess.run(["git", "show", f"{rev}:search/z3opt.py"], capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("superopt.search._z3opt_at_rev", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "superopt.search"
    sys.modules[spec.name] = mod
    exec(compile(src, f"{rev}:search/z3opt.py", "exec"), mod.__dict__)
    return mod


def row(label: str, k, machine, timeout_s: float, solver=z3opt) -> dict:
    """One solve. The tensor-core candidates (their own exact search, inside the solve and its
    time) are set aside so that the best of Z3's own space is seen too (``z3_modeled_s``)."""
    tc: list = []
    tc_s = [0.0]
    inner = solver._tensor_core

    def aside(kernel, m, top_k):
        t = time.perf_counter()
        tc.extend(inner(kernel, m, top_k))
        tc_s[0] += time.perf_counter() - t
        return []
    solver._tensor_core = aside
    try:
        t0 = time.perf_counter()
        r = solver.solve(k, machine, top_k=4, timeout_s=timeout_s)
        wall = time.perf_counter() - t0
    finally:
        solver._tensor_core = inner
    best = min([(r.modeled_s, r.best)] + [(c.modeled_s, c.schedule) for c in tc], key=lambda x: x[0])
    return {"suite": label, "kernel": k.name, "kind": k.kind, "axes": [a.size for a in k.axes],
            "machine": machine.name, "solve_s": r.solve_s, "tensor_core_s": tc_s[0], "wall_s": wall,
            "proved_optimal": r.proved_optimal, "fallback": r.fallback, "method": getattr(r, "method", "z3"), "modeled_s": best[0],
            "z3_modeled_s": r.modeled_s, "schedule": best[1].to_dict(), "z3_schedule": r.best.to_dict()}


def _med(xs) -> float | None:
    xs = list(xs)
    return statistics.median(xs) if xs else None


def summary(rows: list[dict]) -> dict:
    out = {}
    for m in sorted({r["machine"] for r in rows}):
        rs = [r for r in rows if r["machine"] == m]
        out[m] = {"kernels": len(rs), "median_solve_s": _med(r["solve_s"] for r in rs),
                  "max_solve_s": max(r["solve_s"] for r in rs),
                  "median_gemm_solve_s": _med(r["solve_s"] for r in rs if r["kind"] == "gemm"),
                  "median_conv_solve_s": _med(r["solve_s"] for r in rs if r["kind"] == "conv"),
                  "median_small_solve_s": _med(r["solve_s"] for r in rs if r["suite"].endswith("-small")),
                  "proved_optimal": sum(bool(r["proved_optimal"]) for r in rs)}
    return out


def compare(rows: list[dict], old: list[dict]) -> list[str]:
    """Kernels whose top-1 modeled time (or Z3's own best) moved by more than 1e-9 relative."""
    before = {(r["suite"], r["kernel"], r["machine"]): r for r in old}
    bad = []
    for r in rows:
        o = before.get((r["suite"], r["kernel"], r["machine"]))
        if o is None: continue
        for key in ("modeled_s", "z3_modeled_s"):
            a, b = r[key], o[key]
            if abs(a - b) > 1e-9 * max(abs(a), abs(b)):
                bad.append(f"{r['machine']} {r['suite']} {r['kernel']}: {key} {b} -> {a}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/solver-time.json")
    ap.add_argument("--timeout", type=float, default=30.0, help="solve time limit per kernel (s)")
    ap.add_argument("--machines", default="h100,cpu")
    ap.add_argument("--only", default="", help="substring of kernel names to keep")
    ap.add_argument("--compare", default="", help="earlier JSON: top-1 modeled times must be equal")
    ap.add_argument("--solver-rev", default="", help="time search/z3opt.py as of this git revision instead")
    a = ap.parse_args()
    solver = solver_at(a.solver_rev) if a.solver_rev else z3opt
    machines = {"h100": H100, "cpu": load("cpu")}
    rows = []
    for mname in a.machines.split(","):
        for label, k in kernels():
            if a.only and a.only not in k.name: continue
            r = row(label, k, machines[mname], a.timeout, solver)
            rows.append(r)
            print(f"{mname:5} {label:14} {k.name:40} solve {r['solve_s']:7.3f} s  proved {r['proved_optimal']!s:5}  "
                  f"top1 {r['modeled_s']:.6e}  z3 {r['z3_modeled_s']:.6e}  tc {r['tensor_core_s']:.2f} s", flush=True)
    s = summary(rows)
    print(json.dumps(s, indent=1))
    res = {"command": " ".join(["python3"] + sys.argv), "host": platform.node(), "python": platform.python_version(),
           "timeout_s": a.timeout, "solver_rev": a.solver_rev or None, "summary": s, "rows": rows}
    if a.compare:
        with open(a.compare) as fh: bad = compare(rows, json.load(fh)["rows"])
        res["compare"] = {"against": a.compare, "changed": bad}
        print("top-1 modeled times:", "identical" if not bad else "CHANGED\n  " + "\n  ".join(bad))
    with open(a.out, "w") as fh: json.dump(res, fh, indent=1)
    return 1 if a.compare and bad else 0


if __name__ == "__main__":
    sys.exit(main())
