"""Native HVX templates of the Hexagon backend: schedule family -> the module that renders it.

A program whose body is one ``ir.program.Native`` statement is rendered by the module
registered here for its family. Each module offers ``render(program) -> str``: a C program
(with the family's assembly embedded) for ``tools.compile_program`` that reads the kernel's
inputs in their natural layout from stdin, prepacks what it prepacks outside the counted
region, runs the kernel between two reads of qemu's counters, writes the output to stdout
and the counts to stderr (``render.COUNTERS``: what ``tools.run_counted`` parses).
Adding a template is adding a line.
"""
from __future__ import annotations

import importlib

from ...ir.program import Native, Program

# family -> module of this package with ``render(program) -> str``
TEMPLATES: dict[str, str] = {
    "hvx_gemm": "asm_gemm",
    "hvx_depthwise": "asm_depthwise",
    "hvx_firstlayer": "asm_firstlayer",
}


def family(program: Program) -> str:
    """The native family of a program whose body is one Native statement, else ""."""
    return program.body[0].family if len(program.body) == 1 and isinstance(program.body[0], Native) else ""


def module(name: str):
    if name not in TEMPLATES:
        raise KeyError(f"the hexagon backend has no template for family {name!r} (has: {', '.join(sorted(TEMPLATES))})")
    return importlib.import_module(f"{__package__}.{TEMPLATES[name]}")


def render(program: Program) -> str:
    return module(family(program)).render(program)
