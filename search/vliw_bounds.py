"""A lower bound on the packets of a block from slot capacity over time, for the packer of
``search/vliw.py``: the first ``t`` packets can only hold instructions whose dependences let
them issue that early, so what does not fit there needs the packets after. Solvers prove such
counting bounds slowly (a pigeonhole argument: e.g. two extended adds fill packet 0, loads
alone fill slots 0/1 of the next two, the rest cannot squeeze into the 5 left); a max flow
over (slot, packet range) proves them at once.

Plain data in: each slot demand as (slots that can serve it, earliest packet it may use).
Read the packets from the end with "earliest" = packets that must follow, and the same
bound holds for the block's last packets.
"""
from __future__ import annotations

from collections import deque
from typing import Sequence

Demand = tuple[tuple[int, ...], int]   # serving slots, release (first usable packet)


def prefix_capacity(demands: Sequence[Demand], t: int, slots: int) -> int:
    """The most demands the first ``t`` packets can serve (each packet's slot once, each
    demand once, none before its release): a max flow; packets with the same released
    demands are one node per slot with their count as capacity (exact: a slot's demands
    split over those packets one each)."""
    rel = sorted({r for _, r in demands if r < t} | {0}) + [t]
    kinds: dict[Demand, int] = {}
    for d in demands:
        if d[1] < t: kinds[d] = kinds.get(d, 0) + 1
    blocks = [(rel[k], rel[k + 1]) for k in range(len(rel) - 1) if rel[k] < rel[k + 1]]
    # nodes: 0 source, kinds, (block, slot), sink
    kind_list = list(kinds)
    nk = len(kind_list)
    slot_node = {(b, s): 1 + nk + b * slots + s for b in range(len(blocks)) for s in range(slots)}
    sink = 1 + nk + len(blocks) * slots
    cap: dict[int, dict[int, int]] = {v: {} for v in range(sink + 1)}

    def edge(a: int, b: int, c: int) -> None:
        cap[a][b] = cap[a].get(b, 0) + c
        cap[b].setdefault(a, 0)
    for k, (sl, r) in enumerate(kind_list):
        edge(0, 1 + k, kinds[(sl, r)])
        for b, (start, end) in enumerate(blocks):
            if end > r:
                for s in sl: edge(1 + k, slot_node[(b, s)], 1 << 30)
    for (b, s), v in slot_node.items(): edge(v, sink, blocks[b][1] - blocks[b][0])
    return _max_flow(cap, 0, sink)


def _max_flow(cap: dict[int, dict[int, int]], src: int, sink: int) -> int:
    """Edmonds-Karp on a residual capacity map (modified in place)."""
    flow = 0
    while True:
        prev = {src: src}
        q = deque([src])
        while q and sink not in prev:
            a = q.popleft()
            for b, c in cap[a].items():
                if c > 0 and b not in prev: prev[b] = a; q.append(b)
        if sink not in prev: return flow
        path, v = [], sink
        while v != src: path.append((prev[v], v)); v = prev[v]
        push = min(cap[a][b] for a, b in path)
        for a, b in path:
            cap[a][b] -= push
            cap[b][a] += push
        flow += push


def packets_needed(demands: Sequence[Demand], slots: int, start: int, limit: int) -> int:
    """The fewest packets p >= ``start`` with every prefix t <= p able to leave the rest to
    the packets after it: total - capacity(t) <= slots * (p - t). ``limit``: give up there
    (returns ``start``)."""
    total = len(demands)
    caps: list[int] = [0]
    for p in range(max(start, 1), limit + 1):
        while len(caps) <= p: caps.append(prefix_capacity(demands, len(caps), slots))
        if all(total - caps[t] <= slots * (p - t) for t in range(1, p + 1)): return p
    return start
