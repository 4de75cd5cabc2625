"""The staged SIMT hand rule (search/hand.staged_simt): fp32 GEMMs get the first shared-memory
staged tile of STAGED_TILES; convolutions, GEMVs and 16-bit GEMMs keep their own rules."""
from __future__ import annotations

from superopt.ir.schedule import Level, check
from superopt.kernels.registry import Workload
from superopt.search import hand
from superopt.search.machine import H100


def _gemm(dtype: str, M: int = 512, N: int = 512, K: int = 256):
    return Workload.make("matmul", M=M, N=N, K=K, dtype=dtype).kernels[0]


def test_fp32_gemms_take_the_first_staged_tile():
    big = _gemm("float32", 2048, 2048, 2048)
    s = hand.gpu(big, H100)
    assert s == hand.staged_simt(big, H100, *hand.STAGED_TILES[0]) and check(big, s, H100) == []
    assert s.staging and s.tensor_core is None and s.blocks() == (2048 // 64) ** 2
    bmm = Workload.make("bmm", B=256, M=512, N=512, K=64, dtype="float32").kernels[0]
    assert hand.gpu(bmm, H100).staging                                        # batched GEMMs too
    ragged = _gemm("float32", 100, 72, 24)                                    # tiles shrink to the axes
    s = hand.gpu(ragged, H100)
    assert s.staging and check(ragged, s, H100) == []


def test_other_kernels_keep_their_rules():
    assert hand.gpu(_gemm("float16"), H100).tensor_core is not None          # tensor cores first
    gemv = Workload.make("gemv", K=1024, N=1024, dtype="float32").kernels[0]
    assert not hand.gpu(gemv, H100).staging                                   # a GEMV is a reduction
    conv = Workload.make("conv2d", N=1, C=16, H=8, W=8, K=32, layout="nhwc", dtype="float32").kernels[0]
    s = hand.gpu(conv, H100)                                                  # no staged conv timed yet
    assert not s.staging and any(x.level is Level.UPCAST for sp in s.splits for x in sp)
