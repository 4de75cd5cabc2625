"""Split-K: one reduction kernel rewritten as two kernels, for grids that underfill the GPU.

A GEMM whose output tiles are fewer than the SMs (1024x1024 outputs in 128x128 tiles:
64 blocks for 132 SMs) leaves SMs idle however long K is. Splitting K into ``S`` chunks
gives ``S`` times the blocks:

- ``partial``: ``part[s, *out] = sum over k' < K/S of f(k = s*K/S + k')`` in float32,
  the original reduction with its K axis shortened and a new output axis ``s`` (axis 0);
  its other axes keep their order. For a GEMM it is a batched GEMM (``s`` a batch axis,
  so the tensor-core path schedules it unchanged);
- ``combine``: the original kernel with its reduction replaced by ``sum over s of
  part[s, *out]`` (float32, in the same order for every output), so its epilogue
  (casts, bias, activations) runs once on the full sum.

Why two kernels and not one with a partial-sum buffer: a ``Program`` has its inputs and
one output and no grid-wide synchronisation; two ordinary kernels need neither, each is
scheduled, verified and timed by the existing paths, and the plan runs them as two steps
(``partial``'s output is ``combine``'s last input). The price is a second launch and the
``S x outputs`` float32 round trip, which the model charges (search/plan.split_k).
"""
from __future__ import annotations

from . import dtype as dt
from .kernel import Axis, Buffer, Kernel
from .node import Node, Ops, TRUE, substitute, var


def split_k(k: Kernel, splits: int, axis: int | None = None) -> tuple[Kernel, Kernel]:
    """(partial, combine) kernels computing ``k`` with reduce axis ``axis`` (default: the
    largest) split into ``splits`` chunks. ``combine`` reads ``k``'s inputs that its
    epilogue uses, then the partial sums (last input)."""
    red = k.reduce
    if red is None or red.arg[0] != "sum" or red.dtype is not dt.float32:
        raise ValueError("split-K needs a float32 sum reduction")
    axis = max(k.reduce_axes, key=lambda a: k.axes[a].size) if axis is None else axis
    if axis not in k.reduce_axes: raise ValueError(f"axis {axis} is not a reduce axis")
    size = k.axes[axis].size
    if splits < 2 or size % splits: raise ValueError(f"{splits} splits do not divide reduce axis {axis} of {size}")
    chunk = size // splits
    out_shape = k.output.shape
    # partial: new axis 0 = s; every old axis a becomes a+1; K shrinks to K/S
    s_var = var(0, splits)
    shift = {var(a, ax.size): var(a + 1, chunk if a == axis else ax.size) for a, ax in enumerate(k.axes)}
    shift[var(axis, size)] = s_var * chunk + var(axis + 1, chunk)
    axes1 = (Axis(splits), *(Axis(chunk if a == axis else ax.size, ax.reduce) for a, ax in enumerate(k.axes)))
    body1 = Node(Ops.REDUCE, dt.float32, (substitute(red.src[0], shift),), ("sum", tuple(a + 1 for a in red.arg[1])))
    part = Buffer(f"{k.output.name}_part", dt.float32, (splits, *out_shape))
    store1 = s_var * k.output.size + substitute(k.store, shift)
    partial = Kernel(f"{k.name}_partial{splits}", axes1, k.inputs, part, body1, store1)
    # combine: the reduce axis becomes s (size S); the reduction reads the partial sums
    others = [a for a in red.arg[1] if a != axis]
    if others: raise ValueError("split-K of a reduction over several axes is not supported")
    s2 = var(axis, splits)
    used = sorted({n.arg for n in k.body.toposort() if n.op is Ops.LOAD} - {n.arg for n in red.toposort() if n.op is Ops.LOAD})
    slot = {old: new for new, old in enumerate(used)}
    load = Node(Ops.LOAD, dt.float32, (s2 * k.output.size + k.store, TRUE), len(used))
    sum_s = Node(Ops.REDUCE, dt.float32, (load,), ("sum", (axis,)))
    hole = Node(Ops.SPECIAL, dt.float32, (), ("split_k_sum", 1))   # stands for the sum while loads are renumbered
    epi = substitute(k.body, {red: hole})
    epi = substitute(epi, {n: Node(Ops.LOAD, n.dtype, n.src, slot[n.arg]) for n in epi.toposort() if n.op is Ops.LOAD})
    body2 = substitute(epi, {hole: sum_s})
    axes2 = tuple(Axis(splits, True) if a == axis else ax for a, ax in enumerate(k.axes))
    combine = Kernel(f"{k.name}_combine{splits}", axes2, (*(k.inputs[i] for i in used), part), k.output, body2, k.store)
    return partial, combine
