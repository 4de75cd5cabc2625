"""Modeled time of a tensor-core GEMM schedule (numeric; ``cost.modeled_time`` routes
tensor-core schedules here, the Z3 space does not hold them yet).

T = launch + max(compute, DRAM, L2, shared) + stall, where
- compute: the busiest SM's blocks (ceil(blocks / SMs), so a ragged last wave and an
  underfilled grid cost what they do) at the SM's share of the tensor-core peak
  (``machine.flops_tc_fp16``, datasheet unless calibrated), of which its resident warps
  use min(4, warps) / 4 (``tc_share``: one tensor core a sub-partition, fed by its own
  warps; the one-warp 64 x 64 blocks of a 512x512x4096 GEMM, one an SM, ran 47 us on the
  H100 where this term without the share said 17 (its calibration), bench/results/h100-2026-11-23b/gpu-tc-splitk.json);
- DRAM: the kernel's compulsory bytes (operands once, output once) over DRAM bandwidth;
- L2: every block's operand tiles (``(BM + BN) x K`` elements) over DRAM bandwidth
  x ``L2_PER_DRAM`` (a rough L2 figure until one is calibrated);
- shared: the ldmatrix reads (each warp's A and B fragments every 16 of K) over the
  shared-memory bandwidth (conflict-free layouts: search/banks.py).
plus every tile's epilogue (fragment stores, ``epilogue_s``, as wgmma's below),
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
describes (the measured gap is in bench/results/gpu-tc-h100.md): there mma.sync computes at
``MMA_SYNC_SM90`` of it.

wgmma (sm_90a) schedules take their own terms (``wgmma_time_s``, same shape): no ldmatrix,
the warpgroups' instructions read both operands from shared memory, residency from
registers and shared memory, and a per-step wait for the wgmma group unless one is kept in
flight (ir/lower_wgmma.wgmma_in_flight). Its fit to the H100 sweep: bench/wgmma_model_fit.py.
With a producer warp (warp specialization, a persistent kernel of one block an SM) a
step's serial part is only the warpgroup's drain, shared by the block's warpgroups, and a
tile's first loads overlap the previous tile (estimates). Every tile's epilogue (its output
stores: straight from the fragments, or through shared memory with a producer warp) idles
the tensor pipe (measured rates; resident blocks run in step, so theirs coincide). Element
copies (an NCHW convolution's operands: no 16-byte copy fits) bound a kernel at
``ELEMENT_COPY_RATE`` an SM, dearer where a warp's copies touch several 128-byte lines
(fitted on the H100's NCHW conv variants).
"""
from __future__ import annotations

import math

from ..ir import tensorcore as tcm
from ..ir import wgmma as wg

from .cost import NUMERIC

LATENCY_S = 600e-9     # global load -> shared, estimate (not calibrated)
L2_PER_DRAM = 4.0     # L2 / DRAM bandwidth, estimate: 2 is refuted on the H100 (ffn_down pulls 7.7 TB/s of tiles through L2)
# mma.sync's share of the datasheet tensor peak on sm_90 (which wgmma reaches), estimate: the
# best mma.sync GEMM measured on the H100 ran 372 TF/s, the best wgmma one 491 TF/s
MMA_SYNC_SM90 = 0.5
SUBPARTITIONS = 4      # per SM (sm_70+), each with its own tensor core and warp scheduler
OVERHEAD_REGS = 64     # addressing, loop state, epilogue temporaries (128x128x32 tile: 224 vs 217 compiled)


def tc_share(warps, B=NUMERIC):
    """The share of an SM's tensor-core rate that ``warps`` resident warps issuing mma can use:
    each of its ``SUBPARTITIONS`` has its own tensor core, fed only by the warps it holds (a
    warp stays on one), so one warp alone reaches a quarter of the SM. A wgmma warpgroup is
    4 warps, one a sub-partition: always the whole SM."""
    return B.min(float(SUBPARTITIONS), B.max(1.0, warps)) / SUBPARTITIONS


def registers(t: tcm.Tiles) -> int:
    """Estimated registers per thread: fp32 accumulators, fragments (32-bit), overhead."""
    return t.tm * t.tn // t.per + (t.tm // 16) * 4 + (t.tn // 16) * 4 + OVERHEAD_REGS


def resident_blocks(t: tcm.Tiles, machine) -> int:
    return machine.regs_per_sm // (t.threads * min(machine.max_regs_per_thread, registers(t)))


def time_s(kernel, s, machine) -> float:
    if wg.is_wgmma(s.tensor_core.instr): return wgmma_time_s(kernel, s, machine)
    return float(mma_time(NUMERIC, mma_facts(kernel, s, machine), machine))


def mma_facts(kernel, s, machine, ways: tuple[float, float] | None = None) -> dict[str, float]:
    """What the mma.sync model needs of schedule ``s``: counts read off its tiles, staging
    and the kernel (no lowering). ``ways``: the shared-memory wavefronts a warp-wide access
    of A and of B takes under the schedule's layouts (search/banks.ways; default counted)."""
    t = tcm.tiles(kernel, s, machine.warp)
    m = tcm.match_tc(kernel, s.tensor_core)
    if ways is None:
        from . import banks
        ways = banks.schedule_ways(kernel, s, machine.warp)
    return {"bm": t.bm, "bn": t.bn, "bk": t.bk, "tm": t.tm, "tn": t.tn, "warps": t.warps, "steps": t.steps,
            "blocks": s.blocks(), "resident": resident_blocks(t, machine), "stages": s.stages,
            "async": float(_async(s)), "eff_a": _sector_use(kernel, s, t, m.a), "eff_b": _sector_use(kernel, s, t, m.b),
            "ways_a": ways[0], "ways_b": ways[1],
            "out_bytes": float(kernel.output.dtype.itemsize), "min_bytes": float(kernel.min_bytes)}


def mma_time(B, f, machine):
    """Modeled seconds of an mma.sync schedule from its facts ``f`` (``mma_facts``), in the
    arithmetic ``B`` (floats, numpy arrays over a space, or Z3 terms: search/cost.py)."""
    cores = float(machine.cores)
    K = f["steps"] * f["bk"]         # the implicit GEMM's K: window points x K axis
    sm_rate = (machine.flops_tc_fp16 or 16 * machine.flops_fp32) / machine.cores
    if machine.sm >= 90: sm_rate *= MMA_SYNC_SM90
    per_sm = B.ceil(f["blocks"] / cores)  # the busiest SM's blocks
    r = B.max(1.0, B.min(per_sm, f["resident"]))  # of them resident at once
    step = 2.0 * f["bm"] * f["bn"] * f["bk"] / sm_rate     # padded tiles compute their padding too
    others = r - 1.0  # co-resident blocks fill the wait with their steps
    ahead = (f["stages"] - 1.0) * f["async"]    # element copies are synchronous: no step ahead
    # the wait is covered at the full rate's steps: a step slowed by idle sub-partitions would
    # cover more of it, and this stall (not a fixed point) would then drop by more than the
    # compute grows, modeling fewer usable tensor cores as faster
    exposed = B.max(0.0, LATENCY_S - (ahead + others * B.max(1.0, ahead + 1.0)) * step) * f["steps"]
    compute = per_sm * f["steps"] * step / tc_share(r * f["warps"], B)  # the rate the SM's resident warps can use
    # every tile's epilogue stores straight from the fragments (8 rows x 16 bytes a warp instruction,
    # as wgmma's): the attention-scores bmm (K = 64) ran 145 us where the DRAM bound is 56
    compute = compute + per_sm * _epilogue(B, f["bm"] * f["bn"] * f["out_bytes"], f["blocks"], cores, False)
    stall = per_sm * exposed  # on the critical path whatever bounds the rest
    dram = f["min_bytes"] / machine.dram_bw
    l2 = f["blocks"] * (f["bm"] / f["eff_a"] + f["bn"] / f["eff_b"]) * K * 2.0 / (L2_PER_DRAM * machine.dram_bw)
    # ldmatrix reads, each warp-wide access taking the wavefronts its layout's bank conflicts cost
    smem = f["blocks"] * (K / 16.0) * f["warps"] * (f["tm"] * f["ways_a"] + f["tn"] * f["ways_b"]) * 16.0 * 2.0 / \
        (machine.smem_bw or machine.dram_bw)
    return machine.launch_s + B.max(B.max(B.max(compute, dram), l2), smem) + stall


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


# ---- wgmma (sm_90a) --------------------------------------------------------------------
WG_OVERHEAD_REGS = 40  # addressing, loop state, epilogue (measured on the H100: 60..168 compiled = accumulators + 28..40)
WG_SYNC_S = 100e-9     # a step's end without a group in flight: the last wgmma's pipeline drains, fence, barrier (estimate)
SMEM_RESERVED = 1024   # bytes the driver keeps per resident block
L1_RESIDENT_BYTES = 96 << 10   # an operand this small stays in an SM's L1 beside the stages (estimate)
# element copies an SM makes a second: 9.6-10.2e9 in the NCHW ResNet conv's wgmma kernels with
# whole-row tiles on the H100 (7.9e9 with 8-pixel rows), bench/results/h100-2026-12-06 run 2
ELEMENT_COPY_RATE = 10e9
# output stores an SM makes while every SM stores: straight from the wgmma fragments (a warp
# instruction writes 8 rows x 16 bytes) and through the staged epilogue's shared tile (16-byte
# row pieces): 6.0-7.5 us and 1.0-1.2 us a 256x128 fp16 tile on the H100 (the cut-out epilogue
# of bench/ws_probe.py, bench/results/h100-2026-11-23d). Taken as chip-wide limits (x SMs)
# shared by the SMs that store (``epilogue_s``): not measured with fewer SMs storing.
EPI_DIRECT_BPS = 10e9
EPI_STAGED_BPS = 57e9


def epilogue_s(tile_bytes: int, blocks: int, cores: int, staged: bool) -> float:
    """Seconds an SM spends storing one output tile while ``min(blocks, cores)`` SMs store."""
    return float(_epilogue(NUMERIC, tile_bytes, blocks, cores, staged))


def _epilogue(B, tile_bytes, blocks, cores, staged: bool):
    return tile_bytes * B.min(blocks, float(cores)) / ((EPI_STAGED_BPS if staged else EPI_DIRECT_BPS) * cores)


def wgmma_registers(t: tcm.Tiles) -> int:
    """Registers per thread: a warpgroup's fp32 accumulators (its tile over 128 threads) + overhead."""
    return wg.groups(t).acc + WG_OVERHEAD_REGS


def wgmma_smem(kernel, s, t: tcm.Tiles) -> int:
    """Shared bytes of a block: ``stages`` x both operand tiles (1024-byte aligned stages) + the alignment slack."""
    m = tcm.match_tc(kernel, s.tensor_core)
    tile = sum(wg.stage_bytes(*tcm.tile_shape(op, outer, t.bk)) for op, outer in ((m.a, t.bm), (m.b, t.bn)))
    return tile * s.stages + wg.ATOM_ALIGN


def wgmma_resident(kernel, s, machine) -> int:
    """Blocks an SM holds: the least of the register, shared-memory and thread limits."""
    t = tcm.tiles(kernel, s, machine.warp)
    threads = s.threads(machine.warp)   # a producer warp's included
    regs = threads * min(machine.max_regs_per_thread, wgmma_registers(t))
    smem = wgmma_smem(kernel, s, t) + SMEM_RESERVED
    return max(1, min(machine.regs_per_sm // regs, (machine.smem_per_sm or smem) // smem,
                      (machine.max_threads_per_sm or threads) // threads))


def wgmma_time_s(kernel, s, machine) -> float:
    return float(wgmma_time(NUMERIC, wgmma_facts(kernel, s, machine), machine))


def wgmma_facts(kernel, s, machine) -> dict[str, float]:
    """What the wgmma model needs of schedule ``s``, counted from its tiles and staging."""
    from ..ir.lower_wgmma import wgmma_in_flight
    t = tcm.tiles(kernel, s, machine.warp)
    g = wg.groups(t)
    m = tcm.match_tc(kernel, s.tensor_core)
    vec = {x.input: x.vector for x in s.staging}
    ops = ((m.a, t.bm), (m.b, t.bn))
    ws = s.tensor_core.producer   # persistent: one block an SM walks its tiles (ir/lower_wgmma.py)
    # element copies (an NCHW conv's operands) take a load and a store an element: 8x the instructions
    copy_bytes = sum(outer * t.bk * 2 * tcm.UNIT / max(1, vec[op.input]) for op, outer in ops)
    # per operand: a block's tile bytes through L2 (element copies' wasted sectors counted), and
    # whether the operand is small enough to stay in an SM's L1 (read once an SM)
    small = [_bytes(kernel, op) <= L1_RESIDENT_BYTES for op, _ in ops]
    return {"bm": t.bm, "bn": t.bn, "bk": t.bk, "steps": t.steps, "blocks": s.blocks(), "ws": float(ws),
            "resident": wgmma_resident(kernel, s, machine), "groups": g.wgm * g.wgn, "mt": g.mt, "gn": g.n,
            "keep": float(wgmma_in_flight(s.stages, t.bk, g.wgm * g.wgn, any(x.tma for x in s.staging), ws)),
            "stages": s.stages, "async": float(_async(s)), "copy_bytes": copy_bytes,
            "epi_bytes": t.bm * t.bn * kernel.output.dtype.itemsize, "epi_staged": float(wg.staged_epilogue(kernel, s)),
            "tile_a": ops[0][1] * t.steps * t.bk * 2 / _sector_use(kernel, s, t, m.a),
            "tile_b": ops[1][1] * t.steps * t.bk * 2 / _sector_use(kernel, s, t, m.b),
            "once_a": float(_bytes(kernel, m.a)) if small[0] else -1.0,
            "once_b": float(_bytes(kernel, m.b)) if small[1] else -1.0,
            "elem": sum(outer * t.bk * _line_cost(kernel, s, t, op) for op, outer in ops if vec[op.input] == 1),
            "min_bytes": float(kernel.min_bytes)}


def wgmma_time(B, f, machine):
    """Modeled seconds of a wgmma schedule from its facts ``f`` (``wgmma_facts``), in the
    arithmetic ``B`` (floats, numpy arrays, Z3 terms)."""
    cores = float(machine.cores)
    sm_smem = (machine.smem_bw or machine.dram_bw) / machine.cores
    per_sm = B.ceil(f["blocks"] / cores)                         # the busiest SM's blocks (tiles)
    ws = f["ws"]
    # of them resident at once (a producer warp's persistent kernel: one)
    r = B.select_le(ws, 0.0, B.max(1.0, B.min(per_sm, f["resident"])), 1.0)
    # tensor pipe: a block's K step at the SM's share of the datasheet peak (padding computed too)
    step = 2.0 * f["bm"] * f["bn"] * f["bk"] / ((machine.flops_tc_fp16 or 16 * machine.flops_fp32) / machine.cores)
    # a step without a group in flight waits for its wgmmas, then issues the next tile's
    # cp.async copies (their shared-memory writes) before the next barrier: serial to the
    # tensor pipe in that block; with a group in flight both overlap the group. With a producer
    # warp: no copies and no block barrier in a consumer's step; each warpgroup's drain is
    # overlapped by the block's other warpgroups' wgmmas
    serial = B.select_le(ws, 0.0, (1.0 - f["keep"]) * (WG_SYNC_S + f["copy_bytes"] / sm_smem), WG_SYNC_S / f["groups"])
    # global load latency the copies running ``ahead`` tiles ahead do not hide
    ahead = B.max(0.0, f["stages"] - 1.0 - f["keep"]) * f["async"]
    cycle = step + serial
    # (element copies' waits are in their measured rate, ``ELEMENT_COPY_RATE``, below)
    cycle = cycle + f["async"] * B.max(0.0, LATENCY_S - ahead * cycle)
    # the SM's tensor pipe: r resident blocks overlap each other's serial parts and waits;
    # each block also waits once for its first tiles and its epilogue (LATENCY), overlapped likewise;
    # the epilogue idles the tensor pipe: an SM's resident blocks run their tiles in step,
    # so they store at the same time (no overlap counted)
    epi = f["epi_bytes"] * B.min(f["blocks"], cores) / \
        (B.select_le(f["epi_staged"], 0.0, EPI_DIRECT_BPS, EPI_STAGED_BPS) * cores)
    # a producer warp's kernel waits once for the first tiles; the others overlap the previous tile
    core = per_sm * (f["steps"] * B.max(step, cycle / r) + epi + (1.0 - ws) * 2.0 * LATENCY_S / r) + ws * 2.0 * LATENCY_S
    # shared memory: every m64 tile's wgmma reads its 64 A rows and the warpgroup's N
    # columns of B (16 deep, no ldmatrix), and the copies write both tiles once
    smem = per_sm * f["steps"] * (f["groups"] * f["mt"] * (wg.WG_M + f["gn"]) + f["bm"] + f["bn"]) * f["bk"] * 2.0 / sm_smem
    # global: compulsory bytes from DRAM; every block's operand tiles (BM + BN) x K from L2,
    # element copies' wasted sectors counted (as mma.sync's); an operand small enough to stay in
    # an SM's L1 (an NCHW conv's filter: 73 KB) is read once an SM
    dram = f["min_bytes"] / machine.dram_bw
    l2 = 0.0
    for tile, once in ((f["tile_a"], f["once_a"]), (f["tile_b"], f["once_b"])):
        l2 = l2 + B.select_le(once, -1.0, f["blocks"] * tile, B.min(f["blocks"] * tile, once * B.min(f["blocks"], cores)))
    l2 = l2 / (L2_PER_DRAM * machine.dram_bw)
    # element copies (no 16-byte copy fits: an NCHW conv's operands) issue one load and one
    # store an element: an SM moves about ELEMENT_COPY_RATE of them a second
    elem = per_sm * f["steps"] * f["elem"]
    return machine.launch_s + B.max(B.max(B.max(B.max(core, smem), dram), l2), elem / ELEMENT_COPY_RATE)


def _bytes(kernel, op) -> int:
    """Bytes of the input an operand reads (16-bit elements)."""
    return kernel.inputs[op.input].size * 2


LINE_COST = 0.12   # an element copy's extra cost per further 128-byte line its warp instruction touches (fitted: run 2)


def _line_cost(kernel, s, t: tcm.Tiles, op) -> float:
    """Relative cost of an element copy of ``op``: a warp's copies (``t.per`` lanes) run along ``lanes x
    sector use / 2`` contiguous elements (``_sector_use``), touching one 128-byte line per
    run; an operand small enough to stay in L1 costs 1 (its lines are hits)."""
    if _bytes(kernel, op) <= L1_RESIDENT_BYTES: return 1.0
    run = max(1, round(_sector_use(kernel, s, t, op) * 16))
    return 1 + LINE_COST * (max(1, t.per // run) - 1)


def fit_rate(kernel, s, machine, measured_s: float) -> float:
    """The tensor-core rate (``machine.flops_tc_fp16``) under which this model times schedule
    ``s`` of ``kernel`` at ``measured_s``: calibration measures a GEMM whole, epilogue and
    pipeline waits included, and the model adds those on top of the rate it is given. The
    kernel's achieved rate where even a rate 8x higher is not fast enough (another bound)."""
    from dataclasses import replace
    achieved = kernel.flops / measured_s
    lo, hi = achieved, 8 * achieved
    if time_s(kernel, s, replace(machine, flops_tc_fp16=hi)) > measured_s: return achieved
    for _ in range(60):   # time_s falls as the rate grows: bisect
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if time_s(kernel, s, replace(machine, flops_tc_fp16=mid)) > measured_s else (lo, mid)
    return hi
