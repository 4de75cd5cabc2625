"""BEAM on the real cpu backend: a verified schedule no slower than its start;
failing candidates are recorded, never fatal."""
from __future__ import annotations

import pytest

from superopt import Tensor
from superopt.backends.base import Failure
from superopt.backends.cpu import CPUBackend
from superopt.ir.schedule import Level, Schedule, Split, check
from superopt.engine import BackendRunner
from superopt.search import beam
from superopt.search.machine import load

CPU = load("cpu")


def _gemm():
    return (Tensor.empty(32, 24, name="a") @ Tensor.empty(24, 32, name="b")).schedule()[0].kernel


def test_beam_returns_a_verified_schedule_no_slower_than_its_start(cpu_backend):
    k = _gemm()
    steps = []
    r = beam.beam(k, BackendRunner(k, cpu_backend), start=Schedule.naive(k), width=2, max_steps=2, max_candidates=6, budget_s=15,
                  progress=steps.append)
    assert r.verified and not check(k, r.best, CPU)
    assert r.best_s <= r.start_s
    assert r.timed >= 2 and steps and steps[-1]["step"] >= 1
    assert r.history[0] == r.start_s and r.history[-1] == r.best_s


class _NoVectors(CPUBackend):
    """The real cpu backend, with compilation refused for vectorized programs."""
    def compile(self, program):
        if program.lanes > 1: return Failure("compile", "vector programs refused by this test")
        return super().compile(program)


def test_failures_are_recorded_and_skipped():
    k = _gemm()
    b = _NoVectors(CPU)
    try:
        start = Schedule.naive(k).with_axis(1, (Split(Level.LOOP, 2), Split(Level.UPCAST, 16)))
        r = beam.refine(k, BackendRunner(k, b), start, width=2, max_steps=1, max_candidates=10, budget_s=10)
    finally:
        b.close()
    assert r.verified and r.best.vector == 1
    assert any("refused" in f.reason for f in r.failures)


def test_illegal_start_is_refused(cpu_backend):
    k = _gemm()
    bad = Schedule.naive(k).with_axis(0, ())
    with pytest.raises(ValueError):
        beam.beam(k, BackendRunner(k, cpu_backend), start=bad, budget_s=1)
