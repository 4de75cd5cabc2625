"""The hvx_depthwise template's matcher and legality, and its schedule family (no qemu)."""
import pytest

from superopt.ir import hvx_depthwise as tpl
from superopt.ir import native
from superopt.kernels.registry import Workload
from superopt.search.families import hvx_depthwise as fam, registry
from superopt.search.machine import load

DW = dict(C=64, K=64, groups=64, layout="nhwc", dtype="int8")


def kernel(**kw):
    return Workload.make("conv2d", **{**DW, **kw}).kernel


def test_geometry_stride_1_and_2():
    assert tpl.match(kernel(H=6, W=6)) == {"h": 6, "w": 6, "c": 64, "stride": 1, "oh": 6, "ow": 6, "x_in": 0, "w_in": 1,
                                           "requant": 0}
    g = tpl.match(kernel(H=7, W=8, stride=2))
    assert (g["stride"], g["oh"], g["ow"]) == (2, 4, 4)


@pytest.mark.parametrize("kw, why", [
    (dict(H=6, W=6, C=8, K=8, groups=8), "8 channels"),
    (dict(H=6, W=6, groups=1), "not a 3x3 window"),                 # dense: three reduce axes
    (dict(H=6, W=6, dtype="float32"), "not int32"),
    (dict(H=6, W=6, layout="nchw"), "not one 3x3 filter a channel"),
    (dict(H=6, W=6, pad=0), "pad-1 window"),
    (dict(H=6, W=7), "width 7 is odd"),
    (dict(H=6, W=6, R=5, S=5, pad=2), "not a 3x3 window"),
    (dict(H=6, W=6, stride=3), "pad-1 window"),
    (dict(N=2, H=6, W=6), "batch 2"),
])
def test_refusals(kw, why):
    r = tpl.match(kernel(**kw))
    assert isinstance(r, str) and why in r


def test_requantize_epilogue():
    """The library's qconv2d (bias, shifts, Q15 multiplier to int8): matched with its
    shifts, only at unroll 2 (two int8 pixels a store)."""
    wl = Workload.make("qconv2d", H=112, W=112, C=64, K=64, groups=64, stride=2)   # the dsp suite's stride-2 depthwise
    g = tpl.match(wl.kernel)
    from superopt.kernels.builders import qshifts
    assert (g["requant"], g["stride"], g["bias_in"], g["mult_in"], (g["pre"], g["post"])) == (1, 2, 2, 3, qshifts(wl.args))
    assert tpl.check(g, {"unroll": 2, "early": 0}) == []
    assert any("requantize" in e for e in tpl.check(g, {"unroll": 1, "early": 0}))
    assert any("requantize" in e for e in tpl.check(g, {"unroll": 2, "early": 1}))
    assert "not a 3x3 window" in tpl.match(Workload.make("qconv2d", H=6, W=6, C=64, K=64, groups=1).kernel)
    assert "8 channels" in tpl.match(Workload.make("qconv2d", H=6, W=6, C=8, K=8, groups=8).kernel)


def test_check_reasons():
    g1, g2 = tpl.match(kernel(H=6, W=6)), tpl.match(kernel(H=7, W=8, stride=2))
    def p(u, e=0): return {"unroll": u, "early": e}
    assert tpl.check(g1, p(2)) == [] and tpl.check(g1, p(2, 1)) == [] and tpl.check(g2, p(1)) == [] and tpl.check(g2, p(2)) == []
    assert any("odd" in e for e in tpl.check(g1, p(1)))             # stride 1 needs pixel-pair iterations
    assert any("do not fit" in e for e in tpl.check(g1, p(4)))      # registers
    assert any("multiple of unroll" in e for e in tpl.check(tpl.match(kernel(H=6, W=12, stride=2)), p(4)))
    assert any("early needs unroll" in e for e in tpl.check(g2, p(1, 1)))
    assert tpl.check(g1, {"unroll": 2}) == ["missing parameter(s) early"]
    assert any("unknown" in e for e in tpl.check(g1, {**p(2), "rows": 1}))
    assert tpl.check(g1, p(0)) == ["unroll must be an integer >= 1"]


def test_native_line_and_registry():
    assert native.TEMPLATES["hvx_depthwise"] == "hvx_depthwise"
    assert fam.FAMILY in registry()


def test_family_applies_only_to_hexagon():
    k = kernel(H=6, W=6)
    assert fam.FAMILY.applies(k, load("hexagon"))
    assert not fam.FAMILY.applies(k, load("cpu"))
    assert not fam.FAMILY.applies(kernel(H=6, W=6, C=8, K=8, groups=8), load("hexagon"))


def test_family_space_hand_solve():
    m = load("hexagon")
    k = kernel(H=5, W=8, stride=2)
    space = list(fam.FAMILY.space(k, m))
    assert sorted((dict(s.params)["unroll"], dict(s.params)["early"]) for s in space) == [(1, 0), (2, 0), (2, 1)]
    assert all(fam.FAMILY.legal(k, s, m) == [] and native.check(k, s, m) == [] for s in space)
    assert dict(fam.FAMILY.hand(k, m).params) == {"unroll": 1, "early": 0}
    sol = fam.FAMILY.solve(k, m, 30.0)
    assert sol.proved_optimal and sol.method == "enumeration" and sol.solve_s <= 30
    costs = sorted(fam.FAMILY.cost(k, s, m) for s in space)
    assert [c.modeled_s for c in sol.candidates] == costs             # every point, best first
    # the model is packets at the machine's clock; each row's blocks are Z3-packed
    g = tpl.match(k)
    best = dict(sol.candidates[0].schedule.params)
    assert sol.candidates[0].modeled_s == pytest.approx(fam.modeled_packets(g, best) / m.notes["clock_hz"])
    from superopt.ir.schedule import Schedule
    bad = fam.schedule(k, 3)
    assert any("do not fit" in e for e in fam.FAMILY.legal(k, bad, m))
    assert fam.FAMILY.legal(k, Schedule(bad.splits), m) == ["not a hvx_depthwise schedule"]
    assert dict(sol.candidates[0].schedule.params) == {"unroll": 2, "early": 1}   # the early shuffle saves a packet an iteration


def test_stream_register_roles():
    """Unpacks write v0..v17, multiplies accumulate into v18..v21 from the weights v22..v30,
    and every load is a .tmp load into v31 tied to its unpack."""
    import re
    for g, e in ((tpl.match(kernel(H=6, W=6)), 0), (tpl.match(kernel(H=5, W=8, stride=2)), 1)):
        ins = [i for b in fam.blocks(g, {"unroll": 2, "early": e}).values() for i in b]
        unp = [i for i in ins if "vunpack" in i.text]
        mpy = [i for i in ins if "vmpy" in i.text]
        assert unp and all(int(r[1:]) < 18 for i in unp for r in i.defs)
        assert all(18 <= int(r[1:]) <= 21 for i in mpy for r in i.defs)
        assert all(22 <= int(re.findall(r"v(\d+)\.h\)", i.text)[0]) <= 30 for i in mpy)
        loads = [i for i in ins if "vmem(r1" in i.text and "=" in i.text.split("vmem")[0]]
        assert all(i.text.startswith("v31.tmp") for i in loads)
        assert len([i for i in ins if i.text.startswith("v31.tmp")]) == len(unp)
