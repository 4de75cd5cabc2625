"""The HVX few-channel first-layer family (``hvx_firstlayer``; template ir/hvx_firstlayer.py,
assembly in backends/hexagon/asm_firstlayer.py): int8 NHWC 3x3 stride-2 conv, 3 -> 32 channels.

The 32 output channels are the 32 word lanes of one vector, so an output pixel is one
accumulator and one store. The activations are read in their natural layout: for an
output pixel pair (2m, 2m+1) each window row is the 12 bytes of words 3m-1 .. 3m+2 of the
input row (the even pixel's nine bytes lie in words 3m-1..3m+1, the odd one's in
3m..3m+2). ``Vx.w += vrmpy(Vu.ub, Rt.b)`` (one multiplier: two a packet) multiplies such a
word (Rt, signed) by a prepacked weight vector (Vu: per lane the four weights of those
bytes plus 128, unsigned; 128 where a byte is not a tap of that pixel), so each pixel
takes 9 vrmpy. What the +128 adds, 128 x the sum of every byte read, is subtracted by
starting the accumulator at a splat of that correction; the corrections come from a
per-row pre-pass (vector x vector ``vrmpy`` by a -128 splat gives -128 x each word's sum,
three rows are added, then three neighbouring words). The left edge is peeled (the even
pixel of pair 0 skips word -1), rows outside the image read a zero row.

Each straight block (pre-pass loop bodies, prologues, the first pair, the loop body, the
drain) is packed by ``search.vliw.pack`` (Z3; LLVM's v66 slot and unit rules); the backend
emits those packets. Model: packets = frame + rows x (the blocks, loop bodies times their
trips); seconds = packets / ``machine.notes["clock_hz"]``. Decisions: ``pipeline`` (a
pair's stores in the next iteration) and ``tload`` (the next pair's corrections loaded one
iteration ahead). ``solve`` enumerates all four (proved optimal when every packing is).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterable

from ...ir import hvx_firstlayer as tpl
from ...ir.kernel import Kernel
from ...ir.schedule import Level, Schedule, Split

from .. import vliw
from . import Candidate, Solved

EVEN, ODD = 0, 9        # weight vectors: v(EVEN + 3*dy + k), v(ODD + 3*dy + k)
ACC = (18, 19)          # accumulators of the even and odd pixel
M128 = 31               # splat of -128 bytes (the pre-pass)
ROWS = ("r5", "r6", "r7")          # main loop: input rows at word 3m of the pair
PRE = ("r8", "r9", "r10")          # pre-pass pointers
VS, TP, OUT = "r11", "r12", "r13"  # pre-pass store pointer, corrections pointer, output pointer
CORR = ("r26", "r27")
PACK_TIMEOUT_S = 10.0
FRAME_PACKETS = 1 + 6 + 2 + 18 + 6 + 1   # allocframe, 6 saves, the -128 splat, 18 weight loads, 6 restores, return


def word_reg(dy: int, i: int) -> str: return f"r{14 + 4 * dy + i}"


def vectors(w: int) -> int:
    """Vectors of word sums a row needs (3W bytes)."""
    return -(-3 * w // 128)


def scratch_layout(w: int) -> dict[str, int]:
    """Byte offsets in the scratch buffer: a zero vector (word -1 of the sums), the word
    sums, a gap the shifted loads run into, the corrections."""
    nv = vectors(w)
    return {"vs": 128, "t": 128 + nv * 128 + 128, "bytes": 128 + 2 * nv * 128 + 256}


def _i(text: str, region: str = "") -> vliw.Instr:
    ins = vliw.classify(text)
    return replace(ins, region=region) if region else ins


def pass_a() -> list[vliw.Instr]:
    """One vector of -128 x word sums of the three rows."""
    out = [_i(f"v{20 + r} = vmemu({p}++#1)", "in") for r, p in enumerate(PRE)]
    out += [_i(f"v{23 + r}.w = vrmpy(v{20 + r}.b,v{M128}.b)") for r in range(3)]
    out += [_i("v23.w = vadd(v23.w,v24.w)"), _i("v23.w = vadd(v23.w,v25.w)"), _i(f"vmem({VS}++#1) = v23", "vs")]
    return out


def pass_b() -> list[vliw.Instr]:
    """One vector of corrections: the sums of words j-1, j, j+1."""
    return [_i(f"v26 = vmemu({PRE[0]}++#1)", "vs"), _i(f"v27 = vmem({PRE[1]}++#1)", "vs"),
            _i(f"v28 = vmemu({PRE[2]}++#1)", "vs"), _i("v26.w = vadd(v26.w,v27.w)"), _i("v26.w = vadd(v26.w,v28.w)"),
            _i(f"vmem({VS}++#1) = v26", "t")]


def row_base(g: dict[str, int], iy: int) -> tuple[str, int]:
    return ("r0", iy * g["w"] * 3) if 0 <= iy < g["h"] else ("r3", 0)


def prologue_a(g: dict[str, int], y: int) -> list[str]:
    out = []
    for dy, p in enumerate(PRE):
        base, off = row_base(g, 2 * y + dy - 1)
        out.append(f"{p} = add({base},##{off})")
    return out + [f"{VS} = add(r4,#{scratch_layout(g['w'])['vs']})"]


def prologue_b(g: dict[str, int]) -> list[str]:
    lay = scratch_layout(g["w"])
    return [f"{PRE[0]} = add(r4,#{lay['vs'] - 4})", f"{PRE[1]} = add(r4,#{lay['vs']})", f"{PRE[2]} = add(r4,#{lay['vs'] + 4})",
            f"{VS} = add(r4,##{lay['t']})"]


def prologue_main(g: dict[str, int], y: int, p: dict[str, int]) -> list[str]:
    out = []
    for dy, r in enumerate(ROWS):
        base, off = row_base(g, 2 * y + dy - 1)
        out.append(f"{r} = add({base},##{off})")
    out += [f"{TP} = add(r4,##{scratch_layout(g['w'])['t']})", f"{OUT} = add(r2,##{y * g['ow'] * 128})"]
    return out


def _tload(p: dict[str, int], ahead: int) -> list[vliw.Instr]:
    return [_i(f"{CORR[j]} = memw({TP}+#{4 * j + 12 * ahead})", "t") for j in (0, 1)]


def pair(p: dict[str, int], first: bool) -> list[vliw.Instr]:
    """One output pixel pair: corrections splatted into the accumulators, the window's
    words loaded, 18 vrmpy (17 for the first pair), pointer steps."""
    out: list[vliw.Instr] = [] if p["tload"] else _tload(p, 0)
    out += [_i(f"v{ACC[j]} = vsplat({CORR[j]})") for j in (0, 1)]
    if p["tload"]: out += _tload(p, 1)            # the next pair's, after the splats read these
    for dy, r in enumerate(ROWS):
        out += [_i(f"{word_reg(dy, i)} = memw({r}+#{4 * i - 4})", "in") for i in range(4) if not (first and i == 0)]
    for dy in range(3):
        for k in range(3):
            if not (first and k == 0):
                out.append(_i(f"v{ACC[0]}.w += vrmpy(v{EVEN + 3 * dy + k}.ub,{word_reg(dy, k)}.b)"))
            out.append(_i(f"v{ACC[1]}.w += vrmpy(v{ODD + 3 * dy + k}.ub,{word_reg(dy, k + 1)}.b)"))
    out += [_i(f"{r} = add({r},#12)") for r in ROWS] + [_i(f"{TP} = add({TP},#12)")]
    if not p["pipeline"]: out += drain()
    return out


def drain() -> list[vliw.Instr]:
    """The pair's two stores (a pixel's 32 channels are one vector), the output steps."""
    return [_i(f"vmem({OUT}+#{j}) = v{ACC[j]}", "out") for j in (0, 1)] + [_i(f"{OUT} = add({OUT},#256)")]


def blocks(g: dict[str, int], p: dict[str, int]) -> dict[str, list[vliw.Instr]]:
    """The straight blocks of one output row in emission order (loop bodies once)."""
    ref = min(1, g["oh"] - 1)
    out = {"pro_a": [_i(t) for t in prologue_a(g, ref)], "pass_a": pass_a(),
           "pro_b": [_i(t) for t in prologue_b(g)], "pass_b": pass_b(),
           "pro_main": [_i(t) for t in prologue_main(g, ref, p)] + (_tload(p, 0) if p["tload"] else []),
           "first": pair(p, True)}
    if g["ow"] // 2 > 1: out["body"] = (drain() if p["pipeline"] else []) + pair(p, False)
    if p["pipeline"]: out["epilogue"] = drain()
    return out


def trips(g: dict[str, int]) -> dict[str, int]:
    """Times each loop body runs a row."""
    return {"pass_a": vectors(g["w"]), "pass_b": vectors(g["w"]), "body": g["ow"] // 2 - 1}


@dataclass(frozen=True)
class Packing:
    packets: dict[str, tuple[tuple[str, ...], ...]]
    proved: bool
    solve_s: float

    def get(self, block: str) -> tuple[tuple[str, ...], ...]: return self.packets.get(block, ())


@lru_cache(maxsize=256)
def _pack(instrs: tuple[vliw.Instr, ...]) -> tuple[tuple[tuple[str, ...], ...], bool, float]:
    res = vliw.pack(list(instrs), timeout_s=PACK_TIMEOUT_S)
    asg = res.assignment or list(range(len(instrs)))
    pk: list[list[str]] = [[] for _ in range(max(asg) + 1)]
    for ins, q in zip(instrs, asg): pk[q].append(ins.text)
    return tuple(tuple(x) for x in pk if x), res.proved and bool(res.assignment), res.solve_s


@lru_cache(maxsize=64)
def _packing(gkey: tuple, pkey: tuple) -> Packing:
    got, proved, t = {}, True, 0.0
    for name, ins in blocks(dict(gkey), dict(pkey)).items():
        got[name], ok, dt = _pack(tuple(ins))
        proved &= ok
        t += dt
    return Packing(got, proved, t)


def packing(g: dict[str, int], p: dict[str, int]) -> Packing:
    return _packing(tuple(sorted(g.items())), tuple(sorted(p.items())))


def loop_packets(body: int, n: int) -> int:
    """A body run n times: straight once, else behind a loop0 setup packet."""
    return 0 if n < 1 else body if n == 1 else body * n + 1


def modeled_packets(g: dict[str, int], p: dict[str, int]) -> int:
    pk, tr = packing(g, p), trips(g)
    per_row = sum(len(pk.get(b)) for b in ("pro_a", "pro_b", "pro_main", "first", "epilogue"))
    per_row += sum(loop_packets(len(pk.get(b)), tr[b]) for b in ("pass_a", "pass_b", "body"))
    return FRAME_PACKETS + g["oh"] * per_row


def macs(g: dict[str, int]) -> int:
    """Multiply-adds of the convolution (taps inside the image only)."""
    def taps(n: int, on: int) -> int: return sum(1 for o in range(on) for d in range(3) if 0 <= 2 * o + d - 1 < n)
    return taps(g["h"], g["oh"]) * taps(g["w"], g["ow"]) * tpl.CIN * tpl.COUT


def schedule(kernel: Kernel, pipeline: int, tload: int) -> Schedule:
    return Schedule(tuple((Split(Level.LOOP, ax.size),) for ax in kernel.axes), family="hvx_firstlayer",
                    params=(("pipeline", pipeline), ("tload", tload)))


def _clock(machine) -> float: return float(machine.notes.get("clock_hz", 1.0e9))


class HvxFirstLayer:
    name = "hvx_firstlayer"

    def applies(self, kernel: Kernel, machine) -> bool:
        return machine.has("hvx") and isinstance(tpl.match(kernel), dict)

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        g = tpl.match(kernel)
        if isinstance(g, str): return
        for pl in (0, 1):
            for tl in (0, 1):
                if not tpl.check(g, {"pipeline": pl, "tload": tl}): yield schedule(kernel, pl, tl)

    def legal(self, kernel: Kernel, schedule: Schedule, machine) -> list[str]:
        g = tpl.match(kernel)
        if isinstance(g, str): return [g]
        if schedule.family != self.name: return [f"not a {self.name} schedule"]
        return tpl.check(g, dict(schedule.params), machine)

    def cost(self, kernel: Kernel, schedule: Schedule, machine) -> float:
        g = tpl.match(kernel)
        if isinstance(g, str): raise ValueError(g)
        return modeled_packets(g, dict(schedule.params)) / _clock(machine)

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        """What an engineer writes first: each pair loads, computes and stores in its own iteration."""
        g = tpl.match(kernel)
        return None if isinstance(g, str) else schedule(kernel, 0, 0)

    def solve(self, kernel: Kernel, machine, timeout_s: float = 30.0, top: int = 4) -> Solved:
        """Exact enumeration of (pipeline, tload) under the packet model."""
        t0 = time.perf_counter()
        g = tpl.match(kernel)
        if isinstance(g, str): return Solved(self.name, [], "enumeration", False, detail={"why": g})
        cands, table, complete, exact = [], {}, True, True
        for s in self.space(kernel, machine):
            if time.perf_counter() - t0 > timeout_s:
                complete = False
                break
            p = dict(s.params)
            mp = modeled_packets(g, p)
            exact &= packing(g, p).proved
            table[f"pipeline {p['pipeline']} tload {p['tload']}"] = mp
            cands.append(Candidate(s, mp / _clock(machine)))
        cands.sort(key=lambda c: c.modeled_s)
        ok = complete and exact and bool(cands)
        # not proved: the bound every schedule meets, two 128-byte vrmpy a packet
        bound = None if ok else macs(g) / 256 / _clock(machine)
        return Solved(self.name, cands[:top], "enumeration", ok, bound_s=bound, solve_s=time.perf_counter() - t0,
                      detail={"modeled_packets": table, "points": len(cands), "packings_proved": exact, "macs": macs(g)})


FAMILY = HvxFirstLayer()
