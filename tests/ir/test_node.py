"""Node: hash-consing, pickling, and index simplification — simplified expressions equal
the unsimplified formula at every point of their variables' ranges, and range analysis
bounds them."""
from __future__ import annotations

import itertools
import pickle

from hypothesis import given, settings, strategies as st

from superopt.ir import dtypes as dt
from superopt.ir.node import Node, Ops, TRUE, and_, const, lt, render, var

SIZES = (3, 4, 6)  # variable i ranges over [0, SIZES[i])
VARS = [var(i, s) for i, s in enumerate(SIZES)]


def _expr():
    """Random index expressions as nested tuples: ('v', i) | ('c', k) | (op, a, b|k)."""
    leaf = st.one_of(st.tuples(st.just("v"), st.integers(0, len(SIZES) - 1)), st.tuples(st.just("c"), st.integers(-5, 20)))
    return st.recursive(leaf, lambda e: st.one_of(
        st.tuples(st.just("add"), e, e),
        st.tuples(st.just("mulc"), e, st.integers(-3, 6)),
        st.tuples(st.just("mul"), e, e),
        st.tuples(st.just("div"), e, st.integers(1, 9)),
        st.tuples(st.just("mod"), e, st.integers(1, 9))), max_leaves=8)


def _py(e, env) -> int:
    """The unsimplified formula, with Python's floor division and modulo."""
    tag = e[0]
    if tag == "v": return env[e[1]]
    if tag == "c": return e[1]
    a = _py(e[1], env)
    if tag == "add": return a + _py(e[2], env)
    if tag == "mulc": return a * e[2]
    if tag == "mul": return a * _py(e[2], env)
    if tag == "div": return a // e[2]
    return a % e[2]


def _node(e) -> Node:
    """The same formula built with the simplifying constructors."""
    tag = e[0]
    if tag == "v": return VARS[e[1]]
    if tag == "c": return const(e[1], dt.int32)
    a = _node(e[1])
    if tag == "add": return a + _node(e[2])
    if tag in ("mulc",): return a * e[2]
    if tag == "mul": return a * _node(e[2])
    if tag == "div": return a // e[2]
    return a % e[2]


def _eval(n: Node, env) -> int:
    """Evaluate a simplified node (floor semantics, like the reference interpreter)."""
    if n.op is Ops.CONST: return n.arg
    if n.op is Ops.VAR: return env[n.arg[0]]
    v = [_eval(s, env) for s in n.src]
    return {Ops.ADD: lambda: v[0] + v[1], Ops.MUL: lambda: v[0] * v[1], Ops.IDIV: lambda: v[0] // v[1],
            Ops.MOD: lambda: v[0] % v[1], Ops.CMPLT: lambda: v[0] < v[1], Ops.AND: lambda: v[0] and v[1],
            Ops.CMPNE: lambda: v[0] != v[1], Ops.CMPEQ: lambda: v[0] == v[1], Ops.MAX: lambda: max(v),
            Ops.NEG: lambda: -v[0], Ops.WHERE: lambda: v[1] if v[0] else v[2]}[n.op]()


def _points():
    return [dict(enumerate(p)) for p in itertools.product(*(range(s) for s in SIZES))]


@settings(max_examples=300, deadline=None)
@given(_expr())
def test_simplified_index_equals_formula_and_is_in_range(e):
    n = _node(e)
    for env in _points():
        got = _eval(n, env)
        assert got == _py(e, env), f"{render(n)} at {env}"
        assert n.vmin <= got <= n.vmax, f"{render(n)} = {got} outside [{n.vmin}, {n.vmax}]"


@settings(max_examples=200, deadline=None)
@given(_expr(), _expr())
def test_comparison_and_conjunction_simplify_soundly(a, b):
    na, nb = _node(a), _node(b)
    c = lt(na, nb)
    both = and_(c, lt(nb, na + 3))
    for env in _points():
        x, y = _py(a, env), _py(b, env)
        assert bool(_eval(c, env)) == (x < y)
        assert bool(_eval(both, env)) == (x < y < x + 3)


def test_known_simplifications():
    i, j = var(0, 4), var(1, 8)
    assert (i * 8 + j) // 8 is i
    assert (i * 8 + j) % 8 is j
    assert ((i * 8 + j) // 2) // 4 is i
    assert (i + 3) - 3 is i
    assert lt(i, 4) is TRUE
    assert (j * 4 + 2) % 2 == const(0, dt.int32)


def test_hash_consing_and_pickle_identity():
    i = var(0, 16)
    a = Node(Ops.ADD, dt.int32, (i, const(1, dt.int32)))
    b = Node(Ops.ADD, dt.int32, (var(0, 16), const(1, dt.int32)))
    assert a is b and hash(a) == hash(b)
    assert pickle.loads(pickle.dumps(a)) is a
    assert a.key == b.key and a.key != Node(Ops.ADD, dt.int32, (i, const(2, dt.int32))).key


def test_nodes_are_immutable():
    n = var(0, 4)
    try:
        n.arg = (1, 4)
    except AttributeError:
        return
    raise AssertionError("a Node attribute could be assigned")
