"""Modeled time of a tensor-core GEMM schedule (numeric; ``cost.modeled_time`` routes
tensor-core schedules here, the Z3 space does not hold them yet).

T = launch + max(compute, DRAM, L2, shared), where
- compute: the busiest SM's blocks (ceil(blocks / SMs), so a ragged last wave and an
  underfilled grid cost what they do) at the SM's share of the tensor-core peak
  (``machine.flops_tc_fp16``, datasheet unless calibrated);
- DRAM: the kernel's compulsory bytes (operands once, output once) over DRAM bandwidth;
- L2: every block's operand tiles (``(BM + BN) x K`` elements) over 2x DRAM bandwidth
  (a rough L2 figure until one is calibrated);
- shared: the ldmatrix reads (each warp's A and B fragments every 16 of K) over the
  shared-memory bandwidth (conflict-free layouts: search/banks.py).
The mma.sync issue rate of sm_90 is below the wgmma peak that the datasheet figure
describes; the measured gap is in bench/results/gpu-tc-h100.md.
"""
from __future__ import annotations

import math

from superopt.ir import tensorcore as tcm

def time_s(kernel, s, machine) -> float:
    t = tcm.tiles(kernel, s)
    K = t.kt * t.bk
    blocks = s.blocks()
    sm_rate = (machine.flops_tc_fp16 or 16 * machine.flops_fp32) / machine.cores
    compute = math.ceil(blocks / machine.cores) * 2 * t.bm * t.bn * K / sm_rate  # the busiest SM's blocks
    dram = kernel.min_bytes / machine.dram_bw
    l2 = blocks * (t.bm + t.bn) * K * 2 / (2 * machine.dram_bw)
    smem = blocks * (K // 16) * t.warps * (t.tm + t.tn) * 16 * 2 / (machine.smem_bw or machine.dram_bw)
    return machine.launch_s + max(compute, dram, l2, smem)
