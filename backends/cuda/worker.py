"""Run risky CUDA work in a child process, so an illegal address, a sticky CUDA error
or a hang costs that one candidate and never the caller.

Messages use the backends' shared wire format (``backends/wire.py``: JSON headers and raw
array bytes, no code). ``Worker`` is the parent side; ``python -m
superopt.backends.cuda.worker`` is the child.
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile

import numpy as np

from ..wire import recv, send
from .runtime import CudaError, Device, _drv, check


# ---- child -----------------------------------------------------------------------------
def _run(dev: Device, req: dict, blobs: list[bytes]) -> tuple[dict, list[bytes]]:
    """Launch one kernel (``source``/``name``/``grid``/``block``/``smem`` over all buffers
    in order) or a sequence (``kernels``: each with ``args``, indices into ``buffers``),
    check it, return the ``outputs`` after the first run and, if asked, timings of the
    whole sequence (L2 flushed once before each run of it). A kernel with TMA copies
    lists its ``tensor_maps`` (each over one of its arguments); they are encoded once per
    input set and passed by value after its buffers."""
    specs = req["buffers"]
    seq = req.get("kernels") or [{**{k: req[k] for k in ("source", "name", "grid", "block")}, "smem": req.get("smem", 0),
                                  "args": list(range(len(specs))), "tensor_maps": req.get("tensor_maps", [])}]
    fns = [dev.compile(k["source"], k["name"], req.get("options", [])) for k in seq]
    timing = req.get("time")
    sets = max(1, int(timing.get("sets", 1))) if timing else 1
    bufsets: list[list] = []
    maps: dict[int, list] = {}   # id(buffer set) -> per kernel its encoded tensor maps (addresses differ per set)

    def encode(bufs) -> None:  # before any timed launch: encoding is host work between the events
        if id(bufs) not in maps: maps[id(bufs)] = [_tensor_maps(dev, k, [bufs[i] for i in k["args"]]) for k in seq]

    def launch_all(bufs) -> None:
        encode(bufs)
        for k, fn, tm in zip(seq, fns, maps[id(bufs)]):
            dev.launch(fn, k["grid"], k["block"], [bufs[i] for i in k["args"]] + tm, k.get("smem", 0))

    try:
        first = []
        for sp in specs:
            a = dev.alloc(sp["nbytes"])
            first.append(a)
            if sp.get("blob") is not None: a.upload(np.frombuffer(blobs[sp["blob"]], np.uint8))
            else: a.fill_bytes(0xFF)  # poison: unwritten elements read as NaN / -1
        bufsets.append(first)
        launch_all(first)
        dev.synchronize()
        outs = [first[i].download(np.uint8, specs[i]["nbytes"]).tobytes() for i in req["outputs"]]
        resp = {"ok": True, "registers": [f.registers for f in fns], "local_bytes": [f.local_bytes for f in fns],
                "static_smem": [f.static_smem for f in fns]}
        if not req.get("kernels"):
            resp = {k: v[0] for k, v in resp.items() if k != "ok"} | {"ok": True}
        if timing:
            for _ in range(1, sets):  # more input sets: the same data at other addresses
                cp = [dev.alloc(sp["nbytes"]) for sp in specs]
                bufsets.append(cp)
                for a, b in zip(first, cp):
                    check(_drv.cuMemcpyDtoD(b.ptr, a.ptr, a.nbytes), "memory", "cuMemcpyDtoD")
            for bs in bufsets: encode(bs)
            resp["times"] = dev.time(lambda i: launch_all(bufsets[i % sets]), reps=int(timing.get("reps", 50)),
                                     warmup=int(timing.get("warmup", 3)), flush=bool(timing.get("flush", True)),
                                     budget_s=float(timing.get("budget_s", 2.0)))
        return resp, outs
    finally:
        for bs in bufsets:
            for a in bs:
                try: dev.free(a)
                except CudaError: pass  # a sticky error already reported; the process exits next


def _tensor_maps(dev: Device, k: dict, args: list) -> list:
    """The kernel's TMA tensor maps (``tensor_maps``: backends/cuda/tma.specs) over its
    launch arguments, encoded by the driver, in parameter order."""
    from .tma import encode_args
    try:
        return [dev.tensor_map(encode_args(m, args[m["arg"]].ptr)) for m in k.get("tensor_maps", [])]
    except ValueError as e:
        raise CudaError("launch", str(e), "TENSOR_MAP") from None


def child_main() -> int:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but framed messages on the pipe
    dev = None
    while True:
        try:
            req, blobs = recv(inp)
        except EOFError:
            return 0
        try:
            if dev is None: dev = Device.get()
            if req["op"] == "info": send(out, {"ok": True, "info": dev.info()})
            elif req["op"] == "compile":
                fn = dev.compile(req["source"], req["name"], req.get("options", []))
                send(out, {"ok": True, "registers": fn.registers, "local_bytes": fn.local_bytes,
                           "static_smem": fn.static_smem, "max_threads": fn.max_threads, "log": fn.log})
            elif req["op"] == "run":
                resp, outs = _run(dev, req, blobs)
                send(out, resp, outs)
            else: send(out, {"ok": False, "stage": "protocol", "error": f"unknown op {req['op']!r}"})
        except CudaError as e:
            fatal = e.sticky or e.code == "NO_DEVICE"  # the context is unusable: say so, then exit
            send(out, {"ok": False, "stage": e.stage, "code": e.code, "error": str(e), "exiting": fatal})
            if fatal: return 1
        except Exception as e:  # noqa: BLE001 - report, stay alive
            send(out, {"ok": False, "stage": "worker", "error": f"{type(e).__name__}: {e}"})


# ---- parent ----------------------------------------------------------------------------
class WorkerFailed(RuntimeError):
    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage


class Worker:
    """A child process holding the CUDA context; restarted after a crash or timeout."""

    def __init__(self, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._err = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child never blocks on it
        self.proc = subprocess.Popen([sys.executable, "-m", "superopt.backends.cuda.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, env=env)

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill(); self.proc.wait()  # noqa: E702
            self.proc = None

    def __del__(self):
        try: self.close()
        except Exception: pass  # noqa: BLE001, E701 - interpreter shutdown

    def _stderr_tail(self) -> str:
        try:
            self._err.seek(0)
            return self._err.read()[-2000:].decode(errors="replace").strip()
        except (OSError, ValueError, AttributeError):
            return ""

    def request(self, header: dict, blobs: list = (), timeout_s: float | None = None) -> tuple[dict, list[bytes]]:
        """Send one request; raise ``WorkerFailed`` on a crash or timeout (the child is then
        restarted on the next request). CUDA errors come back as ``ok: False`` replies."""
        if self.proc is None or self.proc.poll() is not None: self._start()
        limit = timeout_s or self.timeout_s
        try:
            send(self.proc.stdin, header, blobs)
        except (BrokenPipeError, OSError):
            err = self._stderr_tail(); self.proc = None  # noqa: E702
            raise WorkerFailed("crash", f"CUDA worker died before the request: {err}") from None
        ready, _, _ = select.select([self.proc.stdout], [], [], limit)
        if not ready:
            self.proc.kill(); self.proc.wait(); self.proc = None  # noqa: E702
            raise WorkerFailed("timeout", f"no answer within {limit:.0f} s (hang?); worker killed")
        try:
            resp, outs = recv(self.proc.stdout)
        except (EOFError, OSError, ValueError):
            self.proc.wait(); err = self._stderr_tail(); code = self.proc.returncode; self.proc = None  # noqa: E702
            raise WorkerFailed("crash", f"CUDA worker exited with status {code}: {err}") from None
        if resp.get("exiting"):  # a sticky CUDA error: the child exits; the next request starts a fresh one
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill(); self.proc.wait()  # noqa: E702
            self.proc = None
        return resp, outs


if __name__ == "__main__":
    sys.exit(child_main())
