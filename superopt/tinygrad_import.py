"""Import tinygrad (0.14) kernel ASTs as superopt ``Kernel``s.

A tinygrad kernel AST is ``SINK(END(STORE(INDEX(PARAM out, idx), value), *output ranges))``;
loads are ``INDEX(PARAM, idx)``, a masked load's index is ``WHERE(valid, idx, Invalid)``,
axes are ``RANGE`` nodes and a reduction is ``REDUCE(value, *ranges)``. This maps them to
our ``Kernel``: output ranges (END order) then reduce ranges become axes, PARAMs other
than the stored one become inputs in slot order, weak constants take their use's dtype.

Supported: elementwise ops (the ALU ops our IR has, plus SUB, FDIV, MULACC, FLOORDIV/MOD,
and CDIV/CMOD on operands proven non-negative), casts, masked loads (pads), one SUM or
MAX reduction (matmul, conv, norms), dtypes float32/float16/bfloat16/int8/uint8/int32/bool.
Not supported (a clear ValueError names the reason): several stores or reductions in one
kernel, symbolic shapes (DEFINE_VAR), ASTs after optimization (WMMA, locals, unrolled
vectors), BITCAST, TRUNC, POW, THREEFRY, float64/int64, custom code.

Pickled ASTs are read with an allow-list unpickler (only tinygrad's AST data classes and
enums), never with plain ``pickle.load``.
"""
from __future__ import annotations

import io
import pickle
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from superopt.ir import dtype as dt
from superopt.ir.kernel import Axis, Buffer, Kernel
from superopt.ir.node import Node, Ops, TRUE, add, alu, const, lt, mul, not_, var

PICKLE_MARKER = b"tinygrad.uop.ops"

# (module, name) pairs a tinygrad kernel-AST pickle may reference: data classes and enums only
ALLOWED = {("tinygrad.uop.ops", "UOp"), ("tinygrad.uop", "Ops"), ("tinygrad.uop.ops", "Ops"),
           ("tinygrad.uop.ops", "AxisType"), ("tinygrad.uop.ops", "KernelInfo"), ("tinygrad.uop.ops", "ParamArg"),
           ("tinygrad.uop.ops", "CallInfo"), ("tinygrad.dtype", "DType"), ("tinygrad.dtype", "AddrSpace"),
           ("tinygrad.dtype", "ConstFloat"), ("tinygrad.dtype", "InvalidType"), ("tinygrad.codegen.opt", "Opt"),
           ("tinygrad.codegen.opt", "OptOps"), ("tinygrad.renderer", "Estimates"), ("tinygrad.helpers", "Metadata")}

_DTYPES = {"float": dt.float32, "half": dt.float16, "__bf16": dt.bfloat16, "bfloat16": dt.bfloat16,
           "signed char": dt.int8, "char": dt.int8, "unsigned char": dt.uint8, "int": dt.int32, "bool": dt.bool_}
_INDEX_DTYPES = {"weakint", "index"}  # tinygrad types of loop/index arithmetic
_SAME = {n: getattr(Ops, n) for n in ("ADD", "MUL", "MAX", "CMPLT", "CMPNE", "CMPEQ", "AND", "OR", "XOR", "SHL",
                                      "SHR", "WHERE", "NEG", "EXP2", "LOG2", "SQRT", "SIN")}
_RENAMED = {"RECIPROCAL": Ops.RECIP, "FLOORDIV": Ops.IDIV, "FLOORMOD": Ops.MOD}


class _AstUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a tinygrad kernel AST")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent references are not allowed")


def is_tinygrad_pickle(data: bytes) -> bool:
    """Cheap sniff: a pickle whose globals name tinygrad's UOp module."""
    return data[:2] in (b"\x80\x04", b"\x80\x05", b"\x80\x03") and PICKLE_MARKER in data[:4096]


def loads_asts(data: bytes) -> list[Any]:
    """UOps from pickle bytes (a SINK, a CALL/LINEAR of kernels, or a list of them)."""
    _require_tinygrad()
    try:
        obj = _AstUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise ValueError(f"unsafe or invalid tinygrad pickle: {e}") from None
    except Exception as e:  # truncated/garbled streams raise all sorts
        raise ValueError(f"cannot read tinygrad pickle: {type(e).__name__}: {e}") from None
    return kernel_asts(obj)


def load_asts(path: str | Path) -> list[Kernel]:
    """Every kernel in a pickled tinygrad AST file."""
    data = Path(path).read_bytes()
    return [from_ast(a, name=f"{Path(path).stem}_{i}" if i else Path(path).stem) for i, a in enumerate(loads_asts(data))]


def load_ast(path: str | Path) -> Kernel:
    """The one kernel in a pickled tinygrad AST file (what ``superopt.io.load_kernel`` calls)."""
    ks = load_asts(path)
    if len(ks) != 1: raise ValueError(f"{path}: holds {len(ks)} tinygrad kernels, expected one (use load_asts)")
    return ks[0]


def kernel_asts(obj: Any) -> list[Any]:
    """The kernel SINKs inside a SINK, CALL, LINEAR (``Tensor.schedule_linear()``) or a list of those."""
    from tinygrad.uop.ops import UOp, Ops as TOps
    if isinstance(obj, (list, tuple)): return [s for o in obj for s in kernel_asts(o)]
    if not isinstance(obj, UOp): raise ValueError(f"not a tinygrad UOp: {type(obj).__name__}")
    if obj.op is TOps.SINK: return [obj]
    if obj.op is TOps.CALL: return kernel_asts(obj.src[0])
    if obj.op is TOps.LINEAR:  # copies and other non-kernel calls are skipped
        return [c.src[0] for c in obj.src if c.op is TOps.CALL and c.src[0].op is TOps.SINK]
    raise ValueError(f"not a kernel AST (top op {obj.op.name}); pass a SINK, CALL or LINEAR")


def kernels_from_tensor(t: Any) -> list[Kernel]:
    """The kernels tinygrad would run to realize tinygrad Tensor ``t`` (in order, not deduplicated)."""
    return [from_ast(a, name=f"tg{i}") for i, a in enumerate(kernel_asts(t.schedule_linear()))]


def capture_tensors(tensors: Iterable[Any], out_dir: str | Path) -> Path:
    """Write the kernels of tinygrad tensors as a capture directory ``superopt tune-cache`` reads."""
    from superopt.capture import Capture
    cap = Capture()
    for t in tensors:
        for k in kernels_from_tensor(t): cap.record(k)
    return cap.save(out_dir, source="tinygrad")


def axis_ranges(sink: Any) -> tuple[Any, list[Any], int]:
    """(STORE, the RANGE of each of our kernel axes in axis order, number of output axes):
    output ranges in END order, then the reduction's ranges. The exporter maps axes back with it."""
    from tinygrad.uop.ops import Ops as TOps
    if sink.op is not TOps.SINK: raise ValueError(f"expected a SINK, got {sink.op.name}")
    if len(sink.src) != 1: raise ValueError(f"kernel has {len(sink.src)} stores; only single-output kernels are supported")
    end = sink.src[0]
    store, out_ranges = (end.src[0], end.src[1:]) if end.op is TOps.END else (end, ())
    if store.op is not TOps.STORE: raise ValueError(f"expected STORE under the SINK, got {store.op.name}")
    reduces = [u for u in store.src[1].toposort() if u.op is TOps.REDUCE]
    if len(reduces) > 1: raise ValueError("kernel holds several reductions; only one is supported")
    red_ranges = reduces[0].src[1:] if reduces else ()
    ranges = list(out_ranges) + list(red_ranges)
    if not ranges: raise ValueError("kernel has no loops (scalar kernels are not supported)")
    return store, ranges, len(out_ranges)


@contextmanager
def capture_tinygrad(out_dir: str | Path | None = None) -> Iterator[Any]:
    """Record every kernel a tinygrad program realizes (``Tensor.realize`` and everything built
    on it), as superopt kernels with counts; written like ``superopt.capture`` on exit.
    Kernels the importer does not support are counted in ``cap.skipped`` (reason -> count)."""
    import tinygrad.tensor as tt
    from superopt.capture import Capture
    cap = Capture()
    cap.skipped = Counter()
    inner = tt.run_linear

    def run_linear(linear, *args, **kw):
        for a in kernel_asts(linear):
            try:
                cap.record(from_ast(a))
            except ValueError as e:
                cap.skipped[str(e)] += 1
        return inner(linear, *args, **kw)

    tt.run_linear = run_linear
    try:
        yield cap
    finally:
        tt.run_linear = inner
        if out_dir is not None and cap.kernels: cap.save(out_dir, source="tinygrad")


def from_ast(sink: Any, name: str = "tinygrad") -> Kernel:
    """One tinygrad kernel AST (a SINK) -> ``Kernel``; ValueError if not expressible."""
    from tinygrad.uop.ops import Ops as TOps
    store, ranges, n_out = axis_ranges(sink)
    axes = tuple(Axis(_range_size(r), i >= n_out) for i, r in enumerate(ranges))
    c = _Converter({r: var(i, axes[i].size) for i, r in enumerate(ranges)})
    out_param, out_idx = _index_parts(store.src[0])
    params = sorted({u for u in store.src[1].toposort() if u.op is TOps.PARAM}, key=lambda p: p.arg.slot)
    if out_param in params: raise ValueError("kernel reads the buffer it writes (in-place kernels are not supported)")
    c.slots = {p: i for i, p in enumerate(params)}
    inputs = tuple(Buffer(f"in{i}", _dtype(p.dtype), (_param_size(p),)) for i, p in enumerate(params))
    output = Buffer("out", _dtype(out_param.dtype), (_param_size(out_param),))
    body = c.value(store.src[1], output.dtype)
    if body.dtype is not output.dtype: body = Node(Ops.CAST, output.dtype, (body,))
    k = Kernel(name, axes, inputs, output, body, c.index(out_idx))
    from superopt.validate import validate_kernel
    validate_kernel(k)  # the one validator every loader uses (a ValueError)
    return k


# ---- helpers --------------------------------------------------------------------------
def _require_tinygrad() -> None:
    try:
        import tinygrad  # noqa: F401
    except ImportError:
        raise ValueError("this is a tinygrad kernel pickle; install the optional extra: pip install 'superopt[tinygrad]'") from None


def _dtype(d: Any) -> dt.DType:
    base = getattr(d, "base", d)
    try:
        return _DTYPES[base.name]
    except KeyError:
        raise ValueError(f"tinygrad dtype {base.name!r} is not supported") from None


def _range_size(r: Any) -> int:
    from tinygrad.uop.ops import Ops as TOps
    if r.op is not TOps.RANGE or r.src[0].op is not TOps.CONST:
        raise ValueError(f"loop bound is not a constant ({r.op.name}); symbolic shapes are not supported")
    return int(r.src[0].arg)


def _param_size(p: Any) -> int:
    from tinygrad.uop.ops import Ops as TOps
    if p.src and p.src[0].op is TOps.CONST: return int(p.src[0].arg)
    size = getattr(p.dtype, "size", -1)
    if isinstance(size, int) and size > 0: return size
    raise ValueError("buffer without a constant size")


def _index_parts(ix: Any) -> tuple[Any, Any]:
    from tinygrad.uop.ops import Ops as TOps
    if ix.op is not TOps.INDEX or ix.src[0].op is not TOps.PARAM:
        raise ValueError(f"expected INDEX(PARAM, ...), got {ix.op.name}")
    if len(ix.src) > 2: raise ValueError("multi-dimensional or gated INDEX is not supported")
    return ix.src[0], ix.src[1]


def _is_invalid(u: Any) -> bool: return type(u.arg).__name__ == "InvalidType"
def _is_weak(u: Any) -> bool: return u.op.name == "CONST" and u.dtype.name.startswith("weak")


class _Converter:
    def __init__(self, ranges: dict[Any, Node]):
        self.ranges = ranges
        self.slots: dict[Any, int] = {}
        self.memo: dict[tuple, Node] = {}

    # index expressions: integer arithmetic over ranges, built with our simplifying constructors
    def index(self, u: Any) -> Node:
        key = ("i", u)
        if key not in self.memo: self.memo[key] = self._index(u)
        return self.memo[key]

    def _index(self, u: Any) -> Node:
        name = u.op.name
        if u.op.name == "RANGE":
            if u not in self.ranges: raise ValueError("index uses a loop that is neither stored nor reduced")
            return self.ranges[u]
        if name == "CONST":
            if isinstance(u.arg, bool) or u.dtype.name == "bool": return const(bool(u.arg), dt.bool_)
            return const(int(u.arg), dt.int32)
        if name == "CAST" and u.dtype.name in _INDEX_DTYPES | {"int", "long", "bool"}: return self.index(u.src[0])
        if name == "CMPNE" and u.src[1].op.name == "CONST" and u.src[1].arg is True:
            x = self.index(u.src[0])  # not(a < b) on integers is b-1 < a: the form kernelize builds
            return lt(x.src[1] - 1, x.src[0]) if x.op is Ops.CMPLT and x.src[0].dtype.is_int else not_(x)
        s = [self.index(x) for x in u.src]
        if name == "ADD": return add(s[0], s[1])
        if name == "SUB": return add(s[0], mul(s[1], -1))
        if name == "MUL": return mul(s[0], s[1])
        if name in ("FLOORDIV", "FLOORMOD", "CDIV", "CMOD", "IDIV", "MOD"):
            if name.startswith("C") and (s[0].vmin < 0 or s[1].vmin <= 0):
                raise ValueError("C-style division of a possibly negative index is not supported")
            return alu(Ops.IDIV if name.endswith("DIV") else Ops.MOD, s[0], s[1])
        if name in ("CMPLT", "CMPNE", "CMPEQ", "AND", "OR", "XOR", "MAX", "WHERE", "NEG", "SHL", "SHR"):
            return alu(_SAME[name], *s)
        raise ValueError(f"index expression uses {name}, which is not supported")

    # values: the kernel body
    def value(self, u: Any, want: dt.DType | None = None) -> Node:
        key = ("v", u, want if _is_weak(u) else None)
        if key not in self.memo: self.memo[key] = self._value(u, want)
        return self.memo[key]

    def _value(self, u: Any, want: dt.DType | None) -> Node:
        name = u.op.name
        if name == "CONST":
            d = want if _is_weak(u) else _dtype(u.dtype)
            if d is None: raise ValueError("a weakly typed constant with no typed use")
            return const(float(u.arg) if d.is_float else bool(u.arg) if d is dt.bool_ else int(u.arg), d)
        if name == "INDEX": return self._load(u)
        if u.dtype.name == "bool" and not any(x.op.name in ("INDEX", "REDUCE") for x in u.toposort()):
            return self.index(u)  # a predicate over indices (pad masks): simplify like an index
        if name == "RANGE" or u.dtype.name in _INDEX_DTYPES and name != "CAST":
            return self._typed_index(u, want)
        if name == "REDUCE":
            op = {"ADD": "sum", "MAX": "max"}.get(u.arg[0].name)
            if op is None: raise ValueError(f"REDUCE with {u.arg[0].name} is not supported (sum and max are)")
            axes = tuple(self.ranges[r].arg[0] for r in u.src[1:])
            inner = self.value(u.src[0], _dtype(u.dtype))
            return Node(Ops.REDUCE, inner.dtype, (inner,), (op, axes))
        if name == "CAST":
            to = _dtype(u.dtype)
            x = self.value(u.src[0], to)
            return x if x.dtype is to else Node(Ops.CAST, to, (x,))
        out = None if u.dtype.name == "bool" else (want if u.dtype.name.startswith("weak") else _dtype(u.dtype))
        srcs = self._operands(u, out)
        if name == "SUB": return alu(Ops.ADD, srcs[0], alu(Ops.NEG, srcs[1]))
        if name == "FDIV": return alu(Ops.MUL, srcs[0], alu(Ops.RECIP, srcs[1]))
        if name == "MULACC": return alu(Ops.ADD, alu(Ops.MUL, srcs[0], srcs[1]), srcs[2])
        if name in ("CDIV", "CMOD"):
            if srcs[0].dtype.is_float or any(s.vmin < 0 for s in srcs[:1]) or srcs[1].vmin <= 0:
                raise ValueError(f"{name} on possibly negative or float values is not supported")
            return alu(Ops.IDIV if name == "CDIV" else Ops.MOD, *srcs)
        op = _SAME.get(name) or _RENAMED.get(name)
        if op is None: raise ValueError(f"tinygrad op {name} is not supported")
        return alu(op, *srcs)

    def _operands(self, u: Any, out: dt.DType | None) -> list[Node]:
        """Typed operands first; weak constants take the op's dtype, or a typed sibling's."""
        strong = {i: self.value(x) for i, x in enumerate(u.src) if not _is_weak(x)}
        data = [n for i, n in strong.items() if not (u.op.name == "WHERE" and i == 0)]
        fill = out if u.op.name not in ("CMPLT", "CMPNE", "CMPEQ") else None
        fill = fill or (data[0].dtype if data else None)
        return [strong[i] if i in strong else self.value(x, fill) for i, x in enumerate(u.src)]

    def _typed_index(self, u: Any, want: dt.DType | None) -> Node:
        """An index-valued expression used as data (e.g. arange): compute it, cast to the use's dtype."""
        x = self.index(u)
        to = want or dt.int32
        return x if to is dt.int32 else Node(Ops.CAST, to, (x,))

    def _load(self, u: Any) -> Node:
        param, idx = _index_parts(u)
        if param not in self.slots: raise ValueError("load from the output buffer is not supported")
        valid = TRUE
        if idx.op.name == "WHERE" and _is_invalid(idx.src[2]):
            valid, idx = self.index(idx.src[0]), idx.src[1]
        return Node(Ops.LOAD, _dtype(param.dtype), (self.index(idx), valid), self.slots[param])
