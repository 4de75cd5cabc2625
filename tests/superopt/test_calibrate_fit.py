"""superopt calibrate's fit of the cpu_gemm cost model: times made by the model under known
constants are fitted back to those constants; the family prices with fitted constants
stored in the target's notes."""
from __future__ import annotations

import dataclasses

import pytest

from superopt.commands.calibrate import GEMM_FIT, fit_gemm_model, gemm_fit_cases
from superopt.search.families import cpu_gemm
from superopt.search.machine import host_cpu

TRUTHS = [
    {"fma_eff": 0.7, "fma_latency": 3.0, "l2_bw": 40.0, "l3_bw": 12.0, "overlap": 0.5},
    {"fma_eff": 1.3, "fma_latency": 8.0, "l2_bw": 90.0, "l3_bw": 30.0, "overlap": 0.2},
]


@pytest.mark.parametrize("simd", [64, 32])
@pytest.mark.parametrize("truth", TRUTHS)
def test_fit_recovers_the_constants(truth, simd):
    machine = dataclasses.replace(host_cpu(), simd_bytes=simd)
    cases = gemm_fit_cases(machine)
    seconds = [cpu_gemm.model(g, p, machine, {**cpu_gemm.MODEL, **truth}) for g, p in cases]
    fit, rms = fit_gemm_model(cases, seconds, machine)
    assert set(fit) == set(GEMM_FIT)
    for name, want in truth.items():
        assert fit[name] == pytest.approx(want, rel=0.02, abs=0.01), name
    assert rms < 1e-3


def test_fit_is_bounded_on_impossible_measurements():
    """Times no constants can explain (every GEMM 1 ns) end at the ranges' edges, never past."""
    machine = host_cpu()
    cases = gemm_fit_cases(machine)
    fit, rms = fit_gemm_model(cases, [1e-9] * len(cases), machine)
    for name, (lo, hi) in GEMM_FIT.items():
        assert lo - 1e-9 <= fit[name] <= hi + 1e-9
    assert rms > 1.0


def test_family_prices_with_the_fitted_constants():
    base = host_cpu()
    fitted = dataclasses.replace(base, notes={cpu_gemm.FITTED: {"fma_eff": 0.5, "overlap": 0.0}})
    g, p = gemm_fit_cases(base)[0]
    assert cpu_gemm.constants(fitted)["fma_eff"] == 0.5 and cpu_gemm.constants(base) == cpu_gemm.MODEL
    assert cpu_gemm.model(g, p, fitted) == pytest.approx(cpu_gemm.model(g, p, base, {**cpu_gemm.MODEL, "fma_eff": 0.5, "overlap": 0.0}))
    assert cpu_gemm.model(g, p, fitted) > cpu_gemm.model(g, p, base)
