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


def positive_int(s: str) -> int:
    v = _num(int, s)
    if v <= 0: raise argparse.ArgumentTypeError(f"{s!r} must be a positive integer (at least 1)")
    return v


def nonneg_int(s: str) -> int:
    v = _num(int, s)
    if v < 0: raise argparse.ArgumentTypeError(f"{s!r} must be a non-negative integer")
    return v


def positive_float(s: str) -> float:
    v = _num(float, s)
    if v <= 0: raise argparse.ArgumentTypeError(f"{s!r} must be a positive number")
    return v


def nonneg_float(s: str) -> float:
    v = _num(float, s)
    if v < 0: raise argparse.ArgumentTypeError(f"{s!r} must be a non-negative number")
    return v
