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

Special inputs: a candidate that passes the random set is run again on each special input
set that applies to its kernel (``DISTRIBUTIONS``): a causal ``-inf`` mask (kernels with a
max reduction or exp2), rows holding NaN, +inf and -inf, signed zeros, magnitudes near the
dtype's maximum (so outputs overflow to inf where the reference does), and integer extremes
(INT_MIN/MAX, wrapping where the reference wraps). Each set is a fixed pattern over the
random set (no new draws), so its reference is computed once per input set and every
candidate is checked on the same values. A set applies only where the float64 reference
defines the result the way the kernel's own arithmetic does (``_applies_*``); elsewhere a
correct kernel would fail.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from superopt import debug
from superopt.fastref import whole_output
from superopt.ir import dtype as dt
from superopt.ir.interpret import _eval_node, cast_values, run_kernel
from superopt.ir.kernel import Kernel
from superopt.ir.lower import LoweringError, lower
from superopt.ir.node import Ops
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
# largest finite value per float dtype (the large-magnitude inputs and the overflow rule)
FINITE_MAX = {"float16": 65504.0, "bfloat16": float(np.uint32(0x7F7F0000).view(np.float32)),
              "float32": float(np.finfo(np.float32).max), "float64": float(np.finfo(np.float64).max)}
# Special input sets: "mask", "nan_inf" and "extremes" run on every candidate whose kernel they
# apply to; "negzero" and "large" only while the kernel's inputs total at most SPECIAL_BYTES
# (each set costs one more run of the candidate and, once per input set, one reference).
ALWAYS = ("mask", "nan_inf", "extremes")
SPECIAL_BYTES = 1 << 28
# A set's arrays are kept for the next candidate up to this many bytes (rebuilt from the
# random set beyond it: a pattern, so the same values and the same cached reference).
KEEP_BYTES = 1 << 27


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    max_abs_err: float = 0.0
    rel_err: float = 0.0          # ||got - ref|| / ||ref|| over the checked points
    checked: int = 0              # output points compared
    reason: str = ""              # why not ok ("" when ok)
    failure_kind: str = ""        # "compile" | "crash" | "timeout" | "launch" | "wrong" | "illegal"
    special: tuple[str, ...] = ()  # the special input sets checked as well (all passed when ok)

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
        self._special: dict[tuple[str, str], InputSet] = {}

    def reference(self, kernel: Kernel) -> Reference:
        if kernel.key not in self._refs: self._refs[kernel.key] = reference(kernel, self, self._rng)
        return self._refs[kernel.key]

    def special(self, kernel: Kernel, name: str) -> "InputSet":
        """The special input set ``name`` made from this one (kept when small; otherwise
        rebuilt, with the reference computed the first time carried over)."""
        key = (kernel.key, name)
        if key in self._special: return self._special[key]
        s = InputSet(DISTRIBUTIONS[name][1](kernel, list(self)), self._rng)
        if (ref := self._refs.get(f"{kernel.key}/{name}")) is not None: s._refs[kernel.key] = ref
        else:
            with np.errstate(all="ignore"):     # inf - inf, NaN: what the set is for
                self._refs[f"{kernel.key}/{name}"] = s.reference(kernel)
        if sum(a.nbytes for a in s) <= KEEP_BYTES: self._special[key] = s
        return s


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
    if kernel.kind == "attention":   # a fused attention: the kernels it replaces, at sampled (batch, query) rows
        n = kernel.geometry.heads * kernel.geometry.sq
        rows = None if kernel.out_points <= SAMPLE_POINTS * 16 else np.sort(rng.choice(n, 64, replace=False))
        return Reference(*kernel.reference(inputs, rows))
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


def compare(kernel: Kernel, got: np.ndarray, inputs: list[np.ndarray], rng: np.random.Generator,
            special: bool = False) -> VerifyResult:
    """Compare a backend's output (storage) with the reference, on all or sampled points
    (an ``InputSet``'s own reference and points; otherwise computed here, points from ``rng``).
    ``special``: the inputs are a special set, where NaN outside the sampled points may be right."""
    ref = inputs.reference(kernel) if isinstance(inputs, InputSet) else reference(kernel, inputs, rng)
    ob = kernel.output
    r = _judge(ob.dtype, dt.to_values(got.reshape(-1)[ref.store], ob.dtype).astype(np.float64), ref.values)
    if (r.ok and not special and len(ref.store) < kernel.out_points and ob.dtype.is_float
            and not np.isnan(ref.values).any()):
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
    """Per element: NaN equals NaN only, an infinity equals the same-signed infinity only
    (a reference within the per-element bound of the dtype's largest value may round to it),
    -0.0 equals 0.0 (an op that tells them apart, 1/x, shows it as an infinity's sign); the
    finite rest within the norm tolerance and the per-element bound."""
    n = len(ref)
    bad_nan = np.isnan(got) & ~np.isnan(ref)
    if bad_nan.any():
        return VerifyResult(False, math.inf, math.inf, n, f"{int(bad_nan.sum())} of {n} outputs are NaN or never written", "wrong")
    lost_nan = np.isnan(ref) & ~np.isnan(got)
    if lost_nan.any():
        i = int(np.argmax(lost_nan))
        return VerifyResult(False, math.inf, math.inf, n, f"{int(lost_nan.sum())} of {n} outputs are not NaN where the "
                            f"reference is (first: got {got[i]:g})", "wrong")
    if not d.is_float:
        wrong = got != ref
        if wrong.any():
            i = int(np.argmax(wrong))
            return VerifyResult(False, float(np.abs(got - ref).max()), 1.0, n,
                                f"{int(wrong.sum())} of {n} outputs differ (first: got {got[i]:g}, expected {ref[i]:g})", "wrong")
        return VerifyResult(True, 0.0, 0.0, n)
    el = ELEMENT.get(d.name, 1e-3)
    rounds_up = np.isinf(got) & np.isfinite(ref) & (np.abs(ref) >= FINITE_MAX.get(d.name, math.inf) * (1 - el)) \
        & (np.sign(ref) == np.sign(got))
    finite = np.isfinite(ref) & ~rounds_up
    inf_wrong = (np.isinf(ref) != (np.isinf(got) & ~rounds_up)) | (np.isinf(ref) & (np.sign(ref) != np.sign(got)))
    if inf_wrong.any():
        i = int(np.argmax(inf_wrong))
        return VerifyResult(False, math.inf, math.inf, n, f"{int(inf_wrong.sum())} of {n} outputs: infinities differ from "
                            f"the reference (first: got {got[i]:g}, expected {ref[i]:g})", "wrong")
    diff = np.abs(got[finite] - ref[finite])
    max_abs = float(diff.max(initial=0.0))
    norm = float(np.linalg.norm(ref[finite]))
    rel = float(np.linalg.norm(diff)) / max(norm, 1e-30) if len(diff) else 0.0
    tol = TOLERANCE.get(d.name, 1e-4)
    if not math.isfinite(rel) or rel > tol:
        return VerifyResult(False, max_abs, rel, n, f"relative error {rel:.3g} > tolerance {tol:g}", "wrong")
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
                    inputs: list[np.ndarray] | None = None, special: bool = True) -> VerifyResult:
    """Run ``compiled`` on ``inputs`` (default: fresh random ones) and compare with the
    reference; then on every special input set that applies (``special_sets``). ``special``
    False: the random set only, for a preliminary filter whose pick is verified in full before
    it is kept (BEAM's check of its fastest candidates)."""
    inputs = random_inputs(kernel, rng) if inputs is None else inputs
    if not isinstance(inputs, InputSet): inputs = InputSet([np.array(a) for a in inputs], rng)
    r = _run_and_compare(kernel, compiled, backend, inputs, rng, "random")
    if not r.ok:
        debug.log(1, lambda: f"verification of {kernel.name} on {backend.name} failed: {r.reason}")
        return r
    done: list[str] = []
    for name in special_sets(kernel) if special else []:
        s = _run_and_compare(kernel, compiled, backend, inputs.special(kernel, name), rng, name)
        if not s.ok:
            debug.log(1, lambda: f"verification of {kernel.name} on {backend.name} failed on {name} inputs: {s.reason}")
            return VerifyResult(False, s.max_abs_err, s.rel_err, s.checked, f"{name} inputs ({DISTRIBUTIONS[name][2]}): "
                                f"{s.reason}", s.failure_kind, tuple(done + [name]))
        done.append(name)
    debug.log(1, lambda: f"verified {kernel.name} on {backend.name}: {r.checked} outputs, relative error {r.rel_err:.3g}, "
              f"special sets {', '.join(done) or 'none'}")
    return VerifyResult(True, r.max_abs_err, r.rel_err, r.checked, special=tuple(done))


def check_special(kernel: Kernel, compiled, backend, inputs: InputSet, name: str) -> VerifyResult:
    """Run ``compiled`` on the special set ``name`` made from ``inputs`` and compare (one
    distribution alone; ``verify_compiled`` runs them all)."""
    return _run_and_compare(kernel, compiled, backend, inputs.special(kernel, name), inputs._rng, name)


def _run_and_compare(kernel: Kernel, compiled, backend, inputs: "InputSet", rng, label: str) -> VerifyResult:
    """One run on ``inputs`` (the random set, or the special set named ``label``) and its comparison."""
    debug.log(1, lambda: f"launch {kernel.name} on {backend.name} ({label} inputs)")
    special = label != "random"
    with np.errstate(all="ignore") if special else contextlib.nullcontext():   # inf - inf, NaN: what the set is for
        out = backend.run(compiled, [a.reshape(-1) for a in inputs], poison(kernel.output))
        if not isinstance(out, np.ndarray):
            return VerifyResult(False, reason=str(out), failure_kind=out.kind)
        return compare(kernel, out, inputs, rng, special)


# ---- special input sets --------------------------------------------------------------------

def special_sets(kernel: Kernel) -> list[str]:
    """The special input sets checked for ``kernel``, in order: those that apply, the
    budgeted ones only while its inputs total at most ``SPECIAL_BYTES``."""
    if kernel.kind == "attention": return []   # fp32 inside where its three kernels round to 16 bits: extremes differ
    small = sum(b.size * b.dtype.itemsize for b in kernel.inputs) <= SPECIAL_BYTES
    return [n for n, (applies, _, _) in DISTRIBUTIONS.items() if (n in ALWAYS or small) and applies(kernel)]


def _data_nodes(kernel: Kernel) -> list:
    """The body's value nodes (not the index and mask expressions of its loads)."""
    seen, stack, out = set(), [kernel.body], []
    while stack:
        n = stack.pop()
        if n in seen: continue
        seen.add(n)
        out.append(n)
        if n.op is not Ops.LOAD: stack.extend(n.src)
    return out


def _patterned(kernel: Kernel) -> set[int]:
    """Input slots a special set may change: loaded as values, never read by an index or a
    mask (an index input keeps its random values: its range is the validator's business)."""
    data = {n.arg for n in _data_nodes(kernel) if n.op is Ops.LOAD}
    index: set[int] = set()
    stack, seen = [kernel.store] + [s for n in _data_nodes(kernel) if n.op is Ops.LOAD for s in n.src], set()
    while stack:
        n = stack.pop()
        if n in seen: continue
        seen.add(n)
        if n.op is Ops.LOAD: index.add(n.arg)
        stack.extend(n.src)
    return data - index


def _float_inputs(kernel: Kernel) -> bool:
    return any(b.dtype.is_float for b in kernel.inputs) and kernel.output.dtype.is_float


def _float_to_int(kernel: Kernel) -> bool:
    """Some value goes from float to an integer or bool (undefined for NaN/inf in C)."""
    return any(n.op is Ops.CAST and n.src[0].dtype.is_float and not n.dtype.is_float for n in _data_nodes(kernel))


def _applies_mask(kernel: Kernel) -> bool:
    """A -inf mask matters to a max reduction or exp2 (softmax, attention)."""
    nodes = _data_nodes(kernel)
    return _float_inputs(kernel) and not _float_to_int(kernel) and any(
        n.op is Ops.EXP2 or (n.op is Ops.REDUCE and n.arg[0] == "max") for n in nodes)


def _applies_ieee(kernel: Kernel) -> bool:
    """NaN, infinities and signed zeros follow IEEE in float64 and in the kernel's own
    precision alike, except through a float -> integer cast."""
    return _float_inputs(kernel) and not _float_to_int(kernel)


_LARGE_OPS = {Ops.LOAD, Ops.CAST, Ops.ADD, Ops.MUL, Ops.MAX, Ops.EXP2, Ops.REDUCE, Ops.CONST}


def _applies_large(kernel: Kernel) -> bool:
    """Positive inputs in [max/2, max) of their dtype: every value of the body stays at least
    max/2 or overflows, in float64 and in fp32/fp16 alike, only if the body is made of
    loads, float casts, add, mul, max, exp2, sums and maxima, and constants >= 1 (0 in add and
    max); a masked load (0) only as a factor of a plain load. Not for float64 (its squares
    overflow the error norm). Elsewhere (1/x, x - y, norms) an fp32 intermediate can overflow
    where the float64 reference does not, and a correct kernel would fail."""
    if not _float_inputs(kernel) or kernel.output.dtype.name == "float64": return False
    slots = _patterned(kernel)
    if any(b.dtype.name == "float64" or not b.dtype.is_float for i, b in enumerate(kernel.inputs) if i in slots):
        return False
    plain = lambda n: n.op in (Ops.LOAD, Ops.CONST) or (n.op is Ops.CAST and n.src[0].op is Ops.LOAD)  # noqa: E731
    for n in _data_nodes(kernel):
        if n.op not in _LARGE_OPS or not n.dtype.is_float: return False
        if n.op is Ops.CAST and not n.src[0].dtype.is_float: return False
        if n.op is Ops.CONST and not (n.arg >= 1 or n.arg == 0): return False
        if n.op is Ops.MUL and any(s.op is Ops.CONST and s.arg == 0 for s in n.src): return False
        if n.op is Ops.MUL and not all(plain(s) for s in n.src) and any(_maybe_zero(s) for s in n.src): return False
    return True


def _maybe_zero(n) -> bool:
    """A masked load (it yields 0 where the mask is off), possibly through a cast."""
    if n.op is Ops.CAST: n = n.src[0]
    return n.op is Ops.LOAD and not (n.src[1].op is Ops.CONST and n.src[1].arg is True)


_RING = {Ops.ADD, Ops.MUL, Ops.NEG, Ops.AND, Ops.OR, Ops.XOR, Ops.REDUCE, Ops.CAST, Ops.LOAD, Ops.CONST}


def _applies_extremes(kernel: Kernel) -> bool:
    """Integer extremes where the reference wraps like the machine: an integer-only body of
    ring ops (add, mul, neg, and/or/xor, sums, integer casts; the store wraps), any other op
    (max, compares, where) only on loads and constants. Division, modulo and shifts are out
    (C traps on INT_MIN / -1 and leaves wide shifts undefined), and so is widening a sum or a
    negation (the reference keeps those in 64 bits)."""
    if not any(b.dtype.is_int for b in kernel.inputs) or kernel.output.dtype.is_float: return False
    leaf = lambda n: n.op in (Ops.LOAD, Ops.CONST) or (n.op is Ops.CAST and n.src[0].op in (Ops.LOAD, Ops.CONST))  # noqa: E731
    for n in _data_nodes(kernel):
        if n.dtype.is_float: return False
        if n.op in (Ops.IDIV, Ops.MOD, Ops.SHL, Ops.SHR): return False
        if n.op is Ops.REDUCE and n.arg[0] != "sum" and not all(leaf(s) for s in n.src): return False
        if n.op not in _RING and not all(leaf(s) for s in n.src): return False
        if n.op is Ops.CAST and n.src[0].op in (Ops.REDUCE, Ops.NEG) and n.dtype.itemsize > n.src[0].dtype.itemsize:
            return False
    return True


def _values(a: np.ndarray, d: dt.DType) -> np.ndarray:
    return np.asarray(dt.to_values(a, d), dtype=np.float64 if d.is_float else np.int64)


def _rows(a: np.ndarray) -> np.ndarray:
    """A view of ``a`` as rows along its last axis (one row for a vector or a scalar)."""
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def _floats(kernel: Kernel, arrays: list[np.ndarray], pattern) -> list[np.ndarray]:
    """Each float input's values through ``pattern(rows) -> rows`` (in float64), stored back
    in its dtype; other inputs unchanged."""
    out, slots = [], _patterned(kernel)
    for i, (a, b) in enumerate(zip(arrays, kernel.inputs)):
        if not b.dtype.is_float or not a.size or i not in slots: out.append(a); continue
        with np.errstate(all="ignore"):
            x = pattern(_rows(_values(a, b.dtype)).copy())
            out.append(dt.to_storage(x.reshape(a.shape), b.dtype).reshape(a.shape))
    return out


def _mask(rows: np.ndarray) -> np.ndarray:
    """Causal: -inf right of the diagonal (row index modulo the row length); row 1 all -inf
    (numpy: a NaN softmax row)."""
    r = np.arange(rows.shape[0])[:, None] % rows.shape[1]
    rows[np.arange(rows.shape[1])[None, :] > r] = -np.inf
    if rows.shape[0] > 2: rows[1] = -np.inf
    return rows


def _nan_inf(rows: np.ndarray) -> np.ndarray:
    """Row r % 4 == 1 holds one NaN, == 2 one +inf, == 3 one -inf (column 7r mod length)."""
    r = np.arange(rows.shape[0])
    col = (7 * r) % rows.shape[1]
    for k, v in ((1, np.nan), (2, np.inf), (3, -np.inf)):
        sel = r % 4 == k
        rows[r[sel], col[sel]] = v
    return rows


def _negzero(rows: np.ndarray) -> np.ndarray:
    """Every 4th element -0.0, the one two after it +0.0."""
    flat = rows.reshape(-1)
    flat[0::4], flat[2::4] = -0.0, 0.0
    return rows


def _large(kernel: Kernel, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Positive magnitudes in [max/2, 0.99 max) of each input's dtype (from the random values)."""
    out, slots = [], _patterned(kernel)
    for i, (a, b) in enumerate(zip(arrays, kernel.inputs)):
        if i not in slots: out.append(a); continue
        m = FINITE_MAX[b.dtype.name]
        x = np.clip((np.abs(_values(a, b.dtype)) - 0.1) / 0.9, 0.0, 1.0)       # [0, 1]
        out.append(dt.to_storage(m * (0.5 + 0.49 * x), b.dtype).reshape(a.shape))
    return out


def _extremes(kernel: Kernel, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Every other element of each integer input an extreme: MIN, MIN+1, MAX, MAX-1, -1, 1
    (unsigned: 0, 1, MAX, MAX-1) in turn; the rest the random values."""
    out, slots = [], _patterned(kernel)
    for i, (a, b) in enumerate(zip(arrays, kernel.inputs)):
        if not b.dtype.is_int or i not in slots: out.append(a); continue
        info = np.iinfo(b.dtype.np)
        ext = np.array([info.min, info.min + 1, info.max, info.max - 1] + ([-1, 1] if info.min < 0 else [0, 1]),
                       dtype=b.dtype.np)
        x = np.array(a).reshape(-1)
        idx = np.arange(0, x.size, 2)
        x[idx] = ext[(idx // 2) % len(ext)]
        out.append(x.reshape(a.shape))
    return out


# name -> (applies(kernel), make(kernel, random arrays) -> arrays, what it holds)
DISTRIBUTIONS = {
    "mask": (_applies_mask, lambda k, a: _floats(k, a, _mask), "causal -inf mask, one row all -inf"),
    "nan_inf": (_applies_ieee, lambda k, a: _floats(k, a, _nan_inf), "rows holding NaN, +inf, -inf"),
    "extremes": (_applies_extremes, _extremes, "integer MIN/MAX, wrapping"),
    "negzero": (_applies_ieee, lambda k, a: _floats(k, a, _negzero), "-0.0 and +0.0"),
    "large": (_applies_large, _large, "magnitudes near the dtype's max"),
}
