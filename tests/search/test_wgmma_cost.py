"""wgmma (sm_90a) schedules in the tensor-core space (search/tc_space.py) and their model
(search/tc_cost.wgmma_time_s): proposed only on sm_90 machines and legal shapes, every
proposal legal, the model's ordering of clearly different tiles, and a proposal computing
the reference on the emulator."""
from __future__ import annotations

from dataclasses import replace

import pytest

from superopt.backends.base import get
from superopt.ir import tensorcore as tcm
from superopt.ir import wgmma as wg
from superopt.ir.schedule import check
from superopt.kernels.registry import Workload
from superopt.search import cost, tc_cost, tc_space
from superopt.search.machine import H100, nvidia_at
from superopt.search.wgmma_space import make
from superopt.verify import verify

A100_LIKE = nvidia_at(H100, 80, name="sm80")


def _mm(M: int, N: int, K: int, dtype: str = "float16"):
    return Workload.make("matmul", M=M, N=N, K=K, dtype=dtype).kernels[0]


def _is_wgmma(s) -> bool:
    return wg.is_wgmma(s.tensor_core.instr)


def test_wgmma_points_only_on_sm90_and_legal_shapes():
    k = _mm(512, 256, 128)
    assert any(_is_wgmma(s) for _, s in tc_space.points(k, H100))
    assert not any(_is_wgmma(s) for _, s in tc_space.points(k, A100_LIKE))
    narrow = _mm(256, 48, 64)             # N = 48: no wgmma tile (64..256 wide) fits it
    pts = tc_space.points(narrow, H100)
    assert pts and not any(_is_wgmma(s) for _, s in pts)
    conv = Workload.make("conv2d", N=2, C=16, H=8, W=8, K=64, stride=1, pad=1, layout="nhwc", dtype="float16").kernel
    assert not any(_is_wgmma(s) for _, s in tc_space.points(conv, H100))


@pytest.mark.parametrize("shape", [(512, 256, 128), (256, 512, 64), (1024, 256, 256)])
def test_every_proposal_is_legal_and_ranked(shape):
    k = _mm(*shape, dtype="bfloat16")
    pts = tc_space.points(k, H100)
    assert [t for t, _ in pts] == sorted(t for t, _ in pts)
    assert all(not check(k, s, H100) for _, s in pts)
    assert all(t == pytest.approx(cost.modeled_time(k, s, H100), abs=1e-12) for t, s in pts if _is_wgmma(s))
    for t, s in tc_space.best(k, H100, top_k=6):
        assert not check(k, s, H100) and t == cost.modeled_time(k, s, H100)
        if _is_wgmma(s): assert s.staging == wg.staging(k, s)     # descriptor layouts, not re-solved


def test_model_orders_clearly_worse_wgmma_tiles():
    k = _mm(8192, 1024, 4096)             # long K: 64 steps of 64
    m = tcm.match(k)
    t = {key: tc_cost.time_s(k, make(k, m, *key), H100) for key in
         [(128, 128, 64, 2, 1, 1), (128, 128, 64, 2, 1, 3), (64, 128, 64, 1, 1, 3), (128, 64, 64, 2, 1, 3)]}
    assert t[(128, 128, 64, 2, 1, 1)] > 1.5 * t[(128, 128, 64, 2, 1, 3)]   # no copy runs ahead: latency exposed
    # 64-wide tiles read more shared memory and L2 per flop than 128 x 128
    assert t[(64, 128, 64, 1, 1, 3)] > t[(128, 128, 64, 2, 1, 3)] < t[(128, 64, 64, 2, 1, 3)]
    assert all(v >= k.flops / H100.flops_tc_fp16 for v in t.values())


def test_residency_from_registers_and_shared_memory():
    k = _mm(8192, 1024, 1024)
    m = tcm.match(k)
    big, mid = make(k, m, 128, 256, 64, 2, 1, 3), make(k, m, 128, 128, 64, 2, 1, 3)
    assert tc_cost.wgmma_registers(tcm.tiles(k, big, H100.warp)) == 128 + tc_cost.WG_OVERHEAD_REGS   # 128 x 256 over 2 warpgroups
    assert tc_cost.wgmma_resident(k, big, H100) == 1 and tc_cost.wgmma_resident(k, mid, H100) == 2


def test_proposed_wgmma_schedule_verifies_on_emu():
    k = _mm(256, 256, 256)
    s = next(s for _, s in tc_space.points(k, H100) if _is_wgmma(s))    # the model's best wgmma point
    r = verify(k, s, get("emu"), seed=0)
    assert r.ok, r.reason
