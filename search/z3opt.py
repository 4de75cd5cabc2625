"""The Z3 schedule solver.

Decision variables are one-hot booleans: one split option per axis (from
``search.space``), a vector width, a worker count, a loop order. The cost model of ``search.cost`` is
evaluated with ``Z3Ops`` over finite-choice values: a ``Sym`` is either a finite map
value -> condition over the booleans (products, ceilings, maxima of such maps stay
exact tables), or a linear Z3 real term. A product of a term and a choice becomes a
fresh real constrained case by case (``cond -> y == v * term``), so the whole model is
linear real arithmetic over boolean cases: exact, and fast for Z3.

``z3.Optimize`` minimizes the modeled time T exactly (a sat answer proves the optimum
under the model; measured faster here than bisection on T with a plain ``Solver``).
What makes it fast is an upper bound: a model-guided descent (``seeds``) from random
legal schedules gives T <= its best, which prunes most of the space (a 64x32x32 GEMM:
0.2 s with the bound, no answer in 450 s without). Top-k: block each solution and
optimize again, incrementally, within ``RUNNER_UP_SPAN`` of the optimum. Time limits are
enforced by interrupting the solve's own Z3 context; on timeout the best model so far,
else the descent's best, is returned (``fallback`` says which).

Spaces of up to ``exhaustive.LIMIT`` schedules (every suite kernel's) are solved by
modeling every schedule at once with numpy (``search.exhaustive``): the same model, the
same optimum, a proof by enumeration, in tens of milliseconds where Z3's proof takes
seconds. ``solve(method="z3")`` forces the Z3 solve; ``SolveResult.method`` says which ran.
"""
from __future__ import annotations

import math
import threading
import time as _time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import z3

from ..ir.kernel import Kernel
from ..ir.schedule import Level, Schedule, check, vector_axis
from . import cost, exhaustive
from .space import Space, build, tile_limits, vector_fits

CHOICE_LIMITS = (256, 1024, 4096)  # combined table rows before a choice becomes a real term: tried in turn
RUNNER_UP_SPAN = 2.0  # top-k alternatives are sought within this factor of the optimum


class NonlinearError(ValueError):
    """The model multiplied two solver terms; it must keep one side a finite choice."""


def _q(v: float, ctx: z3.Context | None = None) -> z3.ArithRef:
    f = Fraction(v)
    return z3.RealVal(f"{f.numerator}/{f.denominator}", ctx)


class Model:
    """Side constraints and fresh variables of one symbolic evaluation, in its own Z3
    context (so one solve can be interrupted without touching others). ``prefix`` starts the
    names of its variables: two models may share a context (search/joint.py). ``deadline``
    (monotonic seconds): building past it raises TimeoutError (a large loop nest's model takes
    seconds to build, longer than a tight tuning budget leaves)."""
    def __init__(self, ctx: z3.Context | None = None, limit: int = CHOICE_LIMITS[0], prefix: str = "",
                 deadline: float = math.inf) -> None:
        self.ctx = ctx or z3.Context()
        self.limit = limit
        self.prefix = prefix
        self.deadline = deadline
        self.side: list[z3.BoolRef] = []
        self.n = 0

    def q(self, v: float) -> z3.ArithRef: return _q(v, self.ctx)
    def true(self) -> z3.BoolRef: return z3.BoolVal(True, self.ctx)

    def name(self, cond: z3.BoolRef) -> z3.BoolRef:
        """A boolean standing for ``cond`` (keeps combined tables' conditions small)."""
        if z3.is_true(cond) or z3.is_false(cond) or z3.is_const(cond): return cond
        self.n += 1
        b = z3.Bool(f"{self.prefix}c{self.n}", self.ctx)
        self.side.append(b == cond)
        return b

    def fresh(self, lo: float, hi: float) -> z3.ArithRef:
        self.n += 1
        r = z3.Real(f"{self.prefix}t{self.n}", self.ctx)
        slack = 1e-9 * max(abs(lo), abs(hi))   # the bounds are float products; the terms exact rationals
        self.side += [r >= self.q(lo - slack), r <= self.q(hi + slack)]
        return r


@dataclass(eq=False)
class Sym:
    """A finite choice (``table``: value -> condition) or a linear term with bounds."""
    m: Model
    table: dict[float, z3.BoolRef] | None = None
    term: z3.ArithRef | None = None
    lo: float = 0.0
    hi: float = 0.0
    _real: z3.ArithRef | None = field(default=None, repr=False)

    @staticmethod
    def choice(m: Model, pairs) -> "Sym":
        if _time.monotonic() > m.deadline: raise TimeoutError("the z3 model was not built before the deadline")
        t: dict[float, list] = {}
        for v, c in pairs: t.setdefault(float(v), []).append(c)
        table = {v: m.name(cs[0] if len(cs) == 1 else z3.Or(*cs)) for v, cs in t.items()}
        return Sym(m, table=table, lo=min(table), hi=max(table))

    def real(self) -> z3.ArithRef:
        """This value as a linear term (a fresh real fixed case by case)."""
        if self.term is not None: return self.term
        if self._real is None:
            if len(self.table) == 1: self._real = self.m.q(next(iter(self.table)))
            else:
                r = self.m.fresh(self.lo, self.hi)
                self.m.side += [z3.Implies(c, r == self.m.q(v)) for v, c in self.table.items()]
                self._real = r
        return self._real

    # ---- combination ------------------------------------------------------------
    def _lift(self, o) -> "Sym":
        return o if isinstance(o, Sym) else Sym(self.m, table={float(o): self.m.true()}, lo=float(o), hi=float(o))

    def _combine(self, o, fn: Callable[[float, float], float], linear: Callable | None, name: str) -> "Sym":
        o = self._lift(o)
        a, b = self, o
        if a.table is not None and b.table is not None and len(a.table) * len(b.table) <= self.m.limit:
            pairs = [(fn(va, vb), _and(ca, cb)) for va, ca in a.table.items() for vb, cb in b.table.items()]
            return Sym.choice(self.m, pairs)
        if name == "mul" or name == "div":
            return _scale(a, b, fn, name)
        if linear is None: raise NonlinearError(f"{name} of two solver terms")
        lo, hi = _bounds(fn, a, b)
        return Sym(self.m, term=linear(a.real(), b.real()), lo=lo, hi=hi)

    def __add__(self, o): return self._combine(o, lambda x, y: x + y, lambda x, y: x + y, "add")
    def __radd__(self, o): return self._lift(o)._combine(self, lambda x, y: x + y, lambda x, y: x + y, "add")
    def __sub__(self, o): return self._combine(o, lambda x, y: x - y, lambda x, y: x - y, "sub")
    def __rsub__(self, o): return self._lift(o)._combine(self, lambda x, y: x - y, lambda x, y: x - y, "sub")
    def __mul__(self, o): return self._combine(o, lambda x, y: x * y, None, "mul")
    def __rmul__(self, o): return self._lift(o)._combine(self, lambda x, y: x * y, None, "mul")
    def __truediv__(self, o): return self._combine(o, lambda x, y: x / y, None, "div")
    def __rtruediv__(self, o): return self._lift(o)._combine(self, lambda x, y: x / y, None, "div")

    def map(self, fn: Callable[[float], float], name: str) -> "Sym":
        if self.table is None: raise NonlinearError(f"{name} of a solver term")
        return Sym.choice(self.m, [(fn(v), c) for v, c in self.table.items()])

    def le(self, c: float) -> z3.BoolRef:
        if self.table is not None:
            return _or([cond for v, cond in self.table.items() if v <= c], self.m.ctx)
        return self.term <= self.m.q(c)


def _and(a, b):
    if z3.is_true(a): return b
    if z3.is_true(b): return a
    return z3.And(a, b)


def _or(cs, ctx: z3.Context):
    return z3.BoolVal(False, ctx) if not cs else cs[0] if len(cs) == 1 else z3.Or(*cs)


def _bounds(fn, a: Sym, b: Sym) -> tuple[float, float]:
    vals = [fn(x, y) for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
    return min(vals), max(vals)


def _scale(a: Sym, b: Sym, fn, name: str) -> Sym:
    """Product/quotient where at least one side must stay (or be made) a finite choice."""
    if name == "div":
        if b.table is None: raise NonlinearError("division by a solver term")
        b = b.map(lambda v: 1.0 / v, "recip")
        fn = lambda x, y: x * y  # noqa: E731
    if a.table is not None and b.table is not None:  # both tables, too many rows: make the larger a term
        if len(a.table) > len(b.table): a = Sym(a.m, term=a.real(), lo=a.lo, hi=a.hi)
        else: b = Sym(b.m, term=b.real(), lo=b.lo, hi=b.hi)
    if a.table is None and b.table is None: raise NonlinearError(f"{name} of two solver terms")
    term, tab = (a, b) if b.table is not None else (b, a)
    lo, hi = _bounds(fn, term, tab)
    if len(tab.table) == 1:
        v = next(iter(tab.table))
        return Sym(a.m, term=term.real() * a.m.q(v), lo=lo, hi=hi)
    y = a.m.fresh(lo, hi)
    a.m.side += [z3.Implies(c, y == term.real() * a.m.q(v)) for v, c in tab.table.items()]
    return Sym(a.m, term=y, lo=lo, hi=hi)


class Z3Ops:
    """The arithmetic backend of ``search.cost`` for Syms (and plain numbers)."""
    def __init__(self, m: Model): self.m = m

    def _ext(self, a, b, pick_a_if_ge: bool) -> Any:
        if not isinstance(a, Sym) and not isinstance(b, Sym):
            return (a if a >= b else b) if pick_a_if_ge else (a if a <= b else b)
        a = a if isinstance(a, Sym) else Sym(self.m)._lift(a)
        b = b if isinstance(b, Sym) else Sym(self.m)._lift(b)
        fn = (lambda x, y: x if x >= y else y) if pick_a_if_ge else (lambda x, y: x if x <= y else y)
        if a.table is not None and b.table is not None and len(a.table) * len(b.table) <= self.m.limit:
            return a._combine(b, fn, None, "max")
        if pick_a_if_ge and a.lo >= b.hi or not pick_a_if_ge and a.hi <= b.lo: return a
        if pick_a_if_ge and b.lo >= a.hi or not pick_a_if_ge and b.hi <= a.lo: return b
        ra, rb = a.real(), b.real()
        lo, hi = _bounds(fn, a, b)
        r = self.m.fresh(lo, hi)
        if pick_a_if_ge: self.m.side += [r >= ra, r >= rb, z3.Or(r == ra, r == rb)]
        else: self.m.side += [r <= ra, r <= rb, z3.Or(r == ra, r == rb)]
        return Sym(self.m, term=r, lo=lo, hi=hi)

    def max(self, a, b): return self._ext(a, b, True)
    def min(self, a, b): return self._ext(a, b, False)

    def ceil(self, a): return self._round(a, cost.NUMERIC.ceil)
    def floor(self, a): return self._round(a, cost.NUMERIC.floor)

    def _round(self, a, fn) -> Any:
        """Tables round row by row; a term gets an integer k with k-1 < a <= k (ceil)
        or k <= a < k+1 (floor), matching ``cost.Numeric``'s 1e-9 slack."""
        if not isinstance(a, Sym): return fn(a)
        if a.table is not None: return a.map(fn, "round")
        self.m.n += 1
        k = z3.Int(f"{self.m.prefix}k{self.m.n}", self.m.ctx)
        r, eps = a.real(), self.m.q(1e-9)
        if fn is cost.NUMERIC.ceil: self.m.side += [z3.ToReal(k) >= r - eps, z3.ToReal(k) < r - eps + 1]
        else: self.m.side += [z3.ToReal(k) <= r + eps, z3.ToReal(k) > r + eps - 1]
        return Sym(self.m, term=z3.ToReal(k), lo=fn(a.lo), hi=fn(a.hi))
    def log2(self, a): return a.map(math.log2, "log2") if isinstance(a, Sym) else math.log2(a)

    def cases(self, choice, fn):
        """``fn`` of a discrete choice: ``choice`` is an option, or a dict option -> the
        boolean selecting it; the value of the selected option's case."""
        if not isinstance(choice, dict): return fn(choice)
        vals = [(c, self._sym(fn(o))) for o, c in choice.items()]
        if len(vals) == 1: return vals[0][1]
        if all(v.table is not None for _, v in vals) and sum(len(v.table) for _, v in vals) <= self.m.limit:
            return Sym.choice(self.m, [(val, _and(c, cv)) for c, v in vals for val, cv in v.table.items()])
        r = self.m.fresh(min(v.lo for _, v in vals), max(v.hi for _, v in vals))
        self.m.side += [z3.Implies(c, r == v.real()) for c, v in vals]
        return Sym(self.m, term=r, lo=min(v.lo for _, v in vals), hi=max(v.hi for _, v in vals))

    def _sym(self, v) -> Sym: return v if isinstance(v, Sym) else Sym(self.m)._lift(v)

    def select_le(self, x, c, a, b):
        if not isinstance(x, Sym): return a if x <= c else b
        cond = x.le(c)
        a = a if isinstance(a, Sym) else Sym(self.m)._lift(a)
        b = b if isinstance(b, Sym) else Sym(self.m)._lift(b)
        if a.table is not None and b.table is not None:
            return Sym.choice(self.m, [(v, _and(cond, ca)) for v, ca in a.table.items()] +
                              [(v, _and(z3.Not(cond), cb)) for v, cb in b.table.items()])
        return Sym(self.m, term=z3.If(cond, a.real(), b.real()), lo=min(a.lo, b.lo), hi=max(a.hi, b.hi))


# ---- the formulation ---------------------------------------------------------------------
@dataclass
class Formulation:
    space: Space
    model: Model
    axis_sel: list[list[z3.BoolRef]]
    vec_sel: dict[int, z3.BoolRef]
    work_sel: dict[int, z3.BoolRef]
    T: Sym
    constraints: list[z3.BoolRef]
    order_sel: dict[tuple[int, ...], z3.BoolRef] = field(default_factory=dict)

    def decisions(self) -> list[z3.BoolRef]:
        return [b for bs in self.axis_sel for b in bs] + list(self.vec_sel.values()) + list(self.work_sel.values()) + \
            list(self.order_sel.values())

    def fix(self, s: Schedule) -> list[z3.BoolRef]:
        """Constraints pinning the decision variables to schedule ``s`` (which must be in the space)."""
        idx = self.space.index_of(s)
        if idx is None: raise ValueError("schedule is not in the space")
        out = [b if i == j else z3.Not(b) for bs, j in zip(self.axis_sel, idx) for i, b in enumerate(bs)]
        out += [b if v == s.vector else z3.Not(b) for v, b in self.vec_sel.items()]
        out += [b if w == s.workers else z3.Not(b) for w, b in self.work_sel.items()]
        out += [b if o == s.order else z3.Not(b) for o, b in self.order_sel.items()]
        return out

    def schedule_of(self, mdl: z3.ModelRef) -> Schedule:
        pick = lambda bs: next(i for i, b in enumerate(bs) if z3.is_true(mdl.eval(b, model_completion=True)))  # noqa: E731
        choice = [pick(bs) for bs in self.axis_sel]
        v = next(v for v, b in self.vec_sel.items() if z3.is_true(mdl.eval(b, model_completion=True)))
        w = next(w for w, b in self.work_sel.items() if z3.is_true(mdl.eval(b, model_completion=True)))
        o = next((o for o, b in self.order_sel.items() if z3.is_true(mdl.eval(b, model_completion=True))), ())
        return self.space.schedule(choice, v, w, o)

    def value(self, mdl: z3.ModelRef) -> float:
        r = mdl.eval(self.T.real(), model_completion=True)
        return float(Fraction(r.as_fraction())) if z3.is_rational_value(r) else float(r.as_decimal(20).rstrip("?"))


def _level_choice(m: Model, sp: Space, sel, a: int, level: Level) -> Sym:
    return Sym.choice(m, [(math.prod(p.size for p in opt if p.level is level), b)
                          for opt, b in zip(sp.axis_options[a], sel[a])])


def formulate(kernel: Kernel, machine, sp: Space | None = None, ctx: z3.Context | None = None,
              limit: int | None = None, deadline: float = math.inf) -> Formulation:
    """The Z3 model of ``kernel``'s schedule choice on ``machine``. Without ``limit``,
    the smallest table limit under which the model stays linear. Building past ``deadline``
    raises TimeoutError."""
    if limit is None:
        for lim in CHOICE_LIMITS[:-1]:
            try:
                return formulate(kernel, machine, sp, ctx, lim, deadline)
            except NonlinearError:
                pass
        limit = CHOICE_LIMITS[-1]
    sp = sp or build(kernel, machine)
    m = Model(ctx, limit, deadline=deadline)
    sel = [[z3.Bool(f"a{a}_{i}", m.ctx) for i in range(len(opts))] for a, opts in enumerate(sp.axis_options)]
    vec = {v: z3.Bool(f"vec{v}", m.ctx) for v in sp.vectors}
    wrk = {w: z3.Bool(f"w{w}", m.ctx) for w in sp.workers}
    orders = {o: z3.Bool(f"o{i}", m.ctx) for i, o in enumerate(sp.orders)}
    cons: list[z3.BoolRef] = [_exactly_one(bs) for bs in sel] + [_exactly_one(list(vec.values())),
                                                                  _exactly_one(list(wrk.values())),
                                                                  _exactly_one(list(orders.values()))]
    lv = lambda level: tuple(_level_choice(m, sp, sel, a, level) for a in range(len(sel)))  # noqa: E731
    stride = tuple(Sym.choice(m, [(cost.lane_stride(opt), b) for opt, b in zip(sp.axis_options[a], sel[a])])
                   for a in range(len(sel)))
    x = cost.Vars(lv(Level.GRID), lv(Level.THREAD), lv(Level.LOOP), lv(Level.UPCAST), lv(Level.UNROLL),
                  Sym.choice(m, [(v, b) for v, b in vec.items()]), Sym.choice(m, [(w, b) for w, b in wrk.items()]),
                  orders if len(orders) > 1 else next(iter(orders)), stride)
    cons += _resources(kernel, machine, sp, sel, vec, x, m)
    T = cost.time(Z3Ops(m), cost.facts(kernel), x, machine, cost.params(machine))
    if not isinstance(T, Sym): T = Sym(m)._lift(T)
    T.real()   # a table's real term adds side constraints: before they are collected
    return Formulation(sp, m, sel, vec, wrk, T, cons + m.side, orders)


def _exactly_one(bs: list) -> z3.BoolRef:
    return z3.PbEq([(b, 1) for b in bs], 1) if len(bs) > 1 else bs[0]


def _resources(kernel: Kernel, machine, sp: Space, sel, vec, x: cost.Vars, m: Model) -> list[z3.BoolRef]:
    """Register-tile, unroll and thread limits, and where a vector width may go."""
    n = range(len(sel))
    up = cost._prod(x.upcast[a] for a in n)
    un = cost._prod(x.unroll[a] for a in n)
    th = cost._prod(x.thread[a] for a in n)
    sym = lambda v: v if isinstance(v, Sym) else Sym(m)._lift(v)  # noqa: E731
    out = [sym(v).le(bound) for v, bound in tile_limits(up, un, th, machine)]
    va = vector_axis(kernel)
    for v, b in vec.items():
        if v == 1: continue
        ok = [s for i, s in enumerate(sel[va]) if vector_fits(sp.axis_options[va][i], v, kernel.axes[va].size)]
        out.append(z3.Implies(b, _or(ok, m.ctx)))
    return [c for c in out if not z3.is_true(c)]


# ---- solving --------------------------------------------------------------------------------
@dataclass
class Candidate:
    schedule: Schedule
    modeled_s: float


@dataclass
class SolveResult:
    best: Schedule
    modeled_s: float
    candidates: list[Candidate]       # best first, distinct
    proved_optimal: bool
    solve_s: float
    fallback: str | None = None       # None, or why the result did not come from a finished solve
    method: str = "z3"                # "z3" or "exhaustive" (every schedule of the space modeled)

    def to_dict(self, kernel=None) -> dict:
        return {"schedule": self.best.to_dict(), "modeled_s": self.modeled_s, "proved_optimal": self.proved_optimal,
                "solve_s": self.solve_s, "fallback": self.fallback, "method": self.method,
                "candidates": [{"schedule": c.schedule.to_dict(), "modeled_s": c.modeled_s} for c in self.candidates]}


@dataclass
class _Found:
    schedule: Schedule
    value: float
    assignment: list          # the decision literals true in the model (to block it)
    proved: bool


def _optimum(opt: z3.Optimize, F: Formulation, limit_s: float) -> tuple[_Found | None, bool]:
    """Minimize T for at most ``limit_s``. Returns (found, finished): after an interrupt,
    Z3's best model so far (unproved), when it has one. Everything read from the model
    is read here, with the interrupt disarmed; a late interrupt counts as a timeout."""
    timer = _interrupt(F.model.ctx, limit_s)
    try:
        r = opt.check()
    finally:
        timer.cancel()
    if r == z3.unsat: return None, True
    try:
        mdl = opt.model()
        true = [b for b in F.decisions() if z3.is_true(mdl.eval(b, model_completion=True))]
        return _Found(F.schedule_of(mdl), F.value(mdl), true, r == z3.sat), r == z3.sat
    except (z3.Z3Exception, StopIteration):  # no (complete) model, or cancelled while reading it
        return None, False


def seeds(kernel: Kernel, machine, sp: Space, samples: int = 48, starts: int = 3, rng_seed: int = 0,
          deadline: float = math.inf) -> list[Candidate]:
    """Model-guided descent from random legal schedules (and the hand rules): distinct
    local optima, best first. They bound Z3's search from above (which is what makes
    the optimization fast) and are the answer when Z3 runs out of time."""
    import random
    rnd = random.Random(rng_seed)
    f, p = cost.facts(kernel), cost.params(machine)
    val = lambda s: float(cost.time(cost.NUMERIC, f, cost.vars_of(s), machine, p))  # noqa: E731
    pool = {}
    hand = _hand_schedule(kernel, machine)
    if sp.contains(hand): pool[hand] = val(hand)
    for _ in range(samples):
        s = sp.schedule([rnd.randrange(len(o)) for o in sp.axis_options], rnd.choice(sp.vectors),
                        rnd.choice(sp.workers), rnd.choice(sp.orders))
        if s not in pool and sp.legal(s): pool[s] = val(s)
    found: dict[Schedule, float] = {}
    for s in sorted(pool, key=pool.get)[:starts]:
        t = pool[s]
        while _time.monotonic() < deadline:  # steepest descent over the space's neighbours
            nb = [(val(n), n) for n in sp.neighbors(s)]
            if not nb: break
            tn, n = min(nb, key=lambda x: x[0])
            if tn >= t: break
            s, t = n, tn
        found[s] = t
    return [Candidate(s, t) for s, t in sorted(found.items(), key=lambda x: x[1])]


def solve(kernel: Kernel, machine, top_k: int = 4, timeout_s: float = 10.0,
          space: Space | None = None, method: str = "auto", tensor_core: bool = True) -> SolveResult:
    """Best schedule under the cost model, plus up to ``top_k - 1`` distinct runners-up.

    ``proved_optimal``: no schedule of the space is modeled faster than ``best`` (Z3
    showed it, or every schedule was modeled). On timeout, the best schedule found so
    far (Z3's, the model-guided descent's, or that of the part of the space modeled) is
    returned; when the space is empty, the hand rules' (``fallback`` says why).
    ``method``: "auto" (exhaustive for spaces of up to ``exhaustive.LIMIT``, else Z3),
    "z3" or "exhaustive". ``tensor_core`` False: the loop-nest space alone (no tensor-core
    candidates merged in, the plain hand rule on ties), as the SIMT family asks."""
    t0 = _time.monotonic()
    sp = space or build(kernel, machine)
    if method == "exhaustive" or method == "auto" and sp.size() <= exhaustive.LIMIT:
        return _exhaustive(kernel, machine, sp, top_k, timeout_s, t0, tensor_core)
    if method not in ("auto", "z3"): raise ValueError(f"unknown solve method {method!r}")
    start = seeds(kernel, machine, sp, deadline=t0 + timeout_s / 2)
    try:
        F = formulate(kernel, machine, sp)
    except NonlinearError as e:  # the model is not expressible for this kernel: descent's best
        return _fallback(kernel, machine, start, top_k, t0, f"z3 model not linear for this kernel ({e})", tensor_core)
    ctx = F.model.ctx
    opt = z3.Optimize(ctx=ctx)
    opt.add(*F.constraints)
    T = F.T.real()
    opt.minimize(T)
    opt.push()
    pushed = True
    if start:  # nothing slower than the descent's best can win: a strong upper bound
        opt.add(T <= F.model.q(start[0].modeled_s * (1 + 1e-9)))
    cands: list[Candidate] = []
    proved, fallback = False, None
    limit = lambda: timeout_s - (_time.monotonic() - t0)  # noqa: E731
    while len(cands) < top_k and limit() > 0:
        found, finished = _optimum(opt, F, limit())
        if found is None:
            if not finished and not cands: fallback = "z3 timed out: best schedule of the model-guided descent"
            break
        try:
            if pushed:  # runners-up: anything within RUNNER_UP_SPAN of the optimum, in bounded time
                opt.pop(); pushed = False  # noqa: E702
                opt.add(T <= F.model.q(found.value * RUNNER_UP_SPAN))
                used = _time.monotonic() - t0
                limit = lambda: min(timeout_s, 2 * used + 0.5) - (_time.monotonic() - t0)  # noqa: E731
            opt.add(z3.Not(z3.And(*found.assignment)))
        except z3.Z3Exception:  # a late interrupt: keep what was found
            finished = False
        s = found.schedule
        if not check(kernel, s, machine):  # the legality check is the authority
            if not cands: proved = found.proved
            cands.append(Candidate(s, cost.modeled_time(kernel, s, machine)))
        if not finished: break
    if not cands: return _fallback(kernel, machine, start, top_k, t0, fallback or "z3 found no legal schedule", tensor_core)
    have = {c.schedule for c in cands}
    cands += [c for c in start if c.schedule not in have][:max(0, top_k - len(cands))]
    cands = _ranked(kernel, machine, cands, top_k, tensor_core)
    return SolveResult(cands[0].schedule, cands[0].modeled_s, cands, proved, _time.monotonic() - t0, fallback)


def _exhaustive(kernel: Kernel, machine, sp: Space, top_k: int, timeout_s: float, t0: float,
                tensor_core: bool = True) -> SolveResult:
    """Every schedule of ``sp`` modeled (``search.exhaustive``): exact top-k, a proof when finished."""
    ranked, finished = exhaustive.solve(kernel, machine, sp, top_k, deadline=t0 + timeout_s)
    cands = [Candidate(r.schedule, r.modeled_s) for r in ranked]
    if not cands:
        why = "time limit before any schedule was modeled" if not finished else "no legal schedule in the space"
        r = _fallback(kernel, machine, [], top_k, t0, why, tensor_core)
        r.method = "exhaustive"
        return r
    fallback = None if finished else "time limit: best schedule of the part of the space modeled"
    cands = _ranked(kernel, machine, cands, top_k, tensor_core)
    return SolveResult(cands[0].schedule, cands[0].modeled_s, cands, finished, _time.monotonic() - t0, fallback,
                       "exhaustive")


def _ranked(kernel: Kernel, machine, cands: list[Candidate], top_k: int, tensor_core: bool = True) -> list[Candidate]:
    """A finished solve's candidates with the tensor-core ones, fastest first, hand rules on ties."""
    tc = _tensor_core(kernel, machine, top_k) if tensor_core else []
    return _hand_on_ties(kernel, machine, sorted(cands + tc, key=lambda c: c.modeled_s), top_k, tensor_core)


def _hand_on_ties(kernel: Kernel, machine, cands: list[Candidate], top_k: int, tensor_core: bool = True) -> list[Candidate]:
    """The first ``top_k`` of ``cands`` (sorted), led by the hand rules' schedule where the
    model rates it at least as fast as the best: among schedules the model cannot tell apart
    (every memory-bound one at the DRAM roofline, say) the one a rule picked. On the H100 a
    tied solver pick ran rowsum at 0.62x the hand rules (bench/results/h100-2026-11-23)."""
    if not cands: return cands
    hand = _hand_schedule(kernel, machine, tensor_core)
    if check(kernel, hand, machine): return cands[:top_k]
    t = cost.modeled_time(kernel, hand, machine)
    if t > cands[0].modeled_s * (1 + 1e-9): return cands[:top_k]
    return [Candidate(hand, t)] + [c for c in cands if c.schedule != hand][:top_k - 1]


def _fallback(kernel: Kernel, machine, start: list[Candidate], top_k: int, t0: float, why: str,
              tensor_core: bool = True) -> SolveResult:
    """The descent's schedules, else the hand rules'."""
    tc = _tensor_core(kernel, machine, top_k) if tensor_core else []
    cands = sorted(list(start[:top_k]) + tc, key=lambda c: c.modeled_s)[:top_k]
    if not cands:
        hand = _hand_schedule(kernel, machine, tensor_core)
        cands, why = [Candidate(hand, cost.modeled_time(kernel, hand, machine))], why + "; hand rules"
    return SolveResult(cands[0].schedule, cands[0].modeled_s, cands, False, _time.monotonic() - t0, why)


def _tensor_core(kernel: Kernel, machine, top_k: int) -> list[Candidate]:
    """Tensor-core schedules (GEMM-like 16-bit kernels on GPUs): the exact optimum of their
    own small space under their own model, layouts from the Z3 bank solver (search/tc_space)."""
    if not machine.has("mma.sync"): return []
    from .tc_space import best
    return [Candidate(s, t) for t, s in best(kernel, machine, top_k)]


def _interrupt(ctx: z3.Context, after_s: float) -> threading.Timer:
    """Stop this context's running check after ``after_s`` seconds (Z3's own timeout
    is not reliably honoured by Optimize)."""
    t = threading.Timer(max(0.0, after_s), ctx.interrupt)
    t.daemon = True
    t.start()
    return t


def _hand_schedule(kernel: Kernel, machine, tensor_core: bool = True) -> Schedule:
    """The hand rules' schedule (a plain loop nest when no hand rules are installed;
    ``tensor_core`` False: their loop-nest rule)."""
    try:
        from .hand import plain_schedule, schedule
        s = (schedule if tensor_core else plain_schedule)(kernel, machine)
        if not check(kernel, s, machine): return s
    except ImportError:
        pass
    return Schedule.naive(kernel)
