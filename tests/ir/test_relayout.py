"""ir/relayout.py: a kernel reading a permuted copy of an input computes what it computed,
for convolutions (padding, strides, both layouts), GEMMs and elementwise kernels under random
permutations; indices it cannot split are refused with a reason."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from superopt import Tensor
from superopt.ir import dtype as dt
from superopt.ir.interpret import run_kernel
from superopt.ir.kernel import Axis, Buffer, Kernel
from superopt.ir.node import TRUE, Node, Ops, var
from superopt.ir.relayout import coordinates, permute_kernel, relayout
from superopt.kernels.registry import Workload


def _inputs(k, seed=0):
    rng = np.random.default_rng(seed)
    return [dt.to_storage(rng.standard_normal(b.shape), b.dtype) for b in k.inputs]


def _check(k, slot, order, seed=0):
    ins = _inputs(k, seed)
    copy, k2 = relayout(k, slot, order)
    moved = run_kernel(copy, [ins[slot]])
    assert np.array_equal(moved, ins[slot].transpose(order))
    assert k2.inputs[slot].shape == moved.shape and k2.output == k.output and k2.axes == k.axes
    got = run_kernel(k2, [moved if i == slot else a for i, a in enumerate(ins)])
    np.testing.assert_array_equal(got, run_kernel(k, ins))   # the same sums in the same order


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["nchw", "nhwc"]), st.integers(1, 2), st.sampled_from([3, 8]), st.integers(3, 7), st.integers(3, 7),
       st.sampled_from([2, 4]), st.sampled_from([1, 3]), st.sampled_from([1, 2]), st.sampled_from([0, 1]),
       st.permutations(range(4)), st.permutations(range(4)), st.integers(0, 99))
def test_conv_reads_any_permuted_copy(layout, n, c, h, w, kout, r, stride, pad, o0, o1, seed):
    k = Workload.make("conv2d", N=n, C=c, H=h, W=w, K=kout, R=r, S=r, stride=stride, pad=pad, layout=layout,
                      dtype="float16").kernel
    _check(k, 0, tuple(o0), seed)
    _check(k, 1, tuple(o1), seed)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_batched_matmul_and_elementwise(order):
    k = Workload.make("bmm", B=2, M=8, N=16, K=24, dtype="float32").kernel
    _check(k, 0, order)
    _check(k, 1, order)
    a, b = Tensor.empty(3, 4, 5, name="a"), Tensor.empty(3, 5, 4, name="b")
    (s,) = (a * 2 + b.permute(0, 2, 1)).schedule()
    _check(s.kernel, 0, order)
    _check(s.kernel, 1, order)


def test_conv_coordinates_come_from_the_mask():
    """The NCHW input's row and column: y + ky - 1 and x + kx - 1 (the padding's -1 from the mask)."""
    k = Workload.make("conv2d", N=2, C=4, H=5, W=6, K=4, R=3, S=3, stride=1, pad=1, layout="nchw", dtype="float16").kernel
    load = next(n for n in k.body.toposort() if n.op is Ops.LOAD and n.arg == 0)
    coords = coordinates(load, k, k.inputs[0].shape)
    assert [off for _, off in coords] == [0, 0, -1, -1]
    assert all(set(m.values()) == {1} for m, _ in coords)
    assert [len(m) for m, _ in coords] == [1, 1, 2, 2]


def test_bad_relayouts_are_refused():
    k = Workload.make("matmul", M=8, N=8, K=8, dtype="float32").kernel
    with pytest.raises(ValueError, match="not a permutation"):
        relayout(k, 0, (0, 0))
    # a (2, 6) input read flat as 2 rows of 5 (index 5 i0 + i1): its column would run past 6
    buf = Buffer("a", dt.float32, (2, 6))
    flat = Kernel("flat", (Axis(2), Axis(5)), (buf,), Buffer("o", dt.float32, (2, 5)),
                  Node(Ops.LOAD, dt.float32, (var(0, 2) * 5 + var(1, 5), TRUE), 0), var(0, 2) * 5 + var(1, 5))
    with pytest.raises(ValueError, match="outside"):
        relayout(flat, 0, (1, 0))


def test_permute_kernel_is_a_transpose():
    buf = Buffer("x", dt.float16, (2, 3, 4, 5))
    c = permute_kernel(buf, (0, 2, 3, 1), "x_nhwc")
    x = _inputs(c)[0]
    assert c.output.shape == (2, 4, 5, 3) and c.kind == "elementwise"
    assert np.array_equal(run_kernel(c, [x]), x.transpose(0, 2, 3, 1))
