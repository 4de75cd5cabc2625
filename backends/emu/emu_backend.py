"""``EmuBackend``: the ``Backend`` interface over the numpy GPU emulator. It runs every
block (or a sample, if asked) and keeps the counters of the last run; it does not time."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..base import Backend, Compiled, Failure, Timing
from ...ir.program import Program

from .counters import Counters
from .executor import WARP, EmuError, run_program


class EmuBackend(Backend):
    name = "emu"

    def __init__(self, machine=None, max_blocks: int | None = None):
        from ...search.machine import load
        self.machine = machine or load("h100")
        self.max_blocks = max_blocks
        self.last_counters: Counters | None = None

    def render(self, program: Program) -> str: return program.describe()

    def compile(self, program: Program) -> Compiled | Failure:
        if self.machine.warp != WARP:  # the emulator runs NVIDIA warps (fragments, shuffles, bank phases)
            return Failure("compile", f"the emulator runs warps of {WARP} lanes, {self.machine.name} has {self.machine.warp}")
        if program.threads > getattr(self.machine, "max_threads", 1024):
            return Failure("compile", f"{program.threads} threads per block > {self.machine.max_threads}")
        return Compiled(program, program, program.describe())

    def run(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray) -> np.ndarray | Failure:
        p = compiled.program
        try:
            r = run_program(p, list(inputs), max_blocks=self.max_blocks or p.blocks)
        except (EmuError, IndexError) as e:
            return Failure("crash", str(e))
        self.last_counters = r.counters
        flat = out.reshape(-1)
        flat[r.written.reshape(-1)] = r.output.reshape(-1)[r.written.reshape(-1)]
        return out

    def time(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray,
             warmup: int = 2, runs: int = 15, min_s: float = 1e-3) -> Timing | Failure:
        return Failure("launch", "the emulator does not time programs; read its counters instead")
