"""The host-CPU backend: C rendered from a ``Program``, built with the system compiler
into a shared library (cached by source hash), run through ctypes in a worker process
so that a crash or a hang of generated code is reported against that candidate only."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np

from ...ir.program import Program
from ..base import Backend, Compiled, Failure, Timing
from . import conv, gemm
from .render import render
from .worker import WorkerPool

# -fno-tree-loop-if-convert: GCC 12.2 at -O3 -march=native (AVX-512) -fopenmp miscompiles a
# select over an if-converted, OpenMP-outlined block loop (`c ? x : 0` came out as x; found by
# the random-kernel test, reproduced outside superopt); without if-conversion the code is right.
# -fwrapv: integer arithmetic wraps like the reference interpreter (signed overflow is
# otherwise undefined in C, and -O3 exploits it: an index hash came out wrong).
CFLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-fopenmp", "-ffp-contract=fast", "-fno-math-errno",
          "-fno-tree-loop-if-convert", "-fwrapv", "-std=gnu11"]


def cache_dir() -> Path:
    from ...search.machine import calibration_dir
    d = calibration_dir() / "cpu-build"
    d.mkdir(parents=True, exist_ok=True)
    return d


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc: raise RuntimeError("no C compiler found (set CC)")
    return cc


class CPUBackend(Backend):
    name = "cpu"

    def __init__(self, machine=None, timeout_s: float = 60.0, compile_timeout_s: float = 120.0,
                 build_dir: Path | None = None):
        """``build_dir``: where compiled kernels are kept (default: the user cache's cpu-build;
        ``superopt bench`` passes an empty one so every method pays for its own compiles)."""
        from ...search.machine import load
        self.machine = machine or load("cpu")
        self.timeout_s, self.compile_timeout_s = timeout_s, compile_timeout_s
        self.build_dir = build_dir
        self.pool = WorkerPool()

    def render(self, program: Program) -> str:
        if _native(program) == "cpu_gemm": return gemm.render(program)  # the packed GEMM template
        if _native(program) == "cpu_conv": return conv.render(program)  # the implicit-GEMM convolution
        return render(program)

    def compile(self, program: Program) -> Compiled | Failure:
        src = self.source(program)
        if isinstance(src, Failure): return src
        cc = compiler()
        h = hashlib.sha256((cc + " ".join(CFLAGS) + src).encode()).hexdigest()[:24]
        d = self.build_dir or cache_dir()
        d.mkdir(parents=True, exist_ok=True)
        so = d / f"k_{h}.so"
        if not so.exists():
            c = so.with_suffix(f".{os.getpid()}.c")  # per process: concurrent builds of one source never collide
            c.write_text(src)
            tmp = so.with_suffix(f".{os.getpid()}.tmp")
            try:
                r = subprocess.run([cc, *CFLAGS, str(c), "-o", str(tmp), "-lm"], capture_output=True, text=True,
                                   timeout=self.compile_timeout_s)
            except subprocess.TimeoutExpired:
                return Failure("compile", f"compiler timed out after {self.compile_timeout_s:.0f} s")
            if r.returncode != 0:
                return Failure("compile", (r.stderr or r.stdout).strip()[-2000:])
            os.replace(c, so.with_suffix(".c"))  # kept next to the library for reading
            os.replace(tmp, so)
        return Compiled(program, str(so), src)

    def run(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray) -> np.ndarray | Failure:
        err = _check_args(compiled.program, inputs, out)
        if err: return err
        r = self.pool.call(self._request("run", compiled), [*inputs, out], self.timeout_s)
        if isinstance(r, Failure): return r
        out.reshape(-1)[:] = r[1][0].reshape(-1)
        return out

    def time(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray,
             warmup: int = 2, runs: int = 15, min_s: float = 1e-3) -> Timing | Failure:
        err = _check_args(compiled.program, inputs, out)
        if err: return err
        req = dict(self._request("time", compiled), warmup=warmup, runs=runs, min_s=min_s)
        r = self.pool.call(req, [*inputs, out], self.timeout_s * 4)
        return r if isinstance(r, Failure) else Timing.of(r[0]["samples"])

    @staticmethod
    def _request(op: str, compiled: Compiled) -> dict:
        return {"op": op, "so": compiled.handle, "workers": compiled.program.workers}

    def close(self) -> None: self.pool.close()


def _check_args(p: Program, inputs: Sequence[np.ndarray], out: np.ndarray) -> Failure | None:
    if len(inputs) != len(p.inputs): return Failure("launch", f"expected {len(p.inputs)} inputs, got {len(inputs)}")
    for a, b in zip(list(inputs) + [out], list(p.inputs) + [p.output]):
        if a.dtype != b.dtype.np or a.size != b.size:
            return Failure("launch", f"buffer {b.name}: expected {b.dtype.name}[{b.size}], got {a.dtype}[{a.size}]")
    return None


def _native(p: Program) -> str:
    """The native template family of a program whose body is one Native statement, else ""."""
    from ...ir.program import Native
    return p.body[0].family if len(p.body) == 1 and isinstance(p.body[0], Native) else ""


def backend(machine=None) -> CPUBackend: return CPUBackend(machine)
