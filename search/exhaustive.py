"""The cost model over a whole schedule space at once (numpy arrays), for exact solves.

``search.cost`` is written against an arithmetic backend; ``VECTOR`` is that backend
over numpy arrays, so one call of ``cost.time`` models every schedule of a space (one
array axis per kernel axis, one for vector widths, one for worker counts; loop orders
one call each). The spaces of the suites hold at most a few 10^5 schedules: modeling all
of them takes tens of milliseconds, where proving the optimum with Z3 takes seconds. A
finished pass is a proof: no schedule of the space is modeled faster than its best.

Feasibility is the solver's: the same register-tile, unroll, thread and vector-width
limits as ``search.z3opt._resources``, then ``ir.schedule.check`` on the schedules in
ascending modeled time (the check is the authority).
"""
from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass

import numpy as np

from ..ir.kernel import Kernel
from ..ir.schedule import Level, Schedule, check, vector_axis
from . import cost
from .space import Space, tile_limits, vector_fits

LIMIT = 4_000_000   # schedules of a space modeled exhaustively (beyond: the Z3 solve)
CHUNK = 1 << 19     # schedules modeled per numpy pass (bounds memory)


class Vector:
    """``cost``'s arithmetic backend over numpy arrays (broadcasting); the same float64
    operations, in the same order, as ``cost.Numeric``."""
    @staticmethod
    def max(a, b): return np.maximum(a, b)
    @staticmethod
    def min(a, b): return np.minimum(a, b)
    @staticmethod
    def ceil(a): return np.ceil(np.subtract(a, 1e-9))
    @staticmethod
    def floor(a): return np.floor(np.add(a, 1e-9))
    @staticmethod
    def log2(a): return np.log2(a)
    @staticmethod
    def select_le(x, c, a, b): return np.where(np.less_equal(x, c), a, b)
    @staticmethod
    def cases(choice, fn): return fn(choice)   # one loop order per pass


VECTOR = Vector()


@dataclass
class Ranked:
    schedule: Schedule
    modeled_s: float


def _level(opts, level: Level) -> np.ndarray:
    return np.array([float(math.prod(p.size for p in o if p.level is level)) for o in opts])


def _shaped(v: np.ndarray, dim: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[dim] = len(v)
    return v.reshape(shape)


def _pass(kernel: Kernel, machine, sp: Space, first: range, order, f: cost.Facts, p: cost.Params) -> np.ndarray:
    """Modeled seconds of every schedule whose axis-0 option is in ``first`` (inf where
    the solver's resource limits exclude it), shaped (axes..., vectors, workers)."""
    opts = [sp.axis_options[0][first.start:first.stop]] + list(sp.axis_options[1:])
    n = len(opts)
    nd = n + 2
    lv = lambda level: tuple(_shaped(_level(o, level), a, nd) for a, o in enumerate(opts))  # noqa: E731
    vec = _shaped(np.array([float(v) for v in sp.vectors]), n, nd)
    wrk = _shaped(np.array([float(w) for w in sp.workers]), n + 1, nd)
    stride = tuple(_shaped(np.array([float(cost.lane_stride(x)) for x in o]), a, nd) for a, o in enumerate(opts))
    x = cost.Vars(lv(Level.GRID), lv(Level.THREAD), lv(Level.LOOP), lv(Level.UPCAST), lv(Level.UNROLL), vec, wrk, order,
                  stride)
    shape = tuple(len(o) for o in opts) + (len(sp.vectors), len(sp.workers))
    T = np.broadcast_to(np.asarray(cost.time(VECTOR, f, x, machine, p), dtype=float), shape).copy()
    T[~np.broadcast_to(_feasible(kernel, machine, sp, opts, x), shape)] = np.inf
    return T


def _feasible(kernel: Kernel, machine, sp: Space, opts, x: cost.Vars) -> np.ndarray:
    """The solvers' limits (``space.tile_limits``, ``space.vector_fits``), elementwise."""
    up, un, th = cost._prod(x.upcast), cost._prod(x.unroll), cost._prod(x.thread)
    ok = np.bool_(True)
    for v, bound in tile_limits(up, un, th, machine): ok = ok & (np.asarray(v) <= bound)
    va = vector_axis(kernel)
    if va is not None and any(v != 1 for v in sp.vectors):
        size = kernel.axes[va].size
        fits = np.array([[v == 1 or vector_fits(o, v, size) for v in sp.vectors] for o in opts[va]])
        ok = ok & fits.reshape([len(opts[va]) if d == va else len(sp.vectors) if d == len(opts) else 1
                                for d in range(len(opts) + 2)])
    return ok


def _chunks(sp: Space) -> list[range]:
    rest = max(1, sp.size() // max(1, len(sp.axis_options[0]) * len(sp.orders)))
    step = max(1, CHUNK // rest)
    n0 = len(sp.axis_options[0])
    return [range(i, min(n0, i + step)) for i in range(0, n0, step)]


def solve(kernel: Kernel, machine, sp: Space, top_k: int, deadline: float = math.inf) -> tuple[list[Ranked], bool]:
    """The ``top_k`` legal schedules of ``sp`` modeled fastest, best first, and whether the
    whole space was modeled (else: the best of the part modeled before ``deadline``)."""
    f, p = cost.facts(kernel), cost.params(machine)
    pool: list[tuple[float, Schedule]] = []
    finished = True
    for order in sp.orders:
        for first in _chunks(sp):
            if pool and _time.monotonic() > deadline:   # past the limit: keep what one pass found
                finished = False
                break
            T = _pass(kernel, machine, sp, first, order, f, p)
            pool += _best_legal(kernel, machine, sp, T, first, order, top_k)
        if not finished: break
    pool.sort(key=lambda c: c[0])
    out: list[Ranked] = []
    for _, s in pool[:top_k]:   # reported: the numeric model's times (the ones every report uses; equal)
        out.append(Ranked(s, cost.modeled_time(kernel, s, machine, f)))
    return sorted(out, key=lambda r: r.modeled_s), finished


def _best_legal(kernel: Kernel, machine, sp: Space, T: np.ndarray, first: range, order, top_k: int) -> list:
    """The ``top_k`` legal schedules of one pass, fastest first."""
    flat = T.reshape(-1)
    found: list[tuple[float, Schedule]] = []
    want = min(flat.size, 4 * top_k)
    done = 0
    while done < flat.size:
        idx = np.argpartition(flat, want - 1)[:want] if want < flat.size else np.arange(flat.size)
        idx = idx[np.argsort(flat[idx], kind="stable")][done:]
        for i in idx:
            t = float(flat[i])
            if not math.isfinite(t): return found
            *axes, vi, wi = np.unravel_index(i, T.shape)
            choice = [first.start + axes[0]] + [int(a) for a in axes[1:]]
            s = sp.schedule(choice, sp.vectors[vi], sp.workers[wi], order)
            if not check(kernel, s, machine): found.append((t, s))
            if len(found) >= top_k: return found
        done, want = want, min(flat.size, want * 4)
    return found
