"""Hexagon DSP benchmark: per dsp kernel, hand rule vs the model's choice.

For each kernel of the ``dsp`` suite (small shapes by default; qemu runs every
candidate): the hand-rule schedule and the candidate with the fewest modeled cycles are
compiled for hexagonv66 (128-byte HVX), run under qemu-hexagon and compared bit-exactly
with the numpy interpreter. Cycles are modeled (search/vliw.py) over the blocks qemu
actually executed: clang's packets replayed, the same blocks repacked by Z3, and
self-looping blocks software-pipelined. The hot inner loop's packets per iteration are
reported for clang and for Z3.

    python bench/hexagon.py [--full] [-o bench/results/hexagon-dsp-small.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def row(kernel, ev) -> dict:
    c = ev.cycles
    return {"schedule": ev.schedule.to_dict(), "describe": ev.schedule.describe(kernel), "qemu_exact": ev.exact,
            "failure": ev.failure, **({} if c is None else {
                "llvm_packets_dynamic": c.llvm_packets, "llvm_cycles": c.llvm_cycles, "z3_cycles": c.z3_cycles,
                "z3_pipelined_cycles": c.z3_pipelined_cycles, "hot_loop": c.hot_loop, "model_solve_s": round(c.solve_s, 2)}), "inner_loops": ev.loops}


def bench_kernel(name: str, full: bool) -> dict:
    from superopt.backends.hexagon import rules
    from superopt.kernels.suites import suite
    from superopt.search.machine import load
    m = load("hexagon")
    w = next(w for w in suite("dsp", small=not full) if w.name == name)
    k = w.kernel
    ins = w.random_inputs(0)
    best, evals, solve_s = rules.choose(k, m, ins)
    hs = rules.hand(k, m)
    hand = next((e for e in evals if e.schedule == hs), None) or rules.evaluate(k, hs, m, ins)
    r = {"kernel": w.name, "hand": row(k, hand), "solver": row(k, best),
         "candidates": len(evals), "candidates_exact": sum(bool(e.exact) for e in evals), "choose_s": round(solve_s, 1),
         # every candidate's modeled cycles: what the choice (blocking, 3->4 padding, unroll) was made from
         "candidate_cycles": [{"describe": e.schedule.describe(k), "qemu_exact": e.exact,
                               "z3_pipelined_cycles": e.cycles.z3_pipelined_cycles if e.cycles else None} for e in evals]}
    if hand.cycles and best.cycles:
        r["solver_over_hand_cycles"] = round(best.cycles.z3_pipelined_cycles / hand.cycles.z3_pipelined_cycles, 3)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full shapes (slow under qemu)")
    ap.add_argument("-o", "--out", default=None)
    ap.add_argument("--only", default=None, help="substring of kernel names")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="kernels benchmarked in parallel")
    a = ap.parse_args(argv)
    from superopt.backends.hexagon import tools
    from superopt.kernels.suites import suite
    if tools.find_tools() is None:
        print(tools.missing_message(), file=sys.stderr)
        return 1
    out = {"command": "python bench/hexagon.py" + (" --full" if a.full else ""), "tools": tools.tool_versions(),
           "cflags": list(tools.CFLAGS), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "kernels": []}
    names = [w.name for w in suite("dsp", small=not a.full) if not a.only or a.only in w.name]
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        for r in pool.map(bench_kernel, names, [a.full] * len(names)):
            out["kernels"].append(r)
            h, s = r["hand"], r["solver"]
            hl = s.get("hot_loop", {})
            print(f"{r['kernel']:34s} hand: exact={h['qemu_exact']} llvm {h.get('llvm_cycles')} z3 {h.get('z3_cycles')} "
                  f"pipelined {h.get('z3_pipelined_cycles')} | solver: exact={s['qemu_exact']} llvm {s.get('llvm_cycles')} "
                  f"z3 {s.get('z3_cycles')} pipelined {s.get('z3_pipelined_cycles')} | ratio {r.get('solver_over_hand_cycles')} "
                  f"| hot loop: clang {hl.get('llvm_packets')} packets / {hl.get('llvm_cycles')} cycles, "
                  f"z3 {hl.get('z3_issued')} packets / {hl.get('z3_cycles')} cycles, II {hl.get('z3_ii')}", flush=True)
    path = Path(a.out or f"bench/results/hexagon-dsp-{'full' if a.full else 'small'}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
