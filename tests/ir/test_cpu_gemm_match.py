"""The cpu_gemm template: geometry of fp32 GEMMs, refusals, parameter checks, and every
schedule of the family's space legal."""
from __future__ import annotations

import dataclasses

import pytest

from superopt import Tensor
from superopt.ir import cpu_gemm, dtypes as dt
from superopt.ir.lower import lower
from superopt.ir.program import Native
from superopt.ir.schedule import check
from superopt.kernels.registry import Workload
from superopt.search.families.cpu_gemm import FAMILY
from superopt.search.machine import load

CPU = load("cpu")
AVX512 = dataclasses.replace(CPU, simd_bytes=64, cores=2)
AVX2 = dataclasses.replace(CPU, simd_bytes=32, cores=2)


def _k(t: Tensor):
    return t.schedule()[-1].kernel


def test_plain_matmul_geometry():
    g = cpu_gemm.match(_k(Tensor.empty(8, 16, name="a") @ Tensor.empty(16, 4, name="b")))
    assert g == {"batch": 1, "m": 8, "n": 4, "k": 16, "a_in": 0, "a_b": 0, "a_rs": 16, "a_cs": 1,
                 "b_in": 1, "b_b": 0, "b_rs": 4, "b_cs": 1, "c_b": 0, "c_rs": 4, "c_cs": 1}


def test_transposed_operands_are_strides():
    a_t = Tensor.empty(16, 8, name="a").transpose(0, 1)           # A stored [k][m]
    b_t = Tensor.empty(4, 16, name="b").transpose(0, 1)           # B stored [n][k]
    g = cpu_gemm.match(_k(a_t @ b_t))
    assert (g["m"], g["n"], g["k"]) == (8, 4, 16)
    assert (g["a_rs"], g["a_cs"], g["b_rs"], g["b_cs"]) == (1, 8, 1, 16)


def test_batched_nk_layout():
    g = cpu_gemm.match(Workload.make("bmm", B=3, M=5, N=7, K=9, b_layout="nk").kernel)
    assert (g["batch"], g["m"], g["n"], g["k"]) == (3, 5, 7, 9)
    assert (g["a_b"], g["b_b"], g["c_b"]) == (45, 63, 35)
    assert (g["b_rs"], g["b_cs"]) == (1, 9)


@pytest.mark.parametrize("make, why", [
    (lambda: (Tensor.empty(8, 16, name="a") @ Tensor.empty(16, 4, name="b")) * 2.0, "epilogue"),
    (lambda: Tensor.empty(8, 16, name="a") + Tensor.empty(8, 16, name="b"), "not a sum"),
    (lambda: Tensor.empty(16, 16, name="a") @ Tensor.empty(16, 16, name="a"), "same input"),
    (lambda: Tensor.empty(8, 16, name="a", dtype=dt.int8) @ Tensor.empty(16, 4, name="b", dtype=dt.int8), "int32"),
    (lambda: Tensor.empty(8, 16, name="a").sum(1), "product of two loads"),
])
def test_refusals(make, why):
    r = cpu_gemm.match(_k(make()))
    assert isinstance(r, str) and why in r


def test_convolution_refused():
    r = cpu_gemm.match(Workload.make("conv2d").kernel)
    assert isinstance(r, str) and "reduce axis" in r


GOOD = dict(MR=8, NR=32, V=16, MC=64, KC=128, NC=256, PF=0, workers=2)


@pytest.mark.parametrize("change, why", [
    (dict(NR=24), "multiple of V"),
    (dict(MR=16, NR=48), "vector registers"),
    (dict(MC=60), "multiple of MR"),
    (dict(NC=100), "multiple of NR"),
    (dict(V=8), "fp32 lanes"),
    (dict(workers=3), "cores"),
    (dict(PF=-1), "PF"),
    (dict(KC=0), ">= 1"),
])
def test_check_reasons(change, why):
    g = {"m": 64, "n": 64, "k": 64}
    assert cpu_gemm.check(g, GOOD, AVX512) == []
    errs = cpu_gemm.check(g, dict(GOOD, **change), AVX512)
    assert errs and any(why in e for e in errs), errs


def test_check_missing_and_unknown_parameters():
    assert "missing" in cpu_gemm.check({}, {"MR": 8}, AVX512)[0]
    assert any("unknown" in e for e in cpu_gemm.check({}, dict(GOOD, XX=1), AVX512))


def test_avx2_register_budget():
    assert cpu_gemm.check({}, dict(GOOD, V=8, NR=16, MR=6, MC=48), AVX2) == []  # 12 + 2 + 1 of 16
    assert cpu_gemm.check({}, dict(GOOD, V=8, NR=16, MR=8), AVX2)           # 16 + 3 > 16


@pytest.mark.parametrize("machine", [AVX512, AVX2], ids=["avx512", "avx2"])
def test_every_family_schedule_legal(machine):
    k = _k(Tensor.empty(100, 48, name="a") @ Tensor.empty(48, 70, name="b"))
    space = list(FAMILY.space(k, machine))
    assert len(space) > 100
    for s in space:
        assert FAMILY.legal(k, s, machine) == [], s
        assert check(k, s, machine) == [], s
    p = lower(k, space[len(space) // 2], machine)
    (st,) = p.body
    assert isinstance(st, Native) and st.family == "cpu_gemm" and st.get("m") == 100 and st.get("n") == 70


def test_solve_is_complete_and_ranked():
    k = _k(Tensor.empty(256, 256, name="a") @ Tensor.empty(256, 256, name="b"))
    s = FAMILY.solve(k, AVX512, timeout_s=30, top=4)
    assert s.proved_optimal and s.method == "enumeration" and len(s.candidates) == 4
    times = [c.modeled_s for c in s.candidates]
    assert times == sorted(times) and times[0] > 0
    everything = min(FAMILY.cost(k, x, AVX512) for x in FAMILY.space(k, AVX512))
    assert times[0] == pytest.approx(everything)
    h = FAMILY.hand(k, AVX512)
    assert FAMILY.legal(k, h, AVX512) == [] and FAMILY.cost(k, h, AVX512) >= times[0]
