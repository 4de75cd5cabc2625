"""The implicit-GEMM cpu_conv template on the cpu backend: right against a float64 numpy
convolution on small ragged shapes (NCHW and NHWC, stride, padding, every block level's
edges), the solver's pick on a ResNet-like 3x3, and refusals at lowering."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from superopt.backends.base import Compiled
from superopt import Tensor
from superopt.backends.cpu import CPUBackend
from superopt.ir import cpu_conv, dtypes as dt
from superopt.ir.lower import LoweringError, lower
from superopt.kernels import reference as ref
from superopt.kernels.registry import Workload
from superopt.search.families.cpu_conv import FAMILY
from superopt.search.families.cpu_gemm import schedule
from superopt.search.machine import load

CPU = load("cpu")
LANES = 16 if CPU.simd_bytes >= 64 else 8


@pytest.fixture(scope="module")
def be():
    b = CPUBackend(CPU, timeout_s=20)
    yield b
    b.close()


def _case(seed: int, **p):
    """The kernel, its inputs and the float64 reference output of conv2d(**p)."""
    k = Workload.make("conv2d", **p).kernels[0]
    rng = np.random.default_rng(seed)
    ins = [rng.standard_normal(b.shape).astype(np.float32) for b in k.inputs]
    want = ref.conv2d(ins[0].astype(np.float64), ins[1].astype(np.float64), p["stride"], p["pad"], 1, p["layout"])
    return k, ins, want


def _run(be, kernel, ins, **params) -> np.ndarray:
    c = be.compile(lower(kernel, schedule(kernel, family="cpu_conv", **params), CPU))
    assert isinstance(c, Compiled), c
    out = be.run(c, [x.reshape(-1) for x in ins], np.full(kernel.output.size, np.nan, np.float32))
    assert isinstance(out, np.ndarray), out
    return out.reshape(kernel.output.shape)


def _close(got, want, k: int) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.sqrt(k) * max(1.0, float(np.abs(want).max())))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 2), c=st.integers(1, 6), h=st.integers(2, 11), w=st.integers(2, 11), co=st.integers(1, 40),
       r=st.integers(1, 3), s=st.integers(1, 3), stride=st.integers(1, 2), pad=st.integers(0, 2),
       layout=st.sampled_from(["nchw", "nhwc"]), tile=st.integers(0, 3), blocks=st.integers(0, 2),
       workers=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_ragged_against_numpy(be, n, c, h, w, co, r, s, stride, pad, layout, tile, blocks, workers, seed):
    r, s = min(r, h + 2 * pad), min(s, w + 2 * pad)
    assume(c * r * s > 1)  # else there is nothing to reduce (an elementwise product, not a conv)
    mr, nr = [(8, 2 * LANES), (6, LANES), (4, 3 * LANES), (2, LANES)][tile]
    mc, kc, nc = [(mr, 5, nr), (2 * mr, 16, 2 * nr), (8 * mr, 64, 4 * nr)][blocks]  # small blocks: many edges
    k, ins, want = _case(seed, N=n, C=c, H=h, W=w, K=co, R=r, S=s, stride=stride, pad=pad, layout=layout)
    got = _run(be, k, ins, MR=mr, NR=nr, V=LANES, MC=mc, KC=kc, NC=nc, PF=0, workers=min(workers, CPU.cores))
    _close(got, want, c * r * s)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_stride_2_padding_3_stem_like(be, layout):
    """A 7x7 stride-2 window over a ragged input with padding 3 (the ResNet stem's form)."""
    k, ins, want = _case(3, N=1, C=3, H=23, W=19, K=10, R=7, S=7, stride=2, pad=3, layout=layout)
    got = _run(be, k, ins, MR=6, NR=LANES, V=LANES, MC=12, KC=32, NC=LANES, PF=8, workers=min(2, CPU.cores))
    _close(got, want, 3 * 49)


def test_model_pick_on_a_resnet_3x3(be):
    """The solver's first schedule on a 3x3 pad-1 conv with 64 channels (K = 576 > every KC
    but the whole-K one) at a ragged 30x30 image."""
    k, ins, want = _case(1, N=1, C=64, H=30, W=30, K=64, R=3, S=3, stride=1, pad=1, layout="nchw")
    best = FAMILY.solve(k, CPU, timeout_s=10, top=1).candidates[0].schedule
    got = _run(be, k, ins, **dict(best.params))
    _close(got, want, 576)


AVX2 = dataclasses.replace(CPU, simd_bytes=32, capabilities=CPU.capabilities - {"avx512f", "avx512_vnni"})


def _int8_case(unsigned: bool, shape: tuple, co: int, stride: int, pad: int, layout: str, seed: int):
    """An int8 conv kernel (uint8 or int8 input, int8 filter, 3x3), inputs with the extreme
    values, and the exact int64 reference."""
    c, h, w = shape
    xd = dt.uint8 if unsigned else dt.int8
    xs, ws = ((1, c, h, w), (co, c, 3, 3)) if layout == "nchw" else ((1, h, w, c), (co, 3, 3, c))
    kern = Tensor.empty(*xs, name="x", dtype=xd).conv2d(Tensor.empty(*ws, name="w", dtype=dt.int8), stride, pad, 1, layout)
    rng = np.random.default_rng(seed)
    x = rng.integers(0 if unsigned else -128, 256 if unsigned else 128, xs).astype(xd.np)
    x.reshape(-1)[:2] = (255, 0) if unsigned else (-128, 127)
    f = rng.integers(-128, 128, ws).astype(np.int8)
    f.reshape(-1)[:2] = (-128, 127)
    return kern.schedule()[-1].kernel, [x, f], ref.conv2d(x.astype(np.int64), f.astype(np.int64), stride, pad, 1, layout)


def _int8_run(be, kern, ins, machine, **params) -> np.ndarray:
    c = be.compile(lower(kern, schedule(kern, family="cpu_conv", **params), machine))
    assert isinstance(c, Compiled), c
    return be.run(c, [a.reshape(-1) for a in ins], np.full(kern.output.size, -7, np.int32))


INT8_ISAS = [pytest.param(CPU, LANES, id="vnni", marks=pytest.mark.skipif(not cpu_conv.has_vnni(CPU), reason="no AVX-512 VNNI")),
             pytest.param(AVX2, 8, id="avx2-pmaddwd", marks=pytest.mark.skipif(CPU.simd_bytes < 32, reason="no AVX2"))]


@pytest.mark.parametrize("machine, lanes", INT8_ISAS)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(unsigned=st.booleans(), c=st.integers(1, 9), h=st.integers(3, 9), w=st.integers(3, 9), co=st.integers(1, 40),
       stride=st.integers(1, 2), pad=st.integers(0, 2), layout=st.sampled_from(["nchw", "nhwc"]), tile=st.integers(0, 2),
       kc=st.sampled_from([1, 2, 64]), seed=st.integers(0, 2**16))
def test_int8_exact_against_numpy(be, machine, lanes, unsigned, c, h, w, co, stride, pad, layout, tile, kc, seed):
    """uint8 or int8 input x int8 filter -> int32, exact (extreme values included), with K
    no multiple of the step and KC blocks of 1 to 64 steps, on VNNI and on AVX2."""
    kern, ins, want = _int8_case(unsigned, (c, h, w), co, stride, pad, layout, seed)
    mr, nr = [(6, 2 * lanes), (6, lanes), (4, 3 * lanes)][tile]  # tiles both ISAs' registers hold
    got = _int8_run(be, kern, ins, machine, MR=mr, NR=nr, V=lanes, MC=2 * mr, KC=kc, NC=nr, PF=0, workers=min(2, CPU.cores))
    assert np.array_equal(got.reshape(want.shape), want)


@pytest.mark.parametrize("machine, lanes", INT8_ISAS)
@pytest.mark.parametrize("unsigned", [False, True])
def test_int8_whole_rows_inside(be, machine, lanes, unsigned):
    """Panels of one output row inside the input (the packing's fast path) and at the border."""
    kern, ins, want = _int8_case(unsigned, (13, 12, 20), 24, 1, 1, "nchw", 5)
    got = _int8_run(be, kern, ins, machine, MR=4, NR=3 * lanes, V=lanes, MC=20, KC=16, NC=3 * lanes, PF=0, workers=1)
    assert np.array_equal(got.reshape(want.shape), want)


def test_illegal_parameters_refused_at_lowering():
    k = Workload.make("conv2d", N=1, C=4, H=6, W=6, K=8).kernels[0]
    with pytest.raises(LoweringError, match="multiple of MR"):
        lower(k, schedule(k, family="cpu_conv", MR=4, NR=LANES, V=LANES, MC=10, KC=8, NC=LANES, PF=0, workers=1), CPU)


def test_grouped_conv_refused_at_lowering():
    k = Workload.make("conv2d", N=1, C=4, H=6, W=6, K=4, groups=2).kernels[0]
    with pytest.raises(LoweringError, match="groups"):
        lower(k, schedule(k, family="cpu_conv", MR=4, NR=LANES, V=LANES, MC=8, KC=8, NC=LANES, PF=0, workers=1), CPU)
