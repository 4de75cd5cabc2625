"""The HVX depthwise 3x3 family (``hvx_depthwise``; template ir/hvx_depthwise.py, assembly
in backends/hexagon/asm_depthwise.py): int8 NHWC depthwise 3x3, 64 channels, stride 1 or 2.

The instruction stream (this module writes it; the backend emits exactly its packets):
64 channels are half a vector, so one aligned ``vmem`` holds a pixel pair. Each pair is
loaded ``.tmp`` (load unit only) and widened by ``vunpack`` in the same packet into a
register pair (one pixel's 64 int16 lanes each); the widening vector x vector multiply
``Vdd.w (+)= vmpy(Vu.h, Vv.h)`` (both multipliers) by the tap's prepacked int16 weights
(v22..v30) accumulates an output pixel in int32, even channels in the low vector, odd in
the high; ``vshuff`` by words restores channel order before the two stores. An iteration
makes ``unroll`` output pixels of a row; its stores are drained in the next iteration
(software pipelining one stage deep: a store reads its accumulator in the packet where
the next first multiply overwrites it). With the requantize epilogue (``qconv2d``) the
drain instead adds the bias, packs words to halfwords with a rounding shift (no vshuff:
the even/odd halves interleave into channel order), multiplies by the Q15 multipliers and
packs the pixel pair to 64 + 64 int8 bytes for one store (bias and multipliers are .tmp
loads; the shifts sit in r4/r5). The first and last iterations of a row are
peeled (taps outside the image skipped, their pairs not loaded); rows outside the image
read a zero row. Each straight block (row prologue, first, loop body, last, drain) is
packed by ``search.vliw.pack`` (Z3; LLVM's v66 slot and unit rules).

Model: packets = frame + rows x (prologue + first + last + drain + loop setup
+ middle iterations x body); seconds = packets / ``machine.notes["clock_hz"]`` (no stall
model: qemu counts issued packets). Decisions: ``unroll`` and ``early`` (all outputs but
the last shuffled right after their multiplies instead of in the next iteration's head).
``solve`` enumerates every legal point (proved optimal under the model when every packing
is proved).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterable

from ...ir import hvx_depthwise as tpl
from ...ir.kernel import Kernel
from ...ir.schedule import Level, Schedule, Split

from .. import vliw
from . import Solved
from .native_template import TemplateFamily, clock_hz

C = tpl.C
W_REG = 22              # weights of tap t = 3*dy + dx in v(22 + t)
ACC_REG = 18            # the accumulator pair of output o in v(19 + 2o):v(18 + 2o)
TMP = "v31"             # .tmp load target (never written: read in the load's packet)
ROW_REGS = ("r10", "r11", "r12")   # input rows dy = 0, 1, 2, at the iteration's first pair
OUT_REG = "r13"
SHUF_REG = "r7"         # -4: vshuff by words
PRE_REG, POST_REG, DEAL_REG = "r4", "r5", "r6"   # requantize: the two shifts, -2 (vdeal by halfwords)
UNROLLS = (1, 2, 3, 4)
PACK_TIMEOUT_S = 10.0
FRAME_PACKETS = 9 + 1   # nine weight loads (the shuffle and requantize constants ride in them), the return


def _tied(load_text: str, unpack_text: str, k: int) -> list[vliw.Instr]:
    """A .tmp load and the unpack that reads it in the same packet. The load writes no
    register (its value lives in that packet only), so the pair is tied by a private name
    (a same-packet use, as for ``.new``) instead of by the register the text names."""
    tag = f"tmp{k}"
    ld = replace(vliw.classify(load_text), defs=(tag,), region="in")
    up = vliw.classify(unpack_text)
    return [ld, replace(up, uses=tuple(u for u in up.uses if u != TMP), new_uses=(tag,),
                        early_uses=tuple(u for u in up.early_uses if u != TMP))]


def _shuffle(a: int) -> vliw.Instr: return vliw.classify(f"v{a + 1}:{a} = vshuff(v{a + 1},v{a},{SHUF_REG})")


def compute(s: int, u: int, x0: int, w: int, early: int = 0) -> list[vliw.Instr]:
    """Loads + unpacks of the pairs in the image and the multiplies of the taps in the
    image for the iteration whose first output pixel is ``x0``; the row pointers step.
    ``early``: every output but the last is shuffled here, after its multiplies (the
    next iteration's head then holds one shuffle, not ``unroll``)."""
    npair = tpl.pairs(s, u)
    p0 = s * x0 - 2                        # first pixel of the first pair the row pointers address
    out: list[vliw.Instr] = []
    for dy, rr in enumerate(ROW_REGS):
        for q in range(npair):
            if not 0 <= p0 + 2 * q < w: continue
            k = dy * npair + q
            out += _tied(f"{TMP}.tmp = vmem({rr}+#{q})", f"v{2 * k + 1}:{2 * k}.h = vunpack({TMP}.b)", k)
    for o in range(u):
        a = ACC_REG + 2 * o
        taps = []
        for dy in range(3):
            for dx in (1, 0, 2):           # the centre first: always in the image, so it starts the sum
                px = s * (x0 + o) + dx - 1
                if not 0 <= px < w: continue
                rel = px - p0
                taps.append((2 * (dy * npair + rel // 2) + rel % 2, W_REG + 3 * dy + dx))
        for i, (src, wr) in enumerate(taps):
            out.append(vliw.classify(f"v{a + 1}:{a}.w {'+=' if i else '='} vmpy(v{src}.h,v{wr}.h)"))
        if early and o < u - 1: out.append(_shuffle(a))
    out += [vliw.classify(f"{rr} = add({rr},#{s * u * C})") for rr in ROW_REGS]
    return out


def _tmp(load_text: str, consumers: list[str], tag: str) -> list[vliw.Instr]:
    """A .tmp load of a constant vector and the instructions that read it in its packet."""
    out = [replace(vliw.classify(load_text), defs=(tag,), region="const")]
    for t in consumers:
        c = vliw.classify(t)
        out.append(replace(c, uses=tuple(u for u in c.uses if u != TMP), new_uses=(tag,),
                           early_uses=tuple(u for u in c.early_uses if u != TMP)))
    return out


def requant_drain(relu: int = 0) -> list[vliw.Instr]:
    """The requantize of an output pixel pair to int8 and its one store: per pixel
    + bias (even, odd channels), rounding shift by ``pre`` packing words to halfwords in
    channel order (the even/odd halves interleave), the Q15 multiply rounded; then the two
    pixels dealt by halfwords so that the rounding shift by ``post`` packing to bytes
    leaves pixel A's 64 bytes before pixel B's. Bias and multiplier vectors are .tmp loads
    at r1 (right after the weights). After the first shifts everything lives in pixel B's
    registers: the next iteration's pixel A multiplies while the chain finishes. ``relu``
    (ReLU6 fused into the epilogue): ``vmax`` of the bytes by a zero vector, a .tmp load at
    r1+#3, before the store (the upper bound 6 is the int8 saturation)."""
    (a0, a1), (b0, b1) = (ACC_REG, ACC_REG + 1), (ACC_REG + 2, ACC_REG + 3)
    out = _tmp(f"{TMP}.tmp = vmem(r1+#0)", [f"v{a0}.w = vadd(v{a0}.w,{TMP}.w)", f"v{b0}.w = vadd(v{b0}.w,{TMP}.w)"], "rq0")
    out += _tmp(f"{TMP}.tmp = vmem(r1+#1)", [f"v{a1}.w = vadd(v{a1}.w,{TMP}.w)", f"v{b1}.w = vadd(v{b1}.w,{TMP}.w)"], "rq1")
    out += [vliw.classify(f"v{b0}.h = vasr(v{b1}.w,v{b0}.w,{PRE_REG}):rnd:sat"),      # B
            vliw.classify(f"v{b1}.h = vasr(v{a1}.w,v{a0}.w,{PRE_REG}):rnd:sat")]      # A, into B's odd half (read above)
    for k, x in enumerate((b1, b0)):
        out += _tmp(f"{TMP}.tmp = vmem(r1+#2)", [f"v{x}.h = vmpy(v{x}.h,{TMP}.h):<<1:rnd:sat"], f"rq{2 + k}")
    out += [vliw.classify(f"v{b1}:{b0} = vdeal(v{b0},v{b1},{DEAL_REG})"),
            vliw.classify(f"v{b0}.b = vasr(v{b1}.h,v{b0}.h,{POST_REG}):rnd:sat")]
    if relu: out += _tmp(f"{TMP}.tmp = vmem(r1+#3)", [f"v{b0}.b = vmax(v{b0}.b,{TMP}.b)"], "relu")
    out += [replace(vliw.classify(f"vmem({OUT_REG}+#0) = v{b0}"), region="out"),
            vliw.classify(f"{OUT_REG} = add({OUT_REG},#{2 * C})")]
    return out


def drain(u: int, early: int = 0, requant: int = 0, relu: int = 0) -> list[vliw.Instr]:
    """Channel order back (vshuff by words; with ``early`` the last output's only) and the
    stores of the previous iteration's accumulators, then the output pointer steps; with
    ``requant`` the int8 epilogue instead (``relu``: with the clamp fused)."""
    if requant: return requant_drain(relu)
    out: list[vliw.Instr] = []
    for o in range(u):
        a = ACC_REG + 2 * o
        if not early or o == u - 1: out.append(_shuffle(a))
        out += [replace(vliw.classify(f"vmem({OUT_REG}+#{2 * o + j}) = v{a + j}"), region="out") for j in (0, 1)]
    out.append(vliw.classify(f"{OUT_REG} = add({OUT_REG},#{u * C * 4})"))
    return out


def row_prologue(g: dict[str, int], y: int) -> list[str]:
    """Row pointers of output row y (input rows s*y-1 .. s*y+1, else the zero row in r3)
    at the first iteration's pair -1, and its output row; ``##`` constants so that every
    row packs alike."""
    s, h, w = g["stride"], g["h"], g["w"]
    pixel = C * (1 if g.get("requant") else 4)          # output bytes a pixel
    out = []
    for dy, rr in enumerate(ROW_REGS):
        iy = s * y + dy - 1
        base, off = ("r0", iy * w * C) if 0 <= iy < h else ("r3", 0)
        out.append(f"{rr} = add({base},##{off - 2 * C})")
    out.append(f"{OUT_REG} = add(r2,##{y * g['ow'] * pixel})")
    return out


def iterations(g: dict[str, int], u: int) -> tuple[int, int, bool]:
    """(iterations a row, of them run by the loop body, whether a peeled last one exists)."""
    n = g["ow"] // u
    last = g["stride"] * (g["ow"] - 1) + 1 >= g["w"] and n > 1     # the last touches the right edge
    return n, n - 1 - int(last), last


def blocks(g: dict[str, int], p: dict[str, int]) -> dict[str, list[vliw.Instr]]:
    """The straight blocks of one row, in emission order (the loop body once)."""
    s, w, u, e, rq = g["stride"], g["w"], p["unroll"], p["early"], g.get("requant", 0)
    if g.get("relu") and not rq: raise ValueError("relu fuses into the requantize epilogue only")
    relu = g.get("relu", 0)
    n, middle, last = iterations(g, u)
    out = {"prologue": [vliw.classify(t) for t in row_prologue(g, min(1, g["oh"] - 1))], "first": compute(s, u, 0, w, e)}
    if middle: out["body"] = drain(u, e, rq, relu) + compute(s, u, u, w, e)
    if last: out["last"] = drain(u, e, rq, relu) + compute(s, u, (n - 1) * u, w, e)
    out["epilogue"] = drain(u, e, rq, relu)
    return out


@dataclass(frozen=True)
class Packing:
    packets: dict[str, tuple[tuple[str, ...], ...]]   # block -> packets (instruction texts)
    middle: int
    proved: bool
    solve_s: float

    def get(self, block: str) -> tuple[tuple[str, ...], ...]: return self.packets.get(block, ())


@lru_cache(maxsize=256)   # geometries share blocks (the peeled and loop-body streams depend on stride and unroll only)
def _pack(instrs: tuple[vliw.Instr, ...]) -> tuple[tuple[tuple[str, ...], ...], bool, float]:
    res = vliw.pack(list(instrs), timeout_s=PACK_TIMEOUT_S)
    asg = res.assignment or list(range(len(instrs)))
    pk: list[list[str]] = [[] for _ in range(max(asg) + 1)]
    for ins, p in zip(instrs, asg): pk[p].append(ins.text)
    return tuple(tuple(p) for p in pk if p), res.proved and bool(res.assignment), res.solve_s


@lru_cache(maxsize=64)
def _packing(key: tuple, pkey: tuple) -> Packing:
    g, p = dict(key), dict(pkey)
    got, proved, t = {}, True, 0.0
    for name, ins in blocks(g, p).items():
        got[name], ok, dt = _pack(tuple(ins))
        proved &= ok
        t += dt
    return Packing(got, iterations(g, p["unroll"])[1], proved, t)


def packing(g: dict[str, int], p: dict[str, int]) -> Packing:
    """The packets of one row (every row alike), cached per geometry and parameters."""
    return _packing(tuple(sorted(g.items())), tuple(sorted(p.items())))


def modeled_packets(g: dict[str, int], p: dict[str, int]) -> int:
    pk = packing(g, p)
    setup = 1 if pk.middle > 1 else 0      # loop0 (a single middle iteration runs straight)
    per_row = sum(len(pk.get(b)) for b in ("prologue", "first", "last", "epilogue")) + setup + pk.middle * len(pk.get("body"))
    return FRAME_PACKETS + g["oh"] * per_row


def macs(g: dict[str, int]) -> int:
    """Multiply-adds of the convolution (taps inside the image only)."""
    def taps(n: int, on: int) -> int:
        return sum(1 for o in range(on) for d in range(3) if 0 <= g["stride"] * o + d - 1 < n)
    return taps(g["h"], g["oh"]) * taps(g["w"], g["ow"]) * g["c"]


def schedule(kernel: Kernel, unroll: int, early: int = 0) -> Schedule:
    return Schedule(tuple((Split(Level.LOOP, ax.size),) for ax in kernel.axes), family="hvx_depthwise",
                    params=(("early", early), ("unroll", unroll)))


_clock = clock_hz


class HvxDepthwise(TemplateFamily):
    name = "hvx_depthwise"
    tpl = tpl
    packets = staticmethod(modeled_packets)

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        g = tpl.match(kernel)
        if isinstance(g, str): return
        for u in UNROLLS:
            for e in (0, 1):
                if not tpl.check(g, {"unroll": u, "early": e}): yield schedule(kernel, u, e)

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        """What an engineer writes first: the smallest legal unroll (one output pixel an
        iteration where the stride allows it), every shuffle next to its stores."""
        g = tpl.match(kernel)
        if isinstance(g, str): return None
        return next((schedule(kernel, u) for u in UNROLLS if not tpl.check(g, {"unroll": u, "early": 0})), None)

    def label(self, params: dict) -> str:
        return f"unroll {params['unroll']} early {params['early']}"

    def solve(self, kernel: Kernel, machine, timeout_s: float = 30.0, top: int = 4) -> Solved:
        """Exact enumeration of the legal unrolls under the packet model."""
        # not proved: the bound every schedule meets, one 64-MAC widening multiply a packet
        return self.enumerate_solve(kernel, machine, timeout_s, top, packing, macs, peak_macs=64)


FAMILY = HvxDepthwise()
