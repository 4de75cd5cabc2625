"""Staged SIMT GEMMs on a GPU: fp32 operands through shared memory in a cp.async pipeline, no
tensor core (ir/lower_staged.py). Geometry ``search/hand.staged_simt`` (block tile, thread tile,
K step, stages; 16-byte copies; B's XOR swizzle where its rows run along K), cost
``search/staged_cost.py``, hand rule ``search/hand._staged_rule`` (first of STAGED_TILES).

The family's space is the grid ``BLOCK x BLOCK x THREAD x THREAD x KSTEP x STAGES`` (it holds
every STAGED_TILES tile); ``solve`` models all of it, so its best is proved optimal under the
staged model over that space."""
from __future__ import annotations

import itertools
import time as _time
from typing import Iterable

from ...ir import geometry_staged
from ...ir.kernel import Kernel
from ...ir.schedule import Schedule, check

from .. import hand as hand_rules
from .. import staged_cost
from . import Candidate, Solved

BLOCK, THREAD, KSTEP, STAGES = (32, 64, 128, 256), (4, 8, 16), (8, 16), (2, 3)


def _matches(kernel: Kernel) -> bool:
    return kernel.kind in hand_rules.STAGED_KINDS and not hand_rules._is_gemv(kernel) \
        and not isinstance(geometry_staged.match(kernel), str)


def _registers(kernel: Kernel, s: Schedule) -> int:
    return staged_cost.registers(*_reg_args(kernel, s))


def _reg_args(kernel: Kernel, s: Schedule):
    m, t, vm, vn, vk, a_run, b_run = staged_cost._shape(kernel, s)
    return t, vk, a_run, b_run


class Staged:
    name = "staged"

    def applies(self, kernel: Kernel, machine) -> bool:
        return machine.is_simt and _matches(kernel)

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        if not self.applies(kernel, machine): return
        seen: set[Schedule] = set()
        for bm, bn, tm, tn, bk, st in itertools.product(BLOCK, BLOCK, THREAD, THREAD, KSTEP, STAGES):
            s = hand_rules.staged_simt(kernel, machine, bm, bn, tm, tn, bk, st)
            if s is None or s in seen or self._limits(kernel, s, machine): continue
            seen.add(s)
            yield s

    def _limits(self, kernel: Kernel, s: Schedule, machine) -> list[str]:
        """What the shared check does not count for a staged tile: registers (the model's estimate)."""
        regs = _registers(kernel, s)
        return [f"staged: ~{regs} registers a thread > {machine.max_regs_per_thread}"] \
            if regs > machine.max_regs_per_thread else []

    def legal(self, kernel: Kernel, schedule: Schedule, machine) -> list[str]:
        if not self.applies(kernel, machine): return [f"staged: not an fp32 GEMM on a GPU ({kernel.kind})"]
        if schedule.tensor_core is not None or not schedule.staging:
            return ["staged: needs staged operands and no tensor core"]
        errs = check(kernel, schedule, machine)
        return errs or self._limits(kernel, schedule, machine)

    def cost(self, kernel: Kernel, schedule: Schedule, machine) -> float:
        return staged_cost.time_s(kernel, schedule, machine)

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        return hand_rules._staged_rule(kernel, machine) if self.applies(kernel, machine) else None

    def solve(self, kernel: Kernel, machine, timeout_s: float, top: int = 4) -> Solved:
        """Every schedule of the space modeled (proved optimal when all were before ``timeout_s``)."""
        t0 = _time.monotonic()
        out, finished = [], True
        for s in self.space(kernel, machine):
            out.append(Candidate(s, self.cost(kernel, s, machine)))
            if _time.monotonic() - t0 > timeout_s: finished = False; break  # noqa: E702
        out.sort(key=lambda c: c.modeled_s)
        bound = out[0].modeled_s if finished and out else None
        return Solved(self.name, out[:top], "enumeration", finished and bool(out), bound,
                      _time.monotonic() - t0, {"points": len(out)})


FAMILY = Staged()
