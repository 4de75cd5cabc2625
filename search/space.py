"""The legal schedule space of a kernel on a machine.

Per axis, a finite list of split options (tuples of ``Split`` over levels, outer ->
inner); plus vector widths, worker counts and loop orders. Z3 (search/z3opt) picks one
option per axis; BEAM (search/beam) walks between neighbouring schedules. Legality is
always decided by ``ir.schedule.check``, never here.

Option shapes (pieces of size 1 are left out):
  CPU output axis   GRID g, LOOP l, UPCAST u      (GRID = parallel chunks for workers)
  CPU reduce axis   LOOP l, UNROLL r
  GPU output axis   GRID g, LOOP l, THREAD t, UPCAST u
  GPU reduce axis   THREAD t (split reduce), LOOP l, UNROLL r; or LOOP l, THREAD t, UNROLL r
  row axis (a row kernel's REDUCEs fold it; no GRID: a block holds whole rows)
                    CPU LOOP l, UPCAST u;  GPU LOOP l, THREAD t, UPCAST u
Sizes are divisors of the axis, plus a few padded register tiles (masked excess) for
axes that no wanted tile size divides.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

from ..ir.kernel import Kernel
from ..ir.schedule import Level, Schedule, Split, check, vector_axis

Option = tuple[Split, ...]

CPU_UPCAST = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
CPU_UNROLL = (1, 2, 4, 8, 16)
CPU_GRID_MAX = 64
GPU_THREADS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
GPU_UPCAST = (1, 2, 4, 8)
GPU_UNROLL = (1, 2, 4, 8)
PADDED_UPCAST = (4, 8, 16)


def tile_limits(up, un, th, machine) -> list[tuple]:
    """The register-tile, unroll and thread limits the solvers keep schedules within, as
    (value, bound) pairs over the products of the upcast, unroll and thread sizes (numbers,
    numpy arrays or Z3 terms alike)."""
    return [(up, machine.max_upcast), (un * up, 4 * machine.max_upcast), (th, machine.max_threads)]


def vector_fits(opt: Option, v: int, size: int) -> bool:
    """As ``ir.schedule.check``: the axis ends in an upcast ``v`` divides (it may be padded;
    the cost model charges a padded vector axis its masked, lane-by-lane accesses)."""
    return opt[-1].level is Level.UPCAST and opt[-1].size % v == 0 and math.prod(p.size for p in opt) >= size


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _option(pieces: Sequence[tuple[Level, int]]) -> Option:
    kept = tuple(Split(lv, n) for lv, n in pieces if n > 1)
    return kept or (Split(Level.LOOP, 1),)


def _grid_sizes(n: int, limit: int) -> list[int]:
    """Parallel chunk counts worth trying: divisors of n up to ``limit``, at most 8 of them
    spread geometrically (1, ~2, ~4, ...)."""
    ds = [d for d in divisors(n) if d <= limit]
    picked: list[int] = []
    for target in (2 ** i for i in range(0, 13)):
        best = min(ds, key=lambda d: (abs(math.log2(d) - math.log2(target)), d))
        if best not in picked: picked.append(best)
    return sorted(picked)[:8]


def cpu_output_options(n: int, machine) -> list[Option]:
    out: list[Option] = []
    for u in CPU_UPCAST:
        if u > n: break
        if n % u == 0:
            for g in _grid_sizes(n // u, CPU_GRID_MAX):
                out.append(_option([(Level.GRID, g), (Level.LOOP, n // (u * g)), (Level.UPCAST, u)]))
    for u in PADDED_UPCAST:  # masked tail: no divisor of this size exists
        if u < n and n % u and not any(n % d == 0 for d in CPU_UPCAST if u // 2 < d <= u):
            loops = -(-n // u)
            if loops * u - n <= min(n, 64): out.append(_option([(Level.LOOP, loops), (Level.UPCAST, u)]))
    return out


def cpu_reduce_options(n: int) -> list[Option]:
    return [_option([(Level.LOOP, n // r), (Level.UNROLL, r)]) for r in CPU_UNROLL if r <= n and n % r == 0]


def gpu_output_options(n: int, machine) -> list[Option]:
    out: list[Option] = []
    for t in GPU_THREADS:
        for u in GPU_UPCAST:
            if t * u > n or n % (t * u) or t > machine.max_threads: continue
            rest = n // (t * u)
            out.append(_option([(Level.GRID, rest), (Level.THREAD, t), (Level.UPCAST, u)]))
    return out


def gpu_reduce_options(n: int, machine) -> list[Option]:
    """Split reduces both ways: each thread a chunk (THREAD, LOOP, UNROLL) or the threads
    interleaved (LOOP, THREAD, UNROLL: a warp's lanes read neighbouring elements)."""
    out: list[Option] = []
    for t in GPU_THREADS:
        for r in GPU_UNROLL:
            if t * r > n or n % (t * r) or t > machine.max_threads: continue
            loop = n // (t * r)
            out.append(_option([(Level.THREAD, t), (Level.LOOP, loop), (Level.UNROLL, r)]))
            if t > 1 and loop > 1: out.append(_option([(Level.LOOP, loop), (Level.THREAD, t), (Level.UNROLL, r)]))
    return out


def row_options(n: int, machine) -> list[Option]:
    """A row axis: the output options with the grid part turned into a serial loop, in
    front of the threads (each pass over the row reads it coalesced)."""
    gpu = machine.is_simt
    out: list[Option] = []
    for opt in (gpu_output_options(n, machine) if gpu else cpu_output_options(n, machine)):
        loop = math.prod(p.size for p in opt if p.level in (Level.GRID, Level.LOOP))
        o = _option([(Level.LOOP, loop)] + [(p.level, p.size) for p in opt if p.level not in (Level.GRID, Level.LOOP)])
        if o not in out: out.append(o)
    return out


@dataclass(frozen=True)
class Space:
    """Finite schedule space: one option per axis x vector x workers x order."""
    kernel: Kernel
    machine: object
    axis_options: tuple[tuple[Option, ...], ...]
    vectors: tuple[int, ...]
    workers: tuple[int, ...]
    orders: tuple[tuple[int, ...], ...]

    def schedule(self, choice: Sequence[int], vector: int = 1, workers: int = 1,
                 order: tuple[int, ...] = ()) -> Schedule:
        return Schedule(tuple(self.axis_options[a][i] for a, i in enumerate(choice)),
                        order=order, vector=vector, workers=workers)

    def legal(self, s: Schedule) -> bool: return not check(self.kernel, s, self.machine)

    def size(self) -> int:
        return math.prod(len(o) for o in self.axis_options) * len(self.vectors) * len(self.workers) * len(self.orders)

    def enumerate(self, orders: bool = True) -> Iterator[Schedule]:
        """Every legal schedule of the space (use on small spaces only)."""
        for choice in itertools.product(*(range(len(o)) for o in self.axis_options)):
            for v, w, o in itertools.product(self.vectors, self.workers, self.orders if orders else ((),)):
                s = self.schedule(choice, v, w, o)
                if self.legal(s): yield s

    def index_of(self, s: Schedule) -> tuple[int, ...] | None:
        """Per-axis option indices of ``s``, or None when an axis is not in the space."""
        try:
            return tuple(opts.index(sp) for opts, sp in zip(self.axis_options, s.splits))
        except ValueError:
            return None

    def contains(self, s: Schedule) -> bool:
        return (self.index_of(s) is not None and s.vector in self.vectors and s.workers in self.workers
                and s.order in self.orders and s.tensor_core is None and not s.staging and s.stages == 1)

    def neighbors(self, s: Schedule) -> list[Schedule]:
        """Legal schedules one action away: re-split one axis, or change vector width,
        workers or loop order. Vector width is repaired (set to 1) when a re-split
        breaks it, so tiling moves are never blocked by the vector choice."""
        out: list[Schedule] = []
        for a, opts in enumerate(self.axis_options):
            for opt in opts:
                if opt == s.splits[a]: continue
                n = s.with_axis(a, opt)
                if not self.legal(n): n = replace(n, vector=1)
                out.append(n)
        out += [replace(s, vector=v) for v in self.vectors if v != s.vector]
        out += [replace(s, workers=w) for w in self.workers if w != s.workers]
        out += [replace(s, order=o) for o in self.orders if o != s.order]
        seen, legal = set(), []
        for n in out:
            if n not in seen and self.legal(n):
                seen.add(n); legal.append(n)  # noqa: E702
        return legal


def vector_widths(kernel: Kernel, machine) -> tuple[int, ...]:
    """SIMD widths worth trying: up to one vector register of the output dtype (CPU),
    up to 16 bytes per access (GPU)."""
    if vector_axis(kernel) is None: return (1,)
    lanes = max(1, machine.simd_bytes // kernel.output.dtype.itemsize)
    return tuple(v for v in (1, 2, 4, 8, 16) if v <= lanes and v <= kernel.axes[vector_axis(kernel)].size)


def loop_orders(kernel: Kernel) -> tuple[tuple[int, ...], ...]:
    """Default order plus every permutation of up to three output axes (reduce axes
    stay innermost, so accumulators live in registers)."""
    outs, reds = kernel.output_axes, kernel.reduce_axes
    if len(outs) < 2 or len(outs) > 3: return ((),)
    perms = [tuple(p) + tuple(reds) for p in itertools.permutations(outs)]
    default = tuple(range(len(kernel.axes)))
    return ((),) + tuple(p for p in perms if p != default)


def build(kernel: Kernel, machine) -> Space:
    """The schedule space of ``kernel`` on ``machine``."""
    gpu = machine.is_simt
    opts: list[tuple[Option, ...]] = []
    for a, ax in enumerate(kernel.axes):
        if a in kernel.row_axes: o = row_options(ax.size, machine)
        elif ax.reduce: o = gpu_reduce_options(ax.size, machine) if gpu else cpu_reduce_options(ax.size)
        else: o = gpu_output_options(ax.size, machine) if gpu else cpu_output_options(ax.size, machine)
        opts.append(tuple(o))
    workers = (1,) if gpu else tuple(range(1, machine.cores + 1))
    return Space(kernel, machine, tuple(opts), vector_widths(kernel, machine), workers,
                 ((),) if gpu or kernel.row_axes else loop_orders(kernel))
