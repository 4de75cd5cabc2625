"""One problem over every schedule family of a kernel (issue 24 item 4).

Each family's cost is one formula over its facts in a generic arithmetic (``cost.NUMERIC``
floats, ``exhaustive.VECTOR`` numpy arrays, ``z3opt.Z3Ops`` Z3 terms): the SIMT loop nest's
``cost.time``, ``tc_cost.mma_time``, ``tc_cost.wgmma_time``, ``staged_cost.staged_time``.
Here they meet in one Z3 problem:

- a family whose space is a finite list of schedules is a ``Table``: one row a schedule, the
  facts its formula reads counted per row. A row is chosen by a boolean; each fact becomes a
  Z3 choice over the rows' values and the family's formula is evaluated on those choices
  (``Z3Ops``), so the solver reasons over the formula, not over a list of times. For
  mma.sync the shared-memory layouts are decisions of the problem: every tile has a row per
  layout of A and of B (plain, or the bank-conflict-free one ``search/banks`` solves), the
  rows differing in the wavefronts (``ways_a``, ``ways_b``) the formula prices. A family
  without a formula of its own here (a native template: HVX, the packed CPU GEMM) gives its
  model's time as its one fact;
- the loop-nest families are ``z3opt.formulate``'s model, in the same Z3 context;
- one boolean a family says which runs; T is the chosen family's time, minimized.

``solve`` first ranks every table row with the numpy arithmetic (one pass a family) and the
loop nest with its own solver, then asks Z3 for the joint optimum under that incumbent: an
answer no faster than the incumbent is a proof that nothing in any family's space is modeled
faster (``method`` "z3 joint"); when Z3 runs out of time, the incumbent is returned, proved
only where every family's own solve proved its part ("decomposed").
"""
from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import z3

from ..ir.kernel import Kernel
from ..ir.schedule import Schedule, check

from . import banks, staged_cost, tc_cost, tc_space, z3opt
from .exhaustive import VECTOR

MAX_ROWS = 20_000   # table rows a joint Z3 problem takes (beyond: decomposed)
TIE = 1 + 1e-9


@dataclass
class Table:
    """A family's finite space: rows of schedules with the facts its formula reads."""
    family: str
    rows: list[Schedule]
    facts: list[dict[str, float]]
    time: Callable[[Any, dict, Any], Any]      # (arithmetic, facts, machine) -> seconds

    def times(self, machine) -> np.ndarray:
        """Every row's time in one numpy pass (``VECTOR``)."""
        if not self.rows: return np.zeros(0)
        cols = {k: np.array([f[k] for f in self.facts], dtype=np.float64) for k in self.facts[0]}
        return np.broadcast_to(np.asarray(self.time(VECTOR, cols, machine), dtype=np.float64), (len(self.rows),))


def _mma_table(kernel: Kernel, machine, deadline: float = math.inf) -> Table:
    rows, facts = [], []
    for _, s in tc_space.points(kernel, machine, wgmma=False):
        if _time.monotonic() > deadline: raise TimeoutError("mma table")
        solved = banks.staging(kernel, s, machine.warp)[0]
        for la in {s.staging[0], solved[0]}:
            for lb in {s.staging[1], solved[1]}:
                x = replace(s, staging=(la, lb))
                if check(kernel, x, machine): continue
                rows.append(x)
                facts.append(tc_cost.mma_facts(kernel, x, machine))
    return Table("mma", rows, facts, lambda B, f, m: tc_cost.mma_time(B, f, m))


def _wgmma_table(kernel: Kernel, machine) -> Table:
    rows = [s for _, s in tc_space._wgmma_points(kernel, machine)]
    return Table("wgmma", rows, [tc_cost.wgmma_facts(kernel, s, machine) for s in rows],
                 lambda B, f, m: tc_cost.wgmma_time(B, f, m))


def _staged_table(kernel: Kernel, machine, family) -> Table:
    rows = list(family.space(kernel, machine))
    return Table("staged", rows, [staged_cost.staged_facts(kernel, s, machine) for s in rows],
                 lambda B, f, m: staged_cost.staged_time(B, f, m))


def _listed_table(kernel: Kernel, machine, family) -> Table:
    rows = list(family.space(kernel, machine))
    return Table(family.name, rows, [{"modeled_s": family.cost(kernel, s, machine)} for s in rows],
                 lambda B, f, m: f["modeled_s"])


LOOP_NESTS = ("simt", "loopnest_cpu")


def tables(kernel: Kernel, machine, families, deadline: float = math.inf) -> list[Table]:
    """A table for every family of ``families`` that is not a loop nest (TimeoutError past
    ``deadline``: mma's layouts are solved for every tile)."""
    out = []
    for f in families:
        if f.name in LOOP_NESTS: continue
        if _time.monotonic() > deadline: raise TimeoutError("joint tables")
        if f.name == "mma": out.append(_mma_table(kernel, machine, deadline))
        elif f.name == "wgmma": out.append(_wgmma_table(kernel, machine))
        elif f.name == "staged": out.append(_staged_table(kernel, machine, f))
        else: out.append(_listed_table(kernel, machine, f))
    return [t for t in out if t.rows]


# ---- the Z3 problem ---------------------------------------------------------------------------
@dataclass
class Problem:
    ctx: z3.Context
    constraints: list
    T: z3.ArithRef
    use: dict[str, z3.BoolRef]                  # family -> it runs
    sel: dict[str, list[z3.BoolRef]]            # table family -> its rows' booleans
    tables: dict[str, Table]
    nest: z3opt.Formulation | None = None
    nest_family: str = ""
    terms: dict[str, z3.ArithRef] = field(default_factory=dict)   # family -> its time term

    def pick(self, mdl: z3.ModelRef) -> tuple[str, Schedule]:
        true = lambda b: z3.is_true(mdl.eval(b, model_completion=True))  # noqa: E731
        name = next(n for n, b in self.use.items() if true(b))
        if name == self.nest_family: return name, self.nest.schedule_of(mdl)
        return name, self.tables[name].rows[next(i for i, b in enumerate(self.sel[name]) if true(b))]

    def value(self, mdl: z3.ModelRef, term: z3.ArithRef | None = None) -> float:
        r = mdl.eval(self.T if term is None else term, model_completion=True)
        return float(Fraction(r.as_fraction())) if z3.is_rational_value(r) else float(r.as_decimal(20).rstrip("?"))

    def fix(self, family: str, row: int | None = None, schedule: Schedule | None = None) -> list:
        """Constraints choosing ``family`` and its row (a table) or ``schedule`` (the loop nest)."""
        out = [b if n == family else z3.Not(b) for n, b in self.use.items()]
        if family == self.nest_family: return out + self.nest.fix(schedule)
        return out + [b if i == row else z3.Not(b) for i, b in enumerate(self.sel[family])]


def formulate(kernel: Kernel, machine, tabs: list[Table], nest_family: str = "",
              limit: int = z3opt.CHOICE_LIMITS[0], deadline: float = math.inf) -> Problem:
    """One Z3 problem over ``tabs`` and, with ``nest_family``, the loop-nest model (TimeoutError
    when it is not built by ``deadline``)."""
    ctx = z3.Context()
    cons: list = []
    use, sel, terms = {}, {}, {}
    for i, tab in enumerate(tabs):
        m = z3opt.Model(ctx, limit, prefix=f"f{i}_", deadline=deadline)
        bs = [z3.Bool(f"f{i}_r{r}", ctx) for r in range(len(tab.rows))]
        u = z3.Bool(f"use_{tab.family}", ctx)
        facts = {k: z3opt.Sym.choice(m, [(f[k], b) for f, b in zip(tab.facts, bs)]) for k in tab.facts[0]}
        t = tab.time(z3opt.Z3Ops(m), facts, machine)
        t = t if isinstance(t, z3opt.Sym) else z3opt.Sym(m)._lift(t)
        term = t.real()   # (may add side constraints: read them after)
        cons += [z3.PbEq([(b, 1) for b in bs] + [(z3.Not(u), 1)], 1)] + m.side   # a row iff the family runs
        use[tab.family], sel[tab.family], terms[tab.family] = u, bs, term
    nest = None
    if nest_family:
        nest = z3opt.formulate(kernel, machine, ctx=ctx, limit=limit, deadline=deadline)
        use[nest_family], terms[nest_family] = z3.Bool(f"use_{nest_family}", ctx), nest.T.real()
        cons += nest.constraints
    T = z3.Real("T_joint", ctx)
    cons.append(z3.PbEq([(b, 1) for b in use.values()], 1))
    cons += [z3.Implies(u, T == terms[n]) for n, u in use.items()]
    return Problem(ctx, cons, T, use, sel, {t.family: t for t in tabs}, nest, nest_family, terms)


def formulate_linear(kernel: Kernel, machine, tabs: list[Table], nest_family: str = "",
                     deadline: float = math.inf) -> Problem:
    """``formulate`` under the smallest table limit that keeps the model linear."""
    for lim in z3opt.CHOICE_LIMITS:
        try:
            return formulate(kernel, machine, tabs, nest_family, lim, deadline)
        except z3opt.NonlinearError:
            if lim == z3opt.CHOICE_LIMITS[-1]: raise
    raise AssertionError("unreachable")


# ---- solving ---------------------------------------------------------------------------------
@dataclass
class JointResult:
    family: str
    schedule: Schedule
    modeled_s: float
    proved_optimal: bool
    method: str                 # "z3 joint" | "decomposed"
    solve_s: float
    rows: int                   # table rows in the problem
    note: str = ""

    def to_dict(self) -> dict:
        return {"family": self.family, "modeled_s": self.modeled_s, "proved_optimal": self.proved_optimal,
                "method": self.method, "solve_s": self.solve_s, "rows": self.rows, "note": self.note}


def incumbent(kernel: Kernel, machine, tabs: list[Table], nest: tuple[str, Schedule, float, bool] | None):
    """(family, schedule, time, proved) of the fastest table row (numpy) or the loop nest's best."""
    best = None
    for tab in tabs:
        ts = tab.times(machine)
        i = int(np.argmin(ts))
        if best is None or ts[i] < best[2]: best = (tab.family, tab.rows[i], float(ts[i]), True)
    if nest is not None and (best is None or nest[2] < best[2]): best = nest
    return best


def solve(kernel: Kernel, machine, families, timeout_s: float = 10.0,
          nest: tuple[str, Schedule, float, bool] | None = None) -> JointResult | None:
    """The joint optimum over ``families`` (their loop nest's best given as ``nest``: family,
    schedule, time, proved). None when no family offers a schedule."""
    t0 = _time.monotonic()
    tabs = tables(kernel, machine, families)
    inc = incumbent(kernel, machine, tabs, nest)
    if inc is None: return None
    # every table row is priced: the incumbent is proved where the loop nest's solve proved its part
    out = JointResult(inc[0], inc[1], inc[2], nest is None or nest[3], "decomposed", 0.0, sum(len(t.rows) for t in tabs))
    _z3_check(out, kernel, machine, tabs, nest[0] if nest is not None else "", t0 + timeout_s)
    out.solve_s = _time.monotonic() - t0
    return out


def confirm(kernel: Kernel, machine, families, best: tuple[str, Schedule, float, bool],
            deadline: float) -> JointResult:
    """The engine's check of the families' own best ``best`` (family, schedule, modeled time,
    whether every family proved its part) in the joint problem, until ``deadline``: "z3
    joint" when Z3 shows nothing below it; else "decomposed" (proved if every family's own
    solve proved its space), with a note of why Z3 did not decide."""
    t0 = _time.monotonic()
    out = JointResult(best[0], best[1], best[2], best[3], "decomposed", 0.0, 0)
    try:
        tabs = tables(kernel, machine, families, deadline)
    except TimeoutError:
        out.note = "the tables were not built before the deadline"
    else:
        out.rows = sum(len(t.rows) for t in tabs)
        nest = next((f.name for f in families if f.name in LOOP_NESTS), "")
        _z3_check(out, kernel, machine, tabs, nest, deadline)
    out.solve_s = _time.monotonic() - t0
    return out


def _z3_check(out: JointResult, kernel: Kernel, machine, tabs: list[Table], nest_family: str, deadline: float) -> None:
    """Ask the joint problem for anything below ``out``'s time; record the answer in ``out``."""
    if out.rows > MAX_ROWS:
        out.note = f"{out.rows} table rows > {MAX_ROWS}: no joint Z3 problem"
        return
    try:
        P = formulate_linear(kernel, machine, tabs, nest_family, deadline)
    except z3opt.NonlinearError as e:
        out.note = f"z3 model not linear ({e})"
        return
    except TimeoutError:
        out.note = "the z3 problem was not built before the deadline: the families' best"
        return
    found, finished = _below(P, out.modeled_s, deadline)
    if finished and found is None: out.proved_optimal, out.method = True, "z3 joint"
    elif found is not None:   # below the families' best: one of their solves was not exact
        out.family, out.schedule, out.modeled_s = found
        out.method, out.proved_optimal = "z3 joint", False
        out.note = "z3 found a schedule below the families' best (their solves were not exact)"
    else: out.note = "z3 timed out: the families' best"


def _below(P: Problem, t: float, deadline: float):
    """Is anything modeled faster than ``t``? ((family, schedule, time) | None, finished)."""
    left = deadline - _time.monotonic()
    if left <= 0: return None, False   # (an interrupt sent before the check starts is lost)
    s = z3.Solver(ctx=P.ctx)
    if math.isfinite(left): s.set("timeout", max(1, int(left * 1000)))
    s.add(*P.constraints)
    s.add(P.T < z3opt._q(t / TIE, P.ctx))
    timer = z3opt._interrupt(P.ctx, left) if math.isfinite(left) else None
    try:
        r = s.check()
    finally:
        if timer is not None: timer.cancel()
    if r == z3.unsat: return None, True
    if r != z3.sat: return None, False
    mdl = s.model()
    fam, sched = P.pick(mdl)
    return (fam, sched, P.value(mdl)), True
