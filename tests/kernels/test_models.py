"""The end-to-end models: their lazy programs (through the kernels the default rule and
the fusion planner make) compute the numpy reference at the small shapes."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from superopt.kernels.models import MODELS
from superopt.search import fusion
from superopt.search.machine import H100

kz = importlib.import_module("superopt.ir.kernelize")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_small_models_match_numpy_under_default_and_planned_kernels(name):
    m = MODELS[name](small=True)
    want = m.reference()
    np.testing.assert_allclose(m.out.numpy(), want, rtol=1e-4, atol=1e-5)            # default rule
    p = fusion.plan(m.out.node, H100, timeout_s=10)
    with kz.context.use(planner=lambda r: p.materialize if r is m.out.node else None):
        np.testing.assert_allclose(m.out.numpy(), want, rtol=1e-4, atol=1e-5)        # the planner's kernels
    assert kz.context.current().planner is None
    assert p.cost.time_s <= p.unfused.time_s


def test_full_models_kernelize_into_few_kernels():
    kinds = {name: [s.kernel.kind for s in kz.kernelize(MODELS[name]().out.node)] for name in ("resnet_block", "bottleneck", "embed")}
    assert kinds == {"resnet_block": ["conv", "conv"], "bottleneck": ["gemm", "conv", "gemm"], "embed": ["row"]}  # 1x1 convs are GEMMs
