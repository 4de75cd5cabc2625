"""The HVX first-layer template (3x3 stride 2, 3 -> 32 channels): matcher and family, and
under qemu bit-exact against numpy, every packet accepted by llvm-mc, counts vs the model."""
import shutil
import subprocess

import numpy as np
import pytest

from superopt.backends.hexagon import asm_firstlayer as fl, tools
from superopt.ir import hvx_firstlayer as tpl, native
from superopt.kernels.registry import Workload
from superopt.search.families import hvx_firstlayer as fam, registry
from superopt.search.machine import load

FL = dict(C=3, K=32, stride=2, layout="nhwc", dtype="int8")
needs_tools = pytest.mark.skipif(tools.find_tools() is None, reason="Hexagon tools (clang, ld.lld, qemu-hexagon) not found")
# the hand rule, the pipelined ones with one and two pairs an iteration, one with every option off but pairs
PARAMS = [{"pairs": 1, "pipeline": 0, "pre": 1, "tload": 0}, {"pairs": 1, "pipeline": 1, "pre": 2, "tload": 1},
          {"pairs": 2, "pipeline": 1, "pre": 2, "tload": 1}, {"pairs": 2, "pipeline": 0, "pre": 1, "tload": 0}]


def kernel(**kw):
    return Workload.make("conv2d", **{**FL, **kw}).kernel


def inputs(h: int, w: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (h, w, 3), dtype=np.int8)
    wt = rng.integers(-128, 128, (32, 3, 3, 3), dtype=np.int8)
    x[0, :2] = -128                          # the extremes: -128 * -128 products, +128 weight bytes at 0
    wt[:3] = -128
    return x, wt


def test_geometry():
    assert tpl.match(kernel(H=8, W=16)) == {"h": 8, "w": 16, "oh": 4, "ow": 8, "x_in": 0, "w_in": 1, "requant": 0}
    assert tpl.match(kernel(H=7, W=8))["oh"] == 4


@pytest.mark.parametrize("kw, why", [
    (dict(H=8, W=10), "multiple of 4"),
    (dict(H=8, W=16, K=16), "not 32 filters"),
    (dict(H=8, W=16, C=4), "3 channels"),
    (dict(H=8, W=16, stride=1), "stride-2, pad-1"),
    (dict(H=8, W=16, pad=0), "stride-2, pad-1"),
    (dict(H=8, W=16, dtype="float32"), "not int32"),
    (dict(H=8, W=16, layout="nchw"), "3 channels"),
    (dict(H=8, W=16, R=5, S=5, pad=2), "not 32 filters"),
])
def test_refusals(kw, why):
    r = tpl.match(kernel(**kw))
    assert isinstance(r, str) and why in r


def test_requantize_epilogue_and_params():
    wl = Workload.make("qconv2d", H=224, W=224, C=3, K=32, stride=2)
    g = tpl.match(wl.kernel)
    from superopt.kernels.builders import qshifts
    assert (g["requant"], g["ow"], (g["pre"], g["post"])) == (1, 112, qshifts(wl.args))
    assert tpl.check(g, PARAMS[2]) == [] and any("four int8 pixels" in e for e in tpl.check(g, PARAMS[1]))
    assert any("four int8 pixels" in e for e in tpl.check(tpl.match(Workload.make("qconv2d", H=8, W=12, C=3, K=32, stride=2).kernel),
                                                          PARAMS[2]))      # output width 6
    g = tpl.match(kernel(H=8, W=16))
    assert all(tpl.check(g, p) == [] for p in PARAMS)
    assert tpl.check(g, {"pipeline": 1, "pre": 1, "pairs": 1}) == ["missing parameter(s) tload"]
    assert tpl.check(g, {**PARAMS[0], "pipeline": 2}) == ["pipeline must be 0 or 1"]
    assert tpl.check(g, {**PARAMS[0], "pairs": 3}) == ["pairs must be 1 or 2"]
    assert any("unknown" in e for e in tpl.check(g, {**PARAMS[0], "unroll": 2}))


def test_family_solve():
    m = load("hexagon")
    k = kernel(H=4, W=8)          # small: every point packs few blocks
    assert fam.FAMILY in registry() and native.TEMPLATES["hvx_firstlayer"] == "hvx_firstlayer"
    assert fam.FAMILY.applies(k, m) and not fam.FAMILY.applies(k, load("cpu"))
    space = list(fam.FAMILY.space(k, m))
    assert len(space) == 16 and all(native.check(k, s, m) == [] for s in space)
    sol = fam.FAMILY.solve(k, m, 30.0, top=16)
    assert sol.proved_optimal and sol.solve_s <= 30
    assert [c.modeled_s for c in sol.candidates] == sorted(fam.FAMILY.cost(k, s, m) for s in space)   # every point, best first
    hand = fam.FAMILY.hand(k, m)
    assert fam.FAMILY.cost(k, hand, m) >= sol.candidates[0].modeled_s


@needs_tools
# 8x16: a pair left over after the two-pair loop; 8x20: none; 7x8: odd height; 5x4: one pair a row
@pytest.mark.parametrize("h, w, p", [(8, 16, PARAMS[0]), (8, 16, PARAMS[2]), (8, 20, PARAMS[3]), (7, 8, PARAMS[1]),
                                     (5, 4, PARAMS[2])])
def test_bit_exact_and_counted(h, w, p):
    x, wt = inputs(h, w, h * 31 + w)
    out, (packets, instrs, hvx) = fl.run(x, wt, p)
    assert np.array_equal(out, fl.reference(x, wt))
    g = fl.geometry(h, w)
    assert 0 <= packets - fam.modeled_packets(g, p) <= 8     # the model leaves out the call into the kernel


def _llvm_mc_errors(asm: str) -> str:
    mc = shutil.which("llvm-mc") or shutil.which("llvm-mc-14")
    if mc is None: pytest.skip("llvm-mc not found")
    r = subprocess.run([mc, "-triple=hexagon", "-mcpu=hexagonv66", "-mattr=+hvxv66,+hvx-length128b", "-filetype=obj",
                        "-o", "/dev/null"], input=asm, capture_output=True, text=True)
    return "" if r.returncode == 0 and not r.stderr.strip() else r.stderr or "failed"


@pytest.mark.parametrize("p", PARAMS)
def test_every_packet_accepted_by_llvm_mc(p):
    asm = fl.emit_asm(fl.geometry(8, 16), p)
    assert asm.count("vrmpy") > 17 and _llvm_mc_errors(asm) == ""


@pytest.mark.parametrize("p", [PARAMS[2], {**PARAMS[2], "pipeline": 0}])
def test_requantize_packets_accepted_by_llvm_mc(p):
    g = {**fl.geometry(8, 16), "requant": 1, "bias_in": 2, "mult_in": 3, "pre": 3, "post": 5}
    asm = fl.emit_asm(g, p)
    assert "vdeal" in asm and _llvm_mc_errors(asm) == ""


@needs_tools
def test_backend_native_path_and_plain_c():
    from superopt.backends.hexagon import HexagonBackend
    m = load("hexagon")
    k = kernel(H=6, W=8)
    prog = native.lower_native(k, fam.schedule(k, **PARAMS[2]), m)
    be = HexagonBackend(m)
    exe = be.compile(prog)
    assert not isinstance(exe, tools.Failure), exe
    x, wt = inputs(6, 8, 5)
    out = np.zeros(k.output.shape, np.int32)
    t = be.time(exe, [x[None], wt], out)
    assert np.array_equal(out[0], fl.reference(x, wt)) and t.counters["packets"] > 0
    plain, counts = fl.run(x, wt, None)
    assert np.array_equal(plain, fl.reference(x, wt)) and counts[0] > t.counters["packets"]


@needs_tools
@pytest.mark.parametrize("h, w, p", [(8, 16, PARAMS[2]), (7, 8, {**PARAMS[3], "tload": 1})])
def test_requantize_bit_exact(h, w, p):
    """int8 out through the library's requantize (saturating both ways), template and plain C."""
    from superopt.kernels.reference import requantize
    x, wt = inputs(h, w, 3 * h + w)
    rng = np.random.default_rng(w)
    bias = rng.integers(-20000, 20000, 32).astype(np.int32)
    mult = rng.integers(1 << 14, 1 << 15, 32).astype(np.int32)
    bias[:2], mult[:2] = (30000, -30000), (32767, 32767)
    ref = requantize(fl.reference(x, wt), bias.astype(np.int64), mult.astype(np.int64), 3, 5)
    assert (ref == 127).any() and (ref == -128).any()
    for q in (p, None) if h == 8 else (p,):     # the template (and once the plain C program)
        out, counts = fl.run(x, wt, q, (bias, mult, 3, 5))
        assert out.dtype == np.int8 and np.array_equal(out, ref) and counts[0] > 0


@needs_tools
def test_requantize_backend_path():
    from superopt.backends.hexagon import HexagonBackend
    m = load("hexagon")
    wl = Workload.make("qconv2d", H=6, W=8, C=3, K=32, stride=2)
    k = wl.kernel
    sol = fam.FAMILY.solve(k, m, 30.0)
    assert sol.proved_optimal and all(dict(c.schedule.params)["pairs"] == 2 for c in sol.candidates)
    be = HexagonBackend(m)
    exe = be.compile(native.lower_native(k, sol.candidates[0].schedule, m))
    assert not isinstance(exe, tools.Failure), exe
    ins = wl.random_inputs(2)
    out = np.zeros(k.output.shape, np.int8)
    t = be.time(exe, ins, out)
    assert np.array_equal(out, wl.reference(ins)) and t.counters["packets"] > 0


def test_run_refuses_bad_input():
    x, wt = inputs(4, 6, 0)
    with pytest.raises(ValueError, match="multiple of 4"):
        fl.run(x, wt, PARAMS[0])
    x, wt = inputs(4, 8, 0)
    with pytest.raises(ValueError, match="must be 0 or 1"):
        fl.run(x, wt, {**PARAMS[0], "pipeline": 3})
