"""Template of the ``hvx_gemm`` family: the int8 GEMM / NHWC convolution micro-kernel of
``search/families/hvx.py`` emitted as HVX assembly with the packets its packer chose.

``emit(g, rows, blocks)`` writes ``hvx_kernel(r0 = activations, r1 = packed weights,
r2 = int32 output)``: every tile's prologue, segments (a ``loop0`` hardware loop each) and
epilogue, one ``{ ... }`` packet per packet of the model, closed by ``:endloop0``.

``render(program)`` wraps it in a freestanding C program (``tools.STARTUP``) that reads the
kernel's inputs in their natural layout from stdin and, outside the counted region, packs
the weights into the ``vrmpy`` layout ([N/32][K/4][32 lanes][4 k], bytes w ^ 0x80 = w + 128
as unsigned). Counted (qemu's c20/c21/c22 around the call): for a convolution with padding,
the copy of the image into the interior of a zero-bordered buffer (the border is zeroed once
at allocation: what the previous layer's epilogue would write into), the assembly kernel,
and for a requantized output the int32 -> int8 pass (HVX intrinsics ``requant.HELPERS``:
bias, rounding shift, Q15 multiply, rounding shift, saturate).
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np

from superopt.ir.program import Native, Program
from superopt.search.families import hvx as fam
from . import requant
from .render import COUNTERS, POISON

ENTRY = "hvx_kernel"
SAVE = [f"memd(r29+#{8 * i}) = r{17 + 2 * i}:{16 + 2 * i}" for i in range(6)]
RESTORE = [f"r{17 + 2 * i}:{16 + 2 * i} = memd(r29+#{8 * i})" for i in range(6)]


def _pk(texts: list[str], last_endloop: bool = False) -> list[str]:
    pk = fam.packets(texts)
    return ["{ " + "; ".join(p) + (" }:endloop0" if last_endloop and q == len(pk) - 1 else " }") for q, p in enumerate(pk)]


def emit(g: dict[str, int], r: int, j: int) -> str:
    """The kernel's assembly for geometry ``g`` and an R x J tile (every packet braced)."""
    regs = fam.regs(r, j)
    lines = [".text", ".p2align 4", f".globl {ENTRY}", f".type {ENTRY},@function", f"{ENTRY}:", "{ allocframe(#64) }"]
    lines += ["{ " + s + " }" for s in SAVE]
    lines += ["{ r28 = ##-2139062144 }", f"{{ v{regs['splat'][0]} = vsplat(r28) }}"]   # 0x80808080
    label = 0
    for m0, n0 in fam.tiles(g, r, j):
        st = fam.tile_streams(g, r, j, m0, n0)
        lines += _pk(st["pro"])
        for ky in range(g["kh"]):
            lab = f".Lk{label}"
            label += 1
            seg = st["seg0"] if ky == 0 else st["seg"]
            lines += _pk([t.replace("loop0(L,", f"loop0({lab},") for t in seg])
            lines += [".p2align 4", f"{lab}:"] + _pk(st["body"], last_endloop=True)
        lines += _pk(st["epi"])
    lines += ["{ " + s + " }" for s in RESTORE] + ["{ dealloc_return }", f".size {ENTRY}, .-{ENTRY}"]
    return "\n".join(lines) + "\n"


def count_packets(asm: str) -> int:
    """Packets of the emitted code, each executed once (a loop body counted once)."""
    return sum(1 for ln in asm.splitlines() if ln.startswith("{"))


def prepack(g: dict[str, int], w: np.ndarray) -> np.ndarray:
    """Weights (natural layout, flat int8) -> uint8 [N/32][K/4][32][4] holding w + 128
    (the numpy twin of the C ``so_prepack``, for tests)."""
    k = np.arange(g["k"])
    ky, rest = divmod(k, g["kw"] * g["c_in"])
    kx, c = divmod(rest, g["c_in"])
    n = np.arange(g["n"])
    idx = n[None, :] * g["w_n"] + (ky * g["w_ky"] + kx * g["w_kx"] + c * g["w_c"])[:, None]   # [K][N]
    u = (w.reshape(-1)[idx].astype(np.int16) + 128).astype(np.uint8)
    return np.ascontiguousarray(u.reshape(g["k"] // 4, 4, g["n"] // 32, 32).transpose(2, 0, 3, 1)).reshape(-1)


def _c_escape(asm: str) -> str:
    return asm.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n\"\n\"")


def _c_prepack(g: dict[str, int], w: str) -> str:
    return f"""
static void so_prepack(void) {{
  for (int nb = 0; nb < {g['n'] // 32}; nb++) for (int q = 0; q < {g['k'] // 4}; q++)
    for (int l = 0; l < 32; l++) for (int b = 0; b < 4; b++) {{
      int k = 4 * q + b, ky = k / {g['kw'] * g['c_in']}, kx = k % {g['kw'] * g['c_in']} / {g['c_in']}, c = k % {g['c_in']};
      int n = 32 * nb + l;
      g_bp[((nb * {g['k'] // 4} + q) * 32 + l) * 4 + b] =
        (uint8_t)({w}[n * {g['w_n']} + ky * {g['w_ky']} + kx * {g['w_kx']} + c * {g['w_c']}] ^ 0x80);
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


def c_program(g: dict[str, int], r: int, j: int, inputs: list, output) -> str:
    """The freestanding program (without ``tools.STARTUP``) for the kernel's buffers."""
    from superopt.backends.cpu.render import STORAGE
    decl = [f"static {STORAGE[b.dtype.name]} g_in{i}[{b.size + 128}] __attribute__((aligned(128)));"
            for i, b in enumerate(inputs)]
    decl.append(f"static {STORAGE[output.dtype.name]} g_out[{output.size}] __attribute__((aligned(128)));")
    decl.append(f"static uint8_t g_bp[{g['n'] * g['k'] + 256}] __attribute__((aligned(128)));")
    act = f"g_in{g['a_in']}"
    parts = [f'__asm__("{_c_escape(emit(g, r, j))}");\n',
             f"void {ENTRY}(const void *, const uint8_t *, int32_t *);\n", "\n".join(decl) + "\n",
             _c_prepack(g, f"g_in{g['b_in']}")]
    pre = []
    if g["conv"] and g["pad"]:
        hp = g["h"] + 2 * g["pad"]
        parts.append(f"static uint8_t g_xp[{hp * fam.pitch(g) + 256}] __attribute__((aligned(128)));\n")
        parts.append(_c_pad(g, act))
        pre.append("so_pad();")
        act = "g_xp"
    acc = "g_out"
    post = []
    if g["requant"]:
        parts.append(f"static int32_t g_acc[{g['m'] * g['c_rs'] + 32}] __attribute__((aligned(128)));\n")
        parts.append(_c_requant(g, f"g_in{g['bias_in']}", f"g_in{g['mult_in']}"))
        acc = "g_acc"
        post.append("so_requant_all();")
    parts += [x + "\n" for x in COUNTERS]
    parts.append(f"""
__attribute__((noinline)) void so_kernel(void) {{
  {' '.join(pre)}
  {ENTRY}({act}, g_bp, (int32_t *){acc});
  {' '.join(post)}
}}
int so_main(void) {{
{''.join(f'  if (so_read_all(g_in{i}, {b.size * b.dtype.itemsize})) return 3;{chr(10)}' for i, b in enumerate(inputs))}  so_prepack();
  {{ volatile unsigned char *o = (volatile unsigned char *)g_out; for (unsigned i = 0; i < sizeof(g_out); i++) o[i] = {POISON}; }}
  unsigned so_c0[3], so_c1[3], so_e0[3], so_e1[3];
  so_counters(so_e0); so_counters(so_e1);
  so_counters(so_c0);
  so_kernel();
  so_counters(so_c1);
  if (so_write_all(g_out, sizeof(g_out))) return 4;
  {{ unsigned so_n[3]; for (int i = 0; i < 3; i++) so_n[i] = (so_c1[i] - so_c0[i]) - (so_e1[i] - so_e0[i]);
    if (so_counters_out(so_n)) return 5; }}
  return 0;
}}
""")
    return "".join(parts)


def render(program: Program) -> str:
    nat = program.body[0]
    assert isinstance(nat, Native) and nat.family == "hvx_gemm", "not an hvx_gemm program"
    g, p = dict(nat.geometry), dict(nat.params)
    return c_program(g, p["rows"], p["blocks"], list(program.inputs), program.output)


def check_packets(asm: str) -> str | None:
    """llvm-mc on the emitted assembly: None when every packet is legal, else its stderr."""
    mc = shutil.which("llvm-mc") or shutil.which("llvm-mc-14")
    if mc is None: return "llvm-mc not found"
    r = subprocess.run([mc, "-triple=hexagon", "-mcpu=hexagonv66", "-mattr=+hvxv66,+hvx-length128b",
                        "-filetype=obj", "-o", "/dev/null"], input=asm, capture_output=True, text=True)
    return None if r.returncode == 0 and not r.stderr.strip() else (r.stderr or "failed")
