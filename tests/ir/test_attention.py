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
from superopt.ir.node import Ops, render
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
