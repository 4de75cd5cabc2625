"""Relayout: one kernel rewritten to read a permuted copy of an input, made by its own kernel.

A layout the kernel's best schedule cannot read well (an NCHW convolution's input, whose
filter-column window moves along the contiguous dimension by single elements, so TMA
cannot box it and threads copy it element by element) can pay for a copy into one it can
(channels last: the reduction's channel axis contiguous, both conv operands TMA boxes):

- ``copy``: ``out[permuted coordinates] = in[coordinates]``, a permute kernel scheduled
  like any other;
- the kernel itself with that input replaced by the copy (same slot, permuted shape),
  every load of it re-indexed: its affine index is split into one coordinate per
  dimension of the input (axes by their stride, the constant by the load's mask, a
  convolution's ``-pad``, then by the strides), and the coordinates recombined with the
  permuted strides. The mask is unchanged: it bounds the same coordinates.

Like split-K (ir/splitk.py) a plan of ordinary kernels: each is scheduled, verified and
timed by the existing paths; the copy's cost is the model's to weigh
(search/plan.relayout).
"""
from __future__ import annotations

from .kernel import Axis, Buffer, Kernel
from .kernelize import strides
from .node import Node, Ops, TRUE, const, substitute, var
from .tma import affine, mask_bounds
from . import dtype as dt


def permute_kernel(buf: Buffer, order: tuple[int, ...], name: str) -> Kernel:
    """``name[i0, i1, ...] = buf[...]`` with ``name``'s dimension j being ``buf``'s ``order[j]``."""
    shape = tuple(buf.shape[o] for o in order)
    st = strides(buf.shape)
    idx = _linear([var(j, n) for j, n in enumerate(shape)], [st[o] for o in order])
    body = Node(Ops.LOAD, buf.dtype, (idx, TRUE), 0)
    out = Buffer(name, buf.dtype, shape)
    return Kernel(f"{name}_copy", tuple(Axis(n) for n in shape), (buf,), out, body,
                  _linear([var(j, n) for j, n in enumerate(shape)], strides(shape)))


def coordinates(load: Node, kernel: Kernel, shape: tuple[int, ...]) -> list[tuple[dict[int, int], int]]:
    """Per dimension of an input of ``shape`` read by ``load``: (multiplier per axis,
    constant) of its coordinate. Raises ValueError where the index does not split so."""
    idx, valid = load.src
    aff = affine(idx, kernel)
    if aff is None: raise ValueError("the index is not an affine form of the axes")
    coef, c0 = aff
    st = strides(shape)
    dims = [d for d in range(len(shape)) if shape[d] > 1]
    coords: list[tuple[dict[int, int], int]] = [({}, 0) for _ in shape]
    for a, c in coef.items():  # an axis goes to the largest stride dividing its step
        d = max((d for d in dims if st[d] <= c and c % st[d] == 0), key=lambda d: st[d], default=None)
        if d is None: raise ValueError(f"axis {a} steps the index by {c}, no multiple of a stride")
        coords[d][0][a] = c // st[d]
    bounds = mask_bounds(valid, kernel)
    if isinstance(bounds, str): raise ValueError(bounds)
    offs = [0] * len(shape)
    masked = {}
    for d in dims:  # a masked dimension's constant is fixed by its bounds: lo <= sum < hi <-> 0 <= sum - lo < ...
        axes = coords[d][0]
        b = bounds.get(frozenset(axes.items())) if axes else None
        if b is not None and b[0] is not None:
            offs[d], masked[d] = -b[0], b
    rest = c0 - sum(offs[d] * st[d] for d in masked)
    for d in dims:  # the rest by the strides, outermost first
        if d in masked: continue
        offs[d], rest = divmod(rest, st[d])
    if rest: raise ValueError(f"the constant {c0} does not split over the dimensions")
    for d in dims:
        axes, o = coords[d][0], offs[d]
        lo, hi = o, o + sum(m * (kernel.axes[a].size - 1) for a, m in axes.items())
        if d in masked:
            b = masked[d]
            lo, hi = max(lo, b[0] + o), min(hi, (b[1] if b[1] is not None else 1 << 62) - 1 + o)
        if lo < 0 or hi >= shape[d]: raise ValueError(f"dimension {d} reaches [{lo}, {hi}], outside [0, {shape[d]})")
    return [(coords[d][0], offs[d]) for d in range(len(shape))]


def relayout(k: Kernel, slot: int, order: tuple[int, ...]) -> tuple[Kernel, Kernel]:
    """(copy, kernel') where ``copy`` writes input ``slot`` with its dimensions in ``order``
    and ``kernel'`` computes ``k`` reading that copy in place of the input."""
    buf = k.inputs[slot]
    if sorted(order) != list(range(len(buf.shape))): raise ValueError(f"{order} is not a permutation of {len(buf.shape)} dimensions")
    copy = permute_kernel(buf, order, f"{buf.name}_{''.join(map(str, order))}")
    new_st = strides(copy.output.shape)
    pos = {o: j for j, o in enumerate(order)}
    swap = {}
    for n in k.body.toposort():
        if n.op is not Ops.LOAD or n.arg != slot: continue
        terms = [const(off, dt.int32) + _linear([var(a, k.axes[a].size) for a in axes], list(axes.values()))
                 for axes, off in coordinates(n, k, buf.shape)]
        idx = _linear(terms, [new_st[pos[d]] for d in range(len(terms))])
        swap[n] = Node(Ops.LOAD, n.dtype, (idx, n.src[1]), slot)
    inputs = tuple(copy.output if i == slot else b for i, b in enumerate(k.inputs))
    return copy, Kernel(f"{k.name}_{copy.output.name}", k.axes, inputs, k.output, substitute(k.body, swap), k.store)


def _linear(xs: list[Node], coefs: list[int]) -> Node:
    """sum of ``x * c``, zero terms dropped."""
    out: Node = const(0, dt.int32)
    for x, c in zip(xs, coefs):
        if c: out = out + x * c
    return out
