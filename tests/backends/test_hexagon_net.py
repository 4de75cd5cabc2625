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
    into = {c["into"]: i for i, c in r.choices.items() if c["into"] is not None}   # add -> the conv computing it
    for i, (ly, got, ref) in enumerate(zip(net.layers, r.outputs, want)):
        if got is None: assert i in into.values(), ly.name   # only a conv whose residual add is fused stores nothing
        else: assert np.array_equal(got, ref), ly.name
    assert r.outputs[-1] is not None
    assert len(r.packets) == len(net.layers) and all(p > 0 for i, p in enumerate(r.packets) if i not in into)
    assert all(r.packets[a] <= 2 for a in into)                        # a fused add runs no code of its own
    assert 0 <= r.totals[0] - sum(r.packets) <= 4 * len(net.layers)    # the layers add up to the total (less the reads)
    fams = {r.choices[i]["family"] for i in r.choices}
    assert fams == {"hvx_firstlayer", "hvx_depthwise", "hvx_gemm"}
    for i, c in r.choices.items():   # the fusion planner: each ReLU6 / residual add epilogue the cheaper priced option
        if net.layers[i].relu or hn.residual_consumer(net, i) is not None:
            assert c["pass"] == ("relu" if net.layers[i].relu else "add")
            priced = {e: v for e, v in c["priced"].items() if v is not None}
            assert c["epilogue"] == min(priced, key=priced.get)
        else:
            assert c["epilogue"] == "none"
        if c["epilogue"] == "fused":   # the template's packets, as packed, are what qemu counted (+ the call)
            assert abs(r.packets[i] - c["modeled_packets"]) <= 0.02 * c["modeled_packets"] + 16, net.layers[i].name
    assert {r.choices[i]["family"] for i in r.choices if r.choices[i]["epilogue"] == "fused"} == fams
    assert [r.choices[i]["pass"] for i in into.values()] == ["add"]      # the small net's one residual add, fused
    plain = hn.run(net, x, "plain")
    assert not isinstance(plain, tools.Failure), str(plain)
    assert all(np.array_equal(g, w) for g, w in zip(plain.outputs, want))
    assert plain.totals[0] > 20 * r.totals[0]                           # the plain C route is far slower


def test_network_refuses_what_it_cannot_run():
    with pytest.raises(ValueError): hn.build(dm.mobilenet_v2(small=True, variant="uint8"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError): hn.build(dm.mobilenet_v2(small=True), np.zeros((16, 16, 3), np.int8), mode="fast")
    with pytest.raises(ValueError): hn.kind(dm.Layer("x", "conv", (-1,), 16, 16, 5))


def _counted_pass(call: str, ins: list[str], out: str, n: int, data: np.ndarray) -> tuple[bytes, list]:
    """One elementwise pass (``call``, C) over int8 buffers of ``n`` bytes under qemu: ``ins`` read
    from ``data`` in order, ``out`` written back; (output bytes, qemu's counters of the call alone)."""
    from superopt.backends.hexagon import requant
    from superopt.backends.hexagon.render import COUNTERS
    decl = ", ".join(f"{b}[{n}] __attribute__((aligned(128)))" for b in dict.fromkeys(ins + [out]))
    reads = " || ".join(f"so_read_all({b}, {n})" for b in ins)
    src = "typedef int vi __attribute__((vector_size(128)));\n" + requant.HVX_BASE.replace("LANES", "32") + \
        requant.HELPERS + ew.C + "\n".join(COUNTERS) + f"""
static int8_t {decl};
int so_main(void) {{
  if ({reads}) return 3;
  unsigned c0[3], c1[3], t[3];
  so_counters(c0);
  {call}
  so_counters(c1);
  for (int i = 0; i < 3; i++) t[i] = c1[i] - c0[i];
  if (so_counters_out(t)) return 5;
  return so_write_all({out}, {n});
}}"""
    exe = tools.compile_program(src)
    assert not isinstance(exe, tools.Failure), str(exe)
    r = tools.run_counted(exe, data.tobytes(), n)
    assert not isinstance(r, tools.Failure), str(r)
    return r


def test_clamp_pass_packets_as_counted():
    """The separate clamp pass a fusion is priced against: its packet line is what qemu counts."""
    for vectors in (5, 8, 33):
        n = 128 * vectors
        a = np.random.default_rng(vectors).integers(-128, 128, n).astype(np.int8)
        r = _counted_pass(ew.clamp_call("A", n), ["A"], "A", n, a)
        assert np.array_equal(np.frombuffer(r[0], np.int8), np.maximum(a, 0))
        assert r[1][0] == ew.clamp_packets(n)


def test_fusion_refused_where_the_template_cannot_take_it():
    from superopt.ir import hvx as tpl
    from superopt.search.families import hvx as fam
    net = dm.mobilenet_v2(small=True)
    i = next(i for i, l in enumerate(net.layers) if l.name == "head")      # 128 columns: 4 blocks, no fused epilogue
    g = dict(tpl.match(net.layer_kernel(i)))
    p = {"rows": 4, "blocks": 4, "corr": 1, "unroll": 1, "fuse": 1, "late": 0}
    assert not tpl.check(g, {**p, "fuse": 0}) and tpl.check({**g, "relu": 1}, p)
    assert tpl.check({**g, "requant": 0, "relu": 1}, {**p, "blocks": 1, "fuse": 0})
    c = hn.fuse_choice(fam, "hvx_gemm", g, [{**p, "fuse": 0}], 100, True)       # fused into the C requantize pass
    assert c["priced"]["separate"] == fam.modeled_packets(g, {**p, "fuse": 0}) + 100
    assert c["priced"]["fused"] == fam.modeled_packets({**g, "relu": 1}, {**p, "fuse": 0})
    assert c["epilogue"] == min(c["priced"], key=c["priced"].get)
    assert hn.fuse_choice(fam, "hvx_gemm", g, [{**p, "fuse": 0}], 100, False)["epilogue"] == "separate"


def test_add_pass_packets_as_counted():
    """The separate add + requantize pass a fusion into the project's epilogue is priced against."""
    for vectors in (3, 8, 13, 33):
        n = 128 * vectors
        ab = np.random.default_rng(vectors).integers(-128, 128, 2 * n).astype(np.int8)
        r = _counted_pass(ew.add_call("A", "B", "O", n, 100, 90, 7), ["A", "B"], "O", n, ab)
        a, b = ab[:n].astype(np.int64), ab[n:].astype(np.int64)
        assert np.array_equal(np.frombuffer(r[0], np.int8), np.clip((a * 100 + b * 90 + 64) >> 7, -128, 127))
        assert r[1][0] == ew.add_packets(n)


def test_residual_add_fusion_refused_where_the_template_cannot_take_it():
    from superopt.ir import hvx as tpl
    net = dm.mobilenet_v2(small=True)
    i = next(i for i, l in enumerate(net.layers) if l.name == "b0_project")
    assert hn.residual_consumer(net, i) == i + 1 and net.layers[i + 1].op == "add"
    assert hn.residual_consumer(net, i - 1) is None and hn.residual_consumer(net, i + 2) is None
    g = dict(tpl.match(net.layer_kernel(i)))
    add = {"add": 1, "add_ma": 100, "add_mb": 90, "add_s": 7}
    p = {"rows": 8, "blocks": 1, "corr": 1, "unroll": 2, "fuse": 1, "late": 1}
    assert not tpl.check({**g, **add}, p)
    assert tpl.check({**g, **add}, {**p, "fuse": 0})                   # the C requantize pass takes no add
    assert tpl.check({**g, **add, "relu": 1}, p)
    assert tpl.check({**g, **add, "add_ma": 128}, p)                   # the halfword sum would not be exact
