"""The one validator of kernels read from files (pickle, JSON, tinygrad import).

A kernel file describes a *front-end* kernel and nothing else: only the ops a kernel
body may hold (no lowered-only ``SPECIAL``/``REG``/``SHARED``, whose string args reach
generated code), each with its arity and argument types, dtypes that are the canonical
objects of ``ir.dtype``, constants representable in their dtype, and every index
expression's range (from the axes' bounds) inside its buffer -- for a masked load, the range
where its mask is true (``check_load_bounds``). Everything is iterative
(no recursion over the graph). Limits are module attributes, overridable::

    import superopt.validate as v; v.LIMITS["max_elements"] = 1 << 36
"""
from __future__ import annotations

import math
from typing import Any

from superopt.ir import dtype as dt
from superopt.ir.node import BINARY, REDUCE_OPS, TRUE, UNARY, Node, Ops

LIMITS: dict[str, int] = {
    "max_elements": 1 << 34,     # elements of one buffer
    "max_points": 1 << 40,       # points of the iteration space (product of the axes)
    "max_dims": 8,               # dimensions of a buffer
    "max_axes": 16,              # kernel axes
    "max_nodes": 20000,          # distinct nodes of body + store
    "max_depth": 256,            # longest source chain
    "max_name": 128,             # characters of a kernel or buffer name
}

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.+=,:@^ "
FRONT_END_OPS = {Ops.CONST, Ops.VAR, Ops.LOAD, Ops.WHERE, Ops.REDUCE} | UNARY | BINARY
# int32 constants may be folded index arithmetic (linear forms), so they get 64 bits
_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-(1 << 63), (1 << 63) - 1)}


_FLOAT_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38, "float32": 3.4028234663852886e38}


class ValidationError(ValueError):
    """One line saying what is wrong."""


def _fail(msg: str) -> None: raise ValidationError(msg)


def check_name(s: Any, what: str) -> None:
    if type(s) is not str or not s or len(s) > LIMITS["max_name"] or not all(c in NAME_CHARS for c in s):
        _fail(f"bad {what} name {str(s)[:40]!r} (ASCII letters, digits and {NAME_CHARS[62:]!r} only)")


def check_dtype(d: Any) -> None:
    if type(d) is not dt.DType or dt.ALL.get(d.name) is not d: _fail("dtype is not one of superopt's dtypes")


def check_shape(shape: Any, what: str) -> int:
    if type(shape) is not tuple or not 0 <= len(shape) <= LIMITS["max_dims"] \
            or not all(type(x) is int and x > 0 for x in shape):
        _fail(f"bad shape for {what}")
    n = math.prod(shape)
    if n > LIMITS["max_elements"]: _fail(f"{what} has {n:.3g} elements (limit {LIMITS['max_elements']})")
    return n


def check_const(value: Any, d: dt.DType) -> None:
    if d.kind == "b":
        if type(value) is not bool: _fail("bool constant is not a bool")
    elif d.is_int:
        lo, hi = _INT_RANGE.get(d.name, (-(1 << 63), (1 << 63) - 1))
        if type(value) is not int or not lo <= value <= hi: _fail(f"constant not representable in {d.name}")
    elif type(value) is not float: _fail(f"{d.name} constant is not a float")
    elif math.isfinite(value) and abs(value) > _FLOAT_MAX.get(d.name, math.inf):
        _fail(f"constant {value:.3g} overflows {d.name}")


def validate_kernel(k: Any) -> None:
    """Raise ValidationError (one line) unless ``k`` is a well-formed front-end Kernel."""
    from superopt.ir.kernel import Axis, Buffer
    check_name(k.name, "kernel")
    if type(k.axes) is not tuple or not 0 < len(k.axes) <= LIMITS["max_axes"]: _fail("bad axes")
    for a in k.axes:
        if type(a) is not Axis or type(a.size) is not int or a.size <= 0 or type(a.reduce) is not bool:
            _fail("malformed axis")
    pts = math.prod(a.size for a in k.axes)
    if pts > LIMITS["max_points"]: _fail(f"iteration space of {pts:.3g} points (limit {LIMITS['max_points']})")
    if type(k.inputs) is not tuple: _fail("bad inputs")
    sizes = []
    for b in k.inputs + (k.output,):
        if type(b) is not Buffer: _fail("malformed buffer")
        check_name(b.name, "buffer"); check_dtype(b.dtype)  # noqa: E702
        sizes.append(check_shape(b.shape, f"buffer {b.name}"))
    out_axes = {i for i, a in enumerate(k.axes) if not a.reduce}
    # iterative walk: count, depth, types; sources are visited first
    order = _walk((k.body, k.store))
    depth: dict[int, int] = {}
    for n in order:
        _check_node(n, k, sizes)
        depth[id(n)] = d = 1 + max((depth[id(s)] for s in n.src), default=0)
        if d > LIMITS["max_depth"]: _fail(f"graph deeper than {LIMITS['max_depth']}")
        n._range()  # sources already cached: no recursion
    for n in order:  # every load's index inside its buffer wherever its mask is true
        if n.op is Ops.LOAD: check_load_bounds(n, sizes[n.arg])
    lo, hi = k.store._range()
    if not (0 <= lo and hi < sizes[-1]): _fail(f"store index range [{lo}, {hi}] outside the output ({sizes[-1]} elements)")
    if not k.store.dtype.is_int: _fail("store index is not an integer")
    for n in _walk((k.store,)):
        if n.op is Ops.VAR and n.arg[0] not in out_axes: _fail("store index uses a reduce axis")
        if n.op in (Ops.LOAD, Ops.REDUCE): _fail("store index reads data")


def _walk(roots: tuple[Node, ...]) -> list[Node]:
    out: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(r, False) for r in roots]
    while stack:
        n, done = stack.pop()
        if done: out.append(n); continue  # noqa: E702
        if id(n) in seen: continue
        if type(n) is not Node: _fail("graph holds a non-node")
        seen.add(id(n))
        if len(seen) > LIMITS["max_nodes"]: _fail(f"graph has more than {LIMITS['max_nodes']} nodes")
        if type(n.src) is not tuple: _fail("node sources are not a tuple")
        stack.append((n, True))
        stack.extend((s, False) for s in n.src)
    return out


def _check_node(n: Node, k: Any, sizes: list[int]) -> None:
    op, d, src, arg = n.op, n.dtype, n.src, n.arg
    if type(op) is not Ops or op not in FRONT_END_OPS: _fail(f"op {getattr(op, 'name', op)!s:.20} is not allowed in a kernel file")
    check_dtype(d)
    ar = {Ops.CONST: 0, Ops.VAR: 0, Ops.LOAD: 2, Ops.WHERE: 3, Ops.REDUCE: 1}.get(op, 1 if op in UNARY else 2)
    if len(src) != ar: _fail(f"{op.name} takes {ar} sources, has {len(src)}")
    if op is Ops.CONST:
        check_const(arg, d)
    elif op is Ops.VAR:
        if type(arg) is not tuple or len(arg) != 2 or type(arg[0]) is not int or type(arg[1]) is not int \
                or not 0 <= arg[0] < len(k.axes) or arg[1] != k.axes[arg[0]].size or d is not dt.int32:
            _fail("malformed VAR (axis, size)")
    elif op is Ops.LOAD:
        if type(arg) is not int or not 0 <= arg < len(k.inputs): _fail("LOAD names no input")
        if d is not k.inputs[arg].dtype or not src[0].dtype.is_int or src[1].dtype is not dt.bool_:
            _fail("malformed LOAD (dtype, index or valid)")
    elif op is Ops.REDUCE:
        if type(arg) is not tuple or len(arg) != 2 or arg[0] not in REDUCE_OPS or type(arg[1]) is not tuple \
                or not all(type(a) is int and 0 <= a < len(k.axes) for a in arg[1]):
            _fail("malformed REDUCE (op, axes)")
    elif arg is not None:
        _fail(f"{op.name} takes no argument")
    if op in (Ops.IDIV, Ops.MOD) and d.is_int and src[1].op is Ops.CONST and src[1].arg == 0:
        _fail("integer division by zero")


# ---- bounds of masked loads and gathers -------------------------------------------------------
# A masked load (convolution padding, causal masks) may have an index whose raw range leaves the
# buffer: only where the mask is true must it stay inside. The index and the mask's integer
# comparisons are read as linear forms over "atoms" (axis variables, and any non-linear
# subexpression such as a loaded value or a division, with its interval range); the extremes
# of the index over the box of atom ranges cut by the mask's linear constraints are a linear
# program. Its real-valued optimum bounds the integer one, so a pass is a proof. Constraints
# the reader does not understand (OR, float comparisons) are dropped, which only loosens it.
# A gather (an index computed from a loaded value) passes only when a clamp (MAX/MIN) or the
# mask bounds the loaded value; otherwise the file is refused.
_SMALL_INT = {"int8": (-128, 127), "uint8": (0, 255)}

Lin = dict  # atom Node (or 1 for the constant term) -> coefficient


def _atom_range(n: Node) -> tuple[float, float]:
    lo, hi = n._range()
    if n.op in (Ops.LOAD, Ops.CAST) and n.dtype.name in _SMALL_INT:   # the dtype bounds its values
        a, b = _SMALL_INT[n.dtype.name]
        lo, hi = max(lo, a), min(hi, b)
    elif n.op is Ops.CAST and n.dtype is dt.int32 and n.src[0].dtype.name in _SMALL_INT:
        lo, hi = _SMALL_INT[n.src[0].dtype.name]                     # widening keeps the values
    return lo, hi


def _linear(root: Node) -> Lin:
    """``root`` as {atom: coefficient, 1: constant} (iterative; shared subterms computed once)."""
    memo: dict[int, Lin] = {}
    for n in _walk((root,)):
        if n.op is Ops.CONST and n.dtype.is_int: f = {1: n.arg}
        elif n.op is Ops.ADD: f = _axpy(memo[id(n.src[0])], memo[id(n.src[1])], 1)
        elif n.op is Ops.NEG: f = _axpy({}, memo[id(n.src[0])], -1)
        elif n.op is Ops.MUL and n.src[1].op is Ops.CONST: f = _axpy({}, memo[id(n.src[0])], n.src[1].arg)
        elif n.op is Ops.MUL and n.src[0].op is Ops.CONST: f = _axpy({}, memo[id(n.src[1])], n.src[0].arg)
        else: f = {n: 1}
        memo[id(n)] = f
    return memo[id(root)]


def _axpy(a: Lin, b: Lin, k: int) -> Lin:
    out = dict(a)
    for t, c in b.items(): out[t] = out.get(t, 0) + k * c
    return {t: c for t, c in out.items() if c}


def _constraints(mask: Node) -> list[Lin]:
    """The mask's conjuncts as linear forms that are <= 0 wherever the mask is true."""
    out: list[Lin] = []
    stack = [mask]
    while stack:
        c = stack.pop()
        if c.op is Ops.AND and c.dtype is dt.bool_: stack.extend(c.src); continue  # noqa: E702
        neg = c.op is Ops.CMPNE and c.src[1] is TRUE            # not_(x)
        x = c.src[0] if neg else c
        if x.op not in (Ops.CMPLT, Ops.CMPEQ) or not x.src[0].dtype.is_int: continue
        d = _axpy(_linear(x.src[0]), _linear(x.src[1]), -1)     # a - b
        if x.op is Ops.CMPLT: out.append(_axpy(d, {1: 1}, 1) if not neg else _axpy({}, d, -1))  # a-b+1<=0 | b-a<=0
        elif not neg: out += [d, _axpy({}, d, -1)]                # a == b
    return out


def _extremes(index: Node, mask: Node) -> tuple[float, float] | None:
    """(min, max) of the index where the mask is true (None: the mask is never true)."""
    from scipy.optimize import linprog
    f, cons = _linear(index), _constraints(mask)
    atoms = list({t: None for g in [f] + cons for t in g if t != 1})
    bounds = [tuple(None if math.isinf(v) else v for v in _atom_range(a)) for a in atoms]
    a_ub = [[g.get(a, 0) for a in atoms] for g in cons] or None
    b_ub = [-g.get(1, 0) for g in cons] or None
    c = [f.get(a, 0) for a in atoms]
    if not atoms: return (f.get(1, 0), f.get(1, 0))
    ext = []
    for sign in (1, -1):
        r = linprog([sign * x for x in c], A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if r.status == 2: return None                          # infeasible: never loads
        ext.append(sign * r.fun + f.get(1, 0) if r.status == 0 else sign * -math.inf)
    return ext[0], ext[1]


def _is_gather(index: Node) -> bool:
    return any(n.op is Ops.LOAD for n in _walk((index,)))


def check_load_bounds(load: Node, size: int) -> None:
    """Refuse (one line) a load whose index can leave its buffer of ``size`` elements where
    its mask is true."""
    index, mask = load.src
    lo, hi = index._range()
    if 0 <= lo and hi < size: return
    ext = None if mask.op is Ops.CONST and mask.arg is False else _extremes(index, mask)
    if ext is None: return   # the mask is never true: nothing is read
    lo, hi = ext
    if math.isfinite(lo + hi) and math.ceil(lo - 1e-6) >= 0 and math.floor(hi + 1e-6) <= size - 1:
        return   # the extremes are real-valued: round inward to the integer points
    what = "gather (index from a loaded value, not clamped or masked into range)" if _is_gather(index) else "load"
    _fail(f"{what} from input {load.arg}: index range [{lo:g}, {hi:g}]"
          f"{'' if mask is TRUE else ' where its mask is true'} outside the buffer ({size} elements)")


# ---- does the kernel fit the backend? -----------------------------------------------------------
# Before compiling: refuse a kernel whose buffers cannot be held by the machine that runs it
# (one line), and warn, with the cost model's estimate, where one run of the hand rules'
# schedule's runs for one candidate's measurement (RUNS_PER_CANDIDATE: 15 timed, 2 warm-up,
# about 5 for the verification's input sets) are modeled past SLOW_S.
SLOW_S = 60.0
RUNS_PER_CANDIDATE = 22
DEVICE_MEMORY = {"h100": 80 * 10**9, "h200": 141 * 10**9}   # bytes, datasheets (HBM3 / HBM3e)


def modeled_hand_s(kernel: Any, machine: Any) -> float | None:
    """Modeled seconds of one run of the hand rules' schedule on ``machine`` (None where the
    model does not price it)."""
    from superopt.search.cost import modeled_time
    from superopt.search.hand import hand_schedule
    try:
        return float(modeled_time(kernel, hand_schedule(kernel, machine), machine))
    except Exception:  # noqa: BLE001 - an estimate only: no estimate is not an error
        return None


def host_memory() -> int | None:
    """Bytes of physical memory of this machine (None where the OS does not say)."""
    import os
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def buffer_bytes(kernel: Any) -> int:
    return sum(b.size * b.dtype.itemsize for b in kernel.inputs + (kernel.output,))


def check_fits(kernel: Any, machine: Any, slow_s: float | None = None) -> str | None:
    """Raise ValidationError (one line) where the kernel's buffers exceed the memory of the
    machine that holds them (a GPU's, else this host's: cpu, emu and hexagon under qemu run
    here); return a warning (one line, with the model's estimate) where measuring one candidate
    (``RUNS_PER_CANDIDATE`` runs of the hand rules' schedule) is modeled past ``slow_s``; else None."""
    slow_s = SLOW_S if slow_s is None else slow_s   # read now: the module's setting is overridable
    need = buffer_bytes(kernel)
    mem = DEVICE_MEMORY.get(machine.name) if machine.is_simt else host_memory()
    where = f"the {machine.name} GPU's" if machine.is_simt else "this machine's"
    if mem is not None and need > mem:
        _fail(f"kernel {kernel.name} needs {need / 1e9:,.1f} GB of buffers, more than {where} {mem / 1e9:,.1f} GB of memory")
    est = modeled_hand_s(kernel, machine)
    if est is not None and est * RUNS_PER_CANDIDATE > slow_s:
        return (f"kernel {kernel.name} is modeled at {est:,.2f} s a run on {machine.name} with the hand rules (cost model): "
                f"measuring one candidate ({RUNS_PER_CANDIDATE} runs) takes about {est * RUNS_PER_CANDIDATE:,.0f} s, "
                f"over {slow_s:g} s; --budget bounds the whole tune")
    return None
