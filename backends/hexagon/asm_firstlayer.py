"""int8 NHWC 3x3 stride-2 convolution from 3 to 32 channels (an image network's first
layer) in HVX assembly with explicit packets (issue 23; schedule family ``hvx_firstlayer``).

out[y, x, k] (int32) = sum_{dy,dx,c} in[2y+dy-1, 2x+dx-1, c] * w[k, dy, dx, c]

The activations are read in their natural layout, the weights are prepacked once outside
the counted region into 18 vrmpy vectors (even and odd pixel of a pair x 3 rows x 3
words; per lane the 4 byte weights + 128, 128 where a byte is no tap of that pixel). The
instruction stream, its packing (``search.vliw.pack``) and the packet model live in
``search/families/hvx_firstlayer.py``; this module emits exactly those packets (each row's
constants substituted into the shared packing), wraps them in a C program for qemu and
runs it. With the library's requantize epilogue (qconv2d) four output pixels leave as one
vector of int8 (the bias and the interleaved Q15 multipliers prepacked after the weights).
"""
from __future__ import annotations

import numpy as np

from ...ir import hvx_firstlayer as tpl
from ...search.families import hvx_firstlayer as fam
from . import tools

CIN, COUT = tpl.CIN, tpl.COUT


def _fmt(p, end: str = "") -> str: return "{ " + "; ".join(p) + " }" + end


def _loop(label: str, body, n: int) -> list[str]:
    if n < 1: return []
    if n == 1: return [_fmt(p) for p in body]
    return [f"{{ loop0({label},#{n}) }}", ".p2align 4", f"{label}:"] + \
        [_fmt(p, ":endloop0" if i == len(body) - 1 else "") for i, p in enumerate(body)]


def emit_asm(g: dict[str, int], p: dict[str, int]) -> str:
    """fl_asm(r0 = input, r1 = prepacked weights, r2 = output, r3 = zero row, r4 = scratch)."""
    pk, tr = fam.packing(g, p), fam.trips(g, p)
    L = [".text", ".p2align 4", ".globl fl_asm", ".type fl_asm,@function", "fl_asm:", "{ allocframe(#48) }"]
    L += [f"{{ memd(r29+#{8 * i}) = r{17 + 2 * i}:{16 + 2 * i} }}" for i in range(6)]
    L += ["{ r28 = ##-2139062144 }", f"{{ v{fam.M128} = vsplat(r28) }}"]             # 0x80808080: -128 bytes
    L += [f"{{ v{v} = vmem(r1++#1) }}" for v in range(18)]
    ref = min(1, g["oh"] - 1)
    ref_a, ref_m = fam.prologue_a(g, ref), fam.prologue_main(g, ref, p)
    for y in range(g["oh"]):
        sub = {**dict(zip(ref_a, fam.prologue_a(g, y))), **dict(zip(ref_m, fam.prologue_main(g, y, p)))}
        def rows(block: str): return [_fmt([sub.get(t, t) for t in q]) for q in pk.get(block)]
        L += rows("pro_a") + _loop(f".Lfa{y}", pk.get("pass_a"), tr["pass_a"])
        L += rows("pro_b") + _loop(f".Lfb{y}", pk.get("pass_b"), tr["pass_b"])
        L += rows("pro_main") + rows("first") + rows("first2")
        L += _loop(f".Lfm{y}", pk.get("body") + pk.get("body2"), tr["body"]) + rows("last") + rows("epilogue")
    L += [f"{{ r{17 + 2 * i}:{16 + 2 * i} = memd(r29+#{8 * i}) }}" for i in range(6)]
    L += ["{ dealloc_return }", ".size fl_asm, .-fl_asm"]
    return "\n".join(L) + "\n"


def c_program(g: dict[str, int], asm: str | None, pre: int = 2) -> str:
    """Reads x (int8 [H,W,3]) and w (int8 [32,3,3,3]) from stdin in the kernel's input
    order, prepacks w outside the counted region, runs the kernel between two counter
    reads, writes out (int32 [OH,OW,32]) to stdout and the counts to stderr. Without
    ``asm``: the plain scalar C loop nest (the clang -O3 baseline)."""
    from .render import COUNTERS
    h, w, oh, ow, rq = g["h"], g["w"], g["oh"], g["ow"], g.get("requant", 0)
    lay = fam.scratch_layout(w, pre)
    esc = asm.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n\"\n\"") if asm else ""
    bufs = {g["x_in"]: "so_read_all(X, H*W*CI)", g["w_in"]: "so_read_all(Wt, CO*27)"}
    if rq: bufs.update({g["bias_in"]: "so_read_all(Bias, CO*4)", g["mult_in"]: "so_read_all(Mult, CO*4)"})
    reads = [bufs[i] for i in sorted(bufs)]
    otype = "int8_t" if rq else "int32_t"
    parts = [f"#define H {h}\n#define W {w}\n#define CI {CIN}\n#define CO {COUT}\n#define OH {oh}\n#define OW {ow}\n"
             f"#define SCRATCH {lay['bytes']}\n" + (f"#define PRE {g['pre']}\n#define POST {g['post']}\n" if rq else "")]
    if asm: parts.append(f'__asm__("{esc}");\nvoid fl_asm(const int8_t*, const uint8_t*, {otype}*, const int8_t*, int32_t*);\n')
    parts.append(r"""
static int8_t Xbuf[H*W*CI + 512] __attribute__((aligned(128)));   /* slack: the pre-pass reads whole vectors */
#define X (Xbuf + 128)
static int8_t Wt[CO*27] __attribute__((aligned(128)));
static uint8_t Wp[18*CO*4 + 256] __attribute__((aligned(128)));   /* 18 weight vectors, then bias, multipliers */
static int32_t Bias[CO], Mult[CO];
static int8_t Wt2[27*CO] __attribute__((aligned(128)));
static int8_t Z[W*CI + 512] __attribute__((aligned(128)));
static int32_t S[SCRATCH / 4] __attribute__((aligned(128)));
""" + f"static {otype} O[OH*OW*CO] __attribute__((aligned(128)));\n" + "\n".join(COUNTERS) + "\n")
    parts.append(("static inline int8_t epi(int32_t a, int c) {\n"
                  "  int32_t y = (a + Bias[c] + (1 << (PRE - 1))) >> PRE; y = y < -32768 ? -32768 : y > 32767 ? 32767 : y;\n"
                  "  int32_t z = (2 * y * Mult[c] + (1 << 15)) >> 16;\n"
                  "  z = (z + (1 << (POST - 1))) >> POST; return (int8_t)(z < -128 ? -128 : z > 127 ? 127 : z);\n}\n"
                  "static int32_t tmp[CO];\n#define ACC_AT(y, x) tmp\n"
                  "#define EPILOGUE(y, x) for (int k = 0; k < CO; k++) O[((y)*OW + (x))*CO + k] = epi(tmp[k], k)\n") if rq else
                 "#define ACC_AT(y, x) (&O[((y)*OW + (x))*CO])   /* int32 out: accumulate in place */\n#define EPILOGUE(y, x)\n")
    if asm:
        parts.append("__attribute__((noinline)) void kernel(void) { fl_asm(X, Wp, O, Z + 128, S); }\n")
    else:
        # the output channels innermost over weights transposed to [tap][k] (prepacked like
        # the HVX kernel's, outside the counted region): each input byte is loaded once and
        # feeds 32 independent accumulators, taps outside the image skipped once a pixel
        parts.append(r"""
__attribute__((noinline)) void kernel(void) {
  for (int y = 0; y < OH; y++) for (int x = 0; x < OW; x++) {
    int32_t *o = ACC_AT(y, x);
    for (int k = 0; k < CO; k++) o[k] = 0;
    for (int dy = 0; dy < 3; dy++) {
      int iy = 2*y + dy - 1;
      if (iy < 0 || iy >= H) continue;
      for (int dx = 0; dx < 3; dx++) {
        int ix = 2*x + dx - 1;
        if (ix < 0 || ix >= W) continue;
        for (int c = 0; c < CI; c++) {
          int v = X[(iy*W + ix)*CI + c];
          const int8_t *wp = &Wt2[((dy*3 + dx)*CI + c)*CO];
          for (int k = 0; k < CO; k++) o[k] += v * wp[k];
        }
      }
    }
    EPILOGUE(y, x);
  }
}
""")
    parts.append(f"""
static void prepack(void) {{   /* Wp[par][dy][k][lane][b] = w + 128 of the byte's tap, 128 where none */
  for (int par = 0; par < 2; par++) for (int dy = 0; dy < 3; dy++) for (int k = 0; k < 3; k++)
    for (int l = 0; l < CO; l++) for (int b = 0; b < 4; b++) {{
      int rel = 4*k + b + (par ? -3 : -1);
      Wp[(((par*3 + dy)*3 + k)*CO + l)*4 + b] = (rel >= 0 && rel < 9) ? (uint8_t)(Wt[l*27 + dy*9 + rel] + 128) : 128;
    }}
  for (int t = 0; t < 27; t++) for (int l = 0; l < CO; l++) Wt2[t*CO + l] = Wt[l*27 + t];   /* the plain C's [tap][k] */
  {{ int32_t *b = (int32_t *)(Wp + 18*CO*4); int16_t *m = (int16_t *)(Wp + 18*CO*4 + 128);
     for (int l = 0; l < CO; l++) {{ b[l] = Bias[l]; m[2*l] = m[2*l + 1] = (int16_t)Mult[l]; }} }}   /* the halfword interleave */
}}
int so_main(void) {{
  if ({" || ".join(reads)}) return 3;
  prepack();
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
    """The templates' entry: the C program of a ``Native`` hvx_firstlayer program."""
    nat = program.body[0]
    g = dict(nat.geometry)
    p = dict(nat.params)
    return c_program(g, emit_asm(g, p), p["pre"])


def geometry(h: int, w: int) -> dict[str, int]:
    return {"h": h, "w": w, "oh": tpl.out_size(h), "ow": tpl.out_size(w), "x_in": 0, "w_in": 1, "requant": 0}


def run(x: np.ndarray, wt: np.ndarray, params: dict[str, int] | None,
        requant: tuple[np.ndarray, np.ndarray, int, int] | None = None, timeout: float = 600.0):
    """x int8 [H,W,3], w int8 [32,3,3,3] (and with ``requant`` = (bias, mult, pre, post) the
    int8 epilogue) -> (out [OH,OW,32] int32 or int8, (packets, instrs, hvx)) or a Failure;
    ``params`` None runs the plain C baseline (clang -O3)."""
    g = geometry(x.shape[0], x.shape[1])
    if requant is not None: g.update(requant=1, bias_in=2, mult_in=3, pre=requant[2], post=requant[3])
    if x.shape[1] % 4: raise ValueError(f"width {x.shape[1]} is not a multiple of 4")
    errs = tpl.check(g, params) if params is not None else []
    if errs: raise ValueError("; ".join(errs))
    exe = tools.compile_o3(c_program(g, emit_asm(g, params), params["pre"]) if params is not None else c_program(g, None))
    if isinstance(exe, tools.Failure): return exe
    stdin = x.astype(np.int8).tobytes() + wt.astype(np.int8).tobytes()
    if requant is not None: stdin += requant[0].astype(np.int32).tobytes() + requant[1].astype(np.int32).tobytes()
    odt = np.int8 if requant is not None else np.int32
    r = tools.run_counted(exe, stdin, g["oh"] * g["ow"] * COUT * np.dtype(odt).itemsize, timeout)
    if isinstance(r, tools.Failure): return r
    data, counts = r
    return np.frombuffer(data, dtype=odt).reshape(g["oh"], g["ow"], COUT), counts


def reference(x: np.ndarray, wt: np.ndarray) -> np.ndarray:
    h, w = x.shape[:2]
    xp = np.pad(x.astype(np.int64), ((1, 1), (1, 1), (0, 0)))
    oh, ow = tpl.out_size(h), tpl.out_size(w)
    out = np.zeros((oh, ow, COUT), np.int64)
    for dy in range(3):
        for dx in range(3):
            out += xp[dy:dy + 2 * (oh - 1) + 1:2, dx:dx + 2 * (ow - 1) + 1:2] @ wt[:, dy, dx, :].astype(np.int64).T
    return out
