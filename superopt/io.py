"""Safe kernel files: ``save_kernel`` / ``load_kernel`` for ``.pkl`` and ``.json``.

A file holds one kernel or a *program* (several kernels run in order, e.g. softmax's
max, sum-of-exp and normalize). Both encodings carry a format tag and a version:

- JSON, one kernel: ``Kernel.to_dict()`` (``{"format": "superopt.kernel", "version": 1, ...}``).
- JSON, program: ``{"format": "superopt.program", "version": 1, "main": i,
  "steps": [{"kernel": <kernel dict>, "inputs": [names], "output": name}, ...]}``.
- pickle (protocol 4): the same envelopes as dicts, with ``Kernel`` objects in place of
  kernel dicts: ``{"format": "superopt.kernel", "version": 1, "kernel": Kernel}`` or
  ``{"format": "superopt.program", "version": 1, "main": i, "steps": [{"kernel": Kernel, ...}]}``.

The encoding is recognised from the content, not the file name. Pickles are read with an
allow-list unpickler: the only globals a stream may name are the IR's ``Node``, ``Ops``,
``dtype_by_name``, ``Kernel``, ``Buffer`` and ``Axis``, and each resolves to a checking
factory or a private stand-in, never to the real class, enum or dtype singleton; BUILD
(``__setstate__``) is applied only to the stand-ins the stream itself created, so a file
cannot change any object that exists outside it. Everything else is plain data. Every
kernel, whatever its encoding (pickle, JSON, tinygrad import), then goes through the one
validator, ``superopt.validate.validate_kernel``: front-end ops only (no lowered-only
SPECIAL/REG/SHARED), arities, argument types, canonical dtypes, representable constants,
limits on elements, nodes and depth (``superopt.validate.LIMITS``) and every unmasked
index range inside its buffer. A tinygrad kernel-AST pickle is handed to
``superopt.tinygrad_import`` (its own allow-list). Any problem — missing, truncated or
foreign file, a disallowed global, a wrong type, an unknown version — raises
``KernelFileError`` with one line naming the file.

``load_kernel(path)`` returns a program's *main* kernel (the one ``superopt new``
recorded: most flops); ``load_kernel(path, index=i)`` picks step i, and
``load_steps(path)`` returns every step with the main index.
"""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any, Sequence

from superopt.ir import dtype as dt
from superopt.ir.kernel import KERNEL_FORMAT, KERNEL_VERSION, Axis, Buffer, Kernel
from superopt.ir.kernelize import Step
from superopt.ir.node import Node, Ops
from superopt.validate import FRONT_END_OPS, LIMITS, ValidationError, validate_kernel

PROGRAM_FORMAT = "superopt.program"
PROGRAM_VERSION = 1
PICKLE_PROTOCOL = 4


class KernelFileError(ValueError):
    """A kernel file that cannot be read safely; the message is one line."""


# ---- saving ---------------------------------------------------------------------------
def save_kernel(what: Kernel | Sequence[Step], path: str | Path, main: int | None = None) -> Path:
    """Write a kernel, or a program (a list of ``Step``s with its main index), to ``path``;
    ``.json`` writes JSON, ``.pkl``/``.pickle`` a pickle."""
    path = Path(path)
    fmt = _encoding_for(path)
    if isinstance(what, Kernel):
        obj = what.to_dict() if fmt == "json" else {"format": KERNEL_FORMAT, "version": KERNEL_VERSION, "kernel": what}
    else:
        steps = list(what)
        if not steps or not all(isinstance(s, Step) for s in steps): raise TypeError("save_kernel: expected a Kernel or a list of Steps")
        if main is None:
            from superopt.kernels.registry import main_step
            main = main_step(steps)
        if not 0 <= main < len(steps): raise ValueError(f"main={main} is not a step index (0..{len(steps) - 1})")
        obj = {"format": PROGRAM_FORMAT, "version": PROGRAM_VERSION, "main": main,
               "steps": [{"kernel": s.kernel.to_dict() if fmt == "json" else s.kernel, "inputs": list(s.inputs),
                          "output": s.output} for s in steps]}
    data = json.dumps(obj, indent=1).encode() if fmt == "json" else pickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _encoding_for(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json": return "json"
    if suffix in (".pkl", ".pickle"): return "pickle"
    raise ValueError(f"{path}: unknown kernel file extension {suffix!r} (use .pkl or .json)")


# ---- loading --------------------------------------------------------------------------
def load_kernel(path: str | Path, index: int | None = None) -> Kernel:
    """The kernel in ``path``; for a program, its main kernel or step ``index``."""
    steps, main = load_steps(path)
    i = main if index is None else index
    if not -len(steps) <= i < len(steps):
        raise KernelFileError(f"{path}: no step {index} (the file holds {len(steps)} kernel{'s' * (len(steps) != 1)})")
    return steps[i].kernel


def load_steps(path: str | Path) -> tuple[list[Step], int]:
    """Every step of the file (a single-kernel file gives one) and the main index."""
    data = _read(path)
    try:
        if data[:1] == b"\x80":
            if _is_tinygrad(data): return _tinygrad_steps(path, data)
            return _from_envelope(_SafeUnpickler(io.BytesIO(data)).load(), from_json=False)
        if data.lstrip()[:1] == b"{":
            return _from_envelope(json.loads(data.decode("utf-8")), from_json=True)
    except KernelFileError as e:
        raise KernelFileError(f"{path}: {e}") from None
    except pickle.UnpicklingError as e:
        raise KernelFileError(f"{path}: unsafe or corrupt pickle: {_one_line(e)}") from None
    except json.JSONDecodeError as e:
        raise KernelFileError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except (EOFError, UnicodeDecodeError):
        raise KernelFileError(f"{path}: file is truncated or corrupt") from None
    except Exception as e:  # a garbled stream can raise almost anything; never a traceback
        raise KernelFileError(f"{path}: not a valid superopt kernel file ({type(e).__name__}: {_one_line(e)})") from None
    raise KernelFileError(f"{path}: not a superopt kernel file (neither a pickle nor JSON)")


def _read(path: str | Path) -> bytes:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise KernelFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise KernelFileError(f"{path}: is a directory, not a kernel file") from None
    except OSError as e:
        raise KernelFileError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data: raise KernelFileError(f"{path}: file is empty")
    return data


def _one_line(e: BaseException) -> str: return " ".join(str(e).split())[:300]


def _from_envelope(obj: Any, from_json: bool) -> tuple[list[Step], int]:
    if not isinstance(obj, dict):
        raise KernelFileError(f"holds a {type(obj).__name__}, not a superopt kernel file")
    fmt, ver = obj.get("format"), obj.get("version")
    if fmt == KERNEL_FORMAT:
        _version(ver, KERNEL_VERSION, "kernel")
        k = _kernel_field(obj if from_json else obj.get("kernel"), from_json)
        return [Step(k, tuple(b.name for b in k.inputs), k.output.name)], 0
    if fmt == PROGRAM_FORMAT:
        _version(ver, PROGRAM_VERSION, "program")
        steps, main = obj.get("steps"), obj.get("main")
        if not isinstance(steps, list) or not steps: raise KernelFileError("program has no steps")
        out = []
        for s in steps:
            if not isinstance(s, dict): raise KernelFileError("malformed program step")
            k = _kernel_field(s.get("kernel"), from_json)
            ins, o = s.get("inputs"), s.get("output")
            if not isinstance(ins, list) or not all(isinstance(n, str) for n in ins) or not isinstance(o, str) \
                    or len(ins) != len(k.inputs):
                raise KernelFileError("malformed program step (inputs/output)")
            out.append(Step(k, tuple(ins), o))
        if type(main) is not int or not 0 <= main < len(out): raise KernelFileError(f"bad main step {main!r}")
        return out, main
    if fmt is None: raise KernelFileError("not a superopt kernel file (no format tag)")
    raise KernelFileError(f"unknown file format {str(fmt)[:60]!r} (expected {KERNEL_FORMAT!r} or {PROGRAM_FORMAT!r})")


def _version(got: Any, want: int, what: str) -> None:
    if got != want or type(got) is not int:
        raise KernelFileError(f"unsupported {what} file version {repr(got)[:20]} (this superopt reads version {want})")


def _kernel_field(x: Any, from_json: bool) -> Kernel:
    if from_json:
        if not isinstance(x, dict): raise KernelFileError("malformed kernel entry")
        nodes = x.get("nodes")
        if not isinstance(nodes, list) or not all(isinstance(n, list) and len(n) == 4 and isinstance(n[2], list)
                                                  and all(type(i) is int and 0 <= i < j for i in n[2])
                                                  for j, n in enumerate(nodes)):
            raise KernelFileError("malformed kernel node list")
        if len(nodes) > LIMITS["max_nodes"]: raise KernelFileError(f"more than {LIMITS['max_nodes']} nodes")
        k = _kernel_from_json(x, nodes)
    else:
        k = x
    if type(k) is not Kernel: raise KernelFileError(f"expected a Kernel, found {type(k).__name__}")
    _check_kernel(k)
    # rebuild from the checked parts: a pickle may have planted attributes (e.g. a cached key)
    return Kernel(k.name, tuple(Axis(a.size, a.reduce) for a in k.axes),
                  tuple(Buffer(b.name, b.dtype, b.shape) for b in k.inputs),
                  Buffer(k.output.name, k.output.dtype, k.output.shape), k.body, k.store)


def _json_arg(a: Any, depth: int = 0) -> Any:
    if isinstance(a, list) and depth < 2 and len(a) <= 64: return tuple(_json_arg(v, depth + 1) for v in a)
    if isinstance(a, dict) and set(a) == {"float"} and a["float"] in ("inf", "-inf", "nan"): return float(a["float"])
    if a is None or type(a) in (bool, int, float, str): return a
    raise KernelFileError("malformed node argument")


def _json_buffer(b: Any) -> Buffer:
    if not isinstance(b, dict) or set(b) != {"name", "dtype", "shape"} or not isinstance(b["shape"], list):
        raise KernelFileError("malformed buffer")
    return Buffer(b["name"], _dtype(b["dtype"]), tuple(b["shape"]))


def _kernel_from_json(x: dict, nodes: list) -> Kernel:
    """Nodes, axes and buffers built from checked parts and validated before ``Kernel`` sees them."""
    built: list[Node] = []
    for op, dtn, src, arg in nodes:
        built.append(_node(_ops(op), _dtype(dtn), tuple(built[i] for i in src), _json_arg(arg)))
    axes = x.get("axes")
    if not isinstance(axes, list) or not all(isinstance(a, list) and len(a) == 2 for a in axes):
        raise KernelFileError("malformed axes")
    ins = x.get("inputs")
    if not isinstance(ins, list): raise KernelFileError("malformed inputs")
    body, store = x.get("body"), x.get("store")
    if type(body) is not int or type(store) is not int or not 0 <= body < len(built) or not 0 <= store < len(built):
        raise KernelFileError("body/store is not a node index")
    parts = (x.get("name"), tuple(Axis(s, r) for s, r in axes), tuple(_json_buffer(b) for b in ins),
             _json_buffer(x.get("output")), built[body], built[store])
    _validate(_Unchecked(*parts))
    try:
        return Kernel(*parts)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise KernelFileError(f"invalid kernel: {_one_line(e)}") from None


# ---- the allow-list unpickler ----------------------------------------------------------------
# ``find_class`` hands out factory functions and private stand-in classes only, never the
# real classes, enums or dtype singletons; BUILD (``__setstate__``) is applied only to
# stand-ins this stream created itself (dataclasses pickle as NEWOBJ + BUILD), so a file
# can never set state on an object that exists outside it.
_PLAIN = (type(None), bool, int, float, str)


def _plain(x: Any) -> bool:
    return isinstance(x, _PLAIN) or (type(x) is tuple and all(_plain(v) for v in x))


class _Stub:
    """A Buffer/Axis as the stream describes it: constructor args and BUILD state, checked later."""
    fields: tuple[str, ...] = ()

    def __new__(cls, *args: Any) -> "_Stub":
        self = object.__new__(cls)
        self.args, self.state = args, None
        return self

    def build(self) -> Any:
        st = self.state
        if isinstance(st, tuple) and len(st) == 2 and st[0] is None: st = st[1]  # (dict, slots) form
        if st is None:
            vals = dict(zip(self.fields, self.args))
            if len(self.args) > len(self.fields): raise KernelFileError(f"malformed {self.kind} in pickle")
        elif isinstance(st, dict) and not self.args and all(type(x) is str for x in st):
            vals = st
        else:
            raise KernelFileError(f"malformed {self.kind} in pickle")
        if set(vals) - set(self.fields): raise KernelFileError(f"malformed {self.kind} in pickle")
        try:
            return self.make(**vals)
        except TypeError:
            raise KernelFileError(f"malformed {self.kind} in pickle") from None


class _AxisStub(_Stub):
    fields, kind = ("size", "reduce"), "axis"
    make = staticmethod(lambda **kw: Axis(**kw))


class _BufferStub(_Stub):
    fields, kind = ("name", "dtype", "shape"), "buffer"
    make = staticmethod(lambda **kw: Buffer(**kw))


def _real(x: Any) -> Any: return x.build() if isinstance(x, _Stub) else x


def _node(op: Any, dtype: Any, src: Any = (), arg: Any = None) -> Node:
    if type(op) is not Ops or type(dtype) is not dt.DType or type(src) is not tuple \
            or not all(type(s) is Node for s in src) or not _plain(arg) or (type(arg) is tuple and len(arg) > 64):
        raise KernelFileError("malformed IR node in pickle")
    if op not in FRONT_END_OPS: raise KernelFileError(f"op {op.name} is not allowed in a kernel file")
    return Node(op, dtype, src, arg)


def _kernel(name: Any, axes: Any, inputs: Any, output: Any, body: Any, store: Any) -> Kernel:
    if type(axes) is not tuple or type(inputs) is not tuple: raise KernelFileError("malformed Kernel in pickle")
    axes, inputs, output = tuple(_real(a) for a in axes), tuple(_real(b) for b in inputs), _real(output)
    if not isinstance(name, str) or not all(type(a) is Axis for a in axes) \
            or not all(type(b) is Buffer for b in inputs) or type(output) is not Buffer \
            or type(body) is not Node or type(store) is not Node:
        raise KernelFileError("malformed Kernel in pickle")
    _validate(_Unchecked(name, axes, inputs, output, body, store))
    return Kernel(name, axes, inputs, output, body, store)


class _Unchecked:
    """Kernel-shaped fields, validated before ``Kernel.__post_init__`` walks them."""
    def __init__(self, name, axes, inputs, output, body, store):
        self.name, self.axes, self.inputs, self.output, self.body, self.store = name, axes, inputs, output, body, store


def _dtype(name: Any) -> dt.DType:
    if not isinstance(name, str): raise KernelFileError("malformed dtype in pickle")
    try:
        return dt.dtype_by_name(name)
    except ValueError as e:
        raise KernelFileError(_one_line(e)) from None


def _ops(value: Any) -> Ops:
    if not isinstance(value, str): raise KernelFileError("malformed op in pickle")
    try:
        return Ops(value)
    except ValueError:
        raise KernelFileError(f"unknown op {value[:20]!r}") from None


_ALLOWED = {("superopt.ir.node", "Node"): _node, ("superopt.ir.node", "Ops"): _ops,
            ("superopt.ir.dtype", "dtype_by_name"): _dtype, ("superopt.ir.kernel", "Kernel"): _kernel,
            ("superopt.ir.kernel", "Buffer"): _BufferStub, ("superopt.ir.kernel", "Axis"): _AxisStub}


class _SafeUnpickler(pickle._Unpickler):  # the Python unpickler: its BUILD can be replaced
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        f = _ALLOWED.get((module, name))
        if f is None:
            raise pickle.UnpicklingError(f"refusing to load {module[:60]}.{name[:60]}: not a superopt IR class")
        return f

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent references are not allowed")

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) not in (_AxisStub, _BufferStub) or inst.state is not None:
            raise pickle.UnpicklingError(f"refusing BUILD on a {type(inst).__name__[:40]}")
        inst.state = state
    dispatch[pickle.BUILD[0]] = load_build

    def _refuse(self) -> None: raise pickle.UnpicklingError("opcode not allowed in a kernel file")
    for _op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.NEWOBJ_EX):
        dispatch[_op[0]] = _refuse


def _validate(k: Any) -> None:
    try:
        validate_kernel(k)
    except ValidationError as e:
        raise KernelFileError(f"invalid kernel: {e}") from None


def _check_kernel(k: Kernel) -> None:
    """The one validator (``superopt.validate``): ops, arity, types, limits, index ranges."""
    _validate(k)


# ---- tinygrad ASTs ---------------------------------------------------------------------------------
def _is_tinygrad(data: bytes) -> bool:
    try:
        from superopt.tinygrad_import import is_tinygrad_pickle
    except ImportError:
        return False
    return is_tinygrad_pickle(data)


def _tinygrad_steps(path: str | Path, data: bytes) -> tuple[list[Step], int]:
    from superopt.tinygrad_import import from_ast, loads_asts
    from superopt.validate import NAME_CHARS
    stem = "".join(c if c in NAME_CHARS else "_" for c in Path(path).stem)[:LIMITS["max_name"] - 8] or "tinygrad"
    try:
        ks = [from_ast(a, name=f"{stem}_{i}" if i else stem) for i, a in enumerate(loads_asts(data))]
    except ValueError as e:
        raise KernelFileError(_one_line(e)) from None
    if not ks: raise KernelFileError("tinygrad pickle holds no kernels")
    steps = [Step(k, tuple(b.name for b in k.inputs), k.output.name) for k in ks]
    from superopt.kernels.registry import main_step
    return steps, main_step(steps)
