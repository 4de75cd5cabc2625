"""Template of the ``hvx_gemm`` family: the int8 GEMM / NHWC convolution micro-kernel of
``search/families/hvx.py`` emitted as HVX assembly with the packets its packer chose.

``emit(g, params)`` writes ``hvx_kernel(r0 = activations, r1 = packed weights, r2 = output,
r3 = corrections, r4 = requantize constants[, r5 = a fused residual add's other operand])``: every tile's prologue, segments (a ``loop0``
hardware loop each) and epilogue, one ``{ ... }`` packet per packet of the model, closed by
``:endloop0``.

``render(program)`` wraps it in a freestanding C program (``tools.STARTUP``) that reads the
kernel's inputs in their natural layout from stdin and, outside the counted region, packs
the weights into the ``vrmpy`` layout ([N/32J][K/4][J][32 lanes][4 k], bytes w ^ 0x80 = w + 128
as unsigned; J interleaved blocks with the precomputed correction, else 1) and a fused
requantize's bias and multiplier vectors. Counted (qemu's c20/c21/c22 around the call): for a
convolution with padding, the copy of the image into the interior of a zero-bordered buffer
(the border is zeroed once at allocation: what the previous layer's epilogue would write
into); the correction pass (``so_corr``, HVX intrinsics where the shapes fit, else scalar C);
the assembly; and for a requantized output not fused, the int32 -> int8 pass (HVX intrinsics
``requant.HELPERS``). ``c_program(..., parts=True)`` (the bench's build only) also reads c20
between these phases.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np

from ...ir import hvx
from ...ir.program import Native, Program
from ...search.families import hvx as fam
from . import requant
from .render import COUNTERS, POISON

ENTRY = "hvx_kernel"
SAVE = [f"memd(r29+#{8 * i}) = r{17 + 2 * i}:{16 + 2 * i}" for i in range(6)]
RESTORE = [f"r{17 + 2 * i}:{16 + 2 * i} = memd(r29+#{8 * i})" for i in range(6)]


def _pk(texts: list[str], last_endloop: bool = False) -> list[str]:
    pk = fam.packets(texts)
    return ["{ " + "; ".join(p) + (" }:endloop0" if last_endloop and q == len(pk) - 1 else " }") for q, p in enumerate(pk)]


def emit(g: dict[str, int], p: dict[str, int]) -> str:
    """The kernel's assembly for geometry ``g`` and parameters ``p`` (every packet braced)."""
    lines = [".text", ".p2align 4", f".globl {ENTRY}", f".type {ENTRY},@function", f"{ENTRY}:", "{ allocframe(#64) }"]
    lines += ["{ " + s + " }" for s in SAVE]
    if p["corr"] == 0:
        lines += ["{ r28 = ##-2139062144 }", f"{{ v{fam.regs(p['rows'], p['blocks'])['splat'][0]} = vsplat(r28) }}"]  # 0x80808080
    if p["fuse"]:   # the fused requantize's bias and multiplier vectors (r4 = the packed pair)
        bias, mult = fam.qregs(p["rows"], p["blocks"], p["unroll"])
        lines += [f"{{ v{v} = vmem(r4+#{q}) }}" for q, v in enumerate(bias + mult)]
        if g.get("relu"):   # the fused ReLU6's zero vector
            z = fam.zero_reg(p["rows"], p["blocks"], p["unroll"])
            lines.append(f"{{ v{z} = vxor(v{z},v{z}) }}")
        if g.get("add"):    # a fused residual add: its pointer (r5) kept in the frame, the multipliers' splats
            sa, sb = fam.add_regs(p["rows"], p["blocks"], p["unroll"])
            lines += [f"{{ memw(r29+#{fam.ADD_SLOT}) = r5 }}",
                      f"{{ r28 = ##{g['add_ma'] * 0x01010101} }}", f"{{ v{sa} = vsplat(r28) }}",
                      f"{{ r28 = ##{g['add_mb'] * 0x01010101} }}", f"{{ v{sb} = vsplat(r28) }}"]
    label = 0
    for m0, n0 in fam.tiles(g, p):
        st = fam.tile_streams(g, p, m0, n0)
        lines += _pk(st["pro"])
        for ky in range(g["kh"]):
            lab = f".Lk{label}"
            label += 1
            seg = st["seg0"] if ky == 0 else st["seg"]
            lines += _pk([t.replace("loop0(L,", f"loop0({lab},") for t in seg])
            # no .p2align before the loop: its padding packets would be executed (and counted) on entry
            lines += [f"{lab}:"] + _pk(st["body"], last_endloop=True)
        lines += _pk(st["epi"])
    lines += ["{ " + s + " }" for s in RESTORE] + ["{ dealloc_return }", f".size {ENTRY}, .-{ENTRY}"]
    return "\n".join(lines) + "\n"


def count_packets(asm: str) -> int:
    """Packets of the emitted code, each executed once (a loop body counted once)."""
    return sum(1 for ln in asm.splitlines() if ln.startswith("{"))


def interleave(p: dict[str, int]) -> int:
    """Blocks whose weight vectors are interleaved in the packed layout (one pointer reads them)."""
    return p["blocks"] if p["corr"] else 1


def prepack(g: dict[str, int], w: np.ndarray, jj: int = 1) -> np.ndarray:
    """Weights (natural layout, flat int8) -> uint8 [N/32jj][K/4][jj][32][4] holding w + 128
    (the numpy twin of the C ``so_prepack``, for tests)."""
    k = np.arange(g["k"])
    ky, rest = divmod(k, g["kw"] * g["c_in"])
    kx, c = divmod(rest, g["c_in"])
    n = np.arange(g["n"])
    idx = n[None, :] * g["w_n"] + (ky * g["w_ky"] + kx * g["w_kx"] + c * g["w_c"])[:, None]   # [K][N]
    u = (w.reshape(-1)[idx].astype(np.int16) + 128).astype(np.uint8)
    return np.ascontiguousarray(u.reshape(g["k"] // 4, 4, g["n"] // (32 * jj), jj, 32).transpose(2, 0, 3, 4, 1)).reshape(-1)


def _c_escape(asm: str) -> str:
    return asm.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n\"\n\"")


def _c_prepack(g: dict[str, int], w: str, jj: int) -> str:
    return f"""
static void so_prepack(void) {{
  for (int nb = 0; nb < {g['n'] // 32}; nb++) for (int q = 0; q < {g['k'] // 4}; q++)
    for (int l = 0; l < 32; l++) for (int b = 0; b < 4; b++) {{
      int k = 4 * q + b, ky = k / {g['kw'] * g['c_in']}, kx = k % {g['kw'] * g['c_in']} / {g['c_in']}, c = k % {g['c_in']};
      int n = 32 * nb + l;
      g_bp[((((nb / {jj}) * {g['k'] // 4} + q) * {jj} + nb % {jj}) * 32 + l) * 4 + b] =
        (uint8_t)({w}[n * {g['w_n']} + ky * {g['w_ky']} + kx * {g['w_kx']} + c * {g['w_c']}] ^ 0x80);
    }}
}}
"""


def _c_chunks(length: int, chunks: int, src: str, dst: str) -> str:
    """-128 x the sum of each ``length``-byte chunk of ``src`` (signed bytes) in HVX: a
    vector x vector ``vrmpy`` by a splat of 0x80 (-128) sums each 4 bytes, rotations and adds
    fold a chunk's words into its first (``hvx.chunk_stride``)."""
    if length < 128:
        steps = []
        h = length // 8
        while h >= 1:
            steps.append(f"w = Q6_Vw_vadd_VwVw(w, Q6_V_vror_VR(w, {4 * h}));")
            h //= 2
        return f"""
  for (int v = 0; v < {-(-chunks * length // 128)}; v++) {{
    HVX_Vector w = Q6_Vw_vrmpy_VbVb(((const HVX_Vector *){src})[v], m80);
    {" ".join(steps)}
    ((HVX_Vector *){dst})[v] = w;
  }}"""
    fold = " ".join(f"w = Q6_Vw_vadd_VwVw(w, Q6_V_vror_VR(w, {4 * h}));" for h in (16, 8, 4, 2, 1))
    return f"""
  for (int c = 0; c < {chunks}; c++) {{
    const HVX_Vector *p = (const HVX_Vector *)((const int8_t *){src} + c * {length});
    HVX_Vector w = Q6_Vw_vrmpy_VbVb(p[0], m80);
    for (int t = 1; t < {length // 128}; t++) w = Q6_Vw_vrmpyacc_VwVbVb(w, p[t], m80);
    {fold}
    ((HVX_Vector *){dst})[c] = w;
  }}"""


def _c_sums8(length: int, chunks: int, pitch: int, src: str, dst: str, cs: int) -> str:
    """The same sums in scalar C (8 bytes a ``vrmpybsu``) where the HVX pass does not fit."""
    return f"""
  for (int c = 0; c < {chunks}; c++) {{
    const long long *q = (const long long *)((const int8_t *){src} + c * {pitch});
    long long s = 0;
    for (int t = 0; t < {length // 8}; t++) s = Q6_P_vrmpybsuacc_PP(s, q[t], 0x0101010101010101LL);
    {dst}[c * {cs}] = -128 * ((int)s + (int)(s >> 32));
  }}"""


def _c_corr(g: dict[str, int], x: str) -> str:
    """-128 x each output row's sum (GEMM: the row of A; convolution: its window, from prefix
    sums along the image rows of the padded image's pixel sums): the accumulators' start."""
    head = "  HVX_Vector m80 = Q6_V_vsplat_R(0x80808080);\n"
    if hvx.direct_rows(g):
        cs = hvx.corr_stride(g)
        words = -(-g["m"] * cs // 32) * 32 + 32
        return f"""
static int32_t g_corr[{words}] __attribute__((aligned(128)));
static void so_corr(void) {{
{head}{_c_chunks(g['k'], g['m'], x, 'g_corr')}
}}
"""
    if not g["conv"]:
        return f"""
static int32_t g_corr[{g['m'] + 32}] __attribute__((aligned(128)));
static void so_corr(void) {{{_c_sums8(g['k'], g['m'], g['a_rs'], x, 'g_corr', 1)}
}}
"""
    if hvx.hvx_windows(g): return _c_corr_hvx(g, x)
    hp, wp, c, st = g["h"] + 2 * g["pad"], g["w"] + 2 * g["pad"], g["c_in"], g["stride"]
    ps = hvx.chunk_stride(c)
    sums = f"{head}{_c_chunks(c, hp * wp, x, 'g_px')}" if ps else _c_sums8(c, hp * wp, c, x, "g_px", 1)
    ps = ps or 1
    return f"""
static int32_t g_corr[{g['m'] + 32}] __attribute__((aligned(128)));
static int32_t g_px[{-(-hp * wp * ps // 32) * 32 + 32}] __attribute__((aligned(128)));
static int32_t g_ps[{hp}][{wp + 1}];
static void so_corr(void) {{
{sums}
  for (int y = 0; y < {hp}; y++) {{
    int run = 0; g_ps[y][0] = 0;
    for (int x = 0; x < {wp}; x++) {{ run += g_px[(y * {wp} + x) * {ps}]; g_ps[y][x + 1] = run; }}
  }}
  for (int oy = 0; oy < {g['oh']}; oy++) for (int ox = 0; ox < {g['ow']}; ox++) {{
    int s = 0;
    for (int ky = 0; ky < {g['kh']}; ky++) {{ const int32_t *r = g_ps[oy * {st} + ky]; s += r[ox * {st} + {g['kw']}] - r[ox * {st}]; }}
    g_corr[oy * {g['ow']} + ox] = s;
  }}
}}
"""


def _c_corr_hvx(g: dict[str, int], x: str) -> str:
    """The correction of a convolution in HVX: dense pixel sums of the padded image (vrmpy by
    -128 of each 4 bytes, then word deals and adds fold a pixel's groups: order kept), window
    sums along the rows (unaligned loads at the kx offsets), then down the columns, stride 2
    keeping the even columns (a word deal)."""
    hp, wp, c, st = g["h"] + 2 * g["pad"], g["w"] + 2 * g["pad"], g["c_in"], g["stride"]
    w, nb = c // 4, -(-hp * wp // 32)
    xs = -(-g["ow"] * st // 32)                 # vectors of window sums along a row
    hw, op = xs * 32, hvx.corr_pitch(g)
    fold, cnt = [], w
    while cnt > 1:
        fold += [f"{{ HVX_VectorPair d = Q6_W_vdeal_VVR(v[{2 * t + 1}], v[{2 * t}], -4); "
                 f"v[{t}] = Q6_Vw_vadd_VwVw(Q6_V_lo_W(d), Q6_V_hi_W(d)); }}" for t in range(cnt // 2)]
        cnt //= 2
    keep = "r" if st == 1 else "Q6_V_lo_W(Q6_W_vdeal_VVR(r2, r, -4))"
    step = 32 if st == 1 else 64
    return f"""
typedef int32_t so_uvw __attribute__((vector_size(128), aligned(4)));
static int32_t g_corr[{g['oh'] * op + 32}] __attribute__((aligned(128)));
static int32_t g_px[{nb * 32 + hw + 64}] __attribute__((aligned(128)));
static int32_t g_h[{hp}][{hw + 32}] __attribute__((aligned(128)));
static void so_corr(void) {{
  HVX_Vector m80 = Q6_V_vsplat_R(0x80808080);
  const HVX_Vector *src = (const HVX_Vector *){x};
  for (int b = 0; b < {nb}; b++) {{
    HVX_Vector v[{w}];
    for (int t = 0; t < {w}; t++) v[t] = Q6_Vw_vrmpy_VbVb(src[b * {w} + t], m80);
    {" ".join(fold)}
    ((HVX_Vector *)g_px)[b] = v[0];
  }}
  for (int y = 0; y < {hp}; y++) for (int q = 0; q < {xs}; q++) {{
    const int32_t *p = g_px + y * {wp} + 32 * q;
    HVX_Vector a = *(const so_uvw *)p;
    for (int kx = 1; kx < {g['kw']}; kx++) a = Q6_Vw_vadd_VwVw(a, *(const so_uvw *)(p + kx));
    ((HVX_Vector *)g_h[y])[q] = a;
  }}
  for (int oy = 0; oy < {g['oh']}; oy++) for (int q = 0; q < {xs}; q += {step // 32}) {{
    HVX_Vector r = ((const HVX_Vector *)g_h[oy * {st}])[q]{", r2 = ((const HVX_Vector *)g_h[oy * 2])[q + 1]" if st == 2 else ""};
    for (int ky = 1; ky < {g['kh']}; ky++) {{
      r = Q6_Vw_vadd_VwVw(r, ((const HVX_Vector *)g_h[oy * {st} + ky])[q]);{chr(10) + "      r2 = Q6_Vw_vadd_VwVw(r2, ((const HVX_Vector *)g_h[oy * 2 + ky])[q + 1]);" if st == 2 else ""}
    }}
    ((HVX_Vector *)g_corr)[oy * {op // 32} + q / {step // 32}] = {keep};   /* whole rows: aligned stores */
  }}
}}
"""


def _c_pad(g: dict[str, int], x: str) -> str:
    """The image into the zero-bordered buffer's interior, row by row: unaligned vectors
    (the last one ending at the row's end), or words for rows under 128 bytes."""
    row, pitch = g["w"] * g["c_in"], fam.pitch(g)
    first = (g["pad"] * pitch + g["pad"] * g["c_in"])
    copy = ("    for (int o = 0; o + 128 <= ROWB; o += 128) *(so_uvec *)(d + o) = *(const so_uvec *)(s + o);\n"
            "    if (ROWB % 128) *(so_uvec *)(d + ROWB - 128) = *(const so_uvec *)(s + ROWB - 128);\n") if row >= 128 else \
           ("    for (int o = 0; o < ROWB; o += 4) *(volatile uint32_t *)(d + o) = *(const uint32_t *)(s + o);\n")
    return f"""
typedef int32_t so_uvec __attribute__((vector_size(128), aligned(4)));
#define ROWB {row}
static void so_pad(void) {{
  for (int y = 0; y < {g['h']}; y++) {{
    const uint8_t *s = (const uint8_t *){x} + y * ROWB; uint8_t *d = g_xp + {first} + y * {pitch};
{copy}  }}
}}
"""


def _c_requant(g: dict[str, int], bias: str, mult: str) -> str:
    return "typedef int vi __attribute__((vector_size(128)));\n" + requant.HVX_BASE.replace("LANES", "32") + \
        requant.HELPERS + f"""
static void so_requant_all(void) {{
  for (int p = 0; p < {g['m']}; p++) for (int nb = 0; nb < {g['n'] // 32}; nb++) {{
    HVX_Vector acc = *(const HVX_Vector *)(g_acc + p * {g['c_rs']} + nb * 32);
    HVX_Vector b = *(const HVX_Vector *)({bias} + nb * 32), m = *(const HVX_Vector *)({mult} + nb * 32);
    HVX_Vector v = so_requant(Q6_Vw_vadd_VwVw(acc, b), m, {g['pre']}, {g['post']});
    so_vstore_masked(g_out + p * {g['n']} + nb * 32, v, so_first(32), 32);
  }}
}}
"""


def c_program(g: dict[str, int], p: dict[str, int], inputs: list, output, parts: bool = False) -> str:
    """The freestanding program (without ``tools.STARTUP``) for the kernel's buffers."""
    from ..cpu.render import STORAGE
    slack = 128 + 32 * g["c_in"] if g["conv"] else 128     # the pixel-sum pass reads whole 32-pixel blocks
    decl = [f"static {STORAGE[b.dtype.name]} g_in{i}[{b.size + slack}] __attribute__((aligned(128)));"
            for i, b in enumerate(inputs)]
    decl.append(f"static {STORAGE[output.dtype.name]} g_out[{output.size}] __attribute__((aligned(128)));")
    decl.append(f"static uint8_t g_bp[{g['n'] * g['k'] + 256}] __attribute__((aligned(128)));")
    act = f"g_in{g['a_in']}"
    src = [f'__asm__("{_c_escape(emit(g, p))}");\n',
             f"void {ENTRY}(const void *, const uint8_t *, int32_t *, const int32_t *, const int32_t *);\n", "\n".join(decl) + "\n",
             _c_prepack(g, f"g_in{g['b_in']}", interleave(p))]
    pre: list[tuple[str, str]] = []   # (phase, call) in order
    if g["conv"] and g["pad"]:
        hp = g["h"] + 2 * g["pad"]
        src.append(f"static uint8_t g_xp[{hp * fam.pitch(g) + 256 + slack}] __attribute__((aligned(128)));\n")
        src.append(_c_pad(g, act))
        pre.append(("pad", "so_pad();"))
        act = "g_xp"
    corr = "0"
    if p["corr"]:
        src.append(_c_corr(g, act))
        pre.append(("corr", "so_corr();"))
        corr = "g_corr"
    acc = "g_out"
    post = []
    qp, prep = "0", ""
    if g["requant"] and p["fuse"]:
        j = p["blocks"]
        src.append(f"""static int32_t g_qp[{2 * j * 32}] __attribute__((aligned(128)));
static void so_qprep(void) {{   /* bias, and the multiplier's low halfword in both halves (vshuffe) */
  for (int n = 0; n < {j * 32}; n++) {{ uint32_t lo = (uint32_t)g_in{g['mult_in']}[n] & 0xffffu;
    g_qp[n] = g_in{g['bias_in']}[n]; g_qp[{j * 32} + n] = (int32_t)(lo | (lo << 16)); }}
}}
""")
        qp, prep = "g_qp", "so_qprep();"
    elif g["requant"]:
        src.append(f"static int32_t g_acc[{g['m'] * g['c_rs'] + 32}] __attribute__((aligned(128)));\n")
        src.append(_c_requant(g, f"g_in{g['bias_in']}", f"g_in{g['mult_in']}"))
        acc = "g_acc"
        post.append(("requant", "so_requant_all();"))
    src += [x + "\n" for x in COUNTERS]
    phases = pre + [("asm", f"{ENTRY}({act}, g_bp, (int32_t *){acc}, {corr}, {qp});")] + post
    src.append(_c_kernel(phases, parts))
    src.append(f"""
int so_main(void) {{
{''.join(f'  if (so_read_all(g_in{i}, {b.size * b.dtype.itemsize})) return 3;{chr(10)}' for i, b in enumerate(inputs))}  so_prepack(); {prep}
  {{ volatile unsigned char *o = (volatile unsigned char *)g_out; for (unsigned i = 0; i < sizeof(g_out); i++) o[i] = {POISON}; }}
  unsigned so_c0[3], so_c1[3], so_e0[3], so_e1[3];
  so_counters(so_e0); so_counters(so_e1);
  so_counters(so_c0);
  so_kernel();
  so_counters(so_c1);
  if (so_write_all(g_out, sizeof(g_out))) return 4;
  {{ unsigned so_n[3]; for (int i = 0; i < 3; i++) so_n[i] = (so_c1[i] - so_c0[i]) - (so_e1[i] - so_e0[i]);
    if (so_counters_out(so_n)) return 5; }}
  {"so_parts_out();" if parts else ""}
  return 0;
}}
""")
    return "".join(src)


def _c_kernel(phases: list[tuple[str, str]], parts: bool) -> str:
    """``so_kernel``: the counted phases in order; with ``parts`` (the bench's breakdown, never
    the backend's program) c20 is read between them and printed as ``so-parts name=packets ..``."""
    if not parts:
        return "__attribute__((noinline)) void so_kernel(void) {\n  " + "\n  ".join(c for _, c in phases) + "\n}\n"
    n = len(phases)
    body = [f"  so_pk[{i}] = so_c20(); {c}" for i, (_, c) in enumerate(phases)] + [f"  so_pk[{n}] = so_c20();"]
    names = " ".join(f"{nm}=" for nm, _ in phases)
    return f"""
static unsigned so_pk[{n + 1}];
static inline __attribute__((always_inline)) unsigned so_c20(void) {{
  register unsigned r0 __asm__("r0"); __asm__ volatile(".word 0x6a14c000" : "=r"(r0) :: "memory"); return r0; }}
__attribute__((noinline)) void so_kernel(void) {{
{chr(10).join(body)}
}}
static void so_parts_out(void) {{
  char buf[256]; int k = 0; const char *names[] = {{{", ".join(f'"{nm}"' for nm, _ in phases)}}};
  const char *h = "so-parts"; while (*h) buf[k++] = *h++;
  for (int i = 0; i < {n}; i++) {{ unsigned v = so_pk[i + 1] - so_pk[i]; char d[12]; int m = 0;
    buf[k++] = ' '; for (const char *s = names[i]; *s; s++) buf[k++] = *s; buf[k++] = '=';
    do {{ d[m++] = (char)('0' + v % 10); v /= 10; }} while (v); while (m) buf[k++] = d[--m]; }}
  buf[k++] = '\\n'; so_syscall3(64, 2, (long)buf, k);
}}
"""


def render(program: Program) -> str:
    nat = program.body[0]
    assert isinstance(nat, Native) and nat.family == "hvx_gemm", "not an hvx_gemm program"
    g, p = dict(nat.geometry), dict(nat.params)
    return c_program(g, p, list(program.inputs), program.output)


def check_packets(asm: str) -> str | None:
    """llvm-mc on the emitted assembly: None when every packet is legal, else its stderr."""
    mc = shutil.which("llvm-mc") or shutil.which("llvm-mc-14")
    if mc is None: return "llvm-mc not found"
    r = subprocess.run([mc, "-triple=hexagon", "-mcpu=hexagonv66", "-mattr=+hvxv66,+hvx-length128b",
                        "-filetype=obj", "-o", "/dev/null"], input=asm, capture_output=True, text=True)
    return None if r.returncode == 0 and not r.stderr.strip() else (r.stderr or "failed")
