"""The workload registry: one ``Workload`` type used by ``superopt new``, the shape
suites and the benchmarks.

A *kind* (``Kind``) is a parameterised builder: it turns parameters into a lazy
``Tensor`` program and knows the numpy reference of that program. A ``Workload`` is one
kind with concrete parameters and a name. Building a workload kernelizes its program
into a list of ``Step``s (one kernel each, dependencies first).

How a workload maps to kernels: ``steps()`` is the whole program (under the default
fusion rule every kind of the library is one kernel: softmax, layernorm and rmsnorm are
row kernels, a conv's requantize is its epilogue; rows longer than ``ROW_MAX`` make a
softmax 3 kernels).
Tools that tune one kernel take ``kernel`` = ``steps()[main].kernel``, the *main*
kernel: the one with the most flops (ties: the most minimum bytes, then the later one).
The reference checks the program's final output, i.e. running every step in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np

from superopt.ir import dtypes as dt
from superopt.ir.kernel import Buffer, Kernel
from superopt.ir.kernelize import Step
from superopt.ir.tensor import Tensor

_DTYPE_ALIASES = {"fp32": "float32", "f32": "float32", "float": "float32", "fp16": "float16", "f16": "float16",
                  "half": "float16", "bf16": "bfloat16", "i8": "int8", "u8": "uint8", "i32": "int32", "int": "int32"}


@dataclass(frozen=True)
class Param:
    """One builder parameter; its type is the default's type (int, str or DType)."""
    name: str
    default: Any
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: int = 1  # int params only
    maximum: int = 1 << 30  # int params only: an absurd size is refused, not built

    def parse(self, text: str) -> Any:
        """Parse a command-line value; raise ValueError with a one-line message."""
        if isinstance(self.default, dt.DType):
            name = _DTYPE_ALIASES.get(text.lower(), text.lower())
            if name not in ("float32", "float16", "bfloat16", "int8", "uint8", "int32"):
                raise ValueError(f"{self.name}={text}: not a dtype (float32, float16, bfloat16, int8, uint8, int32)")
            return dt.dtype_by_name(name)
        if isinstance(self.default, bool) or not isinstance(self.default, (int, float)):
            if self.choices and text not in self.choices:
                raise ValueError(f"{self.name}={text}: must be one of {', '.join(self.choices)}")
            return text
        try:
            v = type(self.default)(text)
        except ValueError:
            raise ValueError(f"{self.name}={text}: not a{'n integer' if isinstance(self.default, int) else ' number'}") from None
        if isinstance(v, int) and v < self.minimum:
            raise ValueError(f"{self.name}={text}: must be >= {self.minimum}")
        if isinstance(v, int) and v > self.maximum:
            raise ValueError(f"{self.name}={text[:30]}: must be <= {self.maximum}")
        return v

    def show(self) -> str:
        d = self.default.name if isinstance(self.default, dt.DType) else self.default
        return f"{self.name}={d}"


@dataclass(frozen=True)
class Kind:
    """A parameterised builder with its numpy reference.

    ``build(p)`` returns ``(output, inputs)``: the lazy output Tensor and the input
    Tensors (made with ``Tensor.empty(..., name=...)``) in reference order.
    ``reference(p, *values)`` takes the inputs as values (float64 for floats, int64 for
    integers) and returns the expected output: float64 (not rounded to the output dtype)
    or the exact integers. ``ranges(p)`` gives ``name -> (lo, hi)`` for random inputs
    where the defaults (floats in [-1, 1], ints over a small range) do not fit.
    """
    name: str
    help: str
    params: tuple[Param, ...]
    build: Callable[[dict], tuple[Tensor, list[Tensor]]]
    reference: Callable[..., np.ndarray]
    ranges: Callable[[dict], dict[str, tuple[float, float]]] | None = None
    int_atol: int = 0  # allowed error of integer outputs (a requantize may round either way)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name: return p
        raise ValueError(f"{self.name}: unknown parameter {name!r} (parameters: {', '.join(p.name for p in self.params)})")

    def usage(self) -> str:
        return f"{self.name} {' '.join(p.show() for p in self.params)}"


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    if kind.name in KINDS: raise ValueError(f"kind {kind.name!r} registered twice")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise ValueError(f"unknown kind {name!r} (kinds: {', '.join(sorted(KINDS))})")
    return KINDS[name]


@dataclass(frozen=True)
class Workload:
    """One suite entry: a kind, its parameters (defaults filled in) and a name."""
    name: str
    kind: str
    params: tuple[tuple[str, Any], ...] = field(default=())

    @staticmethod
    def make(kind: str, name: str | None = None, **params: Any) -> "Workload":
        k = get_kind(kind)
        # every value goes through the same parser as the command line (types, ranges, choices)
        given = {n: k.param(n).parse(v.name if isinstance(v, dt.DType) else str(v)) for n, v in params.items()}
        full = tuple((p.name, given.get(p.name, p.default)) for p in k.params)
        return Workload(name or _auto_name(k, dict(full)), kind, full)

    @staticmethod
    def from_args(kind: str, assignments: Sequence[str]) -> "Workload":
        """``kind`` plus ``key=value`` strings, as typed on the command line."""
        get_kind(kind)
        params: dict[str, Any] = {}
        for a in assignments:
            if "=" not in a: raise ValueError(f"expected key=value, got {a!r}")
            key, val = a.split("=", 1)
            params[key] = val
        return Workload.make(kind, **params)

    @property
    def spec(self) -> Kind: return get_kind(self.kind)
    @property
    def args(self) -> dict[str, Any]: return dict(self.params)

    # ---- the program ----------------------------------------------------------
    @cached_property
    def _graph(self) -> tuple[Tensor, list[Tensor]]: return self.spec.build(self.args)

    @cached_property
    def steps(self) -> list[Step]:
        """The kernels of the program, dependencies first; the last writes ``out``.
        Kernels are named after the workload (``NAME``, or ``NAME_r0``... for programs)."""
        steps = self._graph[0].schedule("out")
        name = (lambda k: self.name) if len(steps) == 1 else (lambda k: f"{self.name}_{k.name}")
        return [Step(replace(s.kernel, name=name(s.kernel)), s.inputs, s.output) for s in steps]

    @property
    def kernels(self) -> list[Kernel]: return [s.kernel for s in self.steps]

    @cached_property
    def main(self) -> int:
        """Index of the main kernel (most flops, then most bytes, then later)."""
        return main_step(self.steps)

    @property
    def kernel(self) -> Kernel: return self.steps[self.main].kernel

    @cached_property
    def inputs(self) -> list[Buffer]:
        return [Buffer(t.node.arg[0], t.dtype, t.shape) for t in self._graph[1]]

    @property
    def output(self) -> Buffer: return self.steps[-1].kernel.output

    # ---- sizes ----------------------------------------------------------------
    @property
    def flops(self) -> int:
        """ALU ops over all kernels (a multiply-add is 2), as ``Kernel.flops`` counts."""
        return sum(k.flops for k in self.kernels)

    @property
    def min_bytes(self) -> int:
        """Bytes the program must move at least: its inputs once and its output once."""
        return sum(b.nbytes for b in self.inputs) + self.output.nbytes

    @property
    def kernel_bytes(self) -> int:
        """Minimum bytes summed over kernels (intermediates written and read again)."""
        return sum(k.min_bytes for k in self.kernels)

    # ---- data and checking ------------------------------------------------------
    def random_inputs(self, seed: int = 0) -> list[np.ndarray]:
        """Random storage arrays for the inputs, in ``inputs`` order."""
        rng = np.random.default_rng(seed)
        ranges = self.spec.ranges(self.args) if self.spec.ranges else {}
        return [random_array(rng, b, ranges.get(b.name)) for b in self.inputs]

    def reference(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Expected output (float64, or exact integers) for storage arrays in ``inputs`` order."""
        vals = [values(a, b) for a, b in zip(arrays, self.inputs)]
        out = np.asarray(self.spec.reference(self.args, *vals))
        if out.shape != self.output.shape:
            raise AssertionError(f"{self.name}: reference shape {out.shape} != output {self.output.shape}")
        return out

    def interpret(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Run every step with the reference interpreter; returns output storage."""
        from superopt.ir.interpret import run_kernel
        bufs = {b.name: a for b, a in zip(self.inputs, arrays)}
        for st in self.steps:
            bufs[st.output] = run_kernel(st.kernel, [bufs[n] for n in st.inputs])
        return bufs[self.steps[-1].output]

    def tolerance(self) -> tuple[float, float]:
        """(rtol, atol) for comparing an output with ``reference``; atol is relative to
        the reference's largest magnitude for floats."""
        d = self.output.dtype
        if d.is_int: return 0.0, float(self.spec.int_atol)
        return {"float32": (1e-4, 1e-5), "float16": (1e-2, 2e-3), "bfloat16": (2e-2, 1e-2)}.get(d.name, (1e-4, 1e-5))

    def matches(self, got: np.ndarray, expected: np.ndarray) -> bool:
        """Whether output storage ``got`` equals ``expected`` within ``tolerance``; NaN never passes."""
        g = values(got, self.output)
        rtol, atol = self.tolerance()
        if self.output.dtype.is_float:
            atol *= max(1.0, float(np.max(np.abs(expected), initial=0.0)))
        return bool(g.shape == expected.shape and np.all(np.isfinite(g)) and np.allclose(g, expected, rtol=rtol, atol=atol))


def main_step(steps: Sequence[Step]) -> int:
    best = max(range(len(steps)), key=lambda i: (steps[i].kernel.flops, steps[i].kernel.min_bytes, i))
    return best


def values(a: np.ndarray, b: Buffer) -> np.ndarray:
    """Storage array -> float64 / int64 values of ``b``'s shape."""
    v = dt.to_values(np.asarray(a), b.dtype).reshape(b.shape)
    return v.astype(np.float64) if b.dtype.is_float else v.astype(np.int64)


def random_array(rng: np.random.Generator, b: Buffer, rng_range: tuple[float, float] | None) -> np.ndarray:
    if b.dtype.is_float:
        lo, hi = rng_range or (-1.0, 1.0)
        return dt.to_storage(rng.uniform(lo, hi, b.shape), b.dtype)
    if b.dtype.kind == "b":
        return rng.random(b.shape) < 0.5
    lo, hi = rng_range or {"int8": (-128, 127), "uint8": (0, 255)}.get(b.dtype.name, (-1000, 1000))
    return rng.integers(int(lo), int(hi), b.shape, endpoint=True).astype(b.dtype.np)


def _auto_name(k: Kind, p: dict[str, Any]) -> str:
    dims = [str(v) for n, v in p.items() if isinstance(v, int) and not isinstance(v, bool) and n[0].isupper()]
    dtn = [v.name for v in p.values() if isinstance(v, dt.DType)]
    return "_".join([k.name, "x".join(dims)] + dtn) if dims else "_".join([k.name] + dtn)


__all__ = ["Param", "Kind", "KINDS", "register", "get_kind", "Workload", "main_step", "values", "random_array"]
