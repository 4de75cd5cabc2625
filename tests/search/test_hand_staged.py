"""The staged SIMT hand rule (search/hand.staged_simt): off by default; switched on, fp32
GEMMs and convolutions get shared-memory staged schedules and the others keep theirs."""
from __future__ import annotations

from superopt.ir.schedule import check
from superopt.kernels.registry import Workload
from superopt.search import hand
from superopt.search.machine import H100


def _gemm(dtype: str):
    return Workload.make("matmul", M=512, N=512, K=256, dtype=dtype).kernels[0]


def test_off_by_default_the_register_tile_rule_stays():
    assert hand.STAGED_SIMT is False
    s = hand.gpu(_gemm("float32"), H100)
    assert not s.staging and s.tensor_core is None


def test_switched_on_fp32_gemms_are_staged(monkeypatch):
    monkeypatch.setattr(hand, "STAGED_SIMT", True)
    big = Workload.make("matmul", M=2048, N=2048, K=256, dtype="float32").kernels[0]
    assert hand.gpu(big, H100) == hand.staged_simt(big, H100, *hand.STAGED_TILES[0])   # 256 blocks fill 132 SMs
    k = _gemm("float32")   # 16 blocks of 128x128 would leave most SMs idle: smaller tiles, more blocks
    s = hand.gpu(k, H100)
    assert s.staging and s.tensor_core is None and check(k, s, H100) == [] and s.blocks() == 64
    assert hand.gpu(_gemm("float16"), H100).tensor_core is not None          # tensor cores first
    gemv = Workload.make("gemv", K=1024, N=1024, dtype="float32").kernels[0]
    assert not hand.gpu(gemv, H100).staging                                   # a GEMV is a reduction
    conv = Workload.make("conv2d", N=1, C=16, H=8, W=8, K=32, layout="nhwc", dtype="float32").kernels[0]
    assert hand.gpu(conv, H100).staging
