"""Random lazy-Tensor programs, split into kernels and run by the reference interpreter,
equal numpy evaluation of the same program; their kernels round-trip through JSON and
pickle with equal keys."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from superopt import Tensor
from superopt.io import load_kernel, save_kernel
from superopt.ir import dtypes as dt
from superopt.ir.kernel import Kernel
from superopt.kernels import reference as ref

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Prog:
    """A lazy Tensor and the float64 numpy value of the same program."""
    def __init__(self, t: Tensor, v: np.ndarray):
        self.t, self.v = t, v


def _leaf(data, shape) -> Prog:
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    arr = np.random.default_rng(seed).uniform(-2, 2, shape).astype(np.float32)
    return Prog(Tensor(arr), arr.astype(np.float64))


def _shape(data, max_rank: int = 3) -> tuple[int, ...]:
    return tuple(data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=max_rank), label="shape"))


def _unary(data, p: Prog) -> Prog:
    op = data.draw(st.sampled_from(["neg", "relu", "abs", "expsin", "sqrt1", "recip1", "sigmoid", "scale"]), label="unary")
    t, v = p.t, p.v
    if op == "neg": return Prog(-t, -v)
    if op == "relu": return Prog(t.relu(), np.maximum(v, 0))
    if op == "abs": return Prog(t.abs(), np.abs(v))
    if op == "expsin": return Prog(t.sin().exp2(), np.exp2(np.sin(v)))
    if op == "sqrt1": return Prog((t * t + 1.0).sqrt(), np.sqrt(v * v + 1))
    if op == "recip1": return Prog((t * t + 1.0).reciprocal(), 1 / (v * v + 1))
    if op == "sigmoid": return Prog(t.sigmoid(), 1 / (1 + np.exp(-v)))
    return Prog(t * 0.5 + 0.25, v * 0.5 + 0.25)


def _binary(data, p: Prog) -> Prog:
    # the other operand: same shape, or broadcast along some dims
    shape = tuple(d if data.draw(st.booleans(), label="keep") else 1 for d in p.v.shape)
    q = _leaf(data, shape)
    op = data.draw(st.sampled_from(["add", "sub", "mul", "max", "min_where"]), label="binary")
    if op == "add": return Prog(p.t + q.t, p.v + q.v)
    if op == "sub": return Prog(p.t - q.t, p.v - q.v)
    if op == "mul": return Prog(p.t * q.t, p.v * q.v)
    if op == "max": return Prog(p.t.maximum(q.t), np.maximum(p.v, q.v))
    qb = Prog(q.t.expand(p.v.shape), np.broadcast_to(q.v, p.v.shape))
    return Prog((p.t < qb.t).where(p.t, qb.t), np.where(p.v < qb.v, p.v, qb.v))


def _reduce(data, p: Prog) -> Prog:
    nd = p.v.ndim
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, nd - 1), min_size=1, max_size=nd), label="axes")))
    keep = data.draw(st.booleans(), label="keepdim")
    if data.draw(st.booleans(), label="sum"):
        return Prog(p.t.sum(axes, keepdim=keep), p.v.sum(axis=axes, keepdims=keep))
    return Prog(p.t.max(axes, keepdim=keep), p.v.max(axis=axes, keepdims=keep))


def _movement(data, p: Prog) -> Prog:
    t, v = p.t, p.v
    op = data.draw(st.sampled_from(["permute", "reshape", "expand", "pad", "shrink"]), label="movement")
    if op == "permute":
        order = data.draw(st.permutations(range(v.ndim)), label="order")
        return Prog(t.permute(order), v.transpose(order))
    if op == "reshape":
        n, dims = v.size, []
        while n > 1 and len(dims) < 3:
            d = data.draw(st.sampled_from([f for f in range(1, n + 1) if n % f == 0]), label="factor")
            dims.append(d)
            n //= d
        shape = tuple(dims + [n]) if n > 1 or not dims else tuple(dims)
        return Prog(t.reshape(shape), v.reshape(shape))
    if op == "expand":
        at = data.draw(st.integers(0, v.ndim), label="at")
        k = data.draw(st.integers(1, 4), label="size")
        shape = v.shape[:at] + (k,) + v.shape[at:]
        return Prog(t.unsqueeze(at).expand(shape), np.broadcast_to(np.expand_dims(v, at), shape))
    if op == "pad":
        pads = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in v.shape)
        return Prog(t.pad(pads), np.pad(v, pads))
    box = []
    for d in v.shape:
        b = data.draw(st.integers(0, d - 1), label="begin")
        box.append((b, data.draw(st.integers(b + 1, d), label="end")))
    return Prog(t.shrink(tuple(box)), v[tuple(slice(b, e) for b, e in box)])


def _self(data, p: Prog) -> Prog:
    """Programs that read a value twice: x*x, and x minus a reduction of itself broadcast back."""
    if data.draw(st.booleans(), label="square"):
        return Prog(p.t * p.t, p.v * p.v)
    nd = p.v.ndim
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, nd - 1), min_size=1, max_size=nd), label="axes")))
    if data.draw(st.booleans(), label="max"):
        return Prog(p.t - p.t.max(axes, keepdim=True), p.v - p.v.max(axis=axes, keepdims=True))
    return Prog(p.t - p.t.mean(axes, keepdim=True), p.v - p.v.mean(axis=axes, keepdims=True))


def _program(data, depth: int) -> Prog:
    p = _leaf(data, _shape(data))
    for _ in range(depth):
        kind = data.draw(st.sampled_from(["unary", "binary", "reduce", "movement", "movement", "self"]), label="kind")
        p = {"unary": _unary, "binary": _binary, "reduce": _reduce, "movement": _movement, "self": _self}[kind](data, p)
        if p.v.ndim == 0:  # a full reduction without keepdim: keep working on a rank-1 tensor
            p = Prog(p.t.reshape(1), p.v.reshape(1))
    return p


def _close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-4) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * (1 + float(np.max(np.abs(want), initial=0))))


def _roundtrip(k: Kernel, tmp: Path) -> None:
    assert Kernel.from_dict(json.loads(json.dumps(k.to_dict()))).key == k.key
    for ext in ("pkl", "json"):
        assert load_kernel(save_kernel(k, tmp / f"k.{ext}")).key == k.key


@SETTINGS
@given(st.data(), st.integers(1, 6))
def test_random_program_matches_numpy(data, depth):
    p = _program(data, depth)
    _close(p.t.numpy(), p.v)
    with tempfile.TemporaryDirectory() as d:
        for step in p.t.schedule():
            _roundtrip(step.kernel, Path(d))


@SETTINGS
@given(st.data())
def test_matmul_with_broadcast_batch(data):
    m, n, k = (data.draw(st.integers(1, 6)) for _ in range(3))
    batch = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    bb = tuple(d if data.draw(st.booleans()) else 1 for d in batch)
    a, b = _leaf(data, batch + (m, k)), _leaf(data, bb + (k, n))
    _close((a.t @ b.t).numpy(), ref.matmul(a.v, b.v))


@SETTINGS
@given(st.data())
def test_conv2d_any_layout_stride_pad_groups(data):
    groups = data.draw(st.integers(1, 3))
    c, kout = groups * data.draw(st.integers(1, 2)), groups * data.draw(st.integers(1, 2))
    r, s = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    stride, pad = data.draw(st.integers(1, 3)), data.draw(st.integers(0, 2))
    h, w = data.draw(st.integers(max(1, r - 2 * pad), 6)), data.draw(st.integers(max(1, s - 2 * pad), 6))
    n, layout = data.draw(st.integers(1, 2)), data.draw(st.sampled_from(["nchw", "nhwc"]))
    xs, ws = ((n, c, h, w), (kout, c // groups, r, s)) if layout == "nchw" else ((n, h, w, c), (kout, r, s, c // groups))
    x, wt = _leaf(data, xs), _leaf(data, ws)
    got = x.t.conv2d(wt.t, stride, pad, groups, layout).numpy()
    _close(got, ref.conv2d(x.v, wt.v, stride, pad, groups, layout))


def test_conv_reference_equals_direct_loops():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(2, 4, 5, 6)), rng.normal(size=(6, 2, 3, 2))
    stride, pad, groups = 2, 1, 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (5 + 2 - 3) // 2 + 1, (6 + 2 - 2) // 2 + 1
    want = np.zeros((2, 6, oh, ow))
    for nn, k, i, j in np.ndindex(*want.shape):
        g = k // 3
        want[nn, k, i, j] = np.sum(xp[nn, 2 * g:2 * g + 2, i * stride:i * stride + 3, j * stride:j * stride + 2] * w[k])
    np.testing.assert_allclose(ref.conv2d(x, w, stride, pad, groups), want, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_int8_dot_is_exact(m, n, k, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(-128, 128, (m, k)).astype(np.int8), rng.integers(-128, 128, (k, n)).astype(np.int8)
    out = Tensor(a).dot_int8(Tensor(b))
    assert out.dtype is dt.int32
    np.testing.assert_array_equal(out.numpy(), a.astype(np.int64) @ b.astype(np.int64))


@pytest.mark.parametrize("dtype", [dt.float16, dt.bfloat16])
def test_half_matmul_is_one_kernel_rounded_once(dtype):
    rng = np.random.default_rng(2)
    a, b = rng.uniform(-1, 1, (8, 16)), rng.uniform(-1, 1, (16, 4))
    ta, tb = Tensor(a.astype(np.float32)).cast(dtype), Tensor(b.astype(np.float32)).cast(dtype)
    assert len((ta @ tb).schedule()) == 1  # input casts fuse in; the fp32 accumulator is cast back in an epilogue
    av, bv = (dt.to_values(dt.to_storage(x, dtype), dtype).astype(np.float64) for x in (a, b))
    want = dt.to_values(dt.to_storage(av @ bv, dtype), dtype)
    np.testing.assert_allclose((ta @ tb).numpy(), want, rtol=2e-2 if dtype is dt.bfloat16 else 2e-3, atol=1e-2)


def test_derived_ops_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 7))
    t = Tensor(x.astype(np.float32))
    xv = x.astype(np.float32).astype(np.float64)
    _close(t.softmax().numpy(), ref.softmax(xv))
    _close(t.layernorm().numpy(), ref.layernorm(xv, 1.0, 0.0, 1e-5))
    _close(t.rmsnorm().numpy(), ref.rmsnorm(xv, 1.0, 1e-6))
    _close(t.mean(1).numpy(), xv.mean(1))
    _close(t.var(0).numpy(), xv.var(0))
    gelu = 0.5 * xv * (1 + np.tanh(math.sqrt(2 / math.pi) * (xv + 0.044715 * xv ** 3)))
    _close(t.gelu().numpy(), gelu)
    _close(t.exp().log().numpy(), xv)
    _close(t.min(1).numpy(), xv.min(1))


def test_cast_rounds_and_wraps():
    x = np.array([1.5, -2.7, 300.0, 1 / 3], dtype=np.float32)
    t = Tensor(x)
    np.testing.assert_array_equal(t.cast(dt.int32).numpy(), [1, -2, 300, 0])
    np.testing.assert_array_equal(t.cast(dt.int32).cast(dt.int8).numpy(), [1, -2, 44, 0])
    assert t.cast(dt.float16).numpy()[3] == np.float16(1 / 3)


def test_shape_errors_are_value_errors():
    a = Tensor.empty(3, 4)
    with pytest.raises(ValueError): a @ Tensor.empty(5, 2)
    with pytest.raises(ValueError): a.reshape(5, 3)
    with pytest.raises(ValueError): a.expand(3, 5)
    with pytest.raises(ValueError): a.permute(0, 0)
    with pytest.raises(ValueError): a.shrink(((0, 4), (0, 4)))
    with pytest.raises(ValueError): a.pad(((1, 1),))
    with pytest.raises(ValueError): a + Tensor.empty(2, 4)


def _int_leaf(data, shape) -> Prog:
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    arr = np.random.default_rng(seed).integers(-3, 4, shape).astype(np.int32)
    return Prog(Tensor(arr), arr.astype(np.int64))


@SETTINGS
@given(st.data(), st.integers(1, 5))
def test_random_int32_program_is_exact(data, depth):
    """Integer data arithmetic goes through the simplifying constructors too: it must stay exact."""
    p = _int_leaf(data, _shape(data))
    for _ in range(depth):
        kind = data.draw(st.sampled_from(["add", "mul", "neg", "max", "min_where", "sum", "movement"]), label="kind")
        if kind == "neg": p = Prog(-p.t, -p.v)
        elif kind == "sum":
            ax = data.draw(st.integers(0, p.v.ndim - 1), label="axis")
            p = Prog(p.t.sum(ax, keepdim=True), p.v.sum(axis=ax, keepdims=True))
        elif kind == "movement": p = _movement(data, p)
        else:
            q = _int_leaf(data, p.v.shape)
            p = {"add": lambda: Prog(p.t + q.t, p.v + q.v), "mul": lambda: Prog(p.t * q.t, p.v * q.v),
                 "max": lambda: Prog(p.t.maximum(q.t), np.maximum(p.v, q.v)),
                 "min_where": lambda: Prog((p.t < q.t).where(p.t, q.t), np.minimum(p.v, q.v))}[kind]()
    got = p.t.numpy()
    assert p.t.dtype is dt.int32
    np.testing.assert_array_equal(got, p.v)


def test_long_reductions_with_few_results_run_in_two_stages():
    from superopt.ir.tensor import SPLIT_MIN
    a = np.random.default_rng(5).standard_normal((2, 2 * SPLIT_MIN)).astype(np.float32)
    x = Tensor(a)
    for t, want in ((x.sum(), a.astype(np.float64).sum()), (x.max(1), a.max(1)), (x.mean(1, keepdim=True), a.mean(1, keepdims=True))):
        steps = t.schedule()
        assert [s.kernel.kind for s in steps] == ["reduce", "reduce"]          # partials, then their fold
        assert steps[0].kernel.out_points >= 64                                 # enough blocks for the SMs
        _close(t.numpy(), np.asarray(want, dtype=np.float64).reshape(t.shape), rtol=1e-5)
    many = Tensor.empty(4096, 2 * SPLIT_MIN, name="m").sum(1)              # enough results already: one kernel
    assert len(many.schedule()) == 1
