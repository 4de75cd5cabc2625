"""A greedy list scheduler for the HVX packet model of ``search/vliw.py``: a feasible packing
found in milliseconds, whose packet count is the upper bound the Z3 packer then only has to
beat (one check one packet below it proves it optimal, instead of climbing from the lower
bound through every infeasible count).

It sees the model as plain data so it does not import the packer: per instruction, the slot
demands (each a tuple of the slots that can serve it) and the unit alternatives (each a set
of HVX units taken together); dependences as ``(src, dst, latency, same)`` with ``same`` a
``.new`` read (the consumer sits in its producer's packet). ``fits`` is the one per-packet
resource rule, shared with the packer's feasibility check.
"""
from __future__ import annotations

from functools import lru_cache
from itertools import product
from typing import Iterable, Sequence

Demands = Sequence[tuple[int, ...]]          # slot sets, one per slot the instruction takes
Alternatives = Sequence[tuple[str, ...]]      # unit sets, one of which the instruction takes
Edge = tuple[int, int, int, bool]              # src, dst, latency, same packet


def fits(demands: Iterable[Demands], alts: Iterable[Alternatives], slots: int) -> bool:
    """Can one packet hold these instructions? Slots: Hall's condition over every slot
    subset (the same inequalities the Z3 model states); units: some choice of one
    alternative each uses every unit at most once."""
    return _fits(tuple(sorted(zip(map(tuple, demands), map(tuple, alts)))), slots)


@lru_cache(maxsize=1 << 16)   # a pure function of the packet's instruction kinds, asked again and again
def _fits(kinds: tuple[tuple[Demands, Alternatives], ...], slots: int) -> bool:
    flat = [d for ds, _ in kinds for d in ds]
    for m in range(1, 1 << slots):
        sub = {k for k in range(slots) if m >> k & 1}
        if sum(1 for d in flat if set(d) <= sub) > len(sub): return False
    choices = [a for _, a in kinds if a != ((),)]
    for pick in product(*choices):
        units = [u for a in pick for u in a]
        if len(units) == len(set(units)): return True
    return False


def _groups(n: int, edges: Sequence[Edge]) -> list[list[int]]:
    """Instructions tied into one packet by ``.new`` reads (union-find), in program order."""
    root = list(range(n))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i
    for s, d, _, same in edges:
        if same: root[find(d)] = find(s)
    by: dict[int, list[int]] = {}
    for i in range(n): by.setdefault(find(i), []).append(i)
    return sorted(by.values())


def schedule(demands: Sequence[Demands], alts: Sequence[Alternatives], edges: Sequence[Edge],
             branch: Sequence[bool], slots: int, priority: Sequence[int]) -> list[int] | None:
    """Cycle by cycle, the ready ``.new`` groups of highest ``priority`` that still fit the
    packet; branches then moved into the last packet. None where greedy placement cannot
    meet the model (a latency inside a ``.new`` group, a branch that cannot end the block)."""
    n = len(demands)
    groups = _groups(n, edges)
    gid = {i: g for g, mem in enumerate(groups) for i in mem}
    preds: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for s, d, lat, same in edges:
        if gid[s] == gid[d]:
            if lat > 0 and not same: return None
            continue
        preds[d].append((s, lat))
    order = sorted(range(len(groups)), key=lambda g: (-max(priority[i] for i in groups[g]), groups[g][0]))
    cyc: list[int | None] = [None] * n
    left, c = set(range(len(groups))), 0
    limit = n * (1 + max((e[2] for e in edges), default=0)) + 2
    while left:
        if c > limit: return None
        packet: list[int] = []
        placed = True
        while placed:   # a 0-latency successor may join a packet its producer just entered
            placed = False
            for g in order:
                if g not in left: continue
                mem = groups[g]
                if not all(cyc[s] is not None and cyc[s] + lat <= c for i in mem for s, lat in preds[i]): continue
                trial = packet + mem
                if not fits([demands[i] for i in trial], [alts[i] for i in trial], slots): continue
                for i in mem: cyc[i] = c
                packet, placed = trial, True
                left.discard(g)
        c += 1
    out = [x for x in cyc if x is not None]
    return _branches_last(out, demands, alts, edges, branch, slots)


def _branches_last(cyc: list[int], demands: Sequence[Demands], alts: Sequence[Alternatives],
                   edges: Sequence[Edge], branch: Sequence[bool], slots: int) -> list[int] | None:
    """Branches end the block: each moves to the last packet (one more packet where it
    does not fit there). A branch with a successor is left to the solver."""
    br = [i for i in range(len(cyc)) if branch[i]]
    if not br: return cyc
    if any(s in br for s, _, _, _ in edges): return None
    last = max(c for i, c in enumerate(cyc) if i not in br) if len(br) < len(cyc) else 0
    for target in (last, last + 1):
        others = [i for i in range(len(cyc)) if cyc[i] == target and i not in br]
        trial = others + br
        if all(cyc[s] + lat <= target for s, d, lat, same in edges if d in br) and \
                fits([demands[i] for i in trial], [alts[i] for i in trial], slots):
            return [target if i in br else c for i, c in enumerate(cyc)]
    return None
