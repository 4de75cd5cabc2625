"""A whole model as one CUDA graph: every buffer allocated once on the device, every kernel
compiled once, every launch recorded into one graph by stream capture, then replayed.

The kernel sequence comes from above (the caller resolves each kernel's schedule: the tuned
cache, a plan's step, or the hand rule on a miss; ``Item.source`` says which). Lowering,
rendering, compiling, tensor maps and launching are the cuda backend's own functions
(``ir.lower.lower``, ``render.render``, ``runtime.Device.compile``/``launch``, the
worker's ``_tensor_maps``): this module only orders them and captures the launches.

Buffers: the launch plan (``launches.py``, plain Python, run on the emulator and the CPU by
the tests): the model's inputs and outputs each get their own allocation; an intermediate's
allocation is handed back after its last reader and reused by a later intermediate that
fits (smallest free block first; ``plan_buffers``), so peak device memory stays near the
live set. Intermediates are poisoned (0xFF bytes: NaN / -1) before the first run. A later
run with new inputs copies them into the input buffers and replays the same graph
(``run``): the graph's addresses never change.

Kernels with TMA copies get their tensor maps encoded once over the graph's fixed
addresses and captured by value. A plan (split-K, relayout, split fp32) is not special
here: its steps are items like any other, their scratch buffers intermediates.
Timing: ``Device.time`` (CUDA events; L2 flushed before each replay, or warm), beside the
same launches issued one by one from the host and each kernel timed alone.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import tma
from .launches import BufferPlan, Item, LaunchPlan, PlanError, buffer_specs, build, check_inputs, expand, plan_buffers
from .runtime import CudaError, Device, DeviceArray, Function, _drv, check

__all__ = ["BufferPlan", "GraphError", "Item", "LaunchPlan", "ModelGraph", "PlanError", "buffer_specs", "expand",
           "plan_buffers"]


class GraphError(CudaError, PlanError):
    """A model that cannot run as one graph; the message names the kernel."""

    def __init__(self, message: str, code: str = "GRAPH"):
        super().__init__("graph", message, code)


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

    def __init__(self, items: Sequence[Item] | LaunchPlan, arrays: dict[str, np.ndarray] | None, outputs: Sequence[str] = (),
                 machine=None, device: Device | None = None, programs: Sequence | None = None):
        """``items``: the launches (or their ``LaunchPlan``, whose outputs are then read back);
        ``arrays``: the model's inputs, uploaded now (None: upload with ``set_inputs``
        before the first run); ``programs``: the items' lowered programs where the caller has
        them (lowering a tensor-core kernel takes seconds), else lowered here under ``machine``."""
        self.dev = device or Device.get()
        self.lp = items if isinstance(items, LaunchPlan) else build(items, outputs, arrays)
        self.items, self.outputs = list(self.lp.items), list(self.lp.outputs)
        self.meta, self.plan = self.lp.meta, self.lp.buffers
        self.graph = self.exec = None
        self.arrays: list[DeviceArray] = []
        try:
            self.programs = list(programs) if programs is not None else [self._lower(it, machine) for it in self.items]
            if len(self.programs) != len(self.items): raise GraphError(f"{len(self.programs)} programs for {len(self.items)} kernels")
            self.arrays = [self.dev.alloc(n) for n in self.plan.sizes]
            for n in self.meta:
                if n not in self.lp.inputs: self.buffer(n).fill_bytes(0xFF)   # unwritten elements read as NaN / -1
            if arrays is not None: self.set_inputs(arrays)
            self.launches = [self._compile(it, p) for it, p in zip(self.items, self.programs)]
        except BaseException:
            self.close()
            raise

    def set_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy the model's inputs into the graph's input buffers (the graph's addresses stay;
        a replay then reads them). Every input must be given, with the kernels' bytes and dtype."""
        check_inputs(self.meta, arrays)
        absent = [n for n in self.lp.inputs if n not in arrays]
        if absent: raise GraphError(f"inputs {absent} are read but not given")
        for n in self.lp.inputs: self.buffer(n).upload(np.ascontiguousarray(arrays[n]).reshape(-1))

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs copied in, one replay of the graph (captured on the first call), every output read back."""
        self.set_inputs(arrays)
        self.replay()
        return {n: self.output(n) for n in self.outputs}

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
