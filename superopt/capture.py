"""Record every kernel a lazy-Tensor program realizes, deduplicated by content key, with
counts, so batch tuning spends its time where the program spends its runtime.

    with superopt.capture("model_kernels/") as cap:
        model(x).numpy()
    cap.counts  # {kernel key: launches}

Every realize goes through ``Tensor.runner``; capturing wraps whatever runner is
installed (the interpreter, or a tuned runtime) and restores it on exit.
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from superopt.ir.kernel import Kernel
from superopt.ir.kernelize import Step
from superopt.ir import context
from superopt.ir.tensor import Tensor

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "superopt.capture"
MANIFEST_VERSION = 1


def display_name(k: Kernel) -> str:
    """A readable, shape-bearing name (kernelize's names like 'r3' say nothing across runs)."""
    sizes = "x".join(f"{a.size}{'r' if a.reduce else ''}" for a in k.axes)
    return f"{k.kind}_{sizes}"


@dataclass
class Capture:
    """Kernels seen so far (first instance of each content key) and launch counts."""
    kernels: dict[str, Kernel] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, k: Kernel) -> None:
        with self._lock:
            if k.key not in self.kernels: self.kernels[k.key] = replace(k, name=display_name(k))
            self.counts[k.key] += 1

    @property
    def launches(self) -> int: return sum(self.counts.values())

    def save(self, out_dir: str | Path, source: str | None = None, merge: bool = True) -> Path:
        """Write one kernel file per distinct kernel and ``manifest.json``; with ``merge``,
        counts add to an existing manifest's (several captures into one directory)."""
        from superopt.io import save_kernel
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        entries = {e["key"]: e for e in (read_manifest(out)["kernels"] if merge and (out / MANIFEST).exists() else [])}
        for key, k in self.kernels.items():
            fname = f"{k.name}_{key[:12]}.json"
            if key not in entries:
                save_kernel(k, out / fname)
                entries[key] = {"key": key, "file": fname, "name": k.name, "kind": k.kind, "count": 0,
                                "flops": k.flops, "min_bytes": k.min_bytes}
            entries[key]["count"] += self.counts[key]
        ordered = sorted(entries.values(), key=lambda e: (-e["count"], e["name"]))
        manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "source": source, "kernels": ordered}
        tmp = out / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(out / MANIFEST)
        return out / MANIFEST


def read_manifest(d: str | Path) -> dict:
    """The manifest of a capture directory, validated; ValueError with a clear message."""
    p = Path(d) / MANIFEST
    try:
        m = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"{d}: no {MANIFEST} (not a capture directory)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{p}: not a superopt capture manifest")
    if m.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{p}: manifest version {m.get('version')!r}, this superopt reads {MANIFEST_VERSION}")
    for e in m.get("kernels", []):
        if not {"key", "file", "count"} <= set(e) or "/" in e["file"] or e["file"].startswith("."):
            raise ValueError(f"{p}: malformed kernel entry {e!r}")
    return m


def _record_only(step: Step, bufs: dict[str, np.ndarray]) -> np.ndarray:
    return np.zeros(step.kernel.output.shape, dtype=step.kernel.output.dtype.np)


@contextmanager
def capture(out_dir: str | Path | None = None, execute: bool = True, source: str | None = None,
            progress=None) -> Iterator[Capture]:
    """Record kernels realized inside the block; write them to ``out_dir`` (if given) on exit.

    ``execute=False`` records without computing (outputs are zeros): fast for large
    shapes, valid only for programs whose control flow does not depend on values.
    ``progress(done, total, what)`` (superopt.progress) hears of every launch recorded."""
    cap = Capture()
    inner = Tensor.runner

    def runner(step: Step, bufs: dict[str, np.ndarray]) -> np.ndarray:
        cap.record(step.kernel)
        if progress: progress(cap.launches, None, "kernel launches recorded")
        return inner(step, bufs) if execute else _record_only(step, bufs)

    try:
        with context.use(runner=runner):
            yield cap
    finally:
        if out_dir is not None and cap.kernels: cap.save(out_dir, source=source)
