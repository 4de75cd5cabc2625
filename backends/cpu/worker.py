"""A worker process that loads compiled kernels and runs them, restarted after a crash
or a timeout, so generated code can never take the caller down."""
from __future__ import annotations

import ctypes
import math
import select
import signal
import subprocess
import sys
from typing import Any

import numpy as np

from ..base import Failure
from ..wire import pack_arrays, recv, send, unpack_arrays


def _serve(inp, out) -> None:
    libs: dict[str, Any] = {}
    while True:
        try:
            req, blobs = recv(inp)
        except EOFError:
            return
        so = req["so"]
        if so not in libs:
            lib = ctypes.CDLL(so)
            lib.superopt_run.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
            lib.superopt_time.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
            lib.superopt_time.restype = ctypes.c_double
            libs[so] = lib
        lib, workers = libs[so], req["workers"]
        arrs = unpack_arrays(req["arrays"], blobs)  # the inputs, then the (poisoned) output
        ptrs = (ctypes.c_void_p * len(arrs))(*[a.ctypes.data for a in arrs])
        if req["op"] == "run":
            lib.superopt_run(ptrs, workers)
            meta, data = pack_arrays(arrs[-1:])
            send(out, {"arrays": meta}, data)
        else:
            for _ in range(max(1, req["warmup"])): lib.superopt_run(ptrs, workers)
            one = lib.superopt_time(ptrs, workers, 1)
            iters = max(1, min(1 << 20, math.ceil(req["min_s"] / max(one, 1e-9))))
            send(out, {"samples": [lib.superopt_time(ptrs, workers, iters) / iters for _ in range(req["runs"])]})


class WorkerPool:
    """One lazily started worker process (a fresh interpreter running this module),
    talking the shared wire format (``backends/wire.py``) over its stdin/stdout."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "superopt.backends.cpu.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env())

    def call(self, header: dict, arrays: list[np.ndarray], timeout_s: float) -> tuple[dict, list[np.ndarray]] | Failure:
        """Send a request with its arrays; the reply header and arrays, or a Failure."""
        if self.proc is None or self.proc.poll() is not None: self._start()
        try:
            meta, data = pack_arrays(arrays)
            send(self.proc.stdin, dict(header, arrays=meta), data)
            r, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
            if not r:
                self.close()
                return Failure("timeout", f"no result after {timeout_s:.0f} s")
            reply, blobs = recv(self.proc.stdout)
            return reply, unpack_arrays(reply.get("arrays", []), blobs)
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError, ValueError):
            try:
                code = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            self.close()
            why = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
            return Failure("crash", f"generated code crashed the worker ({why})")

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self.proc = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _child_pipes():
    """(requests in, replies out): replies get a private copy of stdout, and fd 1 points at
    stderr, so anything the loaded code prints can never corrupt them."""
    import os
    proto = os.dup(1)
    os.dup2(2, 1)
    return sys.stdin.buffer, os.fdopen(proto, "wb")


if __name__ == "__main__":
    _serve(*_child_pipes())


def _env() -> dict:
    """Idle OpenMP threads sleep instead of spinning: a spinning thread can hold the core
    its sibling needs when other processes share the machine (measured: 5 ms instead of 1)."""
    import os
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "passive")
    return env
