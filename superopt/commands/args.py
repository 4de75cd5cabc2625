"""argparse ``type=`` validators shared by every command: a bad number is one line and exit 2
(argparse's own error path), never a traceback or a silently accepted negative value."""
from __future__ import annotations

import argparse
import math


def _num(kind, s: str):
    try:
        v = kind(s)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{s!r} is not {'an integer' if kind is int else 'a number'}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{s!r} is not a finite number")
    return v


def _bounded(kind, strict: bool, what: str):
    """A ``type=`` function: a finite ``kind`` above 0 (``strict``) or at least 0, else one line."""
    def parse(s: str):
        v = _num(kind, s)
        if v < 0 or (strict and v == 0): raise argparse.ArgumentTypeError(f"{s!r} must be {what}")
        return v
    return parse


positive_int = _bounded(int, True, "a positive integer (at least 1)")
nonneg_int = _bounded(int, False, "a non-negative integer")
positive_float = _bounded(float, True, "a positive number")
nonneg_float = _bounded(float, False, "a non-negative number")
