"""verify(): fresh inputs, poisoned outputs, tolerances, NaN never passes."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import Tensor
from superopt.ir import dtypes
from superopt.ir.interpret import run_kernel
from superopt.ir.schedule import Level as L, Schedule, Split
from superopt.verify import SAMPLE_POINTS, compare, poison, random_inputs, verify


def _kernel(dtype=dtypes.float32, n=64):
    x, y = Tensor.empty(n, 32, dtype=dtype, name="x"), Tensor.empty(n, 32, dtype=dtype, name="y")
    return (x * y + x).schedule()[0].kernel


def test_inputs_are_fresh_and_never_zero():
    k = _kernel(dtypes.int8)
    a, b = random_inputs(k, np.random.default_rng()), random_inputs(k, np.random.default_rng())
    assert not np.array_equal(a[0], b[0])
    for d in (dtypes.float32, dtypes.float16, dtypes.bfloat16, dtypes.int8, dtypes.int32):
        arr = random_inputs(_kernel(d), np.random.default_rng(0))[0]
        assert np.all(dtypes.to_values(arr, d) != 0)


def test_poison_is_nan_or_sentinel():
    assert np.isnan(dtypes.to_values(poison(_kernel(dtypes.bfloat16).output), dtypes.bfloat16)).all()
    assert np.isnan(poison(_kernel().output)).all()
    assert (poison(_kernel(dtypes.int32).output) == -123456789).all()


@pytest.mark.parametrize("dtype", [dtypes.float32, dtypes.float16, dtypes.bfloat16, dtypes.int8, dtypes.int32])
def test_correct_schedules_pass(cpu_backend, dtype):
    k = _kernel(dtype)
    s = Schedule(((Split(L.GRID, 4), Split(L.LOOP, 16)), (Split(L.LOOP, 2), Split(L.UPCAST, 16))), vector=16, workers=2)
    r = verify(k, s, cpu_backend)
    assert r.ok, r
    assert r.checked == 64 * 32


def test_unwritten_outputs_fail():
    k = _kernel()
    rng = np.random.default_rng(0)
    ins = random_inputs(k, rng)
    got = run_kernel(k, ins).reshape(-1).copy()
    assert compare(k, got, ins, rng).ok
    got[5] = np.nan  # one element never written
    r = compare(k, got, ins, rng)
    assert not r.ok and r.failure_kind == "wrong" and "NaN" in r.reason


def test_tolerance_per_dtype():
    rng = np.random.default_rng(0)
    k32, k16 = _kernel(), _kernel(dtypes.float16)
    ins = random_inputs(k32, rng)
    ref = run_kernel(k32, ins).reshape(-1).astype(np.float64)
    assert compare(k32, (ref * (1 + 1e-6)).astype(np.float32), ins, rng).ok
    assert not compare(k32, (ref * (1 + 1e-2)).astype(np.float32), ins, rng).ok
    ins16 = random_inputs(k16, rng)
    ref16 = run_kernel(k16, ins16).reshape(-1).astype(np.float64)
    assert compare(k16, (ref16 * (1 + 2e-3)).astype(np.float16), ins16, rng).ok  # fp16: a few ulps
    # a wgmma pipeline on the H100 summed wrong by 1.6e-2 and passed the fp16 tolerance of the time
    assert not compare(k16, (ref16 * (1 + 1.6e-2)).astype(np.float16), ins16, rng).ok
    assert not compare(k16, (ref16 * 1.2).astype(np.float16), ins16, rng).ok


def test_integers_must_be_exact():
    rng = np.random.default_rng(0)
    k = _kernel(dtypes.int32)
    ins = random_inputs(k, rng)
    got = run_kernel(k, ins).reshape(-1).copy()
    assert compare(k, got, ins, rng).ok
    got[3] += 1
    r = compare(k, got, ins, rng)
    assert not r.ok and "differ" in r.reason


def test_large_outputs_are_sampled(cpu_backend):
    k = (Tensor.empty(512, 256, name="a") @ Tensor.empty(256, 256, name="b")).schedule()[0].kernel
    r = verify(k, Schedule(((Split(L.GRID, 128), Split(L.UPCAST, 4)), (Split(L.LOOP, 16), Split(L.UPCAST, 16)),
                            (Split(L.LOOP, 256),)), vector=16, workers=2), cpu_backend)
    assert r.ok and r.checked == SAMPLE_POINTS


def test_illegal_schedule_is_a_structured_failure(cpu_backend):
    k = _kernel()
    r = verify(k, Schedule(((Split(L.LOOP, 8),), (Split(L.LOOP, 32),))), cpu_backend)
    assert not r.ok and r.failure_kind == "illegal" and "cover" in r.reason
