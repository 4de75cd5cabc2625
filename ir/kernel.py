"""The canonical kernel: a loop nest over axes, input buffers read through index
expressions, one body expression, one store."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from . import dtype as dt
from .node import Node, Ops, TRUE, ALU, render, toposort

KERNEL_FORMAT = "superopt.kernel"
KERNEL_VERSION = 1


@dataclass(frozen=True)
class Buffer:
    name: str
    dtype: dt.DType
    shape: tuple[int, ...]

    @property
    def size(self) -> int: return math.prod(self.shape)
    @property
    def nbytes(self) -> int: return self.size * self.dtype.itemsize


@dataclass(frozen=True)
class Axis:
    size: int
    reduce: bool = False


@dataclass(frozen=True, eq=False)
class Kernel:
    """``out[store] = body`` for every point of the output axes.

    ``body`` reads ``inputs[i]`` through ``LOAD(index, valid)`` nodes (arg=i) whose index
    and valid are expressions over ``VAR(axis, size)``. A masked load (valid false) reads
    nothing and yields 0. Reductions take one of two forms:

    - classic: at most one ``REDUCE`` node; it folds the reduce axes (``Axis.reduce``);
    - row kernel (no reduce axes): any number of ``REDUCE`` nodes, all folding the same
      *output* axes, the row axes. A REDUCE evaluated at an output point folds its input
      over the whole row (the row variables run over their range inside it), so its
      value is the same along the row: softmax's max and sum, layernorm's mean and
      variance, and the normalized output all live in one kernel. REDUCEs may nest.
    """
    name: str
    axes: tuple[Axis, ...]
    inputs: tuple[Buffer, ...]
    output: Buffer
    body: Node
    store: Node  # linear index into output, over output axes only

    def __post_init__(self):
        _check(self)

    def __reduce__(self):
        return (Kernel, (self.name, self.axes, self.inputs, self.output, self.body, self.store))

    def __eq__(self, other) -> bool: return isinstance(other, Kernel) and self.key == other.key
    def __hash__(self) -> int: return hash(self.key)

    # ---- derived facts ------------------------------------------------------
    @property
    def output_axes(self) -> list[int]: return [i for i, a in enumerate(self.axes) if not a.reduce]
    @property
    def reduce_axes(self) -> list[int]: return [i for i, a in enumerate(self.axes) if a.reduce]
    @property
    def out_points(self) -> int: return math.prod(self.axes[i].size for i in self.output_axes)
    @property
    def points(self) -> int: return math.prod(a.size for a in self.axes)

    @cached_property
    def reduces(self) -> list[Node]:
        """Every REDUCE node, inner ones first."""
        return [n for n in self.body.toposort() if n.op is Ops.REDUCE]

    @cached_property
    def row_axes(self) -> list[int]:
        """Output axes folded by the REDUCEs of a row kernel (empty otherwise)."""
        return sorted({a for r in self.reduces for a in r.arg[1] if not self.axes[a].reduce})

    @cached_property
    def reduce(self) -> Node | None:
        """The classic reduction (None for elementwise and row kernels)."""
        return None if self.row_axes else next(iter(self.reduces), None)

    @cached_property
    def loads(self) -> list[Node]:
        return [n for n in self.body.toposort() if n.op is Ops.LOAD]

    @cached_property
    def flops(self) -> int:
        """ALU ops executed (a multiply-add counts 2); index math and casts (dtype
        conversions, e.g. fp16 loads widened for fp32 accumulation) excluded."""
        inner = set(self.reduce.src[0].toposort()) if self.reduce else set()
        total = 0
        for n in self.body.toposort():
            if counts_as_flop(n):
                total += self.points if n in inner else self.out_points
            elif n.op is Ops.REDUCE:
                total += self.points
        return total

    @property
    def min_bytes(self) -> int:
        """Bytes that must cross DRAM at least once: each input and the output; an input
        read at data-dependent indices (a gather) at most once per point that reads it."""
        return sum(self._input_bytes(i) for i in range(len(self.inputs))) + self.output.nbytes

    def _input_bytes(self, i: int) -> int:
        b = self.inputs[i]
        gathers = [ld for ld in self.loads if ld.arg == i and any(x.op is Ops.LOAD for x in ld.src[0].toposort())]
        if len(gathers) < len([ld for ld in self.loads if ld.arg == i]): return b.nbytes
        return min(b.nbytes, len(gathers) * self.points * b.dtype.itemsize)

    @property
    def intensity(self) -> float: return self.flops / max(1, self.min_bytes)

    @property
    def kind(self) -> str:
        """Coarse class used by hand rules and reports."""
        if self.row_axes: return "row"
        if self.reduce is None: return "elementwise"
        inner = self.reduce.src[0]
        # a product of two data operands (not data times a constant, as in a scaled exp-sum)
        muls = [n for n in inner.toposort() if n.op is Ops.MUL and not _is_index(n)
                and all(any(x.op is Ops.LOAD for x in s.toposort()) for s in n.src)]
        if self.reduce.arg[0] == "sum" and muls and len(self.loads) >= 2:
            vars_per_load = [{v.arg[0] for v in l.src[0].toposort() if v.op is Ops.VAR} for l in self.loads]
            if any(len(set(self.output_axes) - vs) > 0 for vs in vars_per_load):
                return "conv" if any(l.src[1] is not TRUE or _has_window(l) for l in self.loads) else "gemm"
        return "reduce"

    # ---- identity -----------------------------------------------------------
    @cached_property
    def key(self) -> str:
        """Stable content key: independent of kernel and buffer names."""
        d = self.to_dict()
        d.pop("name")
        for b in d["inputs"] + [d["output"]]:
            b.pop("name")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        nodes = toposort(self.body, self.store)
        ids = {n: i for i, n in enumerate(nodes)}
        return {"format": KERNEL_FORMAT, "version": KERNEL_VERSION, "name": self.name,
                "axes": [[a.size, a.reduce] for a in self.axes],
                "inputs": [_buf_dict(b) for b in self.inputs], "output": _buf_dict(self.output),
                "nodes": [[n.op.value, n.dtype.name, [ids[s] for s in n.src], _arg_json(n.arg)] for n in nodes],
                "body": ids[self.body], "store": ids[self.store]}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Kernel":
        if not isinstance(d, dict) or d.get("format") != KERNEL_FORMAT:
            raise ValueError("not a superopt kernel (missing format tag)")
        if d.get("version") != KERNEL_VERSION:
            raise ValueError(f"unsupported kernel format version {d.get('version')!r} (this superopt reads {KERNEL_VERSION})")
        nodes: list[Node] = []
        for op, dtn, src, arg in d["nodes"]:
            nodes.append(Node(Ops(op), dt.dtype_by_name(dtn), tuple(nodes[i] for i in src), _arg_py(arg)))
        return Kernel(d["name"], tuple(Axis(int(s), bool(r)) for s, r in d["axes"]),
                      tuple(_buf_py(b) for b in d["inputs"]), _buf_py(d["output"]),
                      nodes[d["body"]], nodes[d["store"]])

    def describe(self) -> str:
        names: dict[Any, str] = {i: f"{'r' if a.reduce else 'o'}{i}" for i, a in enumerate(self.axes)}
        lines = [f"kernel {self.name}  [{self.kind}]  key {self.key}",
                 "axes: " + "  ".join(f"{names[i]}={a.size}{' (reduce)' if a.reduce else ''}" for i, a in enumerate(self.axes))]
        for i, b in enumerate(self.inputs):
            idx = sorted({render(l.src[0], names) + ("" if l.src[1] is TRUE else f"  valid: {render(l.src[1], names)}")
                          for l in self.loads if l.arg == i})
            lines.append(f"in{i} {b.name}: {b.dtype.name}{list(b.shape)}")
            lines += [f"    index: {s}" for s in idx]
        lines.append(f"out {self.output.name}: {self.output.dtype.name}{list(self.output.shape)}  index: {render(self.store, names)}")
        lets = _shared(self.body)
        for i, n in enumerate(lets):
            lines.append(f"let v{i} = {render(n, names)}")
            names[n] = f"v{i}"
        lines.append(f"body: {render(self.body, names)}")
        lines.append(f"flops: {self.flops:,}   min bytes: {self.min_bytes:,}   intensity: {self.intensity:.2f} flop/byte")
        return "\n".join(lines)


def _shared(body: Node) -> list[Node]:
    """Data subexpressions used more than once (printed once by ``describe``), sources first."""
    users: dict[Node, int] = {}
    for n in body.toposort():
        if n.op is Ops.LOAD: continue  # index expressions are printed inside their load
        for s in n.src: users[s] = users.get(s, 0) + 1
    return [n for n in body.toposort() if users.get(n, 0) > 1 and n.op not in (Ops.CONST, Ops.VAR)
            and n.dtype is not dt.bool_ and not _is_index(n)]


def counts_as_flop(n: Node) -> bool:
    """An ALU node ``Kernel.flops`` counts: data arithmetic, not casts, predicates or index math."""
    return n.op in ALU and n.op is not Ops.CAST and n.dtype is not dt.bool_ and not _is_index(n)


def _is_index(n: Node) -> bool:
    """Index math: integer arithmetic over axis variables that reads no data (an int32
    product of two loads, as in an int8 GEMM, is data)."""
    if "is_index" not in n._cache:
        srcs = n.toposort()
        n._cache["is_index"] = n.dtype is dt.int32 and any(s.op is Ops.VAR for s in srcs) and \
            not any(s.op is Ops.LOAD for s in srcs)
    return n._cache["is_index"]


def _has_window(load: Node) -> bool:
    """An index that adds an output and a reduce variable (sliding window)."""
    return load.src[0].op is Ops.ADD and any(s.op in (Ops.IDIV, Ops.MOD) for s in load.src[0].toposort())


def _buf_dict(b: Buffer) -> dict: return {"name": b.name, "dtype": b.dtype.name, "shape": list(b.shape)}
def _buf_py(d: dict) -> Buffer: return Buffer(str(d["name"]), dt.dtype_by_name(d["dtype"]), tuple(int(x) for x in d["shape"]))


def _arg_json(a: Any) -> Any:
    if isinstance(a, tuple): return [_arg_json(x) for x in a]
    if isinstance(a, float) and not math.isfinite(a): return {"float": repr(a)}
    return a


def _arg_py(a: Any) -> Any:
    if isinstance(a, list): return tuple(_arg_py(x) for x in a)
    if isinstance(a, dict): return float(a["float"])
    return a


def _check(k: Kernel) -> None:
    """Structural invariants; raise ValueError with a clear message."""
    if not k.axes: raise ValueError("kernel has no axes")
    nodes = k.body.toposort()
    for n in nodes + k.store.toposort():
        if n.op is Ops.VAR:
            ax, size = n.arg
            if not (0 <= ax < len(k.axes)) or k.axes[ax].size != size:
                raise ValueError(f"index variable {n.arg} does not match the kernel axes")
        if n.op is Ops.LOAD and not (0 <= n.arg < len(k.inputs)):
            raise ValueError(f"load from input {n.arg}, kernel has {len(k.inputs)}")
        if n.op in (Ops.BUFFER,) or n.op.value in ("reshape", "permute", "expand", "pad", "shrink"):
            raise ValueError(f"{n.op.name} cannot appear in a kernel body")
    reduces = [n for n in nodes if n.op is Ops.REDUCE]
    if reduces and reduces[0].arg[1] and all(0 <= a < len(k.axes) and not k.axes[a].reduce for a in reduces[0].arg[1]):
        return _check_rows(k, reduces)
    if len(reduces) > 1: raise ValueError("a kernel holds at most one reduction, or several folding the same output axes")
    red_axes = set(reduces[0].arg[1]) if reduces else set()
    if red_axes != set(k.reduce_axes):
        raise ValueError(f"reduce node folds axes {sorted(red_axes)} but the kernel's reduce axes are {k.reduce_axes}")
    if any(v.op is Ops.VAR and v.arg[0] in red_axes for v in k.store.toposort()):
        raise ValueError("store index uses a reduce axis")


def _check_rows(k: Kernel, reduces: list[Node]) -> None:
    """A row kernel: REDUCEs all fold the same output axes, the kernel has no reduce axes."""
    rows = set(reduces[0].arg[1])
    if any(set(r.arg[1]) != rows for r in reduces):
        raise ValueError("the REDUCEs of a row kernel must all fold the same axes")
    if any(not (0 <= a < len(k.axes)) for a in rows): raise ValueError(f"REDUCE folds unknown axes {sorted(rows)}")
    if k.reduce_axes: raise ValueError("a row kernel (REDUCEs over output axes) has no reduce axes")
    if not rows <= {v.arg[0] for v in k.store.toposort() if v.op is Ops.VAR}:
        raise ValueError("the row axes a REDUCE folds must index the output")
