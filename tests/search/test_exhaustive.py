"""The exhaustive solve: the vectorized model is the numeric model, schedule by schedule,
and its optimum and top-k are brute force's over the space (and Z3's optimum)."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import Tensor
from superopt.search import cost, exhaustive, space, z3opt
from superopt.search.machine import H100, load

CPU = load("cpu")


def _kernels():
    yield "gemm", (Tensor.empty(4, 8, name="a") @ Tensor.empty(8, 12, name="b")).schedule()[0].kernel
    yield "rowmax", Tensor.empty(6, 32, name="x").max(1).schedule()[0].kernel
    yield "softmax", Tensor.empty(4, 16, name="x").softmax(1).schedule()[-1].kernel
    yield "ew3d", (Tensor.empty(2, 3, 4, name="x") * 2 + 1).schedule()[0].kernel


KERNELS = list(_kernels())
MACHINES = pytest.mark.parametrize("machine", [CPU, H100], ids=["cpu", "h100"])


@MACHINES
@pytest.mark.parametrize("name,k", KERNELS, ids=[n for n, _ in KERNELS])
def test_vectorized_model_equals_numeric_model_everywhere(name, k, machine):
    sp = space.build(k, machine)
    f, p = cost.facts(k), cost.params(machine)
    seen = 0
    for order in sp.orders:
        T = exhaustive._pass(k, machine, sp, range(len(sp.axis_options[0])), order, f, p)
        for idx in np.ndindex(T.shape):
            if not np.isfinite(T[idx]): continue
            s = sp.schedule(list(idx[:-2]), sp.vectors[idx[-2]], sp.workers[idx[-1]], order)
            assert T[idx] == cost.modeled_time(k, s, machine, f)
            seen += 1
    assert seen


@MACHINES
@pytest.mark.parametrize("name,k", KERNELS, ids=[n for n, _ in KERNELS])
def test_top_k_is_brute_force_top_k(name, k, machine):
    every = sorted(cost.modeled_time(k, s, machine) for s in space.build(k, machine).enumerate())
    r = z3opt.solve(k, machine, top_k=3, timeout_s=60, method="exhaustive")
    assert r.proved_optimal and r.fallback is None and r.method == "exhaustive"
    assert [c.modeled_s for c in r.candidates] == every[:3]
    assert len({c.schedule for c in r.candidates}) == len(r.candidates)


@MACHINES
@pytest.mark.parametrize("name,k", KERNELS[:2], ids=[n for n, _ in KERNELS[:2]])
def test_same_optimum_as_z3(name, k, machine):
    a = z3opt.solve(k, machine, top_k=1, timeout_s=60, method="z3")
    b = z3opt.solve(k, machine, top_k=1, timeout_s=60)
    assert a.proved_optimal and b.proved_optimal and b.method == "exhaustive"
    assert b.modeled_s == pytest.approx(a.modeled_s, rel=1e-9)


def test_chunked_passes_cover_the_space(monkeypatch):
    """With one axis-0 option per pass, the same top-k."""
    k = KERNELS[0][1]
    whole = z3opt.solve(k, CPU, top_k=4, method="exhaustive")
    monkeypatch.setattr(exhaustive, "CHUNK", 1)
    parts = z3opt.solve(k, CPU, top_k=4, method="exhaustive")
    assert [c.modeled_s for c in parts.candidates] == [c.modeled_s for c in whole.candidates]
