"""Check a kernel's schedule on a backend against the reference interpreter.

Fresh random inputs for every check (never all zeros; integers in a small range), the
output poisoned first (NaN for floats, a sentinel for integers) so unwritten elements
show, the reference on the whole output (``ir.interpret.run_kernel`` for small kernels,
``superopt.fastref`` -- numpy/BLAS, float64 -- for large elementwise, GEMM, conv and reduce
kernels; a random sample only where neither applies, large row kernels), and per dtype both
a tolerance on the relative error norm and a per-element bound. NaN where the reference is
not NaN never passes.

An input set (``InputSet``, what ``random_inputs`` returns) holds its reference once
computed: a tuner that checks several candidates of one kernel on one set computes the
reference once, not per candidate (on a GB-sized kernel that took seconds each). The
arrays of a set are read-only, so the reference cannot go stale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from superopt.fastref import whole_output
from superopt.ir import dtype as dt
from superopt.ir.interpret import _eval_node, cast_values, run_kernel
from superopt.ir.kernel import Kernel
from superopt.ir.lower import LoweringError, lower
from superopt.ir.schedule import Schedule

# relative error norm (||got - ref|| / ||ref||) allowed per output dtype (integers and bools:
# exact). Rounding a right result to the output type alone gives about 3e-4 (fp16) and 2e-3
# (bf16); an H100 wgmma pipeline that summed wrong gave 1.6e-2 in fp16 and passed the 2e-2
# allowed before, so the margins are now about 15x and 7x.
TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 1.5e-2, "float64": 1e-9}
# per-element bound |got - ref| <= ELEMENT[d] * (|ref| + rms(ref)) as well as the norm: one
# wrong or unwritten element of a million passes the norm but never this (fp16 / bf16
# rounding alone is 4.9e-4 / 3.9e-3 of |ref|).
ELEMENT = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 3e-2, "float64": 1e-8}
SAMPLE_POINTS = 4096            # reference points checked on large outputs
FULL_CHECK_WORK = 1 << 24       # output points x reduce points below which everything is checked
INT_SENTINEL = {"int8": -77, "uint8": 177, "int32": -123456789, "bool": 2}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    max_abs_err: float = 0.0
    rel_err: float = 0.0          # ||got - ref|| / ||ref|| over the checked points
    checked: int = 0              # output points compared
    reason: str = ""              # why not ok ("" when ok)
    failure_kind: str = ""        # "compile" | "crash" | "timeout" | "launch" | "wrong" | "illegal"

    def __bool__(self) -> bool: return self.ok


CHUNK = 1 << 20                 # elements drawn per step (no GB-sized temporaries)


@dataclass(frozen=True)
class Reference:
    """The expected output on some points: ``store[i]`` is the output element written for
    the i-th checked point, ``values[i]`` its reference value (as float64)."""
    store: np.ndarray
    values: np.ndarray


class InputSet(list):
    """One kernel's random inputs (read-only storage arrays, a list as before) with the
    reference on them, computed on first use and reused for every candidate checked on
    the set. The sample points of a large output are drawn once per set, from the
    generator that drew the inputs."""
    def __init__(self, arrays: list[np.ndarray], rng: np.random.Generator):
        super().__init__(arrays)
        for a in arrays: a.flags.writeable = False
        self._rng = rng
        self._refs: dict[str, Reference] = {}

    def reference(self, kernel: Kernel) -> Reference:
        if kernel.key not in self._refs: self._refs[kernel.key] = reference(kernel, self, self._rng)
        return self._refs[kernel.key]


def random_inputs(kernel: Kernel, rng: np.random.Generator) -> InputSet:
    """Fresh inputs in storage dtype: floats in [-1, -0.1] u [0.1, 1) (no cancellation to 0),
    ints in a small range. Floats come from one 32-bit draw each (23 bits of magnitude, 1 of
    sign). Drawn ``CHUNK`` elements at a time into the final array: whole-size temporaries
    made a GB of inputs take 5-9 s here, chunks about 1 s."""
    out = []
    for b in kernel.inputs:
        a = np.empty(b.size, dtype=b.dtype.np)
        for i in range(0, b.size, CHUNK):
            a[i:i + CHUNK] = dt.to_storage(_draw(b.dtype, rng, min(CHUNK, b.size - i)), b.dtype)
        if b.dtype.kind == "b" and b.size: a[0] = True      # never all false
        out.append(a.reshape(b.shape))
    return InputSet(out, rng)


def _draw(d: dt.DType, rng: np.random.Generator, n: int) -> np.ndarray:
    if d.is_float:
        bits = rng.integers(0, 1 << 32, n, dtype=np.uint32)
        x = (bits >> 9).astype(np.float32)
        x *= np.float32(0.9 / (1 << 23))
        x += np.float32(0.1)
        x.view(np.uint32)[:] |= bits << np.uint32(31)       # the draw's low bit is the sign
        return x
    if d.kind == "b": return rng.integers(0, 2, n, dtype=np.int8)
    if d.kind == "u": return rng.integers(1, 8, n, dtype=np.int32)
    x = rng.integers(-8, 8, n, dtype=np.int32)
    x[x == 0] = 1
    return x


def poison(buf) -> np.ndarray:
    """An output buffer filled with a value no correct kernel leaves behind."""
    if buf.dtype.is_float:
        return np.full(buf.size, dt.to_storage(np.array([np.nan]), buf.dtype)[0], dtype=buf.dtype.np)
    return np.full(buf.size, INT_SENTINEL.get(buf.dtype.name, 77), dtype=buf.dtype.np)


def reference(kernel: Kernel, inputs: list[np.ndarray], rng: np.random.Generator) -> Reference:
    """The reference on all output points (small kernels) or on ``SAMPLE_POINTS`` random ones."""
    ob = kernel.output
    red = math.prod(kernel.axes[a].size for a in kernel.reduce_axes)
    small = kernel.out_points * red <= FULL_CHECK_WORK or kernel.out_points <= SAMPLE_POINTS
    whole = None if small else whole_output(kernel, inputs)
    if small or whole is not None:
        store = _store_of(kernel, np.arange(kernel.out_points))
        whole = run_kernel(kernel, inputs) if whole is None else whole
        ref = dt.to_values(whole, ob.dtype).reshape(-1)[store].astype(np.float64)
    else:
        pts = np.sort(rng.choice(kernel.out_points, SAMPLE_POINTS, replace=False))
        store, ref = _store_of(kernel, pts), cast_values(run_kernel(kernel, inputs, points=pts), ob.dtype).astype(np.float64)
    return Reference(store, ref)


def compare(kernel: Kernel, got: np.ndarray, inputs: list[np.ndarray], rng: np.random.Generator) -> VerifyResult:
    """Compare a backend's output (storage) with the reference, on all or sampled points
    (an ``InputSet``'s own reference and points; otherwise computed here, points from ``rng``)."""
    ref = inputs.reference(kernel) if isinstance(inputs, InputSet) else reference(kernel, inputs, rng)
    ob = kernel.output
    r = _judge(ob.dtype, dt.to_values(got.reshape(-1)[ref.store], ob.dtype).astype(np.float64), ref.values)
    if r.ok and len(ref.store) < kernel.out_points and ob.dtype.is_float and not np.isnan(ref.values).any():
        # sampled (no fast whole reference): still no NaN or unwritten element anywhere in the output
        nan = int(np.isnan(dt.to_values(got.reshape(-1), ob.dtype)).sum())
        if nan: return VerifyResult(False, math.inf, math.inf, r.checked, f"{nan} outputs are NaN or never written", "wrong")
    return r


def _store_of(kernel: Kernel, pts: np.ndarray) -> np.ndarray:
    """Output element written for each output point (the reference's own store index)."""
    env, rem = {}, pts.astype(np.int64)
    for a in reversed(kernel.output_axes):
        env[a] = rem % kernel.axes[a].size
        rem = rem // kernel.axes[a].size
    return np.broadcast_to(_eval_node(kernel.store, env, [], 1), pts.shape).astype(np.int64)


def _judge(d: dt.DType, got: np.ndarray, ref: np.ndarray) -> VerifyResult:
    n = len(ref)
    bad_nan = np.isnan(got) & ~np.isnan(ref)
    if bad_nan.any():
        return VerifyResult(False, math.inf, math.inf, n, f"{int(bad_nan.sum())} of {n} outputs are NaN or never written", "wrong")
    if not d.is_float:
        wrong = got != ref
        if wrong.any():
            i = int(np.argmax(wrong))
            return VerifyResult(False, float(np.abs(got - ref).max()), 1.0, n,
                                f"{int(wrong.sum())} of {n} outputs differ (first: got {got[i]:g}, expected {ref[i]:g})", "wrong")
        return VerifyResult(True, 0.0, 0.0, n)
    finite = np.isfinite(ref)
    if (np.isinf(ref) != np.isinf(got)).any() or (np.isinf(ref) & (np.sign(ref) != np.sign(got))).any():
        return VerifyResult(False, math.inf, math.inf, n, "infinities differ from the reference", "wrong")
    diff = np.abs(got[finite] - ref[finite])
    max_abs = float(diff.max(initial=0.0))
    norm = float(np.linalg.norm(ref[finite]))
    rel = float(np.linalg.norm(diff)) / max(norm, 1e-30) if len(diff) else 0.0
    tol = TOLERANCE.get(d.name, 1e-4)
    if not math.isfinite(rel) or rel > tol:
        return VerifyResult(False, max_abs, rel, n, f"relative error {rel:.3g} > tolerance {tol:g}", "wrong")
    el = ELEMENT.get(d.name, 1e-3)
    bound = el * (np.abs(ref[finite]) + norm / math.sqrt(max(1, len(diff))))
    over = diff > bound
    if over.any():
        i = int(np.argmax(over))
        return VerifyResult(False, max_abs, rel, n, f"{int(over.sum())} of {n} outputs off by more than {el:g} x "
                            f"(|ref| + rms) (first: got {got[finite][i]:g}, expected {ref[finite][i]:g})", "wrong")
    return VerifyResult(True, max_abs, rel, n)


def verify(kernel: Kernel, schedule: Schedule, backend, seed: int | None = None) -> VerifyResult:
    """Lower, compile, run on fresh random inputs and compare with the reference."""
    rng = np.random.default_rng(seed)
    try:
        program = lower(kernel, schedule, backend.machine)
    except LoweringError as e:
        return VerifyResult(False, reason=f"illegal schedule: {e}", failure_kind="illegal")
    compiled = backend.compile(program)
    if not hasattr(compiled, "handle"):
        return VerifyResult(False, reason=str(compiled), failure_kind=compiled.kind)
    return verify_compiled(kernel, compiled, backend, rng)


def verify_compiled(kernel: Kernel, compiled, backend, rng: np.random.Generator,
                    inputs: list[np.ndarray] | None = None) -> VerifyResult:
    """Run ``compiled`` on ``inputs`` (default: fresh random ones) and compare with the reference."""
    inputs = random_inputs(kernel, rng) if inputs is None else inputs
    out = backend.run(compiled, [a.reshape(-1) for a in inputs], poison(kernel.output))
    if not isinstance(out, np.ndarray):
        return VerifyResult(False, reason=str(out), failure_kind=out.kind)
    return compare(kernel, out, inputs, rng)
