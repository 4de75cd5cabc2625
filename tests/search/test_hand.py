"""Hand rules: legal on every machine, correct on the cpu, sensible shapes."""
from __future__ import annotations

import pytest

from superopt import Tensor
from superopt.ir import dtypes
from superopt.ir.schedule import Level, check
from superopt.search.hand import hand_schedule
from superopt.search.machine import H100, load
from superopt.verify import verify

CPU = load("cpu")


def _programs():
    a, b = Tensor.empty(96, 40, name="a"), Tensor.empty(40, 64, name="b")
    yield "gemm", a @ b
    yield "gemm-odd", Tensor.empty(13, 7, name="a") @ Tensor.empty(7, 5, name="b")
    yield "bmm", Tensor.empty(3, 16, 8, name="a") @ Tensor.empty(3, 8, 32, name="b")
    x = Tensor.empty(48, 64, name="x")
    yield "softmax", x.softmax()
    yield "colsum", x.sum(0)
    yield "layernorm", x.layernorm()
    yield "ew-1d", Tensor.empty(1000, name="y") * 2 + 1
    yield "ew-half", (Tensor.empty(24, 32, dtype=dtypes.float16, name="h") * 3).relu()
    yield "conv", Tensor.empty(2, 3, 8, 8, name="x").conv2d(Tensor.empty(8, 3, 3, 3, name="w"), padding=1)
    yield "conv-s2", Tensor.empty(1, 4, 9, 9, name="x").conv2d(Tensor.empty(4, 4, 3, 3, name="w"), stride=2)


KERNELS = [(f"{name}:{i}", st.kernel) for name, t in _programs() for i, st in enumerate(t.schedule())]


@pytest.mark.parametrize("name,k", KERNELS, ids=[n for n, _ in KERNELS])
def test_hand_rules_are_legal_and_correct_on_cpu(cpu_backend, name, k):
    s = hand_schedule(k, CPU)
    assert check(k, s, CPU) == []
    r = verify(k, s, cpu_backend)
    assert r.ok, f"{name}: {s.describe(k)}: {r}"


@pytest.mark.parametrize("name,k", KERNELS, ids=[n for n, _ in KERNELS])
def test_hand_rules_are_legal_on_gpu(name, k):
    assert check(k, hand_schedule(k, H100), H100) == []


def test_cpu_gemm_gets_a_vector_register_tile_over_all_cores():
    k = (Tensor.empty(512, 512, name="a") @ Tensor.empty(512, 512, name="b")).schedule()[0].kernel
    s = hand_schedule(k, CPU)
    assert s.vector > 1 and s.upcast() >= 4 * s.vector and s.workers == CPU.cores
    assert s.blocks() >= CPU.cores
    assert s.loop_order()[-1] == 2  # the reduction innermost
    assert s.size(2, Level.LOOP) == 512


def test_cpu_reduce_breaks_the_add_chain():
    k = Tensor.empty(64, 256, name="x").sum(1).schedule()[0].kernel
    s = hand_schedule(k, CPU)
    assert s.upcast() >= 4  # independent accumulators


@pytest.mark.parametrize("width,dtype", [(1024, dtypes.float32), (256, dtypes.float32), (4096, dtypes.float16)])
def test_gpu_row_rule_gives_each_thread_two_vector_loads_of_a_row(width, dtype):
    """Two 16-byte loads a thread at least, the two serial steps unrolled (measured faster on
    the H100 than one load a thread: bench/results/h100-2026-12-06d); right on the emulator."""
    from superopt.backends.base import get
    k = Tensor.empty(4, width, dtype=dtype, name="x").layernorm().schedule()[0].kernel
    s = hand_schedule(k, H100)
    ra = k.row_axes[0]
    assert s.vector * dtype.itemsize == 16
    assert s.size(ra, Level.UNROLL) == 2 and s.size(ra, Level.LOOP) == 1
    assert s.size(ra, Level.THREAD) * 2 * s.vector == width
    assert check(k, s, H100) == []
    r = verify(k, s, get("emu"), seed=0)
    assert r.ok, f"{s.describe(k)}: {r}"


def test_gpu_row_rule_keeps_a_loop_over_long_rows():
    k = Tensor.empty(2, 8192, name="x").softmax().schedule()[0].kernel
    s = hand_schedule(k, H100)
    ra = k.row_axes[0]
    assert (s.size(ra, Level.LOOP), s.size(ra, Level.THREAD), s.vector) == (4, 512, 4)
