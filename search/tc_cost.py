"""Modeled time of a tensor-core GEMM schedule (numeric; ``cost.modeled_time`` routes
tensor-core schedules here, the Z3 space does not hold them yet).

T = launch + max(compute, DRAM, L2, shared) + stall, where
- compute: the busiest SM's blocks (ceil(blocks / SMs), so a ragged last wave and an
  underfilled grid cost what they do) at the SM's share of the tensor-core peak
  (``machine.flops_tc_fp16``, datasheet unless calibrated);
- DRAM: the kernel's compulsory bytes (operands once, output once) over DRAM bandwidth;
- L2: every block's operand tiles (``(BM + BN) x K`` elements) over 2x DRAM bandwidth
  (a rough L2 figure until one is calibrated);
- shared: the ldmatrix reads (each warp's A and B fragments every 16 of K) over the
  shared-memory bandwidth (conflict-free layouts: search/banks.py).
and the stall is the load latency a pipeline of ``stages`` does not hide: per K step each block waits
max(0, LATENCY - (stages - 1 + others x stages) x one step's compute), where ``others``
are the other blocks resident on its SM (register estimate: accumulators + fragments +
addressing), whose copies in flight fill the wait. Element copies (operands not 16-byte
aligned, e.g. an NCHW convolution's input) are synchronous: no stage runs ahead.
A convolution as implicit GEMM runs window points x K tiles steps (``Tiles.steps``); its
padded M/N tiles compute their padding (the compute term counts whole tiles); the L2 term
reads the input once per window point, each operand's bytes divided by the fraction of
its 32-byte sectors its copies use (``_sector_use``: element copies of a strided operand
waste most of each sector).
The mma.sync issue rate of sm_90 is below the wgmma peak that the datasheet figure
describes; the measured gap is in bench/results/gpu-tc-h100.md.
"""
from __future__ import annotations

import math

from superopt.ir import tensorcore as tcm

LATENCY_S = 600e-9     # global load -> shared, estimate (not calibrated)
OVERHEAD_REGS = 64     # addressing, loop state, epilogue temporaries (128x128x32 tile: 224 vs 217 compiled)


def registers(t: tcm.Tiles) -> int:
    """Estimated registers per thread: fp32 accumulators, fragments (32-bit), overhead."""
    return t.tm * t.tn // tcm.WARP + (t.tm // 16) * 4 + (t.tn // 16) * 4 + OVERHEAD_REGS


def resident_blocks(t: tcm.Tiles, machine) -> int:
    return machine.regs_per_sm // (t.threads * min(machine.max_regs_per_thread, registers(t)))


def time_s(kernel, s, machine) -> float:
    t = tcm.tiles(kernel, s)
    K = t.steps * t.bk               # the implicit GEMM's K: window points x K axis
    blocks = s.blocks()
    sm_rate = (machine.flops_tc_fp16 or 16 * machine.flops_fp32) / machine.cores
    per_sm = math.ceil(blocks / machine.cores)  # the busiest SM's blocks
    step = 2 * t.bm * t.bn * t.bk / sm_rate     # padded tiles compute their padding too
    others = max(0, min(per_sm, resident_blocks(t, machine)) - 1)  # co-resident blocks fill the wait with their steps
    ahead = s.stages - 1 if _async(s) else 0    # element copies are synchronous: no step ahead
    exposed = max(0.0, LATENCY_S - (ahead + others * max(1, ahead + 1)) * step) * t.steps
    compute = per_sm * t.steps * step
    stall = per_sm * exposed  # on the critical path whatever bounds the rest
    dram = kernel.min_bytes / machine.dram_bw
    m = tcm.match_tc(kernel, s.tensor_core)
    eff_a, eff_b = (_sector_use(kernel, s, t, op) for op in (m.a, m.b))
    l2 = blocks * (t.bm / eff_a + t.bn / eff_b) * K * 2 / (2 * machine.dram_bw)
    smem = blocks * (K // 16) * t.warps * (t.tm + t.tn) * 16 * 2 / (machine.smem_bw or machine.dram_bw)
    return machine.launch_s + max(compute, dram, l2, smem) + stall


def _async(s) -> bool:
    """Every staged copy is a 16-byte cp.async (element copies are plain loads)."""
    return all(x.vector == tcm.UNIT for x in s.staging)


def _sector_use(kernel, s, t: tcm.Tiles, op) -> float:
    """Useful fraction of the 32-byte sectors an operand's copies read: 16-byte copies run
    along whole tile rows (1); element copies run as far as the tile row is contiguous in
    memory (the inner M extent for an M-contiguous operand, the K step for a K-contiguous
    one, else one element: an NCHW filter read along input channels uses 2 of 32 bytes)."""
    vec = next((x.vector for x in s.staging if x.input == op.input), op.vec)
    if vec == tcm.UNIT: return 1.0
    idx, n = op.load.src[0], kernel.axes
    tc = s.tensor_core
    if op.k_major: run = t.m_ext[-1] if op.outer == tc.m_axis and t.m_ext else (t.tn if op.outer == tc.n_axis else 1)
    else: run = t.bk if tcm.axis_stride(idx, tc.k_axis, n[tc.k_axis].size) == 1 else 1
    if tcm.axis_stride(idx, op.outer if op.k_major else tc.k_axis, n[op.outer if op.k_major else tc.k_axis].size) != 1: run = 1
    return min(1.0, run * 2 / 32)
