"""The loop nest on CPUs (and any machine that is not a GPU): the same space, model and solver
as the plain SIMT family (``simt.LoopNest``), with the CPU hand rules (``search/hand.cpu``)."""
from __future__ import annotations

from .simt import LoopNest

FAMILY = LoopNest("loopnest_cpu", gpu=False)
