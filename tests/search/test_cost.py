"""The cost model: one formula, numeric and Z3 evaluations agree; sensible rankings."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import z3
from hypothesis import given, settings, strategies as st

from superopt import Tensor
from superopt.ir.schedule import Schedule
from superopt.search import cost, space, z3opt
from superopt.search.machine import H100, load

CPU = load("cpu")


def _kernels():
    yield "gemm", (Tensor.empty(64, 48, name="a") @ Tensor.empty(48, 96, name="b")).schedule()[0].kernel
    x = Tensor.empty(16, 64, name="x")  # softmax's exp-sum, as its own kernel
    yield "softmax-sum", (x - x.max(1, keepdim=True)).exp().sum(1, keepdim=True).schedule()[1].kernel
    yield "ew", ((Tensor.empty(24, 40, name="x") * 3).relu()).schedule()[0].kernel
    yield "conv", (Tensor.empty(1, 3, 6, 6, name="x").conv2d(Tensor.empty(4, 3, 3, 3, name="w"), padding=1)
                   ).schedule()[0].kernel


KERNELS = list(_kernels())
_FORMS: dict = {}


def _form(i: int, machine):
    key = (i, machine.name)
    if key not in _FORMS: _FORMS[key] = z3opt.formulate(KERNELS[i][1], machine)
    return _FORMS[key]


def _symbolic_value(F, s: Schedule) -> float:
    solver = z3.Solver(ctx=F.model.ctx)
    solver.add(*F.constraints)
    solver.add(*F.fix(s))
    assert solver.check() == z3.sat, "a legal schedule must satisfy the formulation"
    return F.value(solver.model())


@settings(max_examples=40, deadline=None)
@given(data=st.data(), which=st.sampled_from(range(len(KERNELS))), gpu=st.booleans())
def test_numeric_and_symbolic_agree(data, which, gpu):
    machine = H100 if gpu else CPU
    k = KERNELS[which][1]
    F = _form(which, machine)
    sp = F.space
    for _ in range(50):  # draw until legal (the space is a superset of the legal schedules)
        s = sp.schedule([data.draw(st.integers(0, len(o) - 1)) for o in sp.axis_options],
                        data.draw(st.sampled_from(sp.vectors)), data.draw(st.sampled_from(sp.workers)))
        if sp.legal(s): break
    else:
        return
    num = cost.modeled_time(k, s, machine)
    sym = _symbolic_value(F, s)
    assert math.isfinite(num) and num > 0
    assert sym == pytest.approx(num, rel=1e-9), s.describe(k)


def test_symbolic_term_is_unique_for_a_fixed_schedule():
    """With the decisions fixed, T has one value (no slack left for the solver)."""
    F = _form(0, CPU)
    s = next(iter(F.space.enumerate(orders=False)))
    v = _symbolic_value(F, s)
    solver = z3.Solver(ctx=F.model.ctx)
    solver.add(*F.constraints, *F.fix(s))
    solver.add(z3.Or(F.T.real() < F.model.q(v * (1 - 1e-9)), F.T.real() > F.model.q(v * (1 + 1e-9))))
    assert solver.check() == z3.unsat


def test_cpu_ranking_is_sensible():
    k = (Tensor.empty(256, 256, name="a") @ Tensor.empty(256, 256, name="b")).schedule()[0].kernel
    naive = Schedule.naive(k)
    sp = space.build(k, CPU)
    tiled = next(s for s in sp.enumerate(orders=False) if s.vector > 1 and s.upcast() >= 32 and s.workers == CPU.cores
                 and s.blocks() >= CPU.cores)
    t_naive, t_tiled = cost.modeled_time(k, naive, CPU), cost.modeled_time(k, tiled, CPU)
    assert t_tiled < t_naive / 4
    if CPU.cores > 1:  # the same tiling on one worker is slower
        assert cost.modeled_time(k, replace(tiled, workers=1), CPU) > t_tiled
    assert t_tiled >= cost.roofline_s(k, CPU)


def test_gpu_ranking_is_sensible():
    k = Tensor.empty(4096, 1024, name="x").sum(1).schedule()[0].kernel
    sp = space.build(k, H100)
    one_block = sp.schedule([0, 0])   # a single thread does everything
    spread = min((s for s in sp.enumerate() if s.blocks() >= 132 and s.threads() >= 128),
                 key=lambda s: cost.modeled_time(k, s, H100))
    assert cost.modeled_time(k, spread, H100) < cost.modeled_time(k, one_block, H100) / 10


def test_a_grid_smaller_than_the_sms_streams_at_its_share():
    """Memory-bound time: with fewer blocks than SMs, only ``blocks x sm_bw_share / cores``
    of the DRAM bandwidth (the H100 fidelity sample: GEMV grids of 43 blocks ran 5.8-26x slower than DRAM speed)."""
    from superopt.ir.schedule import Level, Schedule, Split
    k = (Tensor.empty(8192, 1024, name="x") * 2).schedule()[0].kernel
    p = cost.params(H100)
    def grid(g): return Schedule(((Split(Level.GRID, g), Split(Level.LOOP, 8192 // g)),
                                  (Split(Level.THREAD, 256), Split(Level.UPCAST, 4))))
    full, few = cost.modeled_time(k, grid(1024), H100), cost.modeled_time(k, grid(16), H100)
    dram = k.min_bytes / H100.dram_bw
    assert full - H100.launch_s < 1.5 * dram
    assert few - H100.launch_s >= dram * H100.cores / (16 * p.sm_bw_share) * 0.999


def test_facts_accesses():
    k = KERNELS[0][1]  # out[m, n] = sum_k a[m, k] * b[k, n]
    f = cost.facts(k)
    a, b, out = f.accesses
    assert a.axes == {0, 2} and a.contig == 2
    assert b.axes == {1, 2} and b.contig == 1
    assert out.output and out.axes == {0, 1} and out.contig == 1
    assert f.work == k.flops  # no transcendental ops: weighted work is the flop count


def test_params_override_from_machine_notes():
    m = replace(CPU, notes={"cost": {"loop_cycles": 3.0}})
    assert cost.params(m).loop_cycles == 3.0
    assert cost.params(CPU).freq > 1e8


def test_lane_stride_is_what_lies_inside_the_thread_piece():
    from superopt.ir.schedule import Level, Split
    T, L, U, G = Level.THREAD, Level.LOOP, Level.UNROLL, Level.GRID
    assert cost.lane_stride((Split(T, 32), Split(L, 16), Split(U, 8))) == 128   # each thread a chunk
    assert cost.lane_stride((Split(L, 16), Split(T, 32), Split(U, 8))) == 8     # interleaved threads
    assert cost.lane_stride((Split(G, 4), Split(T, 64), Split(Level.UPCAST, 4))) == 4
    assert cost.lane_stride((Split(L, 512),)) == 1


def _gemv(n: int = 11008):
    """y[n] = sum_k x[k] W[n, k], fp16 (axes n, k): every lane's W loads run along k."""
    from superopt.kernels.registry import Workload
    return Workload.make("gemv", K=4096, N=n).kernels[0]


def test_gpu_model_charges_lanes_that_land_far_apart():
    """The load path's line lookups (cost._load_lines) order four GEMV schedules as the H100
    measured them (fidelity sample of bench/results/h100-2026-11-23c, seed 1, medians): interleaved
    split-reduce threads reading 16-byte vectors 42.6 us; threads each walking a chunk 63.0 us;
    chunks with W's loads left scalar by a vector on the rows 236 us, and at 128-byte lane
    strides 805 us. The model without the term put all four at the DRAM floor."""
    k = _gemv()
    def sched(rows, red, vector=1): return Schedule.from_dict({"version": 1, "splits": [rows, red], "vector": vector})
    measured_order = [sched([["grid", 1376], ["thread", 8]], [["loop", 16], ["thread", 32], ["unroll", 8]]),
                      sched([["grid", 688], ["thread", 16]], [["thread", 8], ["loop", 64], ["unroll", 8]]),
                      sched([["grid", 344], ["thread", 8], ["upcast", 4]], [["thread", 32], ["loop", 16], ["unroll", 8]], 4),
                      sched([["grid", 344], ["thread", 4], ["upcast", 8]], [["thread", 64], ["loop", 64]], 8)]
    sp = space.build(k, H100)
    assert all(sp.legal(s) for s in measured_order)
    t = [cost.modeled_time(k, s, H100) for s in measured_order]
    assert t == sorted(t) and t[2] > 4 * t[0]
    assert t[0] < 1.2 * cost.roofline_s(k, H100) + H100.launch_s


def test_gpu_model_charges_a_split_reduce_across_lanes_in_a_gemm():
    """fp32 2048^3 GEMM on the H100 (same sample, seed 0): the old model's optimum, 8 threads
    splitting K with each its own chunk of it (every lane of a load on its own line), ran
    3217 us; a register tile over 256 threads along N, 628 us. The model now ranks them so."""
    from superopt.kernels.registry import Workload
    k = Workload.make("matmul", M=2048, N=2048, K=2048, dtype="float32").kernels[0]
    tile = Schedule.from_dict({"version": 1, "splits": [[["grid", 256], ["thread", 2], ["upcast", 4]],
                                                        [["grid", 4], ["thread", 128], ["upcast", 4]], [["loop", 512], ["unroll", 4]]]})
    split = Schedule.from_dict({"version": 1, "splits": [[["grid", 32], ["thread", 8], ["upcast", 8]],
                                                         [["grid", 64], ["thread", 8], ["upcast", 4]],
                                                         [["thread", 8], ["loop", 32], ["unroll", 8]]]})
    assert cost.modeled_time(k, split, H100) > 1.4 * cost.modeled_time(k, tile, H100)


def test_gpu_space_offers_interleaved_split_reduces():
    k = _gemv()
    opts = space.build(k, H100).axis_options[1]
    strides = {(cost.lane_stride(o), math.prod(p.size for p in o if p.level.name == "THREAD")) for o in opts}
    assert (8, 32) in strides and (128, 32) in strides   # LOOP 16 x THREAD 32 x UNROLL 8, and THREAD-first
