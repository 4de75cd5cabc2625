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
pair's stores in the next iteration), ``tload`` (the next pair's corrections loaded one
iteration ahead) and ``pre`` (vectors a pre-pass iteration makes). ``solve`` enumerates
all eight (proved optimal when every packing is).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterable

from ...ir import hvx_firstlayer as tpl
from ...ir.kernel import Kernel
from ...ir.schedule import Level, Schedule, Split

from .. import vliw
from . import Solved
from .native_template import TemplateFamily, clock_hz

EVEN, ODD = 0, 9        # weight vectors: v(EVEN + 3*dy + k), v(ODD + 3*dy + k)
ACC = ((18, 19), (20, 21))   # accumulator sets (even, odd pixel); the second only with two pairs an iteration
M128 = 31               # splat of -128 bytes (the pre-pass)
ROWS = ("r5", "r6", "r7")          # main loop: input rows at word 3m of the pair
PRE = ("r8", "r9", "r10")          # pre-pass pointers
VS, TP, OUT = "r11", "r12", "r13"  # pre-pass store pointer, corrections pointer, output pointer
CORR = ("r26", "r27")
PACK_TIMEOUT_S = 10.0
PRE_VECTORS = (1, 2)    # vectors a pre-pass iteration makes
PAIRS = (1, 2)          # pixel pairs a main-loop iteration makes
FRAME_PACKETS = 1 + 6 + 2 + 18 + 6 + 1   # allocframe, 6 saves, the -128 splat, 18 weight loads, 6 restores, return


# window words (row dy, word i at 4*dy + i) of each accumulator set's pair: the second set's
# first rows take the registers free in the main loop, so its loads need not wait for the
# first pair's multiplies to read theirs
WORDS = (tuple(f"r{14 + k}" for k in range(12)),
         ("r1", "r8", "r9", "r10", "r11", "r28", "r22", "r23", "r24", "r25", "r14", "r15"))
# with the requantize epilogue r1 holds the bias and multiplier vectors, and the two shifts
# need registers below r8 (vasr's Rt field): r5, r6; the main loop's row pointers move
WORDS_RQ = (WORDS[0], ("r8", "r9", "r22", "r23", "r24", "r25", "r14", "r15", "r16", "r17", "r18", "r19"))
ROWS_RQ = ("r28", "r11", "r10")
PRE_REG, POST_REG = "r5", "r6"


def vectors(w: int) -> int:
    """Vectors of word sums a row needs (3W bytes)."""
    return -(-3 * w // 128)


def scratch_layout(w: int, pre: int = 2) -> dict[str, int]:
    """Byte offsets in the scratch buffer: a zero vector (word -1 of the sums), the word
    sums (whole pre-pass iterations of ``pre`` vectors), a gap the shifted loads run into,
    the corrections."""
    nv = -(-vectors(w) // pre) * pre
    return {"vs": 128, "t": 128 + nv * 128 + 128, "bytes": 128 + 2 * nv * 128 + 256}


def _i(text: str, region: str = "") -> vliw.Instr:
    ins = vliw.classify(text)
    return replace(ins, region=region) if region else ins


def pass_a(pre: int) -> list[vliw.Instr]:
    """``pre`` vectors of -128 x word sums of the three rows (in place: load, vrmpy, add)."""
    out: list[vliw.Instr] = []
    for j in range(pre):
        v = [20 + 3 * j + r for r in range(3)]
        out += [_i(f"v{v[r]} = vmemu({p}+#{j})", "in") for r, p in enumerate(PRE)]
        out += [_i(f"v{x}.w = vrmpy(v{x}.b,v{M128}.b)") for x in v]
        out += [_i(f"v{v[0]}.w = vadd(v{v[0]}.w,v{v[1]}.w)"), _i(f"v{v[0]}.w = vadd(v{v[0]}.w,v{v[2]}.w)"),
                _i(f"vmem({VS}+#{j}) = v{v[0]}", "vs")]
    return out + [_i(f"{p} = add({p},#{128 * pre})") for p in PRE + (VS,)]


def pass_b(pre: int) -> list[vliw.Instr]:
    """``pre`` vectors of corrections: the sums of words j-1, j, j+1."""
    out: list[vliw.Instr] = []
    for j in range(pre):
        v = [20 + 3 * j + r for r in range(3)]
        out += [_i(f"v{v[0]} = vmemu({PRE[0]}+#{j})", "vs"), _i(f"v{v[1]} = vmem({PRE[1]}+#{j})", "vs"),
                _i(f"v{v[2]} = vmemu({PRE[2]}+#{j})", "vs"), _i(f"v{v[0]}.w = vadd(v{v[0]}.w,v{v[1]}.w)"),
                _i(f"v{v[0]}.w = vadd(v{v[0]}.w,v{v[2]}.w)"), _i(f"vmem({VS}+#{j}) = v{v[0]}", "t")]
    return out + [_i(f"{p} = add({p},#{128 * pre})") for p in PRE + (VS,)]


def row_base(g: dict[str, int], iy: int) -> tuple[str, int]:
    return ("r0", iy * g["w"] * 3) if 0 <= iy < g["h"] else ("r3", 0)


def prologue_a(g: dict[str, int], y: int) -> list[str]:
    out = []
    for dy, p in enumerate(PRE):
        base, off = row_base(g, 2 * y + dy - 1)
        out.append(f"{p} = add({base},##{off})")
    return out + [f"{VS} = add(r4,#128)"]


def prologue_b(g: dict[str, int], p: dict[str, int]) -> list[str]:
    lay = scratch_layout(g["w"], p["pre"])
    return [f"{PRE[0]} = add(r4,#{lay['vs'] - 4})", f"{PRE[1]} = add(r4,#{lay['vs']})", f"{PRE[2]} = add(r4,#{lay['vs'] + 4})",
            f"{VS} = add(r4,##{lay['t']})"]


def prologue_main(g: dict[str, int], y: int, p: dict[str, int]) -> list[str]:
    out = []
    for dy, r in enumerate(ROWS_RQ if g.get("requant") else ROWS):
        base, off = row_base(g, 2 * y + dy - 1)
        out.append(f"{r} = add({base},##{off})")
    out += [f"{TP} = add(r4,##{scratch_layout(g['w'], p['pre'])['t']})",
            f"{OUT} = add(r2,##{y * g['ow'] * (32 if g.get('requant') else 128)})"]
    if g.get("requant"): out += [f"{PRE_REG} = #{g['pre']}", f"{POST_REG} = #{g['post']}"]
    return out


def _tload(p: dict[str, int], ahead: int) -> list[vliw.Instr]:
    return [_i(f"{CORR[j]} = memw({TP}+#{4 * j + 12 * ahead})", "t") for j in (0, 1)]


def pair(p: dict[str, int], first: bool, acc: int = 0, rq: int = 0) -> list[vliw.Instr]:
    """One output pixel pair into accumulator set ``acc``: corrections splatted into the
    accumulators, the window's words loaded, 18 vrmpy (17 for the first pair), pointer steps."""
    a, words, rows = ACC[acc], (WORDS_RQ if rq else WORDS)[acc], ROWS_RQ if rq else ROWS
    out: list[vliw.Instr] = [] if p["tload"] else _tload(p, 0)
    out += [_i(f"v{a[j]} = vsplat({CORR[j]})") for j in (0, 1)]
    if p["tload"]: out += _tload(p, 1)            # the next pair's, after the splats read these
    for dy, r in enumerate(rows):
        out += [_i(f"{words[4 * dy + i]} = memw({r}+#{4 * i - 4})", "in") for i in range(4) if not (first and i == 0)]
    for dy in range(3):
        for k in range(3):
            if not (first and k == 0):
                out.append(_i(f"v{a[0]}.w += vrmpy(v{EVEN + 3 * dy + k}.ub,{words[4 * dy + k]}.b)"))
            out.append(_i(f"v{a[1]}.w += vrmpy(v{ODD + 3 * dy + k}.ub,{words[4 * dy + k + 1]}.b)"))
    return out + [_i(f"{r} = add({r},#12)") for r in rows] + [_i(f"{TP} = add({TP},#12)")]


def drain(acc: int = 0) -> list[vliw.Instr]:
    """A pair's two stores (a pixel's 32 channels are one vector), the output steps."""
    return [_i(f"vmem({OUT}+#{j}) = v{ACC[acc][j]}", "out") for j in (0, 1)] + [_i(f"{OUT} = add({OUT},#256)")]


def _step(p: dict[str, int], first: bool, acc: int, pending: int | None) -> tuple[list[vliw.Instr], int | None]:
    """One pair in program order: the pending pair's stores first (pipelined), or its own after it."""
    ins = (drain(pending) if pending is not None else []) + pair(p, first, acc)
    if p["pipeline"]: return ins, acc
    return ins + drain(acc), None


def _tmp(load_text: str, consumers: list[str], tag: str) -> list[vliw.Instr]:
    """A .tmp load of a constant vector (v31) and the instructions that read it in its packet."""
    out = [replace(vliw.classify(load_text), defs=(tag,), region="const")]
    for t in consumers:
        c = vliw.classify(t)
        out.append(replace(c, uses=tuple(u for u in c.uses if u != "v31"), new_uses=(tag,),
                           early_uses=tuple(u for u in c.early_uses if u != "v31")))
    return out


def requant_drain(relu: int = 0) -> list[vliw.Instr]:
    """Four output pixels (A, B of the first pair, C, D of the second) requantized to int8
    and stored as one vector: + bias; words to halfwords by a rounding shift of (C, A) and
    (D, B) (lanes interleave: A0 C0 A1 C1 ..); the Q15 multiply by the per-channel
    multipliers prepacked in that interleave; halfwords to bytes of (BD, AC): A0 B0 C0 D0
    A1 ..; two byte deals leave A, B, C, D contiguous. Bias and multipliers: .tmp loads at
    r1. Everything after the first shifts lives in the second pair's registers, so the
    first pair of the next iteration can start while the rest of the chain runs. ``relu``
    (ReLU6 fused): ``vmax`` of the bytes by a zero vector (a .tmp load at r1+#2) before the
    deals (the upper bound 6 is the int8 saturation)."""
    (a, b), (c, d) = ACC
    out = []
    for k, (x, y) in enumerate(((a, b), (c, d))):
        out += _tmp("v31.tmp = vmem(r1+#0)", [f"v{x}.w = vadd(v{x}.w,v31.w)", f"v{y}.w = vadd(v{y}.w,v31.w)"], f"rqb{k}")
    out += [_i(f"v{c}.h = vasr(v{c}.w,v{a}.w,{PRE_REG}):rnd:sat"), _i(f"v{d}.h = vasr(v{d}.w,v{b}.w,{PRE_REG}):rnd:sat")]
    for k, x in enumerate((c, d)):
        out += _tmp("v31.tmp = vmem(r1+#1)", [f"v{x}.h = vmpy(v{x}.h,v31.h):<<1:rnd:sat"], f"rqm{k}")
    out += [_i(f"v{c}.b = vasr(v{d}.h,v{c}.h,{POST_REG}):rnd:sat")]
    if relu: out += _tmp("v31.tmp = vmem(r1+#2)", [f"v{c}.b = vmax(v{c}.b,v31.b)"], "relu")
    out += [_i(f"v{c}.b = vdeal(v{c}.b)"), _i(f"v{c}.b = vdeal(v{c}.b)"),
            _i(f"vmem({OUT}+#0) = v{c}", "out"), _i(f"{OUT} = add({OUT},#128)")]
    return out


def requant_blocks(g: dict[str, int], p: dict[str, int]) -> dict[str, list[vliw.Instr]]:
    """Four pixels (two pairs, the two accumulator sets) an iteration, the first four peeled.
    Each pair is its own straight block (``first``/``first2``, ``body``/``body2``, emitted
    back to back): one block of both pairs and the epilogue is too large for the packer's
    time budget."""
    pipe = p["pipeline"]
    drain = requant_drain(g.get("relu", 0))
    out = {"first": pair(p, True, 0, 1), "first2": pair(p, False, 1, 1) + ([] if pipe else drain)}
    if g["ow"] // 4 > 1:
        out["body"] = (drain if pipe else []) + pair(p, False, 0, 1)
        out["body2"] = pair(p, False, 1, 1) + ([] if pipe else drain)
    if pipe: out["epilogue"] = drain
    return out


def main_blocks(g: dict[str, int], p: dict[str, int]) -> dict[str, list[vliw.Instr]]:
    """first (pair 0), body (``pairs`` pairs a loop iteration; with two, the accumulator sets
    alternate so that one pair's stores overlap the next one's multiplies), last (a pair
    left over), epilogue (the last pending stores)."""
    n = p["pairs"]
    sets = [m % 2 if n == 2 else 0 for m in range(g["ow"] // 2)]
    out: dict[str, list[vliw.Instr]] = {}
    out["first"], pend = _step(p, True, 0, None)
    middle = g["ow"] // 2 - 1
    if middle >= n:
        body, pend_b = [], pend
        for j in range(n):
            ins, pend_b = _step(p, False, sets[1 + j], pend_b)
            body += ins
        out["body"] = body
        pend = pend_b
    if middle % n:
        out["last"], pend = _step(p, False, sets[-1], pend)
    if pend is not None: out["epilogue"] = drain(pend)
    return out


def blocks(g: dict[str, int], p: dict[str, int]) -> dict[str, list[vliw.Instr]]:
    """The straight blocks of one output row in emission order (loop bodies once)."""
    ref = min(1, g["oh"] - 1)
    out = {"pro_a": [_i(t) for t in prologue_a(g, ref)], "pass_a": pass_a(p["pre"]),
           "pro_b": [_i(t) for t in prologue_b(g, p)], "pass_b": pass_b(p["pre"]),
           "pro_main": [_i(t) for t in prologue_main(g, ref, p)] + (_tload(p, 0) if p["tload"] else [])}
    if g.get("relu") and not g.get("requant"): raise ValueError("relu fuses into the requantize epilogue only")
    return {**out, **(requant_blocks(g, p) if g.get("requant") else main_blocks(g, p))}


def trips(g: dict[str, int], p: dict[str, int]) -> dict[str, int]:
    """Times each loop body runs a row."""
    nv = -(-vectors(g["w"]) // p["pre"])
    if g.get("requant"): return {"pass_a": nv, "pass_b": nv, "body": g["ow"] // 4 - 1}
    return {"pass_a": nv, "pass_b": nv, "body": (g["ow"] // 2 - 1) // p["pairs"]}


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
    pk, tr = packing(g, p), trips(g, p)
    per_row = sum(len(pk.get(b)) for b in ("pro_a", "pro_b", "pro_main", "first", "first2", "last", "epilogue"))
    per_row += sum(loop_packets(len(pk.get(b)), tr[b]) for b in ("pass_a", "pass_b"))
    per_row += loop_packets(len(pk.get("body")) + len(pk.get("body2")), tr["body"])
    return FRAME_PACKETS + g["oh"] * per_row


def macs(g: dict[str, int]) -> int:
    """Multiply-adds of the convolution (taps inside the image only)."""
    def taps(n: int, on: int) -> int: return sum(1 for o in range(on) for d in range(3) if 0 <= 2 * o + d - 1 < n)
    return taps(g["h"], g["oh"]) * taps(g["w"], g["ow"]) * tpl.CIN * tpl.COUT


def schedule(kernel: Kernel, pipeline: int, tload: int, pre: int = 1, pairs: int = 1) -> Schedule:
    return Schedule(tuple((Split(Level.LOOP, ax.size),) for ax in kernel.axes), family="hvx_firstlayer",
                    params=(("pairs", pairs), ("pipeline", pipeline), ("pre", pre), ("tload", tload)))


_clock = clock_hz


class HvxFirstLayer(TemplateFamily):
    name = "hvx_firstlayer"
    tpl = tpl
    packets = staticmethod(modeled_packets)

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        g = tpl.match(kernel)
        if isinstance(g, str): return
        for pl in (0, 1):
            for tl in (0, 1):
                for pre in PRE_VECTORS:
                    for n in PAIRS:
                        p = {"pipeline": pl, "tload": tl, "pre": pre, "pairs": n}
                        if not tpl.check(g, p): yield schedule(kernel, **p)

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        """What an engineer writes first: each pair loads, computes and stores in its own iteration."""
        g = tpl.match(kernel)
        return None if isinstance(g, str) else schedule(kernel, 0, 0, 1, 2 if g.get("requant") else 1)

    def solve(self, kernel: Kernel, machine, timeout_s: float = 30.0, top: int = 4) -> Solved:
        """Exact enumeration of (pipeline, tload) under the packet model."""
        # not proved: the bound every schedule meets, two 128-byte vrmpy a packet
        return self.enumerate_solve(kernel, machine, timeout_s, top, packing, macs, peak_macs=256)


FAMILY = HvxFirstLayer()
