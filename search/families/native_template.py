"""What the native-template families share (the HVX GEMM/conv, depthwise and first-layer
families): applicability, legality and cost all come from the template's matcher and check
(an ``ir`` module with ``match(kernel) -> dict | str`` and ``check(geometry, params, machine)``)
and the family's packet model, priced at the target's stated clock. A subclass gives
``name``, ``tpl``, ``packets(geometry, params)`` and its own space, hand rule and solve."""
from __future__ import annotations

from types import ModuleType
from typing import Callable

from ...ir.kernel import Kernel
from ...ir.schedule import Schedule


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
