"""The runtime's realize on the GPU as one CUDA graph (superopt/runtime.py over
backends/cuda/graph.py): the small models captured once, replayed on a second realize with
new tensors, against numpy and against the same kernels run one by one. Skips without a GPU."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import runtime
from superopt.backends.cuda.runtime import available
from superopt.ir.dtype import to_values
from superopt.ir.kernelize import kernelize
from superopt.ir.tensor import Tensor
from superopt.kernels.models import MODELS

HAVE_GPU, WHY = available()
pytestmark = pytest.mark.skipif(not HAVE_GPU, reason=f"no CUDA device: {WHY}")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_small_model_runs_as_one_graph(name, tmp_path):
    m = MODELS[name](small=True)
    steps = kernelize(m.out.node)
    with runtime.using("cuda", cache=tmp_path / "c.sqlite") as rt:
        got = rt.run_steps(steps, dict(m.arrays))[steps[-1].output]
        model = rt.prepare(steps)
        assert rt.stats["graphs"] == 1 and rt.stats["graph_replays"] == 1 and model.graph.nodes == len(model.plan.items)
        again = rt.run_steps(steps, dict(m.arrays))[steps[-1].output]
        assert rt.stats["graphs"] == 1 and rt.stats["graph_replays"] == 2      # the same graph, replayed
    with runtime.using("cuda", cache=tmp_path / "c.sqlite", graph=False) as rt:
        one_by_one = rt.run_steps(steps, dict(m.arrays))[steps[-1].output]
        assert rt.stats["graphs"] == 0
    np.testing.assert_array_equal(got.view(np.uint8), again.view(np.uint8))
    np.testing.assert_array_equal(got.view(np.uint8), one_by_one.view(np.uint8))
    out = to_values(got, steps[-1].kernel.output.dtype).astype(np.float64).reshape(-1)
    want = m.reference().reshape(-1)
    assert np.max(np.abs(out - want)) <= 1e-3 * np.max(np.abs(want))   # fp32 GEMMs may run as split-fp32 plans


def test_new_tensors_replay_the_graph_with_their_data(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    xs = [rng.standard_normal((128, 64)).astype(np.float32) for _ in range(3)]
    with runtime.using("cuda", cache=tmp_path / "c.sqlite") as rt:
        outs = [((Tensor(x) @ Tensor(w)).relu().sum(1)).numpy() for x in xs]
        assert rt.stats["graphs"] == 1 and rt.stats["graph_replays"] == 3 and len(rt.models) == 1
    for x, o in zip(xs, outs):
        np.testing.assert_allclose(o, np.maximum(x.astype(np.float64) @ w, 0).sum(1), rtol=2e-3, atol=2e-3)
