"""superopt.kernels: the workload library — kinds (builders + numpy references),
``Workload`` entries and the named shape suites."""
from . import builders as _builders  # noqa: F401  (registers the kinds)
from .registry import KINDS, Kind, Param, Workload, get_kind, main_step
from .suites import SUITES, all_workloads, suite

__all__ = ["KINDS", "Kind", "Param", "Workload", "get_kind", "main_step", "SUITES", "suite", "all_workloads"]
