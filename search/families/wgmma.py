"""wgmma (sm_90a) GEMMs and convolutions with cp.async, TMA copies and warp-specialized
producers: the variants of ``search/wgmma_space.py``, cost ``search/tc_cost.time_s``, hand rule
``search/hand._wgmma`` (convolutions ``_wgmma_conv``).

The space is a list of measured-good variants, not every legal wgmma tiling: ``solve`` models
all of it (the TMA twins left out, as ``tc_space`` does: they ran no faster), so its best is
proved optimal under the model over that space, as every family's proof is over its own
space (the detail says which)."""
from __future__ import annotations

import time as _time
from typing import Iterable

from ...ir import wgmma as wg
from ...ir.kernel import Kernel
from ...ir.schedule import Schedule, check

from .. import hand as hand_rules
from .. import tc_cost, tc_space, wgmma_space
from . import Candidate, Solved


class Wgmma:
    name = "wgmma"

    def applies(self, kernel: Kernel, machine) -> bool:
        return machine.has("wgmma") and kernel.kind in ("gemm", "conv") \
            and bool(tc_space.orientations(kernel))

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        if not self.applies(kernel, machine): return iter(())
        return (s for _, s in wgmma_space.variants(kernel, machine))

    def legal(self, kernel: Kernel, schedule: Schedule, machine) -> list[str]:
        tc = schedule.tensor_core
        if tc is None or not wg.is_wgmma(tc.instr): return ["wgmma: not a wgmma schedule"]
        if not machine.has("wgmma"): return [f"wgmma: needs sm_90 ({machine.name} has no wgmma)"]
        return check(kernel, schedule, machine)

    def cost(self, kernel: Kernel, schedule: Schedule, machine) -> float:
        return tc_cost.time_s(kernel, schedule, machine)

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        if not self.applies(kernel, machine): return None
        return hand_rules._wgmma(kernel, machine) or hand_rules._wgmma_conv(kernel, machine)

    def solve(self, kernel: Kernel, machine, timeout_s: float, top: int = 4) -> Solved:
        t0 = _time.monotonic()
        pts = tc_space._wgmma_points(kernel, machine) if self.applies(kernel, machine) else []
        # the order tc_space ranks ties in: producer warp first, then fewer stages
        pts.sort(key=lambda x: (round(x[0], 12), not x[1].tensor_core.producer, x[1].stages))
        cands = [Candidate(s, t) for t, s in pts[:top]]
        return Solved(self.name, cands, "enumeration", bool(cands), cands[0].modeled_s if cands else None,
                      _time.monotonic() - t0, {"points": len(pts), "space": "the wgmma_space variant list"})


FAMILY = Wgmma()
