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


def prepack_w(wt: np.ndarray) -> np.ndarray:
    """w[C, 3, 3, 1] int8 -> int16 [9 taps][64 lanes] (lane = channel, as vunpack leaves it);
    the C program does the same before the counted region."""
    return np.ascontiguousarray(wt.reshape(C, 9).T.astype(np.int16))


def _fmt(p, end: str = "") -> str: return "{ " + "; ".join(p) + " }" + end


def emit_asm(g: dict[str, int], params: dict[str, int]) -> str:
    """dw_asm(r0 = input, r1 = prepacked weights, r2 = output, r3 = zero row): the family's
    packets, row after row (each row's constants substituted into the shared packing)."""
    pk = fam.packing(g, params)
    L = [".text", ".p2align 4", ".globl dw_asm", ".type dw_asm,@function", "dw_asm:"]
    L += [_fmt([f"v{fam.W_REG + t} = vmem(r1++#1)"] + ([f"{fam.SHUF_REG} = #-4"] if t == 0 else [])) for t in range(9)]
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
    """Reads x (int8 [H,W,64]) and w (int8 [64,3,3,1]) from stdin in the kernel's input
    order, prepacks w outside the counted region, runs the kernel between two counter
    reads, writes out (int32 [OH,OW,64]) to stdout and the counts to stderr. Without
    ``asm``: the plain scalar C loop nest (the clang -O3 baseline)."""
    from .render import COUNTERS
    h, w, stride, oh, ow = g["h"], g["w"], g["stride"], g["oh"], g["ow"]
    x_first = g["x_in"] == 0
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
        # taps outside the image are skipped once per pixel, not per channel; the channel
        # loop is innermost over contiguous bytes (the plain C an engineer writes first)
        parts.append(r"""
__attribute__((noinline)) void kernel(void) {
  for (int y = 0; y < OH; y++) for (int x = 0; x < OW; x++) {
    int32_t *o = &O[(y*OW + x)*C];
    for (int c = 0; c < C; c++) o[c] = 0;
    for (int dy = 0; dy < 3; dy++) {
      int iy = y*S + dy - 1;
      if (iy < 0 || iy >= H) continue;
      for (int dx = 0; dx < 3; dx++) {
        int ix = x*S + dx - 1;
        if (ix < 0 || ix >= W) continue;
        const int8_t *xp = &X[(iy*W + ix)*C];
        const int16_t *wp = &Wp[(dy*3 + dx)*C];   /* the prepacked weights: contiguous too */
        for (int c = 0; c < C; c++) o[c] += xp[c] * wp[c];
      }
    }
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


def render(program) -> str:
    """The templates' entry: the C program of a ``Native`` hvx_depthwise program."""
    nat = program.body[0]
    g = dict(nat.geometry)
    return c_program(g, emit_asm(g, dict(nat.params)))


def geometry(h: int, w: int, stride: int) -> dict[str, int]:
    """The matcher's geometry of an [H, W, 64] input (x before w)."""
    return {"h": h, "w": w, "c": C, "stride": stride, "oh": tpl.out_size(h, stride), "ow": tpl.out_size(w, stride),
            "x_in": 0, "w_in": 1}


def run(x: np.ndarray, wt: np.ndarray, stride: int, params: dict[str, int] | None, timeout: float = 600.0):
    """x int8 [H,W,64], w int8 [64,3,3,1] -> (out int32 [OH,OW,64], (packets, instrs, hvx))
    or a Failure; ``params`` (unroll, early) None runs the plain C baseline (clang -O3)."""
    g = geometry(x.shape[0], x.shape[1], stride)
    errs = tpl.check(g, params) if params is not None else []
    if errs: raise ValueError("; ".join(errs))
    exe = compile_o3(c_program(g, emit_asm(g, params) if params is not None else None))
    if isinstance(exe, tools.Failure): return exe
    r = tools.run_counted(exe, x.astype(np.int8).tobytes() + wt.astype(np.int8).tobytes(), g["oh"] * g["ow"] * C * 4, timeout)
    if isinstance(r, tools.Failure): return r
    data, counts = r
    return np.frombuffer(data, dtype=np.int32).reshape(g["oh"], g["ow"], C), counts


def reference(x: np.ndarray, wt: np.ndarray, stride: int) -> np.ndarray:
    h, w = x.shape[:2]
    xp = np.pad(x.astype(np.int64), ((1, 1), (1, 1), (0, 0)))
    oh, ow = tpl.out_size(h, stride), tpl.out_size(w, stride)
    out = np.zeros((oh, ow, C), np.int64)
    for dy in range(3):
        for dx in range(3):
            out += xp[dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (ow - 1) + 1:stride] * wt[:, dy, dx, 0]
    return out
