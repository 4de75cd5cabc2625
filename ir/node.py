"""The one graph node type: immutable, hash-consed ``Node(op, dtype, src, arg)``.

Lazy tensor graphs, kernel bodies and index expressions are all Nodes. Integer index
arithmetic is simplified as it is built (linear forms, range analysis for div/mod), so
movement ops folded into indexing stay readable and cheap.
"""
from __future__ import annotations

import functools
import hashlib
import math
import weakref
from enum import Enum
from typing import Any, Iterable

from . import dtype as dt
from .dtype import DType


class Ops(Enum):
    # leaves
    BUFFER = "buffer"  # graph input: arg=(name, shape)
    CONST = "const"    # arg=python scalar
    VAR = "var"        # kernel axis index: arg=(axis, size)
    LOAD = "load"      # src=(index, valid): arg=input slot
    # lowered programs only (ir/program.py)
    SPECIAL = "special"  # block/thread/lane/loop index: arg=(name, size), value in [0, size)
    REG = "reg"          # read a per-thread register array: src=(index,), arg=name
    SHARED = "shared"    # read a block-shared buffer: src=(index,), arg=name
    # unary
    NEG = "neg"; EXP2 = "exp2"; LOG2 = "log2"; RECIP = "recip"; SQRT = "sqrt"; SIN = "sin"  # noqa: E702
    CAST = "cast"
    # binary
    ADD = "add"; MUL = "mul"; MAX = "max"; CMPLT = "cmplt"; CMPEQ = "cmpeq"; CMPNE = "cmpne"  # noqa: E702
    IDIV = "idiv"; MOD = "mod"; AND = "and"; OR = "or"; XOR = "xor"; SHL = "shl"; SHR = "shr"  # noqa: E702
    # ternary
    WHERE = "where"
    # reduction: src=(value,), arg=(reduce_op, axes)
    REDUCE = "reduce"
    # movement (lazy graph only)
    RESHAPE = "reshape"; PERMUTE = "permute"; EXPAND = "expand"; PAD = "pad"; SHRINK = "shrink"  # noqa: E702
    # index-generating (lazy graph only; a kernel computes them from its indices, never reads them)
    ARANGE = "arange"  # 0..n-1 (int32): arg=n
    GATHER = "gather"  # src=(table, ids): table rows at ids; shape ids.shape + table.shape[1:]

    def __repr__(self) -> str: return f"Ops.{self.name}"


UNARY = {Ops.NEG, Ops.EXP2, Ops.LOG2, Ops.RECIP, Ops.SQRT, Ops.SIN, Ops.CAST}
BINARY = {Ops.ADD, Ops.MUL, Ops.MAX, Ops.CMPLT, Ops.CMPEQ, Ops.CMPNE, Ops.IDIV, Ops.MOD,
          Ops.AND, Ops.OR, Ops.XOR, Ops.SHL, Ops.SHR}
ALU = UNARY | BINARY | {Ops.WHERE}
COMPARE = {Ops.CMPLT, Ops.CMPEQ, Ops.CMPNE}
MOVEMENT = {Ops.RESHAPE, Ops.PERMUTE, Ops.EXPAND, Ops.PAD, Ops.SHRINK}
REDUCE_OPS = ("sum", "max")


class Node:
    """Immutable and hash-consed: equal structure means the same object."""
    __slots__ = ("op", "dtype", "src", "arg", "_cache", "__weakref__")
    _interned: "weakref.WeakValueDictionary[tuple, Node]" = weakref.WeakValueDictionary()

    def __new__(cls, op: Ops, dtype: DType, src: tuple["Node", ...] = (), arg: Any = None):
        key = (op, dtype, src, arg)
        if (n := Node._interned.get(key)) is not None:
            return n
        n = super().__new__(cls)
        object.__setattr__(n, "op", op); object.__setattr__(n, "dtype", dtype)  # noqa: E702
        object.__setattr__(n, "src", src); object.__setattr__(n, "arg", arg)  # noqa: E702
        object.__setattr__(n, "_cache", {})
        Node._interned[key] = n
        return n

    def __setattr__(self, *a): raise AttributeError("Node is immutable")
    def __reduce__(self): return (Node, (self.op, self.dtype, self.src, self.arg))
    def __hash__(self) -> int: return id(self)
    def __eq__(self, other) -> bool: return self is other

    def __repr__(self) -> str:
        return render(self) if self.op not in MOVEMENT | {Ops.BUFFER, Ops.REDUCE} else \
            f"Node({self.op.name}, {self.dtype.name}, arg={self.arg!r}, nsrc={len(self.src)})"

    # ---- structural helpers -------------------------------------------------
    @property
    def key(self) -> str:
        """Stable content hash (independent of process and object ids)."""
        if "key" not in self._cache:
            h = hashlib.sha256(repr((self.op.value, self.dtype.name, _stable_arg(self.arg),
                                     tuple(s.key for s in self.src))).encode()).hexdigest()[:24]
            self._cache["key"] = h
        return self._cache["key"]

    def toposort(self) -> list["Node"]: return toposort(self)

    # ---- integer range analysis --------------------------------------------
    @property
    def vmin(self) -> float: return self._range()[0]
    @property
    def vmax(self) -> float: return self._range()[1]

    def _range(self) -> tuple[float, float]:
        if "range" not in self._cache:
            self._cache["range"] = _range(self)
        return self._cache["range"]

    # ---- operator sugar for index math --------------------------------------
    def __add__(self, o): return add(self, o)
    def __radd__(self, o): return add(const_like(self, o), self)
    def __sub__(self, o): return add(self, mul(as_node(o, self.dtype), -1))
    def __mul__(self, o): return mul(self, o)
    def __rmul__(self, o): return mul(self, o)
    def __floordiv__(self, o): return idiv(self, o)
    def __mod__(self, o): return mod(self, o)
    def __lt__(self, o): return lt(self, o)
    def __ge__(self, o): return not_(lt(self, o))
    def __and__(self, o): return and_(self, o)


def toposort(*roots: Node) -> list[Node]:
    """Every node reachable from roots, sources before users."""
    out: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        n, done = stack.pop()
        if done:
            out.append(n); continue  # noqa: E702
        if id(n) in seen: continue
        seen.add(id(n))
        stack.append((n, True))
        stack.extend((s, False) for s in reversed(n.src) if id(s) not in seen)
    return out


def _stable_arg(arg: Any) -> Any:
    if isinstance(arg, float):
        return ("f", repr(arg))
    if isinstance(arg, tuple):
        return tuple(_stable_arg(a) for a in arg)
    if isinstance(arg, DType):
        return arg.name
    return arg


# ---- constructors -------------------------------------------------------------
def const(value: Any, dtype: DType) -> Node:
    if dtype.kind == "b":
        value = bool(value)
    elif dtype.is_int:
        value = int(value)
    else:
        value = float(value)
    return Node(Ops.CONST, dtype, (), value)


def as_node(x: Any, dtype: DType = dt.int32) -> Node:
    return x if isinstance(x, Node) else const(x, dtype)


def const_like(n: Node, x: Any) -> Node: return as_node(x, n.dtype)


def var(axis: int, size: int) -> Node: return Node(Ops.VAR, dt.int32, (), (axis, size))


def special(name: str, size: int) -> Node:
    """A named index of a lowered program (block, thread, lane or loop variable)."""
    return Node(Ops.SPECIAL, dt.int32, (), (name, size))


TRUE = const(True, dt.bool_)
FALSE = const(False, dt.bool_)


def alu(op: Ops, *src: Node, dtype: DType | None = None) -> Node:
    """Generic ALU node with constant folding; integer index ops go through the
    simplifying constructors below."""
    if op in (Ops.ADD, Ops.MUL, Ops.IDIV, Ops.MOD, Ops.CMPLT, Ops.AND) and src[0].dtype.kind in "iub" \
            and all(s.dtype is src[0].dtype for s in src):
        return {Ops.ADD: add, Ops.MUL: mul, Ops.IDIV: idiv, Ops.MOD: mod, Ops.CMPLT: lt, Ops.AND: and_}[op](*src)
    out_dt = dtype or (dt.bool_ if op in COMPARE else src[-1].dtype if op is Ops.WHERE else src[0].dtype)
    if op is Ops.WHERE and src[0].op is Ops.CONST:
        return src[1] if src[0].arg else src[2]
    if all(s.op is Ops.CONST for s in src):
        from .interpret import eval_scalar  # late import: interpret depends on node
        return const(eval_scalar(op, out_dt, [s.arg for s in src], [s.dtype for s in src]), out_dt)
    return Node(op, out_dt, tuple(src))


def _linear(x: Node) -> tuple[dict[Node, int], int]:
    """x as sum(coeff*term) + const."""
    if x.op is Ops.CONST:
        return {}, int(x.arg)
    if x.op is Ops.ADD:
        t0, c0 = _linear(x.src[0]); t1, c1 = _linear(x.src[1])  # noqa: E702
        for k, v in t1.items():
            t0[k] = t0.get(k, 0) + v
        return {k: v for k, v in t0.items() if v}, c0 + c1
    if x.op is Ops.MUL and x.src[1].op is Ops.CONST:
        t, c = _linear(x.src[0])
        m = int(x.src[1].arg)
        return {k: v * m for k, v in t.items() if v * m}, c * m
    return {x: 1}, 0


def _build(terms: dict[Node, int], c: int, dtype: DType = dt.int32) -> Node:
    out: Node | None = None
    for t in sorted(terms, key=lambda n: (n.op is not Ops.VAR, n.arg if n.op is Ops.VAR else (), n.key)):
        k = terms[t]
        term = t if k == 1 else Node(Ops.MUL, dtype, (t, const(k, dtype)))
        out = term if out is None else Node(Ops.ADD, dtype, (out, term))
    if out is None:
        return const(c, dtype)
    return out if c == 0 else Node(Ops.ADD, dtype, (out, const(c, dtype)))


def add(a: Node, b: Any) -> Node:
    b = as_node(b, a.dtype)
    if a.dtype.is_float:
        return alu(Ops.ADD, a, b) if not (b.op is Ops.CONST and b.arg == 0) else a
    ta, ca = _linear(a); tb, cb = _linear(b)  # noqa: E702
    for k, v in tb.items():
        ta[k] = ta.get(k, 0) + v
    return _build({k: v for k, v in ta.items() if v}, ca + cb, a.dtype)


def mul(a: Node, b: Any) -> Node:
    b = as_node(b, a.dtype)
    if a.op is Ops.CONST and b.op is not Ops.CONST:
        a, b = b, a
    if a.dtype.is_float:
        if b.op is Ops.CONST and b.arg == 1: return a
        return alu(Ops.MUL, a, b) if not (a.op is Ops.CONST and b.op is Ops.CONST) else \
            const(a.arg * b.arg, a.dtype)
    if b.op is Ops.CONST:
        t, c = _linear(a)
        m = int(b.arg)
        return _build({k: v * m for k, v in t.items() if v * m}, c * m, a.dtype)
    return Node(Ops.MUL, a.dtype, (a, b))


def _split(a: Node, c: int) -> tuple[dict[Node, int], dict[Node, int], int, int]:
    """a == c*(Q + kq) + (R + kr) with every R coefficient and kr in [0, c)."""
    terms, k = _linear(a)
    q, r = {}, {}
    for t, v in terms.items():
        qv, rv = divmod(v, c)
        if qv: q[t] = qv
        if rv: r[t] = rv
    kq, kr = divmod(k, c)
    return q, r, kq, kr


def idiv(a: Node, c: Any) -> Node:
    """Floor division by a positive constant (index math: operands are non-negative
    wherever the result is used unmasked)."""
    if isinstance(c, Node):
        if c.op is not Ops.CONST:
            return Node(Ops.IDIV, a.dtype, (a, c))
        c = c.arg
    c = int(c)
    if c <= 0:
        raise ValueError("index division needs a positive constant divisor")
    if c == 1: return a
    if a.op is Ops.IDIV and a.src[1].op is Ops.CONST:  # (x//p)//c == x//(p*c)
        return idiv(a.src[0], int(a.src[1].arg) * c)
    if a.op is Ops.MOD and a.src[1].op is Ops.CONST and int(a.src[1].arg) % c == 0:  # (x%(mc))//c
        return mod(idiv(a.src[0], c), int(a.src[1].arg) // c)
    q, r, kq, kr = _split(a, c)
    rest = _build(r, kr, a.dtype)
    lo, hi = rest.vmin, rest.vmax
    if math.isfinite(lo) and math.isfinite(hi) and lo // c == hi // c:
        return _build(q, kq + int(lo // c), a.dtype)
    g = math.gcd(c, kr, *r.values())
    inner = Node(Ops.IDIV, a.dtype, (_build({t: v // g for t, v in r.items()}, kr // g, a.dtype), const(c // g, a.dtype))) \
        if g > 1 else Node(Ops.IDIV, a.dtype, (rest, const(c, a.dtype)))
    return add(_build(q, kq, a.dtype), inner) if (q or kq) else inner


def mod(a: Node, c: Any) -> Node:
    """Floor modulo by a positive constant."""
    if isinstance(c, Node):
        if c.op is not Ops.CONST:
            return Node(Ops.MOD, a.dtype, (a, c))
        c = c.arg
    c = int(c)
    if c <= 0:
        raise ValueError("index modulo needs a positive constant divisor")
    if c == 1: return const(0, a.dtype)
    if a.op is Ops.MOD and a.src[1].op is Ops.CONST and int(a.src[1].arg) % c == 0:
        return mod(a.src[0], c)
    _, r, _, kr = _split(a, c)
    rest = _build(r, kr, a.dtype)
    if rest.vmin >= 0 and rest.vmax < c:
        return rest
    g = math.gcd(c, kr, *r.values())
    if g > 1:
        return mul(mod(_build({t: v // g for t, v in r.items()}, kr // g, a.dtype), c // g), g)
    return Node(Ops.MOD, a.dtype, (rest, const(c, a.dtype)))


def lt(a: Node, b: Any) -> Node:
    b = as_node(b, a.dtype)
    if a.dtype.is_float:
        return alu(Ops.CMPLT, a, b)
    if a.vmax < b.vmin: return TRUE
    if a.vmin >= b.vmax: return FALSE
    return Node(Ops.CMPLT, dt.bool_, (a, b))


def not_(x: Node) -> Node:
    if x.op is Ops.CONST: return const(not x.arg, dt.bool_)
    return Node(Ops.CMPNE, dt.bool_, (x, TRUE)) if x.dtype is dt.bool_ else alu(Ops.CMPEQ, x, const(0, x.dtype))


def and_(a: Node, b: Any) -> Node:
    b = as_node(b, a.dtype)
    if a.dtype is not dt.bool_:  # bitwise and of integers (alu() routes here: build the node directly)
        return Node(Ops.AND, a.dtype, (a, b)) if not (a.op is Ops.CONST and b.op is Ops.CONST) else \
            const(a.arg & b.arg, a.dtype)
    for x, y in ((a, b), (b, a)):
        if x.op is Ops.CONST:
            return y if x.arg else FALSE
    if a is b: return a
    return Node(Ops.AND, dt.bool_, (a, b))


def all_of(conds: Iterable[Node]) -> Node:
    out = TRUE
    for c in conds:
        out = and_(out, c)
    return out


# ---- range analysis -------------------------------------------------------------
def _range(n: Node) -> tuple[float, float]:
    inf = math.inf
    if n.dtype.kind == "b":
        return (float(n.arg), float(n.arg)) if n.op is Ops.CONST else (0, 1)
    if not n.dtype.is_int:
        return (n.arg, n.arg) if n.op is Ops.CONST else (-inf, inf)
    if n.op is Ops.CONST: return (n.arg, n.arg)
    if n.op in (Ops.VAR, Ops.SPECIAL): return (0, n.arg[1] - 1)
    if n.op in (Ops.ADD, Ops.MUL, Ops.MAX):
        (a0, a1), (b0, b1) = n.src[0]._range(), n.src[1]._range()
        if n.op is Ops.ADD: return (a0 + b0, a1 + b1)
        if n.op is Ops.MAX: return (max(a0, b0), max(a1, b1))
        prods = [x * y for x in (a0, a1) for y in (b0, b1) if not (x == 0 and math.isinf(y)) and not (y == 0 and math.isinf(x))]
        return (min(prods, default=-inf), max(prods, default=inf))
    if n.op is Ops.IDIV and n.src[1].op is Ops.CONST:
        c = n.src[1].arg
        a0, a1 = n.src[0]._range()
        return (a0 // c if math.isfinite(a0) else a0, a1 // c if math.isfinite(a1) else a1)
    if n.op is Ops.MOD and n.src[1].op is Ops.CONST:
        c = n.src[1].arg
        a0, a1 = n.src[0]._range()
        return (0, min(a1, c - 1)) if a0 >= 0 else (0, c - 1)
    if n.op is Ops.WHERE:
        (b0, b1), (c0, c1) = n.src[1]._range(), n.src[2]._range()
        return (min(b0, c0), max(b1, c1))
    if n.op is Ops.NEG:
        a0, a1 = n.src[0]._range()
        return (-a1, -a0)
    if n.op in (Ops.XOR, Ops.OR):  # non-negative operands stay under the next power of two
        (a0, a1), (b0, b1) = n.src[0]._range(), n.src[1]._range()
        if min(a0, b0) >= 0 and math.isfinite(max(a1, b1)): return (0, (1 << int(max(a1, b1)).bit_length()) - 1)
    return (-inf, inf)


# ---- rewriting and printing -------------------------------------------------------
def substitute(root: Node, mapping: dict[Node, Node]) -> Node:
    """Rebuild root with nodes replaced, re-simplifying index arithmetic on the way."""
    done: dict[Node, Node] = dict(mapping)
    for n in root.toposort():
        if n in done: continue
        src = tuple(done.get(s, s) for s in n.src)
        if src == n.src:
            done[n] = n
        elif n.op in ALU and n.op is not Ops.CAST:
            done[n] = alu(n.op, *src, dtype=n.dtype)
        else:
            done[n] = Node(n.op, n.dtype, src, n.arg)
    return done[root]


@functools.lru_cache(maxsize=1 << 16)   # the schedule spaces and models ask for the same strides again and again
def axis_stride(expr: Node, axis: int, size: int) -> int | None:
    """How far ``expr`` moves when axis variable ``axis`` steps by one (0 if it does not
    use it); None when the step is not a constant."""
    v = var(axis, size)
    if v not in expr.toposort(): return 0
    if size < 2: return None
    d = substitute(expr, {v: const(1, dt.int32)}) - substitute(expr, {v: const(0, dt.int32)})
    return int(d.arg) if d.op is Ops.CONST else None


_INFIX = {Ops.ADD: "+", Ops.MUL: "*", Ops.IDIV: "//", Ops.MOD: "%", Ops.CMPLT: "<", Ops.CMPEQ: "==",
          Ops.CMPNE: "!=", Ops.AND: "&", Ops.OR: "|", Ops.XOR: "^", Ops.SHL: "<<", Ops.SHR: ">>"}


RENDER_LIMIT = 2000  # characters of one rendered subexpression; longer ones are cut with "..."


def render(n: Node, names: dict[Any, str] | None = None) -> str:
    """Readable infix form of an expression (used by `superopt show` and errors).
    ``names`` maps axis numbers to variable names and, optionally, Nodes to names
    (shared subexpressions printed once). Works on the DAG: each node is rendered once
    (iteratively, memoized) and cut at ``RENDER_LIMIT`` characters, so a deep or
    exponentially shared expression never blows up."""
    memo: dict[int, str] = {}
    nm = names or {}
    for x in toposort(n):
        s = _render1(x, nm, lambda c: memo[id(c)])
        memo[id(x)] = s if len(s) <= RENDER_LIMIT else s[:RENDER_LIMIT - 3] + "..."
    return memo[id(n)]


def _render1(n: Node, names: dict[Any, str], r) -> str:
    if n in names: return names[n]
    if n.op is Ops.CONST: return repr(n.arg)
    if n.op is Ops.VAR: return names.get(n.arg[0], f"i{n.arg[0]}")
    if n.op is Ops.SPECIAL: return str(n.arg[0])
    if n.op in (Ops.REG, Ops.SHARED): return f"{n.arg}[{r(n.src[0])}]"
    if n.op is Ops.LOAD:
        idx = r(n.src[0])
        valid = "" if n.src[1] is TRUE else f" if {r(n.src[1])}"
        return f"in{n.arg}[{idx}{valid}]"
    if n.op in _INFIX:
        return f"({r(n.src[0])}{_INFIX[n.op]}{r(n.src[1])})"
    if n.op is Ops.WHERE:
        return f"where({', '.join(r(s) for s in n.src)})"
    if n.op is Ops.CAST: return f"{n.dtype.name}({r(n.src[0])})"
    if n.op is Ops.REDUCE:
        return f"{n.arg[0]}[{','.join(names.get(a, f'i{a}') for a in n.arg[1])}]({r(n.src[0])})"
    return f"{n.op.value}({', '.join(r(s) for s in n.src)})"
