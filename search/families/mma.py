"""mma.sync tensor-core GEMMs and convolutions (implicit GEMM) on a GPU: the space, model and
layouts of ``search/tc_space.py`` without its wgmma points, cost ``search/tc_cost.time_s``,
hand rule ``search/hand._tensor_core``.

``solve`` models every point of the space as with conflict-free layouts (a lower bound on
its time under any layout), then solves the shared-memory layouts (``search/banks``, Z3)
of the points in that bound's order until the best time found is at most the next bound:
a branch and bound over tiles and layouts, so its best is proved optimal over both
(``tc_space.ranked``) unless the time runs out first."""
from __future__ import annotations

import time as _time
from typing import Iterable

from ...ir import wgmma as wg
from ...ir.kernel import Kernel
from ...ir.schedule import Schedule, check

from .. import hand as hand_rules
from .. import tc_cost, tc_space
from . import Candidate, Solved


class MmaSync:
    name = "mma"

    def applies(self, kernel: Kernel, machine) -> bool:
        return machine.has("mma.sync") and kernel.kind in ("gemm", "conv") and bool(tc_space.orientations(kernel))

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        if not self.applies(kernel, machine): return iter(())
        return (s for _, s in tc_space.points(kernel, machine, wgmma=False))

    def legal(self, kernel: Kernel, schedule: Schedule, machine) -> list[str]:
        tc = schedule.tensor_core
        if tc is None or wg.is_wgmma(tc.instr): return ["mma: not an mma.sync schedule"]
        return check(kernel, schedule, machine)

    def cost(self, kernel: Kernel, schedule: Schedule, machine) -> float:
        return tc_cost.time_s(kernel, schedule, machine)

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        return hand_rules._tensor_core(kernel, machine) if self.applies(kernel, machine) else None

    def solve(self, kernel: Kernel, machine, timeout_s: float, top: int = 4) -> Solved:
        t0 = _time.monotonic()
        best, proved = tc_space.ranked(kernel, machine, top, wgmma=False, deadline=t0 + timeout_s) \
            if self.applies(kernel, machine) else ([], True)
        cands = [Candidate(s, t) for t, s in best]
        detail = {} if proved else {"why_not_proved": "the time ran out before the layouts' bound closed"}
        return Solved(self.name, cands, "enumeration+z3 layouts (bounded)", proved and bool(cands),
                      cands[0].modeled_s if proved and cands else None, _time.monotonic() - t0, detail)


FAMILY = MmaSync()
