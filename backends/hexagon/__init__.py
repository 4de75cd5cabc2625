"""The Hexagon backend: HVX C rendered from a ``Program``, compiled with clang for
hexagonv66 (128-byte HVX), linked statically with ld.lld, run under qemu-hexagon.

qemu executes instructions but does not model Hexagon timing; it counts them. ``time``
runs the kernel once under qemu with the counters c20/c21/c22 read around the kernel call
(packets, instructions, HVX instructions) and returns packets / the machine's
``clock_hz`` (an assumption, ``machine.notes``) plus a stall model of 0 packets (none is
modeled: qemu counts issued packets). The count is deterministic, so one run is the sample.
Static cycles of clang's assembly come from the VLIW model (``search/vliw.py``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...ir.program import Program
from ..base import Backend, Compiled, Failure, Timing
from . import templates, tools
from .render import KERNEL_FN, render


class HexagonBackend(Backend):
    name = "hexagon"

    def __init__(self, machine=None, timeout_s: float = 60.0):
        from ...search.machine import load
        self.machine = machine or load("hexagon")
        self.timeout_s = timeout_s

    def render(self, program: Program) -> str:
        # a Native program (schedule family) is rendered by its template (templates.TEMPLATES)
        return templates.render(program) if templates.family(program) else render(program)

    def compile(self, program: Program) -> Compiled | Failure:
        src = self.source(program)
        if isinstance(src, Failure): return src
        exe = tools.compile_program(src)
        return exe if isinstance(exe, Failure) else Compiled(program, exe, src)

    @staticmethod
    def _stdin(compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray) -> bytes | Failure:
        p = compiled.program
        if len(inputs) != len(p.inputs): return Failure("launch", f"expected {len(p.inputs)} inputs, got {len(inputs)}")
        for a, b in zip(list(inputs) + [out], list(p.inputs) + [p.output]):
            if a.dtype != b.dtype.np or a.size != b.size:
                return Failure("launch", f"buffer {b.name}: expected {b.dtype.name}[{b.size}], got {a.dtype}[{a.size}]")
        return b"".join(np.ascontiguousarray(a).tobytes() for a in inputs)  # Hexagon is little-endian

    def run(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray) -> np.ndarray | Failure:
        stdin = self._stdin(compiled, inputs, out)
        if isinstance(stdin, Failure): return stdin
        r = tools.run_program(compiled.handle, stdin, out.nbytes, self.timeout_s)
        if isinstance(r, Failure): return r
        out.reshape(-1)[:] = np.frombuffer(r, dtype=out.dtype)
        return out

    def time(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray,
             warmup: int = 2, runs: int = 15, min_s: float = 1e-3) -> Timing | Failure:
        stdin = self._stdin(compiled, inputs, out)
        if isinstance(stdin, Failure): return stdin
        r = tools.run_counted(compiled.handle, stdin, out.nbytes, self.timeout_s)
        if isinstance(r, Failure): return r
        data, counts = r
        if counts is None: return Failure("launch", "the program printed no qemu counters")
        packets, instrs, hvx = counts
        notes = self.machine.notes
        clock = float(notes.get("clock_hz", 1.0e9))
        stalls = 0   # stall model: none (qemu counts issued packets; no hardware to calibrate)
        t = (packets + stalls) / clock
        out.reshape(-1)[:] = np.frombuffer(data, dtype=out.dtype)
        return Timing(t, (t,), {"packets": packets, "instructions": instrs, "hvx_instructions": hvx,
                                "stall_packets": stalls, "clock_hz": clock,
                                "clock_source": notes.get("clock_source", "assumption")})


def backend(machine=None) -> HexagonBackend: return HexagonBackend(machine)


__all__ = ["HexagonBackend", "backend", "render", "tools", "KERNEL_FN"]
