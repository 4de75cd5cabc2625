"""Lower, compile, verify, time: one candidate schedule on one backend (``measure``), and
the runner BEAM times its candidates with (``BackendRunner``, ``search.beam.Runner``).

Backends that count instead of timing get their counts turned into seconds here, by a
model the result states (``extra["time_model"]``):
- ``hexagon``: qemu's packet counters; the backend already returns packets / clock.
- ``emu``: the GPU emulator's counters of one run (``EMU_MODEL``)."""
from __future__ import annotations

import time

from typing import Callable, Sequence

import numpy as np

from superopt import debug, verify
from superopt.backends.base import Compiled, Failure, Timing
from superopt.ir.kernel import Kernel
from superopt.ir.lower import LoweringError, lower
from superopt.ir.schedule import Schedule
from superopt.search.beam import Timed

from .result import Result

EMU_MODEL = ("emu counters as time: max(32-byte global sectors x 32 B / DRAM bandwidth, warp instructions / "
             "(SMs x 4 schedulers x SM clock), shared-memory wavefronts / (SMs x SM clock), flops / the peak of the "
             "unit used) over the blocks run, scaled to all blocks, plus one launch; no latency, no L2 reuse")


def emu_seconds(counters, kernel: Kernel, schedule: Schedule, machine) -> float:
    """``EMU_MODEL``: the emulator's counters of one run as seconds on ``machine``."""
    scale = counters.blocks_total / max(1, counters.blocks_run)
    clock, sms = machine.sm_clock(), max(1, machine.cores)
    dram = counters.global_sectors * 32 * scale / machine.dram_bw
    issue = sum(counters.instructions.values()) * scale / (sms * 4 * clock)
    shared = counters.shared_wavefronts * scale / (sms * clock)
    peak = machine.flops_tc_fp16 if schedule.tensor_core is not None and machine.flops_tc_fp16 else machine.flops_fp32
    return max(dram, issue, shared, kernel.flops / peak) + machine.launch_s


def time_on(backend, compiled: Compiled, flat: Sequence[np.ndarray], out: np.ndarray, runs: int = 15,
            warmup: int = 2) -> Timing | Failure:
    """The backend's timer; for the emulator, one run and its counters through ``EMU_MODEL``."""
    if backend.name != "emu":
        return backend.time(compiled, flat, out, warmup=warmup, runs=runs)
    r = backend.run(compiled, flat, out)
    if isinstance(r, Failure): return r
    c = backend.last_counters
    p = compiled.program
    t = emu_seconds(c, p.kernel, p.schedule, backend.machine)
    return Timing(t, (t,), {"counters": c.to_dict(), "time_model": EMU_MODEL})


MIN_RUNS = 3   # the fewest timed runs a median is taken of


def measure(kernel: Kernel, schedule: Schedule, backend, method: str, seed: int | None = None,
            runs: int = 15, inputs: list | None = None, family: str = "",
            step: Callable[[str], None] | None = None, time_allowance_s: float | None = None) -> Result:
    """Verify on ``inputs`` (default: fresh random ones), then time on them (median of ``runs``
    runs). Never raises for a bad candidate: the result says why it failed. ``step(what)``
    hears of each stage as it starts: "compile", "verify", "time" (progress).
    ``time_allowance_s``: the seconds the timing may take; the verification's runs (one per
    input set checked) tell a run's seconds, and fewer runs (at least ``MIN_RUNS``) are timed where
    ``runs`` would not fit: a slow schedule (a 2048^3 loop nest runs 0.4 s) must not spend a
    tuning budget on its own median."""
    step = step or (lambda what: None)
    m = Result(kernel, backend.name, schedule, method, False, family=family)
    step("compile")
    try:
        program = lower(kernel, schedule, backend.machine)
    except LoweringError as e:
        m.reason = f"illegal schedule: {e}"
        return m
    except Exception as e:  # a lowering bug is this candidate's failure, not the tuner's
        m.reason = f"lowering failed: {type(e).__name__}: {e}"
        return m
    compiled = backend.compile(program)
    debug.compiled(backend.name, kernel, schedule, compiled)
    if not hasattr(compiled, "handle"):
        m.reason = str(compiled)
        return m
    rng = np.random.default_rng(seed)
    inputs = verify.random_inputs(kernel, rng) if inputs is None else inputs
    step("verify")
    t0 = time.monotonic()
    v = verify.verify_compiled(kernel, compiled, backend, rng, inputs)
    m.verified, m.reason, m.rel_err = v.ok, v.reason, v.rel_err
    if not v.ok: return m
    if time_allowance_s is not None:   # (verify's wall includes its comparisons: a run is overestimated)
        per_run = (time.monotonic() - t0) / (1 + len(v.special))   # one run on each input set checked
        runs = max(MIN_RUNS, min(runs, int(time_allowance_s / max(per_run, 1e-9)) - 2))   # 2 warm-up runs
    step(f"time ({runs} runs)")
    t = time_on(backend, compiled, [a.reshape(-1) for a in inputs], verify.poison(kernel.output), runs=runs)
    if not hasattr(t, "median_s"):
        m.verified, m.reason = False, f"timing failed: {t}"
        return m
    m.measured_s, m.samples = t.median_s, t.samples
    debug.log(1, lambda: f"time {kernel.name} on {backend.name}: median {t.median_s * 1e6:.2f} us of {len(t.samples)} runs")
    counters = dict(t.counters or {})   # e.g. the Hexagon backend's qemu counts, the emulator's counters
    if counters.get("packets"):
        counters["macs_per_packet"] = kernel.flops / 2 / counters["packets"]
    m.extra.update(counters)
    return m


class BackendRunner:
    """``search.beam.Runner`` on a backend: lowers, compiles and times schedules of one kernel
    on one input set (``verify.random_inputs``), keeps each compiled candidate, and checks a
    pick against the input set's reference (computed once)."""

    def __init__(self, kernel: Kernel, backend, runs: int = 5, inputs: list | None = None):
        self.kernel, self.backend, self.runs = kernel, backend, runs
        self.machine = backend.machine
        self.inputs = verify.random_inputs(kernel, np.random.default_rng()) if inputs is None else inputs
        self.flat = [a.reshape(-1) for a in self.inputs]
        self.out = verify.poison(kernel.output)
        self.compiled: dict[Schedule, Compiled] = {}

    def prepare(self) -> None:
        """The reference of the input set, now (BEAM counts it inside its budget)."""
        if isinstance(self.inputs, verify.InputSet): self.inputs.reference(self.kernel)

    def time(self, s: Schedule) -> Timed:
        try:
            program = lower(self.kernel, s, self.machine)
        except LoweringError as e:
            return Timed(s, None, f"illegal: {e}")
        except Exception as e:  # a lowering bug must not take the search down
            return Timed(s, None, f"lowering failed: {type(e).__name__}: {e}")
        compiled = self.backend.compile(program)
        debug.compiled(self.backend.name, self.kernel, s, compiled)
        if not hasattr(compiled, "handle"): return Timed(s, None, str(compiled))
        t = time_on(self.backend, compiled, self.flat, self.out, runs=self.runs, warmup=1)
        if not hasattr(t, "median_s"): return Timed(s, None, str(t))
        self.compiled[s] = compiled
        return Timed(s, t.median_s)

    def check(self, s: Schedule) -> str | None:
        """None when the timed candidate ``s`` computes the reference, else why not."""
        v = verify.verify_compiled(self.kernel, self.compiled[s], self.backend, np.random.default_rng(), self.inputs,
                                   special=False)   # random set only: the pick is measure()d, fully verified, before it is kept
        return None if v.ok else v.reason
