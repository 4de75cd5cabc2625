"""int8 NHWC depthwise 3x3 convolution (64 channels, stride 1 or 2, pad 1) in HVX
assembly with explicit packets (issue 23; schedule family ``hvx_depthwise``).

out[y, x, c] (int32) = sum_{dy,dx} in[s*y+dy-1, s*x+dx-1, c] * w[c, dy, dx]

Layout: 64 channels are half a vector, so one aligned 128-byte ``vmem`` holds a pixel
pair. ``vunpack`` widens it to halfwords (a register pair: one pixel each, 64 lanes),
and the widening vector x vector multiply ``Vdd.w (+)= vmpy(Vu.h, Vv.h)`` multiplies it by
the tap's weights (prepacked once, outside the counted region, as 64 int16 lanes a tap,
nine vectors kept in v22..v30) into an int32 pair: even channels in the low vector, odd
in the high. One ``vshuff`` by words per output pixel restores channel order before the
two stores. Every product and sum is exact in int32 (no saturation is reachable).

An iteration makes ``unroll`` output pixels of one row: for each of the three input rows
it loads the pixel pairs it needs with ``.tmp`` loads (the load unit only; the unpack in
the same packet reads the value, tied by a same-packet dependence) and issues 9 x unroll
multiplies. The first and the last iteration of a row are peeled: taps left or right of
the image are skipped, and the pairs they would read are not loaded. Rows above and
below the image read a zero row (the ``zero`` argument). Every packet (row prologue,
peeled iterations, the hardware-loop body) is chosen by ``search.vliw.pack`` and emitted
as chosen; all rows share one packing (constants are written with ``##``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ...search import vliw
from . import tools

C = 64                  # channels: a pixel pair fills one vector
W_REG = 22              # weights of tap t in v(22 + t)
ACC_REG = 18            # the accumulator pair of output o in v(19 + 2o):v(18 + 2o)
TMP = "v31"             # .tmp load target (never written: read in the load's packet)
ROW_REGS = ("r10", "r11", "r12")   # input rows dy = 0, 1, 2 (pointing at the iteration's first pair)
OUT_REG = "r13"
SHUF_REG = "r7"         # -4: vshuff by words


@dataclass(frozen=True)
class Blocking:
    stride: int         # 1 or 2
    unroll: int         # output pixels an iteration


def pairs(bl: Blocking) -> int:
    """Pixel pairs of one input row an iteration reads: pixels s*x0-2 .. s*(x0+U-1)+1."""
    return (bl.stride * (bl.unroll - 1) + 3) // 2 + 1


def out_size(n: int, stride: int) -> int: return (n + 2 - 3) // stride + 1


def problems(bl: Blocking, h: int, w: int, c: int) -> list[str]:
    """Every reason the blocking does not fit the shape or the registers."""
    errs = []
    if bl.stride not in (1, 2): errs.append(f"stride {bl.stride} (1 or 2)")
    if c != C: errs.append(f"{c} channels (the template holds a pixel pair of {C} channels a vector)")
    if bl.unroll < 1: errs.append("unroll must be >= 1")
    if errs: return errs
    if (bl.stride * bl.unroll) % 2: errs.append(f"stride x unroll = {bl.stride * bl.unroll} is odd (iterations must start on a pixel pair)")
    if w % 2: errs.append(f"width {w} is odd (pixel pairs)")
    ow = out_size(w, bl.stride)
    if ow % bl.unroll: errs.append(f"output width {ow} is not a multiple of unroll {bl.unroll}")
    regs = 3 * pairs(bl) * 2
    if regs > ACC_REG or ACC_REG + 2 * bl.unroll > W_REG:
        errs.append(f"{regs} unpacked + {2 * bl.unroll} accumulator vectors do not fit below the weights (v{W_REG}..v30)")
    if h < 1 or w < 2: errs.append("empty image")
    if h * w * c >= 1 << 24: errs.append("image too large for the row offsets")
    if ow // bl.unroll > 1024: errs.append("more than 1024 iterations a row (loop0's immediate count)")
    return errs


def prepack_w(wt: np.ndarray) -> np.ndarray:
    """w[C, 3, 3, 1] int8 -> int16 [9 taps][64 lanes] (lane = channel, as vunpack leaves it)."""
    return np.ascontiguousarray(wt.reshape(C, 9).T.astype(np.int16))


def _tied(load_text: str, unpack_text: str, k: int) -> list[vliw.Instr]:
    """A .tmp load and the unpack that reads it in the same packet. The load writes no
    register (its value lives in that packet only), so the pair is tied by a private name
    (a same-packet use, as for ``.new``) instead of by the register the text names."""
    tag = f"tmp{k}"
    ld = replace(vliw.classify(load_text), defs=(tag,), region="in")
    up = vliw.classify(unpack_text)
    return [ld, replace(up, uses=tuple(u for u in up.uses if u != TMP), new_uses=(tag,),
                        early_uses=tuple(u for u in up.early_uses if u != TMP))]


def compute(bl: Blocking, x0: int, w: int) -> list[vliw.Instr]:
    """Loads + unpacks of the pairs in the image and the multiplies of the taps in the
    image for the iteration whose first output pixel is ``x0``; the row pointers step."""
    s, U, npair = bl.stride, bl.unroll, pairs(bl)
    p0 = s * x0 - 2                        # first pixel of the first pair the row pointers address
    out: list[vliw.Instr] = []
    for dy, rr in enumerate(ROW_REGS):
        for q in range(npair):
            px = p0 + 2 * q
            if not 0 <= px < w: continue
            k = dy * npair + q
            out += _tied(f"{TMP}.tmp = vmem({rr}+#{q})", f"v{2 * k + 1}:{2 * k}.h = vunpack({TMP}.b)", k)
    for o in range(U):
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
    out += [vliw.classify(f"{rr} = add({rr},#{s * U * C})") for rr in ROW_REGS]
    return out


def drain(bl: Blocking) -> list[vliw.Instr]:
    """Channel order back (vshuff by words) and the stores of the previous iteration's
    accumulators: software pipelining by one stage, so that the next iteration's loads
    and first multiplies share packets with them (a store reads its accumulator before
    the packet's first multiply overwrites it)."""
    out: list[vliw.Instr] = []
    for o in range(bl.unroll):
        a = ACC_REG + 2 * o
        out.append(vliw.classify(f"v{a + 1}:{a} = vshuff(v{a + 1},v{a},{SHUF_REG})"))
        out += [replace(vliw.classify(f"vmem({OUT_REG}+#{2 * o + j}) = v{a + j}"), region="out") for j in (0, 1)]
    out.append(vliw.classify(f"{OUT_REG} = add({OUT_REG},#{bl.unroll * C * 4})"))
    return out


def _pack(instrs: list[vliw.Instr], timeout_s: float) -> tuple[list[list[str]], vliw.PackResult]:
    res = vliw.pack(instrs, timeout_s=timeout_s)
    asg = res.assignment or list(range(len(instrs)))
    pk: list[list[str]] = [[] for _ in range(max(asg) + 1)]
    for ins, p in zip(instrs, asg): pk[p].append(ins.text)
    return [p for p in pk if p], res


def row_prologue(bl: Blocking, h: int, w: int, y: int) -> list[vliw.Instr]:
    """Row pointers of output row y (input rows s*y-1 .. s*y+1, or the zero row) and its output."""
    s, ow = bl.stride, out_size(w, bl.stride)
    out = []
    for dy, rr in enumerate(ROW_REGS):
        iy = s * y + dy - 1
        base, off = ("r0", iy * w * C) if 0 <= iy < h else ("r3", 0)
        out.append(vliw.classify(f"{rr} = add({base},##{off - 2 * C})"))   # the first iteration's pair -1
    out.append(vliw.classify(f"{OUT_REG} = add(r2,##{y * ow * C * 4})"))
    return out


@dataclass
class Packing:
    prologue: list[list[str]]
    first: list[list[str]]         # the first iteration's compute (left edge)
    body: list[list[str]]          # hardware-loop body: drain + compute (empty without middle iterations)
    last: list[list[str]]          # drain + the last iteration's compute (right edge), or empty
    epilogue: list[list[str]]      # the last drain
    middle: int                    # iterations run by the loop body
    proved: bool
    solve_s: float


def iterations(bl: Blocking, w: int) -> tuple[int, bool]:
    """(iterations a row, whether the last one touches the right edge)."""
    ow = out_size(w, bl.stride)
    return ow // bl.unroll, bl.stride * (ow - 1) + 1 >= w


def blocks(bl: Blocking, h: int, w: int) -> dict[str, list[vliw.Instr]]:
    """The straight blocks of one row, in order (the loop body once)."""
    n, right = iterations(bl, w)
    last = right and n > 1
    middle = n - 1 - int(last)
    out = {"prologue": row_prologue(bl, h, w, min(1, h - 1)), "first": compute(bl, 0, w)}
    if middle: out["body"] = drain(bl) + compute(bl, bl.unroll, w)
    if last: out["last"] = drain(bl) + compute(bl, (n - 1) * bl.unroll, w)
    out["epilogue"] = drain(bl)
    return out


@lru_cache(maxsize=64)
def packing(bl: Blocking, h: int, w: int, timeout_s: float = 20.0) -> Packing:
    """The packets of one row (the same for every row): Z3 packs each straight block."""
    n, right = iterations(bl, w)
    middle = n - 1 - int(right and n > 1)
    got, proved, t = {}, True, 0.0
    for k, ins in blocks(bl, h, w).items():
        got[k], r = _pack(ins, timeout_s)
        proved &= r.proved
        t += r.solve_s
    return Packing(got["prologue"], got["first"], got.get("body", []), got.get("last", []), got["epilogue"],
                   middle, proved, t)


def modeled_packets(bl: Blocking, h: int, w: int, pk: Packing | None = None) -> int:
    """Rows x (prologue + peeled blocks + loop body x middle iterations) + the frame."""
    pk = pk or packing(bl, h, w)
    oh = out_size(h, bl.stride)
    loop_setup = 1 if pk.middle > 1 else 0
    per_row = len(pk.prologue) + loop_setup + len(pk.first) + len(pk.last) + len(pk.epilogue) + pk.middle * len(pk.body)
    return FRAME_PACKETS + oh * per_row


FRAME_PACKETS = 9 + 2     # weight loads and the shuffle constant, then the return (and the call's packet)


def _fmt(p: list[str], end: str = "") -> str: return "{ " + "; ".join(p) + " }" + end


def emit_asm(bl: Blocking, h: int, w: int, pk: Packing | None = None) -> str:
    """dw_asm(r0 = input, r1 = prepacked weights, r2 = output, r3 = zero row)."""
    pk = pk or packing(bl, h, w)
    L = [".text", ".p2align 4", ".globl dw_asm", ".type dw_asm,@function", "dw_asm:"]
    L += [_fmt([f"v{W_REG + t} = vmem(r1++#1)"] + ([f"{SHUF_REG} = #-4"] if t == 0 else [])) for t in range(9)]
    ref = [i.text for i in row_prologue(bl, h, w, min(1, h - 1))]
    for y in range(out_size(h, bl.stride)):
        mine = [i.text for i in row_prologue(bl, h, w, y)]
        sub = dict(zip(ref, mine))            # same registers, this row's constants
        L += [_fmt([sub[t] for t in p]) for p in pk.prologue]
        L += [_fmt(p) for p in pk.first]
        if pk.middle == 1:
            L += [_fmt(p) for p in pk.body]
        elif pk.middle > 1:
            L.append(f"{{ loop0(.Ldw{y},#{pk.middle}) }}")
            L += [".p2align 4", f".Ldw{y}:"]
            L += [_fmt(p, ":endloop0" if i == len(pk.body) - 1 else "") for i, p in enumerate(pk.body)]
        L += [_fmt(p) for p in pk.last]
        L += [_fmt(p) for p in pk.epilogue]
    L += ["{ jumpr r31 }", ".size dw_asm, .-dw_asm"]
    return "\n".join(L) + "\n"


def c_program(h: int, w: int, stride: int, asm: str | None, x_first: bool = True) -> str:
    """Reads x (int8 [H,W,64]) and w (int8 [64,3,3,1]) from stdin in the kernel's input
    order, prepacks w outside the counted region, runs the kernel between two counter
    reads, writes out (int32 [OH,OW,64]) to stdout and the counts to stderr. Without
    ``asm``: the plain scalar C loop nest (the clang -O3 baseline)."""
    from .render import COUNTERS
    oh, ow = out_size(h, stride), out_size(w, stride)
    esc = asm.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n\"\n\"") if asm else ""
    reads = ["so_read_all(X, H*W*C)", "so_read_all(Wt, C*9)"]
    parts = [f"#define H {h}\n#define W {w}\n#define C {C}\n#define S {stride}\n#define OH {oh}\n#define OW {ow}\n"]
    if asm: parts.append(f'__asm__("{esc}");\nvoid dw_asm(const int8_t*, const int16_t*, int32_t*, const int8_t*);\n')
    parts.append(r"""
static int8_t Xbuf[H*W*C + 512] __attribute__((aligned(128)));   /* slack: peeled loads never read past it */
#define X (Xbuf + 256)
static int8_t Wt[C*9] __attribute__((aligned(128)));
static int16_t Wp[9*C] __attribute__((aligned(128)));
static int8_t Z[W*C + 512] __attribute__((aligned(128)));
static int32_t O[OH*OW*C] __attribute__((aligned(128)));
""" + "\n".join(COUNTERS) + "\n")
    if asm:
        parts.append("__attribute__((noinline)) void kernel(void) { dw_asm(X, Wp, O, Z + 256); }\n")
    else:
        parts.append(r"""
__attribute__((noinline)) void kernel(void) {
  for (int y = 0; y < OH; y++) for (int x = 0; x < OW; x++) for (int c = 0; c < C; c++) {
    int s = 0;
    for (int dy = 0; dy < 3; dy++) for (int dx = 0; dx < 3; dx++) {
      int iy = y*S + dy - 1, ix = x*S + dx - 1;
      if (iy >= 0 && iy < H && ix >= 0 && ix < W) s += X[(iy*W + ix)*C + c] * Wt[c*9 + dy*3 + dx];
    }
    O[(y*OW + x)*C + c] = s;
  }
}
""")
    parts.append(f"""
int so_main(void) {{
  if ({reads[0] if x_first else reads[1]} || {reads[1] if x_first else reads[0]}) return 3;
  for (int t = 0; t < 9; t++) for (int c = 0; c < C; c++) Wp[t*C + c] = Wt[c*9 + t];   /* prepack: not counted */
  {{ volatile unsigned char *o = (volatile unsigned char *)O; for (unsigned i = 0; i < sizeof O; i++) o[i] = 0xA5; }}
  unsigned c0[3], c1[3], e0[3], e1[3];
  so_counters(e0); so_counters(e1);
  so_counters(c0);
  kernel();
  so_counters(c1);
  if (so_write_all(O, sizeof O)) return 4;
  {{ unsigned n[3]; for (int i = 0; i < 3; i++) n[i] = (c1[i] - c0[i]) - (e1[i] - e0[i]);
    if (so_counters_out(n)) return 5; }}
  return 0;
}}
""")
    return "".join(parts)


def compile_o3(source: str):
    """``tools.compile_program`` at -O3 (the plain C baseline's flag; the asm is the same)."""
    old = tools.CFLAGS
    tools.CFLAGS = tuple("-O3" if f == "-O2" else f for f in old)
    try:
        return tools.compile_program(source + "\n/* -O3 */\n")
    finally:
        tools.CFLAGS = old


def render_geometry(g: dict[str, int], params: dict[str, int]) -> str:
    bl = Blocking(g["stride"], params["unroll"])
    return c_program(g["h"], g["w"], g["stride"], emit_asm(bl, g["h"], g["w"]), x_first=g["x_in"] == 0)


def render(program) -> str:
    """The templates' entry: the C program of a ``Native`` hvx_depthwise program."""
    nat = program.body[0]
    return render_geometry(dict(nat.geometry), dict(nat.params))


def run(x: np.ndarray, wt: np.ndarray, stride: int, bl: Blocking | None, timeout: float = 600.0):
    """x int8 [H,W,64], w int8 [64,3,3,1] -> (out int32 [OH,OW,64], (packets, instrs, hvx))
    or a Failure; ``bl`` None runs the plain C baseline (clang -O3)."""
    h, w = x.shape[:2]
    oh, ow = out_size(h, stride), out_size(w, stride)
    src = c_program(h, w, stride, emit_asm(bl, h, w) if bl else None)
    exe = compile_o3(src)
    if isinstance(exe, tools.Failure): return exe
    r = tools.run_counted(exe, x.astype(np.int8).tobytes() + wt.astype(np.int8).tobytes(), oh * ow * C * 4, timeout)
    if isinstance(r, tools.Failure): return r
    data, counts = r
    return np.frombuffer(data, dtype=np.int32).reshape(oh, ow, C), counts


def reference(x: np.ndarray, wt: np.ndarray, stride: int) -> np.ndarray:
    h, w = x.shape[:2]
    xp = np.pad(x.astype(np.int64), ((1, 1), (1, 1), (0, 0)))
    oh, ow = out_size(h, stride), out_size(w, stride)
    out = np.zeros((oh, ow, C), np.int64)
    for dy in range(3):
        for dx in range(3):
            out += xp[dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (ow - 1) + 1:stride] * wt[:, dy, dx, 0]
    return out
