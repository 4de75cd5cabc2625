"""Fusion planning: which nodes of a lazy graph a kernel writes to a buffer, and which are
recomputed inside every kernel that reads them.

A plan is the set of nodes to materialize (the output is always written). Every other
elementwise node is recomputed in each consumer's kernel; a reduction not in the plan is
computed inside the elementwise kernel that reads it: as an epilogue (legal when each
output point reads exactly one of its results) or as a row reduction (its result
broadcast back along the axes it folds, as in softmax). ``ir.kernelize`` builds the kernels of a
plan, so a plan is judged on the very kernels it produces.

Modeled time of a plan = sum over its kernels of ``machine.launch_s + cost.roofline_s``
(the larger of flops at peak and compulsory bytes at DRAM bandwidth; the same Target
numbers the schedule model uses). Recomputation shows up as flops, materialization as
bytes written and re-read plus a launch. Peak memory is the largest sum of buffers alive
at one step (written, and still to be read), graph inputs excluded.

The solver (Z3): one boolean per candidate node (materialize or not). For each possible
kernel root the graph below it is expanded exactly as the kernel builder visits it
(node, index, mask) — so a node read through two different windows counts twice, a node
read twice at the same index once — and one boolean per visit says whether it is
computed in that kernel (reached from the root through nodes that are not materialized).
Flops, bytes read (each buffer once per kernel), bytes written and buffer lifetimes
follow; the objective is the modeled time, then peak memory, under an optional peak
limit. On the test graphs the objective at the solver's plan equals the evaluated time
of its kernels (the tests check it); on graphs the solver cannot close in the time
given (a BERT layer: 86 candidates), a quick local improvement (flip one node while the
evaluated time drops) runs first and seeds the solver, which then returns that plan or
a better one. Every candidate plan is kernelized and evaluated; the default rule is
kept unless another is strictly better, so a plan never exceeds the default or the
unfused plan under the model.

Several reductions share a kernel as row reductions (softmax, layernorm: each reduction
broadcast back along the axes it folds is computed inside its consumer's kernel, see
``ir.kernel.Kernel``); the model allows a kernel one epilogue reduction or any number of
row reductions folding the same axes. Not covered yet: split-K, fusing
index-generating ops, and choosing schedules jointly with the plan (kernel time here is
the roofline, not a tuned schedule).
"""
from __future__ import annotations

import importlib
import time as _time
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator, Sequence

import networkx as nx
import z3

from ..ir import context
from ..ir.graph import shape
from ..ir.kernel import Kernel, counts_as_flop
from ..ir.node import ALU, MOVEMENT, TRUE, Node, Ops, toposort
from .cost import roofline_s

# ``superopt.ir`` exports the function ``kernelize``, which shadows the module's name
kz = importlib.import_module("superopt.ir.kernelize")
Step = kz.Step


# ---- measuring a list of kernels ------------------------------------------------------
@dataclass(frozen=True)
class Cost:
    time_s: float      # modeled: launches + per-kernel roofline time
    flops: int
    bytes: int         # read and written, each buffer once per kernel
    peak_bytes: int    # intermediate and output buffers alive at once
    kernels: int


def kernel_time(k: Kernel, machine) -> float:
    """Modeled seconds of one kernel: a launch plus its roofline time."""
    return machine.launch_s + roofline_s(k, machine)


def peak_bytes(steps: Sequence[Step]) -> int:
    """Largest total of buffers alive at one step: written at or before it, and read at or
    after it (the last step's output is alive at the end)."""
    last = {s.output: i for i, s in enumerate(steps)}
    for i, s in enumerate(steps):
        for name in s.inputs:
            if name in last: last[name] = max(last[name], i)
    size = {s.output: s.kernel.output.nbytes for s in steps}
    born = {s.output: i for i, s in enumerate(steps)}
    final = steps[-1].output if steps else None
    return max((sum(size[b] for b in size if born[b] <= i and (last[b] >= i or b == final))
                for i in range(len(steps))), default=0)


def hand_time(steps: Sequence[Step], machine) -> float:
    """Modeled seconds of the kernels under their hand-rule schedules (the schedule cost
    model, a second opinion on a plan: the plan itself is chosen on roofline time)."""
    return scheduled_time(steps, machine, "hand")


def cost_of(steps: Sequence[Step], machine) -> Cost:
    return Cost(sum(kernel_time(s.kernel, machine) for s in steps), sum(s.kernel.flops for s in steps),
                sum(s.kernel.min_bytes for s in steps), peak_bytes(steps), len(steps))


# ---- the graph -------------------------------------------------------------------------
def _has_data(n: Node) -> bool:
    if "has_data" not in n._cache:
        n._cache["has_data"] = n.op is Ops.BUFFER or any(_has_data(s) for s in n.src)
    return n._cache["has_data"]


def candidates(root: Node) -> list[Node]:
    """Nodes a plan may materialize (elementwise and reduce nodes that read data), in
    the order kernels run."""
    base = kz.output_node(root)
    return [n for n in toposort(base) if (n.op in ALU or n.op is Ops.REDUCE) and _has_data(n) and n is not base]


def to_networkx(root: Node) -> nx.DiGraph:
    """The lazy graph under root: an edge from each source to its user; node attributes
    op, shape, bytes (as a buffer) and candidate (may be materialized)."""
    cand = set(candidates(root))
    g = nx.DiGraph()
    for n in toposort(kz.output_node(root)):
        sh = shape(n) if n.op is not Ops.CONST else ()
        size = 1
        for d in sh: size *= d
        g.add_node(n, op=n.op.name, shape=sh, bytes=size * n.dtype.itemsize, candidate=n in cand)
        for s in n.src: g.add_edge(s, n)
    return g


def unfused_plan(root: Node) -> frozenset[Node]:
    """Every elementwise intermediate and every reduction written to a buffer."""
    return frozenset(candidates(root))


default_plan = kz.default_plan


# ---- expanding a kernel root as the kernel builder visits it ------------------------------
@dataclass
class _Visit:
    node: Node
    points: int                                   # evaluations per kernel launch
    parents: set = field(default_factory=set)     # visit keys that read this one
    children: list = field(default_factory=list)
    flop: bool = False                            # its own ALU op counts in Kernel.flops
    unless_load: Node | None = None               # ... unless this node is materialized (a pad's mask select)
    epilogue_ok: bool = True                      # a reduction that may be computed here as an epilogue
    row_axes: tuple | None = None                 # ... or as a row reduction folding these kernel axes


class _Expander(kz._Builder):
    """Visits the graph under ``root`` as ``ir.kernelize`` does with nothing below the
    root materialized, recording every visit, who reached it, and the op it adds."""

    def __init__(self, root: Node):
        super().__init__(root, {})
        self.visits, self.stack = {}, []
        self.region: list[int] = []
        self.in_reduce = root.op is Ops.REDUCE    # inside some reduction's source: no epilogue here
        self.in_classic = root.op is Ops.REDUCE   # inside a classic reduction's source: no row reduction

    def visit(self, n: Node, idx: tuple, gate: Node, rowvars: tuple = ()) -> Node:
        key = (n, idx, gate, rowvars)
        v = self.visits.get(key)
        if v is None: v = self.visits[key] = _Visit(n, self.region[-1])
        if self.stack and self.stack[-1] not in v.parents:
            v.parents.add(self.stack[-1])
            self.visits[self.stack[-1]].children.append(key)
        if key in self.memo: return self.memo[key]
        self.stack.append(key)
        try:
            out = self.memo[key] = self._visit(n, idx, gate, rowvars)
        finally:
            self.stack.pop()
        if n.op is Ops.REDUCE and n is not self.root: return out   # _visit decided
        kids = {self.memo[c] for c in v.children}
        v.flop = counts_as_flop(out) and out not in kids
        if n.op is Ops.PAD and v.flop: v.unless_load = self._below_movement(key)
        return out

    def _below_movement(self, key) -> Node:
        while key[0].op in MOVEMENT: key = self.visits[key].children[0]
        return key[0]

    def _visit(self, n: Node, idx: tuple, gate: Node, rowvars: tuple = ()) -> Node:
        if n.op is not Ops.REDUCE or n is self.root: return super()._visit(n, idx, gate, rowvars)
        v = self.visits[(n, idx, gate, rowvars)]
        placeholder = Node(Ops.LOAD, n.dtype, (kz.linear(list(idx), shape(n)), gate), ("planned", n.key))
        row = None if self.in_classic else kz.row_index(n, idx, gate, dict(rowvars))
        row = row if row and row[1] else None   # (a fold of size-1 dimensions only is no row)
        inner_idx = None if self.in_reduce or row else \
            kz.epilogue_index(n, idx, gate, self.n_out, kz.reduce_vars(n, self.n_out))
        v.epilogue_ok = inner_idx is not None
        if row is not None:   # computed over the row, at every point of this kernel
            v.row_axes = row[1]
            saved, self.in_reduce = self.in_reduce, True
            try:
                self.visit(n.src[0], row[0], TRUE)
            finally:
                self.in_reduce = saved
            v.flop, v.points = True, self.region[-1]
            return placeholder
        if inner_idx is None: return placeholder
        self.in_reduce = self.in_classic = True
        self.region.append(_size(shape(n.src[0])))
        try:
            self.visit(n.src[0], inner_idx, TRUE)
        finally:
            self.in_reduce = self.in_classic = False
            self.region.pop()
        v.flop, v.points = True, _size(shape(n.src[0]))
        return placeholder


def _size(sh) -> int:
    out = 1
    for d in sh: out *= d
    return out


def _expand(k: Node) -> tuple[dict, tuple]:
    """Visits of kernel root k's graph; returns (visits, root key)."""
    ex = _Expander(k)
    src, dims, red, idx = kz.root_index(k)
    full = shape(src)
    ex.n_out = len([i for i in dims if i not in red])
    ex.region.append(_size(full))
    if k.op is Ops.REDUCE:
        rkey = (k, (), TRUE, ())
        ex.visits[rkey] = _Visit(k, _size(full), flop=True)
        ex.stack.append(rkey)
        ex.visit(src, tuple(idx), TRUE)
        return ex.visits, rkey
    rkey = (k, tuple(idx), TRUE, ())
    ex.visit(k, tuple(idx), TRUE)
    return ex.visits, rkey


# ---- the solver ---------------------------------------------------------------------------
@dataclass
class Plan:
    """A fusion plan and what it costs under the model."""
    materialize: frozenset[Node]
    steps: list[Step]
    cost: Cost
    source: str                 # "solver", "local", "default" or "unfused": which plan was kept
    default: Cost
    unfused: Cost
    proved: bool = False        # the solver proved its plan optimal under the model
    solve_s: float = 0.0
    solver_time_s: float | None = None   # the objective's value at the solver's plan
    solver_plan_s: float | None = None   # the evaluated time of the solver's plan (equal, the model being exact)
    scheduled_s: dict | None = None      # with ``schedules``: each candidate plan's time under the schedule model


def _q(x: float) -> z3.RatNumRef:
    f = Fraction(x).limit_denominator(10**15)
    return z3.Q(f.numerator, f.denominator)


class _Model:
    """The Z3 formulation over one graph."""

    def __init__(self, root: Node, machine):
        self.root, self.base = root, kz.output_node(root)
        self.cand = candidates(root)
        order = self.cand + [self.base]
        self.pos = {n: i for i, n in enumerate(order)}
        self.m = {n: z3.Bool(f"m{i}") for i, n in enumerate(self.cand)}
        self.m[self.base] = z3.BoolVal(True)
        self.cons: list = []
        self.loads: dict[tuple[Node, Node], z3.BoolRef] = {}   # (kernel root, buffer node) -> read
        ns = Fraction(10**9)
        f_c, b_c = _q(float(ns / Fraction(machine.flops_fp32))), _q(float(ns / Fraction(machine.dram_bw)))
        launch = _q(machine.launch_s * 1e9)
        total, exact, self.kflops, self.kbytes = [], [], {}, {}
        for ki, k in enumerate(order):
            visits, rkey = _expand(k)
            flops, reads = self._kernel(ki, k, visits, rkey)
            out_bytes = _size(shape(root) if k is self.base else shape(k)) * k.dtype.itemsize
            self.kflops[k], self.kbytes[k] = flops, z3.If(self.m[k], out_bytes, 0) + reads
            t = z3.Real(f"t{ki}")
            self.cons += [t >= f_c * flops, t >= b_c * (z3.If(self.m[k], out_bytes, 0) + reads), t >= 0]
            total.append(z3.If(self.m[k], launch, 0) + t)
            fl, by = f_c * flops, b_c * self.kbytes[k]
            exact.append(z3.If(self.m[k], launch, 0) + z3.If(fl >= by, fl, by))
        self.time_ns = z3.Sum(total)          # t >= max(...): tight at the optimum
        self.exact_ns = z3.Sum(exact)         # the same time, tight at any assignment
        self.peak = self._peak(order)

    def _kernel(self, ki: int, k: Node, visits: dict, rkey) -> tuple:
        keys = {key: i for i, key in enumerate(visits)}
        here = {key: z3.Bool(f"p{ki}_{i}") for key, i in keys.items()}   # computed in this kernel
        reached = {}
        for key, v in visits.items():
            if key == rkey:
                self.cons.append(here[key] == self.m[k])
                continue
            r = reached[key] = z3.Or([here[p] for p in v.parents])
            own = z3.Not(self.m[v.node]) if v.node in self.m else z3.BoolVal(v.node.op is not Ops.BUFFER)
            self.cons.append(here[key] == z3.And(r, own))
            if v.node.op is Ops.REDUCE and not v.epilogue_ok and v.row_axes is None:
                self.cons.append(z3.Implies(r, self.m[v.node]))   # nested, or not one result per point
        # a kernel holds one epilogue reduction, or row reductions all folding the same axes
        epis = [here[key] for key, v in visits.items() if key != rkey and v.node.op is Ops.REDUCE and v.row_axes is None]
        rows: dict[tuple, list] = {}
        for key, v in visits.items():
            if key != rkey and v.node.op is Ops.REDUCE and v.row_axes is not None:
                rows.setdefault(v.row_axes, []).append(here[key])
        kinds = [z3.Or(g) for g in rows.values()] + epis
        if len(kinds) > 1: self.cons.append(z3.AtMost(*kinds, 1))
        flops = []
        for key, v in visits.items():
            if not v.flop: continue
            cond = here[key] if v.unless_load is None or v.unless_load not in self.m else \
                z3.And(here[key], z3.Not(self.m[v.unless_load]))
            flops.append(z3.If(cond, v.points, 0))
        bufs: dict[Node, list] = {}
        for key, v in visits.items():
            if key == rkey: continue
            if v.node.op is Ops.BUFFER: bufs.setdefault(v.node, []).append(reached[key])
            elif v.node in self.m: bufs.setdefault(v.node, []).append(z3.And(reached[key], self.m[v.node]))
        reads = []
        for b, conds in bufs.items():
            rd = self.loads[(k, b)] = z3.Or(conds)
            reads.append(z3.If(rd, _size(shape(b)) * b.dtype.itemsize, 0))
        return z3.Sum(flops) if flops else z3.IntVal(0), z3.Sum(reads) if reads else z3.IntVal(0)

    def _peak(self, order: list[Node]) -> z3.ArithRef:
        """Bytes alive at the largest step."""
        readers: dict[Node, list[tuple[int, z3.BoolRef]]] = {}
        for (k, b), rd in self.loads.items():
            if b in self.m: readers.setdefault(b, []).append((self.pos[k], rd))
        peak = z3.Int("peak")
        for k in order:
            t = self.pos[k]
            alive = []
            for u in order[:t + 1]:
                later = [rd for p, rd in readers.get(u, []) if p >= t]
                if u is k or u is self.base: live = self.m[u]
                elif not later: continue
                else: live = z3.And(self.m[u], z3.Or(later))
                alive.append(z3.If(live, _size(shape(u)) * u.dtype.itemsize, 0))
            self.cons.append(peak >= z3.If(self.m[k], z3.Sum(alive), 0))
        return peak

    def plan_of(self, model: z3.ModelRef) -> frozenset[Node]:
        return frozenset(n for n in self.cand if z3.is_true(model.eval(self.m[n], model_completion=True)))


def plan(root: Node, machine, peak_limit: int | None = None, timeout_s: float = 30.0,
         schedules: str | None = None) -> Plan:
    """The best plan under the model for the graph under ``root`` (see the module docstring).
    ``schedules`` ("hand" or "z3"): then re-rank the candidate plans (default, unfused,
    local improvement, solver) by the schedule cost model of their kernels under those
    schedules, and keep the fastest there: the plan's roofline view corrected by what
    each kernel's schedule can reach."""
    t0 = _time.perf_counter()
    dflt_p, unf_p = default_plan(root), unfused_plan(root)
    dflt_s, unf_s = kz.kernelize(root, plan=dflt_p), kz.kernelize(root, plan=unf_p)
    dflt, unf = cost_of(dflt_s, machine), cost_of(unf_s, machine)
    chosen = [(dflt, dflt_p, dflt_s, "default"), (unf, unf_p, unf_s, "unfused")]
    chosen.append(_improve(root, machine, chosen[0], peak_limit, t0 + timeout_s / 3))
    m = _Model(root, machine)
    opt = z3.Optimize()
    opt.set(timeout=int(max(1.0, timeout_s - (_time.perf_counter() - t0)) * 1000))
    opt.add(*m.cons)
    if peak_limit is not None: opt.add(m.peak <= peak_limit)
    start = chosen[-1][1]
    for n in m.cand: opt.set_initial_value(m.m[n], n in start)   # a timeout returns this plan or better
    opt.minimize(m.time_ns)
    opt.minimize(m.peak)          # second: among the fastest, the least memory alive at once
    res = opt.check()
    proved, model_ns = res == z3.sat, None
    if res != z3.unsat:
        try:
            model = opt.model()
        except z3.Z3Exception:
            model = None
        if model is not None:
            p = m.plan_of(model)
            model_ns = model.eval(m.exact_ns, model_completion=True)
            try:
                steps = kz.kernelize(root, plan=p)
                if not _runnable(steps, machine): raise ValueError("a fused attention no family runs")
                chosen.append((cost_of(steps, machine), p, steps, "solver"))
            except ValueError:
                proved = False
    elif peak_limit is not None:
        raise ValueError(f"no plan keeps peak memory within {peak_limit} bytes")
    if (att := _attention(root, machine, chosen)) is not None: chosen.append(att)
    fits = [c for c in chosen if peak_limit is None or c[0].peak_bytes <= peak_limit] or chosen
    best = fits[0]
    for c in fits[1:]:   # keep the default unless strictly better under the model
        if _better(c[0], best[0]): best = c
    scheduled = None
    if schedules is not None:
        memo: dict = {}
        scheduled = {c[3]: scheduled_time(c[2], machine, schedules, memo) for c in fits}
        best = min(fits, key=lambda c: (scheduled[c[3]] * (1 + 1e-9), c is not best))
    solver_s = float(Fraction(model_ns.as_fraction()) / 10**9) if model_ns is not None else None
    solved = next((c[0] for c in chosen if c[3] == "solver"), None)
    proved = proved and solved is not None and best[0].time_s <= solved.time_s * (1 + 1e-9)
    return Plan(best[1], best[2], best[0], best[3], dflt, unf, proved,
                _time.perf_counter() - t0, solver_s, solved.time_s if solved is not None else None, scheduled)


def _attention(root: Node, machine, chosen: list[tuple]) -> tuple | None:
    """The fastest plan so far with every attention (ir/attention.py) fused into one kernel,
    priced like any plan (kept only where the model says it is faster); None without one."""
    from ..ir.attention import fused_plan
    best = min(chosen, key=lambda c: c[0].time_s)
    p = fused_plan(root, best[1])
    if p is None: return None
    try:
        steps = kz.kernelize(root, plan=p)
    except ValueError:
        return None
    if not any(s.kernel.kind == "attention" for s in steps) or not _runnable(steps, machine): return None
    return cost_of(steps, machine), p, steps, "attention"


def _runnable(steps: Sequence[Step], machine) -> bool:
    """Every fused attention among ``steps`` has a legal schedule on ``machine`` (a plan that
    leaves an attention's scores unwritten fuses it whether or not a family can run it)."""
    from .families.attention import FAMILY as att
    return all(att.applies(s.kernel, machine) and bool(att.points(s.kernel, machine))
               for s in steps if s.kernel.kind == "attention")


def scheduled_time(steps: Sequence[Step], machine, schedules: str = "hand", memo: dict | None = None) -> float:
    """Modeled seconds of the kernels under ``schedules`` ("hand": the hand rules; "z3":
    the solver's optimum, 10 s a kernel), memoized by kernel key in ``memo``."""
    from .cost import modeled_time
    from .hand import hand_schedule
    memo = {} if memo is None else memo
    total = 0.0
    for s in steps:
        key = (s.kernel.key, schedules)
        if key not in memo:
            if s.kernel.kind == "attention":   # its own family's model (no loop-nest schedule)
                from .families.attention import FAMILY as att
                memo[key] = att.solve(s.kernel, machine, 10.0, top=1).candidates[0].modeled_s
            elif schedules == "z3":
                from . import z3opt
                memo[key] = z3opt.solve(s.kernel, machine, top_k=1, timeout_s=10.0).candidates[0].modeled_s
            elif schedules == "hand":
                memo[key] = modeled_time(s.kernel, hand_schedule(s.kernel, machine), machine)
            else:
                raise ValueError(f"schedules must be 'hand' or 'z3', not {schedules!r}")
        total += memo[key]
    return total


def _better(a: Cost, b: Cost) -> bool:
    """Faster, or as fast with less memory alive at once."""
    return a.time_s < b.time_s * (1 - 1e-9) or (a.time_s <= b.time_s * (1 + 1e-12) and a.peak_bytes < b.peak_bytes)


def _improve(root: Node, machine, start: tuple, peak_limit: int | None, deadline: float) -> tuple:
    """Flip one node at a time (store <-> recompute) while the evaluated time drops (first
    the excess over the peak limit, if any): a quick start for the solver on graphs it
    cannot close in the time given."""
    def excess(c: Cost) -> int: return max(0, c.peak_bytes - peak_limit) if peak_limit is not None else 0
    best, improved = start, True
    cand = candidates(root)
    while improved and _time.perf_counter() < deadline:
        improved = False
        for n in cand:
            if _time.perf_counter() >= deadline: break
            p = best[1] ^ {n}
            try:
                steps = kz.kernelize(root, plan=p)
            except ValueError:
                continue   # e.g. a reduction that cannot be an epilogue there
            if not _runnable(steps, machine): continue
            c = cost_of(steps, machine)
            if excess(c) < excess(best[0]) or (excess(c) == excess(best[0]) and _better(c, best[0])):
                best, improved = (c, p, steps, "local"), True
    return best


@contextmanager
def planned(machine, **kw) -> Iterator[dict[Node, Plan]]:
    """Inside the block, every root the lazy front end realizes is kernelized through its
    plan; yields the plans made, by root."""
    made: dict[Node, Plan] = {}

    def planner(r: Node) -> frozenset[Node]:
        if r not in made: made[r] = plan(r, machine, **kw)
        return made[r].materialize

    with context.use(planner=planner):
        yield made


def kernel_nodes(root: Node, materialize: frozenset[Node]) -> list[tuple[Node, list[Node]]]:
    """Per kernel of ``kernelize(root, plan=materialize)`` (same order): the node it writes
    and the elementwise/reduce nodes it computes (recomputed ones appear in several)."""
    base = kz.output_node(root)
    written = [n for n in toposort(base) if n in materialize or n is base]
    done, out = set(written), []
    for k in written:
        seen, stack, ops = set(), [k], []
        while stack:
            x = stack.pop()
            if x in seen or x.op is Ops.BUFFER or (x in done and x is not k): continue
            seen.add(x)
            if x.op in ALU or x.op is Ops.REDUCE: ops.append(x)
            stack.extend(x.src)
        out.append((k, ops))
    return out


def describe_ops(nodes: Sequence[Node]) -> str:
    """'REDUCE(sum) MUL×3 EXP2' — the ops of a kernel, most frequent first."""
    from collections import Counter
    c = Counter(f"REDUCE({n.arg[0]})" if n.op is Ops.REDUCE else n.op.name for n in nodes)
    return " ".join(f"{k}×{v}" if v > 1 else k for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
