"""Hexagon DSP: the depthwise 3x3 and few-channel first-layer HVX templates under qemu.

Per kernel: the family's solver picks the schedule (exact enumeration under the packet
model, Z3-packed blocks); the chosen kernel, the hand rule and plain scalar C (clang -O3,
the same C program without the assembly) are compiled for hexagonv66, run under qemu on
one set of random int8 inputs (full range) and compared bit-exactly with numpy; packets
(c20), instructions (c21) and HVX instructions (c22) are qemu's counters around the
kernel call. MACs count the taps inside the image.

    python bench/hexagon_dw.py [-o bench/results/dsp-depthwise-firstlayer.json] [--only NAME]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _row(tag: str, macs: int, r) -> dict:
    from superopt.backends.hexagon import tools
    if isinstance(r, tools.Failure): return {"failure": str(r)}
    out, (packets, instrs, hvx) = r
    return {"packets": packets, "instructions": instrs, "hvx_instructions": hvx, "macs_per_packet": round(macs / packets, 2)}


def _case(label: str, wl, fam, run, reference, x_shape: tuple, w_shape: tuple) -> dict:
    """One kernel: the family's solver pick, its hand rule and the plain C (``run`` with None),
    each run under qemu on one set of random int8 inputs and compared with ``reference``."""
    from superopt.backends.hexagon import tools
    from superopt.kernels.builders import qshifts
    from superopt.kernels.reference import requantize
    from superopt.search.machine import load
    m = load("hexagon")
    k = wl.kernel
    sol = fam.FAMILY.solve(k, m, 30.0)
    best = dict(sol.candidates[0].schedule.params)
    hand = dict(fam.FAMILY.hand(k, m).params)
    g = dict(fam.tpl.match(k))        # the matcher's geometry (with the requantize's shifts)
    macs = fam.macs(g)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, x_shape, dtype=np.int8)
    wt = rng.integers(-128, 128, w_shape, dtype=np.int8)
    ref = reference(x, wt)
    rq = None
    if wl.kind == "qconv2d":   # the library's ranges (kernels.builders: bias +-20000, mult in [2^14, 2^15))
        cout = w_shape[0]
        rq = (rng.integers(-20000, 20000, cout).astype(np.int32), rng.integers(1 << 14, 1 << 15, cout).astype(np.int32),
              *qshifts(wl.args))
        ref = requantize(ref, rq[0].astype(np.int64), rq[1].astype(np.int64), rq[2], rq[3])
    res = {"kernel": label + (" (int8 NHWC -> int8, qconv2d requantize)" if rq else " (int8 NHWC -> int32)"), "macs": macs,
           "solver": {"params": best, "modeled_packets": fam.modeled_packets(g, best), "solve_s": round(sol.solve_s, 2),
                      "proved_optimal": sol.proved_optimal, "table": sol.detail["modeled_packets"]}}
    for tag, p in (("chosen", best), ("hand", hand), ("plain_c_O3", None)):
        r = run(x, wt, p, rq)
        res[tag] = {**({"params": p} if p else {}), **_row(tag, macs, r),
                    "bit_exact": bool(not isinstance(r, tools.Failure) and np.array_equal(r[0], ref))}
    if "packets" in res["chosen"] and "packets" in res["plain_c_O3"]:
        res["plain_c_over_chosen_packets"] = round(res["plain_c_O3"]["packets"] / res["chosen"]["packets"], 1)
        res["model_error"] = round(res["chosen"]["packets"] / res["solver"]["modeled_packets"] - 1, 4)
    return res


def depthwise(h: int, w: int, stride: int, requant: bool = False) -> dict:
    from superopt.backends.hexagon import asm_depthwise as dw
    from superopt.kernels.registry import Workload
    from superopt.search.families import hvx_depthwise as fam
    if requant:
        wl = Workload.make("qconv2d", H=h, W=w, C=64, K=64, groups=64, stride=stride)
    else:
        wl = Workload.make("conv2d", H=h, W=w, C=64, K=64, groups=64, layout="nhwc", dtype="int8", stride=stride)
    return _case(f"depthwise 3x3 s{stride} {h}x{w}x64", wl, fam, lambda x, wt, p, rq: dw.run(x, wt, stride, p, rq),
                 lambda x, wt: dw.reference(x, wt, stride), (h, w, 64), (64, 3, 3, 1))


def firstlayer(h: int, w: int, requant: bool = False) -> dict:
    from superopt.backends.hexagon import asm_firstlayer as fl
    from superopt.kernels.registry import Workload
    from superopt.search.families import hvx_firstlayer as fam
    if requant:
        wl = Workload.make("qconv2d", H=h, W=w, C=3, K=32, stride=2)
    else:
        wl = Workload.make("conv2d", H=h, W=w, C=3, K=32, stride=2, layout="nhwc", dtype="int8")
    return _case(f"first layer 3x3 s2 {h}x{w}x3 -> 32", wl, fam, fl.run, fl.reference, (h, w, 3), (32, 3, 3, 3))


CASES = {"dw56s1": lambda: depthwise(56, 56, 1), "dw56s2": lambda: depthwise(56, 56, 2), "dw112s2": lambda: depthwise(112, 112, 2),
         "qdw56s1": lambda: depthwise(56, 56, 1, True), "qdw112s2": lambda: depthwise(112, 112, 2, True),
         "fl224": lambda: firstlayer(224, 224), "qfl224": lambda: firstlayer(224, 224, True)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default="bench/results/dsp-depthwise-firstlayer.json")
    ap.add_argument("--only", default=None, help="substring of case names (" + ", ".join(CASES) + ")")
    a = ap.parse_args(argv)
    from superopt.backends.hexagon import tools
    if tools.find_tools() is None:
        print(tools.missing_message(), file=sys.stderr)
        return 1
    out = {"command": "python bench/hexagon_dw.py" + (f" --only {a.only}" if a.only else ""), "tools": tools.tool_versions(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "note": "qemu counters (packets = c20) around the kernel call; the host's 2 cores were shared with other jobs "
                   "(counts are deterministic; solve_s is wall time)", "kernels": []}
    for name, fn in CASES.items():
        if a.only and a.only not in name: continue
        r = fn()
        out["kernels"].append(r)
        c, p = r["chosen"], r["plain_c_O3"]
        print(f"{r['kernel']:48s} chosen {c.get('packets')} packets ({c.get('macs_per_packet')} MACs/packet, exact={c['bit_exact']}) "
              f"hand {r['hand'].get('packets')} | plain C -O3 {p.get('packets')} ({p.get('macs_per_packet')}) "
              f"ratio {r.get('plain_c_over_chosen_packets')}x | solve {r['solver']['solve_s']} s proved={r['solver']['proved_optimal']}",
              flush=True)
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
