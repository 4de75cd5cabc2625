"""16-bit contractions write 16-bit results (kernelize._narrowed): a GEMM's float32 sum read
only through a cast is written at the cast, so a chain of fp16 GEMMs (attention's head
permutes included) keeps fp16 operands, and the tensor-core rule takes every one."""
from __future__ import annotations

import numpy as np

from superopt import Tensor
from superopt.backends.base import get
from superopt.ir import dtypes as dt
from superopt.ir.interpret import run_kernel
from superopt.ir.kernelize import kernelize
from superopt.ir.node import Ops
from superopt.search import fusion
from superopt.search.hand import gpu
from superopt.search.machine import H100
from superopt.verify import verify

F16 = np.float16


def _run(steps) -> np.ndarray:
    bufs = dict(Tensor._data)
    for s in steps:
        bufs[s.output] = run_kernel(s.kernel, [bufs[n] for n in s.inputs])
    return bufs[steps[-1].output]


def _rand(rng, *shape) -> np.ndarray:
    return rng.uniform(-1, 1, shape).astype(F16)


def test_a_gemm_chain_writes_fp16_and_matches_numpy():
    rng = np.random.default_rng(0)
    x, w1, w2 = _rand(rng, 64, 32), _rand(rng, 32, 48), _rand(rng, 48, 16)
    out = (Tensor(x) @ Tensor(w1)) @ Tensor(w2)
    for plan in (None, fusion.default_plan(out.node)):
        steps = kernelize(out.node, plan=plan)
        assert len(steps) == 2                                    # no separate cast kernels
        assert [s.kernel.output.dtype for s in steps] == [dt.float16, dt.float16]
        assert all(b.dtype is dt.float16 for b in steps[1].kernel.inputs)
        h = (x.astype(np.float32) @ w1.astype(np.float32)).astype(F16)
        want = (h.astype(np.float32) @ w2.astype(np.float32)).astype(F16)
        got = _run(steps).reshape(want.shape).astype(np.float32)   # float32 sums in another order: 1 fp16 ulp
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=2e-3, atol=1e-3)


def test_a_sum_read_other_than_through_one_cast_stays_float32():
    rng = np.random.default_rng(1)
    x, w = Tensor(_rand(rng, 16, 32)), Tensor(_rand(rng, 32, 8))
    s = x.cast(dt.float32) @ w.cast(dt.float32)                # float32 result, read twice
    out = s.cast(dt.float16) + s.exp().cast(dt.float16)
    red = next(n for n in s.node.toposort() if n.op is Ops.REDUCE)
    first = kernelize(out.node, plan=frozenset({red}))[0].kernel
    assert first.reduce is not None and first.output.dtype is dt.float32


def _attention(rng, B=2, S=32, NH=2, D=16):
    T, H = B * S, NH * D
    x, wq, wk, wv = _rand(rng, T, H), _rand(rng, H, H), _rand(rng, H, H), _rand(rng, H, H)

    def heads(t): return t.reshape(B, S, NH, D).permute(0, 2, 1, 3).reshape(B * NH, S, D)
    X = Tensor(x)
    q, k, v = heads(X @ Tensor(wq)), heads(X @ Tensor(wk)), heads(X @ Tensor(wv))
    att = ((q @ k.transpose(-1, -2)) * (1.0 / D ** 0.5)).softmax(-1)
    return (att @ v).reshape(B, NH, S, D).permute(0, 2, 1, 3).reshape(T, H)


def test_attention_contractions_take_tensor_cores_and_verify_on_emu():
    out = _attention(np.random.default_rng(2))
    steps = kernelize(out.node)
    contractions = [s.kernel for s in steps if s.kernel.reduce is not None and s.kernel.kind != "row"]
    assert len(contractions) == 5                                # q, k, v, scores, context
    emu = get("emu")
    for k in contractions:
        assert {b.dtype for b in k.inputs} == {dt.float16} and k.output.dtype is dt.float16, k.name
        s = gpu(k, H100)
        assert s.tensor_core is not None, (k.name, k.kind)
        r = verify(k, s, emu, seed=3)
        assert r.ok, (k.name, r.reason, s.describe(k))
