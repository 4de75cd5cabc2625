"""A model's launch sequence as plain data: which kernel runs when, under which schedule,
reading and writing which buffer, and which allocation each buffer lives in.

Nothing here touches a device: the same ``LaunchPlan`` is run kernel by kernel on any
backend (``run_host``: the emulator, the CPU; every buffer a view of its allocation, so a
wrong reuse shows there as a wrong result) and captured as one CUDA graph by ``graph.py``.

- ``expand``: a kernelized model's steps as launch items, a plan's steps (split-K,
  relayout, split fp32) expanded over scratch buffers;
- ``buffer_specs``: bytes and dtype of every buffer, from the kernels;
- ``plan_buffers``: one allocation per model input and output, intermediates sharing
  allocations where their lifetimes do not overlap;
- ``LaunchPlan`` (``build``): all of it together, with each launch's argument slots and a
  key that names the program independently of its buffers' names (two realizes of one model
  with fresh tensor names get one key, so the runtime replays one graph for both).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ...ir.kernel import Kernel
from ...ir.schedule import Schedule


class PlanError(ValueError):
    """A launch sequence that cannot run; the message names the kernel or the buffer."""


@dataclass(frozen=True)
class Item:
    """One launch of the model: ``kernel`` under ``schedule`` reads the named buffers
    ``inputs`` (the kernel's input order) and writes ``output``. ``source`` says where the
    schedule came from ('cache', 'hand', 'plan', 'tuned')."""
    kernel: Kernel
    schedule: Schedule
    inputs: tuple[str, ...]
    output: str
    source: str = "hand"


def expand(steps: Sequence, schedule_for: Callable, plan_for: Callable | None = None) -> list[Item]:
    """A kernelized model's steps (``ir.kernelize.Step``) as launch items in order.
    ``schedule_for(kernel, planned=None) -> (schedule, source)`` picks each schedule;
    ``plan_for(kernel)`` may return a plan (``search.plan.Plan``: split-K, relayout, split
    fp32), whose steps become items over scratch buffers ``<output>__<kind><j>``, the last
    writing the step's output (as the runtime runs a plan)."""
    items: list[Item] = []
    for st in steps:
        plan = plan_for(st.kernel) if plan_for is not None else None
        if plan is None:
            items.append(_item(st.kernel, schedule_for(st.kernel), tuple(st.inputs), st.output))
            continue
        names: list[str] = []
        for j, x in enumerate(plan.steps):
            out = st.output if x is plan.final else f"{st.output}__{plan.kind}{j}"
            items.append(_item(x.kernel, schedule_for(x.kernel, x.schedule), tuple(x.operands(list(st.inputs), names)), out))
            names.append(out)
    return items


def _item(k: Kernel, chosen: tuple, inputs: tuple[str, ...], output: str) -> Item:
    schedule, source = chosen
    return Item(k, schedule, inputs, output, source)


def buffer_specs(items: Sequence[Item], arrays: dict[str, np.ndarray] | None = None) -> dict[str, tuple[int, np.dtype]]:
    """(bytes, numpy dtype) of every buffer the items touch, from their kernels; a buffer
    two kernels see differently, a given input that does not match, or an input read but
    neither given nor written is an error naming it."""
    meta: dict[str, tuple[int, np.dtype]] = {}
    for it in items:
        for n, b in [(it.output, it.kernel.output), *zip(it.inputs, it.kernel.inputs)]:
            want = (b.nbytes, np.dtype(b.dtype.np))
            if meta.setdefault(n, want) != want:
                raise PlanError(f"kernel {it.kernel.name}: buffer {n} is {want}, elsewhere {meta[n]}")
    if arrays is None: return meta
    check_inputs(meta, arrays)
    written = {it.output for it in items}
    absent = [n for n in meta if n not in arrays and n not in written]
    if absent: raise PlanError(f"inputs {absent} are read but not given")
    return meta


def check_inputs(meta: dict[str, tuple[int, np.dtype]], arrays: dict[str, np.ndarray]) -> None:
    """Every given array that a kernel reads has the kernel's bytes and dtype."""
    for n, (nb, d) in meta.items():
        if n in arrays and (arrays[n].nbytes != nb or arrays[n].dtype != d):
            raise PlanError(f"input {n}: {arrays[n].dtype}[{arrays[n].size}] given, the kernels read {nb} bytes of {d}")


@dataclass(frozen=True)
class BufferPlan:
    """Where each buffer lives: ``slot[name]`` indexes ``sizes`` (bytes per allocation)."""
    slot: dict[str, int]
    sizes: tuple[int, ...]

    @property
    def total_bytes(self) -> int: return sum(self.sizes)


def plan_buffers(items: Sequence[Item], nbytes: dict[str, int], keep: Sequence[str]) -> BufferPlan:
    """One allocation per model input and per ``keep`` buffer (the outputs); intermediates
    share allocations where their lifetimes do not overlap. A kernel's output never shares
    with its own inputs: the allocation of a buffer read last by item i is freed after i."""
    written = {it.output for it in items}
    unknown = [n for it in items for n in (*it.inputs, it.output) if n not in nbytes]
    if unknown: raise PlanError(f"no size for buffers {sorted(set(unknown))}")
    missing = [n for n in keep if n not in written]
    if missing: raise PlanError(f"outputs {missing} are written by no kernel")
    _check_order(items, written)
    last = {n: i for i, it in enumerate(items) for n in it.inputs}
    slot: dict[str, int] = {}
    sizes: list[int] = []
    free: list[int] = []   # slots of dead intermediates
    for n in dict.fromkeys(external_inputs(items) + list(keep)):   # inputs and outputs: their own allocation each
        slot[n] = len(sizes); sizes.append(nbytes[n])  # noqa: E702
    for i, it in enumerate(items):
        if it.output not in slot:
            fit = [s for s in free if sizes[s] >= nbytes[it.output]]
            if fit:
                s = min(fit, key=lambda j: sizes[j]); free.remove(s)  # noqa: E702
            else:
                s = len(sizes); sizes.append(nbytes[it.output])  # noqa: E702
            slot[it.output] = s
        dead = [n for n in set(it.inputs) if n in written and last[n] == i]
        if it.output not in last: dead.append(it.output)   # written, never read: its allocation is free at once
        free += [slot[n] for n in dead if n not in keep]
    return BufferPlan(slot, tuple(sizes))


def _check_order(items: Sequence[Item], written: set[str]) -> None:
    """Every intermediate is written once, before any kernel reads it."""
    seen: set[str] = set()
    for it in items:
        early = [n for n in it.inputs if n in written and n not in seen]
        if early: raise PlanError(f"kernel {it.kernel.name} reads {early} before any kernel writes them")
        if it.output in seen: raise PlanError(f"kernel {it.kernel.name} writes {it.output}, which an earlier kernel wrote")
        seen.add(it.output)


def external_inputs(items: Sequence) -> list[str]:
    """The buffers read but written by no item (the model's inputs), in order of first read.
    ``items``: launch items or ``ir.kernelize.Step``s (both have ``inputs`` and ``output``)."""
    written = {it.output for it in items}
    return list(dict.fromkeys(n for it in items for n in it.inputs if n not in written))


@dataclass(frozen=True)
class LaunchPlan:
    """A model's launches over its buffer plan. ``inputs``: the model's inputs in order of
    first read; ``outputs``: the buffers read back; ``meta[name]``: (bytes, dtype);
    ``buffers``: which allocation each buffer lives in."""
    items: tuple[Item, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    meta: dict[str, tuple[int, np.dtype]]
    buffers: BufferPlan

    def args(self, i: int) -> tuple[int, ...]:
        """Allocation slots launch ``i`` binds: its output first, then its inputs (the kernels' argument order)."""
        it = self.items[i]
        return tuple(self.buffers.slot[n] for n in (it.output, *it.inputs))

    @property
    def key(self) -> tuple:
        """The program independent of its buffers' names: per launch the kernel, its schedule
        and which launch (or which model input) wrote each buffer it reads."""
        return program_key(self.items, self.outputs)

    def view(self, slots: Sequence[np.ndarray], name: str) -> np.ndarray:
        """Buffer ``name`` as a typed flat view of its allocation in ``slots`` (uint8 arrays of ``buffers.sizes``)."""
        nb, d = self.meta[name]
        return slots[self.buffers.slot[name]][:nb].view(d)

    def run_host(self, arrays: dict[str, np.ndarray], launch: Callable[[int, list[np.ndarray], np.ndarray], None]
                 ) -> dict[str, np.ndarray]:
        """Run the launches one by one in host memory laid out as the buffer plan says:
        ``launch(i, inputs, out)`` computes item ``i`` into ``out`` (a view of its
        allocation). Intermediates are poisoned (0xFF bytes: NaN / -1) first, as on the
        device. Returns a copy of every output."""
        check_inputs(self.meta, arrays)
        absent = [n for n in self.inputs if n not in arrays]
        if absent: raise PlanError(f"inputs {absent} are read but not given")
        slots = [np.full(n, 0xFF, np.uint8) for n in self.buffers.sizes]
        for n in self.inputs: self.view(slots, n)[:] = np.ascontiguousarray(arrays[n]).reshape(-1)
        for i, it in enumerate(self.items):
            launch(i, [self.view(slots, n) for n in it.inputs], self.view(slots, it.output))
        return {n: self.view(slots, n).copy() for n in self.outputs}


def build(items: Sequence[Item], outputs: Sequence[str], arrays: dict[str, np.ndarray] | None = None) -> LaunchPlan:
    """The launch plan of ``items`` reading back ``outputs`` (``arrays``: the model's inputs,
    checked against what the kernels read where given)."""
    items = tuple(items)
    if not items: raise PlanError("no kernels to run")
    meta = buffer_specs(items, arrays)
    plan = plan_buffers(items, {n: m[0] for n, m in meta.items()}, outputs)
    return LaunchPlan(items, tuple(external_inputs(items)), tuple(outputs), meta, plan)


def program_key(items: Sequence[Item], outputs: Sequence[str]) -> tuple:
    """``LaunchPlan.key`` of these items: buffers renamed by who writes them (``t<i>``: launch
    i; ``in<j>``: the j-th model input), so the key never depends on tensor names."""
    ext = {n: f"in{j}" for j, n in enumerate(external_inputs(items))}
    canon = {**ext, **{it.output: f"t{i}" for i, it in enumerate(items)}}
    return (tuple((it.kernel.key, it.schedule.to_json(), tuple(canon[n] for n in it.inputs)) for it in items),
            tuple(canon[n] for n in outputs))
