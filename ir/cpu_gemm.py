"""The packed CPU GEMM template (schedule family ``cpu_gemm``): geometry and legality.

Fits a kernel ``C[batch, m, n] = sum_k A[batch, m, k] * B[batch, k, n]`` in float32 where
every index is affine in the axes with constant strides (so a transposed operand is just
other strides), the loads are unmasked and the stored value is the sum itself (no
epilogue). At most one batch axis; an operand that does not read it has batch stride 0.
N is the output's contiguous axis where one operand allows it (the micro-kernel stores
rows of C as vectors).

Parameters (``Schedule.params``), checked by ``check``:
- ``MR``, ``NR``: the register tile (NR a multiple of ``V``, the fp32 lanes of the ISA);
  the tile plus one row of B must fit the 32 (AVX-512) or 16 (AVX2) vector registers;
- ``MC``, ``KC``, ``NC``: cache blocks (MC a multiple of MR, NC of NR);
- ``PF``: prefetch distance of packed A in k steps (0: none);
- ``workers``: threads over the MC blocks.
"""
from __future__ import annotations

import functools

from . import dtype as dt
from .node import Node, Ops, axis_stride, const, substitute

AFFINE_OPS = {Ops.ADD, Ops.MUL, Ops.VAR, Ops.CONST}
PARAMS = ("KC", "MC", "MR", "NC", "NR", "PF", "V", "workers")


@functools.lru_cache(maxsize=256)  # every check() of a schedule space asks again
def match(kernel) -> dict[str, int] | str:
    """The geometry (named integers: batch, m, n, k, the operands' input slots and strides),
    or why the kernel is not a plain fp32 GEMM. Callers must not mutate the dict (cached)."""
    red = kernel.reduce
    if red is None or red.arg[0] != "sum": return "not a sum reduction"
    if kernel.body is not red: return "the stored value is not the sum itself (an epilogue)"
    if red.dtype is not dt.float32: return f"accumulates in {red.dtype.name}, not float32"
    if len(kernel.reduce_axes) != 1: return "not exactly one reduce axis"
    (kx,) = kernel.reduce_axes
    x = red.src[0]
    if x.op is not Ops.MUL or any(f.op is not Ops.LOAD for f in x.src): return "the reduced value is not a product of two loads"
    loads = list(x.src)
    if any(ld.dtype is not dt.float32 for ld in loads): return "operands are not both float32"
    if loads[0].arg == loads[1].arg: return "both factors read the same input"
    if any(not (ld.src[1].op is Ops.CONST and ld.src[1].arg is True) for ld in loads): return "a load is masked"
    strides = [_strides(kernel, ld.src[0]) for ld in loads]
    out_st = _strides(kernel, kernel.store)
    if any(isinstance(s, str) for s in strides): return next(s for s in strides if isinstance(s, str))
    if isinstance(out_st, str): return "output " + out_st
    if any(s[kx] == 0 for s in strides): return "an operand does not read the reduce axis"
    outs = [a for a in kernel.output_axes if kernel.axes[a].size > 1]  # a size-1 axis moves nothing
    own = [[a for a in outs if strides[i][a] and not strides[1 - i][a]] for i in (0, 1)]
    shared = [a for a in outs if strides[0][a] and strides[1][a]]
    unread = [a for a in outs if not strides[0][a] and not strides[1][a]]
    if unread: return "an output axis no operand reads (a broadcast)"
    if len(own[0]) != 1 or len(own[1]) != 1: return "an operand does not read exactly one output axis of its own"
    batch = [a for a in outs if a not in (own[0][0], own[1][0])]
    if len(batch) > 1 or set(batch) != set(shared): return "more than one batch axis"
    ai = 0 if out_st[own[1][0]] == 1 or out_st[own[0][0]] != 1 else 1  # N: the output's contiguous axis
    a, b = loads[ai], loads[1 - ai]
    sa, sb = strides[ai], strides[1 - ai]
    ma, na = own[ai][0], own[1 - ai][0]
    bx = batch[0] if batch else None

    def bs(s: dict[int, int]) -> int: return s[bx] if bx is not None else 0
    size = kernel.axes
    return {"batch": size[bx].size if bx is not None else 1, "m": size[ma].size, "n": size[na].size, "k": size[kx].size,
            "a_in": a.arg, "a_b": bs(sa), "a_rs": sa[ma], "a_cs": sa[kx],
            "b_in": b.arg, "b_b": bs(sb), "b_rs": sb[kx], "b_cs": sb[na],
            "c_b": bs(out_st), "c_rs": out_st[ma], "c_cs": out_st[na]}


def _strides(kernel, idx: Node) -> dict[int, int] | str:
    """Per axis the constant stride of an affine index with offset 0, or why not."""
    if any(n.op not in AFFINE_OPS for n in idx.toposort()): return "index is not affine (div, mod or other ops)"
    out = {}
    for i, ax in enumerate(kernel.axes):
        s = axis_stride(idx, i, ax.size) if ax.size > 1 else 0
        if s is None: return "index stride is not constant"
        out[i] = s
    base = substitute(idx, {v: const(0, dt.int32) for v in idx.toposort() if v.op is Ops.VAR})
    if base.op is not Ops.CONST or base.arg != 0: return "index has an offset"
    return out


def registers(machine) -> tuple[int, int]:
    """(fp32 lanes a vector, vector registers) of the host ISA the machine describes."""
    return (16, 32) if machine.simd_bytes >= 64 else (8, 16)


def check(geometry: dict[str, int], params: dict[str, int], machine) -> list[str]:
    """Every reason ``params`` are illegal for ``geometry`` on ``machine``."""
    missing = [p for p in PARAMS if p not in params]
    if missing: return [f"missing parameter(s) {', '.join(missing)}"]
    unknown = sorted(set(params) - set(PARAMS))
    errs = [f"unknown parameter(s) {', '.join(unknown)}"] if unknown else []
    p = params
    lanes, regs = registers(machine)
    if any(p[x] < 1 for x in ("MR", "NR", "V", "MC", "KC", "NC", "workers")): errs.append("block sizes and workers must be >= 1")
    if p["PF"] < 0 or p["PF"] > 64: errs.append("PF must be in 0..64")
    if p["V"] != lanes: errs.append(f"V must be the ISA's fp32 lanes ({lanes})")
    if errs: return errs
    if p["NR"] % p["V"]: errs.append(f"NR={p['NR']} is not a multiple of V={p['V']}")
    if p["MR"] * (p["NR"] // p["V"]) + p["NR"] // p["V"] + 1 > regs:
        errs.append(f"an MR x NR = {p['MR']} x {p['NR']} tile does not fit {regs} vector registers")
    if p["MC"] % p["MR"]: errs.append(f"MC={p['MC']} is not a multiple of MR={p['MR']}")
    if p["NC"] % p["NR"]: errs.append(f"NC={p['NC']} is not a multiple of NR={p['NR']}")
    if p["KC"] > 4096 or p["MC"] > 4096 or p["NC"] > 16384: errs.append("cache blocks too large (KC, MC <= 4096, NC <= 16384)")
    if p["workers"] > max(1, machine.cores): errs.append(f"workers={p['workers']} exceeds the {machine.cores} cores")
    return errs
