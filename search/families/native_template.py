"""What the native-template families share (the HVX GEMM/conv, depthwise and first-layer
families): applicability, legality and cost all come from the template's matcher and check
(an ``ir`` module with ``match(kernel) -> dict | str`` and ``check(geometry, params, machine)``)
and the family's packet model, priced at the target's stated clock. A subclass gives
``name``, ``tpl``, ``packets(geometry, params)`` and its own space and hand rule; a family
whose space is small enumerates it with ``enumerate_solve``."""
from __future__ import annotations

import time
from types import ModuleType
from typing import Callable

from ...ir.kernel import Kernel
from ...ir.schedule import Schedule

from . import Candidate, Solved


def clock_hz(machine) -> float:
    """The packet clock the target states (machine.notes["clock_hz"]; 1 GHz when unstated)."""
    return float(machine.notes.get("clock_hz", 1.0e9))


class TemplateFamily:
    name: str
    tpl: ModuleType                                  # ir module: match, check
    packets: Callable[[dict, dict], int]             # the packet model: (geometry, params) -> packets

    def applies(self, kernel: Kernel, machine) -> bool:
        return machine.has("hvx") and isinstance(self.tpl.match(kernel), dict)

    def legal(self, kernel: Kernel, schedule: Schedule, machine) -> list[str]:
        g = self.tpl.match(kernel)
        if isinstance(g, str): return [g]
        if schedule.family != self.name: return [f"not a {self.name} schedule"]
        return self.tpl.check(g, dict(schedule.params), machine)

    def cost(self, kernel: Kernel, schedule: Schedule, machine) -> float:
        g = self.tpl.match(kernel)
        if isinstance(g, str): raise ValueError(g)
        return type(self).packets(g, dict(schedule.params)) / clock_hz(machine)

    def label(self, params: dict) -> str:
        """A schedule's name in the solve's table of modeled packets."""
        return " ".join(f"{k} {v}" for k, v in sorted(params.items()))

    def enumerate_solve(self, kernel: Kernel, machine, timeout_s: float, top: int, packing: Callable,
                        macs: Callable, peak_macs: int) -> Solved:
        """Every point of the space priced by the packet model, best first. Proved optimal under
        the model when the enumeration completed and every packing was proved (``packing(g,
        p).proved``); else the bound every schedule meets: ``macs(g)`` at ``peak_macs`` a packet."""
        t0 = time.perf_counter()
        g = self.tpl.match(kernel)
        if isinstance(g, str): return Solved(self.name, [], "enumeration", False, detail={"why": g})
        cands, table, complete, exact = [], {}, True, True
        for s in self.space(kernel, machine):
            if time.perf_counter() - t0 > timeout_s:
                complete = False
                break
            p = dict(s.params)
            mp = type(self).packets(g, p)
            exact &= packing(g, p).proved
            table[self.label(p)] = mp
            cands.append(Candidate(s, mp / clock_hz(machine)))
        cands.sort(key=lambda c: c.modeled_s)
        ok = complete and exact and bool(cands)
        bound = None if ok else macs(g) / peak_macs / clock_hz(machine)
        return Solved(self.name, cands[:top], "enumeration", ok, bound_s=bound, solve_s=time.perf_counter() - t0,
                      detail={"modeled_packets": table, "points": len(cands), "packings_proved": exact, "macs": macs(g)})
