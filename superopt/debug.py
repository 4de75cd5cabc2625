"""``SUPEROPT_DEBUG``: what the tuner and the runtime do, on stderr.

Level 1 logs each kernel compiled (name, backend, schedule), each launch, each verification
and timing, and each cache lookup (hit or miss); level 2 adds the generated code of each
compiled kernel. The level lives in the explicit context (``superopt.ir.context``, field
``debug``): the CLI reads the variable once at start (``run_with_env``) and enters it for the
command; library users pass it the same way, ``with context.use(debug=1): ...``. Nothing here
keeps state of its own.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Mapping

from superopt.ir import context

ENV = "SUPEROPT_DEBUG"


def level_from_env(environ: Mapping[str, str] = os.environ) -> int:
    """The level ``SUPEROPT_DEBUG`` asks for: 0 when unset, empty or not a number (said once
    on stderr), at most 2."""
    text = environ.get(ENV, "").strip()
    if not text: return 0
    try:
        return max(0, min(2, int(text)))
    except ValueError:
        print(f"superopt: {ENV}={text!r} is not a level (0, 1 or 2); debug output off", file=sys.stderr)
        return 0


def run_with_env(fn: Callable, *args):
    """``fn(*args)`` with the context's debug level read from the environment, for the call."""
    with context.use(debug=level_from_env()):
        return fn(*args)


def enabled(level: int = 1) -> bool:
    return context.current().debug >= level


def log(level: int, msg: str | Callable[[], str]) -> None:
    """One line on stderr when the context's level is at least ``level``; ``msg`` may be a
    function, called only then (a schedule's JSON or a kernel's source costs nothing when off)."""
    if context.current().debug < level: return
    text = msg() if callable(msg) else msg
    print(f"[superopt debug{level}] {text}", file=sys.stderr, flush=True)


def compiled(backend: str, kernel, schedule, result) -> None:
    """A compile: the kernel, the schedule and the outcome at level 1; the code at level 2."""
    if not enabled(1): return
    ok = hasattr(result, "handle")
    log(1, lambda: f"compile {kernel.name} ({kernel.key[:12]}) on {backend}: schedule {schedule.to_json()}"
        + ("" if ok else f" -> failed: {result}"))
    source = getattr(result, "source", "") if ok else ""
    if source: log(2, lambda: f"code of {kernel.name} on {backend}:\n{source}")
