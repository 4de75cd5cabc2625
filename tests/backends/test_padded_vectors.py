"""A vector axis padded past its size (100 elements in vectors of 8: the last vector's
lanes 4..7 are masked) computes the reference on every backend that runs here."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from superopt import Tensor
from superopt.backends.base import get
from superopt.ir import dtypes as dt
from superopt.ir.kernelize import kernelize
from superopt.ir.lower import lower
from superopt.ir.schedule import Level, Schedule, Split, check
from superopt.verify import verify

G, T, L, U = Level.GRID, Level.THREAD, Level.LOOP, Level.UPCAST


def _kernels(dtype=dt.float32):
    x = Tensor.empty(6, 100, dtype=dtype, name="x")
    out = {"elementwise": x * 3 + 1, "rowsum": x.sum(1)}
    if dtype.is_float: out["softmax"] = x.softmax(1)
    return {name: kernelize(t.node)[-1].kernel for name, t in out.items()}


def _schedule(k, outer: Level, vec: int) -> Schedule:
    """Rows on ``outer``; the contiguous 100-wide axis as loop x upcast (padded), vector ``vec``."""
    splits = [(Split(outer, 6),) if not a.reduce else (Split(L, a.size),) for a in k.axes]
    va = next(a for a, ax in enumerate(k.axes) if ax.size == 100 and not ax.reduce) if k.kind != "reduce" else None
    if va is None: return Schedule(tuple(splits))
    splits[va] = (Split(L, -(-100 // (2 * vec))), Split(U, 2 * vec))
    return Schedule(tuple(splits), vector=vec)


@pytest.mark.parametrize("backend, outer, vec", [("cpu", G, 8), ("cpu", G, 16), ("emu", T, 4), ("emu", G, 8)])
def test_padded_vector_axis_verifies(backend, outer, vec):
    be = get(backend)
    try:
        for name, k in _kernels().items():
            s = _schedule(k, outer, vec)
            assert check(k, s, be.machine) == [], (name, check(k, s, be.machine))
            assert verify(k, s, be, seed=4).ok, (name, s.describe(k))
    finally:
        be.close()


def test_padded_vector_axis_on_hexagon():
    from superopt.backends.hexagon import tools
    if tools.find_tools() is None: pytest.skip(tools.missing_message())
    be = get("hexagon")
    try:
        for name, k in _kernels(dt.int32).items():
            s = _schedule(k, L, 32)
            assert verify(k, s, be, seed=4).ok, (name, s.describe(k))
    finally:
        be.close()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc to compile the CUDA source")
def test_padded_vector_axis_compiles_for_sm90(tmp_path):
    from superopt.backends.cuda.render import render
    from superopt.search.machine import H100
    for name, k in _kernels().items():
        src, _ = render(lower(k, _schedule(k, T, 4), H100))
        (tmp_path / "k.cu").write_text(src)
        r = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-o", str(tmp_path / "k.cubin"), str(tmp_path / "k.cu")],
                           capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr[-2000:])
