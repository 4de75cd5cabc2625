"""The cpu_conv template's matcher: geometry of fp32 convolutions (NCHW, NHWC, stride,
padding, 1x1), refusals with their reasons, and every schedule of the family's space legal."""
from __future__ import annotations

import dataclasses

import pytest

from superopt import Tensor
from superopt.ir import cpu_conv, dtypes as dt
from superopt.ir.lower import lower
from superopt.ir.program import Native
from superopt.ir.schedule import check
from superopt.kernels.registry import Workload
from superopt.search.families.cpu_conv import FAMILY
from superopt.search.machine import load

CPU = load("cpu")
AVX512 = dataclasses.replace(CPU, simd_bytes=64, cores=2)


def _conv(**p):
    return Workload.make("conv2d", **p).kernels[0]


def test_nchw_3x3_geometry():
    g = cpu_conv.match(_conv(N=1, C=64, H=56, W=56, K=64))
    assert (g["m"], g["n"], g["k"]) == (56 * 56, 64, 64 * 9)
    assert (g["c"], g["h"], g["w"], g["oh"], g["ow"], g["r"], g["s"]) == (64, 56, 56, 56, 56, 3, 3)
    assert (g["sh"], g["sw"], g["ph"], g["pw"], g["layout"]) == (1, 1, 1, 1, 0)
    assert (g["x_c"], g["x_h"], g["x_w"], g["x_off"]) == (56 * 56, 56, 1, -57)
    assert (g["w_k"], g["w_c"], g["w_r"], g["w_s"]) == (576, 9, 3, 1)
    assert (g["o_m"], g["o_k"], g["x_in"], g["w_in"]) == (1, 56 * 56, 0, 1)


def test_nhwc_stride_2_geometry():
    g = cpu_conv.match(_conv(N=2, C=5, H=9, W=11, K=7, R=3, S=3, stride=2, pad=1, layout="nhwc"))
    assert (g["batch"], g["oh"], g["ow"], g["sh"], g["sw"], g["layout"]) == (2, 5, 6, 2, 2, 1)
    assert (g["x_n"], g["x_c"], g["x_h"], g["x_w"]) == (9 * 11 * 5, 1, 11 * 5, 5)
    assert (g["o_n"], g["o_m"], g["o_k"]) == (5 * 6 * 7, 7, 1)
    assert (g["w_k"], g["w_c"], g["w_r"], g["w_s"]) == (45, 1, 15, 5)


def test_stem_and_pointwise():
    g = cpu_conv.match(_conv(N=1, C=3, H=224, W=224, K=64, R=7, S=7, stride=2, pad=3))
    assert (g["m"], g["k"], g["sh"], g["ph"]) == (112 * 112, 147, 2, 3)
    g = cpu_conv.match(_conv(N=1, C=256, H=56, W=56, K=64, R=1, S=1, stride=1, pad=0))
    assert (g["m"], g["n"], g["k"], g["r"], g["s"], g["ph"]) == (3136, 64, 256, 1, 1, 0)


def test_one_sided_padding_matches_its_window():
    """Padding on the near side only: the far side is never reached, so the mask is the
    window's and the geometry says so (matched by value on the grid, not by form)."""
    x, w = Tensor.empty(1, 3, 8, 8, name="x"), Tensor.empty(4, 3, 3, 3, name="w")
    k = x.pad(((0, 0), (0, 0), (2, 0), (1, 0))).conv2d(w).schedule()[-1].kernel
    g = cpu_conv.match(k)
    assert isinstance(g, dict) and (g["ph"], g["pw"], g["oh"], g["ow"]) == (2, 1, 8, 7)


@pytest.mark.parametrize("make, why", [
    (lambda: _conv(C=4, K=4, H=6, W=6, groups=2), "both operands read"),
    (lambda: (Tensor.empty(1, 4, 6, 6, name="x").conv2d(Tensor.empty(4, 4, 3, 3, name="w"), padding=1) * 2.0).schedule()[-1].kernel,
     "epilogue"),
    (lambda: Tensor.empty(1, 4, 6, 6, name="x", dtype=dt.float16).conv2d(Tensor.empty(4, 4, 3, 3, name="w", dtype=dt.float16))
     .schedule()[-1].kernel, "epilogue"),  # the float32 sum cast back to float16
    (lambda: Tensor.empty(1, 4, 6, 6, name="x", dtype=dt.int8).conv2d(Tensor.empty(4, 4, 3, 3, name="w", dtype=dt.uint8))
     .schedule()[-1].kernel, "filter is not int8"),
    (lambda: (Tensor.empty(8, 16, name="a") @ Tensor.empty(16, 4, name="b")).schedule()[-1].kernel, "4-D buffer"),
    (lambda: _conv(C=2, K=2, H=4, W=4, pad=9), "no padding up to"),
    (lambda: Tensor.empty(1, 4, 6, 6, name="x").sum((2, 3)).schedule()[-1].kernel, "product of two loads"),
])
def test_refusals(make, why):
    r = cpu_conv.match(make())
    assert isinstance(r, str) and why in r, r


@pytest.mark.parametrize("xdt, code", [(dt.uint8, 1), (dt.int8, 2)])
def test_int8_variant_geometry(xdt, code):
    k = Tensor.empty(1, 4, 6, 6, name="x", dtype=xdt).conv2d(Tensor.empty(5, 4, 3, 3, name="w", dtype=dt.int8), padding=1)
    g = cpu_conv.match(k.schedule()[-1].kernel)
    assert g["dtype"] == code and (g["m"], g["n"], g["k"]) == (36, 5, 36)
    assert cpu_conv.match(_conv(C=2, K=2, H=4, W=4))["dtype"] == 0


def test_int8_needs_vnni_or_avx2():
    g = cpu_conv.match(Tensor.empty(1, 4, 6, 6, name="x", dtype=dt.int8).conv2d(
        Tensor.empty(5, 4, 3, 3, name="w", dtype=dt.int8)).schedule()[-1].kernel)
    p = dict(MR=8, NR=32, V=16, MC=64, KC=16, NC=32, PF=0, workers=1)
    vnni = dataclasses.replace(AVX512, capabilities=AVX512.capabilities | {"avx512_vnni"})
    plain = dataclasses.replace(AVX512, capabilities=AVX512.capabilities - {"avx512_vnni"})
    assert cpu_conv.check(g, p, vnni) == []
    assert any("VNNI" in e for e in cpu_conv.check(g, p, plain))
    assert cpu_conv.check(dict(g, dtype=0), p, plain) == []
    k = Tensor.empty(1, 4, 6, 6, name="x", dtype=dt.int8).conv2d(Tensor.empty(5, 4, 3, 3, name="w", dtype=dt.int8))
    k = k.schedule()[-1].kernel
    assert FAMILY.applies(k, vnni) and not FAMILY.applies(k, plain)
    avx2 = dataclasses.replace(CPU, simd_bytes=32, capabilities=frozenset({"threads", "avx2", "fma"}))
    assert cpu_conv.int8_step(vnni) == 4 and cpu_conv.int8_step(avx2) == 2 and cpu_conv.int8_step(plain) == 0
    assert cpu_conv.check(g, dict(p, V=8, NR=16, MR=4), avx2) == [] and FAMILY.applies(k, avx2)
    # the model prices k in steps: 36 k are 9 VNNI steps, 18 vpmaddwd steps
    assert FAMILY.model_geometry(g, vnni)["k"] == 9 and FAMILY.model_geometry(g, avx2)["k"] == 18


def test_space_legal_and_lowered_to_native():
    k = _conv(N=1, C=64, H=10, W=10, K=24)
    pts = list(FAMILY.space(k, AVX512))
    assert pts and all(not check(k, s, AVX512) for s in pts[:: max(1, len(pts) // 200)])
    assert {s.param("KC") for s in pts} == {128, 192, 256, 384, 512, 576}  # and the whole K (64 * 9)
    p = lower(k, pts[0], AVX512)
    (st,) = p.body
    assert isinstance(st, Native) and st.family == "cpu_conv" and st.get("k") == 576


def test_solve_is_complete_and_fast():
    k = _conv(N=1, C=64, H=56, W=56, K=64)
    s = FAMILY.solve(k, CPU, timeout_s=10, top=4)
    assert s.proved_optimal and s.candidates and s.solve_s < 10
    assert [c.modeled_s for c in s.candidates] == sorted(c.modeled_s for c in s.candidates)
    assert FAMILY.applies(k, CPU) and not FAMILY.applies(k, load("h100"))
