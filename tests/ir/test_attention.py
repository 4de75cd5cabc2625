"""The fused-attention matcher (ir/attention.py): from graphs written with the lazy Tensor, the
plan that leaves scores and probabilities unwritten gives one attention kernel whose geometry
(batch, lengths, head dims, index expressions, logit) is the graph's; the BERT layer's head
split (reshape/permute of a projection) is followed through index expressions; a causal mask
built from ``arange`` becomes an index comparison (no mask buffer); graphs that are not
``softmax(f(q k^T)) v`` are not fused; the fused step runs through the interpreter with the
graph's values."""
from __future__ import annotations

import numpy as np
import pytest

from superopt.ir import context
from superopt.ir import dtype as dt
from superopt.ir.attention import AttentionKernel, fused_plan
from superopt.ir.kernelize import default_plan, kernelize
from superopt.ir.node import Ops, const, render
from superopt.ir.tensor import Tensor

RNG = np.random.default_rng(3)


def t(name: str, *shape: int) -> Tensor:
    return Tensor(RNG.standard_normal(shape).astype(np.float16), dtype=dt.float16, name=name)


def fused(out: Tensor):
    p = fused_plan(out.node, default_plan(out.node))
    return None if p is None else kernelize(out.node, plan=p)


def test_plain_attention_geometry():
    q, k, v = t("q", 3, 32, 16), t("k", 3, 48, 16), t("v", 3, 48, 32)
    steps = fused(((q @ k.transpose(-1, -2)) * 0.25).softmax(-1) @ v)
    assert [s.kernel.kind for s in steps] == ["attention"]
    kern = steps[0].kernel
    assert isinstance(kern, AttentionKernel)
    g = kern.geometry
    assert (g.batch, g.sq, g.sk, g.d, g.dv) == ((3,), 32, 48, 16, 32)
    assert [b.name for b in kern.inputs] == ["q", "k", "v"] and steps[0].inputs == ("q", "k", "v")
    assert render(g.logit) == "(attention_score[0]*0.25)"
    assert g.rows_ok("q") is None and g.rows_ok("k") is None and g.rows_ok("v") is None
    assert kern.mma_flops == 2 * 3 * 32 * 48 * (16 + 32)
    assert kern.min_bytes == sum(b.nbytes for b in kern.inputs) + kern.output.nbytes


def test_bert_head_split_is_followed():
    """(T, H) projections split into heads by reshape/permute, as kernels/models.bert_layer does."""
    B, S, H, NH = 2, 32, 64, 2
    D = H // NH
    x, wq, wk, wv = t("x", B * S, H), t("wq", H, H), t("wk", H, H), t("wv", H, H)

    def heads(a): return a.reshape(B, S, NH, D).permute(0, 2, 1, 3).reshape(B * NH, S, D)
    q, k, v = heads(x @ wq), heads(x @ wk), heads(x @ wv)
    out = ((q @ k.transpose(-1, -2)) * (1.0 / D ** 0.5)).softmax(-1) @ v
    steps = fused(out)
    assert [s.kernel.kind for s in steps] == ["gemm", "gemm", "gemm", "attention"]
    g = steps[-1].kernel.geometry
    assert (g.batch, g.sq, g.sk, g.d) == ((B * NH,), S, S, D)
    # head h of batch b, row i, element e sits at ((b*S + i) * H + h*D + e) of the projection
    assert g.rows_ok("q") is None and "%" in render(g.q)


def test_arange_causal_mask_is_an_index_comparison():
    q, k, v = t("q", 2, 64, 16), t("k", 2, 64, 16), t("v", 2, 64, 16)
    i = Tensor.arange(64).reshape(64, 1).expand(64, 64)
    j = Tensor.arange(64).reshape(1, 64).expand(64, 64)
    x = (q @ k.transpose(-1, -2)) * 0.25
    x = (j < i + 1).where(x, Tensor.full(x.shape, float("-inf"), dt.float16))
    kern = fused(x.softmax(-1) @ v)[0].kernel
    assert [b.name for b in kern.inputs] == ["q", "k", "v"]
    assert render(kern.geometry.logit) == "where((i2<(i1+1)), (attention_score[0]*0.25), -inf)"


def test_additive_mask_is_a_load_of_the_fused_kernel():
    q, k, v, m = t("q", 2, 32, 16), t("k", 2, 32, 16), t("v", 2, 32, 16), t("m", 32, 32)
    kern = fused(((q @ k.transpose(-1, -2)) + m).softmax(-1) @ v)[0].kernel
    assert [b.name for b in kern.inputs] == ["q", "k", "m", "v"]
    loads = [n for n in kern.geometry.logit.toposort() if n.op is Ops.LOAD]
    assert [ld.arg for ld in loads] == [2]


@pytest.mark.parametrize("build", [
    lambda q, k, v: ((q @ k.transpose(-1, -2)).softmax(-2)) @ v,          # softmax over the queries
    lambda q, k, v: ((q @ k.transpose(-1, -2)).exp()) @ v,                 # no normalization
    lambda q, k, v: (q @ k.transpose(-1, -2)) @ v,                         # no softmax
    lambda q, k, v: ((q @ k.transpose(-1, -2)).softmax(-1) * 2.0) @ v,     # scaled probabilities
])
def test_other_graphs_are_not_fused(build):
    q, k, v = t("q", 2, 32, 16), t("k", 2, 32, 16), t("v", 2, 32, 16)
    out = build(q, k, v)
    got = fused(out)
    assert got is None or all(s.kernel.kind != "attention" for s in got)


def test_fused_step_runs_through_the_interpreter():
    q, k, v = t("q", 2, 32, 16), t("k", 2, 32, 16), t("v", 2, 32, 16)
    out = ((q @ k.transpose(-1, -2)) * 0.25).softmax(-1) @ v
    plan = fused_plan(out.node, default_plan(out.node))
    with context.use(planner=lambda r: plan if r is out.node else None):
        assert [st.kernel.kind for st in out.schedule()] == ["attention"]
        got = out.numpy().astype(np.float64)
    qa, ka, va = (np.asarray(x.numpy(), np.float64) for x in (q, k, v))
    s = qa @ ka.transpose(0, 2, 1) * 0.25
    e = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(got, (e / e.sum(-1, keepdims=True)) @ va, atol=5e-3, rtol=1e-2)


def test_reference_at_sampled_rows_equals_the_whole():
    q, k, v = t("q", 2, 32, 16), t("k", 2, 32, 16), t("v", 2, 32, 16)
    kern = fused(((q @ k.transpose(-1, -2)) * 0.25).softmax(-1) @ v)[0].kernel
    ins = [x.numpy() for x in (q, k, v)]
    at, whole = kern.reference(ins)
    assert sorted(at) == list(range(kern.output.size))
    rows = np.array([3, 40, 63])
    at_s, part = kern.reference(ins, rows)
    assert len(at_s) == 3 * 16
    by_element = whole[np.argsort(at)]
    np.testing.assert_array_equal(part, by_element[at_s])
    np.testing.assert_array_equal(kern.interpret(ins).reshape(-1)[at_s], dt.to_storage(part, dt.float16))


def test_json_round_trip_and_bad_input():
    import json
    q, k, v = t("q", 2, 32, 16), t("k", 2, 32, 16), t("v", 2, 32, 16)
    kern = fused(((q @ k.transpose(-1, -2)) * 0.25).softmax(-1) @ v)[0].kernel
    back = AttentionKernel.from_dict(json.loads(json.dumps(kern.to_dict())))
    assert back == kern and back.geometry == kern.geometry
    with pytest.raises(ValueError):
        AttentionKernel.from_dict({"format": "superopt.kernel"})
    d = kern.to_dict()
    d["kernels"] = [d["kernels"][0]] * 3
    with pytest.raises(ValueError):
        AttentionKernel.from_dict(d)


def banded(s: int, cond, masked_where_true: bool = False):
    """The fused kernel of a (2, s, 16) attention masked to -inf by ``cond(i, j)`` (arange tensors)."""
    q, k, v = t("q", 2, s, 16), t("k", 2, s, 16), t("v", 2, s, 16)
    i = Tensor.arange(s).reshape(s, 1).expand(s, s)
    j = Tensor.arange(s).reshape(1, s).expand(s, s)
    x = (q @ k.transpose(-1, -2)) * 0.25
    ninf = Tensor.full(x.shape, float("-inf"), dt.float16)
    x = cond(i, j).where(ninf, x) if masked_where_true else cond(i, j).where(x, ninf)
    return fused(x.softmax(-1) @ v)[0].kernel


@pytest.mark.parametrize("cond, masked_where_true, lower, upper", [
    (lambda i, j: j <= i, False, (), ((1, 1),)),                   # causal, as ~(j > i)
    (lambda i, j: j < i + 1, False, (), ((1, 1),)),
    (lambda i, j: i >= j, False, (), ((1, 1),)),
    (lambda i, j: j > i, True, (), ((1, 1),)),                     # where(j > i, -inf, x)
    (lambda i, j: j < i, False, (), ((1, 0),)),                    # strictly causal: row 0 sees nothing
    (lambda i, j: (j <= i) & (j > i - 16), False, ((1, -15),), ((1, 1),)),   # a sliding window
    (lambda i, j: j < 40, False, (), ((0, 40),)),                  # a fixed length
])
def test_key_band_read_from_the_mask(cond, masked_where_true, lower, upper):
    g = banded(64, cond, masked_where_true).geometry
    assert (g.band.lower, g.band.upper) == (lower, upper)
    assert render(g.band.inside) == "(attention_score[0]*0.25)"   # inside the band: the mask is gone


def test_key_band_keeps_what_is_not_affine():
    """A buffer mask stays in the logit everywhere (no band); a band and a buffer mask: the
    buffer's part stays inside the band."""
    q, k, v, m = t("q", 2, 64, 16), t("k", 2, 64, 16), t("v", 2, 64, 16), t("m", 64, 64)
    g = fused(((q @ k.transpose(-1, -2)) + m).softmax(-1) @ v)[0].kernel.geometry
    assert g.band.trivial and g.band.inside is g.logit
    i = Tensor.arange(64).reshape(64, 1).expand(64, 64)
    j = Tensor.arange(64).reshape(1, 64).expand(64, 64)
    x = (q @ k.transpose(-1, -2)) * 0.25
    x = ((j <= i) & (m < 1.0)).where(x, Tensor.full(x.shape, float("-inf"), dt.float16))
    g = fused(x.softmax(-1) @ v)[0].kernel.geometry
    assert g.band.upper == ((1, 1),) and any(n.op is Ops.LOAD for n in g.band.inside.toposort())


@pytest.mark.parametrize("lower, upper", [((), ((1, 1),)), ((), ((1, 0),)), (((1, -15),), ((1, 1),)), ((), ((0, 40),)),
                                          (((1, 1),), ()), ((), ((1, -70),)), (((-1, 100),), ((2, 3),)), (((0, 8),), ((1, 9),))])
@pytest.mark.parametrize("bm, bn", [(64, 32), (32, 64), (16, 16), (128, 32)])
def test_band_tiles_against_every_element(lower, upper, bm, bn):
    """Tiles outside [lo, hi) hold no visible key of any row of the block, tiles in
    [full_lo, full_hi) only visible ones; with one bound the ranges are exact (the first and
    last visited tiles see a key, every tile wholly visible is counted unmasked)."""
    from superopt.ir.attention import KeyBand
    s = 256
    band = KeyBand(lower, upper, const(0.0, dt.float32))
    i, j = np.arange(s)[:, None], np.arange(s)[None, :]
    vis = np.ones((s, s), bool)
    for u, h in lower: vis &= j >= u * i + h
    for u, h in upper: vis &= j < u * i + h
    for t0 in range(0, s, bm):
        lo, full_lo, full_hi, hi = band.tiles(t0, bm, bn, s // bn)
        assert 0 <= lo <= full_lo <= full_hi <= hi <= s // bn
        per_tile = vis[t0:t0 + bm].reshape(bm, s // bn, bn)
        seen = per_tile.any(axis=(0, 2))
        assert not seen[:lo].any() and not seen[hi:].any()
        assert per_tile[:, full_lo:full_hi].all()
        if len(lower) + len(upper) == 1:
            assert lo == hi or (seen[lo] and seen[hi - 1])
            assert per_tile.all(axis=(0, 2)).sum() == full_hi - full_lo
