"""Plans of several kernels (search/plan.py), measured against the tuned kernel."""
from __future__ import annotations

from superopt.ir.kernel import Kernel
from superopt.search.plan import best as plan_of

from .measure import measure
from .result import Result


def measure_plan(kernel: Kernel, be, best: Result) -> None:
    """On a GPU, the model's plan of a GEMM or convolution (search/plan.py: split-K for a
    tensor-core GEMM leaving SMs idle, bf16 pieces for an fp32 GEMM, channels-last copies for
    a convolution; the runtime runs it as its steps) measured against ``best``: each step
    verified and timed on its own (their sum: one launch each, intermediates written and
    read). Recorded in ``best.extra[plan.kind]``, with the steps' results."""
    if not be.machine.sm or kernel.kind not in ("gemm", "conv") or not best.measured_s:
        return
    plan = plan_of(kernel, be.machine)
    if plan is None: return
    parts = [measure(x.kernel, x.schedule, be, plan.kind) for x in plan.steps]
    ok = all(p.verified and p.measured_s for p in parts)
    t = sum(p.measured_s for p in parts) if ok else None
    faster = bool(ok and t < best.measured_s)
    best.extra[plan.kind] = {**_jsonable(plan.detail), "steps": len(parts), "modeled_s": plan.modeled_s, "time_s": t,
                             "verified": ok, "faster": faster,
                             "reason": None if ok else next(p.reason for p in parts if not (p.verified and p.measured_s))}
    if faster: best.plan_parts = [(x.kernel, p) for x, p in zip(plan.steps, parts)]


def _jsonable(detail: dict) -> dict:
    """A plan's detail for JSON (relayout orders keyed by input slot)."""
    return {k: ({str(a): list(b) for a, b in v.items()} if isinstance(v, dict) else v) for k, v in detail.items()}
