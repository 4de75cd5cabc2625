"""One Z3 problem over every family of a kernel (search/joint.py): the formulas evaluated as Z3
terms equal the float model row by row, the numpy pass equals it too, and the joint optimum
is the least modeled time over every family's space (and not a vacuous proof)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import z3

from superopt.ir import Tensor, dtypes
from superopt.search import cost, families as fam, joint, z3opt
from superopt.search.machine import H100


def _gemm(m, n, k, dt):
    return (Tensor.empty(m, k, dtype=dt, name="a") @ Tensor.empty(k, n, dtype=dt, name="b")).schedule()[-1].kernel


HGEMM = _gemm(64, 128, 64, dtypes.float16)     # mma, wgmma and the SIMT loop nest
SGEMM = _gemm(96, 64, 40, dtypes.float32)     # staged and the SIMT loop nest


def _families(k):
    return fam.applicable(k, H100)


_TABLES: dict[int, list] = {}


def _tables(k) -> list:
    """The kernel's tables, built once for the module (HGEMM's mma rows take seconds: each
    tile's layouts are solved)."""
    if id(k) not in _TABLES: _TABLES[id(k)] = joint.tables(k, H100, _families(k))
    return _TABLES[id(k)]


@pytest.mark.parametrize("k", [HGEMM, SGEMM], ids=["hgemm", "sgemm"])
def test_z3_terms_and_numpy_equal_the_float_model_row_by_row(k):
    tabs = _tables(k)
    assert {t.family for t in tabs} == ({"mma", "wgmma"} if k is HGEMM else {"staged"})
    P = joint.formulate_linear(k, H100, tabs)
    by_name = {f.name: f for f in _families(k)}
    for tab in tabs:
        ts = tab.times(H100)
        rows = sorted({0, len(tab.rows) - 1, int(np.argmin(ts)), len(tab.rows) // 2})
        for r in rows:
            want = by_name[tab.family].cost(k, tab.rows[r], H100)     # the family's own float model
            assert math.isclose(ts[r], want, rel_tol=1e-12)
            s = z3.Solver(ctx=P.ctx)
            s.add(*P.constraints, *P.fix(tab.family, row=r))
            assert s.check() == z3.sat
            assert math.isclose(P.value(s.model()), want, rel_tol=1e-9)


def test_mma_layouts_are_decisions_priced_by_their_conflicts():
    """Each tile has rows for its plain and its solved layouts; conflicts cost wavefronts."""
    tab = next(t for t in _tables(HGEMM) if t.family == "mma")
    ways = {(f["ways_a"], f["ways_b"]) for f in tab.facts}
    assert (1.0, 1.0) in ways and any(a > 1 or b > 1 for a, b in ways)
    ts = tab.times(H100)
    conflicted = [i for i, f in enumerate(tab.facts) if f["ways_a"] > 1 or f["ways_b"] > 1]
    assert all(ts[i] >= ts.min() for i in conflicted)


def _least(k, tabs, nest):
    return min([nest.modeled_s] + [float(t.times(H100).min()) for t in tabs])


@pytest.mark.parametrize("k", [HGEMM], ids=["hgemm"])   # sgemm: test_solve_returns_...
def test_nothing_in_any_family_is_below_the_least_time_and_the_proof_bites(k):
    """Z3 over every family at once: nothing below the least modeled time (unsat), and under
    a bound above it a schedule whose Z3 time is the family's float model."""
    nest = z3opt.solve(k, H100, top_k=1, timeout_s=20, tensor_core=False, method="exhaustive")
    assert nest.proved_optimal
    tabs = _tables(k)
    least = _least(k, tabs, nest)
    P = joint.formulate_linear(k, H100, tabs, "simt")
    assert joint._below(P, least, math.inf) == (None, True)
    found, finished = joint._below(P, least * 1.5, math.inf)
    assert finished and found is not None and found[2] < least * 1.5
    name, sched, t = found
    model = cost.modeled_time(k, sched, H100) if name == "simt" else next(
        x for x in _families(k) if x.name == name).cost(k, sched, H100)
    assert model == pytest.approx(t, rel=1e-9)


def test_solve_returns_the_joint_optimum_proved():
    k = SGEMM
    nest = z3opt.solve(k, H100, top_k=1, timeout_s=20, tensor_core=False, method="exhaustive")
    r = joint.solve(k, H100, _families(k), timeout_s=60, nest=("simt", nest.best, nest.modeled_s, True))
    least = _least(k, joint.tables(k, H100, _families(k)), nest)
    assert r.method == "z3 joint" and r.proved_optimal and r.modeled_s == pytest.approx(least, rel=1e-12)
    f = next(x for x in _families(k) if x.name == r.family)
    assert not f.legal(k, r.schedule, H100) and f.cost(k, r.schedule, H100) == pytest.approx(least, rel=1e-9)


def test_an_empty_choice_of_families_has_no_answer():
    assert joint.solve(SGEMM, H100, [], timeout_s=1) is None
