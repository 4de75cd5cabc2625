"""Split reductions whose threads share a warp are folded with warp shuffles instead of
shared memory: the pattern, recognized in one place for the CUDA renderer (which emits
the shuffles) and the emulator (which executes and counts them)."""
from __future__ import annotations

from dataclasses import dataclass

from ...ir.node import Node, Ops, toposort
from ...ir.program import Assign, Barrier, If, Loop, Program, Shared, SharedStore, walk
from ...search.machine import NVIDIA_WARP


@dataclass(frozen=True)
class WarpCombine:
    reg: str            # register array holding each thread's partials
    size: int           # its elements (times the program's lanes)
    threads: int        # threads sharing one reduction: adjacent, a power of two <= a warp
    op: Ops             # ADD or MAX
    cond: Node          # the leader test (thread % threads < 1)
    stores: tuple       # what the leader does with the totals
    shared: str         # the shared buffer the shuffles replace
    barrier: bool       # the stores write shared memory: the pattern's closing barrier stays


def match(w: list, p: Program) -> WarpCombine | None:
    """Lowering's combine of partials (``SharedStore`` of every partial, ``Barrier``,
    ``If(thread % tr < 1)`` folding the others' partials then storing, ``Barrier``), when
    the ``tr`` threads of a reduction sit in one warp."""
    if len(w) < 4 or not isinstance(w[1], Barrier) or not isinstance(w[3], Barrier) or not isinstance(w[2], If): return None
    put, cond = w[0], w[2].cond
    if not (isinstance(put, Loop) and len(put.body) == 1 and isinstance(put.body[0], SharedStore)): return None
    st = put.body[0]
    if st.value.op is not Ops.REG or st.value.src[0] is not put.var: return None
    if not (cond.op is Ops.CMPLT and cond.src[1].op is Ops.CONST and cond.src[1].arg == 1): return None
    lead = cond.src[0]
    if lead is p.thread: tr = p.threads   # the whole block shares the reduction (thread % threads simplified away)
    elif lead.op is Ops.MOD and lead.src[0] is p.thread and lead.src[1].op is Ops.CONST: tr = int(lead.src[1].arg)
    else: return None
    if tr > NVIDIA_WARP or tr & (tr - 1) or p.threads % tr: return None
    take = w[2].body[0]
    if not (isinstance(take, Loop) and len(take.body) == 1 and isinstance(take.body[0], Loop)): return None
    inner = take.body[0].body
    if len(inner) != 1 or not isinstance(inner[0], Assign) or inner[0].value.op not in (Ops.ADD, Ops.MAX): return None
    if any(x.op is Ops.SHARED and x.arg != st.name for x in toposort(inner[0].value)): return None
    if any(isinstance(x, (SharedStore, Barrier, Shared)) for x in w[2].body[1:]): return None
    stores = tuple(w[2].body[1:])
    return WarpCombine(st.value.arg, put.size, tr, inner[0].value.op, cond, stores, st.name,
                       any(isinstance(x, SharedStore) for x in walk(stores)))
