"""Schedule families behind one interface, and the registry the engine asks.

A family is one way of running a kernel on a target: plain SIMT loops, staged SIMT,
mma.sync, wgmma, the CPU loop nest, the packed CPU GEMM, the HVX assembly templates. Each
module of this package defines ``FAMILY``, an object with the ``Family`` interface; adding a
family is adding a module here (``registry`` finds it).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from ...ir.kernel import Kernel
from ...ir.schedule import Schedule


@dataclass
class Candidate:
    schedule: Schedule
    modeled_s: float            # the family's cost model, seconds on the target


@dataclass
class Solved:
    """A family's answer for one kernel: candidates best first, and what is known of the optimum."""
    family: str
    candidates: list[Candidate]
    method: str                 # "z3", "enumeration", "hand", ...
    proved_optimal: bool        # the first candidate is optimal under the family's model
    bound_s: float | None = None  # a proven lower bound on the model's time where not proved optimal
    solve_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


class Family(Protocol):
    name: str

    def applies(self, kernel: Kernel, machine) -> bool:
        """Whether this family can run ``kernel`` on ``machine`` at all (cheap: no lowering)."""

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        """The legal schedules the family offers (may be large: iterate)."""

    def legal(self, kernel: Kernel, schedule: Schedule, machine) -> list[str]:
        """Every reason ``schedule`` is illegal (empty: legal). Analytic counts, no lowering."""

    def cost(self, kernel: Kernel, schedule: Schedule, machine) -> float:
        """Modeled seconds."""

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        """The family's hand rule (what an engineer writes first), or None."""

    def solve(self, kernel: Kernel, machine, timeout_s: float, top: int = 4) -> Solved:
        """The best ``top`` schedules under the family's model, with the proof status."""


def registry(package: str = __name__) -> list[Family]:
    """Every family module's ``FAMILY`` in ``package`` (this one by default), sorted by name."""
    pkg = importlib.import_module(package)
    out = []
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{package}.{info.name}")
        if hasattr(mod, "FAMILY"): out.append(mod.FAMILY)
    return sorted(out, key=lambda f: f.name)


def applicable(kernel: Kernel, machine, families: list[Family] | None = None) -> list[Family]:
    fams = registry() if families is None else families
    if getattr(kernel, "kind", "") == "attention": fams = [f for f in fams if f.name == "attention"]  # only it reads a fused attention
    return [f for f in fams if f.applies(kernel, machine)]
