"""Model fidelity, measured: the sample of ``search.fidelity`` (the model-only half) verified
and timed on a backend by the engine's ``measure``."""
from __future__ import annotations

from typing import Callable

import numpy as np

from superopt import verify
from superopt.ir.kernel import Kernel
from superopt.search.fidelity import KernelFidelity, Point, sample

from .measure import measure

STATS = ("median", "min")


def measure_kernel(kernel: Kernel, backend, n: int = 50, top_k: int = 4, runs: int = 7, seed: int = 0,
                   progress: Callable[[int, int, Point], None] | None = None, stat: str = "median") -> KernelFidelity:
    """Sample ``n`` schedules, verify and time each on ``backend``. ``stat``: which figure of
    the runs is ranked, the median or the fastest (steadier on a machine others share:
    contention only ever adds time). Every schedule is checked and timed on one input set
    (drawn from ``seed``), its reference computed once."""
    if stat not in STATS: raise ValueError(f"unknown statistic {stat!r} (known: {', '.join(STATS)})")
    solved: list = []
    points, top = sample(kernel, backend.machine, n, top_k, seed, solved=solved)
    inputs = verify.random_inputs(kernel, np.random.default_rng(seed))
    for i, q in enumerate(points):
        m = measure(kernel, q.schedule, backend, q.source, runs=runs, inputs=inputs)
        q.verified, q.reason, q.samples = m.verified, m.reason, tuple(m.samples)
        q.measured_s = (min(m.samples) if stat == "min" and m.samples else m.measured_s) if m.verified else None
        if progress: progress(i + 1, len(points), q)
    return KernelFidelity(kernel, points, top, solved[0].solve_s)
