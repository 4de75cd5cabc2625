"""The HVX depthwise 3x3 template under qemu: bit-exact against numpy, every emitted packet
accepted by llvm-mc, qemu's packet count against the model, the backend's Native path."""
import shutil
import subprocess

import numpy as np
import pytest

from superopt.backends.hexagon import asm_depthwise as dw, tools
from superopt.search.families import hvx_depthwise as fam

pytestmark = pytest.mark.skipif(tools.find_tools() is None, reason="Hexagon tools (clang, ld.lld, qemu-hexagon) not found")

# (H, W, stride, params): stride 1 with a peeled first and last iteration and a one-trip
# middle; stride 2 with the hardware loop (unroll 1) and without a right edge (unroll 2);
# stride 1 with the loop and early shuffles
U1, U2, U2E = {"unroll": 1, "early": 0}, {"unroll": 2, "early": 0}, {"unroll": 2, "early": 1}
CASES = [(4, 6, 1, U2), (5, 8, 2, U1), (5, 8, 2, U2E), (3, 10, 1, U2E)]


def inputs(h: int, w: int, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(-128, 128, (h, w, 64), dtype=np.int8), rng.integers(-128, 128, (64, 3, 3, 1), dtype=np.int8))


@pytest.mark.parametrize("h, w, s, p", CASES)
def test_bit_exact_and_counted(h, w, s, p):
    x, wt = inputs(h, w, h * 100 + w)
    x[0, 0, :] = -128                        # the extremes: -128 * -128 products
    wt[:, 1, 1, 0] = -128
    out, (packets, instrs, hvx) = dw.run(x, wt, s, p)
    assert np.array_equal(out, dw.reference(x, wt, s))
    g = dw.geometry(h, w, s)
    modeled = fam.modeled_packets(g, p)
    assert 0 <= packets - modeled <= 8          # the model leaves out the call into the kernel
    assert hvx > fam.macs(g) // 64              # one 64-MAC widening multiply per tap and pixel pair, and more


def _llvm_mc_errors(asm: str) -> str:
    mc = shutil.which("llvm-mc") or shutil.which("llvm-mc-14")
    if mc is None: pytest.skip("llvm-mc not found")
    r = subprocess.run([mc, "-triple=hexagon", "-mcpu=hexagonv66", "-mattr=+hvxv66,+hvx-length128b", "-filetype=obj",
                        "-o", "/dev/null"], input=asm, capture_output=True, text=True)
    return "" if r.returncode == 0 and not r.stderr.strip() else r.stderr or "failed"


@pytest.mark.parametrize("h, w, s, p", CASES)
def test_every_packet_accepted_by_llvm_mc(h, w, s, p):
    asm = dw.emit_asm(dw.geometry(h, w, s), p)
    assert asm.count("{") > 20
    assert _llvm_mc_errors(asm) == ""


@pytest.mark.parametrize("s", [1, 2])
def test_requantize_packets_accepted_by_llvm_mc(s):
    g = {**dw.geometry(4, 8, s), "requant": 1, "bias_in": 2, "mult_in": 3, "pre": 2, "post": 6}
    asm = dw.emit_asm(g, U2)
    assert "vasr" in asm and _llvm_mc_errors(asm) == ""


def test_llvm_mc_rejects_an_overfull_packet():
    """The acceptance test can fail: a store in a packet whose compute units are all taken."""
    bad = "{ vmem(r3+#0) = v18; v21:20.w += vmpy(v3.h,v23.h); v5:4.h = vunpack(v6.b) }\n"
    assert "slot error" in _llvm_mc_errors(bad)


def test_backend_native_path_and_timing():
    from superopt.backends.hexagon import HexagonBackend
    from superopt.ir import native
    from superopt.kernels.registry import Workload
    from superopt.search.machine import load
    m = load("hexagon")
    wl = Workload.make("conv2d", H=5, W=8, C=64, K=64, groups=64, layout="nhwc", dtype="int8", stride=2)
    k = wl.kernel
    s = fam.schedule(k, 2, 1)
    prog = native.lower_native(k, s, m)
    be = HexagonBackend(m)
    exe = be.compile(prog)
    assert not isinstance(exe, tools.Failure), exe
    rng = np.random.default_rng(7)
    ins = [rng.integers(-128, 128, b.shape).astype(np.int8) for b in k.inputs]
    out = np.zeros(k.output.shape, np.int32)
    t = be.time(exe, ins, out)
    assert np.array_equal(out[0], dw.reference(ins[0][0], ins[1], 2))
    assert t.counters["packets"] >= fam.modeled_packets(native.geometry(k, "hvx_depthwise"), dict(s.params))
    assert t.median_s == pytest.approx(t.counters["packets"] / m.notes["clock_hz"])


@pytest.mark.parametrize("h, w, s", [(4, 6, 1), (5, 8, 2)])
def test_requantize_bit_exact(h, w, s):
    """int8 out through the library's requantize; the extremes saturate both ways."""
    from superopt.kernels.reference import requantize
    x, wt = inputs(h, w, 11 * h + w)
    rng = np.random.default_rng(h)
    bias = rng.integers(-20000, 20000, 64).astype(np.int32)
    mult = rng.integers(1 << 14, 1 << 15, 64).astype(np.int32)
    bias[:4], mult[:4] = (30000, -30000, 0, 0), (32767, 32767, 1 << 14, 32767)
    ref = requantize(dw.reference(x, wt, s), bias.astype(np.int64), mult.astype(np.int64), 2, 6)
    assert (ref == 127).any() and (ref == -128).any()
    for p in (U2, None) if s == 1 else (U2,):   # the template (and once the plain C program)
        out, counts = dw.run(x, wt, s, p, (bias, mult, 2, 6))
        assert out.dtype == np.int8 and np.array_equal(out, ref) and counts[0] > 0


def test_requantize_backend_path():
    """The dsp suite's kind (qconv2d, groups = channels) through lowering and the backend."""
    from superopt.backends.hexagon import HexagonBackend
    from superopt.ir import native
    from superopt.kernels.registry import Workload
    from superopt.search.machine import load
    m = load("hexagon")
    wl = Workload.make("qconv2d", H=6, W=8, C=64, K=64, groups=64, stride=1)
    k = wl.kernel
    sol = fam.FAMILY.solve(k, m, 30.0)
    assert sol.proved_optimal and [dict(c.schedule.params) for c in sol.candidates] == [U2]
    be = HexagonBackend(m)
    exe = be.compile(native.lower_native(k, sol.candidates[0].schedule, m))
    assert not isinstance(exe, tools.Failure), exe
    ins = wl.random_inputs(3)
    out = np.zeros(k.output.shape, np.int8)
    t = be.time(exe, ins, out)
    assert np.array_equal(out, wl.reference(ins)) and t.counters["packets"] > 0


def test_plain_c_baseline_is_exact():
    x, wt = inputs(4, 6, 3)
    out, counts = dw.run(x, wt, 1, None)
    assert np.array_equal(out, dw.reference(x, wt, 1)) and counts[0] > 0


def test_run_refuses_an_illegal_unroll():
    x, wt = inputs(4, 6, 0)
    with pytest.raises(ValueError, match="odd"):
        dw.run(x, wt, 1, U1)
    with pytest.raises(ValueError, match="early needs unroll"):
        dw.run(x, wt, 2, {"unroll": 1, "early": 1})
