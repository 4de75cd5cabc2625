"""The hvx_gemm family: applicability, a legal space, the cost as the packet model, the
branch and bound's pick equal to pricing the whole space, valid lower bounds, honest proof
flags, and packings that keep the slot and unit rules."""
from __future__ import annotations

import re

import pytest

from superopt.ir import dtypes as dt, hvx
from superopt.kernels.registry import Workload
from superopt.search import vliw
from superopt.search.families import applicable, hvx as fam, registry
from superopt.search.machine import load

HEX, CPU = load("hexagon"), load("cpu")
I8 = dt.int8


def _small_conv():
    return Workload.make("conv2d", N=1, C=8, H=4, W=4, K=32, R=3, S=3, stride=1, pad=1, layout="nhwc", dtype=I8).kernel


def _small_gemm():
    return Workload.make("matmul", M=4, N=64, K=32, dtype=I8).kernel


def test_registered_and_applicable_on_hexagon_only():
    assert fam.FAMILY in registry()
    k = _small_gemm()
    assert fam.FAMILY in applicable(k, HEX) and fam.FAMILY not in applicable(k, CPU)
    assert not fam.FAMILY.applies(Workload.make("matmul", M=8, N=64, K=32).kernel, HEX)   # float32


@pytest.mark.parametrize("make", [_small_gemm, _small_conv])
def test_space_hand_legal_and_cost_is_the_packet_model(make):
    k = make()
    g = hvx.match(k)
    space = list(fam.FAMILY.space(k, HEX))
    assert space and all(not fam.FAMILY.legal(k, s, HEX) for s in space)
    assert {dict(s.params)["corr"] for s in space} == {0, 1}
    h = fam.FAMILY.hand(k, HEX)
    assert not fam.FAMILY.legal(k, h, HEX) and dict(h.params)["corr"] == 0
    clock = HEX.notes["clock_hz"]
    for s in space[:6]:
        p = dict(s.params)
        assert fam.FAMILY.cost(k, s, HEX) == pytest.approx(fam.modeled_packets(g, p) / clock)
        assert fam.lower_bound(g, p) <= fam.modeled_packets(g, p)        # the bound the search prunes with


@pytest.mark.parametrize("make", [_small_gemm, _small_conv])
def test_solve_equals_pricing_every_point(make):
    k = make()
    g = hvx.match(k)
    solved = fam.FAMILY.solve(k, HEX, timeout_s=30, top=2)
    assert solved.solve_s <= 30 and solved.candidates
    assert all(not fam.FAMILY.legal(k, c.schedule, HEX) for c in solved.candidates)
    every = sorted(fam.modeled_packets(g, dict(s.params)) for s in fam.FAMILY.space(k, HEX))
    picked = [round(c.modeled_s * HEX.notes["clock_hz"]) for c in solved.candidates]
    assert picked == every[:2]                                           # pruning never drops a better point
    best = round(solved.candidates[0].modeled_s * HEX.notes["clock_hz"])
    assert all(b <= solved.detail["modeled_packets"][k] for k, b in solved.detail["bound_packets"].items())
    if solved.proved_optimal:   # the pick's packings minimal and no other point's bound below it
        assert solved.detail["pick_packings_proved"] and min(solved.detail["bound_packets"].values()) >= best
    else:
        assert solved.bound_s is not None and solved.bound_s <= solved.candidates[0].modeled_s


def test_refused_kernel_solves_to_nothing():
    s = fam.FAMILY.solve(Workload.make("matmul", M=8, N=64, K=32).kernel, HEX)
    assert s.candidates == [] and not s.proved_optimal and "int32" in s.detail["why"]


def test_late_weights_reach_the_multiplier_bound():
    """With the second group's weights loaded in the trip, 16 vrmpy pack into 8 packets (the
    multipliers' bound, proved); a trip ahead they take 9 (the last packet cannot hold the
    reloads of everything it reads)."""
    b = fam.body_pre(8, 1, 2, [8 * i for i in range(8)], late=1)
    assert len(fam.packets(b)) == 8 and fam.proved(b)


def test_packings_keep_the_rules():
    g = hvx.match(_small_conv())
    for p in (dict(rows=4, blocks=1, corr=0, unroll=1, fuse=0, late=0), dict(rows=4, blocks=1, corr=1, unroll=2, fuse=0, late=0)):
        for texts in fam.parts(g, p):
            pk = fam.packets(texts)
            assert sorted(t for q in pk for t in q) == sorted(texts)    # every instruction, once
            for q in pk:
                ins = [vliw.classify(t) for t in q]
                assert sum(i.words for i in ins) <= 4                   # slots, extenders included
                assert sum("vrmpy" in t for t in q) <= 2 and sum(i.mem == "load" and i.iclass.hvx for i in ins) <= 1


def test_correction_free_body_has_no_splat_vrmpy():
    b = fam.body_pre(4, 1, 2, [0, 8, 16, 24])
    assert sum("vrmpy" in t for t in b) == 8 and not any(re.search(r"vrmpy\(v\d+\.ub,r\d+\.b\)", t) is None for t in b if "vrmpy" in t)
    assert len(fam.body(4, 1)) - len(fam.body_pre(4, 1, 1, [0, 8, 16, 24])) == 4 - 1   # 4 correction vrmpy less, a pointer add more
    late = fam.body_pre(4, 1, 2, [0, 8, 16, 24], late=1)
    first_mac = next(k for k, t in enumerate(late) if "vrmpy" in t)
    assert "vmem" in late[0] and first_mac == 1               # the second group's weights load first, in the trip
