"""Fused attention found in the graph: ``softmax(q @ k.T * scale + mask) @ v`` as one kernel.

Plan (how an attention kernel is represented). The lazy graph is never pattern-matched by
its movement ops: the kernelizer already folds those into index expressions, so the
matcher works on the three kernels the unfused plan gives (a score GEMM S = Q K^T, the
softmax row kernel P = softmax(f(S)), the output GEMM O = P V) and accepts them when the
row kernel is exactly softmax of an elementwise "logit" expression f of the score (any
scale, additive mask buffer, index-generated causal mask: whatever elementwise the user
wrote, loads of other buffers included) and the buffers chain S -> P -> O element for
element. A plan asks for the fusion by leaving S and P unmaterialized (``kernelize``
then calls ``fused_step`` for the kernel that would have to compute them; search/fusion
adds that plan as a candidate and keeps it where its model says it is faster). The
result is an ``AttentionKernel``: the three kernels it replaces (the reference
interpreter runs them in order, so the graph's own semantics is the reference), its
fused inputs and output, flops and compulsory bytes for the planner, and a geometry
(batch dimensions, query/key lengths, head dims, the index expressions of Q, K, V and the
output, the logit expression) that the lowering reads. The schedule family
``attention`` (search/families/attention.py: BLOCK_M, BLOCK_N, warps, stages; legality
from shared-memory and register counts; cost in search/cost.py's generic arithmetic)
picks a ``Schedule(family="attention", params=...)``, which ir/attention_lower.py lowers
to an ordinary ``Program`` of mma.sync statements (cp.async K/V tiles, ldmatrix, online
softmax in registers, row statistics exchanged through a small shared buffer): the
emulator executes it and the CUDA renderer renders it with no attention-specific code.
wgmma with a TMA producer warp is a later variant of the same family.

Numerics: fp32 scores, logits, statistics and accumulator, P rounded to the input's 16 bits
for the second product (as FlashAttention); the graph's own kernels round the scores and the
softmax to 16 bits, so the fused kernel is closer to a float64 reference than they are (the
tests compare with float64 numpy). A fully masked row gives 0/0 = NaN, as numpy's softmax.
Elsewhere: the runtime and engine run a fused step like any kernel (search/hand.py's GPU rule
defers to the family; superopt/verify.py's reference runs the three kernels it replaces).
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import dtype as dt
from .graph import shape
from .kernel import Buffer, Kernel
from .kernelize import Step, _build, _build_epilogue, _narrowed, _NoFuse, _through, inner_reductions
from .node import TRUE, Node, Ops, _linear, all_of, alu, axis_stride, const, lt, substitute, toposort, var

LOG2E = 1 / math.log(2)


@dataclass(frozen=True)
class Geometry:
    """What the lowering needs. Index expressions are over ``VAR`` nodes: batch axes
    0..nb-1, then the query row ``nb`` and the key/column ``nb+1`` (Q, K, V: their last
    variable ``nb+1`` is the head dimension; for K and V ``nb`` is the key)."""
    batch: tuple[int, ...]
    sq: int
    sk: int
    d: int
    dv: int
    q: Node          # Q element index over (batch, i, e)
    k: Node          # K element index over (batch, j, e)
    v: Node          # V element index over (batch, j, e)
    out: Node        # output element index over (batch, i, e)
    logit: Node      # float32 f(S) over (batch, i, j); the score is ``SCORE``; loads use fused slots
    slots: tuple[int, int, int]   # the fused input slots of Q, K, V

    @property
    def heads(self) -> int: return math.prod(self.batch)

    def rows_ok(self, which: str) -> str | None:
        """Why tensor ``which`` ("q", "k", "v") cannot be copied as 16-byte row pieces (its
        head dimension contiguous, every row start 16-byte aligned), or None."""
        idx, rows, width = {"q": (self.q, self.sq, self.d), "k": (self.k, self.sk, self.d), "v": (self.v, self.sk, self.dv)}[which]
        return _rows_ok(idx, self.batch + (rows,), width)

    @property
    def band(self) -> "KeyBand": return key_band(self.logit, len(self.batch))


SCORE = Node(Ops.REG, dt.float32, (const(0, dt.int32),), "attention_score")   # stands for S[i, j] in ``logit``


# ---- the keys a query row can see: the logit's affine -inf mask ------------------------------
Bound = tuple[int, int]   # (u, h): the line u*i + h over query rows i


@dataclass(frozen=True)
class KeyBand:
    """The part of the logit's ``-inf`` mask that is affine in the query row i and key j (a
    causal ``j <= i``, a sliding window ``j > i - w``, a fixed length ``j < n``): a key is
    visible only where ``j >= u*i + h`` for every (u, h) in ``lower`` and ``j < u*i + h`` for
    every one in ``upper``. ``inside`` is the logit where all of them hold (those conjuncts
    dropped, the rest of the mask kept): what a tile entirely inside the band computes. Key
    tiles entirely outside the band for every row of a query block are neither loaded nor
    computed; only the tiles the band's edges cross evaluate the mask."""
    lower: tuple[Bound, ...]
    upper: tuple[Bound, ...]
    inside: Node

    @property
    def trivial(self) -> bool: return not self.lower and not self.upper

    def tiles(self, i0, bm: int, bn: int, ktiles: int):
        """(lo, full_lo, full_hi, hi) for the query block of rows [i0, i0 + bm): key tiles
        outside [lo, hi) hold no visible key of any of its rows, tiles in [full_lo, full_hi)
        only visible ones (lo <= full_lo <= full_hi <= hi). ``i0`` an int or an index Node
        (the same formula gives the lowering's loop bounds and the cost model's counts)."""
        i1, top = i0 + (bm - 1), ktiles * bn
        ends = lambda u, h: (u * i0 + h, u * i1 + h) if u >= 0 else (u * i1 + h, u * i0 + h)  # noqa: E731 (min, max) over rows
        lo_j = _fold(_max, [ends(u, h)[0] for u, h in self.lower], 0)         # below it: no row sees a key
        full_lo_j = _fold(_max, [ends(u, h)[1] for u, h in self.lower], 0)    # from it: every row sees every key
        hi_j = _fold(_min, [ends(u, h)[1] for u, h in self.upper], top)
        full_hi_j = _fold(_min, [ends(u, h)[0] for u, h in self.upper], top)
        clamp = lambda x: _min(_max(x, 0), top)  # noqa: E731 (non-negative before dividing: floor = truncation)
        lo, hi = clamp(lo_j) // bn, (clamp(hi_j) + (bn - 1)) // bn
        hi = _max(hi, lo)
        full_lo = _min(_max((clamp(full_lo_j) + (bn - 1)) // bn, lo), hi)
        full_hi = _min(_max(clamp(full_hi_j) // bn, full_lo), hi)
        return lo, full_lo, full_hi, hi


def _max(a, b):
    if isinstance(a, Node) or isinstance(b, Node):
        a, b = (x if isinstance(x, Node) else const(x, dt.int32) for x in (a, b))
        return alu(Ops.MAX, a, b)
    return max(a, b)


def _min(a, b):
    if isinstance(a, Node) or isinstance(b, Node):
        a, b = (x if isinstance(x, Node) else const(x, dt.int32) for x in (a, b))
        return alu(Ops.WHERE, lt(a, b), a, b)
    return min(a, b)


def _fold(f, xs: list, empty):
    return functools.reduce(f, xs) if xs else empty


def _conjuncts(c: Node) -> list[Node]:
    if c.op is Ops.AND and c.dtype is dt.bool_: return _conjuncts(c.src[0]) + _conjuncts(c.src[1])
    return [c]


def _affine(c: Node, nb: int) -> tuple[str, Bound] | None:
    """("lower" | "upper", (u, h)) where condition ``c`` is ``j >= u*i + h`` / ``j < u*i + h``
    over the query row i = VAR nb and key j = VAR nb+1 alone; else None."""
    neg = c.op is Ops.CMPNE and c.src[1] is TRUE
    if neg: c = c.src[0]
    if c.op is not Ops.CMPLT or not c.src[0].dtype.is_int: return None
    terms, k = _linear(c.src[0] - c.src[1])          # c: f < 0 with f = cj*j + ci*i + k
    ci = cj = 0
    for t, coef in terms.items():
        if t.op is not Ops.VAR or t.arg[0] not in (nb, nb + 1): return None
        if t.arg[0] == nb: ci = coef
        else: cj = coef
    if neg: ci, cj, k = -ci, -cj, -k - 1           # not (f < 0)  <=>  -f - 1 < 0 (integers)
    if cj == 1: return "upper", (-ci, -k)          # j < -ci*i - k
    if cj == -1: return "lower", (ci, k + 1)       # j > ci*i + k
    return None


@functools.lru_cache(maxsize=256)
def key_band(logit: Node, nb: int) -> KeyBand:
    """The logit's affine key band (``KeyBand``): read from a top-level ``where(cond, x, -inf)``
    whose condition is a conjunction (or from ``where(cond, -inf, x)`` with one comparison)."""
    none = KeyBand((), (), logit)
    if logit.op is not Ops.WHERE: return none
    c, a, b = logit.src
    if b.op is Ops.CONST and b.arg == float("-inf"): x, conds = a, _conjuncts(c)
    elif a.op is Ops.CONST and a.arg == float("-inf"):
        x, conds = b, [Node(Ops.CMPNE, dt.bool_, (c, TRUE)) if c.op is Ops.CMPLT else c]
        if c.op is not Ops.CMPLT: return none
    else: return none
    got: dict[str, list[Bound]] = {"lower": [], "upper": []}
    rest = []
    for cj in conds:
        f = _affine(cj, nb)
        if f is None: rest.append(cj)
        else: got[f[0]].append(f[1])
    if not got["lower"] and not got["upper"]: return none
    inside = x if not rest else alu(Ops.WHERE, all_of(rest), x, const(float("-inf"), logit.dtype))
    return KeyBand(tuple(got["lower"]), tuple(got["upper"]), inside)


@dataclass(frozen=True, eq=False)
class AttentionKernel:
    """One fused attention kernel standing for the score GEMM, the softmax row kernel and
    the output GEMM (``kernels``, in that order) in a ``Step``."""
    name: str
    kernels: tuple[Kernel, Kernel, Kernel]
    inputs: tuple[Buffer, ...]
    output: Buffer
    geometry: Geometry
    kind = "attention"

    def __reduce__(self):
        return (AttentionKernel, (self.name, self.kernels, self.inputs, self.output, self.geometry))

    def __eq__(self, other) -> bool: return isinstance(other, AttentionKernel) and self.key == other.key
    def __hash__(self) -> int: return hash(self.key)

    @cached_property
    def key(self) -> str:
        return hashlib.sha256(("attention:" + ":".join(k.key for k in self.kernels)).encode()).hexdigest()[:32]

    @property
    def flops(self) -> int: return sum(k.flops for k in self.kernels)

    @property
    def out_points(self) -> int: return self.output.size

    def to_dict(self) -> dict:
        """JSON-ready: the three kernels it replaces (``from_dict`` matches them again)."""
        return {"format": "superopt.attention", "version": 1, "name": self.name, "kernels": [k.to_dict() for k in self.kernels]}

    @staticmethod
    def from_dict(d: dict) -> "AttentionKernel":
        if not isinstance(d, dict) or d.get("format") != "superopt.attention" or d.get("version") != 1:
            raise ValueError("not a superopt fused attention (format superopt.attention, version 1)")
        k = build(d["name"], *(Kernel.from_dict(x) for x in d["kernels"]))
        if isinstance(k, str): raise ValueError(f"the stored kernels are not an attention: {k}")
        return k

    @property
    def min_bytes(self) -> int: return sum(b.nbytes for b in self.inputs) + self.output.nbytes

    @property
    def intensity(self) -> float: return self.flops / max(1, self.min_bytes)

    @property
    def mma_flops(self) -> int:
        """The two products' multiply-adds (2 flops each): what tensor cores run."""
        g = self.geometry
        return 2 * g.heads * g.sq * g.sk * (g.d + g.dv)

    def interpret(self, inputs: list[np.ndarray]) -> np.ndarray:
        """The graph's semantics: the three kernels it replaces, run by the interpreter."""
        from .interpret import run_kernel
        bufs = {b.name: np.asarray(a) for b, a in zip(self.inputs, inputs)}
        out = None
        for k in self.kernels:
            out = run_kernel(k, [bufs[b.name] for b in k.inputs])
            bufs[k.output.name] = out
        return out.reshape(self.output.shape)

    def reference(self, inputs: list[np.ndarray], rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(output element indices, float64 values): the three kernels it replaces, by the
        interpreter, at the (batch, query) rows ``rows`` (flat indices; None: every row).
        Only those rows of the scores and probabilities are computed (the rest stay zero)."""
        from .interpret import cast_values, run_kernel
        g = self.geometry
        rows = np.arange(g.heads * g.sq) if rows is None else np.asarray(rows, dtype=np.int64)
        bufs = {b.name: np.asarray(a).reshape(-1) for b, a in zip(self.inputs, inputs)}
        for k in self.kernels:
            width = k.axes[len(g.batch) + 1].size   # the row's other output axis: keys, or the head dim
            pts = (rows[:, None] * width + np.arange(width)).reshape(-1)
            vals = run_kernel(k, [bufs[b.name] for b in k.inputs], points=pts)
            at = _store_at(k, pts)
            if k is self.kernels[-1]:
                return at, dt.to_values(dt.to_storage(cast_values(vals, k.output.dtype), k.output.dtype), k.output.dtype).astype(np.float64)
            buf = np.zeros(k.output.size, dtype=k.output.dtype.np)
            buf[at] = dt.to_storage(cast_values(vals, k.output.dtype), k.output.dtype)
            bufs[k.output.name] = buf
        raise AssertionError("unreachable")

    def describe(self) -> str:
        g = self.geometry
        return (f"kernel {self.name}  [attention]  key {self.key}\nbatch {list(g.batch)}  queries {g.sq}  keys {g.sk}  "
                f"head dims {g.d}/{g.dv}\n" + "\n".join(f"in{i} {b.name}: {b.dtype.name}{list(b.shape)}"
                                                     for i, b in enumerate(self.inputs))
                + f"\nout {self.output.name}: {self.output.dtype.name}{list(self.output.shape)}\nflops: {self.flops:,}")


_NP = {Ops.ADD: np.add, Ops.MUL: np.multiply, Ops.IDIV: np.floor_divide, Ops.MOD: np.mod}


@functools.lru_cache(maxsize=256)
def _rows_ok(idx: Node, outer: tuple[int, ...], width: int) -> str | None:
    """Exact, by evaluating the index at every point (the batch terms may hold div/mod)."""
    env = {a: np.arange(n, dtype=np.int64).reshape((n,) + (1,) * (len(outer) - a)) for a, n in enumerate(outer)}
    env[len(outer)] = np.arange(width, dtype=np.int64)
    memo: dict[Node, np.ndarray] = {}
    for x in idx.toposort():
        if x.op is Ops.CONST: memo[x] = np.asarray(int(x.arg), dtype=np.int64)
        elif x.op is Ops.VAR: memo[x] = env[x.arg[0]]
        elif x.op in _NP: memo[x] = _NP[x.op](memo[x.src[0]], memo[x.src[1]])
        else: return f"index op {x.op.name} is not supported"
    v = np.broadcast_to(memo[idx], outer + (width,))
    if np.any(v - v[..., :1] != np.arange(width)): return "rows are not contiguous along the head dimension"
    if np.any(v[..., 0] % 8): return "rows are not 16-byte aligned"
    return None


def _store_at(k: Kernel, pts: np.ndarray) -> np.ndarray:
    """The output element kernel ``k`` writes for each output point (row-major over its output axes)."""
    env, rem = {}, pts.astype(np.int64)
    for a in reversed(k.output_axes):
        env[a], rem = rem % k.axes[a].size, rem // k.axes[a].size
    memo: dict[Node, np.ndarray] = {}
    for x in k.store.toposort():
        if x.op is Ops.CONST: memo[x] = np.asarray(int(x.arg), dtype=np.int64)
        elif x.op is Ops.VAR: memo[x] = env[x.arg[0]]
        else: memo[x] = _NP[x.op](memo[x.src[0]], memo[x.src[1]])
    return np.broadcast_to(memo[k.store], pts.shape).astype(np.int64)


# ---- finding it in the graph ---------------------------------------------------------------
def _contraction(r: Node) -> tuple[Node, Node] | None:
    """The two operands (below casts and movement) of a sum-of-products reduction ``r``."""
    if r.op is not Ops.REDUCE or r.arg[0] != "sum": return None
    x, _ = _through(r.src[0], movement=False)
    if x.op is not Ops.MUL: return None
    ops = [_through(s) for s in x.src]
    if not all(e for _, e in ops): return None
    return ops[0][0], ops[1][0]


def internals(n: Node, realized: set[Node]) -> tuple[Node, Node] | None:
    """(S, P): the score and probability nodes of the attention whose output contraction
    ``n`` (or a cast of it) computes, read through nodes not in ``realized`` (S and P
    themselves may be in it: a plan that writes them); else None."""
    r = n
    while r.op in (Ops.CAST, Ops.RESHAPE) and r.src: r = r.src[0]
    ops = _contraction(r)
    if ops is None: return None
    for p in ops:
        if p.op is not Ops.MUL: continue
        sums = [x for x in inner_reductions(p, set(realized) - {p} - set(toposort(p))) if _contraction(x) is not None]
        for rs in sums:
            s = _narrowed([rs], toposort(p))[0]
            inner = inner_reductions(p, set(realized) - {p, s, rs})
            if len(inner) == 3 and rs in inner: return s, p
    return None


def fused_plan(root: Node, plan: frozenset[Node]) -> frozenset[Node] | None:
    """``plan`` with every attention's score and probabilities left unwritten (so
    ``kernelize`` fuses each into one kernel); None when the graph holds no attention."""
    drop: set[Node] = set()
    order = toposort(root)
    realized = set(plan) | set(_narrowed(list(plan), order))
    for n in order:
        got = internals(n, realized) if n.op is Ops.REDUCE else None
        if got is None: continue
        s, p = got
        rs = s
        while rs.op in (Ops.CAST, Ops.RESHAPE): rs = rs.src[0]
        done = realized - {s, p, rs}
        names = {x: f"t{i}" for i, x in enumerate(order) if x in done or x is n}   # only the kernels' structure matters
        if isinstance(_fused(n, names, done, shape(n), "a"), AttentionKernel): drop |= {s, p, rs}
    return frozenset(plan) - drop if drop else None


def fused_step(n: Node, names: dict[Node, str], realized: set[Node], out_shape: tuple[int, ...], kname: str) -> Step | None:
    """The attention kernel of ``n`` when ``n``'s kernel would compute an attention's
    score and softmax (both left unmaterialized by the plan), else None."""
    k = _fused(n, names, realized, out_shape, kname)
    return Step(k, tuple(b.name for b in k.inputs), k.output.name) if isinstance(k, AttentionKernel) else None


def _fused(n: Node, names: dict[Node, str], realized: set[Node], out_shape: tuple[int, ...], kname: str) -> "AttentionKernel | str":
    got = internals(n, realized)
    if got is None: return "no attention"
    s, p = got
    nm = dict(names)
    nm[s], nm[p] = f"{kname}_scores", f"{kname}_probs"
    done = set(realized) | {s, p}
    try:
        ks = _kernel_of(s, nm, done, shape(s), f"{kname}s")
        kp = _kernel_of(p, nm, done, shape(p), f"{kname}p")
        ko = _kernel_of(n, nm, done, out_shape, f"{kname}o")
    except (_NoFuse, ValueError) as e:
        return f"its kernels do not build: {e}"
    return build(kname, ks, kp, ko)


def _kernel_of(n: Node, names: dict[Node, str], realized: set[Node], out_shape: tuple[int, ...], kname: str) -> Kernel:
    """``n``'s kernel as ``kernelize`` builds it: plain, with row reductions, or with its
    one reduction as an epilogue (raises _NoFuse / ValueError where none fits)."""
    inner = inner_reductions(n, realized)
    if not inner: return _build(n, names, out_shape, kname).kernel
    try:
        return _build(n, names, out_shape, kname, frozenset(inner)).kernel
    except _NoFuse:
        if len(inner) > 1: raise
    return _build_epilogue(n, inner[0], names, out_shape, kname).kernel


# ---- matching the three kernels --------------------------------------------------------------
def _softmax_of(body: Node) -> Node | None:
    """x where ``body`` is exactly the front end's softmax of x along one row axis."""
    if body.op is not Ops.MUL or body.src[1].op is not Ops.RECIP: return None
    e, ssum = body.src[0], body.src[1].src[0]
    if ssum.op is not Ops.REDUCE or ssum.arg[0] != "sum" or ssum.src[0] is not e: return None
    if e.op is not Ops.EXP2 or e.src[0].op is not Ops.MUL: return None
    d, c = e.src[0].src
    if c.op is not Ops.CONST or abs(c.arg - LOG2E) > 1e-12 * LOG2E or d.op is not Ops.ADD: return None
    x, neg = d.src
    if neg.op is not Ops.NEG or neg.src[0].op is not Ops.REDUCE or neg.src[0].arg != ("max", ssum.arg[1]) \
            or neg.src[0].src[0] is not x:
        return None
    return x


def _f32(x: Node, score_load: Node, slot: dict[int, int]) -> Node:
    """``x`` recomputed in float32, the score load replaced by ``SCORE`` and other loads'
    slots renumbered (``slot``: row kernel slot -> fused slot)."""
    done: dict[Node, Node] = {}
    for n in x.toposort():
        src = tuple(done.get(s, s) for s in n.src)
        if n is score_load: done[n] = SCORE
        elif n.op is Ops.LOAD: done[n] = Node(Ops.CAST, dt.float32, (Node(Ops.LOAD, n.dtype, src, slot[n.arg]),))
        elif n.op is Ops.CONST and n.dtype.is_float: done[n] = const(n.arg, dt.float32)
        elif n.op is Ops.CAST and n.dtype.is_float and src[0].dtype.is_float: done[n] = src[0]
        elif n.dtype.is_float: done[n] = Node(n.op, dt.float32, src, n.arg)
        elif src != n.src: done[n] = Node(n.op, n.dtype, src, n.arg)
        else: done[n] = n
    return done[x]


def _only_load(k: Kernel, slot: int) -> Node | str:
    loads = [ld for ld in k.loads if ld.arg == slot]
    if len({ld for ld in loads}) != 1: return f"{k.inputs[slot].name} is read at more than one index"
    if loads[0].src[1].op is not Ops.CONST or not loads[0].src[1].arg: return f"{k.inputs[slot].name} is read masked"
    return loads[0]


def _gemm_operands(k: Kernel) -> tuple[Node, Node] | str:
    """The two loads of a GEMM kernel's product, in the product's order."""
    r = k.reduce
    if r is None or r.arg[0] != "sum": return "not a sum reduction"
    x = r.src[0]
    while x.op is Ops.CAST: x = x.src[0]
    if x.op is not Ops.MUL: return "not a product"
    out = []
    for s in x.src:
        while s.op is Ops.CAST: s = s.src[0]
        if s.op is not Ops.LOAD or s.src[1].op is not Ops.CONST or not s.src[1].arg: return "an operand is not a plain load"
        out.append(s)
    return out[0], out[1]


def build(name: str, ks: Kernel, kp: Kernel, ko: Kernel) -> AttentionKernel | str:
    """The fused kernel of a score GEMM ``ks``, softmax row kernel ``kp`` and output GEMM
    ``ko``, or why they are not an attention."""
    nb = len(ks.axes) - 3
    if nb < 0 or len(kp.axes) != nb + 2 or len(ko.axes) != nb + 3: return "axes are not (batch, rows, columns)"
    if ks.reduce_axes != [nb + 2] or ko.reduce_axes != [nb + 2] or kp.reduce_axes: return "reductions are not the products'"
    batch = tuple(a.size for a in ks.axes[:nb])
    sq, sk, d = (a.size for a in ks.axes[nb:])
    if tuple(a.size for a in kp.axes) != batch + (sq, sk): return "softmax shape differs from the scores'"
    if tuple(a.size for a in ko.axes) != batch + (sq, ko.axes[nb + 1].size, sk): return "output product does not fold the keys"
    dv = ko.axes[nb + 1].size
    if kp.row_axes != [nb + 1]: return "softmax is not along the keys"
    x = _softmax_of(kp.body.src[0] if kp.body.op is Ops.CAST else kp.body)
    if x is None: return "row kernel is not a softmax"
    # the row kernel reads the scores exactly where the score kernel wrote them
    if ks.output.name not in [b.name for b in kp.inputs]: return "softmax does not read the scores"
    s_slot = [b.name for b in kp.inputs].index(ks.output.name)
    s_load = _only_load(kp, s_slot)
    if isinstance(s_load, str): return s_load
    if s_load.src[0] is not ks.store or s_load.src[0] is not kp.store: return "scores are not read element for element"
    # the output product reads the probabilities where the row kernel wrote them
    ops = _gemm_operands(ko)
    if isinstance(ops, str): return f"output product: {ops}"
    pi = [i for i, ld in enumerate(ops) if ko.inputs[ld.arg].name == kp.output.name]
    if len(pi) != 1: return "output product does not read the probabilities once"
    p_load, v_load = ops[pi[0]], ops[1 - pi[0]]
    # ko's variables (batch, i, e, j) renamed to the row kernel's (batch, i, j)
    to_row = {var(nb + 2, sk): var(nb + 1, sk)}
    if substitute(p_load.src[0], {var(nb + 1, dv): const(0, dt.int32), **to_row}) is not kp.store \
            or axis_stride(p_load.src[0], nb + 1, dv) != 0:
        return "probabilities are not read element for element"
    qk = _gemm_operands(ks)
    if isinstance(qk, str): return f"score product: {qk}"
    q_load, k_load = qk
    if axis_stride(q_load.src[0], nb + 1, sk) != 0 or axis_stride(k_load.src[0], nb, sq) != 0:
        return "score product is not rows x keys"
    # fused inputs: the score kernel's, the logit's other buffers, the value buffer; no intermediates
    inputs: list[Buffer] = []
    def slot_of(b: Buffer) -> int:
        if b not in inputs: inputs.append(b)
        return inputs.index(b)
    qs, kslot = slot_of(ks.inputs[q_load.arg]), slot_of(ks.inputs[k_load.arg])
    kp_slots = {i: slot_of(b) for i, b in enumerate(kp.inputs) if i != s_slot}
    vs = slot_of(ko.inputs[v_load.arg])
    if any(b.name in (ks.output.name, kp.output.name) for b in inputs): return "an intermediate is read elsewhere"
    # Q over (batch, i, e), K over (batch, j, e): the score kernel's (batch, i, j, e) renamed
    e_s = var(nb + 2, d)
    q_idx = substitute(q_load.src[0], {e_s: var(nb + 1, d)})
    k_idx = substitute(k_load.src[0], {var(nb + 1, sk): var(nb, sk), e_s: var(nb + 1, d)})
    # V over (batch, j, e), the output over (batch, i, e): ko's (batch, i, e, j) renamed
    v_idx = substitute(v_load.src[0], {var(nb + 2, sk): var(nb, sk), var(nb + 1, dv): var(nb + 1, dv)})
    if axis_stride(v_load.src[0], nb, sq) != 0: return "values depend on the query row"
    g = Geometry(batch, sq, sk, d, dv, q_idx, k_idx, v_idx, ko.store, _f32(x, s_load, kp_slots), (qs, kslot, vs))
    for n, what in ((g.logit, "logit"),):
        if any(y.op is Ops.REDUCE for y in n.toposort()): return f"{what} holds a reduction"
    return AttentionKernel(name, (ks, kp, ko), tuple(inputs), ko.output, g)
