"""``Program`` -> freestanding C for Hexagon with HVX (128-byte vectors).

Expressions and statements are rendered by the CPU backend's C renderer (vector
extensions of the program's lane count; clang lowers a 32-lane int vector to one HVX
register and int8 lanes to byte vectors). What differs here:
- no libc: math, string and time headers are replaced by clang builtins, and the entry
  point reads the inputs from stdin and writes the output to stdout (see ``tools``);
- serial loops keep their shape (``unroll(disable)``), so the innermost loop in clang's
  assembly is the program's innermost loop and the VLIW model can price it;
- the output is poisoned before the run, so an unwritten element shows.
"""
from __future__ import annotations

from superopt.backends.cpu.render import CRenderer, STORAGE
from superopt.ir.program import Loop, Program, Stmt

PRELUDE = r"""
#define NAN __builtin_nanf("")
#define INFINITY __builtin_inff()
#define memcpy __builtin_memcpy
static inline float bf16_to_f(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t f_to_bf16(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  if (f != f) return 0x7FC0;
  return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
static inline float bf16r(float f) { return bf16_to_f(f_to_bf16(f)); }
static inline int fdiv_i(int a, int b) { if (b == 0) return 0; int q = a / b; return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q; }
static inline int fmod_i(int a, int b) { if (b == 0) return 0; int r = a % b; return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
static inline long long f2i(float x) {
  if (x != x) return 0;
  if (x >= 4.6e18f) return 4611686018427387904LL;
  if (x <= -4.6e18f) return -4611686018427387904LL;
  return (long long)x;
}
static inline float maxf_nan(float a, float b) { return (a != a || a > b) ? a : b; }
"""

KERNEL_FN = "so_kernel"
POISON = 0xA5


class HexagonRenderer(CRenderer):
    def stmt(self, s: Stmt, d: int) -> None:
        if isinstance(s, Loop) and not s.unroll:
            self.emit("#pragma clang loop unroll(disable) vectorize(disable)", d)
        super().stmt(s, d)

    def render(self) -> str:
        p, L = self.p, self.L
        head = [PRELUDE]
        if L > 1:
            head += [f"typedef float vf __attribute__((vector_size({4 * L})));",
                     f"typedef int vi __attribute__((vector_size({4 * L})));"]
        args = [f"const {STORAGE[b.dtype.name]}* restrict in{i}" for i, b in enumerate(p.inputs)]
        args.append(f"{STORAGE[p.output.dtype.name]}* restrict out")
        self.stmts(p.body, 1)
        lanes = ["  const vi lanes_ = {" + ", ".join(map(str, range(L))) + "};"] if L > 1 else []
        fn = [f"__attribute__((noinline)) static void block_(int s_block, {', '.join(args)}) {{", *lanes, *self.lines, "}"]
        bufs = [(f"in{i}", b) for i, b in enumerate(p.inputs)] + [("out", p.output)]
        decl = [f"static {STORAGE[b.dtype.name]} g_{n}[{b.size}] __attribute__((aligned(128)));" for n, b in bufs]
        names = ", ".join(f"g_{n}" for n, _ in bufs)
        kernel = [f"__attribute__((noinline)) void {KERNEL_FN}(void) {{",
                  f"  for (int b = 0; b < {p.blocks}; b++) block_(b, {names});", "}"]
        main = ["int so_main(void) {",
                *[f"  if (so_read_all(g_{n}, sizeof(g_{n}))) return 3;" for n, _ in bufs[:-1]],
                f"  {{ volatile unsigned char *o = (volatile unsigned char *)g_out; "
                f"for (unsigned i = 0; i < sizeof(g_out); i++) o[i] = {POISON}; }}",
                f"  {KERNEL_FN}();",
                "  if (so_write_all(g_out, sizeof(g_out))) return 4;", "  return 0;", "}"]
        return "\n".join(head + decl + [""] + fn + [""] + kernel + main) + "\n"


def render(p: Program) -> str:
    return HexagonRenderer(p).render()
