"""Native kernel templates: schedule families whose decisions are not loop splits.

A schedule with ``family`` set is lowered to one ``Native`` statement: the family name, its
decided parameters (``Schedule.params``) and the geometry its matcher recognized in the
kernel (named integers). The backend that owns the template renders it (e.g. the HVX int8
GEMM and convolutions in assembly, ``backends/hexagon``); the search layer's family of the
same name enumerates and prices the parameters.

Each template module offers:
- ``match(kernel) -> dict[str, int] | str``: the geometry, or why the kernel does not fit;
- ``check(geometry, params, machine) -> list[str]``: every reason the parameters are illegal.
"""
from __future__ import annotations

import importlib

from .program import Native, Program

# family name -> module of this package holding its matcher (static: adding a template adds a line)
TEMPLATES: dict[str, str] = {
    "cpu_gemm": "cpu_gemm",
    "hvx_gemm": "hvx",   # int8 GEMM and NHWC convolutions (implicit GEMM) on HVX
    "cpu_conv": "cpu_conv",
    "hvx_depthwise": "hvx_depthwise",   # int8 NHWC depthwise 3x3, 64 channels (HVX widening vmpy)
    "hvx_firstlayer": "hvx_firstlayer",  # int8 NHWC 3x3 stride-2 conv, 3 -> 32 channels (vrmpy on the natural layout)
}


def template(family: str):
    if family not in TEMPLATES:
        raise KeyError(f"unknown schedule family {family!r} (known: {', '.join(sorted(TEMPLATES)) or 'none'})")
    return importlib.import_module(f"{__package__}.{TEMPLATES[family]}")


def geometry(kernel, family: str) -> dict[str, int] | str:
    """The family's geometry of ``kernel``, or why it does not apply."""
    try:
        return template(family).match(kernel)
    except KeyError as e:
        return str(e.args[0])


def check(kernel, schedule, machine) -> list[str]:
    g = geometry(kernel, schedule.family)
    if isinstance(g, str): return [f"family {schedule.family}: {g}"]
    return [f"family {schedule.family}: {e}" for e in template(schedule.family).check(g, dict(schedule.params), machine)]


def lower_native(kernel, schedule, machine) -> Program:
    g = geometry(kernel, schedule.family)
    if isinstance(g, str): raise ValueError(f"family {schedule.family}: {g}")
    body = (Native(schedule.family, schedule.params, tuple(sorted(g.items()))),)
    return Program(kernel.name, kernel.inputs, kernel.output, 1, 1, 1, 1, body, kernel, schedule)
