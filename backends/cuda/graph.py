"""A whole model as one CUDA graph: every buffer allocated once on the device, every kernel
compiled once, every launch recorded into one graph by stream capture, then replayed.

The kernel sequence comes from above (the caller resolves each kernel's schedule: the tuned
cache, a plan's step, or the hand rule on a miss; ``Item.source`` says which). Lowering,
rendering, compiling, tensor maps and launching are the cuda backend's own functions
(``ir.lower.lower``, ``render.render``, ``runtime.Device.compile``/``launch``, the
worker's ``_tensor_maps``): this module only orders them and captures the launches.

Buffers: the model's inputs and outputs each get their own allocation; an intermediate's
allocation is handed back after its last reader and reused by a later intermediate that
fits (smallest free block first; ``plan_buffers``), so peak device memory stays near the
live set. Intermediates are poisoned (0xFF bytes: NaN / -1) before the first run.

Kernels with TMA copies get their tensor maps encoded once over the graph's fixed
addresses and captured by value. A plan (split-K, relayout, split fp32) is not special
here: its steps are items like any other, their scratch buffers intermediates.
Timing: ``Device.time`` (CUDA events; L2 flushed before each replay, or warm), beside the
same launches issued one by one from the host and each kernel timed alone.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ...ir.kernel import Kernel
from ...ir.schedule import Schedule

from . import tma
from .runtime import CudaError, Device, DeviceArray, Function, _drv, check


class GraphError(CudaError):
    """A model that cannot run as one graph; the message names the kernel."""

    def __init__(self, message: str, code: str = "GRAPH"):
        super().__init__("graph", message, code)


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
                raise GraphError(f"kernel {it.kernel.name}: buffer {n} is {want}, elsewhere {meta[n]}")
    if arrays is None: return meta
    for n, (nb, d) in meta.items():
        if n in arrays and (arrays[n].nbytes != nb or arrays[n].dtype != d):
            raise GraphError(f"input {n}: {arrays[n].dtype}[{arrays[n].size}] given, the kernels read {nb} bytes of {d}")
    written = {it.output for it in items}
    absent = [n for n in meta if n not in arrays and n not in written]
    if absent: raise GraphError(f"inputs {absent} are read but not given")
    return meta


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
    if unknown: raise GraphError(f"no size for buffers {sorted(set(unknown))}")
    missing = [n for n in keep if n not in written]
    if missing: raise GraphError(f"outputs {missing} are written by no kernel")
    seen: set[str] = set()
    for it in items:
        early = [n for n in it.inputs if n in written and n not in seen]
        if early: raise GraphError(f"kernel {it.kernel.name} reads {early} before any kernel writes them")
        if it.output in seen: raise GraphError(f"kernel {it.kernel.name} writes {it.output}, which an earlier kernel wrote")
        seen.add(it.output)
    last = {n: i for i, it in enumerate(items) for n in it.inputs}
    slot: dict[str, int] = {}
    sizes: list[int] = []
    free: list[int] = []   # slots of dead intermediates
    fixed = [n for it in items for n in it.inputs if n not in written] + list(keep)
    for n in dict.fromkeys(fixed):   # inputs and outputs: their own allocation each
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


@dataclass
class _Launch:
    item: Item
    fn: Function
    grid: int
    block: int
    smem: int
    args: list = field(default_factory=list)   # device arrays (output first, then inputs) + tensor maps


class ModelGraph:
    """A model's launches over buffers allocated once; ``capture`` records them as one
    CUDA graph, ``replay`` launches it. Close it to free the device memory."""

    def __init__(self, items: Sequence[Item], arrays: dict[str, np.ndarray], outputs: Sequence[str], machine,
                 device: Device | None = None, programs: Sequence | None = None):
        """``programs``: the items' lowered programs where the caller has them (lowering a
        tensor-core kernel takes seconds), else lowered here under ``machine``."""
        self.dev = device or Device.get()
        self.items, self.outputs = list(items), list(outputs)
        self.graph = self.exec = None
        self.arrays: list[DeviceArray] = []
        try:
            self.programs = list(programs) if programs is not None else [self._lower(it, machine) for it in self.items]
            if len(self.programs) != len(self.items): raise GraphError(f"{len(self.programs)} programs for {len(self.items)} kernels")
            self.meta = buffer_specs(self.items, arrays)
            self.plan = plan_buffers(self.items, {n: m[0] for n, m in self.meta.items()}, self.outputs)
            self.arrays = [self.dev.alloc(n) for n in self.plan.sizes]
            for n, a in arrays.items():
                if n in self.plan.slot: self.buffer(n).upload(np.ascontiguousarray(a).reshape(-1))
            for n in self.meta:
                if n not in arrays: self.buffer(n).fill_bytes(0xFF)   # unwritten elements read as NaN / -1
            self.launches = [self._compile(it, p) for it, p in zip(self.items, self.programs)]
        except BaseException:
            self.close()
            raise

    # ---- building ----------------------------------------------------------------------
    @staticmethod
    def _lower(it: Item, machine):
        from ...ir.lower import lower
        try:
            return lower(it.kernel, it.schedule, machine)
        except ValueError as e:
            raise GraphError(f"kernel {it.kernel.name} ({it.kernel.key[:12]}): its schedule does not lower: {e}") from None

    def buffer(self, name: str) -> DeviceArray: return self.arrays[self.plan.slot[name]]

    def _compile(self, it: Item, p) -> _Launch:
        from .render import kernel_name, render
        from .worker import _tensor_maps
        name = f"kernel {it.kernel.name} ({it.kernel.key[:12]})"
        try:
            src, smem = render(p)
        except ValueError as e:
            raise GraphError(f"{name}: the cuda renderer refuses it: {e}") from None
        if smem > self.dev.smem_optin:
            raise GraphError(f"{name}: shared memory {smem} B per block > {self.dev.smem_optin} B")
        want = [self.meta[it.output][0]] + [self.meta[n][0] for n in it.inputs]
        if [b.nbytes for b in (p.output, *p.inputs)] != want:   # the launch would read or write past a buffer
            raise GraphError(f"{name}: its program's buffers {[b.nbytes for b in (p.output, *p.inputs)]} B "
                             f"differ from the kernel's {want} B")
        fn = self.dev.compile(src, kernel_name(p))
        bufs = [self.buffer(it.output)] + [self.buffer(n) for n in it.inputs]
        try:   # TMA: encoded once over the graph's fixed addresses, captured by value
            maps = _tensor_maps(self.dev, {"tensor_maps": tma.specs(p)}, bufs)
        except CudaError as e:
            raise GraphError(f"{name}: {e}", "TENSOR_MAP") from None
        return _Launch(it, fn, p.blocks, p.threads, smem, bufs + maps)

    # ---- running -----------------------------------------------------------------------
    def launch(self, lx: _Launch, stream=0) -> None:
        self.dev.launch(lx.fn, [lx.grid], [lx.block], lx.args, lx.smem, stream)

    def run_eager(self, stream=0) -> None:
        """Every launch issued from the host, in order (no graph)."""
        for lx in self.launches: self.launch(lx, stream)

    def capture(self) -> None:
        """Record every launch into one CUDA graph (stream capture on a stream of its own;
        relaxed mode: the launches' shared-memory opt-ins are not stream work)."""
        if self.exec is not None: return
        stream = check(_drv.cuStreamCreate(int(_drv.CUstream_flags.CU_STREAM_NON_BLOCKING)), "graph", "cuStreamCreate")
        try:
            check(_drv.cuStreamBeginCapture(stream, _drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED),
                  "graph", "cuStreamBeginCapture")
            try:
                self.run_eager(stream)
            except BaseException:   # end the capture (its error would hide this one), then report this one
                _drv.cuStreamEndCapture(stream)
                raise
            self.graph = check(_drv.cuStreamEndCapture(stream), "graph", "cuStreamEndCapture")
            self.exec = _instantiate(self.graph)
        finally:
            check(_drv.cuStreamDestroy(stream), "graph", "cuStreamDestroy")

    @property
    def nodes(self) -> int:
        """Kernel nodes in the captured graph (one per launch)."""
        if self.graph is None: return 0
        r = check(_drv.cuGraphGetNodes(self.graph, 0), "graph", "cuGraphGetNodes")   # (nodes, count) with no array
        return int(r[-1] if isinstance(r, tuple) else r)

    def replay(self, stream=0) -> None:
        if self.exec is None: self.capture()
        check(_drv.cuGraphLaunch(self.exec, stream), "launch", "cuGraphLaunch")

    def output(self, name: str | None = None) -> np.ndarray:
        """A buffer's contents after the launches so far (default: the first output)."""
        n = name or self.outputs[0]
        nb, d = self.meta[n]
        self.dev.synchronize()
        return self.buffer(n).download(d, nb // np.dtype(d).itemsize)

    # ---- timing ------------------------------------------------------------------------
    def time_graph(self, reps: int = 30, flush: bool = True, budget_s: float = 5.0) -> list[float]:
        """Seconds per replay of the whole graph (CUDA events; L2 flushed before each unless ``flush=False``)."""
        self.capture()
        return self.dev.time(lambda i: self.replay(), reps=reps, warmup=3, flush=flush, budget_s=budget_s)

    def time_eager(self, reps: int = 30, budget_s: float = 5.0) -> list[float]:
        """Seconds per run of the same launches issued one by one from the host, L2 flushed before each run."""
        return self.dev.time(lambda i: self.run_eager(), reps=reps, warmup=3, flush=True, budget_s=budget_s)

    def time_kernels(self, reps: int = 15, budget_s: float = 2.0) -> list[float]:
        """Each launch's median alone (L2 flushed before each, as the backend's timer does;
        the graph's buffers, no input rotation), in order."""
        return [statistics.median(self.dev.time(lambda i, lx=lx: self.launch(lx), reps=reps, warmup=2, flush=True,
                                                budget_s=budget_s)) for lx in self.launches]

    def close(self) -> None:
        """Free the graph and the buffers; best effort after a sticky error (the process exits then anyway)."""
        steps = ([lambda: check(_drv.cuGraphExecDestroy(self.exec), "graph", "cuGraphExecDestroy")] if self.exec is not None else []) + \
                ([lambda: check(_drv.cuGraphDestroy(self.graph), "graph", "cuGraphDestroy")] if self.graph is not None else []) + \
                [lambda a=a: self.dev.free(a) for a in self.arrays]
        self.exec = self.graph = None
        self.arrays = []
        for step in steps:
            try: step()
            except CudaError: pass  # noqa: E701 - the error that made the context unusable was raised already

    def __enter__(self) -> "ModelGraph": return self
    def __exit__(self, *exc) -> None: self.close()


def _instantiate(graph):
    """``cuGraphInstantiateWithFlags(graph, 0)``; bindings without it take the flags in ``cuGraphInstantiate``."""
    if hasattr(_drv, "cuGraphInstantiateWithFlags"):
        return check(_drv.cuGraphInstantiateWithFlags(graph, 0), "graph", "cuGraphInstantiateWithFlags")
    return check(_drv.cuGraphInstantiate(graph, 0), "graph", "cuGraphInstantiate")
