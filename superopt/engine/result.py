"""The one result type of the tuning engine: a schedule checked and timed on a backend,
with what the families' solvers knew of it (``families``) and every candidate measured."""
from __future__ import annotations

from dataclasses import dataclass, field

from superopt.ir.kernel import Kernel
from superopt.ir.schedule import Schedule


@dataclass
class Tried:
    """One measured candidate of a tuning run (what ``Cache.log_candidates`` logs)."""
    schedule: Schedule
    method: str                     # who proposed it: "hand", "z3", "beam", ...
    family: str                     # the schedule family ("" where none: BEAM's loop nests, the generic hand rules)
    modeled_s: float | None
    verified: bool
    time_s: float | None
    samples: int = 0
    reason: str = ""

    def to_dict(self) -> dict:
        return {"schedule": self.schedule.to_dict(), "method": self.method, "family": self.family,
                "modeled_s": self.modeled_s, "verified": self.verified, "time_s": self.time_s, "reason": self.reason}

    def log_row(self) -> dict:
        return {"schedule": self.schedule, "method": self.method, "verified": self.verified, "time_s": self.time_s,
                "samples": self.samples or None, "note": self.reason or (f"family {self.family}" if self.family else None)}


@dataclass
class Result:
    """A schedule checked and timed on a backend (the engine's answer, and each measurement)."""
    kernel: Kernel
    backend: str
    schedule: Schedule
    method: str
    verified: bool
    reason: str = ""                # why not verified
    measured_s: float | None = None  # median
    samples: tuple[float, ...] = ()
    tuning_s: float = 0.0
    rel_err: float = 0.0
    modeled_s: float | None = None         # the family's cost model for this schedule (solver methods)
    baseline_s: float | None = None        # the hand rules' measured time
    baseline_method: str | None = None
    family: str = ""                       # the schedule family that proposed it
    families: list[dict] = field(default_factory=list)   # per family: method, proved_optimal, bound_s, solve_s, measured
    tried: list[Tried] = field(default_factory=list)     # every candidate measured in the run
    extra: dict = field(default_factory=dict)
    plan_parts: list = field(default_factory=list)  # (kernel, Result) of each step of a plan measured faster

    @property
    def gflops(self) -> float | None:
        return self.kernel.flops / self.measured_s / 1e9 if self.measured_s else None

    @property
    def gbps(self) -> float | None:
        return self.kernel.min_bytes / self.measured_s / 1e9 if self.measured_s else None

    def to_json(self) -> dict:
        return {"kernel": self.kernel.key, "name": self.kernel.name, "kind": self.kernel.kind, "backend": self.backend,
                "method": self.method, "family": self.family, "schedule": self.schedule.to_dict(),
                "verified": self.verified, "reason": self.reason, "rel_err": self.rel_err, "time_s": self.measured_s,
                "samples_s": list(self.samples), "gflops": self.gflops, "gbps": self.gbps, "tuning_s": self.tuning_s,
                "modeled_s": self.modeled_s, "baseline_s": self.baseline_s, "baseline_method": self.baseline_method,
                **({"families": self.families} if self.families else {}), **self.extra}
