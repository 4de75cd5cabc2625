"""The packed cpu_gemm template on the cpu backend: right against numpy on ragged sizes
(edges of every block level, transposed and batched operands), both ISAs' tiles."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from superopt import Tensor
from superopt.backends.base import Compiled
from superopt.backends.cpu import CPUBackend
from superopt.ir.lower import LoweringError, lower
from superopt.search.families.cpu_gemm import FAMILY, schedule
from superopt.search.machine import load

CPU = load("cpu")
LANES = 16 if CPU.simd_bytes >= 64 else 8


@pytest.fixture(scope="module")
def be():
    b = CPUBackend(CPU, timeout_s=20)
    yield b
    b.close()


def _run(be, kernel, arrays, **params) -> np.ndarray:
    c = be.compile(lower(kernel, schedule(kernel, **params), CPU))
    assert isinstance(c, Compiled), c
    out = be.run(c, [x.reshape(-1) for x in arrays], np.full(kernel.output.size, np.nan, np.float32))
    assert not isinstance(out, Exception) and hasattr(out, "reshape"), out
    return out.reshape(kernel.output.shape)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(2, 70), n=st.integers(2, 70), k=st.integers(2, 70), batch=st.integers(1, 3),
       ta=st.booleans(), tb=st.booleans(), tile=st.integers(0, 3), blocks=st.integers(0, 2),
       workers=st.integers(1, 2), pf=st.sampled_from([0, 4]), seed=st.integers(0, 2**16))
def test_ragged_against_numpy(be, m, n, k, batch, ta, tb, tile, blocks, workers, pf, seed):
    mr, nr = [(8, 2 * LANES), (6, LANES), (4, 3 * LANES), (2, LANES)][tile]
    mc, kc, nc = [(mr, 8, nr), (2 * mr, 16, 2 * nr), (8 * mr, 64, 4 * nr)][blocks]  # small blocks: many edges
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch, k, m) if ta else (batch, m, k), dtype=np.float32)
    b = rng.standard_normal((batch, n, k) if tb else (batch, k, n), dtype=np.float32)
    ta_, tb_ = Tensor.empty(*a.shape, name="a"), Tensor.empty(*b.shape, name="b")
    kern = ((ta_.transpose(-1, -2) if ta else ta_) @ (tb_.transpose(-1, -2) if tb else tb_)).schedule()[-1].kernel
    got = _run(be, kern, [a, b], MR=mr, NR=nr, V=LANES, MC=mc, KC=kc, NC=nc, PF=pf, workers=min(workers, CPU.cores))
    want = (a.swapaxes(-1, -2) if ta else a).astype(np.float64) @ (b.swapaxes(-1, -2) if tb else b).astype(np.float64)
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_model_pick_on_1000_cubed_edges(be):
    """The solver's first schedule at a size that is no multiple of MR, NR or the blocks."""
    n = 1000
    kern = (Tensor.empty(n, n - 3, name="a") @ Tensor.empty(n - 3, n + 5, name="b")).schedule()[0].kernel
    best = FAMILY.solve(kern, CPU, timeout_s=10, top=1).candidates[0].schedule
    rng = np.random.default_rng(1)
    a, b = rng.random((n, n - 3), dtype=np.float32), rng.random((n - 3, n + 5), dtype=np.float32)
    got = _run(be, kern, [a, b], **dict(best.params))
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-5)


def test_illegal_parameters_refused_at_lowering():
    kern = (Tensor.empty(16, 16, name="a") @ Tensor.empty(16, 16, name="b")).schedule()[0].kernel
    with pytest.raises(LoweringError, match="multiple of V"):
        lower(kern, schedule(kern, MR=4, NR=LANES + 1, V=LANES, MC=8, KC=8, NC=LANES + 1, PF=0, workers=1), CPU)


def test_non_gemm_refused_at_lowering():
    kern = (Tensor.empty(16, 16, name="a") + Tensor.empty(16, 16, name="b")).schedule()[0].kernel
    with pytest.raises(LoweringError, match="not a sum"):
        lower(kern, dataclasses.replace(schedule(kern, MR=4, NR=LANES, V=LANES, MC=8, KC=8, NC=LANES, PF=0, workers=1)), CPU)


@pytest.mark.parametrize("tb", [False, True])
def test_many_blocks_double_buffered_b(be, tb):
    """Batch x NC x KC blocks well past the two B buffers (3 x 4 x 12 of them), B packed by
    rows (row-major) or by panels (transposed), both workers taking items as they come free."""
    batch, m, n, k = 3, 70, 4 * 2 * LANES - 5, 90
    rng = np.random.default_rng(7)
    a = rng.standard_normal((batch, m, k), dtype=np.float32)
    b = rng.standard_normal((batch, n, k) if tb else (batch, k, n), dtype=np.float32)
    tb_ = Tensor.empty(*b.shape, name="b")
    kern = (Tensor.empty(*a.shape, name="a") @ (tb_.transpose(-1, -2) if tb else tb_)).schedule()[-1].kernel
    for _ in range(3):  # each call re-runs every phase's hand-over between the workers
        got = _run(be, kern, [a, b], MR=6, NR=2 * LANES, V=LANES, MC=12, KC=8, NC=2 * LANES, PF=0, workers=min(2, CPU.cores))
        want = a.astype(np.float64) @ (b.swapaxes(-1, -2) if tb else b).astype(np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))
