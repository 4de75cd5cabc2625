"""Verification compares the whole output where a fast reference exists (issue 22, item 5):
each of 10 single wrong or unwritten elements in a 1000x1000 matmul output and in a
20,000,003-element elementwise output fails it (errors injected into the output array)."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import Tensor
from superopt.fastref import whole_output
from superopt.ir.interpret import run_kernel
from superopt.verify import compare, random_inputs


def _kernel(t):
    return t.schedule()[0].kernel


def _ten_single_errors(k, seed):
    rng = np.random.default_rng(seed)
    ins = random_inputs(k, rng)
    good = whole_output(k, ins)
    assert good is not None
    assert compare(k, good, ins, rng).ok
    n = good.size
    caught = 0
    for t, i in enumerate(rng.choice(n, 10, replace=False)):
        bad = good.copy()
        if t % 2: bad[i] = np.nan                                   # never written (poison)
        else: bad[i] = bad[i] * np.float32(1.01) + np.float32(0.01)  # wrong by ~1%
        r = compare(k, bad, ins, rng)
        caught += not r.ok
        assert r.checked == k.out_points
    return caught


def test_single_wrong_or_unwritten_elements_of_a_1000x1000_matmul_fail():
    k = _kernel(Tensor.empty(1000, 128, name="a") @ Tensor.empty(128, 1000, name="b"))
    assert _ten_single_errors(k, 1) == 10


def test_single_wrong_or_unwritten_elements_of_a_20000003_element_output_fail():
    n = 20_000_003
    x, y = Tensor.empty(n, name="x"), Tensor.empty(n, name="y")
    assert _ten_single_errors(_kernel(x * y + x), 2) == 10


def test_fast_reference_equals_the_interpreter():
    for t in [(Tensor.empty(40, 24, name="a") @ Tensor.empty(24, 36, name="b")).relu(),
              Tensor.empty(30, 50, name="x").max(1), Tensor.empty(30, 50, name="x").exp2() * 3]:
        k = _kernel(t)
        ins = random_inputs(k, np.random.default_rng(0))
        np.testing.assert_array_equal(whole_output(k, ins), run_kernel(k, ins).reshape(-1))


def test_single_wrong_or_unwritten_elements_of_a_1000x1000_softmax_fail():
    from superopt.kernels import Workload
    k = Workload.make("softmax", M=1000, N=1000).kernel
    assert k.row_axes                                   # a row kernel: compared whole, not sampled
    ins = random_inputs(k, np.random.default_rng(3))
    x = np.asarray(ins[0], dtype=np.float64)
    e = np.exp(x - x.max(1, keepdims=True))
    numpy_softmax = (e / e.sum(1, keepdims=True)).astype(np.float32).reshape(-1)
    assert compare(k, numpy_softmax, ins, np.random.default_rng(0)).ok
    assert _ten_single_errors(k, 3) == 10


def test_norm_rows_compared_whole():
    from superopt.kernels import Workload
    for kind in ("layernorm", "rmsnorm"):
        k = Workload.make(kind, M=300, N=700).kernel
        rng = np.random.default_rng(4)
        ins = random_inputs(k, rng)
        good = whole_output(k, ins)
        np.testing.assert_array_equal(good, run_kernel(k, ins).reshape(-1))
        bad = good.copy()
        bad[12345] = bad[12345] * np.float32(1.01) + np.float32(0.01)   # wrong by ~1%
        r = compare(k, bad, ins, rng)
        assert r.checked == k.out_points and not r.ok and "1 of" in r.reason
