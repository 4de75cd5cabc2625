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
from dataclasses import asdict
from pathlib import Path


def row(name, kernel, ev) -> dict:
    c = ev.cycles
    return {"schedule": ev.schedule.to_dict(), "describe": ev.schedule.describe(kernel), "qemu_exact": ev.exact,
            "failure": ev.failure, **({} if c is None else {
                "llvm_packets_dynamic": c.llvm_packets, "llvm_cycles": c.llvm_cycles, "z3_cycles": c.z3_cycles,
                "z3_pipelined_cycles": c.z3_pipelined_cycles, "hot_loop": c.hot_loop, "model_solve_s": round(c.solve_s, 2)})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full shapes (slow under qemu)")
    ap.add_argument("-o", "--out", default=None)
    ap.add_argument("--only", default=None, help="substring of kernel names")
    a = ap.parse_args(argv)
    from superopt.backends.hexagon import rules, tools
    from superopt.kernels.suites import suite
    from superopt.search.machine import load
    if tools.find_tools() is None:
        print(tools.missing_message(), file=sys.stderr)
        return 1
    m = load("hexagon")
    out = {"command": "python bench/hexagon.py" + (" --full" if a.full else ""), "tools": tools.tool_versions(),
           "cflags": list(tools.CFLAGS), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "kernels": []}
    for w in suite("dsp", small=not a.full):
        if a.only and a.only not in w.name: continue
        k = w.kernel
        ins = w.random_inputs(0)
        hand = rules.evaluate(k, rules.hand(k, m), m, ins)
        best, evals, solve_s = rules.choose(k, m, ins)
        r = {"kernel": w.name, "hand": row(w.name, k, hand), "solver": row(w.name, k, best),
             "candidates": len(evals), "candidates_exact": sum(bool(e.exact) for e in evals), "choose_s": round(solve_s, 1)}
        if hand.cycles and best.cycles:
            r["solver_over_hand_cycles"] = round(best.cycles.z3_pipelined_cycles / hand.cycles.z3_pipelined_cycles, 3)
        out["kernels"].append(r)
        h, s = r["hand"], r["solver"]
        print(f"{w.name:34s} hand: exact={h['qemu_exact']} llvm {h.get('llvm_cycles')} z3 {h.get('z3_cycles')} "
              f"pipelined {h.get('z3_pipelined_cycles')} | solver: exact={s['qemu_exact']} llvm {s.get('llvm_cycles')} "
              f"z3 {s.get('z3_cycles')} pipelined {s.get('z3_pipelined_cycles')} | ratio {r.get('solver_over_hand_cycles')} "
              f"| hot loop clang {s.get('hot_loop', {}).get('llvm_packets')} pk vs z3 {s.get('hot_loop', {}).get('z3_cycles')} "
              f"(II {s.get('hot_loop', {}).get('z3_ii')})", flush=True)
    path = Path(a.out or f"bench/results/hexagon-dsp-{'full' if a.full else 'small'}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
