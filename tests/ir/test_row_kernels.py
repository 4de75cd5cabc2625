"""Row kernels: several REDUCEs over an output axis in one kernel (softmax, layernorm)."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import Tensor
from superopt.ir import dtypes as dt
from superopt.ir.interpret import run_kernel
from superopt.ir.kernel import Axis, Buffer, Kernel
from superopt.ir.kernelize import ROW_MAX, kernelize
from superopt.ir.node import Node, Ops, TRUE, var
from superopt.ir.schedule import Level, Schedule, Split, check
from superopt.search.machine import H100, load

CPU = load("cpu")


def _softmax(a, ax):
    e = np.exp(a - a.max(ax, keepdims=True))
    return e / e.sum(ax, keepdims=True)


CASES = [
    ("softmax", lambda t, ax: t.softmax(ax), _softmax, 2),
    ("layernorm", lambda t, ax: t.layernorm(ax),
     lambda a, ax: (a - a.mean(ax, keepdims=True)) / np.sqrt(a.var(ax, keepdims=True) + 1e-5), 2),
    ("rmsnorm", lambda t, ax: t.rmsnorm(ax), lambda a, ax: a / np.sqrt((a * a).mean(ax, keepdims=True) + 1e-6), 1),
    ("logsumexp-shift", lambda t, ax: t - t.exp().sum(ax, keepdim=True).log(),
     lambda a, ax: a - np.log(np.exp(a).sum(ax, keepdims=True)), 1),
]


@pytest.mark.parametrize("name, build, ref, nred", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("shape, axis", [((6, 40), 1), ((6, 40), 0), ((3, 5, 8), 1)])
def test_normalizations_are_one_row_kernel_matching_numpy(name, build, ref, nred, shape, axis):
    steps = kernelize(build(Tensor.empty(*shape, name="x"), axis).node)
    assert len(steps) == 1
    k = steps[0].kernel
    assert k.kind == "row" and len(k.reduces) == nred and k.reduce is None and k.reduce_axes == []
    assert len(k.row_axes) == 1 and k.axes[k.row_axes[0]].size == shape[axis]
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = ref(a.astype(np.float64), axis)
    np.testing.assert_allclose(run_kernel(k, [a]), want, rtol=1e-5, atol=1e-6)
    pts = np.array([0, 7, a.size - 1, 13])          # sampled points evaluate whole rows, then pick
    np.testing.assert_allclose(run_kernel(k, [a], points=pts), want.reshape(-1)[pts], rtol=1e-6, atol=1e-7)
    assert Kernel.from_dict(k.to_dict()).key == k.key


def test_flops_count_every_op_at_every_point():
    k = kernelize(Tensor.empty(4, 8, name="x").softmax().node)[0].kernel
    # max, neg, add, mul (by log2 e), exp2, sum, recip, mul: each once per point (index math excluded)
    assert k.flops == 8 * 32


def test_what_cannot_be_a_row_reduction_stays_a_kernel():
    a, b = Tensor.empty(8, 16, name="a"), Tensor.empty(16, 32, name="b")
    kinds = [s.kernel.kind for s in kernelize((a @ b).softmax().node)]
    assert kinds == ["gemm", "row"]                                  # the GEMM is written, the softmax fused
    long = Tensor.empty(2, 2 * ROW_MAX, name="x").softmax()
    assert [s.kernel.kind for s in kernelize(long.node)] == ["reduce", "reduce", "elementwise"]
    x = Tensor.empty(8, 8, name="x")
    mixed = x.sum(1, keepdim=True) + x.max(0, keepdim=True)          # rows along two different axes
    assert len(kernelize(mixed.node)) >= 2
    flat = Tensor.empty(8, 8, name="x")
    got = kernelize((flat.sum(1) * 2.0).node)                          # no broadcast back: a plain reduction
    assert [s.kernel.kind for s in got] == ["reduce"]


def _row_kernel(red_axes: list[tuple[int, ...]], axes=(Axis(4), Axis(8))) -> Kernel:
    x = Node(Ops.LOAD, dt.float32, (var(0, 4) * 8 + var(1, 8), TRUE), 0)
    body = x
    for r in red_axes: body = body + Node(Ops.REDUCE, dt.float32, (x,), ("sum", r))
    return Kernel("k", axes, (Buffer("x", dt.float32, (4, 8)),), Buffer("o", dt.float32, (4, 8)), body,
                  var(0, 4) * 8 + var(1, 8))


def test_kernel_checks_row_reductions():
    assert _row_kernel([(1,), (1,)]).row_axes == [1]
    with pytest.raises(ValueError, match="same axes"):
        _row_kernel([(1,), (0,)])
    with pytest.raises(ValueError, match="same axes"):
        _row_kernel([(1,), (0, 1)])


def test_schedules_keep_rows_in_one_block():
    k = kernelize(Tensor.empty(8, 64, name="x").softmax().node)[0].kernel
    ok = Schedule(((Split(Level.GRID, 8),), (Split(Level.THREAD, 16), Split(Level.UPCAST, 4))), vector=4)
    assert check(k, ok, H100) == []
    split_row = Schedule(((Split(Level.GRID, 8),), (Split(Level.GRID, 4), Split(Level.THREAD, 16))))
    assert any("row axis" in e for e in check(k, split_row, H100))
    ordered = Schedule(((Split(Level.GRID, 8),), (Split(Level.LOOP, 64),)), order=(1, 0))
    assert any("loop order" in e for e in check(k, ordered, CPU))


def test_row_partials_must_fit_a_blocks_shared_memory():
    """1024 threads x 8 rows x 4 vector lanes of a layernorm need 272 KB of shared memory for
    their partials (the solver offered it on the H100, where the launch failed): illegal,
    saying why; the hand rule and a modest schedule stay legal."""
    from superopt.kernels.registry import Workload
    from superopt.search.hand import gpu
    k = Workload.make("layernorm", M=8192, N=1024, dtype="float32").kernels[-1]
    big = Schedule.from_dict({"version": 1, "splits": [[["grid", 128], ["thread", 8], ["upcast", 8]],
                                                       [["loop", 2], ["thread", 128], ["upcast", 4]]], "vector": 4})
    errs = check(k, big, H100)
    assert len(errs) == 1 and "shared memory" in errs[0] and f"> {H100.smem_per_block} B" in errs[0], errs
    modest = Schedule.from_dict({"version": 1, "splits": [[["grid", 2048], ["thread", 2], ["upcast", 2]],
                                                          [["loop", 4], ["thread", 128], ["upcast", 2]]], "vector": 2})
    assert not check(k, modest, H100) and not check(k, gpu(k, H100), H100)
