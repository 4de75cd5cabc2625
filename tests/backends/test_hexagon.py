"""Hexagon backend: compile with clang (hexagonv66, HVX 128 B), run under qemu-hexagon,
compare bit-exactly with the numpy interpreter. Skips without clang/ld.lld/qemu."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from superopt.backends.base import Failure, get
from superopt.backends.hexagon import profile, requant, rules, tools
from superopt.ir.interpret import run_kernel
from superopt.ir.lower import lower
from superopt.ir.schedule import Schedule
from superopt.kernels import Workload, reference as ref
from superopt.kernels.suites import suite
from superopt.search.machine import load

pytestmark = pytest.mark.skipif(tools.find_tools() is None, reason=tools.missing_message())

M = load("hexagon")
DSP = {w.name: w for w in suite("dsp", small=True)}
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "hexagon-dsp-small.json"


def _run(w, schedule):
    k = w.kernel
    be = get("hexagon", M)
    c = be.compile(lower(k, schedule, M))
    assert not isinstance(c, Failure), str(c)
    ins = w.random_inputs(1)
    out = np.zeros(k.output.size, k.output.dtype.np)
    r = be.run(c, ins, out)
    assert not isinstance(r, Failure), str(r)
    want = np.asarray(run_kernel(k, ins)).reshape(-1).astype(out.dtype)
    assert np.array_equal(np.asarray(w.reference(ins)).reshape(-1), want)   # the integer reference agrees
    return out, want


def test_failures_are_values():
    f = tools.compile_program("int so_main(void) { return undeclared; }")
    assert isinstance(f, Failure) and f.kind == "compile" and "undeclared" in f.message
    exe = tools.compile_program("int so_main(void) { volatile int *p = (int *)0; return *p; }")
    assert isinstance(tools.run_program(exe, b"", 0), Failure) and tools.run_program(exe, b"", 0).kind == "crash"
    exe = tools.compile_program("int so_main(void) { volatile int i = 0; for (;;) i++; return 0; }")
    r = tools.run_program(exe, b"", 0, timeout=1.0)
    assert isinstance(r, Failure) and r.kind == "timeout"


def test_hvx_intrinsic_roundtrip():
    """vrmpy under qemu: the 4-byte dot products of two int8 vectors."""
    src = r"""
static int8_t a[128] __attribute__((aligned(128))), b[128] __attribute__((aligned(128)));
static int32_t o[32] __attribute__((aligned(128)));
int so_main(void) {
  if (so_read_all(a, 128) || so_read_all(b, 128)) return 3;
  *(HVX_Vector *)o = Q6_Vw_vrmpy_VbVb(*(HVX_Vector *)a, *(HVX_Vector *)b);
  return so_write_all(o, 128);
}"""
    rng = np.random.default_rng(0)
    a, b = rng.integers(-128, 128, 128).astype(np.int8), rng.integers(-128, 128, 128).astype(np.int8)
    out = tools.run_program(tools.compile_program(src), a.tobytes() + b.tobytes(), 128)
    want = (a.astype(np.int32) * b.astype(np.int32)).reshape(32, 4).sum(1)
    assert np.array_equal(np.frombuffer(out, np.int32), want)


def test_hvx_requantize_and_predicated_store():
    """The renderer's HVX requantize (rounding/saturating shift-packs, Q15 multiply,
    vdeal) equals the library's integer reference, and the predicated store writes
    exactly the masked bytes at any offset, also across a 128-byte line."""
    src = r"""
static int32_t x[32] __attribute__((aligned(128))), m[32] __attribute__((aligned(128))), arg[4];
static int32_t ok[32] __attribute__((aligned(128)));
static int8_t o[512] __attribute__((aligned(128)));
int so_main(void) {
  for (int it = 0; it < 48; it++) {
    if (so_read_all(x, 128) || so_read_all(m, 128) || so_read_all(arg, 16) || so_read_all(ok, 128)) return 3;
    for (int i = 0; i < 512; i++) o[i] = 0x5a;
    HVX_Vector keep = arg[3] ? so_first(arg[3]) : so_lane_mask(*(vi *)ok);
    so_vstore_masked(o + arg[2], so_requant(*(HVX_Vector *)x, *(HVX_Vector *)m, arg[0], arg[1]), keep, 32);
    if (so_write_all(o, 512)) return 4;
  }
  return 0;
}"""
    helpers = (requant.HVX_BASE + requant.HELPERS).replace("LANES", "32")
    rng = np.random.default_rng(0)
    stdin, want = b"", []
    for it in range(48):
        lim = 1 << (30 if it % 3 == 0 else 22)
        x = rng.integers(-lim, lim, 32).astype(np.int32)
        m = rng.integers(0, 1 << 15, 32).astype(np.int32)
        pre, post, off, n = int(rng.integers(1, 16)), int(rng.integers(1, 8)), int(rng.integers(0, 384)), int(rng.integers(1, 33))
        ok = (rng.integers(0, 2, 32) if it % 2 else np.arange(32) < n).astype(np.int32)
        stdin += x.tobytes() + m.tobytes() + np.array([pre, post, off, 0 if it % 2 else n], np.int32).tobytes() + ok.tobytes()
        o = np.full(512, 0x5a, np.int8)
        o[off:off + 32][ok.astype(bool)] = ref.requantize(x.astype(np.int64), 0, m, pre, post)[ok.astype(bool)]
        want.append(o)
    exe = tools.compile_program("typedef int vi __attribute__((vector_size(128)));\n" + helpers + src)
    assert not isinstance(exe, Failure), str(exe)
    out = tools.run_program(exe, stdin, 512 * 48)
    assert not isinstance(out, Failure), str(out)
    assert np.array_equal(np.frombuffer(out, np.int8).reshape(48, 512), np.array(want))


def test_requantize_rendered_with_hvx():
    w = DSP["qconv3x3_nhwc_1x56x56x64_k64"]
    s = rules.hand(w.kernel, M)
    r = _renderer(lower(w.kernel, s, M))
    src = r.render()
    assert r.requants == 1 and "float" not in src.split("static void block_")[1]
    asm = tools.assembly(src)
    for ins in ("vasr(", "):rnd:sat", "vmpy(", "vdeal(", "vlalign(", "if (q"):
        assert ins in asm, ins


@pytest.mark.parametrize("params", [dict(H=4, W=4, C=8, K=32, R=3, S=3, pad=1),           # 32 lanes: a full vector
                                    dict(H=5, W=5, C=24, K=24, R=3, S=3, pad=1, groups=24),  # 3 stores a pixel
                                    dict(H=3, W=5, C=4, K=40, R=1, S=1, pad=0)])
def test_requantize_other_channel_counts(params):
    w = Workload.make("qconv2d", N=1, **params)
    for s in [rules.hand(w.kernel, M), rules.candidates(w.kernel, M)[-1]]:
        got, want = _run(w, s)
        assert np.array_equal(got, want), s.describe(w.kernel)


@pytest.mark.parametrize("name", list(DSP))
def test_dsp_hand_rule_bit_exact(name):
    got, want = _run(DSP[name], rules.hand(DSP[name].kernel, M))
    assert np.array_equal(got, want)


@pytest.mark.parametrize("name", list(DSP))
def test_dsp_every_candidate_bit_exact(name):
    """Register blocking, reduction unrolls and 3->4 padding: all of them verify."""
    k = DSP[name].kernel
    for s in rules.candidates(k, M):
        if k.output.dtype.name == "int8":   # the requantize goes through HVX, never the scalar fallback
            r = _renderer(lower(k, s, M))
            r.render()
            assert r.requants == s.upcast() // s.vector, s.describe(k)
        got, want = _run(DSP[name], s)
        assert np.array_equal(got, want), s.describe(k)


def _renderer(program):
    import sys
    return sys.modules["superopt.backends.hexagon.render"].HexagonRenderer(program)


def test_vrmpy_groups_four_products():
    w = DSP["qconv5x5_nhwc_1x28x28x32_k32"]
    k = w.kernel
    s = next(s for s in rules.candidates(k, M) if s.splits[3][-1].level.value == "unroll")  # 4 input channels unrolled
    r = _renderer(lower(k, s, M))
    src = r.render()
    assert "Q6_Vw_vrmpyacc_VwVbVb" in src and "so_ld32" in src   # adjacent channels: one word load
    assert r.vrmpy_groups == 5 * s.upcast() // s.vector     # 4 channels x 5 taps per accumulator, 4 per vrmpy


def test_padded_reduction_uses_vrmpy():
    w = DSP["qdwconv3x3_nhwc_1x112x112x32"]
    k = w.kernel
    padded = next(s for s in rules.candidates(k, M) if s.splits[-1][-1].size == 4 and s.upcast() == s.vector)
    plain = rules.hand(k, M)
    rp, rh = _renderer(lower(k, padded, M)), _renderer(lower(k, plain, M))
    rp.render(), rh.render()
    assert rp.vrmpy_groups == 1 and rh.vrmpy_groups == 0
    got, want = _run(w, padded)
    assert np.array_equal(got, want)


@pytest.mark.skipif(not RESULTS.exists(), reason="no committed hexagon benchmark results")
@pytest.mark.parametrize("name", list(DSP))
def test_dsp_solver_schedule_bit_exact(name):
    rows = {r["kernel"]: r for r in json.loads(RESULTS.read_text())["kernels"]}
    if name not in rows: pytest.skip(f"{name} not in the benchmark results")
    got, want = _run(DSP[name], Schedule.from_dict(rows[name]["solver"]["schedule"]))
    assert np.array_equal(got, want)


def test_kernel_cycle_model():
    w = DSP["qdwconv3x3s2_nhwc_1x112x112x64"]
    k = w.kernel
    c = get("hexagon", M).compile(lower(k, rules.hand(k, M), M))
    ins = w.random_inputs(0)
    kc = profile.model(c.handle, b"".join(a.tobytes() for a in ins))
    assert not isinstance(kc, Failure), str(kc)
    assert kc.llvm_packets > 0 and kc.llvm_cycles >= kc.llvm_packets
    assert kc.z3_pipelined_cycles <= kc.z3_cycles <= kc.llvm_cycles


def test_time_refuses_mismatched_buffers():
    # time() now counts qemu's packets (tests/backends/test_hexagon_time.py); like run() it
    # returns a Failure, without running, for buffers that don't match the program
    be = get("hexagon", M)
    w = DSP["qmatmul_1024x1024x1024"]
    c = be.compile(lower(w.kernel, Schedule.naive(w.kernel), M))
    out = np.zeros(w.kernel.output.size, np.int32)
    assert isinstance(be.time(c, w.random_inputs(0)[:1], out), Failure)
    assert isinstance(be.time(c, w.random_inputs(0), out[:-1]), Failure)
