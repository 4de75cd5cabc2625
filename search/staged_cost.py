"""Modeled time of a staged SIMT GEMM schedule: fp32 through shared memory, no tensor core
(ir/lower_staged.py). Numeric; ``cost.modeled_time`` routes such schedules here (the Z3
space does not hold them).

An SM's four schedulers each issue one warp instruction a cycle, and an fp32 FFMA warp
instruction (an FMA a lane) takes one of those slots: the SM issues warp instructions at the FFMA
rate, ``flops_fp32 / (2 x warp)`` over the SMs. A block's K step costs every warp its FFMAs
(tm x tn x bk), its 16-byte shared reads (``lds``), its copies and the step's fixed
instructions (wait, barrier, loop, stage offsets); ``ISSUE_EFF`` of the issue rate is what
compiled loops sustain. Per SM (the busiest gets ceil(blocks / SMs) blocks), the resident
blocks (registers, shared memory, threads) share the issue slots; they start together and
do the same work, so they run in lockstep rounds: a round of ``r`` blocks takes ``r`` blocks'
issue plus what none of them can fill: the first tiles' load latency, the output tile's
store at the SM's share of DRAM bandwidth, and per K step the global latency the stages
ahead do not cover and, for a lone block, the barrier's shared-read latency. Many small
resident blocks thus hide a short-K GEMM's epilogue that one large block cannot.
T = launch + max(that SM time, shared wavefronts, L2 tile traffic, DRAM compulsory bytes).

Instruction counts follow the lowering and were compared with ptxas (CUDA 13.0, sm_90) on
the STAGED_TILES variants of matmul 2048^3 and the attention-scores bmm: FFMAs exact, a K
step's total within 9 (1.5%). Registers are an estimate: right for the matmul tiles (89-128
compiled), but the bmm's 128x128 tiles compiled to 128 (bk 8: two blocks an SM, modeled one)
and 246-252 (bk 16). ``ISSUE_EFF`` is fitted to the H100 timings of those variants
(bench/results/h100-2026-11-23b/gpu-staged.json): in-sample. Not modeled: the 8x4 thread
tile ran 2-8% faster than the 8x8 ones on the large GEMMs with more instructions a FMA.
"""
from __future__ import annotations

import math

from ..ir import geometry_staged
from ..ir import tensorcore as tcm

from .cost import NUMERIC
from .tc_cost import L2_PER_DRAM, LATENCY_S

# issued / peak warp instructions a cycle that the compiled staged loops sustain on the H100: the
# median over the 28 variants of the four large fp32 GEMMs (0.73-0.83, instructions counted as
# below), fitted to the timings it is judged on (in-sample)
ISSUE_EFF = 0.76
STEP_OPS = 20          # per K step and warp: cp.async wait and commit, barrier, loop, stage offsets (ptxas: 20-24)
COPY_OPS = 4           # per copy: the cp.async and its address arithmetic
MOD_OPS = 16           # stage offsets modulo a stage count that is not a power of two (ptxas: +11..20)
SWIZZLE_OPS = 2        # address XOR of a shared read from a swizzled tile
OVERHEAD_REGS = 24     # addressing and loop state over accumulators + fragments (ptxas: 89-128 for 8x4, 8x8 tiles)
LDS_CYCLES = 33        # shared-read latency a lone block waits after each barrier (cycles)
WAVEFRONT = 128        # bytes of shared memory an SM reads a cycle (32 banks x 4 bytes)


def registers(t: tcm.Tiles, vk: int, a_run: bool, b_run: bool) -> int:
    """Estimated registers per thread: accumulators, both operands' fragments, overhead."""
    return t.tm * t.tn + t.tm * (vk if a_run else 1) + t.tn * (vk if b_run else 1) + OVERHEAD_REGS


def _shape(kernel, s):
    m = geometry_staged.match(kernel)
    t = geometry_staged.tiles(kernel, s, m)
    vm, vn, vk = geometry_staged.strips(m, t)
    return m, t, vm, vn, vk, not m.a.k_major and vk > 1, not m.b.k_major and vk > 1


def resident_blocks(kernel, s, machine) -> int:
    """Blocks an SM holds: the least of the register (8-register granules), shared-memory,
    thread and block limits."""
    m, t, vm, vn, vk, a_run, b_run = _shape(kernel, s)
    regs = min(machine.max_regs_per_thread, -(-registers(t, vk, a_run, b_run) // 8) * 8)
    smem = sum(geometry_staged.smem_elems(kernel, s, m, t).values()) * m.dtype.itemsize * s.stages
    return max(1, min(machine.regs_per_sm // (regs * t.threads), machine.smem_per_sm // max(1, smem),
                      machine.max_threads_per_sm // t.threads, machine.max_blocks_per_sm))


def _shared_reads(t: tcm.Tiles, vm: int, vn: int, vk: int, a_run: bool, b_run: bool) -> tuple[float, float]:
    """A thread's 16-byte shared reads of A and of B in one K step."""
    return t.tm * t.bk / (vm * (vk if a_run else 1)), t.tn * t.bk / (vn * (vk if b_run else 1))


def step_instructions(kernel, s) -> tuple[float, float]:
    """(all, shared reads) warp instructions of one warp's K step."""
    m, t, vm, vn, vk, a_run, b_run = _shape(kernel, s)
    st = {x.input: x for x in s.staging}
    lds_a, lds_b = _shared_reads(t, vm, vn, vk, a_run, b_run)
    copies = sum(r * w / st[op.input].vector for op, r, w in
                 ((m.a, *tcm.tile_shape(m.a, t.bm, t.bk)), (m.b, *tcm.tile_shape(m.b, t.bn, t.bk)))) / t.threads
    swz = lds_a * bool(st[m.a.input].swizzle) + lds_b * bool(st[m.b.input].swizzle)
    mod = MOD_OPS if s.stages & (s.stages - 1) else 0
    return t.tm * t.tn * t.bk + lds_a + lds_b + copies * COPY_OPS + STEP_OPS + mod + swz * SWIZZLE_OPS, lds_a + lds_b


def _wavefronts(kernel, s, warp: int) -> float:
    """Shared-memory wavefronts of one block's K step: every warp's reads (the distinct bytes
    its threads ask for, a broadcast counted once: an A read differs by thread row, a B read
    by thread column) and the copies' writes."""
    m, t, vm, vn, vk, a_run, b_run = _shape(kernel, s)
    size = m.dtype.itemsize
    lds_a, lds_b = _shared_reads(t, vm, vn, vk, a_run, b_run)
    rows, cols = max(1, min(t.wm, warp // t.wn)), min(t.wn, warp)   # a warp's distinct thread rows / columns
    width_a, width_b = size * max(vm, vk if a_run else 1), size * max(vn, vk if b_run else 1)
    per_warp = lds_a * math.ceil(rows * width_a / WAVEFRONT) + lds_b * math.ceil(cols * width_b / WAVEFRONT)
    return max(1, t.threads // warp) * per_warp + (t.bm + t.bn) * t.bk * size / WAVEFRONT


def time_s(kernel, s, machine) -> float:
    return float(staged_time(NUMERIC, staged_facts(kernel, s, machine), machine))


def staged_facts(kernel, s, machine) -> dict[str, float]:
    """What the staged model needs of schedule ``s``: counts of its tiles (no lowering)."""
    m, t, *_ = _shape(kernel, s)
    instrs, _ = step_instructions(kernel, s)
    return {"warps": max(1, t.threads // machine.warp), "instrs": instrs, "blocks": s.blocks(),
            "resident": resident_blocks(kernel, s, machine), "stages": s.stages, "steps": t.steps,
            "tile_bytes": t.bm * t.bn * kernel.output.dtype.itemsize, "wavefronts": _wavefronts(kernel, s, machine.warp),
            "panel_bytes": (t.bm + t.bn) * t.bk * m.dtype.itemsize, "min_bytes": float(kernel.min_bytes)}


def staged_time(B, f, machine):
    """Modeled seconds of a staged SIMT schedule from its facts ``f`` (``staged_facts``), in
    the arithmetic ``B`` (floats, numpy arrays, Z3 terms)."""
    cores = float(machine.cores)
    issue = machine.flops_fp32 / (2 * machine.warp * machine.cores) * ISSUE_EFF   # warp instructions a second per SM
    step = f["warps"] * f["instrs"] / issue             # one block's K step, alone on its SM
    per_sm = B.ceil(f["blocks"] / cores)                # the busiest SM's blocks
    r = B.min(per_sm, f["resident"])
    rounds = B.ceil(per_sm / r)
    clock = machine.sm_clock()
    # per K step of a round: global latency the copies ``ahead`` steps early do not cover (the
    # round's r blocks issue meanwhile), and a lone block's shared-read latency after its barrier
    ahead = f["stages"] - 1.0
    wait = B.max(0.0, LATENCY_S - ahead * r * step) + B.select_le(r, 1.0, LDS_CYCLES / clock, 0.0)
    exposed = LATENCY_S + f["tile_bytes"] / (machine.dram_bw / machine.cores) + f["steps"] * wait
    core = per_sm * f["steps"] * step + rounds * exposed
    smem = per_sm * f["steps"] * f["wavefronts"] * WAVEFRONT / ((machine.smem_bw or machine.dram_bw) / machine.cores)
    l2 = f["blocks"] * f["panel_bytes"] * f["steps"] / (L2_PER_DRAM * machine.dram_bw)
    dram = f["min_bytes"] / machine.dram_bw
    return machine.launch_s + B.max(B.max(B.max(core, smem), l2), dram)
