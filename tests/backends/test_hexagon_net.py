"""A whole quantized network in one Hexagon binary (backends/hexagon/net.py) and the HVX
kernels it adds (hvx_eltwise: clamp, add + requantize, average pool), under qemu, bit-exact
against the numpy reference of kernels/dsp_models.py. Skips without clang/ld.lld/qemu."""
from __future__ import annotations

import numpy as np
import pytest

from superopt.backends.hexagon import hvx_eltwise as ew
from superopt.backends.hexagon import net as hn
from superopt.backends.hexagon import tools
from superopt.kernels import dsp_models as dm

pytestmark = pytest.mark.skipif(tools.find_tools() is None, reason=tools.missing_message())


def _eltwise(plain: bool, a: np.ndarray, b: np.ndarray, ma: int, mb: int, s: int, pixels: int, m: int, post: int) -> np.ndarray:
    n = a.size
    src = (ew.PLAIN if plain else ew.C) + f"""
static int8_t A[{n + 128}] __attribute__((aligned(128))), B[{n + 128}] __attribute__((aligned(128)));
static int8_t O[{3 * n + 256}] __attribute__((aligned(128)));
int so_main(void) {{
  if (so_read_all(A, {n}) || so_read_all(B, {n})) return 3;
  {ew.add_call("A", "B", "O", n, ma, mb, s)}
  {ew.pool_call("A", f"O + {n}", pixels, n // pixels, m, post)}
  for (int i = 0; i < {n}; i++) O[{n + 128} + i] = A[i];
  {ew.clamp_call(f"O + {n + 128}", n)}
  return so_write_all(O, {2 * n + 128});
}}"""
    exe = tools.compile_program(src)
    assert not isinstance(exe, tools.Failure), str(exe)
    out = tools.run_program(exe, a.tobytes() + b.tobytes(), 2 * n + 128)
    assert not isinstance(out, tools.Failure), str(out)
    return np.frombuffer(out, np.int8)


@pytest.mark.parametrize("plain", [False, True])
def test_eltwise_kernels_bit_exact(plain):
    rng = np.random.default_rng(3)
    pixels, c = 36, 128
    a = rng.integers(-128, 128, pixels * c).astype(np.int8)
    b = rng.integers(-128, 128, pixels * c).astype(np.int8)
    a[:4], b[:4] = [-128, 127, -128, 127], [-128, 127, 127, -128]          # the extremes: sums stay exact
    ma, mb, s = 127, 101, 6
    m, post = dm.pool_constants(pixels)
    got = _eltwise(plain, a, b, ma, mb, s, pixels, m, post)
    n = a.size
    A, B = a.astype(np.int64), b.astype(np.int64)
    assert np.array_equal(got[:n], np.clip((A * ma + B * mb + (1 << (s - 1))) >> s, -128, 127))
    ssum = A.reshape(pixels, c).sum(0)
    z = np.clip((2 * ssum * m + (1 << 15)) >> 16, -32768, 32767)
    assert np.array_equal(got[n:n + c], np.clip((z + (1 << (post - 1))) >> post, -128, 127))
    assert np.abs(got[n:n + c] - ssum / pixels).max() <= 1.0
    assert np.array_equal(got[n + 128:], np.maximum(a, 0))


def test_eltwise_refuses_inexact_constants():
    with pytest.raises(ValueError): ew.add_call("a", "b", "o", 128, 128, 1, 7)     # the halfword sum could overflow
    with pytest.raises(ValueError): ew.pool_call("x", "o", 256, 128, 1000, 3)
    with pytest.raises(ValueError): ew.pool_call("x", "o", 16, 32, 1000, 3)


def test_small_network_one_binary_bit_exact():
    net = dm.mobilenet_v2(small=True)
    x = dm.image(net)
    want = dm.forward(net, x)
    r = hn.run(net, x, "ours", solve_s=10.0)
    assert not isinstance(r, tools.Failure), str(r)
    for ly, got, ref in zip(net.layers, r.outputs, want):
        assert np.array_equal(got, ref), ly.name
    assert len(r.packets) == len(net.layers) and all(p > 0 for p in r.packets)
    assert 0 <= r.totals[0] - sum(r.packets) <= 4 * len(net.layers)    # the layers add up to the total (less the reads)
    fams = {r.choices[i]["family"] for i in r.choices}
    assert fams == {"hvx_firstlayer", "hvx_depthwise", "hvx_gemm"}
    plain = hn.run(net, x, "plain")
    assert not isinstance(plain, tools.Failure), str(plain)
    assert all(np.array_equal(g, w) for g, w in zip(plain.outputs, want))
    assert plain.totals[0] > 20 * r.totals[0]                           # the plain C route is far slower


def test_network_refuses_what_it_cannot_run():
    with pytest.raises(ValueError): hn.build(dm.mobilenet_v2(small=True, variant="uint8"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError): hn.build(dm.mobilenet_v2(small=True), np.zeros((16, 16, 3), np.int8), mode="fast")
    with pytest.raises(ValueError): hn.kind(dm.Layer("x", "conv", (-1,), 16, 16, 5))
