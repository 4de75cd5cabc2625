"""search/wgmma_space: the timed wgmma variants (and their TMA and warp-specialized twins) are legal and compute the reference on emu."""
from __future__ import annotations

import numpy as np

from superopt.backends.emu import run_program
from superopt.ir import dtype as dt
from superopt.ir import tensorcore as tcm
from superopt.ir.interpret import run_kernel
from superopt.ir.lower import lower
from superopt.ir.schedule import check
from superopt.kernels.registry import Workload
from superopt.search.machine import H100
from superopt.search.wgmma_space import VARIANTS, WS_DEEPER, from_key, variants


def test_variants_are_legal_and_compute_the_reference():
    k = Workload.make("matmul", M=256, N=256, K=128, dtype="bfloat16").kernels[0]
    got = variants(k, H100)
    plain = [(key, s) for key, s in got if len(key) == 6]
    # (128, 256, 32, 2, 1, 5) is clipped to 4 stages: a duplicate; each variant is followed by its TMA twin
    assert len(plain) == len(VARIANTS) - 1 and variants(k, H100, tma=False) == plain
    for key, s in plain:
        i = got.index((key, s))
        twin, t = got[i + 1]
        assert twin == (*key, "tma") and not any(x.tma for x in s.staging) and all(x.tma for x in t.staging)
    # the warp-specialized twins keep their stages (a producer's pipeline runs across tiles), then the deeper ones
    ws = [(key, s) for key, s in got if key[-1] == "ws"]
    assert {key[:5] for key, _ in ws} >= {key[:5] for key, _ in plain} and (128, 256, 32, 2, 1, 5, "ws") in dict(ws)
    assert {(*t, "ws") for t in WS_DEEPER} <= set(dict(ws))
    for key, s in ws:
        assert s.tensor_core.producer and all(x.tma for x in s.staging) and s.threads(H100.warp) == s.threads(H100.warp) // H100.warp * H100.warp
    for key, s in got:
        assert from_key(k, tcm.match(k), key) == s
    rng = np.random.default_rng(0)
    ins = [dt.to_storage(rng.standard_normal(b.shape), b.dtype) for b in k.inputs]
    ref = dt.to_values(run_kernel(k, ins), k.output.dtype).astype(np.float64)
    for tiles, s in got:
        assert not check(k, s, H100) and s.tensor_core.instr == "wgmma.m64nNk16.bf16.f32"
        r = run_program(lower(k, s, H100), ins, max_blocks=1)
        out = dt.to_values(r.output, k.output.dtype).astype(np.float64)
        w = r.written
        assert w.any() and np.all(np.abs(out[w] - ref[w]) <= 1.6e-2 * np.maximum(1.0, np.abs(ref[w]))), tiles


def test_no_variants_for_convolutions_or_fp32():
    conv = Workload.make("conv2d", N=2, C=16, H=8, W=8, K=64, R=3, S=3, stride=1, pad=1, layout="nhwc",
                         dtype="float16").kernels[0]
    fp32 = Workload.make("matmul", M=128, N=128, K=64, dtype="float32").kernels[0]
    assert variants(conv, H100) == [] and variants(fp32, H100) == []
