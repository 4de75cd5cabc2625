"""Schedules for the DSP: the fixed hand rule per op, the candidates the model chooses
among, and the choice itself (lowest modeled kernel cycles, qemu-verified).

Hand rule (what a DSP engineer writes first): vectorize along the output's contiguous
axis (channels in NHWC, N in a matmul) with as many lanes as divide it (up to 32, one
128-byte vector of int32), unroll the innermost reduce axis, every other axis a
serial loop, no register blocking. (Short innermost reductions, up to 8, unroll fully.)

What is decided where (the schedule choice is enumerate-and-evaluate, not one Z3 model):
- fixed by rule, not searched: the vectorization axis (``vector_axis``: the output's
  contiguous axis; ``schedule.check`` allows no other) and its lanes (the largest of
  1..32 dividing it; ``schedule.check`` also allows a padded vector axis, whose last
  vector's stores are predicated, but these rules do not propose one yet);
- enumerated (``candidates``, at most 4 x 2 x 3 = 24 schedules, the illegal ones dropped):
  register blocking 1, 2, 3 or 4 rows along the next output axis; a 3-wide innermost
  reduction padded to 4 (the renderer then forms ``vrmpy`` groups) or not; the channel
  reduction unrolled by 1, 4 or fully (when <= 8);
- measured per candidate: clang compiles it, qemu runs it (bit-exact check against the
  interpreter), and qemu's trace gives every executed block with its execution count;
- decided by Z3 (``search/vliw.py``), per executed block: the fewest packets of its
  instructions under the HVX slot/unit/latency model (``pack``) and, for a block that
  loops on itself, the smallest initiation interval of a modulo schedule (``modulo``);
- the choice (``pick``): the verified candidate with the fewest modeled kernel cycles.
So "pad 3 to 4 for vrmpy?", "how many rows to block?" and "how far to unroll?" are
answered by cost, but through the enumeration above: the Z3 models price a candidate's
compiled code, they do not choose among candidates. A single Z3 formulation would need
the cycles of a schedule's code as a function of the schedule (clang sits in between).

Measured (``python bench/hexagon.py``, bench/results/hexagon-dsp-small.json, every
candidate bit-exact under qemu): the choice over the hand rule in modeled cycles is
0.584x on the 3x3 conv (2 rows blocked, 8 channels unrolled), 0.304x on the 5x5 conv,
0.851x on the depthwise 3x3, 0.635x on the stride-2 depthwise, 0.084x on the int8
matmul. Padding the 3-tap reduction to 4 for ``vrmpy`` lost on every shape: in NHWC the
taps are a channel stride apart, so each ``vrmpy`` word is packed from 4 byte loads per
lane (depthwise 3x3, no blocking: 11279 cycles padded, 6932 not).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ...ir.interpret import run_kernel
from ...ir.kernel import Kernel
from ...ir.lower import lower
from ...ir.schedule import Level, Schedule, Split, check, vector_axis
from ..base import Failure
from . import backend as make_backend
from . import profile

MAX_LANES = 32
MAX_FULL_UNROLL = 8   # the hand rule unrolls a short innermost reduction (a filter row) fully


def _lanes(size: int) -> int:
    return max(v for v in (1, 2, 4, 8, 16, 32) if v <= MAX_LANES and size % v == 0)


def _axis(size: int, upcast: int = 1, unroll: int = 1) -> tuple[Split, ...]:
    if upcast > 1: return ((Split(Level.LOOP, size // upcast),) if size > upcast else ()) + (Split(Level.UPCAST, upcast),)
    if unroll > 1:
        outer = -(-size // unroll)
        return ((Split(Level.LOOP, outer),) if outer > 1 else ()) + (Split(Level.UNROLL, unroll),)
    return (Split(Level.LOOP, size),)


def hand(kernel: Kernel, machine) -> Schedule:
    """The fixed hand-coded schedule of the DSP rules."""
    return _make(kernel, machine, block=1, pad=False, unroll_c=1)


def candidates(kernel: Kernel, machine) -> list[Schedule]:
    out = []
    for block in (1, 2, 3, 4):
        for pad in (False, True):
            for unroll_c in (1, 4, MAX_FULL_UNROLL):
                s = _make(kernel, machine, block, pad, unroll_c)
                if s is not None and not check(kernel, s, machine) and s not in out: out.append(s)
    return out


def _make(k: Kernel, machine, block: int, pad: bool, unroll_c: int) -> Schedule | None:
    va = vector_axis(k)
    outs, reds = k.output_axes, k.reduce_axes
    chan = reds[0] if len(reds) > 1 else reds[-1] if reds else None
    if unroll_c > 4 and (chan is None or k.axes[chan].size != unroll_c): return None   # full unroll only
    splits: list[tuple[Split, ...]] = []
    lanes = _lanes(k.axes[va].size) if va is not None else 1
    # register blocking on the output axis just outside the vector axis
    blk_axis = max((a for a in outs if a != va and k.axes[a].size > 1), default=None)
    for a, ax in enumerate(k.axes):
        if a == va:
            splits.append(_axis(ax.size, upcast=lanes) if lanes > 1 else _axis(ax.size))
        elif a == blk_axis and block > 1:
            if ax.size % block: return None
            splits.append(_axis(ax.size, upcast=block))
        elif a in reds and a == reds[-1] and len(reds) == 1 and unroll_c > 1:
            if ax.size % unroll_c: return None
            splits.append(_axis(ax.size, unroll=unroll_c))
        elif a in reds and a == reds[-1]:
            if pad and ax.size != 3: return None
            n = 4 if pad else ax.size
            splits.append((Split(Level.UNROLL, n),) if n <= MAX_FULL_UNROLL else _axis(ax.size))
        elif a in reds and a == reds[0] and unroll_c > 1 and len(reds) > 1:
            if ax.size % unroll_c: return None
            splits.append(_axis(ax.size, unroll=unroll_c))
        else:
            splits.append(_axis(ax.size))
    s = Schedule(tuple(splits), vector=lanes)
    return None if check(k, s, machine) else s


@dataclass
class Evaluated:
    schedule: Schedule
    exact: bool | None
    cycles: profile.KernelCycles | None
    failure: str = ""
    loops: list | None = None   # innermost loops of clang -S: clang vs Z3 packets


def evaluate(kernel: Kernel, schedule: Schedule, machine, inputs: list[np.ndarray], be=None) -> Evaluated:
    """Compile, run under qemu against the interpreter, and price with the VLIW model."""
    be = be or make_backend(machine)
    c = be.compile(lower(kernel, schedule, machine))
    if isinstance(c, Failure): return Evaluated(schedule, None, None, str(c))
    out = np.zeros(kernel.output.size, kernel.output.dtype.np)
    r = be.run(c, inputs, out)
    if isinstance(r, Failure): return Evaluated(schedule, None, None, str(r))
    exact = bool(np.array_equal(np.asarray(run_kernel(kernel, inputs)).reshape(-1).astype(out.dtype), out))
    kc = profile.model(c.handle, b"".join(np.ascontiguousarray(a).tobytes() for a in inputs))
    if isinstance(kc, Failure): return Evaluated(schedule, exact, None, str(kc))
    loops = profile.static_loops(c.source)
    return Evaluated(schedule, exact, kc, loops=None if isinstance(loops, Failure) else loops)


def choose(kernel: Kernel, machine, inputs: list[np.ndarray]) -> tuple[Evaluated, list[Evaluated], float]:
    """Evaluate every candidate; the best by ``pick``, all evaluations, seconds spent."""
    t0 = time.perf_counter()
    be = make_backend(machine)
    evals = [evaluate(kernel, s, machine, inputs, be) for s in candidates(kernel, machine)]
    return pick(evals), evals, time.perf_counter() - t0


def pick(evals: list[Evaluated]) -> Evaluated:
    """Fewest modeled cycles (Z3-packed blocks, pipelined self-loops) among the
    candidates that verified bit-exactly."""
    ok = [e for e in evals if e.exact and e.cycles is not None]
    if not ok: raise RuntimeError("no candidate verified: " + "; ".join(e.failure for e in evals))
    return min(ok, key=lambda e: e.cycles.z3_pipelined_cycles)
