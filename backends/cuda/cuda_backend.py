"""``CudaBackend``: the ``Backend`` interface on an NVIDIA GPU. Rendering happens here;
compiling, launching and timing happen in a worker process (``worker.py``), so a
candidate that faults or hangs is reported as a ``Failure`` and the caller goes on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..base import Backend, Compiled, Failure, Timing
from ...ir.program import Program

from . import tma
from .render import kernel_name, render
from .runtime import NoDevice, _drv
from .worker import Worker, WorkerFailed

_STAGE = {"compile": "compile", "launch": "launch", "memory": "launch", "timing": "launch", "init": "launch",
          "worker": "crash", "protocol": "crash"}


def probe() -> tuple[bool, str]:
    """Whether a CUDA device is visible (and why not), without creating a context here."""
    if _drv is None: return False, "the cuda-python bindings are not installed"
    try:
        err, = _drv.cuInit(0)
        if int(err) != 0: return False, f"cuInit: {err}"
        err, n = _drv.cuDeviceGetCount()
        if int(err) != 0 or n < 1: return False, "the driver sees none"
    except Exception as e:  # noqa: BLE001 - a missing libcuda surfaces as various exceptions
        return False, f"the CUDA driver could not be loaded: {e}"
    return True, ""


@dataclass(frozen=True)
class Launch:
    name: str
    grid: int
    block: int
    smem: int
    registers: int
    local_bytes: int   # > 0: registers spilled to local memory


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self, machine=None, timeout_s: float = 60.0):
        ok, why = probe()
        if not ok: raise NoDevice(why)
        self.worker = Worker(timeout_s)
        self.device = self._info()
        self.machine = machine or machine_for(self.device)

    def _info(self) -> dict:
        resp, _ = self.worker.request({"op": "info"})
        if not resp.get("ok"): raise NoDevice(resp.get("error", "the worker could not open the device"))
        return resp["info"]

    def render(self, program: Program) -> str: return render(program)[0]

    def compile(self, program: Program) -> Compiled | Failure:
        try:
            src, smem = render(program)
        except ValueError as e:
            return Failure("compile", f"cannot render: {e}")
        limit = self.machine.smem_per_block
        if limit and smem > limit:  # the launch would fail with an opaque invalid-value error
            return Failure("compile", f"shared memory {smem} B per block > {limit} B, the most a block may have")
        name = kernel_name(program)
        try:
            resp, _ = self.worker.request({"op": "compile", "source": src, "name": name})
        except WorkerFailed as e:
            return Failure(e.stage, str(e))
        if not resp["ok"]: return Failure(_STAGE.get(resp.get("stage"), "compile"), resp["error"])
        return Compiled(program, Launch(name, program.blocks, program.threads, smem, resp["registers"], resp["local_bytes"]), src)

    def _request(self, c: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray, timing: dict | None):
        if isinstance(c, Failure): return c  # a failed compile handed on: its own reason, not an AttributeError
        p, h = c.program, c.handle
        arrays = [np.ascontiguousarray(np.asarray(a).reshape(-1), dtype=b.dtype.np) for a, b in zip(inputs, p.inputs)]
        if len(arrays) != len(p.inputs) or any(a.size != b.size for a, b in zip(arrays, p.inputs)):
            return Failure("launch", f"inputs do not match the program's {[b.shape for b in p.inputs]}")
        init = np.ascontiguousarray(out.reshape(-1), dtype=p.output.dtype.np)  # the caller's poison shows unwritten outputs
        if init.nbytes != p.output.nbytes: return Failure("launch", f"output buffer holds {init.size} elements, expected {p.output.size}")
        bufs = [{"nbytes": p.output.nbytes, "blob": len(arrays)}] + [{"nbytes": a.nbytes, "blob": i} for i, a in enumerate(arrays)]
        req = {"op": "run", "source": c.source, "name": h.name, "grid": [h.grid], "block": [h.block], "smem": h.smem,
               "buffers": bufs, "outputs": [0], "time": timing, "tensor_maps": tma.specs(p)}
        try:
            resp, outs = self.worker.request(req, [memoryview(a).cast("B") for a in arrays + [init]])
        except WorkerFailed as e:
            return Failure(e.stage, str(e))
        if not resp["ok"]: return Failure(_STAGE.get(resp.get("stage"), "launch"), resp["error"])
        return resp, np.frombuffer(outs[0], dtype=p.output.dtype.np)

    def run(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray) -> np.ndarray | Failure:
        r = self._request(compiled, inputs, out, None)
        if isinstance(r, Failure): return r
        out.reshape(-1)[:] = r[1]
        return out

    def time(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray,
             warmup: int = 2, runs: int = 15, min_s: float = 1e-3) -> Timing | Failure:
        """CUDA events around each launch, L2 flushed before it, input sets rotated; the
        median of ``runs`` launches (``min_s`` is not needed: events time one launch)."""
        p = compiled.program
        nbytes = sum(b.nbytes for b in p.inputs) + p.output.nbytes
        sets = max(1, min(4, int(8e9 // max(1, nbytes))))
        r = self._request(compiled, inputs, out, {"reps": max(runs, 5), "warmup": max(1, warmup), "sets": sets,
                                             "flush": True, "budget_s": 5.0})
        if isinstance(r, Failure): return r
        out.reshape(-1)[:] = r[1]
        return Timing.of(r[0]["times"])

    def run_sequence(self, compiled: Sequence[Compiled], args: Sequence[Sequence[int]], buffers: Sequence[np.ndarray],
                     outputs: Sequence[int], runs: int = 0, warmup: int = 2) -> tuple[list[np.ndarray], Timing | None] | Failure:
        """Run kernels back to back over shared buffers (kernel i gets ``buffers[j] for j in
        args[i]``: its output first, then its inputs), as a program runs them; returns the
        ``outputs`` after the first run and, with ``runs``, the median time of the whole
        sequence (L2 flushed once before each run, input sets rotated)."""
        arrays = [np.ascontiguousarray(b).reshape(-1) for b in buffers]
        seq = [{"source": c.source, "name": c.handle.name, "grid": [c.handle.grid], "block": [c.handle.block],
                "smem": c.handle.smem, "args": list(a), "tensor_maps": tma.specs(c.program)} for c, a in zip(compiled, args)]
        nbytes = sum(a.nbytes for a in arrays)
        timing = {"reps": max(runs, 5), "warmup": max(1, warmup), "sets": max(1, min(4, int(8e9 // max(1, nbytes)))),
                  "flush": True, "budget_s": 5.0} if runs else None
        req = {"op": "run", "kernels": seq, "buffers": [{"nbytes": a.nbytes, "blob": i} for i, a in enumerate(arrays)],
               "outputs": list(outputs), "time": timing}
        try:
            resp, outs = self.worker.request(req, [memoryview(a).cast("B") for a in arrays])
        except WorkerFailed as e:
            return Failure(e.stage, str(e))
        if not resp["ok"]: return Failure(_STAGE.get(resp.get("stage"), "launch"), resp["error"])
        got = [np.frombuffer(o, dtype=arrays[i].dtype) for o, i in zip(outs, outputs)]
        return got, (Timing.of(resp["times"]) if runs else None)

    def close(self) -> None: self.worker.close()


def machine_for(info: dict):
    """The Target of this device, with stored calibration applied (another GPU: the H100's
    numbers with its own SMs, L2, shared memory and the capabilities of its arch)."""
    from ...search import machine as M
    name = "h100" if "H100" in info["name"] else "h200" if "H200" in info["name"] else None
    if name: return M.load(name)
    sm = int("".join(c for c in str(info.get("arch", "")) if c.isdigit()) or M.H100.sm)
    return M.nvidia_at(M.H100, sm, name=info["name"].lower().replace(" ", "-"), cores=info["sms"], l2_bytes=info["l2_bytes"],
                       smem_per_block=info["smem_optin"])
