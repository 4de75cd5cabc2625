"""A whole model as one CUDA graph (backends/cuda/graph.py). Without a GPU: the buffer plan
(every live buffer in an allocation of its own, intermediates reused after their last
reader) on random kernel sequences, a plan's steps expanded into launches and run in the
buffer plan on the emulator against numpy, the errors on bad sequences, and asking for a
graph where no device is present. With a GPU (and cuda-python): the small models, a split-K
plan and a TMA GEMM captured as one graph, replayed, against numpy."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from superopt.backends.base import get
from superopt.backends.cuda.graph import Item, buffer_specs, expand, plan_buffers
from superopt.backends.cuda.launches import PlanError
from superopt.backends.cuda.runtime import available
from superopt.ir import dtype as dt
from superopt.ir.interpret import run_kernel
from superopt.ir.kernelize import Step, kernelize
from superopt.kernels.models import MODELS
from superopt.kernels.registry import Workload
from superopt.search.hand import hand_schedule
from superopt.search.machine import H100
from superopt.search.plan import split_plan

HAVE_GPU, WHY = available()
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"no CUDA device: {WHY}")

_K = Workload.make("matmul", M=8, N=8, K=8, dtype="float32").kernel   # any kernel: only its name shows in errors


def _seq(edges: list[list[int]]) -> list[Item]:
    """Item i writes t<i> and reads t<j> for j in edges[i] (j < i), or the input 'x'."""
    s = hand_schedule(_K, H100)
    return [Item(_K, s, tuple(f"t{j}" for j in e) or ("x",), f"t{i}") for i, e in enumerate(edges)]


def _assert_no_overlap(items: list[Item], plan, nbytes: dict[str, int], keep: list[str]) -> None:
    """No two buffers live at once share an allocation; every allocation holds its buffers."""
    born = {it.output: i for i, it in enumerate(items)}
    last = {n: i for i, it in enumerate(items) for n in it.inputs}
    end = {n: (len(items) if n in keep or n not in born else last.get(n, born[n])) for n in nbytes}
    start = {n: born.get(n, -1) for n in nbytes}
    for n in nbytes: assert plan.sizes[plan.slot[n]] >= nbytes[n]
    names = sorted(nbytes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if plan.slot[a] == plan.slot[b]:
                assert end[a] < start[b] or end[b] < start[a], (a, b, plan.slot)   # strict: not within one kernel


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_plan_buffers_never_shares_a_live_allocation(data):
    n = data.draw(st.integers(1, 12))
    edges = [data.draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else [] for i in range(n)]
    items = _seq(edges)
    nbytes = {"x": 64, **{f"t{i}": data.draw(st.sampled_from([16, 64, 256, 1024])) for i in range(n)}}
    keep = [f"t{n - 1}"]
    plan = plan_buffers(items, nbytes, keep)
    _assert_no_overlap(items, plan, nbytes, keep)
    assert plan.total_bytes <= sum(nbytes.values())


def test_plan_buffers_reuses_dead_intermediates():
    items = _seq([[], [0], [1], [2], [3]])        # a chain: at most two intermediates live at once
    nbytes = {"x": 4, **{f"t{i}": 100 for i in range(5)}}
    plan = plan_buffers(items, nbytes, ["t4"])
    assert len(plan.sizes) == 4 and plan.total_bytes == 4 + 3 * 100   # x, t4, and two alternating slots
    assert plan.slot["t0"] == plan.slot["t2"] and plan.slot["t1"] == plan.slot["t3"]
    assert plan.slot["t1"] != plan.slot["t0"] and plan.slot["t4"] not in (plan.slot["t2"], plan.slot["t3"])


def test_bad_sequences_are_refused_naming_the_buffer():
    s = hand_schedule(_K, H100)
    with pytest.raises(PlanError, match=r"reads \['t1'\] before"):
        plan_buffers([Item(_K, s, ("t1",), "t0"), Item(_K, s, ("t0",), "t1")], {"t0": 4, "t1": 4}, ["t1"])
    with pytest.raises(PlanError, match="which an earlier kernel wrote"):
        plan_buffers([Item(_K, s, ("x",), "t0"), Item(_K, s, ("x",), "t0")], {"x": 4, "t0": 4}, ["t0"])
    with pytest.raises(PlanError, match="written by no kernel"):
        plan_buffers([Item(_K, s, ("x",), "t0")], {"x": 4, "t0": 4}, ["y"])
    with pytest.raises(PlanError, match="no size for buffers"):
        plan_buffers([Item(_K, s, ("x",), "t0")], {"t0": 4}, ["t0"])
    a = np.zeros((8, 8), np.float32)
    with pytest.raises(PlanError, match="read but not given"):
        buffer_specs([Item(_K, s, ("a", "b"), "out")], {"a": a})
    with pytest.raises(PlanError, match="input b: float64"):
        buffer_specs([Item(_K, s, ("a", "b"), "out")], {"a": a, "b": a.astype(np.float64)})


def _run_in_plan(items: list[Item], arrays: dict[str, np.ndarray], backend, machine) -> np.ndarray:
    """The items in order on ``backend``, every buffer a view of its allocation in the graph's plan."""
    from superopt.ir.lower import lower
    final = items[-1].output
    meta = buffer_specs(items, arrays)
    plan = plan_buffers(items, {n: m[0] for n, m in meta.items()}, [final])
    slots = [np.full(n, 0xFF, np.uint8) for n in plan.sizes]
    view = lambda n: slots[plan.slot[n]][:meta[n][0]].view(meta[n][1])  # noqa: E731
    for n, a in arrays.items(): view(n)[:] = a.reshape(-1)
    for it in items:
        c = backend.compile(lower(it.kernel, it.schedule, machine))
        r = backend.run(c, [view(n) for n in it.inputs], view(it.output))
        assert isinstance(r, np.ndarray), f"{it.kernel.name}: {r}"
    return view(final).copy()


def test_a_split_k_plan_expands_into_launches_that_compute_the_gemm():
    k = Workload.make("matmul", M=32, N=32, K=256, dtype="float16").kernel
    plan = split_plan(k, H100, 2)
    assert plan is not None
    chosen = lambda kern, planned=None: (planned, "plan") if planned is not None else (hand_schedule(kern, H100), "hand")  # noqa: E731
    items = expand([Step(k, ("a", "b"), "out")], chosen, lambda kern: plan if kern is k else None)
    assert [it.output for it in items] == ["out__split_k0", "out"] and items[1].inputs[-1] == "out__split_k0"
    assert {it.source for it in items} == {"plan"}
    rng = np.random.default_rng(0)
    arrays = {n: dt.to_storage(rng.standard_normal(b.shape), b.dtype) for n, b in zip(("a", "b"), k.inputs)}
    got = dt.to_values(_run_in_plan(items, arrays, get("emu", H100), H100), k.output.dtype).astype(np.float64)
    want = dt.to_values(run_kernel(k, [arrays["a"], arrays["b"]]), k.output.dtype).reshape(-1).astype(np.float64)
    assert np.max(np.abs(got - want)) <= 2e-3 * max(1.0, np.max(np.abs(want)))


def test_a_small_model_runs_in_its_buffer_plan_on_cpu():
    m = MODELS["bert_layer"](small=True)
    be = get("cpu")
    items = expand(kernelize(m.out.node), lambda kern, planned=None: (hand_schedule(kern, be.machine), "hand"))
    plan = plan_buffers(items, {n: v[0] for n, v in buffer_specs(items, m.arrays).items()}, ["out"])
    assert len(plan.sizes) < len(buffer_specs(items))            # some intermediates share
    got = _run_in_plan(items, m.arrays, be, be.machine)
    want = m.reference().reshape(-1)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


@pytest.mark.skipif(HAVE_GPU, reason="a device is present")
def test_no_device_says_so():
    from superopt.backends.cuda.graph import ModelGraph
    from superopt.backends.cuda.runtime import CudaError
    m = MODELS["embed"](small=True)
    items = expand(kernelize(m.out.node), lambda kern, planned=None: (hand_schedule(kern, H100), "hand"))
    with pytest.raises(CudaError, match="no CUDA device is present"):
        ModelGraph(items, m.arrays, ["out"], H100)


# ---- on the GPU -------------------------------------------------------------------------
def _gpu_items(steps, machine):
    from superopt.search.plan import best
    return expand(steps, lambda kern, planned=None: (planned, "plan") if planned is not None else
                  (hand_schedule(kern, machine), "hand"), lambda kern: best(kern, machine))


@needs_gpu
@pytest.mark.parametrize("name", list(MODELS))
def test_small_models_as_one_graph_on_the_gpu(name):
    from superopt.backends.cuda.cuda_backend import machine_for
    from superopt.backends.cuda.graph import ModelGraph
    from superopt.backends.cuda.runtime import Device
    machine = machine_for(Device.get().info())
    m = MODELS[name](small=True)
    items = _gpu_items(kernelize(m.out.node), machine)
    with ModelGraph(items, m.arrays, ["out"], machine) as g:
        g.run_eager()
        eager = g.output()
        g.buffer("out").fill_bytes(0xFF)
        g.replay()
        got = g.output()
        assert g.nodes == len(items)
        assert np.array_equal(got.view(np.uint8), eager.view(np.uint8))
        want = m.reference().reshape(-1)
        assert np.max(np.abs(got.astype(np.float64) - want)) <= 1e-3 * np.max(np.abs(want))   # fp32 GEMMs may run as split-fp32 plans
        ts = g.time_graph(reps=5)
        assert len(ts) >= 5 and all(t > 0 for t in ts) and all(t > 0 for t in g.time_kernels(reps=5))


@needs_gpu
@pytest.mark.parametrize("shape", [(64, 64, 2048), (512, 1024, 1024)])
def test_fp16_gemms_and_their_plans_as_one_graph_on_the_gpu(shape):
    """64x64x2048 runs as a split-K plan; 512x1024x1024 as the hand rule's tensor-core kernel (TMA where it uses it)."""
    from superopt.backends.cuda.cuda_backend import machine_for
    from superopt.backends.cuda.graph import ModelGraph
    from superopt.backends.cuda.runtime import Device
    machine = machine_for(Device.get().info())
    M, N, K = shape
    k = Workload.make("matmul", M=M, N=N, K=K, dtype="float16").kernel
    items = _gpu_items([Step(k, ("a", "b"), "out")], machine)
    rng = np.random.default_rng(1)
    arrays = {n: dt.to_storage(rng.standard_normal(b.shape) * 0.1, b.dtype) for n, b in zip(("a", "b"), k.inputs)}
    with ModelGraph(items, arrays, ["out"], machine) as g:
        g.replay()
        got = dt.to_values(g.output(), k.output.dtype).astype(np.float64)
    want = dt.to_values(run_kernel(k, [arrays["a"], arrays["b"]]), k.output.dtype).reshape(-1).astype(np.float64)
    assert np.max(np.abs(got - want)) <= 1e-2 * max(1.0, np.max(np.abs(want)))
