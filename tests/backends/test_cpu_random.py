"""Random kernels x random legal schedules compute the reference on the cpu backend."""
from __future__ import annotations

import math

from hypothesis import HealthCheck, assume, given, settings, strategies as st

from superopt import Tensor
from superopt.ir import dtypes
from superopt.ir.schedule import Level, Schedule, Split, check, vector_axis
from superopt.search.machine import load
from superopt.verify import verify

MACHINE = load("cpu")


# ---- random kernels ----------------------------------------------------------------
dims = st.integers(1, 9)


@st.composite
def elementwise(draw, shape, dtype):
    x = Tensor.empty(*shape, dtype=dtype, name="x")
    y = Tensor.empty(*shape, dtype=dtype, name="y")
    t = x
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["add", "mul", "relu", "max", "neg", "where", "exp", "sq", "bcast", "sqrt", "recip",
                                   "sin", "cast"] if dtype.is_float
                                  else ["add", "mul", "max", "neg", "where", "bcast", "cast", "bits"]))
        if op == "add": t = t + y
        elif op == "mul": t = t * y
        elif op == "relu": t = t.relu()
        elif op == "max": t = t.maximum(y)
        elif op == "neg": t = -t
        elif op == "where": t = (t < y).where(t, y)
        elif op == "exp": t = (t * 0.5).exp()
        elif op == "sq": t = t * t + 1.0
        elif op == "sqrt": t = (t * t + 0.5).sqrt()
        elif op == "recip": t = (t * t + 0.5).reciprocal()
        elif op == "sin": t = t.sin()
        elif op == "cast" and dtype.is_float: t = t.cast(dtypes.float16).cast(dtype)
        elif op == "cast": t = (t * 37).cast(dtypes.int8).cast(dtype)  # wraps
        elif op == "bits": t = (t & y) ^ (t >> 1)
        elif op == "bcast":
            b = Tensor.empty(*shape[:-1], 1, dtype=dtype, name="b")
            t = t + b.expand(*shape)
    return t


@st.composite
def movement(draw, t):
    shape = t.shape
    op = draw(st.sampled_from(["none", "permute", "pad", "shrink", "flip_reshape"]))
    if op == "permute" and len(shape) > 1:
        return t.permute(*draw(st.permutations(range(len(shape)))))
    if op == "pad":
        return t.pad(tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in shape))
    if op == "shrink" and all(s > 1 for s in shape):
        return t.shrink(tuple((1, s) for s in shape))
    if op == "flip_reshape" and len(shape) >= 2:
        return t.reshape(shape[0] * shape[1], *shape[2:])
    return t


@st.composite
def kernels(draw):
    kind = draw(st.sampled_from(["ew", "ew", "reduce", "reduce", "matmul", "conv"]))
    dtype = draw(st.sampled_from([dtypes.float32] * 4 + [dtypes.float16, dtypes.bfloat16, dtypes.int32, dtypes.int8]))
    if kind == "matmul":
        m, k, n = draw(dims), draw(dims), draw(st.sampled_from([1, 3, 8, 16, 32]))
        fdt = dtype if dtype.is_float else dtypes.float32
        a, b = Tensor.empty(m, k, dtype=fdt, name="a"), Tensor.empty(k, n, dtype=fdt, name="b")
        t = a @ b
        if draw(st.booleans()): t = t.relu()
    elif kind == "conv":
        n, c, hw, o, r = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(3, 7)), draw(st.integers(1, 4)), draw(st.sampled_from([1, 3]))
        x, w = Tensor.empty(n, c, hw, hw, name="x"), Tensor.empty(o, c, r, r, name="w")
        t = x.conv2d(w, stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, 1)))
    else:
        shape = tuple(draw(st.lists(dims, min_size=1, max_size=3)))
        if draw(st.booleans()) and len(shape) >= 1:
            shape = shape[:-1] + (draw(st.sampled_from([8, 16, 32])),)  # a vectorizable inner axis
        t = draw(movement(draw(elementwise(shape, dtype))))
        if kind == "reduce":
            axes = sorted(set(draw(st.lists(st.integers(0, len(t.shape) - 1), min_size=1, max_size=len(t.shape)))))
            op = draw(st.sampled_from(["sum", "max"]))
            t = t.sum(tuple(axes), keepdim=draw(st.booleans())) if op == "sum" else t.max(tuple(axes))
    steps = t.schedule()
    return steps[draw(st.integers(0, len(steps) - 1))].kernel


# ---- random legal schedules ----------------------------------------------------------
@st.composite
def axis_splits(draw, size: int, reduce: bool, vector: int) -> tuple[Split, ...]:
    """Random pieces over the CPU levels; ``vector`` > 1: exact cover ending in an upcast it divides."""
    levels = [Level.LOOP, Level.UNROLL] + ([] if reduce else [Level.GRID, Level.UPCAST])
    chosen = draw(st.lists(st.sampled_from(levels), min_size=1, max_size=3, unique=True))
    if vector > 1:
        chosen = [lv for lv in chosen if lv is not Level.UPCAST]
        up = vector * draw(st.sampled_from([d for d in (1, 2, 4) if (size // vector) % d == 0]))
        rest = size // up
        inner = [Split(Level.UPCAST, up)]
        pieces = _exact(draw, rest, chosen)
        return tuple(pieces + inner)
    sizes = [draw(st.sampled_from([1, 2, 3, 4, 8])) for _ in chosen[1:]]
    inner = math.prod(sizes)
    first = -(-size // inner)
    return tuple(Split(lv, s) for lv, s in zip(chosen, [first] + sizes))


def _exact(draw, n: int, levels: list[Level]) -> list[Split]:
    """Pieces over ``levels`` whose sizes multiply to exactly n."""
    if not levels: return [] if n == 1 else [Split(Level.LOOP, n)]
    out, rest = [], n
    for lv in levels[1:]:
        d = draw(st.sampled_from([x for x in range(1, rest + 1) if rest % x == 0][:6]))
        out.append(Split(lv, d))
        rest //= d
    return [Split(levels[0], rest)] + out


@st.composite
def schedules(draw, k):
    va = vector_axis(k)
    vec = 1
    if va is not None and draw(st.booleans()):
        opts = [v for v in (2, 4, 8, 16) if k.axes[va].size % v == 0]
        if opts: vec = draw(st.sampled_from(opts))
    splits = tuple(draw(axis_splits(ax.size, ax.reduce, vec if a == va else 1)) for a, ax in enumerate(k.axes))
    order = tuple(draw(st.permutations(range(len(k.axes))))) if draw(st.booleans()) else ()
    return Schedule(splits, order=order, vector=vec, workers=draw(st.integers(1, MACHINE.cores)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_kernel_random_schedule_matches_reference(cpu_backend, data):
    k = data.draw(kernels())
    s = data.draw(schedules(k))
    errs = check(k, s, MACHINE)
    assume(not errs)
    r = verify(k, s, cpu_backend, seed=data.draw(st.integers(0, 2**31 - 1)))
    assert r.ok, f"{k.describe()}\nschedule: {s.describe(k)}\n{s.to_json()}\n{r}"
