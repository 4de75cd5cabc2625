"""BEAM's budget covers its verification, and what it spends past the budget is reported.

The search runs on the real cpu backend; only its clock is stepped by hand (each timing
and each checking run costs a stated number of seconds), so the counts below follow from
the budget rule, not from how fast this machine is."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import Tensor
from superopt.backends.cpu import CPUBackend
from superopt.ir.schedule import Schedule
from superopt.engine import BackendRunner
from superopt.search import beam
from superopt.search.machine import load

CPU = load("cpu")


def _gemm():
    return (Tensor.empty(32, 24, name="a") @ Tensor.empty(24, 32, name="b")).schedule()[0].kernel


class _Stepped(CPUBackend):
    """The real cpu backend on a hand-stepped clock: a timing costs ``time_cost`` s, a
    checking run ``run_cost`` s; ``wrong`` adds 1 to every output of a checking run."""
    def __init__(self, time_cost: float, run_cost: float, wrong: bool = False):
        super().__init__(CPU)
        self.now, self.time_cost, self.run_cost, self.wrong = 0.0, time_cost, run_cost, wrong
        self.timings = self.runs = 0

    def clock(self) -> float: return self.now

    def time(self, *a, **kw):
        self.now += self.time_cost
        self.timings += 1
        return super().time(*a, **kw)

    def run(self, *a, **kw):
        self.now += self.run_cost
        self.runs += 1
        out = super().run(*a, **kw)
        if self.wrong and isinstance(out, np.ndarray): out += 1
        return out


@pytest.fixture
def stepped(monkeypatch):
    made = []

    def make(*a, **kw):
        be = _Stepped(*a, **kw)
        monkeypatch.setattr(beam, "_clock", be.clock)
        made.append(be)
        return be
    yield make
    for be in made: be.close()


def _count_references(monkeypatch) -> list:
    import superopt.verify as V
    calls = []
    real = V.run_kernel

    def counted(*a, **kw):
        calls.append(kw.get("points") is not None)
        return real(*a, **kw)
    monkeypatch.setattr(V, "run_kernel", counted)
    return calls


def test_a_candidate_starts_only_when_it_and_the_check_of_the_pick_fit(stepped):
    """1 s a timing, 1 s a check, 5.5 s budget: the start and 3 candidates (at 1, 2, 3 s
    elapsed, each followed by 2 s of expected work), then the pick's check: 5 s in all."""
    be = stepped(time_cost=1.0, run_cost=1.0)
    k = _gemm()
    r = beam.beam(k, BackendRunner(k, be), start=Schedule.naive(k), width=2, max_steps=8, max_candidates=50, budget_s=5.5)
    assert not r.failures, [f.reason for f in r.failures]
    assert r.verified and be.timings == 4 and r.timed == 4 and be.runs == 1
    assert r.elapsed_s == 5.0 and r.overrun_s == 0.0 and r.budget_s == 5.5 and r.verify_s == 1.0
    d = r.to_dict()
    assert d["overrun_s"] == 0.0 and d["budget_s"] == 5.5 and d["elapsed_s"] == 5.0


def test_an_overrun_is_reported_with_its_size(stepped):
    """A check that takes 10 s where timings took 1 s: the search keeps its rule, the check
    runs past the budget, and the result says by how much."""
    be = stepped(time_cost=1.0, run_cost=10.0)
    k = _gemm()
    r = beam.beam(k, BackendRunner(k, be), start=Schedule.naive(k), width=2, max_steps=8, max_candidates=50, budget_s=5.5)
    assert r.verified and be.timings == 4 and be.runs == 1
    assert r.elapsed_s == 14.0 and r.overrun_s == 8.5 and r.verify_s == 10.0
    assert r.to_dict()["overrun_s"] == 8.5


def test_a_budget_too_small_for_any_candidate_keeps_the_start(stepped):
    be = stepped(time_cost=1.0, run_cost=1.0)
    k = _gemm()
    r = beam.beam(k, BackendRunner(k, be), start=Schedule.naive(k), budget_s=2.5)
    assert be.timings == 1 and r.steps == 0 and r.best == r.start and r.verified
    assert r.elapsed_s == 2.0 and r.overrun_s == 0.0


def test_the_pick_is_checked_on_the_timing_inputs_with_one_reference(stepped, monkeypatch):
    calls = _count_references(monkeypatch)
    be = stepped(time_cost=0.1, run_cost=0.1)
    k = _gemm()
    r = beam.beam(k, BackendRunner(k, be), start=Schedule.naive(k), width=2, max_steps=2, max_candidates=6, budget_s=100)
    assert r.verified and be.runs == 1 and r.timed >= 2
    assert len(calls) == 1      # computed before the search, reused for the check


def test_wrong_picks_are_still_rejected_with_the_shared_reference(stepped, monkeypatch):
    """Every run returns output + 1: each of the (up to 8) fastest fails its check, against
    one reference computed once; the result is unverified and says why."""
    calls = _count_references(monkeypatch)
    be = stepped(time_cost=0.1, run_cost=0.1, wrong=True)
    k = _gemm()
    r = beam.beam(k, BackendRunner(k, be), start=Schedule.naive(k), width=2, max_steps=2, max_candidates=6, budget_s=100)
    wrong = [f for f in r.failures if f.reason.startswith("wrong:")]
    assert not r.verified and "relative error" in r.verify_reason
    assert len(wrong) == be.runs == min(8, r.timed) and len(calls) == 1


def test_given_inputs_are_the_ones_timed_and_checked(cpu_backend, monkeypatch):
    from superopt.verify import random_inputs
    calls = _count_references(monkeypatch)
    k = _gemm()
    ins = random_inputs(k, np.random.default_rng(5))
    ins.reference(k)                # already computed: BEAM reuses it
    r = beam.beam(k, BackendRunner(k, cpu_backend, inputs=ins), start=Schedule.naive(k), max_steps=1, max_candidates=3,
                  budget_s=60)
    assert r.verified and len(calls) == 1
