"""The packed CPU GEMM family (``cpu_gemm``; template ir/cpu_gemm.py, C in backends/cpu/gemm.py).

Decisions: the register tile MR x NR, the cache blocks MC, KC, NC, the prefetch distance
PF and the workers. The space comes from the host's cache sizes (sysfs) and ISA (vector
width, registers). The cost model prices one call as

    max(FMA time of the padded tiles at the micro-kernel's efficiency,
        bytes each cache level serves / its bandwidth)
    + bytes packed / the packing bandwidth + waits between blocks

per worker (the busiest one: MC blocks go to workers as they come free, ceil(blocks /
workers) of them on even cores). Bytes per level after reuse (BLIS analysis): the KC x NR
micro-panel of B is reused from L1 across the MR rows, the MC x KC block of A from L2
across the NC/NR micro-panels, the KC x NC panel of B from L3 (L2 where it fits its share
there) across the MC blocks; each operand is read from memory and packed once per outer
block, C is read and written once per KC step. A block that overflows its level is served
by the next one. The micro-kernel's efficiency: MR*NR/V FMAs a k step against NR/V loads
and MR broadcasts (load ports), the FMA latency hidden only with enough independent
accumulators, a spill penalty past the registers the compiler keeps, and stalls where the B
micro-panel overflows L1 and the B panel its share of L2.
``MODEL`` holds the constants (cycles, ports, bandwidths in bytes a cycle); ``superopt
calibrate`` fits some of them to timed GEMMs and ``constants(machine)`` applies that fit.

``solve`` enumerates the whole space under the model (proved optimal under it); ``hand``
is the textbook blocking (BLIS-like: the largest tile that fits, KC from L1, MC from L2).
"""
from __future__ import annotations

import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from ...ir import cpu_gemm as tpl
from ...ir.kernel import Kernel
from ...ir.schedule import Level, Schedule, Split

from . import Candidate, Solved

MODEL = {
    "fma_ports": 2.0,        # vector FMAs a cycle
    "fma_latency": 6.0,      # cycles a k step takes at least (each accumulator's FMA chain, with issue slack)
    "step_overhead": 1.0,    # cycles a k step adds past its FMAs (the loop's pointer and counter updates; measured,
                             # 1000^3 2 workers: an 8 x 32 tile 6% faster than 6 x 32, which the model priced alike)
    "load_ports": 2.0,       # vector loads / broadcasts a cycle
    "spill_regs": 20,        # accumulators + B row beyond this: the compiler's allocation degrades
    "spill_cost": 0.08,      # fraction of time lost per register past spill_regs
    "l2_bw": 64.0,           # bytes a cycle per core from L2
    "l3_bw": 24.0,           # bytes a cycle per core from L3
    "barrier_s": 2e-6,       # one barrier between workers
    "panel_stall": 0.1,      # fraction of FMA time lost where the KC x NC panel of B overflows its share of L2
                             # (its micro-panels then come from L3 into the micro-kernel; measured on a 2-core
                             # AVX-512 host with 2 MB L2s, CPU time: 1024^3 2 workers KC 256 NC 1024 (a 1 MB panel)
                             # 6% faster than KC 384 (1.5 MB), 15% than KC 512 (2 MB); 2048^3 1 worker NC 1024
                             # 7-9% faster than KC 192 NC 2048 (1.5 MB) and KC 256 NC 2048 (2 MB))
    "micro_stall": 0.05,     # fraction of FMA time lost where the KC x NR micro-panel of B and the A one overflow
                             # L1 (its loads then come from L2; measured, CPU time: 512^3 2 workers KC 256 (40 KB)
                             # 5% faster than KC 512 (80 KB) on a 48 KB L1)
    "pack_bw": 10.0,         # bytes a cycle per core a packing copy moves (read + written; sources mostly from L3)
    "fill": 0.5,             # fraction of a cache level a block may use
    "overlap": 0.75,         # fraction of the shorter of compute and cache traffic hidden under the longer
    "fma_eff": 1.0,          # fraction of the port-bound FMA rate the compiled micro-kernel reaches
}
FITTED = "cpu_gemm_model"    # the key of ``superopt calibrate``'s fit of MODEL in the target's notes


def constants(machine) -> dict[str, float]:
    """MODEL with the numbers ``superopt calibrate`` fitted on this machine, where present."""
    fit = (getattr(machine, "notes", None) or {}).get(FITTED) or {}
    return {**MODEL, **{k: float(v) for k, v in fit.items() if k in MODEL}}
CACHE_DEFAULT = {1: 32 << 10, 2: 1 << 20, 3: 16 << 20}


@lru_cache(maxsize=1)
def caches() -> dict[int, int]:
    """Data/unified cache bytes per level of cpu0 (sysfs), defaults where absent."""
    out = dict(CACHE_DEFAULT)
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")) if base.exists() else []:
        try:
            kind, level, size = ((d / f).read_text().strip() for f in ("type", "level", "size"))
        except OSError:
            continue
        if kind in ("Data", "Unified") and size[:-1].isdigit():
            out[int(level)] = int(size[:-1]) << {"K": 10, "M": 20, "G": 30}.get(size[-1], 0)
    return out


def _clock(machine) -> float:
    """Cycles a second implied by the machine's fp32 peak (cores x ports x lanes x 2 flops)."""
    lanes, _ = tpl.registers(machine)
    return machine.flops_fp32 / max(1, machine.cores) / (MODEL["fma_ports"] * lanes * 2)


def _splits(kernel: Kernel) -> tuple:
    return tuple((Split(Level.LOOP, ax.size),) for ax in kernel.axes)


def schedule(kernel: Kernel, family: str = "cpu_gemm", **params: int) -> Schedule:
    return Schedule(_splits(kernel), family=family, params=tuple(params.items()))


def _round(x: int, q: int) -> int: return max(q, (x // q) * q)


class CPUGemm:
    name = "cpu_gemm"
    template = tpl  # matcher + check: a subclass over another template (cpu_conv) reuses space, cost, solve

    def applies(self, kernel: Kernel, machine) -> bool:
        return machine.has("threads") and isinstance(self.template.match(kernel), dict)

    def tiles(self, machine) -> list[tuple[int, int]]:
        lanes, regs = tpl.registers(machine)
        return [(mr, nr) for nr in (lanes, 2 * lanes, 3 * lanes, 4 * lanes) for mr in (2, 4, 6, 8, 10, 12, 14, 16, 24)
                if mr * (nr // lanes) + nr // lanes + 1 <= regs]

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        g = self.template.match(kernel)
        if isinstance(g, str): return
        lanes, _ = tpl.registers(machine)
        for mr, nr in self.tiles(machine):
            for mc in sorted({_round(x, mr) for x in (48, 64, 96, 128, 192, 256, 384)}):
                for kc in self.kcs(g, machine):
                    for nc in sorted({_round(x, nr) for x in (256, 512, 1024, 2048, 4096)} | {-(-g["n"] // nr) * nr}):
                        if nc > 4 * max(g["n"], nr) and nc > 256: continue  # past the edge: the same as the smallest covering NC
                        for pf in (0, 8):
                            for w in range(1, max(1, machine.cores) + 1):
                                yield schedule(kernel, family=self.name, MR=mr, NR=nr, V=lanes, MC=mc, KC=kc, NC=nc, PF=pf, workers=w)

    def kcs(self, g: dict[str, int], machine) -> tuple[int, ...]:
        """The KC blocks tried."""
        return (128, 192, 256, 384, 512)

    def model_geometry(self, g: dict[str, int], machine) -> dict[str, int]:
        """The m, n, k, batch the cost model prices (k: the micro-kernel's steps)."""
        return g

    def legal(self, kernel: Kernel, schedule: Schedule, machine) -> list[str]:
        g = self.template.match(kernel)
        if isinstance(g, str): return [g]
        if schedule.family != self.name: return [f"not a {self.name} schedule"]
        return self.template.check(g, dict(schedule.params), machine)

    def cost(self, kernel: Kernel, schedule: Schedule, machine) -> float:
        g = self.template.match(kernel)
        if isinstance(g, str): raise ValueError(g)
        return model(self.model_geometry(g, machine), dict(schedule.params), machine)

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        g = self.template.match(kernel)
        if isinstance(g, str): return None
        lanes, _ = tpl.registers(machine)
        c = caches()
        nr = 2 * lanes
        mr = max(m for m, n in self.tiles(machine) if n == nr and m * 2 + 3 <= MODEL["spill_regs"])
        kc = _round(min(512, c[1] // 2 // (4 * nr)), 16)            # the B micro-panel fills half of L1
        mc = _round(min(384, c[2] // 2 // (4 * kc)), mr)            # the A block half of L2
        nc = _round(min(4096, c[3] // 2 // (4 * kc)), nr)           # the B panel half of L3
        return schedule(kernel, family=self.name, MR=mr, NR=nr, V=lanes, MC=mc, KC=kc, NC=nc, PF=0, workers=max(1, machine.cores))

    def solve(self, kernel: Kernel, machine, timeout_s: float, top: int = 4) -> Solved:
        t0 = time.perf_counter()
        g = self.template.match(kernel)
        if isinstance(g, str): return Solved(self.name, [], "enumeration", False, detail={"why": g})
        best: list[Candidate] = []
        n, mg = 0, self.model_geometry(g, machine)
        complete = True
        for s in self.space(kernel, machine):
            if time.perf_counter() - t0 > timeout_s:
                complete = False
                break
            p = dict(s.params)
            if self.template.check(g, p, machine): continue
            n += 1
            best.append(Candidate(s, model(mg, p, machine)))
            if len(best) > 64 * top:
                best = _distinct(sorted(best, key=lambda c: c.modeled_s))[:top]
        best = _distinct(sorted(best, key=lambda c: c.modeled_s))[:top]
        return Solved(self.name, best, "enumeration", complete and bool(best), solve_s=time.perf_counter() - t0,
                      detail={"points": n, "caches": caches()})


def _distinct(cands: list[Candidate]) -> list[Candidate]:
    """One candidate per modeled time (to 0.1%): ties differ only in decisions the model does
    not price (PF where A stays in L2, NC past the edge), and measuring them all says nothing."""
    out: list[Candidate] = []
    for c in cands:
        if not out or c.modeled_s > out[-1].modeled_s * 1.001: out.append(c)
    return out


def efficiency(mr: int, nr: int, lanes: int, P: dict[str, float] = MODEL) -> float:
    """Fraction of the FMA peak the MR x NR micro-kernel sustains (ports, latency, spills)."""
    MODEL = P  # noqa: N806 - the fitted constants where given
    nv = nr // lanes
    fmas = mr * nv
    cycles = max(fmas / MODEL["fma_ports"], (nv + mr) / MODEL["load_ports"],
                 MODEL["fma_latency"]) + MODEL["step_overhead"]  # the chain: one FMA latency at least
    live = fmas + nv + 1
    spill = 1.0 + MODEL["spill_cost"] * max(0, live - MODEL["spill_regs"])
    return MODEL["fma_eff"] * fmas / MODEL["fma_ports"] / (cycles * spill)


def model(g: dict[str, int], p: dict[str, int], machine, P: dict[str, float] | None = None) -> float:
    """Modeled seconds of one call (see the module docstring) under constants ``P``
    (default: ``constants(machine)``)."""
    MODEL = P or constants(machine)  # noqa: N806
    lanes, _ = tpl.registers(machine)
    mr, nr, mc, kc, nc, w = p["MR"], p["NR"], p["MC"], p["KC"], p["NC"], p["workers"]
    m, n, k, b = g["m"], g["n"], g["k"], g["batch"]
    hz, c, fill = _clock(machine), caches(), MODEL["fill"]
    kc, nc = min(kc, k), min(nc, -(-n // nr) * nr)
    mblocks = -(-m // mc)
    rows = min(m, -(-mblocks // w) * mc)                  # the busiest worker's rows
    rows_pad = -(-rows // mr) * mr
    n_pad = -(-n // nr) * nr
    peak = MODEL["fma_ports"] * lanes * hz                 # FMAs a second per core
    panel_l2 = kc * nc * 4 <= fill * c[2]   # the B panel in its share of L2 (the next one is packed beside it)
    l1_ok = (kc * nr + mr * kc) * 4 <= fill * c[1] * 2     # B micro-panel + A micro-panel in L1
    stall = (0 if panel_l2 else MODEL["panel_stall"]) + (0 if l1_ok else MODEL["micro_stall"])
    fma_s = b * rows_pad * n_pad * k / (peak * efficiency(mr, nr, lanes, MODEL)) * (1 + stall)
    # bytes each level serves to the busiest worker
    a_l2 = b * rows * k * 4 * (n_pad / nr)                 # the A block, once per micro-panel of B
    l2_ok = mc * kc * 4 <= fill * c[2] * 2
    l3_ok = kc * nc * 4 * 1 <= fill * c.get(3, c[2]) * 2
    l2_bw, l3_bw = MODEL["l2_bw"] * hz, MODEL["l3_bw"] * hz
    dram = machine.dram_bw / max(1, w)
    # the B micro-panel is re-read by every MR strip of the A block: from L1 if it fits, else L2
    b_panel = b * (rows_pad / mr) * k * n_pad * 4
    b_s = 0.0 if l1_ok else b_panel / l2_bw
    a_s = a_l2 / (l2_bw if l2_ok else l3_bw if l3_ok else dram)
    # the B panel is packed once per (jc, pc) and read from L3 by each MC block
    b_l3 = b * mblocks / w * k * n_pad * 4
    # ... from L2 where it fits its share there
    b3_s = b_l3 / (l2_bw if panel_l2 else l3_bw if l3_ok else dram)
    # memory: A packed once per NC block, B once, C read + written once per KC step
    mem = b * (rows * k * 4 * 2 * -(-n // nc) + k * n * 4 * 2 / w + rows * n * 4 * 2 * -(-k // kc))
    mem_s = mem / dram
    # the packing copies run on the cores between micro-kernels, not under their FMAs: the busiest
    # worker's A once per NC block, its share of B (zero-filled to whole panels) once
    pack_s = b * (rows * k * -(-n // nc) + k * n_pad / w) * 4 * 2 / (MODEL["pack_bw"] * hz)
    # one barrier a (jc, pc) block (B is double-buffered: the next block packs in this one's phase) and the first
    barriers = (b * -(-n // nc) * -(-k // kc) + 1) * (MODEL["barrier_s"] if w > 1 else 0.0)
    pf = 0.97 if p["PF"] and not l2_ok else 1.0            # prefetching helps only A that misses L2
    traffic = max((a_s + b_s + b3_s) * pf, mem_s)
    return max(fma_s, traffic) + (1 - MODEL["overlap"]) * min(fma_s, traffic) + pack_s + barriers + 1e-6


FAMILY = CPUGemm()
