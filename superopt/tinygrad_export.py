"""Export a superopt ``Schedule`` of an imported tinygrad kernel as tinygrad ``Opt``s, and
write them where tinygrad's BEAM search caches its result, so ``BEAM=n`` runs pick them up.

What is expressible (per axis, pieces outer -> inner, product exactly the axis size):
- UPCAST as the innermost piece of an output axis -> ``Opt(UPCAST)`` (split in factors
  <= 16, tinygrad's limit);
- UNROLL as the innermost piece of a reduce axis -> ``Opt(UNROLL)`` (factors <= 32);
- CPU: a GRID piece as the outermost piece of one output axis -> ``Opt(THREAD, amt)``
  (tinygrad runs one chunk per thread, so the grid size is the thread count);
- GPU: THREAD pieces on output axes -> ``Opt(LOCAL)``; GRID is tinygrad's implicit global
  launch; LOOP pieces are what remains of each axis in both.
Not expressible (``ValueError``): padded axes (product > size), UPCAST/UNROLL that are not
innermost, several GRID axes on CPU, split reductions over threads (tinygrad's GROUP
reorders the reduction differently), tensor cores, shared-memory staging and pipelining.
Dropped with a note (tinygrad decides them itself): the loop order and the SIMD vector
width (tinygrad vectorizes upcasts on its own).
"""
from __future__ import annotations

from typing import Any

from superopt.ir.schedule import Level, Schedule
from superopt.tinygrad_import import axis_ranges, from_ast


def _factors(n: int, limit: int) -> list[int]:
    """n as a product of factors <= limit, largest first; ValueError if a prime factor exceeds it."""
    out = []
    while n > 1:
        f = next((d for d in range(min(n, limit), 1, -1) if n % d == 0), None)
        if f is None: raise ValueError(f"factor of {n} exceeds tinygrad's limit {limit}")
        out.append(f)
        n //= f
    return out


def _pieces(kernel, s: Schedule) -> dict[int, dict[Level, int]]:
    """Per axis {level: size}, checking the layout tinygrad can express."""
    out = {}
    for a, (ax, sp) in enumerate(zip(kernel.axes, s.splits)):
        sizes = [p.size for p in sp]
        if _prod(sizes) != ax.size: raise ValueError(f"axis {a}: padded ({_prod(sizes)} > {ax.size}); tinygrad's PADTO differs")
        real = [p for p in sp if p.size > 1]
        for lv in (Level.UPCAST, Level.UNROLL):
            if any(p.level is lv for p in real[:-1]): raise ValueError(f"axis {a}: {lv.value} is not the innermost piece")
        if any(p.level is Level.GRID for p in real[1:]): raise ValueError(f"axis {a}: grid piece is not the outermost")
        if ax.reduce and any(p.level in (Level.GRID, Level.THREAD) for p in real):
            raise ValueError(f"axis {a}: split reductions are not expressible as tinygrad opts")
        out[a] = {p.level: p.size for p in real}
    return out


def _prod(xs) -> int:
    r = 1
    for x in xs: r *= x
    return r


def to_opts(sink: Any, schedule: Schedule, renderer: Any) -> tuple[list[Any], list[str]]:
    """(tinygrad Opts, notes on what tinygrad decides itself). Applies them to a tinygrad
    Scheduler as it goes, so every Opt is checked by tinygrad itself (KernelOptError -> ValueError)."""
    from tinygrad.codegen.opt import KernelOptError, Opt, OptOps
    from tinygrad.codegen.opt.postrange import Scheduler
    from tinygrad.uop.ops import AxisType
    kernel = from_ast(sink)
    if len(schedule.splits) != len(kernel.axes): raise ValueError("schedule does not match the kernel's axes")
    if schedule.tensor_core or schedule.staging or schedule.stages > 1:
        raise ValueError("tensor cores, shared-memory staging and pipelining are not expressible as tinygrad opts")
    pieces = _pieces(kernel, schedule)
    _, ranges, _ = axis_ranges(sink)
    rid = [r.arg[0] for r in ranges]
    gpu = bool(renderer.has_local)
    k = Scheduler(sink, renderer)
    k.convert_loop_to_global()
    base = {AxisType.WEAK, AxisType.GLOBAL, AxisType.LOOP, AxisType.REDUCE}

    def where(a: int) -> int:
        return next(i for i, r in enumerate(k.rngs) if r.arg[0] == rid[a] and r.arg[-1] in base)

    opts: list[Any] = []
    notes_extra: list[str] = []

    def apply(o) -> None:
        try:
            k.apply_opt(o)
        except KernelOptError as e:
            raise ValueError(f"tinygrad refuses {o}: {e}") from None
        opts.append(o)

    for a, p in pieces.items():   # innermost pieces first: register tiles, then unrolls
        for f in _factors(p.get(Level.UPCAST, 1), 16): apply(Opt(OptOps.UPCAST, where(a), f))
    for a, p in pieces.items():
        for f in _factors(p.get(Level.UNROLL, 1), 32): apply(Opt(OptOps.UNROLL, k.unrollable_dims.index(where(a)), f))
    if gpu:
        for a, p in pieces.items():
            if p.get(Level.THREAD, 1) > 1: apply(Opt(OptOps.LOCAL, where(a), p[Level.THREAD]))
    else:
        grid = [a for a, p in pieces.items() if p.get(Level.GRID, 1) > 1]
        if len(grid) > 1: raise ValueError("CPU grid split over several axes; tinygrad threads one axis")
        for a in grid:
            apply(Opt(OptOps.THREAD, where(a), pieces[a][Level.GRID]))
            if pieces[a][Level.GRID] != schedule.workers: notes_extra.append("one tinygrad thread per grid chunk")
    notes = notes_extra
    if schedule.order: notes.append("loop order left to tinygrad")
    if schedule.vector > 1: notes.append("vector width left to tinygrad (it vectorizes upcasts)")
    return opts, notes


def beam_key(sink: Any, renderer: Any, beam: int) -> dict:
    """The key tinygrad's ``beam_search`` looks its result up by (tinygrad 0.14)."""
    from tinygrad.codegen.opt.postrange import Scheduler
    from tinygrad.helpers import getenv
    k = Scheduler(sink, renderer)
    k.convert_loop_to_global()
    return {"ast": k.ast.key, "amt": beam, "allow_test_size": bool(getenv("BEAM_ESTIMATE", 1)),
            "device": renderer.target.device, "suffix": renderer.suffix}


def export_beam(sink: Any, schedule: Schedule, device: str = "CPU", beam: int = 2) -> tuple[list[Any], list[str]]:
    """Write ``schedule`` as the BEAM result for ``sink`` on ``device`` (for runs with ``BEAM=beam``)."""
    from tinygrad import Device
    from tinygrad.helpers import diskcache_put
    ren = Device[device].renderer
    opts, notes = to_opts(sink, schedule, ren)
    diskcache_put("beam_search", beam_key(sink, ren, beam), opts)
    return opts, notes
