"""int8 NHWC depthwise 3x3 convolution (64 channels, stride 1 or 2, pad 1) in HVX
assembly with explicit packets (issue 23; schedule family ``hvx_depthwise``).

out[y, x, c] (int32) = sum_{dy,dx} in[s*y+dy-1, s*x+dx-1, c] * w[c, dy, dx]

Layout: 64 channels are half a vector, so one aligned 128-byte ``vmem`` holds a pixel
pair. ``vunpack`` widens it to halfwords (a register pair: one pixel each, 64 lanes),
and the widening vector x vector multiply ``Vdd.w (+)= vmpy(Vu.h, Vv.h)`` multiplies it by
the tap's weights (prepacked once, outside the counted region, as 64 int16 lanes a tap,
nine vectors kept in v22..v30) into an int32 pair: even channels in the low vector, odd
in the high. One ``vshuff`` by words per output pixel restores channel order before the
two stores. Every product and sum is exact in int32 (no saturation is reachable). With
the library's requantize epilogue (qconv2d) a pixel pair leaves as 128 int8 bytes instead:
bias, rounding shifts with saturation and the Q15 multiplier in HVX's own pack-and-round
instructions (bit-exact against ``kernels.reference.requantize``).

The instruction stream, its packing (``search.vliw.pack``) and the packet model live in
``search/families/hvx_depthwise.py``; this module emits exactly those packets (each row's
constants substituted into the shared packing), wraps them in a C program for qemu, and
runs it. Rows above and below the image read a zero row (the ``zero`` argument).
"""
from __future__ import annotations

import numpy as np

from ...ir import hvx_depthwise as tpl
from ...search.families import hvx_depthwise as fam
from . import tools

C = tpl.C


def _fmt(p, end: str = "") -> str: return "{ " + "; ".join(p) + " }" + end


def emit_asm(g: dict[str, int], params: dict[str, int]) -> str:
    """dw_asm(r0 = input, r1 = prepacked weights, r2 = output, r3 = zero row): the family's
    packets, row after row (each row's constants substituted into the shared packing)."""
    pk = fam.packing(g, params)
    L = [".text", ".p2align 4", ".globl dw_asm", ".type dw_asm,@function", "dw_asm:"]
    consts = [f"{fam.SHUF_REG} = #-4"]
    if g.get("requant"): consts += [f"{fam.PRE_REG} = #{g['pre']}", f"{fam.POST_REG} = #{g['post']}", f"{fam.DEAL_REG} = #-2"]
    L += [_fmt([f"v{fam.W_REG + t} = vmem(r1++#1)"] + consts[t:t + 1]) for t in range(9)]   # r1 ends at the bias vectors
    ref = fam.row_prologue(g, min(1, g["oh"] - 1))
    for y in range(g["oh"]):
        sub = dict(zip(ref, fam.row_prologue(g, y)))       # same registers, this row's constants
        L += [_fmt([sub[t] for t in p]) for p in pk.get("prologue")]
        L += [_fmt(p) for p in pk.get("first")]
        body = pk.get("body")
        if pk.middle == 1:
            L += [_fmt(p) for p in body]
        elif pk.middle > 1:
            L += [f"{{ loop0(.Ldw{y},#{pk.middle}) }}", ".p2align 4", f".Ldw{y}:"]
            L += [_fmt(p, ":endloop0" if i == len(body) - 1 else "") for i, p in enumerate(body)]
        L += [_fmt(p) for p in pk.get("last")]
        L += [_fmt(p) for p in pk.get("epilogue")]
    L += ["{ jumpr r31 }", ".size dw_asm, .-dw_asm"]
    return "\n".join(L) + "\n"


def c_program(g: dict[str, int], asm: str | None) -> str:
    """Reads the kernel's inputs in its input order from stdin (x int8 [H,W,64], w int8
    [64,3,3,1], with the requantize bias and mult int32 [64]), prepacks w (and the bias and
    multiplier vectors) outside the counted region, runs the kernel between two counter
    reads, writes out (int32, or int8 with the requantize, [OH,OW,64]) to stdout and the
    counts to stderr. Without ``asm``: the plain scalar C loop nest (the clang -O3 baseline)."""
    from .render import COUNTERS
    h, w, stride, oh, ow, rq = g["h"], g["w"], g["stride"], g["oh"], g["ow"], g.get("requant", 0)
    esc = asm.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n\"\n\"") if asm else ""
    bufs = {g["x_in"]: "so_read_all(X, H*W*C)", g["w_in"]: "so_read_all(Wt, C*9)"}
    if rq: bufs.update({g["bias_in"]: "so_read_all(Bias, C*4)", g["mult_in"]: "so_read_all(Mult, C*4)"})
    reads = " || ".join(bufs[i] for i in sorted(bufs))
    otype = "int8_t" if rq else "int32_t"
    parts = [f"#define H {h}\n#define W {w}\n#define C {C}\n#define S {stride}\n#define OH {oh}\n#define OW {ow}\n"
             + (f"#define PRE {g['pre']}\n#define POST {g['post']}\n" if rq else "")]
    if asm: parts.append(f'__asm__("{esc}");\nvoid dw_asm(const int8_t*, const int16_t*, {otype}*, const int8_t*);\n')
    parts.append(r"""
static int8_t Xbuf[H*W*C + 512] __attribute__((aligned(128)));   /* slack: peeled loads never read past it */
#define X (Xbuf + 256)
static int8_t Wt[C*9] __attribute__((aligned(128)));
static int32_t Bias[C], Mult[C];
static int16_t Wp[9*C + 3*64] __attribute__((aligned(128)));      /* 9 tap vectors, then bias even/odd, mult */
static int8_t Z[W*C + 512] __attribute__((aligned(128)));
""" + f"static {otype} O[OH*OW*C] __attribute__((aligned(128)));\n" + "\n".join(COUNTERS) + "\n")
    epi = ("static inline int8_t epi(int32_t a, int c) {\n"
           "  int32_t y = (a + Bias[c] + (1 << (PRE - 1))) >> PRE; y = y < -32768 ? -32768 : y > 32767 ? 32767 : y;\n"
           "  int32_t z = (2 * y * Mult[c] + (1 << 15)) >> 16;\n"
           "  z = (z + (1 << (POST - 1))) >> POST; return (int8_t)(z < -128 ? -128 : z > 127 ? 127 : z);\n}\n"
           "#define ACC_AT(y, x) tmp\n"
           "#define EPILOGUE(y, x) for (int c = 0; c < C; c++) O[((y)*OW + (x))*C + c] = epi(tmp[c], c)\n") if rq else \
        "#define ACC_AT(y, x) (&O[((y)*OW + (x))*C])   /* int32 out: accumulate in place */\n#define EPILOGUE(y, x)\n"
    parts.append(epi)
    if asm:
        parts.append("__attribute__((noinline)) void kernel(void) { dw_asm(X, Wp, O, Z + 256); }\n")
    else:
        # taps outside the image are skipped once per pixel, not per channel; the channel
        # loop is innermost over contiguous bytes (the plain C an engineer writes first)
        parts.append(r"""
static int32_t tmp[C];
__attribute__((noinline)) void kernel(void) {
  for (int y = 0; y < OH; y++) for (int x = 0; x < OW; x++) {
    int32_t *acc = ACC_AT(y, x);
    for (int c = 0; c < C; c++) acc[c] = 0;
    for (int dy = 0; dy < 3; dy++) {
      int iy = y*S + dy - 1;
      if (iy < 0 || iy >= H) continue;
      for (int dx = 0; dx < 3; dx++) {
        int ix = x*S + dx - 1;
        if (ix < 0 || ix >= W) continue;
        const int8_t *xp = &X[(iy*W + ix)*C];
        const int16_t *wp = &Wp[(dy*3 + dx)*C];   /* the prepacked weights: contiguous too */
        for (int c = 0; c < C; c++) acc[c] += xp[c] * wp[c];
      }
    }
    EPILOGUE(y, x);
  }
}
""")
    parts.append(f"""
int so_main(void) {{
  if ({reads}) return 3;
  for (int t = 0; t < 9; t++) for (int c = 0; c < C; c++) Wp[t*C + c] = Wt[c*9 + t];   /* prepack: not counted */
  {{ int32_t *b = (int32_t *)(Wp + 9*C); for (int i = 0; i < C/2; i++) {{ b[i] = Bias[2*i]; b[C/2 + i] = Bias[2*i + 1]; }}
     for (int c = 0; c < C; c++) Wp[9*C + 128 + c] = (int16_t)Mult[c]; }}
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


def render(program) -> str:
    """The templates' entry: the C program of a ``Native`` hvx_depthwise program."""
    nat = program.body[0]
    g = dict(nat.geometry)
    return c_program(g, emit_asm(g, dict(nat.params)))


def geometry(h: int, w: int, stride: int) -> dict[str, int]:
    """The matcher's geometry of an [H, W, 64] input (x before w)."""
    return {"h": h, "w": w, "c": C, "stride": stride, "oh": tpl.out_size(h, stride), "ow": tpl.out_size(w, stride),
            "x_in": 0, "w_in": 1, "requant": 0}


def run(x: np.ndarray, wt: np.ndarray, stride: int, params: dict[str, int] | None,
        requant: tuple[np.ndarray, np.ndarray, int, int] | None = None, timeout: float = 600.0):
    """x int8 [H,W,64], w int8 [64,3,3,1] (and with ``requant`` = (bias, mult, pre, post)
    the int8 epilogue) -> (out [OH,OW,64] int32 or int8, (packets, instrs, hvx)) or a
    Failure; ``params`` (unroll, early) None runs the plain C baseline (clang -O3)."""
    g = geometry(x.shape[0], x.shape[1], stride)
    if requant is not None: g.update(requant=1, bias_in=2, mult_in=3, pre=requant[2], post=requant[3])
    errs = tpl.check(g, params) if params is not None else []
    if errs: raise ValueError("; ".join(errs))
    exe = tools.compile_o3(c_program(g, emit_asm(g, params) if params is not None else None))
    if isinstance(exe, tools.Failure): return exe
    stdin = x.astype(np.int8).tobytes() + wt.astype(np.int8).tobytes()
    if requant is not None: stdin += requant[0].astype(np.int32).tobytes() + requant[1].astype(np.int32).tobytes()
    isz = 1 if requant is not None else 4
    r = tools.run_counted(exe, stdin, g["oh"] * g["ow"] * C * isz, timeout)
    if isinstance(r, tools.Failure): return r
    data, counts = r
    return np.frombuffer(data, dtype=np.int8 if requant is not None else np.int32).reshape(g["oh"], g["ow"], C), counts


def reference(x: np.ndarray, wt: np.ndarray, stride: int) -> np.ndarray:
    h, w = x.shape[:2]
    xp = np.pad(x.astype(np.int64), ((1, 1), (1, 1), (0, 0)))
    oh, ow = tpl.out_size(h, stride), tpl.out_size(w, stride)
    out = np.zeros((oh, ow, C), np.int64)
    for dy in range(3):
        for dx in range(3):
            out += xp[dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (ow - 1) + 1:stride] * wt[:, dy, dx, 0]
    return out
