"""The schedule space: options cover their axis, every produced schedule is legal."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from superopt import Tensor
from superopt.ir.schedule import Level, check
from superopt.search import space
from superopt.search.machine import H100, load

CPU = load("cpu")


def _kernels():
    yield "gemm", (Tensor.empty(48, 40, name="a") @ Tensor.empty(40, 64, name="b")).schedule()[0].kernel
    yield "softmax-max", Tensor.empty(12, 64, name="x").max(1, keepdim=True).schedule()[0].kernel
    yield "ew-odd", (Tensor.empty(1000, name="y") * 2 + 1).schedule()[0].kernel
    yield "conv", (Tensor.empty(1, 3, 6, 6, name="x").conv2d(Tensor.empty(4, 3, 3, 3, name="w"), padding=1)
                   ).schedule()[0].kernel


KERNELS = list(_kernels())


@pytest.mark.parametrize("machine", [CPU, H100], ids=["cpu", "h100"])
@pytest.mark.parametrize("name,k", KERNELS, ids=[n for n, _ in KERNELS])
def test_options_cover_axes(name, k, machine):
    sp = space.build(k, machine)
    for ax, opts in zip(k.axes, sp.axis_options):
        assert opts, "every axis has at least one option"
        assert len(set(opts)) == len(opts)
        for opt in opts:
            prod = math.prod(p.size for p in opt)
            assert prod >= ax.size
            if ax.reduce: assert all(p.level is not Level.UPCAST and p.level is not Level.GRID for p in opt)
            if not machine.is_simt: assert all(p.level is not Level.THREAD for p in opt)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), which=st.sampled_from(range(len(KERNELS))), gpu=st.booleans())
def test_random_points_and_neighbors_are_legal_when_produced(data, which, gpu):
    _, k = KERNELS[which]
    machine = H100 if gpu else CPU
    sp = space.build(k, machine)
    choice = [data.draw(st.integers(0, len(o) - 1)) for o in sp.axis_options]
    s = sp.schedule(choice, data.draw(st.sampled_from(sp.vectors)), data.draw(st.sampled_from(sp.workers)))
    assert sp.index_of(s) == tuple(choice)
    if not sp.legal(s): return  # the space is a superset; check() is the filter
    assert sp.contains(s)
    for n in sp.neighbors(s):
        assert not check(k, n, machine), n.describe(k)
        assert sp.contains(n)


def test_enumerate_yields_only_legal_schedules():
    k = (Tensor.empty(8, 12, name="a") @ Tensor.empty(12, 16, name="b")).schedule()[0].kernel
    got = list(space.build(k, CPU).enumerate(orders=False))
    assert got and len(set(got)) == len(got)
    assert all(not check(k, s, CPU) for s in got)
    assert any(s.vector > 1 for s in got) and any(s.workers > 1 for s in got)


def test_padded_tiles_for_awkward_sizes():
    k = (Tensor.empty(1000, name="y") * 2).schedule()[0].kernel  # 1000 = 8 x 125: 16 only with a masked tail
    opts = space.build(k, CPU).axis_options[0]
    padded = [o for o in opts if math.prod(p.size for p in o) > 1000]
    assert padded and all(not check(k, space.build(k, CPU).schedule([opts.index(o)]), CPU) for o in padded)


def test_divisors():
    assert space.divisors(12) == [1, 2, 3, 4, 6, 12]
    assert space.divisors(1) == [1]
    assert space.divisors(49) == [1, 7, 49]
