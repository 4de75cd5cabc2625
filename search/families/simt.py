"""Plain SIMT loop nests on a GPU: the space of ``search/space.py`` (grid / thread / register
tile / unroll / loop splits per axis, vector width, loop order), the SIMT cost model of
``search/cost.py`` (one formula: floats, numpy arrays, Z3 terms), solved by Z3 or by modeling
the whole space (``search/z3opt.solve``), hand rule ``search/hand.gpu_plain``.

``LoopNest`` is shared with the CPU loop nest (``loopnest_cpu.py``): the same space builder,
model and solver, told apart by the machine."""
from __future__ import annotations

import time as _time
from typing import Iterable

from ...ir.kernel import Kernel
from ...ir.schedule import Schedule, check

from .. import cost as cost_model
from .. import hand as hand_rules
from .. import space as space_mod
from .. import z3opt
from . import Candidate, Solved


def _gpu(machine) -> bool:
    return machine.is_simt


class LoopNest:
    """The loop-nest family on GPUs (``gpu`` True) or on everything else (CPU, the DSP's scalar
    cores): the schedules of ``space.build``; no staging, no tensor core."""

    def __init__(self, name: str, gpu: bool) -> None:
        self.name, self.gpu = name, gpu

    def applies(self, kernel: Kernel, machine) -> bool:
        return _gpu(machine) == self.gpu

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        return space_mod.build(kernel, machine).enumerate()

    def legal(self, kernel: Kernel, schedule: Schedule, machine) -> list[str]:
        errs = [] if self.applies(kernel, machine) else [f"{self.name}: not for {machine.name} (" + ("a" if machine.is_simt else "no") + " SIMT target)"]
        if schedule.tensor_core is not None: errs.append(f"{self.name}: a tensor-core schedule")
        if schedule.staging and self.gpu: errs.append(f"{self.name}: stages operands in shared memory")
        if schedule.family: errs.append(f"{self.name}: a native template ({schedule.family})")
        return errs + check(kernel, schedule, machine)

    def cost(self, kernel: Kernel, schedule: Schedule, machine) -> float:
        return cost_model.modeled_time(kernel, schedule, machine)

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        s = hand_rules.plain_schedule(kernel, machine)
        return None if self.legal(kernel, s, machine) else s

    def solve(self, kernel: Kernel, machine, timeout_s: float, top: int = 4) -> Solved:
        """``z3opt.solve`` over the loop-nest space alone: proved optimal when Z3 proved it or
        every schedule of the space was modeled (``r.proved_optimal``); else no bound."""
        t0 = _time.monotonic()
        r = z3opt.solve(kernel, machine, top_k=top, timeout_s=timeout_s, tensor_core=False)
        cands = [Candidate(c.schedule, c.modeled_s) for c in r.candidates]
        bound = cands[0].modeled_s if r.proved_optimal and cands else None
        detail = {"fallback": r.fallback} if r.fallback else {}
        return Solved(self.name, cands, r.method, r.proved_optimal, bound, _time.monotonic() - t0, detail)


FAMILY = LoopNest("simt", gpu=True)
