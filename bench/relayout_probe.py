"""What an NCHW convolution would pay to run as an NHWC one (H100): the ResNet 3x3 conv's
input NCHW -> NHWC and its filter (K,C,R,S) -> (K,R,S,C) as our kernels (the relayout plan's
permute copies, ir/relayout.py, at the hand rule's schedule, verified), torch's same copies (``contiguous(memory_format=
torch.channels_last)``), and torch's conv in both layouts, all in one run (CUDA events, L2
flushed, medians). Our NHWC conv itself is timed by ``bench/gpu_tc.py``.

    python3 bench/relayout_probe.py --out probe.json [--reps 30]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_tc import time_schedule  # noqa: E402  (bench/gpu_tc.py: compile, time, verify)

from superopt.ir import dtype as dt  # noqa: E402
from superopt.ir.kernel import Buffer  # noqa: E402
from superopt.ir.relayout import permute_kernel  # noqa: E402

N, C, H, W, K = 32, 64, 56, 56, 64


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    import torch.nn.functional as F
    from superopt.backends.base import get
    from superopt.search.hand import gpu
    from superopt.vendor import time_torch
    be = get("cuda")
    rng = np.random.default_rng(0)
    rows = []
    for name, shape in (("input", (N, C, H, W)), ("filter", (K, C, 3, 3))):
        k = permute_kernel(Buffer(name, dt.float16, shape), (0, 2, 3, 1), f"{name}_nhwc")   # the relayout plan's copy
        s = gpu(k, be.machine)
        r = {"copy": f"{name} {shape} -> channels last", "bytes": 2 * 2 * int(np.prod(shape)), "describe": s.describe(k)}
        t = time_schedule(k, s, be, args.reps, rng)
        r.update({"failure": t["failure"]} if "failure" in t else {"ok": t["ok"], "ours_s": t["median_s"]})
        x = torch.randn(*shape, device="cuda", dtype=torch.float16)
        r["torch_s"] = statistics.median(time_torch(lambda: x.contiguous(memory_format=torch.channels_last), args.reps, be.machine.l2_bytes))
        rows.append(r)
    x = torch.randn(N, C, H, W, device="cuda", dtype=torch.float16)
    w = torch.randn(K, C, 3, 3, device="cuda", dtype=torch.float16)
    xl, wl = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    conv = {"nchw": statistics.median(time_torch(lambda: F.conv2d(x, w, padding=1), args.reps, be.machine.l2_bytes)),
            "nhwc": statistics.median(time_torch(lambda: F.conv2d(xl, wl, padding=1), args.reps, be.machine.l2_bytes))}
    be.close()
    doc = {"command": "python3 bench/relayout_probe.py " + " ".join(sys.argv[1:] if argv is None else argv), "device": torch.cuda.get_device_name(),
           "copies": rows, "torch_conv_s": conv}
    with open(args.out, "w") as f: json.dump(doc, f, indent=1)
    for r in rows:
        ours = r.get("ours_s")
        print(f"{r['copy']}: ours {ours * 1e6:.1f} us ({r['bytes'] / ours / 1e9:.0f} GB/s, ok={r.get('ok')})" if ours else
              f"{r['copy']}: {r.get('failure')}", f"torch {r['torch_s'] * 1e6:.1f} us")
    print(f"torch conv: NCHW {conv['nchw'] * 1e6:.1f} us, NHWC (channels_last) {conv['nhwc'] * 1e6:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
