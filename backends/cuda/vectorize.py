"""Which scalar loads of an unrolled block become one vector load: the one rule shared by
the CUDA renderer (which emits the vector loads) and the emulator (which counts them as
the single warp instructions the GPU executes)."""
from __future__ import annotations

from ...ir import dtype as dt
from ...ir.node import Node, Ops, const, toposort
from ...ir.program import Assign, Store


def split_const(n: Node) -> tuple[Node, int]:
    """``base + c`` with ``c`` a constant (0 when there is none)."""
    if n.op is Ops.ADD:
        if n.src[1].op is Ops.CONST: return n.src[0], int(n.src[1].arg)
        if n.src[0].op is Ops.CONST: return n.src[1], int(n.src[0].arg)
    if n.op is Ops.CONST: return const(0, dt.int32), int(n.arg)
    return n, 0


def divisible(n: Node, k: int) -> bool:
    """Whether integer expression ``n`` is always a multiple of ``k`` (conservative)."""
    if k == 1: return True
    if n.op is Ops.CONST: return int(n.arg) % k == 0
    if n.op is Ops.ADD: return divisible(n.src[0], k) and divisible(n.src[1], k)
    if n.op is Ops.MUL:
        a, b = n.src
        return any(x.op is Ops.CONST and int(x.arg) % k == 0 for x in (a, b)) or divisible(a, k) or divisible(b, k)
    if n.op is Ops.MOD and n.src[1].op is Ops.CONST: return int(n.src[1].arg) % k == 0 and divisible(n.src[0], k)
    return False


def block_loads(stmts) -> list[Node]:
    """The input loads (not reading registers or shared memory) in the top-level
    ``Assign``/``Store`` statements of a block, each once, in order."""
    seen: dict[Node, None] = {}
    for st in stmts:
        if not isinstance(st, (Assign, Store)): continue
        for root in ((st.index, st.value) if isinstance(st, Assign) else (st.index, st.value, st.valid)):
            for ld in toposort(root):
                if ld.op is Ops.LOAD and not any(x.op in (Ops.REG, Ops.SHARED) for x in toposort(ld)): seen[ld] = None
    return list(seen)


def merged_loads(stmts, inputs, skip=lambda ld: False) -> list[tuple[int, Node, int, Node, list[Node]]]:
    """In the top-level ``Assign``/``Store`` statements of an unrolled block, the groups of
    loads of one input at ``base + c0 .. base + c0 + w - 1`` (one mask, ``base`` a multiple
    of ``w``, ``w`` elements = 16, 8 or 4 bytes) that read as one vector load:
    ``(input slot, base, c0, valid, loads in order)``. Loads reading registers or shared
    memory, and those ``skip`` rejects, stay scalar."""
    groups: dict[tuple, dict[int, Node]] = {}
    for ld in block_loads(stmts):
        if skip(ld): continue
        base, c = split_const(ld.src[0])
        groups.setdefault((ld.arg, base, ld.src[1]), {})[c] = ld
    out = []
    for (slot, base, valid), by_off in groups.items():
        size = inputs[slot].dtype.itemsize
        done: set[int] = set()
        for c0 in sorted(by_off):
            if c0 in done: continue
            for w in (16 // size, 8 // size, 4 // size):
                if w < 2 or c0 % w or not divisible(base, w) or not all(c0 + i in by_off for i in range(w)): continue
                out.append((slot, base, c0, valid, [by_off[c0 + i] for i in range(w)]))
                done.update(range(c0, c0 + w))
                break
    return out


def shared_runs(stmts, shared_dt) -> dict[int, int]:
    """Runs of consecutive ``Assign`` statements each reading one element of a shared buffer
    at ``base + c0 .. base + c0 + w - 1`` (``base`` a multiple of ``w``, ``c0`` too, ``w``
    elements = 16 or 8 bytes): nvcc merges them into one vector shared load (the staged
    SIMT GEMM's fragment reads, ir/lower_staged.py), so the emulator counts them as one.
    ``{index of the first statement: w}``."""
    parts = []
    for st in stmts:
        v = st.value if isinstance(st, Assign) else None
        parts.append((v.arg, *split_const(v.src[0])) if v is not None and v.op is Ops.SHARED else None)
    return _runs(parts, lambda name: (16 // shared_dt[name].itemsize, 8 // shared_dt[name].itemsize))


def store_runs(stmts, out_dtype: dt.DType) -> dict[int, int]:
    """Runs of consecutive ``Store`` statements writing ``base + c0 .. base + c0 + w - 1``
    (one mask, ``base`` and ``c0`` multiples of ``w``, ``w`` elements = 4, 8 or 16 bytes):
    the CUDA renderer writes each run as one vector store (a tensor-core epilogue's pairs
    of adjacent columns), the emulator counts it as one. ``{index of the first: w}``."""
    parts = [(st.valid, *split_const(st.index)) if isinstance(st, Store) else None for st in stmts]
    size = out_dtype.itemsize
    return _runs(parts, lambda valid: (16 // size, 8 // size, 4 // size))


def _runs(parts: list, widths) -> dict[int, int]:
    """Runs of consecutive accesses ``(key, base, c0)`` to ``base + c0 .. base + c0 + w - 1``
    under one ``key`` (buffer or mask), ``base`` and ``c0`` multiples of ``w``: the first
    ``w`` of ``widths(key)`` that fits. ``{index of the first: w}``."""
    out, i = {}, 0
    while i < len(parts):
        if parts[i] is not None:
            key, base, c0 = parts[i]
            for w in widths(key):
                if w < 2 or c0 % w or not divisible(base, w) or i + w > len(parts): continue
                if all(parts[i + e] == (key, base, c0 + e) for e in range(w)):
                    out[i] = w
                    break
        i += out.get(i, 1)
    return out
