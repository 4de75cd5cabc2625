"""The cpu backend: correct results, contained failures, timing."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import Tensor
from superopt.backends.base import Compiled, Failure, Timing, get
from superopt.backends.cpu import CPUBackend
from superopt.ir import dtypes
from superopt.ir.kernel import Buffer
from superopt.ir.lower import lower
from superopt.ir.node import Node, Ops, const, special
from superopt.ir.program import Assign, Loop, Program, Reg, Store
from superopt.ir.schedule import Level as L, Schedule, Split
from superopt.search.machine import load

CPU = load("cpu")
F32 = dtypes.float32


@pytest.fixture(scope="module")
def be():
    b = CPUBackend(CPU, timeout_s=5)
    yield b
    b.close()


def _program(body, n=16, name="p") -> Program:
    return Program(name, (Buffer("x", F32, (n,)),), Buffer("out", F32, (n,)), 1, 1, 1, 1, tuple(body))


def test_matmul_with_register_tile_vectors_and_workers(be):
    a, b = np.random.rand(64, 48).astype(np.float32), np.random.rand(48, 32).astype(np.float32)
    k = (Tensor.empty(64, 48, name="a") @ Tensor.empty(48, 32, name="b")).schedule()[0].kernel
    s = Schedule(((Split(L.GRID, 4), Split(L.LOOP, 2), Split(L.UPCAST, 8)), (Split(L.UPCAST, 32),),
                  (Split(L.LOOP, 24), Split(L.UNROLL, 2))), order=(1, 0, 2), vector=16, workers=2)
    c = be.compile(lower(k, s, CPU))
    assert isinstance(c, Compiled) and "vector_size(64)" in c.source and "omp parallel" in c.source
    out = be.run(c, [a.reshape(-1), b.reshape(-1)], np.full(64 * 32, np.nan, np.float32))
    np.testing.assert_allclose(out.reshape(64, 32), a.astype(np.float64) @ b, rtol=1e-5)


@pytest.mark.parametrize("dtype", [dtypes.float16, dtypes.bfloat16, dtypes.int8, dtypes.int32])
def test_narrow_dtypes_round_and_wrap_like_the_reference(be, dtype):
    from superopt.ir.interpret import run_kernel
    from superopt.verify import random_inputs
    x, y = Tensor.empty(4, 16, dtype=dtype, name="x"), Tensor.empty(4, 16, dtype=dtype, name="y")
    k = (x * y + x * 3).schedule()[0].kernel
    s = Schedule(((Split(L.LOOP, 4),), (Split(L.UPCAST, 16),)), vector=16)
    ins = random_inputs(k, np.random.default_rng(1))
    if dtype is dtypes.int8: ins = [np.full(64, 100, np.int8), np.full(64, 3, np.int8)]  # overflows: must wrap
    out = be.run(be.compile(lower(k, s, CPU)), [a.reshape(-1) for a in ins], np.zeros(64, dtype.np))
    ref = run_kernel(k, ins).reshape(-1)
    if dtype.is_float:
        got, want = dtypes.to_values(out, dtype), dtypes.to_values(ref, dtype)
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)
    else:
        np.testing.assert_array_equal(out, ref)


def test_compile_error_is_reported_not_raised(be):
    bad = _program([Reg("int", F32, 1), Store(const(0, dtypes.int32), const(1.0, F32))])  # 'int' is a C keyword
    r = be.compile(bad)
    assert isinstance(r, Failure) and r.kind == "compile" and "error" in r.message


def test_segfault_in_generated_code_is_contained(be):
    crash = _program([Store(const(1 << 30, dtypes.int32) * 2, const(1.0, F32))])
    c = be.compile(crash)
    assert isinstance(c, Compiled)
    r = be.run(c, [np.ones(16, np.float32)], np.zeros(16, np.float32))
    assert isinstance(r, Failure) and r.kind == "crash"
    ok = _program([Loop(special("i", 16), (Store(special("i", 16), Node(Ops.LOAD, F32, (special("i", 16), const(True, dtypes.bool_)), 0) * 2.0),))])
    out = be.run(be.compile(ok), [np.arange(16, dtype=np.float32)], np.zeros(16, np.float32))  # worker restarted
    np.testing.assert_array_equal(out, np.arange(16) * 2.0)


def test_hang_is_a_timeout(be):
    i, j = special("i", 1 << 30), special("j", 1 << 30)
    acc = Node(Ops.REG, F32, (const(0, dtypes.int32),), "acc")
    x = Node(Ops.LOAD, F32, ((i + j) % 16, const(True, dtypes.bool_)), 0)
    spin = _program([Reg("acc", F32, 1), Assign("acc", const(0, dtypes.int32), const(0.0, F32)),
                     Loop(i, (Loop(j, (Assign("acc", const(0, dtypes.int32), acc * x + 1.0),)),)),
                     Store(const(0, dtypes.int32), acc)], name="spin")
    b = CPUBackend(CPU, timeout_s=1)
    try:
        r = b.run(b.compile(spin), [np.ones(16, np.float32)], np.zeros(16, np.float32))
        assert isinstance(r, Failure) and r.kind == "timeout"
    finally:
        b.close()


def test_wrong_buffers_are_a_launch_failure(be):
    k = (Tensor.empty(8, name="x") * 2).schedule()[0].kernel
    c = be.compile(lower(k, Schedule.naive(k), CPU))
    r = be.run(c, [np.ones(7, np.float32)], np.zeros(8, np.float32))
    assert isinstance(r, Failure) and r.kind == "launch"


def test_time_returns_median_and_samples(be):
    k = (Tensor.empty(1024, name="x") * 2).schedule()[0].kernel
    c = be.compile(lower(k, Schedule.naive(k), CPU))
    t = be.time(c, [np.ones(1024, np.float32)], np.zeros(1024, np.float32), runs=5, min_s=1e-4)
    assert isinstance(t, Timing) and len(t.samples) == 5 and min(t.samples) <= t.median_s <= max(t.samples)
    assert t.median_s > 0


def test_builds_are_cached_by_source(be):
    k = (Tensor.empty(32, name="x") + 1).schedule()[0].kernel
    p = lower(k, Schedule.naive(k), CPU)
    assert be.compile(p).handle == be.compile(p).handle


def test_get_by_name():
    b = get("cpu")
    try:
        assert b.name == "cpu" and b.machine.has("threads") and not b.machine.is_simt
    finally:
        b.close()
    with pytest.raises(ValueError, match="unknown backend"):
        get("no-such-backend")


def test_contiguous_loads_under_a_moving_mask_vectorize(be):
    from superopt.verify import verify
    x, w = Tensor.empty(1, 4, 10, 16, name="x"), Tensor.empty(8, 4, 3, 3, name="w")
    k = x.conv2d(w, padding=1).schedule()[0].kernel  # the pad mask moves along the contiguous output axis
    assert [a.size for a in k.axes] == [8, 10, 16, 4, 3, 3]  # cout, oh, ow | cin, kh, kw
    s = Schedule(((Split(L.LOOP, 2), Split(L.UPCAST, 4)), (Split(L.GRID, 10),), (Split(L.UPCAST, 16),),
                  (Split(L.LOOP, 4),), (Split(L.LOOP, 3),), (Split(L.UNROLL, 3),)), vector=16, workers=2)
    src = be.render(lower(k, s, CPU))
    assert "+ l_] : 0;" in src  # masked vector load, not a gather through an index vector
    assert verify(k, s, be).ok


def test_select_over_padded_rows_with_workers(be):
    """Regression: GCC 12 at -O3 -march=native -fopenmp turned `row < 1 ? f(x) : 0` into f(x)
    for the padded row when the block loop ran under OpenMP (found by the random test)."""
    x, y = np.random.randn(8).astype(np.float32), np.random.randn(8).astype(np.float32)
    yy = Tensor.empty(1, 8, name="y")
    m = Tensor.empty(1, 8, name="x").maximum(yy).maximum(yy)  # the exact shape the random test found
    k = ((m * m + 0.5).reciprocal()).pad(((0, 1), (0, 0))).schedule()[-1].kernel
    s = Schedule(((Split(L.GRID, 2),), (Split(L.GRID, 8),)), workers=2)
    out = be.run(be.compile(lower(k, s, CPU)), [x, y], np.full(16, np.nan, np.float32)).reshape(2, 8)
    np.testing.assert_allclose(out[0], 1 / (np.maximum(x, y) ** 2 + 0.5), rtol=1e-6)
    assert (out[1] == 0).all()
