"""Special input sets in verification (issue 22, deliver 4): each distribution catches a
deliberately wrong kernel that the random inputs let through (compiled for real on the cpu
and emu backends: a graph that differs from the reference only at special values, checked
against the reference kernel), correct kernels pass every set, and the comparison takes
NaN == NaN, inf == inf of one sign and -0.0 == 0.0."""
from __future__ import annotations

import math

import numpy as np
import pytest

from superopt import Tensor
from superopt.ir import dtypes
from superopt.ir.interpret import run_kernel
from superopt.ir.lower import lower
from superopt.search.hand import hand_schedule
from superopt.verify import (DISTRIBUTIONS, FINITE_MAX, InputSet, check_special, compare, random_inputs,
                             special_sets, verify_compiled)

M, N = 16, 64


def _k(t):
    return t.schedule()[0].kernel


def _x(dtype=dtypes.float32, name="x"):
    return Tensor.empty(M, N, dtype=dtype, name=name)


def _mask_case():
    """exp2 wrong only at +-inf: exp2(x + 0 * x) is NaN there (the CPU bug of issue 22)."""
    return _k(_x().exp2()), _k((_x() + _x() * 0.0).exp2())


def _nan_case():
    """A row max that skips NaN (C's fmaxf) where numpy's propagates it."""
    return _k(_x().max(1)), _k(_x().ne(_x()).where(-math.inf, _x()).max(1))


def _negzero_case():
    """1 / x with the sign of zero lost: 1 / (x + 0.0) is +inf at -0.0."""
    return _k(_x().reciprocal()), _k((_x() + 0.0).reciprocal())


def _large_case():
    """fp32 product stored as fp16, saturating at 65504 instead of overflowing to inf."""
    x, y = _x(name="x"), _x(name="y")
    return _k((x * y).cast(dtypes.float16)), _k((x * y).minimum(65504.0).cast(dtypes.float16))


def _extremes_case():
    """int8 addition that saturates instead of wrapping."""
    x, y = _x(dtypes.int8, "x"), _x(dtypes.int8, "y")
    wide = x.cast(dtypes.int32) + y.cast(dtypes.int32)
    return _k(x + y), _k(wide.maximum(-128).minimum(127).cast(dtypes.int8))


CASES = {"mask": _mask_case, "nan_inf": _nan_case, "negzero": _negzero_case, "large": _large_case,
         "extremes": _extremes_case}


@pytest.fixture(scope="module", params=["cpu", "emu"])
def backend(request):
    if request.param == "cpu":
        from superopt.backends.cpu import CPUBackend
        be = CPUBackend()
    else:
        from superopt.backends.emu.emu_backend import EmuBackend
        be = EmuBackend()
    yield be
    be.close()


def _compiled(be, k):
    c = be.compile(lower(k, hand_schedule(k, be.machine), be.machine))
    assert hasattr(c, "handle"), c
    return c


@pytest.mark.parametrize("name", list(CASES))
def test_each_distribution_catches_its_wrong_kernel(backend, name):
    ref, wrong = CASES[name]()
    assert name in special_sets(ref)
    ins = random_inputs(ref, np.random.default_rng(0))
    bad = _compiled(backend, wrong)
    main = compare(ref, backend.run(bad, [a.reshape(-1) for a in ins], np.zeros(ref.output.size, ref.output.dtype.np)),
                   ins, np.random.default_rng(0))
    assert main.ok, main                                   # the random inputs let it through
    r = check_special(ref, bad, backend, ins, name)
    assert not r.ok and r.failure_kind == "wrong", r
    v = verify_compiled(ref, bad, backend, np.random.default_rng(0), ins)
    assert not v.ok and v.reason.split(" inputs ")[0] in special_sets(ref), v


@pytest.mark.parametrize("name", list(CASES))
def test_correct_kernels_pass_every_set(backend, name):
    ref, _ = CASES[name]()
    ins = random_inputs(ref, np.random.default_rng(1))
    v = verify_compiled(ref, _compiled(backend, ref), backend, np.random.default_rng(1), ins)
    assert v.ok, v
    assert v.special == tuple(special_sets(ref)) and name in v.special


def test_causal_softmax_passes_the_mask_set_on_cpu(cpu_backend):
    from superopt.kernels import Workload
    k = Workload.make("softmax", M=64, N=128).kernel
    assert special_sets(k)[:2] == ["mask", "nan_inf"] and "large" not in special_sets(k)   # x - max: no large set
    ins = random_inputs(k, np.random.default_rng(2))
    x = dtypes.to_values(ins.special(k, "mask")[0], dtypes.float32).astype(np.float64)
    assert np.isneginf(x).sum() > x.size // 3 and np.isneginf(x[1]).all()
    with np.errstate(all="ignore"):
        e = np.exp(x - x.max(1, keepdims=True))
        want = e / e.sum(1, keepdims=True)
    ref = ins.special(k, "mask").reference(k).values.reshape(want.shape)
    np.testing.assert_array_equal(np.isnan(ref), np.isnan(want))
    np.testing.assert_allclose(ref, want, rtol=1e-6, atol=1e-12, equal_nan=True)     # the reference is numpy's
    assert verify_compiled(k, _compiled(cpu_backend, k), cpu_backend, np.random.default_rng(2), ins).ok


def test_sets_follow_their_patterns():
    k = _k(_x() * _x(name="y"))
    ins = random_inputs(k, np.random.default_rng(3))
    v = lambda name: np.asarray(ins.special(k, name)[0], np.float64)  # noqa: E731
    nz = v("negzero").reshape(-1)
    assert (nz[0::4] == 0).all() and np.signbit(nz[0::4]).all() and not np.signbit(nz[2::4]).any()
    ni = v("nan_inf")
    assert np.isnan(ni[1::4]).sum() == len(ni[1::4]) and np.isposinf(ni[2::4]).sum() == len(ni[2::4])
    big = v("large")
    assert (big >= FINITE_MAX["float32"] * 0.49).all() and np.isfinite(big).all()
    ki = _k(_x(dtypes.int32) + _x(dtypes.int32, "y"))
    e = random_inputs(ki, np.random.default_rng(3)).special(ki, "extremes")[0].reshape(-1)
    assert {-2**31, 2**31 - 1} <= set(e[0::2].tolist()) and (np.abs(e[1::2]) <= 8).all()


def test_sets_apply_only_where_the_reference_defines_the_result():
    x = _x()
    assert special_sets(_k(x.layernorm())) == ["nan_inf", "negzero"]       # an fp32 mean can overflow: no large
    assert "large" not in special_sets(_k(x - _x(name="y")))
    assert "large" in special_sets(_k(x @ Tensor.empty(N, 8, name="w")))
    assert special_sets(_k(x.cast(dtypes.int32))) == []                    # (int)NaN is undefined in C
    assert special_sets(_k(_x(dtypes.int8) << 1)) == []                    # shifts: no extremes
    assert set(DISTRIBUTIONS) == {"mask", "nan_inf", "negzero", "large", "extremes"}


def test_comparison_of_special_values():
    k = _k(-_x())
    x = np.resize(np.array([np.nan, np.inf, -np.inf, 0.0, 0.5, -0.25], np.float32), M * N)
    ins = InputSet([x.reshape(M, N)], np.random.default_rng(0))
    want = -x                                                   # NaN, -inf, inf, -0.0, -0.5, 0.25
    assert compare(k, want.copy(), ins, np.random.default_rng(0), special=True).ok      # NaN == NaN, inf == inf
    plus0 = want.copy()
    plus0[3::6] = 0.0                                           # +0.0 where the reference has -0.0
    assert compare(k, plus0, ins, np.random.default_rng(0), special=True).ok
    for at, v in ((0, 5.0), (1, np.inf), (2, 3e38), (2, np.nan), (4, -np.inf)):
        bad = want.copy()
        bad[at] = v
        r = compare(k, bad, ins, np.random.default_rng(0), special=True)
        assert not r.ok and r.failure_kind == "wrong", (at, v)


def test_a_value_at_the_overflow_threshold_may_round_to_inf():
    k = _k(_x(dtypes.float16, "x") + _x(dtypes.float16, "y"))
    ins = random_inputs(k, np.random.default_rng(4))
    good = run_kernel(k, ins).reshape(-1).copy()
    good[7] = np.float16(65504.0)
    x0 = np.array(ins[0]).reshape(-1); x0[7] = 32752.0
    x1 = np.array(ins[1]).reshape(-1); x1[7] = 32752.0
    s = InputSet([x0.reshape(M, N), x1.reshape(M, N)], np.random.default_rng(0))
    assert s.reference(k).values[7] == 65504.0
    up = good.copy(); up[7] = np.inf                       # within the per-element bound of the max: rounds to inf
    assert compare(k, up, s, np.random.default_rng(0), special=True).ok
    down = good.copy(); down[7] = -np.inf
    assert not compare(k, down, s, np.random.default_rng(0), special=True).ok
