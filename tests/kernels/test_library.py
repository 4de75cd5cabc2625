"""The workload library: every suite entry's small variant builds and the interpreter
computes its numpy reference; full-size suites build and count what they should."""
from __future__ import annotations

import math

import numpy as np
import pytest

from superopt.ir import dtypes as dt
from superopt.kernels import KINDS, SUITES, Workload, all_workloads, get_kind, suite
from superopt.kernels.builders import qshifts

SMALL = all_workloads(small=True)


@pytest.mark.parametrize("w", SMALL, ids=[w.name for w in SMALL])
def test_small_variant_matches_reference(w: Workload):
    ins = w.random_inputs(seed=0)
    got = w.interpret(ins)
    want = w.reference(ins)
    assert got.shape == w.output.shape and got.dtype == w.output.dtype.np
    assert w.matches(got, want), f"{w.name}: max error {np.max(np.abs(got.astype(np.float64) - want))}"
    assert not w.matches(_perturb(got, w), want), "the comparison must notice a wrong element"


def _perturb(got: np.ndarray, w: Workload) -> np.ndarray:
    bad = got.copy().reshape(-1)
    if w.output.dtype.is_float:
        v = dt.to_values(bad, w.output.dtype).astype(np.float64)
        v[0] += 1.0 + abs(v).max()
        bad = dt.to_storage(v, w.output.dtype)
    else:
        bad[0] = bad[0] + 5 if bad[0] < 100 else bad[0] - 5
    return bad.reshape(got.shape)


@pytest.mark.parametrize("name", list(SUITES))
def test_small_variant_has_the_same_entries(name):
    full, small = suite(name), suite(name, small=True)
    assert [w.name for w in full] == [w.name for w in small]
    assert [w.kind for w in full] == [w.kind for w in small]
    for f, s in zip(full, small):
        assert len(f.steps) == len(s.steps) and f.kernel.kind == s.kernel.kind, f.name


def test_full_suites_build_with_expected_sizes():
    by_name = {w.name: w for w in all_workloads()}
    assert set(SUITES) == {"bert", "resnet", "llm", "membound", "dsp"}
    gemm = by_name["ffn_up_gemm_8192x4096x1024"]
    assert gemm.flops == 2 * 8192 * 4096 * 1024 and len(gemm.steps) == 1 and gemm.kernel.kind == "gemm"
    assert gemm.min_bytes == 2 * (8192 * 1024 + 1024 * 4096 + 8192 * 4096)
    conv = by_name["conv3x3_32x64x56x56_k64"]
    assert conv.kernel.kind == "conv" and conv.flops == 2 * 32 * 64 * 56 * 56 * 64 * 9
    assert conv.inputs[0].shape == (32, 64, 56, 56) and conv.inputs[0].dtype is dt.float16
    scores = by_name["attn_scores_bmm_256x512x512x64"]
    assert scores.output.shape == (256, 512, 512) and scores.flops == 2 * 256 * 512 * 512 * 64
    assert by_name["rowsum_16384x16384"].min_bytes == 4 * (16384 * 16384 + 16384)
    assert by_name["fma_2^26"].output.shape == (1 << 26,)
    sm = by_name["softmax_8192x8192"]   # max, exp-sum and normalize in one row kernel
    assert len(sm.steps) == 1 and sm.kernel.kind == "row" and len(sm.kernel.reduces) == 2
    q = by_name["qconv3x3_nhwc_1x56x56x64_k64"]
    assert len(q.steps) == 1 and q.output.dtype is dt.int8 and q.kernel.kind == "conv"
    assert by_name["qmatmul_1024x1024x1024"].output.dtype is dt.int32


def test_large_kernel_spot_checked_at_points():
    """A full-size GEMM's interpreter value at a few output points equals the reference there."""
    from superopt.ir.interpret import run_kernel
    w = Workload.make("matmul", M=2048, N=64, K=512, dtype=dt.float16)
    ins = w.random_inputs(1)
    pts = np.array([0, 777, 2048 * 64 - 1])
    got = run_kernel(w.kernel, ins, points=pts)
    a, b = (x.astype(np.float64) for x in ins)
    want = (a @ b).reshape(-1)[pts]
    np.testing.assert_allclose(got, want, rtol=1e-2)


def test_every_kind_builds_with_defaults_and_runs_small():
    small = {"M": 4, "N": 8, "K": 8, "B": 2, "C": 4, "H": 5, "W": 5, "n": 50, "S": 2, "D": 8, "eps": 1e-5, "T": 6, "V": 20}
    for kind in KINDS.values():
        params = {p.name: small[p.name] for p in kind.params if p.name in small}
        w = Workload.make(kind.name, **params)
        ins = w.random_inputs(3)
        assert w.matches(w.interpret(ins), w.reference(ins)), kind.name


def test_cli_style_parameters():
    w = Workload.from_args("conv2d", ["N=2", "C=8", "groups=2", "layout=nhwc", "dtype=fp16"])
    assert w.args["groups"] == 2 and w.args["dtype"] is dt.float16 and w.inputs[0].shape == (2, 56, 56, 8)
    for bad in (["Q=1"], ["N=0"], ["N=x"], ["layout=nchwc"], ["dtype=float64"], ["N"]):
        with pytest.raises(ValueError):
            Workload.from_args("conv2d", bad)
    with pytest.raises(ValueError):
        get_kind("nope")
    with pytest.raises(ValueError):
        suite("nope")


def test_main_kernel_is_the_heaviest():
    from superopt.ir.kernelize import ROW_MAX
    assert len(Workload.make("layernorm", M=4, N=16).steps) == 1       # one row kernel
    w = Workload.make("layernorm", M=2, N=2 * ROW_MAX)                # rows too long for one: 3 kernels
    assert len(w.steps) == 3
    assert w.kernel.flops == max(k.flops for k in w.kernels)
    assert w.steps[-1].output == "out" and w.kernel_bytes > w.min_bytes


def test_requantize_fixed_point_rounds_half_up_and_saturates():
    w = Workload.make("qconv2d", N=1, C=1, H=1, W=1, K=4, R=1, S=1, pad=0)
    assert qshifts(w.args) == (1, 6)
    x = np.array([1], dtype=np.int8).reshape(1, 1, 1, 1)
    wt = np.array([1, -1, 100, -100], dtype=np.int8).reshape(4, 1, 1, 1)
    bias = np.array([125, -129, 99900, -99900], dtype=np.int32)  # acc + bias = 126, -130, 1e5, -1e5
    mult = np.full(4, 1 << 14, dtype=np.int32)                   # x 0.5
    # 126 -> 63 -> 32 -> 32/64 = 0.5 up to 1; -130 -> -65 -> -32 -> -0.5 up to 0; then saturation
    for got in (w.interpret([x, wt, bias, mult]), w.reference([x, wt, bias, mult])):
        np.testing.assert_array_equal(np.asarray(got).reshape(-1), [1, 0, 127, -128])


def test_flops_are_textbook_for_contractions():
    w = Workload.make("bmm", B=3, M=5, N=7, K=11, b_layout="nk")
    assert w.flops == 2 * 3 * 5 * 7 * 11
    c = Workload.make("conv2d", N=1, C=4, H=8, W=8, K=6, R=3, S=3, stride=2, pad=1, groups=2)
    oh = (8 + 2 - 3) // 2 + 1
    assert c.flops == 2 * 1 * 6 * oh * oh * (4 // 2) * 9
    assert math.isclose(c.kernel.intensity, c.kernel.flops / c.kernel.min_bytes)
