"""A worker process that loads compiled kernels and runs them, restarted after a crash
or a timeout, so generated code can never take the caller down."""
from __future__ import annotations

import ctypes
import math
import pickle
import select
import signal
import struct
import subprocess
import sys
from typing import Any

import numpy as np

from ..base import Failure


def _serve(conn) -> None:
    libs: dict[str, Any] = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        kind, so, inputs, out, workers = msg[:5]
        if so not in libs:
            lib = ctypes.CDLL(so)
            lib.superopt_run.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
            lib.superopt_time.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
            lib.superopt_time.restype = ctypes.c_double
            libs[so] = lib
        lib = libs[so]
        arrs = [np.ascontiguousarray(a) for a in inputs] + [np.ascontiguousarray(out).copy()]
        ptrs = (ctypes.c_void_p * len(arrs))(*[a.ctypes.data for a in arrs])
        if kind == "run":
            lib.superopt_run(ptrs, workers)
            conn.send(arrs[-1])
        else:
            warmup, runs, min_s = msg[5:]
            for _ in range(max(1, warmup)): lib.superopt_run(ptrs, workers)
            one = lib.superopt_time(ptrs, workers, 1)
            iters = max(1, min(1 << 20, math.ceil(min_s / max(one, 1e-9))))
            conn.send([lib.superopt_time(ptrs, workers, iters) / iters for _ in range(runs)])


class WorkerPool:
    """One lazily started worker process (a fresh interpreter running this module),
    talking length-prefixed pickles of our own messages over its stdin/stdout."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "superopt.backends.cpu.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env())

    def call(self, msg: tuple, timeout_s: float) -> Any:
        if self.proc is None or self.proc.poll() is not None: self._start()
        try:
            _send(self.proc.stdin, msg)
            r, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
            if not r:
                self.close()
                return Failure("timeout", f"no result after {timeout_s:.0f} s")
            return _recv(self.proc.stdout)
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError, pickle.UnpicklingError):
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


def _send(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<Q", len(data)) + data)
    f.flush()


def _read(f, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk: raise EOFError("worker closed its pipe")
        buf += chunk
    return buf


def _recv(f):
    (n,) = struct.unpack("<Q", _read(f, 8))
    return pickle.loads(_read(f, n))  # our own worker's reply (numpy arrays / floats), never user data


class _Conn:
    def __init__(self):
        import os
        proto = os.dup(1)
        os.dup2(2, 1)  # anything the loaded code prints goes to stderr, never into the replies
        self.i, self.o = sys.stdin.buffer, os.fdopen(proto, "wb")
    def recv(self): return _recv(self.i)
    def send(self, obj): _send(self.o, obj)


if __name__ == "__main__":
    _serve(_Conn())


def _env() -> dict:
    """Idle OpenMP threads sleep instead of spinning: a spinning thread can hold the core
    its sibling needs when other processes share the machine (measured: 5 ms instead of 1)."""
    import os
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "passive")
    return env
