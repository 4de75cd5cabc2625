"""The interface every backend implements (cpu, cuda, emu, hexagon).

A backend turns a ``Program`` into something runnable, runs it on numpy inputs and
times it. Failures are values, never exceptions escaping to the tuner: ``compile``
returns a ``Compiled`` or a ``Failure``; ``run``/``time`` return a ``Failure`` for a
crash, a timeout or a launch error of that candidate.
"""
from __future__ import annotations

import statistics
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..ir.program import Program


@dataclass(frozen=True)
class Failure:
    """Why a candidate did not produce a result."""
    kind: str      # "compile" | "crash" | "timeout" | "launch" | "wrong"
    message: str

    def __str__(self) -> str: return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class Compiled:
    """A runnable artifact for one program (backend-specific ``handle``)."""
    program: Program
    handle: Any
    source: str = ""


@dataclass(frozen=True)
class Timing:
    median_s: float
    samples: tuple[float, ...] = field(default_factory=tuple)
    counters: dict = field(default_factory=dict)   # optional event counts (hexagon: packets, instructions, ...)

    @staticmethod
    def of(samples: Sequence[float]) -> "Timing":
        return Timing(statistics.median(samples), tuple(samples))


class Backend(ABC):
    name: str
    machine: Any  # ir.target.Target (the built-ins: search/machine.py)

    @abstractmethod
    def render(self, program: Program) -> str:
        """Source code (or a readable dump) of the program."""

    @abstractmethod
    def compile(self, program: Program) -> Compiled | Failure: ...

    @abstractmethod
    def run(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray) -> np.ndarray | Failure:
        """Execute once; ``out`` (storage dtype, flat or shaped) is written in place and returned."""

    @abstractmethod
    def time(self, compiled: Compiled, inputs: Sequence[np.ndarray], out: np.ndarray,
             warmup: int = 2, runs: int = 15, min_s: float = 1e-3) -> Timing | Failure:
        """Median of ``runs`` samples, each averaging enough calls to last ``min_s``."""

    def source(self, program: Program) -> str | Failure:
        """``render``, with a renderer gap turned into this candidate's compile failure."""
        try:
            return self.render(program)
        except Exception as e:  # a renderer gap fails the candidate, never the caller
            return Failure("compile", f"render: {type(e).__name__}: {e}")

    def close(self) -> None:
        """Release workers or devices held by the backend."""


def get(name: str, machine=None, build_dir=None) -> Backend:
    """A backend by name ('cpu' now; 'cuda', 'emu', 'hexagon' when present); ``build_dir``:
    where the cpu backend keeps compiled kernels (others build in memory or by content hash)."""
    if name == "cpu":
        from .cpu import CPUBackend
        return CPUBackend(machine, build_dir=build_dir)
    try:
        import importlib
        mod = importlib.import_module(f"superopt.backends.{name}")
    except ModuleNotFoundError:
        raise ValueError(f"unknown backend {name!r} (available: cpu)") from None
    if not hasattr(mod, "backend"):
        raise ValueError(f"backend {name!r} does not offer backend(machine)")
    return mod.backend(machine)
