"""Special values follow numpy in compiled code (issue 22, items 4 and 6): exp2(-inf) = 0,
exp2(+inf) = inf, NaN propagates through exp2 and max reductions, -0.0 and denormals pass
through; a causal-masked softmax (-inf above the diagonal) equals numpy on cpu and emu.
float32 -> fp16 -> float32 on the cpu backend rounds like numpy (the round trip is integer
ops, so gcc cannot fold it into a copy where AVX512-FP16 exists)."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import Tensor
from superopt.backends.emu import run_program
from superopt.ir import dtypes
from superopt.ir.interpret import run_kernel
from superopt.ir.kernelize import kernelize
from superopt.ir.lower import lower
from superopt.ir.schedule import Level as L, Schedule, Split
from superopt.search.hand import hand_schedule
from superopt.search.machine import H100, load

CPU = load("cpu")
M, N = 16, 64


def _kernel(t):
    steps = kernelize(t.node)
    assert len(steps) == 1
    return steps[0].kernel


def _special_rows() -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((M, N)).astype(np.float32)
    x[np.triu_indices(M, 1, N)] = -np.inf                  # causal mask
    x[3, 1] = np.nan                                        # NaN in a row
    x[5, 2] = np.inf                                        # +inf in a row (numpy: NaN row)
    x[6, :] = -np.inf                                       # fully masked row (numpy: NaN row)
    x[7, :8] = [-0.0, 0.0, 1e-40, -1e-40, 1e-45, 3e38, -3e38, 88.0]
    x[8, :4] = [200.0, -200.0, 130.0, -160.0]               # past exp2's clamps
    return x


def _np_softmax(x):
    with np.errstate(all="ignore"):
        x = x.astype(np.float64)
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def _same(got, want, rtol=2e-4, atol=2e-6):
    got, want = np.asarray(got, np.float64).reshape(want.shape), want.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


def _schedules(k):
    yield hand_schedule(k, CPU)
    yield Schedule(((Split(L.LOOP, M),), (Split(L.LOOP, N // 16), Split(L.UPCAST, 16))), vector=16)   # vector exp2
    yield Schedule(((Split(L.LOOP, M),), (Split(L.LOOP, N),)), vector=1)                             # scalar exp2


def _cpu_run(be, k, s, x):
    from superopt.backends.base import Compiled
    from superopt.verify import poison
    c = be.compile(lower(k, s, CPU))
    assert isinstance(c, Compiled), c
    return be.run(c, [x.reshape(-1)], poison(k.output))


def test_causal_masked_softmax_equals_numpy_on_cpu_and_emu(cpu_backend):
    k, x = _kernel(Tensor.empty(M, N, name="x").softmax(1)), _special_rows()
    want = _np_softmax(x)
    _same(run_kernel(k, [x]), want)
    for s in _schedules(k):
        _same(_cpu_run(cpu_backend, k, s, x), want)
    r = run_program(lower(k, hand_schedule(k, H100), H100), [x])
    _same(r.output, want)


@pytest.mark.parametrize("op", ["exp2", "max"])
def test_exp2_and_max_follow_numpy_on_special_values(cpu_backend, op):
    x = _special_rows()
    t = Tensor.empty(M, N, name="x")
    if op == "exp2":
        k = _kernel(t.exp2())
        with np.errstate(all="ignore"): want = np.exp2(x).astype(np.float64)            # float32 range
        rtol, atol = 2e-6, 1e-44
    else:
        k, want, rtol, atol = _kernel(t.max(1)), x.astype(np.float64).max(1), 0, 0
    _same(run_kernel(k, [x]), want, rtol, atol)
    from superopt.ir.schedule import check
    cands = [s for s in _schedules(k) if not check(k, s, CPU)] + [
        s for s in (Schedule(((Split(L.LOOP, M),), (Split(L.LOOP, N // 16), Split(L.UPCAST, 16))), vector=16),
                    Schedule(((Split(L.LOOP, M),), (Split(L.LOOP, N),)), vector=1),
                    Schedule(((Split(L.LOOP, M // 8), Split(L.UPCAST, 8)), (Split(L.LOOP, N),)), vector=8))
        if not check(k, s, CPU)]
    assert len(cands) >= 3
    for s in cands:
        _same(_cpu_run(cpu_backend, k, s, x), want, rtol, atol)
    r = run_program(lower(k, hand_schedule(k, H100), H100), [x])
    _same(r.output, want, rtol, atol)


def test_fp16_round_trip_rounds_like_numpy_on_cpu(cpu_backend):
    """float32 -> fp16 -> float32 in a register: ties to even, overflow to inf, fp16
    subnormals, NaN/inf/-0 kept (meaningful where /proc/cpuinfo has avx512fp16)."""
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 1 << 32, 4096, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32).copy()
    x[:2048] = (x[:2048].view(np.uint32) & np.uint32(0x807FFFFF) |
                (rng.integers(100, 145, 2048).astype(np.uint32) << np.uint32(23))).view(np.float32)  # fp16 range
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.0, 65520.0, -65520.0, 6.1e-5,
                        5.96e-8, 2.98e-8, 2.99e-8, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1e-45], np.float32)
    x[:len(special)] = special
    k = _kernel(Tensor.empty(4096, name="x").cast(dtypes.float16).cast(dtypes.float32))
    with np.errstate(all="ignore"): want = x.astype(np.float16).astype(np.float32)
    for s in [hand_schedule(k, CPU), Schedule(((Split(L.LOOP, 256), Split(L.UPCAST, 16)),), vector=16),
              Schedule(((Split(L.LOOP, 4096),),), vector=1)]:
        got = _cpu_run(cpu_backend, k, s, x)
        np.testing.assert_array_equal(got.view(np.uint32)[~np.isnan(want)], want.view(np.uint32)[~np.isnan(want)])
        assert np.isnan(got[np.isnan(want)]).all()

