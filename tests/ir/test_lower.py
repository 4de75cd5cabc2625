"""Lowering: the Program makes the schedule's decisions explicit."""
from __future__ import annotations

import pytest

from superopt import Tensor
from superopt.ir.lower import LoweringError, lower
from superopt.ir.node import Ops, special
from superopt.ir.program import Assign, Barrier, If, Loop, Reg, Shared, SharedStore, Store, lane_stride, unrolled
from superopt.ir.schedule import Level as L, Schedule, Split
from superopt.search.machine import H100, load

CPU = load("cpu")


def matmul(m=8, k=6, n=32):
    return (Tensor.empty(m, k, name="a") @ Tensor.empty(k, n, name="b")).schedule()[0].kernel


def test_naive_is_one_loop_per_axis_and_one_register():
    p = lower(matmul(), Schedule.naive(matmul()), CPU)
    assert (p.blocks, p.threads, p.lanes, p.workers) == (1, 1, 1, 1)
    loops = [s for s in p.walk() if isinstance(s, Loop)]
    assert [l.size for l in loops] == [8, 32, 6]
    regs = [s for s in p.walk() if isinstance(s, Reg)]
    assert len(regs) == 1 and regs[0].size == 1
    assert sum(isinstance(s, Store) for s in p.walk()) == 1


def test_register_tile_and_vector_lanes():
    k = matmul()
    s = Schedule(((Split(L.GRID, 2), Split(L.UPCAST, 4)), (Split(L.UPCAST, 32),), (Split(L.LOOP, 3), Split(L.UNROLL, 2))),
                 vector=16, workers=2)
    p = lower(k, s, CPU)
    assert (p.blocks, p.lanes, p.workers) == (2, 16, 2)
    stores = [x for x in p.walk() if isinstance(x, Store)]
    assert len(stores) == 4 * 32 // 16  # one store per register slot, each a 16-wide vector
    assert all(lane_stride(st.index, p.lane) == 1 for st in stores)
    reg = next(x for x in p.walk() if isinstance(x, Reg))
    assert reg.size == 8
    unroll = [x for x in p.walk() if isinstance(x, Loop) and x.unroll]
    assert len(unroll) == 1 and unroll[0].size == 2
    assert len(unrolled(unroll[0])) == 2 * len(unroll[0].body)


def test_padded_axis_is_guarded():
    k = matmul(m=7)
    s = Schedule(((Split(L.LOOP, 2), Split(L.UPCAST, 4)), (Split(L.LOOP, 32),), (Split(L.LOOP, 6),)))
    p = lower(k, s, CPU)
    stores = [x for x in p.walk() if isinstance(x, Store)]
    assert any(st.valid.op is not Ops.CONST for st in stores)  # the padded row is not stored
    loads = [n for st in p.walk() if isinstance(st, Assign) for n in st.value.toposort() if n.op is Ops.LOAD and n.arg == 0]
    assert any(ld.src[1].op is not Ops.CONST for ld in loads)  # and not read


def test_loop_order_puts_output_loop_inside_reduction():
    k = matmul()
    s = Schedule(((Split(L.LOOP, 8),), (Split(L.LOOP, 32),), (Split(L.LOOP, 6),)), order=(0, 2, 1))
    p = lower(k, s, CPU)
    outer = p.body[0]
    assert isinstance(outer, Loop) and outer.size == 8
    reg = next(x for x in p.walk() if isinstance(x, Reg))
    assert reg.size == 32  # one accumulator per point of the inner output loop
    red = next(x for x in outer.body if isinstance(x, Loop) and x.size == 6)
    assert isinstance(red.body[0], Loop) and red.body[0].size == 32


def test_split_reduce_uses_shared_memory_and_barriers():
    k = (Tensor.empty(4, 256, name="x").sum(1)).schedule()[0].kernel
    s = Schedule(((Split(L.GRID, 4),), (Split(L.LOOP, 4), Split(L.THREAD, 64))))
    p = lower(k, s, H100)
    assert (p.blocks, p.threads) == (4, 64)
    kinds = [type(x) for x in p.body]
    assert kinds[0] is Shared and Barrier in kinds and If in kinds
    assert any(isinstance(x, SharedStore) for x in p.walk())
    leader = next(x for x in p.body if isinstance(x, If))
    assert any(isinstance(x, Store) for x in leader.body)


def test_illegal_schedules_are_rejected():
    k = matmul()
    with pytest.raises(LoweringError, match="cover 4 < size 8"):
        lower(k, Schedule(((Split(L.LOOP, 4),), (Split(L.LOOP, 32),), (Split(L.LOOP, 6),))), CPU)
    with pytest.raises(LoweringError, match="thread"):
        lower(k, Schedule(((Split(L.THREAD, 8),), (Split(L.LOOP, 32),), (Split(L.LOOP, 6),))), CPU)
    with pytest.raises(LoweringError, match="vector"):
        lower(k, Schedule(((Split(L.LOOP, 8),), (Split(L.LOOP, 32),), (Split(L.LOOP, 6),)), vector=8), CPU)


def test_lane_stride_classifies_accesses():
    lane, i = special("lane", 8), special("i", 4)
    assert lane_stride(i * 16 + lane, lane) == 1
    assert lane_stride(i * 3, lane) == 0
    assert lane_stride(lane * 4 + i, lane) == 4
    assert lane_stride((lane + i) // 2, lane) is None


def test_describe_mentions_every_construct():
    k = (Tensor.empty(4, 256, name="x").sum(1)).schedule()[0].kernel
    p = lower(k, Schedule(((Split(L.GRID, 4),), (Split(L.LOOP, 4), Split(L.THREAD, 64)))), H100)
    text = p.describe()
    for word in ("blocks 4", "threads 64", "shared acc_red", "barrier", "if ", "out["):
        assert word in text
