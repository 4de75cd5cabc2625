"""Progress of long commands, on stderr only (stdout stays for results and ``--json``).

    with progress_for(args, "tune") as progress:
        for i, cand in enumerate(cands):
            ...
            progress(i + 1, len(cands), "compile + verify + time")

``Progress`` is a callback ``progress(done, total, what)``: ``done`` of ``total`` units of the
current phase ``what`` (``total`` None when unknown: then no ETA). The phase is ``what`` up
to its first ":" (``"measure: verify (cpu_gemm)"`` is phase "measure", at its verify step):
a new phase starts its own clock for the ETA, a new step within it does not; the elapsed
time counts from the start. ``deadline`` (a ``time.monotonic()`` instant, e.g. ``tune
--budget``'s end) caps the ETA: work past it is skipped.

How it is shown (chosen once, from the command's flags and the terminal):
- ``-q`` (verbosity < 0): nothing.
- stderr a terminal: a rich progress bar (phase, count, elapsed, ETA), removed when done.
- otherwise (a pipe, a log file, CI): plain lines ``superopt tune: compile 3/12 (25%) 4.1 s, ETA 12 s``
  at most one a second, and the last of every phase; with ``--json`` those lines are JSON
  objects ``{"progress": TITLE, "what", "done", "total", "elapsed_s", "eta_s"}``, still on stderr.

How the engine calls it (E1 wires these; nothing here imports the engine):
- ``tune``: phases "hand rules" (1 candidate), "solve (up to S s)", "measure" (n
  candidates, steps "compile", "verify", "time (R runs)" of each, with its family), BEAM's
  steps, "outside baseline".
- ``tune-cache``: ``progress(done, n_kernels, name_of_kernel_just_finished)``: one bar
  over the kernels (use ``phase=False`` so each kernel's name does not reset the ETA).
- BEAM (``search.beam``'s dict callback): pass ``beam_callback(progress)``.
"""
from __future__ import annotations

import json
import sys
import time
from typing import IO, Callable


def _fmt_s(s: float) -> str:
    if s < 60: return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


class Progress:
    """``Progress(title, verbosity, stream, as_json, tty)``; call it as ``progress(done, total, what)``.
    ``phase``: whether a new ``what`` starts a new phase (its own ETA clock)."""

    def __init__(self, title: str, verbosity: int = 0, stream: IO[str] | None = None, as_json: bool = False,
                 tty: bool | None = None, interval_s: float = 1.0, phase: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.title, self.stream, self.as_json, self.interval_s, self.phase = title, stream or sys.stderr, as_json, interval_s, phase
        self.clock = clock
        self.silent = verbosity < 0
        self.tty = (self.stream.isatty() if tty is None else tty) and not as_json
        self.t0 = self.clock()
        self.what: str | None = None
        self.phase_t0 = self.t0
        self.last_print = -1e9
        self.last: tuple | None = None      # (done, total, what) of the latest call
        self.last_line: tuple | None = None  # ... and of the latest line printed
        self.last_call = self.t0               # a new phase's work began when the previous call returned
        self._bar = None
        self._new_phase = False
        self.deadline: float | None = None

    # ---- the callback ----------------------------------------------------------------------
    def __call__(self, done: int, total: int | None, what: str = "") -> None:
        if self.silent: return
        now = self.clock()
        if _phase(what) != _phase(self.what):
            if self.what is not None and self.phase: self._flush()   # the last line of the previous phase
            if self.phase or self.what is None: self.phase_t0 = self.last_call
            self._new_phase = self.phase
        self.what = what
        self.last, self.last_call = (done, total, what), now
        if self.tty: self._rich(done, total, what)
        elif now - self.last_print >= self.interval_s or (total is not None and done >= total):
            self._line(done, total, what, now)

    def eta_s(self, done: int, total: int | None, now: float | None = None) -> float | None:
        """Seconds left at the phase's rate so far; None without a total or before the first unit."""
        if total is None or done <= 0: return None
        now = self.clock() if now is None else now
        eta = max(0.0, (now - self.phase_t0) / done * (total - done))
        return eta if self.deadline is None else max(0.0, min(eta, self.deadline - now))

    def close(self) -> None:
        if self.silent: return
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.last is not None:
            self._flush()

    def __enter__(self) -> "Progress": return self
    def __exit__(self, *exc) -> None: self.close()

    # ---- output ---------------------------------------------------------------------------
    def _flush(self) -> None:
        if self.last is not None and not self.tty and self.last_line != self.last: self._line(*self.last, self.clock())

    def _line(self, done: int, total: int | None, what: str, now: float) -> None:
        self.last_print, self.last_line = now, (done, total, what)
        elapsed, eta = now - self.t0, self.eta_s(done, total, now)
        if self.as_json:
            text = json.dumps({"progress": self.title, "what": what, "done": done, "total": total,
                               "elapsed_s": round(elapsed, 3), "eta_s": None if eta is None else round(eta, 3)})
        else:
            count = f"{done}/{total} ({100 * done / total:.0f}%)" if total else f"{done}"
            text = f"superopt {self.title}: {what + ' ' if what else ''}{count} {_fmt_s(elapsed)}" \
                   + (f", ETA {_fmt_s(eta)}" if eta is not None and done < (total or 0) else "")
        print(text, file=self.stream, flush=True)

    def _rich(self, done: int, total: int | None, what: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        if self._bar is None:
            self._bar = Bar(TextColumn(f"superopt {self.title}: {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(file=self.stream, force_terminal=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(what, total=total)
        elif self._new_phase:   # a fresh task: reset() cannot clear a total to None (unknown)
            self._bar.remove_task(self._task)
            self._task = self._bar.add_task(what, total=total)
        self._new_phase = False
        self._bar.update(self._task, completed=done, total=total, description=what)


def _phase(what: str | None) -> str | None:
    return None if what is None else what.split(":", 1)[0]


def progress_for(args, title: str, phase: bool = True) -> Progress:
    """The reporter a command's flags ask for: ``args.verbosity`` (``-q`` silences it) and
    ``args.json`` (JSON lines on stderr). ``args`` without them (a library caller) gets defaults."""
    return Progress(title, verbosity=getattr(args, "verbosity", 0), as_json=bool(getattr(args, "json", False)), phase=phase)


def beam_callback(progress: Callable[[int, int | None, str], None]) -> Callable[[dict], None]:
    """Adapter for ``search.beam``'s callback, which passes a dict with "step", "done", "of"."""
    def cb(d: dict) -> None:
        progress(int(d.get("done", 0)), d.get("of"), f"beam step {d.get('step', '?')}")
    return cb
