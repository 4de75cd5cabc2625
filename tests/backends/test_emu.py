"""The GPU emulator: random kernels x random legal GPU schedules compute the reference,
and the counters give the known answers on hand-made access patterns."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from superopt import Tensor
from superopt.backends.emu import EmuError, bank_wavefronts, run_program, sectors
from superopt.backends.base import get
from superopt.ir import dtypes as dt
from superopt.ir.interpret import run_kernel
from superopt.ir.kernel import Buffer
from superopt.ir.lower import lower
from superopt.ir.node import Node, Ops, TRUE, const, special
from superopt.ir.program import Barrier, Program, Shared, SharedStore, Store
from superopt.ir.schedule import Level, Schedule, Split, check
from superopt.search.machine import H100


# ---- random kernels -----------------------------------------------------------------
def _kernels(draw) -> list:
    kind = draw(st.sampled_from(["ewise", "ewise_t", "rowsum", "colmax", "matmul", "pad", "softmax"]))
    m, n = draw(st.integers(2, 24)), draw(st.integers(2, 24))  # 1x1 tensors: kernelize makes an axis-less kernel
    a = Tensor.empty(m, n, name="a")
    if kind == "ewise": y = a * Tensor.empty(m, n, name="b") + 1.5
    elif kind == "ewise_t": y = (a.T * 2.0).exp2()
    elif kind == "rowsum": y = (a * a).sum(axis=1)
    elif kind == "colmax": y = a.max(axis=0)
    elif kind == "matmul": y = a @ Tensor.empty(n, draw(st.integers(2, 12)), name="b")
    elif kind == "pad": y = a.pad(((1, 0), (0, 2))) + 1.0
    else: y = a.softmax(axis=1)
    return [s.kernel for s in y.schedule()]


def _axis_splits(draw, size: int, reduce: bool) -> tuple[Split, ...]:
    """Pieces over GRID/THREAD/LOOP/UPCAST (UNROLL on reduce axes) covering ``size``,
    possibly padding it a little."""
    levels = [Level.THREAD, Level.LOOP, Level.UNROLL] if reduce else [Level.GRID, Level.THREAD, Level.LOOP, Level.UPCAST]
    chosen = [lv for lv in levels if draw(st.booleans())] or [Level.LOOP]
    sizes, rem = [], size
    for lv in chosen[1:]:
        f = draw(st.sampled_from([1, 2, 3, 4, 8]))
        sizes.append(f); rem = -(-rem // f)  # noqa: E702
    return tuple(Split(lv, s) for lv, s in zip(chosen, [rem] + sizes))


@st.composite
def kernel_and_schedule(draw):
    ks = _kernels(draw)
    k = ks[draw(st.integers(0, len(ks) - 1))]
    splits = tuple(_axis_splits(draw, a.size, a.reduce) for a in k.axes)
    s = Schedule(splits, vector=draw(st.sampled_from([1, 1, 2, 4])))
    if check(k, s, H100): s = Schedule(splits)  # vector not legal here: scalar
    assume(not check(k, s, H100))
    return k, s


def _close(got: np.ndarray, ref: np.ndarray) -> bool:
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    if np.isnan(got).any() != np.isnan(ref).any(): return False
    return bool(np.allclose(got, ref, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(ref).max(initial=0))))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(kernel_and_schedule(), st.integers(0, 2**31 - 1))
def test_random_schedules_match_interpreter(ks, seed):
    k, s = ks
    rng = np.random.default_rng(seed)
    ins = [rng.standard_normal(b.shape).astype(np.float32) for b in k.inputs]
    p = lower(k, s, H100)
    r = run_program(p, ins, max_blocks=p.blocks)
    assert r.written.all(), f"unwritten outputs\n{p.describe()}"
    assert _close(r.output, run_kernel(k, ins)), p.describe()
    assert r.counters.races == 0
    assert r.counters.bank_conflicts >= 0 and r.counters.global_sectors >= r.counters.global_min_sectors


def test_split_reduce_over_threads_and_sampled_blocks():
    a = Tensor.empty(300, 64, name="a")
    k = a.sum(axis=1).schedule()[-1].kernel
    s = Schedule(((Split(Level.GRID, 75), Split(Level.THREAD, 4)), (Split(Level.THREAD, 32), Split(Level.UNROLL, 2))))
    p = lower(k, s, H100)
    x = np.random.default_rng(1).standard_normal((300, 64)).astype(np.float32)
    r = run_program(p, [x], max_blocks=8)
    assert r.counters.blocks_run == 8 and 0 < r.written.sum() < 300
    ref = x.astype(np.float64).sum(axis=1)
    assert np.allclose(r.output[r.written], ref[r.written], rtol=1e-5, atol=1e-5)


def test_backend_interface_runs_a_program():
    a, b = Tensor.empty(16, 8, name="a"), Tensor.empty(8, 4, name="b")
    k = (a @ b).schedule()[-1].kernel
    s = Schedule(((Split(Level.GRID, 4), Split(Level.THREAD, 4)), (Split(Level.THREAD, 4),), (Split(Level.LOOP, 8),)))
    be = get("emu")
    c = be.compile(lower(k, s, H100))
    ins = [np.random.default_rng(2).standard_normal(x.shape).astype(np.float32) for x in k.inputs]
    out = np.full(k.output.shape, np.nan, np.float32)
    assert be.run(c, ins, out) is out
    assert np.allclose(out, ins[0].astype(np.float64) @ ins[1], rtol=1e-5, atol=1e-6)
    assert be.last_counters.instructions["ld.global"] > 0


# ---- counters on hand-made programs -----------------------------------------------------
T = special("thread", 32)


def _smem_program(index: Node, size: int = 32 * 33) -> Program:
    """s[index(t)] = in[t]; barrier; out[t] = s[index(t)] with 32 threads."""
    ld = Node(Ops.LOAD, dt.float32, (T, TRUE), 0)
    sh = Node(Ops.SHARED, dt.float32, (index,), "s")
    buf = Buffer("x", dt.float32, (32,))
    body = (Shared("s", dt.float32, size), SharedStore("s", index, ld), Barrier(), Store(T, sh))
    return Program("smem", (buf,), Buffer("out", dt.float32, (32,)), 1, 32, 1, 1, body)


@pytest.mark.parametrize("index, extra", [
    (T, 0),                                  # stride-1 floats: conflict-free
    (T * 2, 1),                              # stride 2: 2-way conflict, 1 extra wavefront
    (T * 32, 31),                            # a column of a 32x32 float tile: 32-way
    (T * 33, 0),                             # the same column with rows padded to 33
    (T * 32 + Node(Ops.XOR, dt.int32, (T, const(5, dt.int32))), 0),  # XOR-swizzled column
])
def test_bank_conflicts_on_known_patterns(index, extra):
    x = np.arange(32, dtype=np.float32)
    r = run_program(_smem_program(index), [x])
    assert np.array_equal(r.output, x)                 # the data round-trips whatever the layout
    assert r.counters.bank_conflicts == 2 * extra      # the store and the load each
    assert r.counters.races == 0


def test_bank_counter_pure_function():
    t = np.arange(32)
    assert bank_wavefronts(t * 4, np.ones(32, bool), 4) == (1, 1)
    assert bank_wavefronts(t * 128, np.ones(32, bool), 4) == (32, 1)
    assert bank_wavefronts(t * 132, np.ones(32, bool), 4) == (1, 1)
    assert bank_wavefronts(t * 2, np.ones(32, bool), 2) == (1, 1)       # fp16 pairs share words
    assert bank_wavefronts(t * 0 + 28, np.ones(32, bool), 4) == (1, 1)  # one word for all: broadcast
    # 16-byte vectors, 32 lanes x 4 elements contiguous: 4 wavefronts, all needed
    v = (t[:, None] * 4 + np.arange(4)).reshape(1, -1) * 4
    assert bank_wavefronts(v, np.ones(v.shape, bool), 4) == (4, 4)
    # half the lanes masked off: only active lanes count
    m = t < 16
    assert bank_wavefronts(t * 128, m, 4) == (16, 1)


def test_sector_counter_flags_uncoalesced_access():
    t = np.arange(32)
    assert sectors(t * 4, np.ones(32, bool), 4) == (4, 4)          # coalesced fp32: 128 bytes
    assert sectors(t * 32, np.ones(32, bool), 4) == (32, 4)        # stride 8 floats: a sector each
    assert sectors(t * 0, np.ones(32, bool), 4) == (1, 1)          # broadcast


def test_sector_counts_in_programs():
    buf = Buffer("x", dt.float32, (32 * 8,))

    def prog(idx):
        return Program("g", (buf,), Buffer("out", dt.float32, (32,)), 1, 32, 1, 1,
                       (Store(T, Node(Ops.LOAD, dt.float32, (idx, TRUE), 0)),))
    x = np.arange(256, dtype=np.float32)
    coalesced, strided = run_program(prog(T), [x]), run_program(prog(T * 8), [x])
    assert np.array_equal(strided.output, x[::8])
    assert coalesced.counters.coalescing == 1.0
    assert strided.counters.global_sectors - coalesced.counters.global_sectors == 28
    assert strided.counters.coalescing < 0.3


def test_missing_barrier_is_a_race():
    ld = Node(Ops.LOAD, dt.float32, (T, TRUE), 0)
    other = Node(Ops.SHARED, dt.float32, ((T + 1) % 32,), "s")
    buf = Buffer("x", dt.float32, (32,))
    mk = lambda bar: Program("race", (buf,), Buffer("out", dt.float32, (32,)), 1, 32, 1, 1,  # noqa: E731
                             (Shared("s", dt.float32, 32), SharedStore("s", T, ld), *bar, Store(T, other)))
    x = np.arange(32, dtype=np.float32)
    assert run_program(mk(()), [x]).counters.races == 32
    assert run_program(mk((Barrier(),)), [x]).counters.races == 0


def test_out_of_bounds_load_is_an_error():
    buf = Buffer("x", dt.float32, (32,))
    p = Program("oob", (buf,), Buffer("out", dt.float32, (32,)), 1, 32, 1, 1,
                (Store(T, Node(Ops.LOAD, dt.float32, (T + 1, TRUE), 0)),))
    with pytest.raises(EmuError, match="out of bounds"):
        run_program(p, [np.zeros(32, np.float32)])


def test_unrolled_consecutive_loads_count_as_one_vector_load():
    # each thread sums 4 consecutive floats (UNROLL 4 innermost): the GPU reads them as one
    # float4, so a warp's read is 512 contiguous bytes, one instruction, 16 sectors
    k = Tensor.empty(8, 128, name="a").sum(axis=1).schedule()[-1].kernel
    s = Schedule(((Split(Level.GRID, 8),), (Split(Level.THREAD, 32), Split(Level.UNROLL, 4))))
    r = run_program(lower(k, s, H100), [np.ones((8, 128), np.float32)])
    assert r.counters.instructions["ld.global"] == 8
    assert r.counters.global_sectors == r.counters.global_min_sectors == 8 * 16 + 8  # + one sector per row stored
    assert np.all(r.output == 128)


@pytest.mark.parametrize("kind, params", [
    ("rowsum", dict(M=8, N=8192)), ("softmax", dict(M=8, N=2048)), ("layernorm", dict(M=64, N=1024)),
    ("fma", dict(n=1 << 16)), ("gemv", dict(K=4096, N=64)), ("rmsnorm", dict(M=16, N=4096)),
])
def test_gpu_hand_rules_of_memory_bound_kernels_are_coalesced(kind, params):
    from superopt.kernels.registry import Workload
    from superopt.search.hand import gpu
    from superopt.verify import random_inputs
    for k in Workload.make(kind, **params).kernels:
        rng = np.random.default_rng(3)
        ins = random_inputs(k, rng)
        r = run_program(lower(k, gpu(k, H100), H100), ins, max_blocks=4)
        c = r.counters
        assert c.coalescing == 1.0 and c.bank_conflicts == 0 and c.races == 0, (k.name, c.to_dict())


def test_warp_split_reduction_folds_with_shuffles_like_the_gpu():
    k = Tensor.empty(16, 64, name="a").max(axis=1).schedule()[-1].kernel
    warp = Schedule(((Split(Level.GRID, 2), Split(Level.THREAD, 8)), (Split(Level.LOOP, 4), Split(Level.THREAD, 16))))
    block = Schedule(((Split(Level.GRID, 16),), (Split(Level.LOOP, 1), Split(Level.THREAD, 64))))
    x = np.random.default_rng(4).standard_normal((16, 64)).astype(np.float32)
    for s, shuffled in ((warp, True), (block, False)):
        r = run_program(lower(k, s, H100), [x])
        assert np.array_equal(r.output, x.max(axis=1))
        c = r.counters.instructions
        assert ("shfl" in c) == shuffled and ("ld.shared" in c) != shuffled and ("bar" in c) != shuffled
