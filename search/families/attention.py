"""Fused attention (``ir/attention.py``) with mma.sync or wgmma: the schedule family ``attention``.

Space: ``block_m`` (query rows a block: 16 or 32 a warp), ``block_n`` (keys a tile), ``warps``,
``stages`` (1: synchronous K/V copies, 2-3: cp.async pipeline). Legality: the lowering's own
analytic counts (``ir/attention_lower.check``: shared memory, registers a thread, tile and
copy divisibility, 16-byte aligned rows). Registers a thread are ``attention_lower.registers``
(live fragments plus ptxas's allowance, fitted to ptxas -v: a point over 255 would spill and is
refused); the blocks an SM holds by them (``blocks_by_registers``: 256-register warp
allocation) bound ``resident`` with shared memory and threads. ``wgmma`` (1; absent: 0) runs
both products as Hopper warpgroup MMAs from shared memory (Q, K, V in the descriptors'
swizzled panels, P written to shared memory by the softmax) instead of mma.sync from
registers: whole warpgroups of 64 rows, 64-wide panels (TMA copies and a producer warp are a
later variant).

``solve`` evaluates the whole space at once (numpy) and poses the same formula to Z3, whose
optimum must agree (the space is small enough to cover: the optimum is proved under the model;
Z3 descends by satisfiability checks, each bounding the next below the model it found).

Cost (``attention_time``, one formula in the generic arithmetic of search/cost.py: floats,
numpy arrays over the whole space, Z3 terms): per SM, its blocks (waves over the SMs, at most
``resident`` at once by registers, shared memory and threads) each run the key tiles the
logit's band lets it see (``KeyBand`` of ir/attention.py: all ``sk / block_n`` without one;
about half under a causal mask, those above the diagonal neither loaded nor computed: the
mean over the query tiles, and at least the heaviest block's count on one SM), each tile
  - tensor work: 2 block_m x block_n x (d + dv) flops at the mma.sync rate (tc_cost's sm_90
    share of the tensor peak) or wgmma's (the whole peak), of which the SM's resident warps use
    tc_share;
  - softmax work: per score element the logit, two exponentials (``OP_WEIGHT``), max, sum and
    the rescale of the accumulator rows, at the fp32 lane rate; the band's comparisons only on
    the tiles its edges cross;
  - the exposed copy latency of a tile (tc_cost.LATENCY_S) not covered by the stages ahead
    and the other resident blocks, and three block-wide barriers;
against DRAM (compulsory bytes), L2 (K and V re-read by every query block) and shared memory
(mma.sync: every warp reads the whole K and V tile through ldmatrix; wgmma: each warpgroup
reads its Q rows, K and V, and writes and reads its P rows; the padded and swizzled layouts
are conflict free, so one wavefront per 128 bytes).
Time = launch + max(compute, DRAM, L2, shared) + stall.
The hand rule: 64 query rows (4 warps of 16), 64-key tiles, 2 stages — FlashAttention-2's
forward tile for head dim 64 and 128 on sm_80+.
"""
from __future__ import annotations

import itertools
import time as _time
from typing import Iterable

import numpy as np

from ...ir import attention_lower as al
from ...ir.node import Ops
from ...ir.schedule import Schedule

from ..cost import NUMERIC, OP_WEIGHT
from ..exhaustive import VECTOR
from ..tc_cost import L2_PER_DRAM, LATENCY_S, MMA_SYNC_SM90, tc_share
from . import Candidate, Solved

BLOCK_M, BLOCK_N, WARPS, STAGES = (16, 32, 64, 128), (16, 32, 64, 128), (1, 2, 4, 8), (1, 2, 3)
WGMMA = (0, 1)           # the two products by mma.sync (Q, P in registers) or by wgmma (Q, P in shared memory)
BARRIER_S = 40e-9        # one block-wide barrier with its pipeline drain, estimate (not calibrated)
HAND = {"block_m": 64, "block_n": 64, "warps": 4, "stages": 2}


def schedule_of(p: dict[str, int]) -> Schedule:
    return Schedule((), family="attention", params=tuple(p.items()))


def facts(kernel, p: dict[str, int], machine) -> dict[str, float]:
    """What ``attention_time`` needs of parameters ``p`` (counts, no lowering)."""
    g = kernel.geometry
    threads = 32 * p["warps"]
    regs = al.registers(g, p)
    smem = al.shared_bytes(g, p)
    resident = min(al.blocks_by_registers(regs, p["warps"], machine), machine.smem_per_sm // max(1, smem),
                   machine.max_threads_per_sm // threads, machine.max_blocks_per_sm)
    ranges = al.tile_ranges(g, p)
    visits = [hi - lo for lo, _, _, hi in ranges]
    masked = [(full_lo - lo) + (hi - full_hi) for lo, full_lo, full_hi, hi in ranges]
    inside = _elementwise_ops(g.band.inside)
    return {"bm": float(p["block_m"]), "bn": float(p["block_n"]), "warps": float(p["warps"]),
            "stages": float(p["stages"]), "blocks": float(g.heads * (g.sq // p["block_m"])),
            "visits": float(np.mean(visits)), "max_visits": float(max(visits)), "masked": float(np.mean(masked)),
            "d": float(g.d), "dv": float(g.dv),
            "resident": float(max(1, resident)), "elem_ops": float(inside + 2 * OP_WEIGHT[Ops.EXP2] + 4),
            "mask_ops": float(_elementwise_ops(g.logit) - inside),
            "wgmma": float(p.get("wgmma", 0)), "regs": float(regs), "min_bytes": float(kernel.min_bytes), "itemsize": float(kernel.inputs[g.slots[0]].dtype.itemsize)}


def _elementwise_ops(logit) -> int:
    """Float and comparison operations of a logit expression, per score element."""
    return sum(1 for n in logit.toposort() if n.op not in (Ops.CONST, Ops.REG, Ops.LOAD, Ops.VAR)
               and (n.dtype.is_float or n.dtype.kind == "b"))


def attention_time(B, f: dict, machine):
    """Modeled seconds (see the module docstring) in arithmetic ``B``."""
    cores = float(machine.cores)
    tc_rate = (machine.flops_tc_fp16 or 16 * machine.flops_fp32) / machine.cores
    if machine.sm >= 90: tc_rate = tc_rate * (MMA_SYNC_SM90 + f["wgmma"] * (1.0 - MMA_SYNC_SM90))   # wgmma: the whole peak
    fp_rate = machine.flops_fp32 / machine.cores
    per_sm = B.ceil(f["blocks"] / cores)
    r = B.max(1.0, B.min(per_sm, f["resident"]))
    mma = 2.0 * f["bm"] * f["bn"] * (f["d"] + f["dv"]) / tc_rate
    soft = f["bm"] * f["bn"] * f["elem_ops"] / fp_rate + f["bm"] * f["dv"] * 2.0 / fp_rate
    step = mma / tc_share(r * f["warps"], B) + soft
    ahead = f["stages"] - 1.0
    exposed = B.max(0.0, LATENCY_S - (ahead + (r - 1.0) * B.max(1.0, ahead + 1.0)) * step)
    tiles = B.max(per_sm * f["visits"], f["max_visits"])    # key tiles an SM runs (the heaviest block at least)
    mask = per_sm * f["masked"] * f["bm"] * f["bn"] * f["mask_ops"] / fp_rate   # the band's edge tiles evaluate the mask
    compute = tiles * (step + 3.0 * BARRIER_S / r) + mask
    stall = tiles * exposed
    dram = f["min_bytes"] / machine.dram_bw
    kv = f["blocks"] * f["visits"] * f["bn"] * (f["d"] + f["dv"]) * f["itemsize"]
    l2 = kv / (L2_PER_DRAM * machine.dram_bw)
    # shared reads a tile: mma.sync, every warp reads all of K and V (ldmatrix); wgmma, each
    # warpgroup reads its Q rows, K and V, and writes and reads its P rows
    tile_el = f["bn"] * (f["d"] + f["dv"])
    wg_el = f["bm"] * f["d"] + f["warps"] / 4.0 * tile_el + 2.0 * f["bm"] * f["bn"]
    per_tile = tile_el * f["warps"] + f["wgmma"] * (wg_el - tile_el * f["warps"])
    smem = f["blocks"] * f["visits"] * per_tile * f["itemsize"] / (machine.smem_bw or machine.dram_bw)
    return machine.launch_s + B.max(B.max(B.max(compute, dram), l2), smem) + stall


def z3_optimum(kernel, points: list[dict[str, int]], machine, timeout_s: float) -> tuple[int, float] | None:
    """The point index minimizing ``attention_time`` posed to Z3 (each fact a finite choice
    over the points, the formula evaluated as Z3 terms), and its modeled seconds; None when
    Z3 gives no answer in ``timeout_s``. Descent by satisfiability: each model found bounds the
    next check strictly below its time, until none is (unsat: the optimum is proved). Each
    check takes milliseconds where ``z3.Optimize`` on the same terms ran past a minute."""
    import z3
    from ..z3opt import Model, Sym, Z3Ops
    deadline = _time.monotonic() + timeout_s
    m = Model()
    pick = z3.Int("point", m.ctx)
    fs = [facts(kernel, p, machine) for p in points]
    conds = [pick == i for i in range(len(points))]
    t = attention_time(Z3Ops(m), {k: Sym.choice(m, [(f[k], c) for f, c in zip(fs, conds)]) for k in fs[0]}, machine)
    sol = z3.Solver(ctx=m.ctx)
    sol.add(z3.Or(*conds), *m.side)
    best: tuple[int, float] | None = None
    while (left := deadline - _time.monotonic()) > 0:
        sol.set(timeout=max(1, int(left * 1000)))
        got = sol.check()
        if got == z3.unsat: return best
        if got != z3.sat: return None
        i = sol.model().eval(pick).as_long()
        best = (i, float(attention_time(NUMERIC, fs[i], machine)))
        sol.add(t.real() < m.q(best[1] * (1 - 1e-12)))
    return None


class Attention:
    name = "attention"

    def applies(self, kernel, machine) -> bool:
        return getattr(kernel, "kind", "") == "attention" and machine.has("mma.sync") and machine.is_simt

    def points(self, kernel, machine) -> list[dict[str, int]]:
        """Every legal parameter point."""
        out = []
        for bm, bn, w, st, wgm in itertools.product(BLOCK_M, BLOCK_N, WARPS, STAGES, WGMMA):
            p = {"block_m": bm, "block_n": bn, "warps": w, "stages": st, **({"wgmma": 1} if wgm else {})}
            if not al.check(kernel, p, machine): out.append(p)
        return out

    def space(self, kernel, machine) -> Iterable[Schedule]:
        if not self.applies(kernel, machine): return iter(())
        return (schedule_of(p) for p in self.points(kernel, machine))

    def legal(self, kernel, schedule: Schedule, machine) -> list[str]:
        if schedule.family != "attention": return ["attention: not an attention schedule"]
        if getattr(kernel, "kind", "") != "attention": return ["attention: not an attention kernel"]
        try:
            p = al.params_of(schedule)
        except KeyError as e:
            return [f"attention: {e.args[0]}"]
        return [f"attention: {e}" for e in al.check(kernel, p, machine)]

    def cost(self, kernel, schedule: Schedule, machine) -> float:
        return float(attention_time(NUMERIC, facts(kernel, al.params_of(schedule), machine), machine))

    def hand(self, kernel, machine) -> Schedule | None:
        if not self.applies(kernel, machine): return None
        for bn in (64, 32, 16):   # FA2's tile, smaller key tiles where 64 does not divide or fit
            p = dict(HAND, block_n=bn)
            if not al.check(kernel, p, machine): return schedule_of(p)
        return None

    def solve(self, kernel, machine, timeout_s: float, top: int = 4) -> Solved:
        """The whole space evaluated at once (numpy arrays through the same formula), best first."""
        t0 = _time.monotonic()
        pts = self.points(kernel, machine) if self.applies(kernel, machine) else []
        if not pts: return Solved(self.name, [], "enumeration", False, None, _time.monotonic() - t0, {"points": 0})
        fs = [facts(kernel, p, machine) for p in pts]
        cols = {k: np.array([f[k] for f in fs]) for k in fs[0]}
        t = np.asarray(attention_time(VECTOR, cols, machine), dtype=float)
        order = np.lexsort((np.arange(len(pts)), t))
        cands = [Candidate(schedule_of(pts[i]), float(t[i])) for i in order[:top]]
        # Z3 on the same formula: its optimum must be the enumeration's (ties keep the enumeration's order)
        z = z3_optimum(kernel, pts, machine, max(0.5, timeout_s - (_time.monotonic() - t0)))
        proved = z is not None and abs(z[1] - cands[0].modeled_s) <= 1e-12 * cands[0].modeled_s
        return Solved(self.name, cands, "z3" if proved else "enumeration", True, None, _time.monotonic() - t0,
                      {"points": len(pts), "z3_point": None if z is None else pts[z[0]], "z3_agrees": proved})


FAMILY = Attention()
