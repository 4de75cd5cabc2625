"""1x1 convolutions (fp32, stride 1, no padding) through the GEMM template: the cpu_conv
family's geometry seen as a GEMM (``as_gemm``), right against a float64 numpy convolution in
NCHW and NHWC, with batches and ragged blocks, and priced as the GEMM that runs."""
from __future__ import annotations

import numpy as np
import pytest

from superopt.backends.base import Compiled
from superopt.backends.cpu import CPUBackend
from superopt.ir import cpu_conv
from superopt.ir.lower import lower
from superopt.kernels import reference as ref
from superopt.kernels.registry import Workload
from superopt.search.families.cpu_conv import FAMILY, as_gemm
from superopt.search.families.cpu_gemm import schedule
from superopt.search.machine import load

CPU = load("cpu")
LANES = 16 if CPU.simd_bytes >= 64 else 8


@pytest.fixture(scope="module")
def be():
    b = CPUBackend(CPU, timeout_s=20)
    yield b
    b.close()


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("n, c, hw, co, workers", [(1, 13, 7, 37, 1), (2, 40, 9, 20, 2), (1, 64, 14, 70, 2)])
def test_1x1_as_gemm_against_numpy(be, layout, n, c, hw, co, workers):
    p = dict(N=n, C=c, H=hw, W=hw, K=co, R=1, S=1, stride=1, pad=0, layout=layout)
    k = Workload.make("conv2d", **p).kernels[0]
    g = cpu_conv.match(k)
    mm = as_gemm(g)
    assert mm is not None, g
    # N is the output's contiguous axis: pixels in NCHW, c_out in NHWC
    assert (mm["m"], mm["n"], mm["c_cs"]) == ((co, hw * hw, 1) if layout == "nchw" else (hw * hw, co, 1))
    rng = np.random.default_rng(n * 100 + c)
    ins = [rng.standard_normal(b.shape).astype(np.float32) for b in k.inputs]
    want = ref.conv2d(ins[0].astype(np.float64), ins[1].astype(np.float64), 1, 0, 1, layout)
    prog = lower(k, schedule(k, family="cpu_conv", MR=6, NR=LANES, V=LANES, MC=12, KC=16, NC=2 * LANES, PF=0,
                             workers=min(workers, CPU.cores)), CPU)
    comp = be.compile(prog)
    assert isinstance(comp, Compiled), comp
    assert "NBLOCKS" in comp.source   # the GEMM template ran, not the convolution's
    got = be.run(comp, [x.reshape(-1) for x in ins], np.full(k.output.size, np.nan, np.float32))
    np.testing.assert_allclose(got.reshape(k.output.shape), want, rtol=1e-4, atol=1e-4 * np.sqrt(c))


def test_only_plain_1x1_is_a_gemm():
    for extra in (dict(R=3, S=3, stride=1, pad=1), dict(R=1, S=1, stride=2, pad=0), dict(R=1, S=1, stride=1, pad=1)):
        k = Workload.make("conv2d", N=1, C=8, H=8, W=8, K=16, layout="nchw", **extra).kernels[0]
        assert as_gemm(cpu_conv.match(k)) is None, extra


def test_1x1_priced_as_its_gemm():
    k = Workload.make("conv2d", N=1, C=64, H=56, W=56, K=256, R=1, S=1, stride=1, pad=0, layout="nchw").kernels[0]
    g = FAMILY.model_geometry(cpu_conv.match(k), CPU)
    assert (g["m"], g["n"], g["k"]) == (256, 56 * 56, 64)
