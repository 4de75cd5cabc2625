"""Fusion plans: same results whatever is materialized, never slower under the model than
the unfused plan or the default rule, and the solver's objective is the evaluated time."""
from __future__ import annotations

import importlib
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from superopt import Tensor
from superopt.ir.interpret import run_kernel
from superopt.ir.node import Ops
from superopt.search import fusion
from superopt.search.machine import load

kz = importlib.import_module("superopt.ir.kernelize")
CPU, H100 = load("cpu"), load("h100")


def _run(steps, written: list | None = None) -> np.ndarray:
    bufs = dict(Tensor._data)
    for s in steps:
        bufs[s.output] = run_kernel(s.kernel, [bufs[n] for n in s.inputs])
        if written is not None: written.append(bufs[s.output])
    return bufs[steps[-1].output]


ULPS = 8   # float32 roundings of a stored intermediate that one output may carry


def _same_results(steps, ref_steps) -> None:
    """Two plans of one graph agree. Each stores its intermediates as float32, so beyond a
    relative 1e-5 an output may differ by a few ulps of the largest value either stored:
    sin(3 (exp(x) - 1)) with its argument near 60 stored carries 60's ulp, 3.8e-6."""
    written: list = []
    got, want = _run(steps, written), _run(ref_steps, written)
    scale = max(float(np.max(np.abs(w))) for w in written)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=max(1e-6, ULPS * float(np.finfo(np.float32).eps) * scale))


@st.composite
def graphs(draw):
    """Random DAGs of elementwise, reduce and movement ops over (4, 6) tensors."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    pool = [Tensor(rng.uniform(-1, 1, (4, 6)).astype(np.float32)) for _ in range(draw(st.integers(1, 2)))]
    for _ in range(draw(st.integers(2, 9))):
        a, b = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        op = draw(st.sampled_from(["add", "mul", "max", "sin", "exp", "sum0", "max1", "shift", "scramble", "mean_sub"]))
        if op == "add": y = a + b
        elif op == "mul": y = a * b * 0.5
        elif op == "max": y = a.maximum(b)
        elif op == "sin": y = (a * 3.0).sin()
        elif op == "exp": y = a.exp() - 1.0
        elif op == "sum0": y = a.sum(0, keepdim=True) * 0.25 + b             # reduce, broadcast back
        elif op == "max1": y = b - a.max(1, keepdim=True)
        elif op == "shift": y = a.pad(((1, 0), (0, 1))).shrink(((0, 4), (1, 7))) + b   # masked window
        elif op == "scramble": y = a.reshape(6, 4).permute(1, 0) * b
        else: y = a - a.mean(1, keepdim=True)
        pool.append(y)
    out = pool[-1]
    if len(pool) > 3 and draw(st.booleans()): out = out + pool[-2].sum(1, keepdim=True)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.sampled_from([CPU, H100]), st.randoms(use_true_random=False))
def test_plans_compute_the_same_and_are_never_slower(t, machine, rnd):
    root = t.node
    ref = kz.kernelize(root)
    p = fusion.plan(root, machine, timeout_s=20)
    assert p.cost.time_s <= p.unfused.time_s * (1 + 1e-12) and p.cost.time_s <= p.default.time_s * (1 + 1e-12)
    _same_results(p.steps, ref)
    _same_results(kz.kernelize(root, plan=fusion.unfused_plan(root)), ref)
    # any choice of elementwise nodes, reductions materialized, is a valid plan with the same result
    cand = fusion.candidates(root)
    some = frozenset(n for n in cand if n.op is Ops.REDUCE or rnd.random() < 0.5)
    _same_results(kz.kernelize(root, plan=some), ref)
    if p.solver_plan_s is not None:   # the Z3 objective is the evaluated time of its plan
        assert p.solver_time_s == pytest.approx(p.solver_plan_s, rel=1e-6)


def test_default_plan_reproduces_the_default_kernels():
    x, w = Tensor.empty(8, 16, name="x"), Tensor.empty(16, 4, name="w")
    for t in [(x @ w).relu(), x.softmax(-1), x.layernorm(), (x.exp() + 1).sum(1)]:
        a, b = kz.kernelize(t.node), kz.kernelize(t.node, plan=fusion.default_plan(t.node))
        assert [s.kernel.key for s in a] == [s.kernel.key for s in b]
        assert [(s.inputs, s.output) for s in a] == [(s.inputs, s.output) for s in b]


def test_shared_expensive_intermediate_is_materialized_once():
    rng = np.random.default_rng(0)
    x, w = Tensor(rng.standard_normal((128, 128), dtype=np.float32)), Tensor(rng.standard_normal((128, 128), dtype=np.float32))
    y = (x.sin() * 1.5).exp().sin().sqrt()              # transcendental chain
    out = y @ w                                        # recomputed, y costs its chain per multiply-add
    p = fusion.plan(out.node, CPU, timeout_s=30)
    recompute = fusion.cost_of(kz.kernelize(out.node, plan=frozenset()), CPU)
    assert y.node in p.materialize and p.cost.time_s < recompute.time_s and p.cost.flops < recompute.flops
    assert y.node in fusion.default_plan(out.node)     # the default rule writes a contraction's operand too
    np.testing.assert_allclose(_run(p.steps), _run(kz.kernelize(out.node, plan=frozenset())), rtol=1e-5)


def test_cheap_intermediate_is_recomputed_not_written():
    x = Tensor(np.random.default_rng(1).standard_normal((256, 256), dtype=np.float32))
    y = x + 1.0
    out = y * 2.0 + y.maximum(0.0)                       # two cheap reads at the same index
    p = fusion.plan(out.node, H100, timeout_s=30)
    assert y.node not in p.materialize and p.cost.kernels == 1 and p.proved


def test_reduction_fuses_as_epilogue_of_an_inner_kernel():
    rng = np.random.default_rng(2)
    a, b, c = (Tensor(rng.standard_normal((128, 128), dtype=np.float32)) for _ in range(3))
    h = (a @ b).sin().exp().sqrt()                       # gemm + expensive tail, then a second gemm
    out = h @ c
    p = fusion.plan(out.node, CPU, timeout_s=30)
    assert p.cost.kernels == 2 and h.node in p.materialize        # first gemm + tail in one kernel
    assert p.steps[0].kernel.reduce is not None
    np.testing.assert_allclose(_run(p.steps), _run(kz.kernelize(out.node)), rtol=1e-5, atol=1e-4)  # h rounded to fp32


def test_peak_limit_is_kept_or_refused():
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((32, 32), dtype=np.float32))
    out = (x.sin().exp() @ x.cos()).relu()
    free = fusion.plan(out.node, CPU, timeout_s=30)
    assert free.cost.peak_bytes == fusion.peak_bytes(free.steps) > 0
    tight = fusion.plan(out.node, CPU, peak_limit=free.unfused.peak_bytes, timeout_s=30)
    assert tight.cost.peak_bytes <= free.unfused.peak_bytes
    with pytest.raises(ValueError, match="peak memory"):
        fusion.plan(out.node, CPU, peak_limit=100, timeout_s=30)


def test_bad_plans_are_refused():
    x = Tensor.empty(8, 8, name="x")
    s = x.softmax(-1)
    with pytest.raises(ValueError, match="elementwise or reduce"):
        kz.kernelize(s.node, plan={x.node})
    assert len(kz.kernelize(s.node, plan=frozenset())) == 1   # max and sum: row reductions of the normalize kernel
    z = x.sum(1, keepdim=True) + x.max(0, keepdim=True)       # rows along different axes: not one kernel
    with pytest.raises(ValueError, match="reductions"):
        kz.kernelize(z.node, plan=frozenset())
    y = (x - x.max(1, keepdim=True)).sum(1)             # the max would be nested inside the sum
    with pytest.raises(ValueError, match="reductions"):
        kz.kernelize(y.node, plan=frozenset())


def test_front_end_schedules_through_plans():
    rng = np.random.default_rng(4)
    x, w = Tensor(rng.standard_normal((16, 16), dtype=np.float32)), Tensor(rng.standard_normal((16, 16), dtype=np.float32))
    out = x.sin().exp() @ w
    want = out.numpy()
    with fusion.planned(CPU, timeout_s=20) as plans:
        got = out.numpy()
    assert kz.context.current().planner is None and len(plans) == 1
    np.testing.assert_allclose(got, want, rtol=1e-5)
    g = fusion.to_networkx(out.node)
    assert g.number_of_nodes() == len(kz.output_node(out.node).toposort()) and all(g.nodes[n]["candidate"] for n in fusion.candidates(out.node))


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_plans_run_on_cpu_with_hand_schedules(cpu_backend):
    rng = np.random.default_rng(5)
    x, w = Tensor(rng.standard_normal((16, 24), dtype=np.float32)), Tensor(rng.standard_normal((24, 8), dtype=np.float32))
    for t in [(x.sin().exp() @ w).relu(), x.softmax(-1) + x.pad(((1, 0), (0, 0))).shrink(((0, 16), (0, 24)))]:
        want = _run(kz.kernelize(t.node))
        for plan in (fusion.unfused_plan(t.node), fusion.plan(t.node, CPU, timeout_s=20).materialize):
            got = _run_on(cpu_backend, kz.kernelize(t.node, plan=plan))
            np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-5)


def test_plans_reranked_by_the_schedule_model():
    x, w = Tensor.empty(64, 96, name="x"), Tensor.empty(96, 32, name="w")
    out = ((x.sin() * 2.0) @ w).softmax(-1)
    p = fusion.plan(out.node, H100, timeout_s=10, schedules="hand")
    assert set(p.scheduled_s) >= {"default", "unfused"}
    assert p.scheduled_s[p.source] == min(p.scheduled_s.values())           # the kept plan is the fastest there
    assert p.scheduled_s[p.source] == pytest.approx(fusion.hand_time(p.steps, H100))
    with pytest.raises(ValueError, match="schedules"):
        fusion.scheduled_time(p.steps, H100, "beam")


def _run_on(be, steps) -> np.ndarray:
    """The steps on a backend, each kernel under its hand-rule schedule."""
    from superopt.ir.lower import lower
    from superopt.search.hand import hand_schedule
    bufs = dict(Tensor._data)
    for s in steps:
        c = be.compile(lower(s.kernel, hand_schedule(s.kernel, be.machine), be.machine))
        out = np.full(s.kernel.output.size, np.nan, s.kernel.output.dtype.np)
        got = be.run(c, [np.ascontiguousarray(bufs[n]).reshape(-1) for n in s.inputs], out)
        assert isinstance(got, np.ndarray), got
        bufs[s.output] = got.reshape(s.kernel.output.shape)
    return bufs[steps[-1].output]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(graphs(), st.sampled_from(["cpu", "emu"]))
def test_random_graphs_fused_and_unfused_agree_on_backends(cpu_backend, t, backend):
    """Unfused, default and planned kernels of random graphs compute the same on the cpu
    and emu backends (hand-rule schedules), and the same as the reference."""
    from superopt.backends.base import get
    be = cpu_backend if backend == "cpu" else get("emu")
    root = t.node
    want = _run(kz.kernelize(root))
    machine = CPU if backend == "cpu" else H100
    for plan in (fusion.unfused_plan(root), None, fusion.plan(root, machine, timeout_s=10).materialize):
        np.testing.assert_allclose(_run_on(be, kz.kernelize(root, plan=plan)), want, rtol=1e-4, atol=1e-5)
