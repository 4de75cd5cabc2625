"""``Program`` -> freestanding C for Hexagon with HVX (128-byte vectors).

Expressions and statements are rendered by the CPU backend's C renderer (vector
extensions of the program's lane count; clang lowers a 32-lane int vector to one HVX
register and int8 lanes to byte vectors). What differs here:
- no libc: math, string and time headers are replaced by clang builtins, and the entry
  point reads the inputs from stdin and writes the output to stdout (see ``tools``);
- serial loops keep their shape (``unroll(disable)``), so the innermost loop in clang's
  assembly is the program's innermost loop and the VLIW model can price it;
- the output is poisoned before the run, so an unwritten element shows;
- int8 dot products use ``vrmpy``: within a run of unrolled reduction updates, every
  four multiply-accumulates of int8 x int8 into the same int32 accumulator become one
  ``vrmpy`` (4 byte products summed per 32-bit lane; integer addition is associative,
  so the result is bit-identical). Operands are packed four bytes to a word: one
  unaligned 32-bit load when the four bytes are adjacent in memory, byte packing
  otherwise; a lane-uniform word is splat across the vector. A reduction padded from 3
  to 4 (schedule) gives its fourth product from a masked load, i.e. zero;
- an int8 output computed by the integer requantize of ``kernels.builders`` is stored by
  the HVX sequence of ``requant`` (rounding/saturating shift-packs, a Q15 fractional
  multiply, ``vdeal`` back to channel order) with predicated byte stores.
"""
from __future__ import annotations

from ..cpu.render import C_HELPERS, MAXF_NAN, CRenderer, STORAGE
from ...ir import dtype as dt
from ...ir.dtype import DType
from ...ir.node import Node, Ops, TRUE, const, substitute
from ...ir.program import Assign, Loop, Program, Stmt, lane_stride, unrolled
from . import requant

# clang (LLVM 14) for Hexagon turns `a > b ? a : b` into sfmax, which returns the other operand
# when one is NaN: with only `a`'s NaN tested first, max(1, NaN) came out 1 at -O2. Both tested
# before the compare, the fold only ever sees numbers.
HEX_MAXF_NAN = "static inline float maxf_nan(float a, float b) { return a != a ? a : b != b ? b : a > b ? a : b; }\n"

PRELUDE = r"""
#define NAN __builtin_nanf("")
#define INFINITY __builtin_inff()
#define memcpy __builtin_memcpy
""" + C_HELPERS.replace(MAXF_NAN, HEX_MAXF_NAN) + r"""static inline int so_ld32(const void *p) { int v; __builtin_memcpy(&v, p, 4); return v; }
static inline int so_pack4(int a, int b, int c, int d) {
  return (int)(((unsigned)a & 255u) | (((unsigned)b & 255u) << 8) | (((unsigned)c & 255u) << 16) | ((unsigned)d << 24)); }
"""

VRMPY = r"""
static inline vi so_vpack4(vi a, vi b, vi c, vi d) {
  return (vi)(((vu)a & 255u) | (((vu)b & 255u) << 8) | (((vu)c & 255u) << 16) | ((vu)d << 24)); }
/* acc += 4-byte dot products, per 32-bit lane (int8 x int8 -> int32) */
static inline vi so_vrmpy_vv(vi acc, vi a, vi b) { return so_lanes(Q6_Vw_vrmpyacc_VwVbVb(so_hvx(acc), so_hvx(a), so_hvx(b))); }
static inline vi so_vrmpy_sv(vi acc, int a, vi b) { return so_lanes(Q6_Vw_vrmpyacc_VwVbVb(so_hvx(acc), Q6_V_vsplat_R(a), so_hvx(b))); }
"""

KERNEL_FN = "so_kernel"
POISON = 0xA5


class HexagonRenderer(CRenderer):
    def __init__(self, p: Program, vrmpy: bool = True):
        super().__init__(p)
        self.use_vrmpy = vrmpy and p.lanes > 1 and p.lanes * 4 <= 128
        self.vrmpy_groups = 0
        self.requants = 0   # stores rendered as HVX requantize + predicated byte store

    def stmts(self, body: tuple[Stmt, ...], d: int) -> None:
        if not self.use_vrmpy: return super().stmts(body, d)
        body = _flatten(body)
        i = 0
        while i < len(body):
            j = i
            while j < len(body) and isinstance(body[j], Assign) and _mac(body[j]) is not None: j += 1
            if j - i >= 4 and self._vrmpy_run(body[i:j], d):
                i = j
                continue
            super().stmts(body[i:max(j, i + 1)], d)
            i = max(j, i + 1)

    # ---- vrmpy ---------------------------------------------------------------------
    def _vrmpy_run(self, run, d: int) -> bool:
        macs = [_mac(a) for a in run]
        if any(m is None for m in macs): return False
        buckets: dict[tuple, list] = {}
        for a, m in zip(run, macs): buckets.setdefault((a.name, a.index), []).append((a, m))
        if all(len(v) < 4 for v in buckets.values()): return False
        for (name, index), items in buckets.items():
            items = _quads(items)
            full = len(items) - len(items) % 4
            for g in range(0, full, 4):
                grp = [m for _, m in items[g:g + 4]]
                wa, ua = self._word([m[0] for m in grp], [m[2] for m in grp], d)
                wb, ub = self._word([m[1] for m in grp], [m[2] for m in grp], d)
                idx = self.ex(index, d)
                if ua and ub:  # both lane-uniform: nothing to vectorize, keep the plain updates
                    super().stmts(tuple(a for a, _ in items[g:g + 4]), d)
                    continue
                if ua: call = f"so_vrmpy_sv({name}[{idx}], {wa}, {wb})"
                elif ub: call = f"so_vrmpy_sv({name}[{idx}], {wb}, {wa})"
                else: call = f"so_vrmpy_vv({name}[{idx}], {wa}, {wb})"
                self.emit(f"{name}[{idx}] = {call};", d)
                self.vrmpy_groups += 1
            if full < len(items): super().stmts(tuple(a for a, _ in items[full:]), d)
        return True

    def _word(self, loads: list[Node], guards: list[Node], d: int) -> tuple[str, bool]:
        """Four int8 loads -> a packed 32-bit word per lane (C expression, lane-uniform?)."""
        uniform = not any(x is not None and self.is_vec(x) for x in loads) and not any(self.is_vec(g) for g in guards)
        base = loads[0]
        adjacent = all(l is not None for l in loads) and all(l.arg == base.arg and l.src[1] is base.src[1] for l in loads) and \
            all(g is TRUE for g in guards) and \
            all((x := (l.src[0] - base.src[0])).op is Ops.CONST and x.arg == j for j, l in enumerate(loads))
        if adjacent:
            ok = self.ex(base.src[1], d)
            idx = self.ex(base.src[0], d)
            if uniform:
                return f"({ok} ? so_ld32(&in{base.arg}[{idx}]) : 0)" if ok != "1" else f"so_ld32(&in{base.arg}[{idx}])", True
            name = self.fresh()
            il = f"{idx}[l_]" if self.is_vec(base.src[0]) else idx
            okl = f"{ok}[l_]" if self.is_vec(base.src[1]) else ok
            self.emit(f"vi {name}; for (int l_ = 0; l_ < {self.L}; l_++) {name}[l_] = ({okl}) ? "
                      f"so_ld32(&in{base.arg}[{il}]) : 0;", d)
            return name, False
        vals = []
        for l, g in zip(loads, guards):
            if l is None:
                vals.append("0")
                continue
            v = l if g is TRUE else Node(Ops.WHERE, l.dtype, (g, l, const(0, l.dtype)))
            vals.append(self.ex(v, d))
        if uniform: return f"so_pack4({', '.join(vals)})", True
        vv = [v if l is not None and (self.is_vec(l) or self.is_vec(g)) else f"((vi){{0}} + {v})"
              for v, l, g in zip(vals, loads, guards)]
        return f"so_vpack4({', '.join(vv)})", False

    # ---- requantize + predicated store -----------------------------------------------
    def _store(self, buf: str, index: Node, value: Node, valid: Node, to: DType, d: int, shared: bool = False) -> None:
        """A requantized int8 vector stored contiguously: HVX requantize + predicated store."""
        rq = requant.match(value) if self.L > 1 and not shared and to is dt.int8 else None
        if rq is None or lane_stride(index, self.p.lane) != 1 or not self.is_vec(rq.x):
            return super()._store(buf, index, value, valid, to, d, shared)
        x, m = self.ex(rq.x, d), self.ex(rq.mult, d)
        if not self.is_vec(rq.mult): m = f"((vi){{0}} + {m})"
        base = self.ex(substitute(index, {self.p.lane: const(0, dt.int32)}), d)
        ok = self.ex(valid, d)
        keep = f"so_lane_mask({ok})" if self.is_vec(valid) else \
            f"so_first({self.L})" if ok == "1" else f"({ok} ? so_first({self.L}) : Q6_V_vzero())"
        self.emit(f"so_vstore_masked(&{buf}[{base}], so_requant(so_hvx({x}), so_hvx({m}), {rq.pre}, {rq.post}), {keep}, {self.L});", d)
        self.requants += 1

    def stmt(self, s: Stmt, d: int) -> None:
        if isinstance(s, Loop) and not s.unroll:
            self.emit("#pragma clang loop unroll(disable) vectorize(disable)", d)
        super().stmt(s, d)

    prelude = PRELUDE
    block_attrs = "__attribute__((noinline)) "

    def header(self) -> list[str]:
        head = super().header()
        if self.L > 1: head.append((requant.HVX_BASE + requant.HELPERS).replace("LANES", str(self.L)))
        if self.L > 1 and self.use_vrmpy: head.append(VRMPY)
        return head

    def entry(self, args: list[str]) -> list[str]:
        """Freestanding: inputs read from stdin into static buffers, the output poisoned,
        the kernel run once, the output written to stdout."""
        p = self.p
        bufs = [(f"in{i}", b) for i, b in enumerate(p.inputs)] + [("out", p.output)]
        decl = [f"static {STORAGE[b.dtype.name]} g_{n}[{b.size}] __attribute__((aligned(128)));" for n, b in bufs]
        names = ", ".join(f"g_{n}" for n, _ in bufs)
        kernel = [f"__attribute__((noinline)) void {KERNEL_FN}(void) {{",
                  f"  for (int b = 0; b < {p.blocks}; b++) block_(b, {names});", "}"]
        main = ["int so_main(void) {",
                *[f"  if (so_read_all(g_{n}, sizeof(g_{n}))) return 3;" for n, _ in bufs[:-1]],
                f"  {{ volatile unsigned char *o = (volatile unsigned char *)g_out; "
                f"for (unsigned i = 0; i < sizeof(g_out); i++) o[i] = {POISON}; }}",
                "  unsigned so_c0[3], so_c1[3], so_e0[3], so_e1[3];",
                "  so_counters(so_e0); so_counters(so_e1);",   # the reads' own packets, subtracted below
                "  so_counters(so_c0);",
                f"  {KERNEL_FN}();",
                "  so_counters(so_c1);",
                "  if (so_write_all(g_out, sizeof(g_out))) return 4;",
                "  { unsigned so_n[3]; for (int i = 0; i < 3; i++) so_n[i] = (so_c1[i] - so_c0[i]) - (so_e1[i] - so_e0[i]);",
                "    if (so_counters_out(so_n)) return 5; }",
                "  return 0;", "}"]
        return decl + COUNTERS + kernel + main


# qemu's counters around the kernel call (hexagon/NOTES: c20 packets, c21 instructions, c22
# HVX instructions; read with the raw transfer-from-control-register words into r0). The
# three counts go to stderr as "so-counters P I H" (stdout carries only the output bytes).
COUNTERS = [
    "static inline __attribute__((always_inline)) void so_counters(unsigned c[3]) {",
    "  register unsigned r0 __asm__(\"r0\");",
    "  __asm__ volatile(\".word 0x6a14c000\" : \"=r\"(r0) :: \"memory\"); c[0] = r0;",
    "  __asm__ volatile(\".word 0x6a15c000\" : \"=r\"(r0) :: \"memory\"); c[1] = r0;",
    "  __asm__ volatile(\".word 0x6a16c000\" : \"=r\"(r0) :: \"memory\"); c[2] = r0;",
    "}",
    "static int so_counters_out(const unsigned n[3]) {",
    "  char buf[64]; const char *h = \"so-counters\"; int k = 0;",
    "  while (*h) buf[k++] = *h++;",
    "  for (int i = 0; i < 3; i++) { char d[12]; int m = 0; unsigned v = n[i];",
    "    do { d[m++] = (char)('0' + v % 10); v /= 10; } while (v);",
    "    buf[k++] = ' '; while (m) buf[k++] = d[--m]; }",
    "  buf[k++] = '\\n';",
    "  return so_syscall3(64, 2, (long)buf, k) != k;",
    "}",
]


def render(p: Program, vrmpy: bool = True) -> str:
    return HexagonRenderer(p, vrmpy).render()


def _adjacent(loads: list[Node | None]) -> bool:
    """Four loads of one buffer at index, index+1, +2, +3 under one mask: one word."""
    b = loads[0]
    return all(l is not None for l in loads) and all(l.arg == b.arg and l.src[1] is b.src[1] for l in loads) and \
        all((x := (l.src[0] - b.src[0])).op is Ops.CONST and x.arg == j for j, l in enumerate(loads))


def _quads(items: list) -> list:
    """Reorder one accumulator's updates so that each run of four reads adjacent bytes
    where possible (any grouping is exact: integer addition is associative)."""
    rest, out, singles = list(items), [], []
    while rest:
        head = rest[0]
        for op in (1, 0):
            base = head[1][op]
            if base is None: continue
            pick = [head]
            for j in (1, 2, 3):
                nxt = next((it for it in rest if it[1][op] is not None and it not in pick and it[1][2] is TRUE
                            and (d := it[1][op].src[0] - base.src[0]).op is Ops.CONST and d.arg == j), None)
                if nxt is None: break
                pick.append(nxt)
            if len(pick) == 4 and head[1][2] is TRUE and _adjacent([it[1][op] for it in pick]):
                out += pick
                rest = [it for it in rest if it not in pick]
                break
        else:
            singles.append(head)
            rest = rest[1:]
    return out + singles


def _flatten(body: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
    """Unrolled loops expanded in place (recursively), so runs of updates are visible."""
    out: list[Stmt] = []
    for s in body:
        out += _flatten(unrolled(s)) if isinstance(s, Loop) and s.unroll else [s]
    return tuple(out)


def _mac(a: Assign) -> tuple[Node | None, Node | None, Node] | None:
    """``acc = acc + int32(x) * int32(y)`` (x, y int8 loads; optionally under a guard
    ``where(g, new, acc)``) -> (x, y, guard)."""
    v, guard = a.value, TRUE
    reg = lambda n: n.op is Ops.REG and n.arg == a.name and n.src[0] is a.index  # noqa: E731
    if reg(v) and v.dtype is dt.int32: return None, None, TRUE  # a padded point: adds nothing
    if v.op is Ops.WHERE and reg(v.src[2]): guard, v = v.src[0], v.src[1]
    if v.op is not Ops.ADD or v.dtype is not dt.int32: return None
    x, y = v.src
    prod = y if reg(x) else x if reg(y) else None
    if prod is None or prod.op is not Ops.MUL: return None
    ops = []
    for c in prod.src:
        if c.op is not Ops.CAST or c.src[0].op is not Ops.LOAD or c.src[0].dtype is not dt.int8: return None
        ops.append(c.src[0])
    return ops[0], ops[1], guard
