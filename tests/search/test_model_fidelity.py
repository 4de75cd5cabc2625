"""search/fidelity: the schedule sample, the figures, and fitting cost constants."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from superopt.ir.schedule import check
from superopt.kernels.registry import Workload
from superopt.search import cost, fidelity, machine as machines
from superopt.search.space import build


@pytest.fixture(scope="module")
def cpu():
    return replace(machines.host_cpu(), cores=2, simd_bytes=32, notes={})


@pytest.fixture(scope="module")
def mm():
    return Workload.make("matmul", M=32, N=48, K=64).kernel


def _fake(kernel, machine, n, measured_of):
    """Fidelity of ``n`` sampled schedules whose 'measurement' is ``measured_of(modeled)``."""
    pts, top = fidelity.sample(kernel, machine, n=n, seed=1)
    for q in pts: q.verified, q.measured_s = True, measured_of(q.modeled_s)
    return fidelity.KernelFidelity(kernel, pts, top)


def test_sample_is_distinct_legal_and_spread(mm, cpu):
    pts, top = fidelity.sample(mm, cpu, n=30, seed=0)
    scheds = [q.schedule for q in pts]
    assert len(pts) == 30 and len(set(scheds)) == 30
    assert all(check(mm, s, cpu) == [] for s in scheds)
    sources = {q.source for q in pts}
    assert {"z3", "random"} <= sources and top and top[0] in scheds
    modeled = sorted(q.modeled_s for q in pts)
    assert modeled[-1] > 5 * modeled[0]   # covers the model's range, not only its favourites


def test_sample_of_a_small_space_returns_what_there_is(cpu):
    k = Workload.make("rowsum", M=2, N=4).kernel
    sp = build(k, cpu)
    size = sum(1 for _ in sp.enumerate())
    pts, _ = fidelity.sample(k, cpu, n=1000)
    assert len({q.schedule for q in pts}) == len(pts)
    assert all(sp.contains(q.schedule) for q in pts if q.source in ("random", "neighbour"))
    assert 0 < sum(sp.contains(q.schedule) for q in pts) <= size   # (the hand rules may lie outside the space)
    with pytest.raises(ValueError):
        fidelity.sample(k, cpu, n=0)


def test_a_perfect_model_has_spearman_one_and_picks_the_fastest(mm, cpu):
    r = _fake(mm, cpu, 20, lambda t: 3.0 * t + 1e-6)   # any increasing function of the model
    assert r.spearman() == pytest.approx(1.0)
    assert r.top1_rank() == 1 and r.topk_gap() == pytest.approx(0.0)
    bad = _fake(mm, cpu, 20, lambda t: 1.0 / t)
    slowest = max(q.measured_s for q in bad.ok)   # the model's favourite (ties share the slowest time)
    assert bad.spearman() == pytest.approx(-1.0) and bad.top1_rank() == 1 + sum(q.measured_s < slowest for q in bad.ok)


def test_topk_gap_and_rank_follow_their_definitions(mm, cpu):
    r = _fake(mm, cpu, 12, lambda t: t)
    tops = [q for q in r.points if q.schedule in set(r.top)]
    first = min(tops, key=lambda q: q.modeled_s)
    first.measured_s = 2.0 * min(q.measured_s for q in r.ok)   # the model's favourite measures slow
    others = [q.measured_s for q in tops if q is not first]
    assert r.topk_gap() == pytest.approx(first.measured_s / min(others) - 1.0)
    assert r.top1_rank() == 1 + sum(q.measured_s < first.measured_s for q in r.ok)
    r.points[0].verified = False   # unverified points never count
    assert r.points[0] not in r.ok


def test_calibration_recovers_a_ranking_and_is_stored(mm, cpu):
    """'Measurements' made by the model with other constants: the fit moves the defaults
    towards them (the mean Spearman rises), and the result lands in notes['cost']."""
    truth = replace(cost.params(cpu), loop_cycles=12.0, overlap_loss=0.9)
    f = cost.facts(mm)
    pts, top = fidelity.sample(mm, cpu, n=40, seed=2)
    for q in pts:
        q.verified, q.measured_s = True, float(cost.time(cost.NUMERIC, f, cost.vars_of(q.schedule), cpu, truth))
    r = fidelity.KernelFidelity(mm, pts, top)
    p, before, after = fidelity.calibrate([r], cpu, names=("loop_cycles", "overlap_loss"))
    assert after > before and after > 0.97
    assert p.loop_cycles > cost.params(cpu).loop_cycles
    path = fidelity.store(cpu, p, names=("loop_cycles", "overlap_loss"))
    saved = json.loads(path.read_text())
    assert saved["notes"]["cost"]["loop_cycles"] == p.loop_cycles
    assert cost.params(machines.load("cpu")).loop_cycles == p.loop_cycles   # what the solver will read
    path.unlink()


def test_gpu_calibration_fits_the_gpu_models_constants(mm):
    h100 = machines.load("h100")
    assert fidelity.calibrated(h100) == fidelity.GPU_CALIBRATED and fidelity.calibrated(machines.load("cpu")) == fidelity.CALIBRATED
    r = _fake(mm, h100, 6, lambda t: t)
    p, before, after = fidelity.calibrate([r], h100)
    assert after >= before
    assert all(getattr(p, n) == getattr(cost.params(h100), n) for n in fidelity.CALIBRATED)   # the CPU model's stay


def test_calibration_rejects_bad_input(mm, cpu):
    with pytest.raises(ValueError, match="unknown cost parameter"):
        fidelity.calibrate([_fake(mm, cpu, 5, lambda t: t)], cpu, names=("no_such_constant",))
    empty = fidelity.KernelFidelity(mm, [], [])
    with pytest.raises(ValueError, match="verified"):
        fidelity.calibrate([empty], cpu)


def test_noise_compares_the_spread_with_the_scatter_of_runs(mm, cpu):
    r = _fake(mm, cpu, 10, lambda t: t)
    for i, q in enumerate(sorted(r.ok, key=lambda q: q.modeled_s)):
        q.measured_s = 1.0 + i                     # 1 .. 10
        q.samples = (q.measured_s, 1.5 * q.measured_s)
    n = r.noise()
    assert n["spread_p90_over_p10"] == pytest.approx(10.0 / 2.0)
    assert n["runs_max_over_min_median"] == pytest.approx(1.5)
