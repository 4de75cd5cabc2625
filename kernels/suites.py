"""Named shape suites. ``suite(name)`` gives the full shapes, ``suite(name, small=True)``
the CI variant: the same entries (same names, kinds and structure) at small shapes.

Choices written down:
- bert: BERT-large at batch 16, sequence 512 (8192 tokens), hidden 1024, FFN 4096, 16
  heads of dimension 64, fp16. GEMMs are named MxNxK. Attention runs as batched GEMMs
  over batch*heads = 256: scores = Q[256,512,64] @ K^T (K stored [256,512,64]) and
  context = P[256,512,512] @ V[256,512,64].
- resnet: ResNet-50 convolutions at batch 32, fp16, NCHW; the 3x3 convs of the four
  stages (the first is 32x64x56x56 -> 64) and the 1x1 convs around them.
- llm: a 7B-class decoder (hidden 4096, FFN 11008, 32 heads of 128), fp16, decode
  (1 token) plus a 2048-token prefill RMSnorm and rotary.
- membound: fp32 row sum 16384^2, softmax 8192^2, layernorm 8192x1024 (BERT rows),
  a*b+c over 2^26 elements.
- dsp: int8 NHWC at batch 1 with per-channel requantize to int8 (MobileNet/ResNet-like
  edge shapes), depthwise 3x3, int8 matmul (int32 out). The small stride-2 depthwise has
  12 channels, not a multiple of 8: its stores are 4-byte partial vectors (predicated on
  Hexagon) at offsets that are not multiples of 8.
"""
from __future__ import annotations

from typing import Any

from .registry import Workload

H16 = "float16"


def _w(name: str, kind: str, full: dict[str, Any], small: dict[str, Any], is_small: bool) -> Workload:
    return Workload.make(kind, name=name, **({**full, **small} if is_small else full))


def _bert(s: bool) -> list[Workload]:
    g = dict(dtype=H16)
    return [
        _w("qkv_out_gemm_8192x1024x1024", "matmul", dict(M=8192, N=1024, K=1024, **g), dict(M=64, N=32, K=32), s),
        _w("ffn_up_gemm_8192x4096x1024", "matmul", dict(M=8192, N=4096, K=1024, **g), dict(M=64, N=64, K=32), s),
        _w("ffn_down_gemm_8192x1024x4096", "matmul", dict(M=8192, N=1024, K=4096, **g), dict(M=64, N=32, K=64), s),
        _w("attn_scores_bmm_256x512x512x64", "bmm", dict(B=256, M=512, N=512, K=64, b_layout="nk", **g),
           dict(B=4, M=16, N=16, K=8), s),
        _w("attn_context_bmm_256x512x64x512", "bmm", dict(B=256, M=512, N=64, K=512, b_layout="kn", **g),
           dict(B=4, M=16, N=8, K=16), s),
    ]


def _conv(n: int, c: int, hw: int, k: int, r: int, stride: int = 1) -> dict[str, Any]:
    return dict(N=n, C=c, H=hw, W=hw, K=k, R=r, S=r, stride=stride, pad=r // 2, layout="nchw", dtype=H16)


def _resnet(s: bool) -> list[Workload]:
    full = [("conv3x3_32x64x56x56_k64", _conv(32, 64, 56, 64, 3)),
            ("conv3x3_32x128x28x28_k128", _conv(32, 128, 28, 128, 3)),
            ("conv3x3_32x256x14x14_k256", _conv(32, 256, 14, 256, 3)),
            ("conv3x3_32x512x7x7_k512", _conv(32, 512, 7, 512, 3)),
            ("conv3x3s2_32x128x56x56_k128", _conv(32, 128, 56, 128, 3, 2)),
            ("conv1x1_32x64x56x56_k256", _conv(32, 64, 56, 256, 1)),
            ("conv1x1_32x256x56x56_k64", _conv(32, 256, 56, 64, 1)),
            ("conv1x1_32x512x28x28_k128", _conv(32, 512, 28, 128, 1)),
            ("conv1x1_32x1024x14x14_k256", _conv(32, 1024, 14, 256, 1)),
            ("conv1x1_32x2048x7x7_k512", _conv(32, 2048, 7, 512, 1))]
    small = {"conv3x3_32x64x56x56_k64": dict(N=2, C=4, H=6, W=6, K=4), "conv3x3_32x128x28x28_k128": dict(N=1, C=8, H=5, W=5, K=8),
             "conv3x3_32x256x14x14_k256": dict(N=1, C=8, H=4, W=4, K=4), "conv3x3_32x512x7x7_k512": dict(N=1, C=4, H=3, W=3, K=8),
             "conv3x3s2_32x128x56x56_k128": dict(N=1, C=4, H=7, W=7, K=4), "conv1x1_32x64x56x56_k256": dict(N=2, C=4, H=4, W=4, K=8),
             "conv1x1_32x256x56x56_k64": dict(N=1, C=8, H=4, W=4, K=4), "conv1x1_32x512x28x28_k128": dict(N=1, C=16, H=3, W=3, K=4),
             "conv1x1_32x1024x14x14_k256": dict(N=1, C=16, H=2, W=2, K=8), "conv1x1_32x2048x7x7_k512": dict(N=1, C=32, H=2, W=2, K=8)}
    return [_w(name, "conv2d", p, small[name], s) for name, p in full]


def _llm(s: bool) -> list[Workload]:
    g = dict(dtype=H16)
    return [
        _w("decode_gemv_qkvo_4096x4096", "gemv", dict(K=4096, N=4096, **g), dict(K=64, N=32), s),
        _w("decode_gemv_up_4096x11008", "gemv", dict(K=4096, N=11008, **g), dict(K=32, N=48), s),
        _w("decode_gemv_down_11008x4096", "gemv", dict(K=11008, N=4096, **g), dict(K=48, N=32), s),
        _w("decode_rmsnorm_1x4096", "rmsnorm", dict(M=1, N=4096, **g), dict(N=64), s),
        _w("prefill_rmsnorm_2048x4096", "rmsnorm", dict(M=2048, N=4096, **g), dict(M=8, N=32), s),
        _w("decode_rotary_1x32x128", "rotary", dict(S=1, H=32, D=128, **g), dict(H=4, D=16), s),
        _w("prefill_rotary_2048x32x128", "rotary", dict(S=2048, H=32, D=128, **g), dict(S=8, H=2, D=8), s),
    ]


def _membound(s: bool) -> list[Workload]:
    f = dict(dtype="float32")
    return [
        _w("rowsum_16384x16384", "rowsum", dict(M=16384, N=16384, **f), dict(M=16, N=64), s),
        _w("softmax_8192x8192", "softmax", dict(M=8192, N=8192, **f), dict(M=8, N=64), s),
        _w("layernorm_8192x1024", "layernorm", dict(M=8192, N=1024, **f), dict(M=8, N=32), s),
        _w("fma_2^26", "fma", dict(n=1 << 26, **f), dict(n=1000), s),
    ]


def _qconv(n: int, hw: int, c: int, k: int, r: int, stride: int = 1, groups: int = 1) -> dict[str, Any]:
    return dict(N=n, H=hw, W=hw, C=c, K=k, R=r, S=r, stride=stride, pad=r // 2, groups=groups)


def _dsp(s: bool) -> list[Workload]:
    return [
        _w("qconv3x3_nhwc_1x56x56x64_k64", "qconv2d", _qconv(1, 56, 64, 64, 3), dict(H=6, W=6, C=8, K=8), s),
        _w("qconv5x5_nhwc_1x28x28x32_k32", "qconv2d", _qconv(1, 28, 32, 32, 5), dict(H=6, W=6, C=4, K=8), s),
        _w("qdwconv3x3_nhwc_1x112x112x32", "qconv2d", _qconv(1, 112, 32, 32, 3, groups=32), dict(H=6, W=6, C=8, K=8, groups=8), s),
        _w("qdwconv3x3s2_nhwc_1x112x112x64", "qconv2d", _qconv(1, 112, 64, 64, 3, 2, 64), dict(H=7, W=7, C=12, K=12, groups=12), s),
        _w("qmatmul_1024x1024x1024", "matmul", dict(M=1024, N=1024, K=1024, dtype="int8"), dict(M=16, N=16, K=32), s),
    ]


SUITES = {"bert": _bert, "resnet": _resnet, "llm": _llm, "membound": _membound, "dsp": _dsp}


def suite(name: str, small: bool = False) -> list[Workload]:
    """The workloads of suite ``name`` (full shapes, or the small CI variant)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r} (suites: {', '.join(SUITES)})")
    return SUITES[name](small)


def all_workloads(small: bool = False) -> list[Workload]:
    return [w for name in SUITES for w in suite(name, small)]
