"""The staged SIMT GEMM model (search/staged_cost.py) against the H100 timings of the staged
variants (bench/results/h100-2026-11-23b/gpu-staged.json, medians of 30 runs, L2 flushed).
The model's ISSUE_EFF was fitted to these timings: agreement here is in-sample."""
from __future__ import annotations

from dataclasses import replace

import pytest

from superopt.ir.schedule import check
from superopt.kernels.registry import Workload
from superopt.search import cost, staged_cost
from superopt.search.hand import STAGED_TILES, staged_simt
from superopt.search.machine import H100

# the H100 the timings ran on, as calibrated in that run (calibration.json)
CAL = replace(H100, dram_bw=2.9865e12, flops_fp32=64.84e12, smem_bw=32.29e12, launch_s=10.13e-6,
              smem_per_block=232448, smem_per_sm=233472)
MM = Workload.make("matmul", M=2048, N=2048, K=2048, dtype="float32").kernel
ATTN = Workload.make("bmm", B=256, M=512, N=512, K=64, b_layout="nk", dtype="float32").kernel
FFN_UP = Workload.make("matmul", M=8192, N=4096, K=1024, dtype="float32").kernel
# measured median seconds per (bm, bn, tm, tn, bk, stages)
MEASURED = {
    "mm": {(128, 128, 8, 8, 8, 2): 411.1e-6, (128, 128, 8, 8, 16, 2): 412.8e-6, (128, 128, 8, 8, 8, 3): 439.1e-6,
           (128, 128, 8, 8, 16, 3): 416.1e-6, (128, 256, 8, 16, 8, 2): 414.2e-6, (128, 64, 8, 8, 8, 2): 417.6e-6,
           (64, 64, 8, 4, 16, 2): 404.6e-6},
    "attn": {(128, 128, 8, 8, 8, 2): 301.2e-6, (128, 128, 8, 8, 16, 2): 339.9e-6, (128, 128, 8, 8, 8, 3): 292.5e-6,
             (128, 128, 8, 8, 16, 3): 311.5e-6, (128, 256, 8, 16, 8, 2): 312.4e-6, (128, 64, 8, 8, 8, 2): 263.5e-6,
             (64, 64, 8, 4, 16, 2): 255.3e-6},
    "ffn_up": {(128, 128, 8, 8, 8, 2): 1676.5e-6, (64, 64, 8, 4, 16, 2): 1545.1e-6},
}
KERNELS = {"mm": MM, "attn": ATTN, "ffn_up": FFN_UP}


def _t(k, tile, machine=CAL) -> float:
    s = staged_simt(k, machine, *tile)
    assert s is not None and not check(k, s, machine) and s.staging and s.tensor_core is None
    return cost.modeled_time(k, s, machine)


def test_small_and_large_tiles_are_rated_alike_on_a_large_gemm():
    """matmul 2048^3: every variant ran 39-43 TF/s; the old model rated the 64x64 tile at half the
    128x128 one. Both tiles fill the SMs alike (8 vs 2 blocks an SM, same FMAs)."""
    small, large = _t(MM, (64, 64, 8, 4, 16, 2)), _t(MM, (128, 128, 8, 8, 8, 2))
    assert small < 1.1 * large and large < 1.1 * small
    for tile in STAGED_TILES:
        assert MM.flops / _t(MM, tile) < CAL.flops_fp32                 # never past the FMA peak


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_modeled_within_1_25x_of_measured(name):
    k = KERNELS[name]
    for tile, measured in MEASURED[name].items():
        assert 0.8 < _t(k, tile) / measured < 1.25, tile


def test_short_k_gemm_favours_many_resident_blocks():
    """Attention scores (K = 64, a 256 MB output): one resident 128x256 block cannot overlap its
    output store with other blocks' FMAs; four 64x64 blocks an SM can (measured 312 vs 255 us)."""
    big, small = (128, 256, 8, 16, 8, 2), (64, 64, 8, 4, 16, 2)
    assert staged_cost.resident_blocks(ATTN, staged_simt(ATTN, CAL, *big), CAL) == 1
    assert staged_cost.resident_blocks(ATTN, staged_simt(ATTN, CAL, *small), CAL) >= 4
    assert _t(ATTN, small) < _t(ATTN, big) / 1.1
    assert _t(ATTN, small) > ATTN.min_bytes / CAL.dram_bw                # above the DRAM floor


def test_instruction_count_follows_the_lowering():
    """ptxas (CUDA 13.0, sm_90) compiled the 64x64 matmul tile to 512 FFMA, 51 LDS, 602
    instructions a K step, the 128x128x8 one to 512, 35 and 575 (the 3-stage one to 595)."""
    for tile, (total, lds) in {(64, 64, 8, 4, 16, 2): (602, 51), (128, 128, 8, 8, 8, 2): (575, 35),
                               (128, 128, 8, 8, 8, 3): (595, 35)}.items():
        got, got_lds = staged_cost.step_instructions(MM, staged_simt(MM, CAL, *tile))
        assert abs(got - total) <= 8 and abs(got_lds - lds) <= 3


def test_pipeline_depth_and_resources_move_the_time_the_right_way():
    one = staged_simt(MM, CAL, 64, 64, 8, 4, 16, 1)        # synchronous copies: every step waits for memory
    two = staged_simt(MM, CAL, 64, 64, 8, 4, 16, 2)
    assert cost.modeled_time(MM, one, CAL) > cost.modeled_time(MM, two, CAL)
    slow = replace(CAL, flops_fp32=CAL.flops_fp32 / 2)
    assert cost.modeled_time(MM, two, slow) > 1.8 * cost.modeled_time(MM, two, CAL)
    few = replace(CAL, regs_per_sm=CAL.regs_per_sm // 4)   # a quarter of the registers: fewer resident blocks
    assert staged_cost.resident_blocks(MM, two, few) < staged_cost.resident_blocks(MM, two, CAL)


def test_cpu_and_unstaged_schedules_keep_the_shared_model():
    from superopt.search.hand import hand_schedule
    from superopt.search.machine import host_cpu
    shared = lambda k, s, m: float(cost.time(cost.NUMERIC, cost.facts(k), cost.vars_of(s), m, cost.params(m)))  # noqa: E731
    cpu = host_cpu()
    for k in (MM, ATTN):
        s = hand_schedule(k, cpu)
        assert cost.modeled_time(k, s, cpu) == shared(k, s, cpu)
    s = replace(staged_simt(MM, CAL, *STAGED_TILES[0]), staging=(), stages=1)   # the same splits, unstaged
    assert cost.modeled_time(MM, s, CAL) == shared(MM, s, CAL)
