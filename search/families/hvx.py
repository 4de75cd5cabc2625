"""The HVX int8 implicit-GEMM family (``hvx_gemm``; template ir/hvx.py, assembly in
backends/hexagon/asm_gemm.py): int8 GEMMs and NHWC convolutions on the Hexagon DSP.

The micro-kernel (one tile = R output rows x J blocks of 32 columns): weights are prepacked
once into the ``vrmpy`` layout as unsigned bytes (w + 128), the activations are the scalar
operand, ``Vx.w += vrmpy(Vu.ub, Rt.b)``: per 4-k group, R*J vrmpy on the current operands
plus R vrmpy of a 0x80 splat by the same Rt (128 * the rows' sums: subtracted at the end),
while the next group's J weight vectors and R activation words are loaded (software
pipelined one group deep). The reduction runs over ``kh`` segments (kernel rows; a GEMM has
one) of ``kw * c_in`` contiguous bytes; each segment is a hardware loop (``loop0``).

This module writes the instruction stream of every part (tile prologue, segment prologue,
loop body, tile epilogue) and packs each with ``search.vliw.pack`` (Z3, the slot and unit
rules of LLVM's v66 itineraries): the backend emits exactly these packets. The model:

    packets = frame + tiles * (prologue + segment0 + (kh - 1) * segment + kh * trips * body + epilogue)
              + the padding copy (convolutions with pad > 0; an estimate, see ``pad_packets``)

and seconds = packets / ``machine.notes["clock_hz"]`` (no stall model: qemu counts issued
packets). Decisions: ``rows`` R and ``blocks`` J. ``solve`` enumerates every legal (R, J)
under the model (proved optimal under it); packings of identical streams are cached (the
constants that differ between tiles are ``##``-extended everywhere, so every tile packs
alike and one packing serves all).
"""
from __future__ import annotations

import functools
import re
import time
from typing import Iterable

from superopt.ir import hvx as tpl
from superopt.ir.kernel import Kernel
from superopt.ir.schedule import Level, Schedule, Split

from .. import vliw
from . import Candidate, Solved

ROWS, BLOCKS = tuple(range(1, 12)), (1, 2, 3, 4)
PACK_TIMEOUT_S = 10.0
# the emitted function's frame (backends/hexagon/asm_gemm.emit): allocframe, six callee-saved
# pair stores, the splat constant and the splat, six restores, dealloc_return: one packet each
FRAME_PACKETS = 16


# ---- the instruction stream --------------------------------------------------------------
def regs(r: int, j: int) -> dict[str, list[int]]:
    """Register numbers of an R x J tile: scalar pointers and words, vectors."""
    return {"bp": [4 + x for x in range(j)], "ap": [4 + j + i for i in range(r)], "aw": [4 + j + r + i for i in range(r)],
            "acc": list(range(r * j)), "bv": [r * j + x for x in range(j)], "splat": [r * j + j],
            "corr": [r * j + j + 1 + i for i in range(r)]}


def body(r: int, j: int) -> list[str]:
    """One 4-k group: the MACs and corrections on the current operands, then the next loads."""
    g = regs(r, j)
    out = [f"v{g['acc'][i * j + x]}.w += vrmpy(v{g['bv'][x]}.ub,r{g['aw'][i]}.b)" for i in range(r) for x in range(j)]
    out += [f"v{g['corr'][i]}.w += vrmpy(v{g['splat'][0]}.ub,r{g['aw'][i]}.b)" for i in range(r)]
    out += [f"v{g['bv'][x]} = vmem(r{g['bp'][x]}++#1)" for x in range(j)]
    out += [f"r{g['aw'][i]} = memw(r{g['ap'][i]}++#4)" for i in range(r)]
    return out


def tile_prologue(r: int, j: int, b_offs: list[int]) -> list[str]:
    """Weight pointers of the tile's blocks, zeroed accumulators, the first weight vectors."""
    g = regs(r, j)
    out = [f"r{g['bp'][x]} = add(r1,##{b_offs[x]})" for x in range(j)]
    out += [f"v{v} = vxor(v{v},v{v})" for v in g["acc"] + g["corr"]]
    out += [f"v{g['bv'][x]} = vmem(r{g['bp'][x]}++#1)" for x in range(j)]
    return out


def segment_texts(r: int, j: int, a_offs: list[int] | None, delta: int, trips: int, label: str) -> list[str]:
    """Row pointers of one segment, the first words, loop0. The first segment: row 0 at its
    ``##`` offset from r0, the others relative to row 0 (small: no extender); the later
    segments: every pointer moved by ``delta`` from where the previous segment left it."""
    g = regs(r, j)
    ap, aw = g["ap"], g["aw"]
    if a_offs is None: out = [f"r{ap[i]} = add(r{ap[i]},#{delta})" for i in range(r)]
    else: out = [f"r{ap[0]} = add(r0,##{a_offs[0]})"] + [f"r{ap[i]} = add(r{ap[0]},#{a_offs[i] - a_offs[0]})" for i in range(1, r)]
    out += [f"r{aw[i]} = memw(r{ap[i]}++#4)" for i in range(r)]
    return out + [f"loop0({label},#{trips})"]


def tile_epilogue(r: int, j: int, c_offs: list[int]) -> list[str]:
    """Subtract the corrections, point at the output rows (reusing the row pointers), store."""
    g = regs(r, j)
    out = [f"v{g['acc'][i * j + x]}.w = vsub(v{g['acc'][i * j + x]}.w,v{g['corr'][i]}.w)" for i in range(r) for x in range(j)]
    out += [f"r{g['ap'][0]} = add(r2,##{c_offs[0]})"]
    out += [f"r{g['ap'][i]} = add(r{g['ap'][0]},#{c_offs[i] - c_offs[0]})" for i in range(1, r)]
    out += [f"vmem(r{g['ap'][i]}+#{x}) = v{g['acc'][i * j + x]}" for i in range(r) for x in range(j)]
    return out


# ---- packing (cached by the stream's shape) -------------------------------------------------
def _canonical(texts: list[str]) -> tuple[str, ...]:
    """The stream with its extended constants and loop labels blanked: tiles differ only there,
    and a ``##`` constant takes the same slots whatever its value."""
    return tuple(re.sub(r"##-?\d+", "##0", re.sub(r"loop0\([^,]+,", "loop0(L,", t)) for t in texts)


@functools.lru_cache(maxsize=512)
def _assignment(canon: tuple[str, ...]) -> tuple[tuple[int, ...], bool]:
    res = vliw.pack([vliw.classify(t) for t in canon], timeout_s=PACK_TIMEOUT_S)
    if not res.assignment: return tuple(range(len(canon))), False   # no packing found: one a packet
    return tuple(res.assignment), res.proved


def packets(texts: list[str]) -> list[list[str]]:
    """``texts`` grouped into the packets the packer chose (empty packets dropped)."""
    asg, _ = _assignment(_canonical(texts))
    out: list[list[str]] = [[] for _ in range(max(asg) + 1)] if asg else []
    for t, p in zip(texts, asg): out[p].append(t)
    return [p for p in out if p]


def proved(texts: list[str]) -> bool:
    return _assignment(_canonical(texts))[1]


# ---- geometry of the emitted tiles -----------------------------------------------------------
def trips(g: dict[str, int]) -> int: return g["kw"] * g["c_in"] // 4


def pitch(g: dict[str, int]) -> int:
    """Bytes between image rows of the buffer the kernel reads (padded for a convolution)."""
    return (g["w"] + 2 * g["pad"]) * g["c_in"] if g["conv"] else g["a_rs"]


def row_offset(g: dict[str, int], p: int) -> int:
    """Byte offset of output row ``p``'s first segment in the buffer the kernel reads."""
    if not g["conv"]: return p * g["a_rs"]
    oy, ox = divmod(p, g["ow"])
    return oy * g["stride"] * pitch(g) + ox * g["stride"] * g["c_in"]


def delta(g: dict[str, int]) -> int:
    """Move of a row pointer from the end of one segment to the start of the next: one image
    row down, less the segment and the one word the pipelined body read ahead."""
    return pitch(g) - (trips(g) + 1) * 4


def tiles(g: dict[str, int], r: int, j: int) -> Iterable[tuple[int, int]]:
    """(first row, first column) of every tile, in the emitted order."""
    for m0 in range(0, g["m"], r):
        for n0 in range(0, g["n"], tpl.LANES * j):
            yield m0, n0


def tile_streams(g: dict[str, int], r: int, j: int, m0: int, n0: int) -> dict[str, list[str]]:
    """The streams of one tile as emitted (labels blank): prologue, first segment, a later
    segment, loop body, epilogue."""
    groups = g["k"] // 4
    return {"pro": tile_prologue(r, j, [(n0 // tpl.LANES + x) * groups * 128 for x in range(j)]),
            "seg0": segment_texts(r, j, [row_offset(g, m0 + i) for i in range(r)], 0, trips(g), "L"),
            "seg": segment_texts(r, j, None, delta(g), trips(g), "L"), "body": body(r, j),
            "epi": tile_epilogue(r, j, [((m0 + i) * g["c_rs"] + n0) * 4 for i in range(r)])}


def parts(g: dict[str, int], r: int, j: int) -> list[list[str]]:
    """Every distinct stream the kernel packs (tiles whose rows' offsets differ alike share one)."""
    seen: dict[tuple[str, ...], list[str]] = {}
    for m0, n0 in tiles(g, r, j):
        for t in tile_streams(g, r, j, m0, n0).values(): seen.setdefault(_canonical(t), t)
    return list(seen.values())


def pad_packets(g: dict[str, int]) -> int:
    """Estimate of the padding copy (convolutions with pad > 0, backends/hexagon/asm_gemm):
    per input row one unaligned vector load and store per 128 bytes (or one word load and
    store per 4 bytes below a vector), about one packet each, and 4 of loop overhead."""
    if not g["conv"] or not g["pad"]: return 0
    row = g["w"] * g["c_in"]
    per = -(-row // 128) * 2 if row >= 128 else row // 4
    return g["h"] * (per + 4)


def modeled_packets(g: dict[str, int], r: int, j: int) -> int:
    total = FRAME_PACKETS + pad_packets(g)
    for m0, n0 in tiles(g, r, j):
        n = {k: len(packets(v)) for k, v in tile_streams(g, r, j, m0, n0).items()}
        total += n["pro"] + n["seg0"] + (g["kh"] - 1) * n["seg"] + g["kh"] * trips(g) * n["body"] + n["epi"]
    return total


def macs(g: dict[str, int]) -> int: return g["m"] * g["n"] * g["k"]


# ---- the family -------------------------------------------------------------------------------
def schedule(kernel: Kernel, rows: int, blocks: int) -> Schedule:
    return Schedule(tuple((Split(Level.LOOP, ax.size),) for ax in kernel.axes), family="hvx_gemm",
                    params=(("rows", rows), ("blocks", blocks)))


def _clock(machine) -> float: return float(machine.notes.get("clock_hz", 1.0e9))


class HvxGemm:
    name = "hvx_gemm"

    def applies(self, kernel: Kernel, machine) -> bool:
        return machine.has("hvx") and isinstance(tpl.match(kernel), dict)

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        g = tpl.match(kernel)
        if isinstance(g, str): return
        for r in ROWS:
            for j in BLOCKS:
                if not tpl.check(g, {"rows": r, "blocks": j}): yield schedule(kernel, r, j)

    def legal(self, kernel: Kernel, schedule: Schedule, machine) -> list[str]:
        g = tpl.match(kernel)
        if isinstance(g, str): return [g]
        if schedule.family != self.name: return [f"not a {self.name} schedule"]
        return tpl.check(g, dict(schedule.params), machine)

    def cost(self, kernel: Kernel, schedule: Schedule, machine) -> float:
        g = tpl.match(kernel)
        if isinstance(g, str): raise ValueError(g)
        p = dict(schedule.params)
        return modeled_packets(g, p["rows"], p["blocks"]) / _clock(machine)

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        """What an engineer writes first: 4 rows by one block of 32 columns (the smallest
        tile that keeps both multipliers busy), fewer rows where 4 does not divide."""
        g = tpl.match(kernel)
        if isinstance(g, str): return None
        for r in (4, 2, 1):
            if not tpl.check(g, {"rows": r, "blocks": 1}): return schedule(kernel, r, 1)
        return None

    def solve(self, kernel: Kernel, machine, timeout_s: float = 30.0, top: int = 4) -> Solved:
        """Exact enumeration of (rows, blocks) under the packet model."""
        t0 = time.perf_counter()
        g = tpl.match(kernel)
        if isinstance(g, str): return Solved(self.name, [], "enumeration", False, detail={"why": g})
        cands, table, complete, exact = [], {}, True, True
        for s in self.space(kernel, machine):
            if time.perf_counter() - t0 > timeout_s:
                complete = False
                break
            p = dict(s.params)
            mp = modeled_packets(g, p["rows"], p["blocks"])
            exact &= all(proved(v) for v in parts(g, p["rows"], p["blocks"]))
            table[f"{p['rows']}x{p['blocks']}"] = mp
            cands.append(Candidate(s, mp / _clock(machine)))
        cands.sort(key=lambda c: c.modeled_s)
        ok = complete and exact and bool(cands)
        # not proved: the bound every schedule meets, two 128-MAC vrmpy a packet
        bound = None if ok else macs(g) / (2 * 128) / _clock(machine)
        return Solved(self.name, cands[:top], "enumeration", ok, bound_s=bound, solve_s=time.perf_counter() - t0,
                      detail={"modeled_packets": table, "points": len(cands), "packings_proved": exact,
                              "macs": macs(g)})


FAMILY = HvxGemm()
