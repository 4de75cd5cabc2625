"""The mma.sync model (search/tc_cost.time_s) charges an SM for the tensor cores its warps
cannot reach: each of the 4 sub-partitions has its own, fed only by its own warps, so an SM
holding one warp computes at a quarter of its rate (tc_share); a wgmma warpgroup covers all
four. Real model figures on the datasheet H100, no timings."""
from __future__ import annotations

from dataclasses import replace

import pytest

from superopt.ir import tensorcore as tcm
from superopt.ir import wgmma as wg
from superopt.kernels.registry import Workload
from superopt.search import banks, tc_cost, tc_space
from superopt.search.machine import H100
from superopt.search.plan import split_k


def _mm(M: int, N: int, K: int):
    return Workload.make("matmul", M=M, N=N, K=K, dtype="float16").kernels[0]


def _device_s(k, s) -> float:
    """Device time with the Z3-solved shared layouts (conflict-free here, as the tc space's
    candidates get them: the plain placeholders' bank conflicts are priced too)."""
    if not wg.is_wgmma(s.tensor_core.instr): s = replace(s, staging=banks.staging(k, s, H100.warp)[0])
    return tc_cost.time_s(k, s, H100) - H100.launch_s


def _sm_warps(k, s) -> int:
    """Warps resident on the busiest SM (blocks on it, at most as many as fit)."""
    t = tcm.tiles(k, s, H100.warp)
    per_sm = -(-s.blocks() // H100.cores)
    return min(per_sm, tc_cost.resident_blocks(t, H100)) * t.warps


@pytest.mark.parametrize("warps,share", [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (8, 1.0), (36, 1.0)])
def test_share_of_the_tensor_cores_is_the_sub_partitions_fed(warps, share):
    assert tc_cost.tc_share(warps) == share


def test_one_warp_blocks_on_an_underfilled_grid_compute_at_a_quarter_rate():
    # the measured unsplit kernel of 512x512x4096 (64 blocks of one warp, one an SM) against
    # the same 64 x 64 tiles with 2 x 2 warps: same blocks, steps, flops and stall
    k = _mm(512, 512, 4096)
    m = tcm.match(k)
    one, four = tc_space.make(k, m, 64, 64, 64, 1, 1, 4), tc_space.make(k, m, 64, 64, 64, 2, 2, 4)
    assert one.blocks() == four.blocks() == 64
    t1, t4 = _device_s(k, one), _device_s(k, four)
    # the four-warp block's compute at the full mma.sync rate of an SM: 64 K steps of 64^3 MACs
    compute4 = 64 * 2 * 64 ** 3 / (H100.flops_tc_fp16 * tc_cost.MMA_SYNC_SM90 / H100.cores)
    assert t1 - t4 == pytest.approx(3 * compute4, rel=1e-9)   # one warp: four times the compute, same stall
    assert t1 / k.flops > 2 * t4 / k.flops


def test_one_warp_blocks_filling_the_sm_are_not_charged():
    # 1024 one-warp blocks, 8 on the busiest SM (9 fit): every sub-partition has warps
    k = _mm(2048, 2048, 1024)
    m = tcm.match(k)
    one, four = tc_space.make(k, m, 64, 64, 64, 1, 1, 4), tc_space.make(k, m, 64, 64, 64, 2, 2, 4)
    assert _sm_warps(k, one) >= 4
    assert _device_s(k, one) == pytest.approx(_device_s(k, four), rel=1e-9)


@pytest.mark.parametrize("shape", [(512, 512, 4096), (256, 384, 1024)])
def test_fewer_usable_tensor_cores_never_model_faster(shape, monkeypatch):
    # the stall is covered at the full rate's steps, so the share only adds time: every
    # mma.sync point of the space models at least as slow as with every SM's tensor cores fed
    k = _mm(*shape)
    pts = [s for _, s in tc_space.points(k, H100) if not wg.is_wgmma(s.tensor_core.instr)]
    with_share = [tc_cost.time_s(k, s, H100) for s in pts]
    monkeypatch.setattr(tc_cost, "tc_share", lambda warps, B=None: 1.0)
    fed = [tc_cost.time_s(k, s, H100) for s in pts]
    assert all(a >= b for a, b in zip(with_share, fed))
    sparse = [a > b for a, b, s in zip(with_share, fed, pts) if _sm_warps(k, s) < 4]
    assert sparse and any(sparse)   # some SM-underfilling points are charged


def test_small_gemm_optimum_and_split_parts_feed_every_sub_partition():
    # 512x512x4096 underfills the H100; the space's optimum and the split-K plan's partial GEMM
    # keep at least 4 warps on the busiest SM (a one- or two-warp block per SM tied with them before)
    k = _mm(512, 512, 4096)
    (_, s), = tc_space.best(k, H100, 1)
    assert wg.is_wgmma(s.tensor_core.instr) or _sm_warps(k, s) >= 4
    plan = split_k(k, H100)
    assert plan is not None and plan.modeled_s < plan.whole_s
    part = plan.steps[0]
    assert wg.is_wgmma(part.schedule.tensor_core.instr) or _sm_warps(part.kernel, part.schedule) >= 4
