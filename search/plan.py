"""Plans: one kernel computed by several, where the model says that is faster on a GPU.

Three rewrites make plans, each of ordinary kernels scheduled, verified and timed by the
existing paths:

- split-K (ir/splitk.py): a tensor-core GEMM whose grid leaves SMs idle as partial sums
  over K chunks, then their sum and the epilogue;
- relayout (ir/relayout.py): a tensor-core convolution whose operands TMA cannot box (an
  NCHW input: its filter-column window moves along the contiguous dimension by single
  elements; an OIHW filter: channels not contiguous) reading channels-last copies made by
  permute kernels, so the warp-specialized TMA kernels of an NHWC conv compute it;
- split fp32 (ir/split_fp32.py): an fp32 GEMM as one bf16 tensor-core GEMM over its
  operands split into three bf16 pieces each (six piece products along K), where the
  shared-memory SIMT kernel runs on fp32 FMAs.

A ``Plan`` lists its steps in order, each a kernel with its schedule and where its inputs
come from (the planned kernel's inputs, or earlier steps' outputs); the last step writes
the planned kernel's output. ``modeled_s`` is the sum of the steps' modeled times (each a
launch, its intermediates written and read once), ``whole_s`` the kernel's own best
tensor-core point: a plan is only made where it is faster under the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import tensorcore as tcm
from ..ir.kernel import Kernel
from ..ir.schedule import Schedule

from . import tc_space

SPLITS = (2, 3, 4, 6, 8)


@dataclass(frozen=True)
class PlanStep:
    """One kernel of a plan; ``inputs[i] >= 0`` is the planned kernel's input slot, ``-1 - j``
    the output of step ``j``."""
    kernel: Kernel
    schedule: Schedule
    inputs: tuple[int, ...]

    def operands(self, inputs: list, outputs: list) -> list:
        """This step's operands among the planned kernel's ``inputs`` and the earlier steps' ``outputs``."""
        return [inputs[i] if i >= 0 else outputs[-1 - i] for i in self.inputs]


@dataclass(frozen=True)
class Plan:
    kind: str                     # "split_k", "relayout" or "split_fp32"
    steps: tuple[PlanStep, ...]
    modeled_s: float
    whole_s: float = float("nan")
    detail: dict = field(default_factory=dict, compare=False)   # {"splits": n} / {"orders": {slot: order}}

    @property
    def final(self) -> PlanStep: return self.steps[-1]


def _best_point(kernel, machine) -> tuple[float, Schedule] | None:
    b = tc_space.best(kernel, machine, 1)
    return b[0] if b else None


def _hand(kernel, machine) -> tuple[float, Schedule]:
    from . import cost
    from .hand import hand_schedule
    s = hand_schedule(kernel, machine)
    return cost.modeled_time(kernel, s, machine), s


# ---- split-K ---------------------------------------------------------------------------
def split_plan(kernel, machine, n: int, whole_s: float = float("nan")) -> Plan | None:
    """Split-K into ``n`` chunks: the partial GEMM at the tensor-core space's optimum (the
    split axis is a batch axis on the grid), the combine (a float32 sum of ``n`` partials,
    then the epilogue) by the hand rule; None where K does not split so."""
    from ..ir.splitk import split_k as rewrite
    m = tcm.match(kernel)
    if isinstance(m, str): return None
    try:
        part, comb = rewrite(kernel, n, m.k)
    except ValueError:
        return None
    bp = _best_point(part, machine)
    if bp is None: return None
    tc, sc = _hand(comb, machine)
    used = [next(i for i, b in enumerate(kernel.inputs) if b is x) for x in comb.inputs[:-1]]
    steps = (PlanStep(part, bp[1], tuple(range(len(kernel.inputs)))), PlanStep(comb, sc, (*used, -1)))
    return Plan("split_k", steps, bp[0] + tc, whole_s, {"splits": n})


def split_k(kernel, machine, splits: tuple[int, ...] = SPLITS) -> Plan | None:
    """The fastest split-K plan under the model where the unsplit tensor-core optimum
    leaves SMs idle (fewer blocks than SMs) and splitting beats it; else None."""
    base = _best_point(kernel, machine)
    if base is None or base[1].blocks() >= machine.cores: return None
    plans = [p for p in (split_plan(kernel, machine, n, base[0]) for n in splits) if p is not None]
    win = min(plans, key=lambda p: p.modeled_s, default=None)
    return win if win is not None and win.modeled_s < base[0] else None


# ---- relayout --------------------------------------------------------------------------
def k_last_orders(kernel) -> dict[int, tuple[int, ...]]:
    """Per operand input of a convolution whose reduction's channel dimension is not its
    innermost: the order that makes it so (channels last), the others kept in order."""
    from ..ir.relayout import coordinates
    m = tcm.match(kernel)
    if isinstance(m, str): return {}
    out = {}
    for op in (m.a, m.b):
        shape = kernel.inputs[op.input].shape
        try:
            coords = coordinates(op.load, kernel, shape)
        except ValueError:
            continue
        d = next((d for d, (axes, _) in enumerate(coords) if m.k in axes), None)
        if d is None or all(shape[e] == 1 for e in range(d + 1, len(shape))): continue
        out[op.input] = tuple(e for e in range(len(shape)) if e != d) + (d,)
    return out


def relayout_plan(kernel, machine, orders: dict[int, tuple[int, ...]], whole_s: float = float("nan")) -> Plan | None:
    """The copies of ``orders``' inputs, then the kernel reading them, each by the hand rule
    (on the H100 the hand rule's permute ran 15.8 us where the solver's picks ran 33-45 us,
    and its warp-specialized conv tile 33 us where the tensor-core optimum under the model
    ran 134 us: bench/results/h100-2026-12-06b); None where an input does not relayout."""
    from ..ir.relayout import relayout
    steps, k2, modeled, slots = [], kernel, 0.0, list(range(len(kernel.inputs)))
    try:
        for slot, order in sorted(orders.items()):
            copy, k2 = relayout(k2, slot, order)
            t, s = _hand(copy, machine)
            steps.append(PlanStep(copy, s, (slot,)))
            slots[slot] = -len(steps)
            modeled += t
    except ValueError:
        return None
    t, s = _hand(k2, machine)
    if s.tensor_core is None: return None
    return Plan("relayout", (*steps, PlanStep(k2, s, tuple(slots))), modeled + t, whole_s, {"orders": orders})


def relayout(kernel, machine) -> Plan | None:
    """Where a tensor-core convolution's operands are not channels-last: the plan reading
    channels-last copies, if it beats the kernel's own optimum under the model; else None."""
    orders = k_last_orders(kernel) if kernel.kind == "conv" else {}
    if not orders: return None
    base = _best_point(kernel, machine)   # only once a copy could help: the solve takes seconds
    if base is None: return None
    p = relayout_plan(kernel, machine, orders, base[0])
    return p if p is not None and p.modeled_s < base[0] else None


# ---- split fp32 ------------------------------------------------------------------------
def split_fp32_plan(kernel, machine) -> Plan | None:
    """An fp32 GEMM as its operands' bf16 pieces, then one bf16 tensor-core GEMM over them,
    every step by the hand rule; None where the kernel does not split so (ir/split_fp32.py)
    or the GEMM gets no tensor-core schedule."""
    from ..ir.split_fp32 import split_fp32 as rewrite
    r = rewrite(kernel)
    if isinstance(r, str): return None
    sa, sb, g, a_slot, b_slot = r
    (ta, xa), (tb, xb), (tg, xg) = (_hand(x, machine) for x in (sa, sb, g))
    if xg.tensor_core is None: return None
    made = {sa.output.name: -1, sb.output.name: -2}
    steps = (PlanStep(sa, xa, (a_slot,)), PlanStep(sb, xb, (b_slot,)), PlanStep(g, xg, tuple(made[b.name] for b in g.inputs)))
    return Plan("split_fp32", steps, ta + tb + tg, _hand(kernel, machine)[0], {"pieces": 3, "products": 6})


# The tensor cores' fp32 accumulation truncates: on the H100 the plan's error grew with K,
# 1.1e-5 relative at K = 1024, 2.2e-5 at 2048, 4.3e-5 at 4096 (fp32 FMAs: 6e-7 to 8e-7;
# bench/results/h100-2026-12-06c). Past this K it would near the 1e-4 fp32 tolerance.
SPLIT_FP32_MAX_K = 4096


def split_fp32(kernel, machine) -> Plan | None:
    """``split_fp32_plan`` where it beats the kernel's own hand rule (the staged SIMT GEMM on
    fp32 FMAs) under the model, on a GPU with bf16 tensor cores, K at most
    ``SPLIT_FP32_MAX_K``; else None."""
    if not machine.flops_tc_fp16 or not machine.has("mma.sync") or kernel.kind != "gemm": return None
    m = tcm.match(kernel, simt=True)
    if isinstance(m, str) or kernel.axes[m.k].size > SPLIT_FP32_MAX_K: return None
    p = split_fp32_plan(kernel, machine)
    return p if p is not None and p.modeled_s < p.whole_s else None


def best(kernel, machine) -> Plan | None:
    """The model's plan for ``kernel`` on a GPU (split-K for a GEMM whose grid underfills the
    SMs, split fp32 for an fp32 GEMM, relayout for a convolution), or None where running it
    whole is fastest."""
    if not machine.is_simt or kernel.kind not in ("gemm", "conv"): return None
    if kernel.kind == "conv": return relayout(kernel, machine)
    return split_k(kernel, machine) or split_fp32(kernel, machine)
