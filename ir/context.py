"""The one explicit context of a realize: target, kernel cache, fusion planner, kernel runner.

Nothing in the project keeps these in module globals: ``with use(planner=p):`` (or
``superopt.runtime.use(...)``, which enters a runtime as the runner) sets them for the block
in a ``contextvars`` variable, and leaving the block restores what was there, also when the
block raises. Threads and asyncio tasks each see their own.

    with context.use(runner=my_runner):
        y.numpy()          # every kernel step of the realize goes through my_runner
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

import numpy as np

from .interpret import run_kernel

# a runner computes one kernel step: (step, buffers by name) -> the step's output array
Runner = Callable[[Any, "dict[str, np.ndarray]"], np.ndarray]
# a planner gives, for a root, the nodes to write to buffers (None: the default rule)
Planner = Callable[[Any], "frozenset | None"]


def interpret(step, bufs: dict[str, np.ndarray]) -> np.ndarray:
    """The default runner: the reference interpreter (a fused kernel runs the kernels it replaces)."""
    if hasattr(step.kernel, "interpret"): return step.kernel.interpret([bufs[n] for n in step.inputs])
    return run_kernel(step.kernel, [bufs[n] for n in step.inputs])


@dataclass(frozen=True)
class Context:
    runner: Runner = interpret
    planner: Planner | None = None
    target: Any = None      # the machine the runner runs on (None: the interpreter, no target)
    cache: Any = None       # the kernel cache the runner reads (None: none)
    debug: int = 0          # SUPEROPT_DEBUG: 1 logs kernels, launches, times, cache hits; 2 adds generated code


_CURRENT: ContextVar[Context] = ContextVar("superopt_context", default=Context())


def current() -> Context:
    return _CURRENT.get()


def enter(**changes) -> Token:
    """Set the context with ``changes`` until ``leave(token)`` (prefer ``use``)."""
    if unknown := set(changes) - set(Context.__dataclass_fields__):
        raise TypeError(f"unknown context fields {sorted(unknown)}")
    return _CURRENT.set(replace(current(), **changes))


def leave(token: Token) -> None:
    _CURRENT.reset(token)


@contextmanager
def use(**changes) -> Iterator[Context]:
    """``with use(runner=r, planner=p):`` the context with those fields changed, for the block."""
    token = enter(**changes)
    try:
        yield current()
    finally:
        leave(token)
