"""The Hexagon backend: HVX C rendered from a ``Program``, compiled with clang for
hexagonv66 (128-byte HVX), linked statically with ld.lld, run under qemu-hexagon.

qemu executes instructions but does not model Hexagon timing, so ``time`` is not
offered; cycles come from the VLIW model (``search/vliw.py``) over clang's assembly,
see ``model``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from superopt.ir.program import Program
from ..base import Backend, Compiled, Failure, Timing
from . import tools
from .render import KERNEL_FN, render


class HexagonBackend(Backend):
    name = "hexagon"

    def __init__(self, machine=None, timeout_s: float = 60.0):
        from superopt.search.machine import load
        self.machine = machine or load("hexagon")
        self.timeout_s = timeout_s

    def render(self, program: Program) -> str: return render(program)

    def compile(self, program: Program) -> Compiled | Failure:
        src = self.source(program)
        if isinstance(src, Failure): return src
        exe = tools.compile_program(src)
        return exe if isinstance(exe, Failure) else Compiled(program, exe, src)

    def run(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray) -> np.ndarray | Failure:
        p = compiled.program
        if len(inputs) != len(p.inputs): return Failure("launch", f"expected {len(p.inputs)} inputs, got {len(inputs)}")
        for a, b in zip(list(inputs) + [out], list(p.inputs) + [p.output]):
            if a.dtype != b.dtype.np or a.size != b.size:
                return Failure("launch", f"buffer {b.name}: expected {b.dtype.name}[{b.size}], got {a.dtype}[{a.size}]")
        stdin = b"".join(np.ascontiguousarray(a).tobytes() for a in inputs)  # Hexagon is little-endian
        r = tools.run_program(compiled.handle, stdin, out.nbytes, self.timeout_s)
        if isinstance(r, Failure): return r
        out.reshape(-1)[:] = np.frombuffer(r, dtype=out.dtype)
        return out

    def time(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray,
             warmup: int = 2, runs: int = 15, min_s: float = 1e-3) -> Timing | Failure:
        return Failure("launch", "qemu does not model Hexagon time; use backends.hexagon.model (VLIW cycles)")


def backend(machine=None) -> HexagonBackend: return HexagonBackend(machine)


__all__ = ["HexagonBackend", "backend", "render", "tools", "KERNEL_FN"]
