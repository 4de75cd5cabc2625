"""The runtime's whole-realize path (``Runtime.run_steps``) without a GPU: the launch plan the
CUDA graph is built from (``backends/cuda/launches.py``: launch order, argument slots, which
buffer each kernel reads and writes, reuse of dead intermediates) run kernel by kernel on the
emulator and the CPU against numpy, one plan per program whatever the tensors' names, the
kernel-by-kernel switch, and errors on bad inputs."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import runtime
from superopt.backends.cuda.launches import PlanError, build, external_inputs
from superopt.ir.dtype import to_values
from superopt.ir.kernelize import kernelize
from superopt.ir.tensor import Tensor
from superopt.kernels.models import MODELS

rng = np.random.default_rng(3)


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    g, w = np.asarray(got, np.float64).reshape(-1), np.asarray(want, np.float64).reshape(-1)
    return float(np.max(np.abs(g - w)) / np.max(np.abs(w)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_small_models_run_in_their_launch_plan_on_the_emulator(name, tmp_path):
    m = MODELS[name](small=True)
    steps = kernelize(m.out.node)
    with runtime.using("emu", cache=tmp_path / "c.sqlite") as rt:
        got = rt.run_steps(steps, dict(m.arrays))[steps[-1].output]
        model = rt.prepare(steps)
    lp = model.plan
    assert got.shape == steps[-1].kernel.output.shape and not model.failed
    assert rt.stats["interpreter"] == 0 and rt.stats["hand"] == len(lp.items)
    assert _rel(to_values(got, steps[-1].kernel.output.dtype), m.reference()) < 1e-5
    # argument binding: every launch gets its output's slot first, then its inputs', and no
    # launch's output shares an allocation with one of its own inputs
    for i, it in enumerate(lp.items):
        out, *ins = lp.args(i)
        assert out == lp.buffers.slot[it.output] and ins == [lp.buffers.slot[n] for n in it.inputs]
        assert out not in ins
    assert set(lp.inputs) == set(m.arrays) & set(lp.meta) and lp.outputs == (steps[-1].output,)


def test_the_bert_layer_reuses_dead_intermediates_and_matches_numpy_on_cpu(tmp_path):
    m = MODELS["bert_layer"](small=True)
    steps = kernelize(m.out.node)
    with runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:
        got = rt.run_steps(steps, dict(m.arrays))[steps[-1].output]
        lp = rt.prepare(steps).plan
    assert len(lp.buffers.sizes) < len(lp.meta)     # intermediates share allocations
    assert lp.buffers.total_bytes < sum(nb for nb, _ in lp.meta.values())
    assert _rel(got, m.reference()) < 1e-5


def _model(x: np.ndarray, w: np.ndarray) -> Tensor:
    return ((Tensor(x) @ Tensor(w)).relu() + 1.0).softmax(1)


def _ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    h = np.maximum(x.astype(np.float64) @ w, 0) + 1.0
    e = np.exp(h - h.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_one_plan_per_program_whatever_the_tensor_names(tmp_path):
    """Realizing the same model twice on fresh Tensors (new buffer names) finds the first
    realize's plan; new data gives the new result; a different shape is a new program."""
    xs = [rng.standard_normal((16, 8)).astype(np.float32) for _ in range(2)]
    w = rng.standard_normal((8, 12)).astype(np.float32)
    with runtime.using("emu", cache=tmp_path / "c.sqlite") as rt:
        a, b = _model(xs[0], w).numpy(), _model(xs[1], w).numpy()
        assert len(rt.models) == 1
        c = _model(rng.standard_normal((32, 8)).astype(np.float32), w).numpy()
        assert len(rt.models) == 2 and c.shape == (32, 12)
    np.testing.assert_allclose(a, _ref(xs[0], w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, _ref(xs[1], w), rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, b)


def test_kernel_by_kernel_gives_the_same_result_without_a_plan(tmp_path):
    x, w = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal((8, 12)).astype(np.float32)
    with runtime.using("cpu", cache=tmp_path / "c.sqlite", graph=False) as rt:
        one = _model(x, w).numpy()
        assert rt.models == {} and rt.stats["hand"] == len(_model(x, w).schedule())
    with runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:
        whole = _model(x, w).numpy()
        assert len(rt.models) == 1
    np.testing.assert_array_equal(one, whole)
    np.testing.assert_allclose(whole, _ref(x, w), rtol=1e-5, atol=1e-6)


def test_no_graph_off_the_gpu_and_bad_inputs_are_refused(tmp_path):
    x, w = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal((8, 12)).astype(np.float32)
    steps = _model(x, w).schedule()
    with runtime.using("emu", cache=tmp_path / "c.sqlite") as rt:
        m = rt.prepare(steps)
        assert rt.graph_of(m) is None and rt.stats["graphs"] == 0   # the emulator runs the plan in host memory
        names = external_inputs(steps)
        good = {n: Tensor._data[n] for n in names}
        bad = {**good, names[0]: good[names[0]].astype(np.float64)}
        with pytest.raises(PlanError, match=f"input {names[0]}: float64"):
            m.plan.run_host(bad, lambda i, ins, out: None)
        with pytest.raises(PlanError, match="read but not given"):
            m.plan.run_host({names[0]: good[names[0]]}, lambda i, ins, out: None)
        with pytest.raises(PlanError, match="no kernels"):
            build([], ["out"])
