"""The legality check's analytic shared-memory count of row kernels (schedule.row_shared_bytes)
equals the Shared bytes the lowering allocates, over many row kernels, schedule spaces and
warp sizes; and the check refuses exactly the schedules whose count passes the limit."""
from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from superopt import Tensor
from superopt.ir.kernelize import kernelize
from superopt.ir.lower import _Lowerer
from superopt.ir.program import Shared, walk
from superopt.ir.schedule import check, row_shared_bytes
from superopt.ir.target import Target
from superopt.search import space
from superopt.search.machine import H100, host_cpu

AMD = Target("mi-like", "amd", "gfx90a", {"simt"}, 104, max_threads=1024, max_upcast=256, warp=64,
             smem_per_block=64 * 1024)
KERNELS = [("softmax", (8, 1024), 1), ("softmax", (64, 48), 0), ("layernorm", (6, 512), 1),
           ("rmsnorm", (3, 5, 64), 2), ("layernorm", (16, 40), 0)]


def _kernel(op: str, shape: tuple[int, ...], axis: int):
    return kernelize(getattr(Tensor.empty(*shape, name="x"), op)(axis).node)[0].kernel


def _shared(k, s, target) -> list[Shared]:
    """The Shared buffers the lowering allocates for ``s``."""
    return [x for x in walk(_Lowerer(k, s, target).program().body) if isinstance(x, Shared)]


def _sample(k, target, n: int):
    """Every few schedules of the space (deterministic), legal but for shared memory."""
    roomy = replace(target, smem_per_block=1 << 40)
    pts = [s for s in space.build(k, target).enumerate() if not check(k, s, roomy)]
    step = max(1, len(pts) // n)
    return pts[::step][:n]


@pytest.mark.parametrize("target", [H100, AMD, host_cpu()], ids=["h100", "warp64", "cpu"])
def test_row_shared_formula_equals_the_lowered_programs_shared_bytes(target):
    seen = set()
    for op, shape, axis in KERNELS:
        k = _kernel(op, shape, axis)
        assert k.row_axes
        for s in _sample(k, target, 24):
            bufs = _shared(k, s, target)
            assert row_shared_bytes(k, s, target.warp) == sum(x.nbytes for x in bufs), (op, shape, axis, s.to_json())
            seen |= {x.name.rsplit("_", 1)[-1] for x in bufs}
    if target.is_simt: assert {"red", "mid", "bc", "lanes"} <= seen   # every buffer kind was counted at least once
    else: assert "lanes" in seen


def test_check_refuses_exactly_past_the_limit():
    k = _kernel("softmax", (8, 1024), 1)
    counts = [(s, row_shared_bytes(k, s, H100.warp)) for s in _sample(k, H100, 40)]
    limit = sorted(c for _, c in counts)[len(counts) // 2]
    small = replace(H100, smem_per_block=limit)
    for s, c in counts:
        refused = any("shared memory" in e for e in check(k, s, small))
        assert refused == (c > limit), (s.to_json(), c, limit)
    assert any(c > limit for _, c in counts) and any(c <= limit for _, c in counts)


def test_row_shared_bytes_is_zero_off_row_kernels():
    mm = kernelize((Tensor.empty(8, 8, name="a") @ Tensor.empty(8, 8, name="b")).node)[0].kernel
    s = next(itertools.islice(space.build(mm, H100).enumerate(), 1))
    assert row_shared_bytes(mm, s, H100.warp) == 0
