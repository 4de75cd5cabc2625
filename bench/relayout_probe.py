"""What an NCHW convolution would pay to run as an NHWC one (H100): the ResNet 3x3 conv's
input NCHW -> NHWC and its filter (K,C,R,S) -> (K,R,S,C) as our kernels (the hand rule's
schedule of the permute copy, verified), torch's same copies (``contiguous(memory_format=
torch.channels_last)``), and torch's conv in both layouts, all in one run (CUDA events, L2
flushed, medians). Our NHWC conv itself is timed by ``bench/gpu_tc.py``.

    python3 bench/relayout_probe.py --out probe.json [--reps 30]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from superopt import Tensor
from superopt.ir.kernelize import kernelize

N, C, H, W, K = 32, 64, 56, 56, 64


def permute_kernel(shape, order, name):
    """The copy kernel of ``x.permute(order)`` for an fp16 ``x`` of ``shape``."""
    import numpy as np
    x = Tensor(np.zeros(shape, np.float16), name=name)
    (st,) = kernelize(x.permute(*order).node)
    return st.kernel


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    import torch.nn.functional as F
    from superopt.backends.base import Failure, get
    from superopt.ir.lower import lower
    from superopt.search.hand import gpu
    from superopt.vendor import time_torch
    from superopt.verify import compare, poison, random_inputs
    be = get("cuda")
    rng = np.random.default_rng(0)
    rows = []
    for name, shape in (("input", (N, C, H, W)), ("filter", (K, C, 3, 3))):
        k = permute_kernel(shape, (0, 2, 3, 1), name)
        s = gpu(k, be.machine)
        c = be.compile(lower(k, s, be.machine))
        r = {"copy": f"{name} {shape} -> channels last", "bytes": 2 * 2 * int(np.prod(shape)), "describe": s.describe(k)}
        if isinstance(c, Failure): r["failure"] = str(c)
        else:
            ins = random_inputs(k, rng)
            out = poison(k.output)
            t = be.time(c, [a.reshape(-1) for a in ins], out, runs=args.reps)
            if isinstance(t, Failure): r["failure"] = str(t)
            else: r.update(ok=compare(k, out, ins, rng).ok, ours_s=t.median_s)
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
