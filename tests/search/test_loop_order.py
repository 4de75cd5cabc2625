"""Loop order in the cost model: it changes modeled traffic the way caches do, the
numeric and Z3 evaluations agree on it, and the solver decides it."""
from __future__ import annotations

import math

import pytest
import z3
from hypothesis import given, settings, strategies as st

from superopt.ir.schedule import Level, Schedule, Split
from superopt.kernels.registry import Workload
from superopt.search import cost, space, z3opt
from superopt.search.machine import load

CPU = load("cpu")


def _mm(M, N, K):
    return Workload.make("matmul", M=M, N=N, K=K).kernel


def _tile(k, order, um=8, un=32):
    M, N, K = (a.size for a in k.axes)
    return Schedule(((Split(Level.LOOP, M // um), Split(Level.UPCAST, um)),
                     (Split(Level.LOOP, N // un), Split(Level.UPCAST, un)), (Split(Level.LOOP, K),)),
                    order=order, vector=min(16, CPU.simd_bytes // 4))


def test_order_decides_which_panel_is_re_read():
    """C[64,4096] = A[64,1024] B[1024,4096]: with the rows outer, every row tile walks all of
    B (16 MiB, past any per-core cache) again; with the columns outer, each B panel is used
    by all rows while A (256 KiB) stays cached. The model sees the difference in traffic."""
    k = _mm(64, 4096, 1024)
    f, p = cost.facts(k), cost.params(CPU)
    rows_outer, cols_outer = _tile(k, ()), _tile(k, (1, 0, 2))
    traffic = {}
    for name, s in (("rows", rows_outer), ("cols", cols_outer)):
        x = cost.vars_of(s)
        nest = cost._nest(f, s.order)
        padded = [x.padded(a) for a in range(3)]
        lv = cost._levels(f, x, nest, padded)
        traffic[name] = sum(cost._chunk_traffic(cost.NUMERIC, acc, f, x, nest, lv, padded, p.cache_bytes) * acc.itemsize
                            for acc in f.accesses)
    compulsory = (64 * 1024 + 1024 * 4096 + 64 * 4096) * 4
    assert traffic["cols"] == pytest.approx(compulsory)
    assert traffic["rows"] == pytest.approx(compulsory + (64 // 8 - 1) * 1024 * 4096 * 4)
    assert cost.modeled_time(k, cols_outer, CPU) < cost.modeled_time(k, rows_outer, CPU)


def test_order_does_not_matter_when_everything_fits():
    k = _mm(32, 64, 16)
    assert cost.modeled_time(k, _tile(k, ()), CPU) == pytest.approx(cost.modeled_time(k, _tile(k, (1, 0, 2)), CPU))


_K = _mm(16, 96, 48)
_F: list = []


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_numeric_and_symbolic_agree_on_every_order(data):
    if not _F: _F.append(z3opt.formulate(_K, CPU))
    F = _F[0]
    sp = F.space
    assert len(sp.orders) > 1 and len(F.order_sel) == len(sp.orders)
    for _ in range(50):
        s = sp.schedule([data.draw(st.integers(0, len(o) - 1)) for o in sp.axis_options],
                        data.draw(st.sampled_from(sp.vectors)), data.draw(st.sampled_from(sp.workers)),
                        data.draw(st.sampled_from(sp.orders)))
        if sp.legal(s): break
    else:
        return
    solver = z3.Solver(ctx=F.model.ctx)
    solver.add(*F.constraints, *F.fix(s))
    assert solver.check() == z3.sat
    assert F.schedule_of(solver.model()) == s
    num = cost.modeled_time(_K, s, CPU)
    assert math.isfinite(num) and F.value(solver.model()) == pytest.approx(num, rel=1e-9)


def test_solver_picks_the_modeled_best_order():
    """Where only a non-default order reaches the optimum, the solver returns it."""
    k = _mm(16, 2048, 512)
    sp = space.build(k, CPU)
    r = z3opt.solve(k, CPU, top_k=1, timeout_s=60, space=sp)
    assert r.fallback is None
    flipped = cost.modeled_time(k, r.best.__class__(r.best.splits, (1, 0, 2) if r.best.order != (1, 0, 2) else (),
                                                    r.best.vector, r.best.workers), CPU)
    assert r.modeled_s <= flipped * (1 + 1e-9)
    assert r.modeled_s == pytest.approx(cost.modeled_time(k, r.best, CPU))


def test_streams_count_far_rows_only():
    """A row sum's rows are 16 KiB apart: each is a stream. A convolution's window rows are
    one image row apart: its input stays one stream per channel."""
    rows = cost.facts(Workload.make("rowsum", M=64, N=4096).kernel).accesses[0]
    assert rows.far == frozenset({0}) and rows.streams([8, 16]) == 8
    conv = Workload.make("conv2d", N=1, C=4, H=16, W=16, K=8).kernel
    x = cost.facts(conv).accesses[0]
    spatial = {a for a in x.axes if a not in x.far}
    assert spatial and x.streams([4] * len(conv.axes)) == 4 ** len(x.far - {x.contig})


def test_consecutive_chunks_share_what_they_both_read():
    """Chunks of rows all read B: the next chunk finds it cached when one chunk's working set
    fits the cache, else reads it again."""
    k = _mm(64, 64, 64)
    f, p = cost.facts(k), cost.params(CPU)
    b = f.accesses[1]
    assert b.axes == frozenset({1, 2})
    one = 64 * 64
    for ws, want in ((p.cache_bytes / 2, one), (p.cache_bytes * 2, 8 * one)):
        x = cost.vars_of(Schedule(((Split(Level.GRID, 8), Split(Level.LOOP, 8)), (Split(Level.LOOP, 64),),
                                   (Split(Level.LOOP, 64),))))
        assert cost._across_chunks(cost.NUMERIC, b, f, x, ws, one, p.cache_bytes) == want
