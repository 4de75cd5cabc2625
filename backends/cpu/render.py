"""``Program`` -> C for the host CPU.

Register arrays and lane-varying values use GCC/Clang vector extensions
(``__attribute__((vector_size))``) of the program's lane count; contiguous lane access
becomes one vector load/store, other lane-varying operations a short per-lane loop the
compiler vectorizes. Unrolled loops are unrolled in the source. Blocks are shared by
``workers`` OpenMP threads in contiguous chunks. Floats compute in ``float`` (fp16/bf16
are converted on load/store and rounded on casts), integers in ``int`` wrapping like
the reference interpreter.
"""
from __future__ import annotations

import math

from ...ir import dtype as dt
from ...ir.dtype import DType
from ...ir.node import Node, Ops
from ...ir.program import (Assign, Barrier, If, Loop, Program, Reg, Shared, SharedStore, Stmt, Store,
                                 lane_stride, subst_stmt, unrolled)
from ...ir.node import const, substitute

STORAGE = {"float32": "float", "float16": "_Float16", "bfloat16": "uint16_t", "int8": "int8_t", "uint8": "uint8_t",
           "int32": "int32_t", "bool": "uint8_t", "float64": "double"}

# scalar helpers every C renderer shares (bf16 rounding, floor div/mod, saturating float->int, NaN-propagating max)
MAXF_NAN = "static inline float maxf_nan(float a, float b) { return (a != a || a > b) ? a : b; }\n"   # numpy's max: NaN propagates
C_HELPERS = r"""static inline float bf16_to_f(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }
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
""" + MAXF_NAN + r"""/* float -> fp16 -> float rounding in integer ops (round to nearest even, overflow to inf,
   fp16 subnormals, NaN and inf kept): gcc 12 -O3 on AVX512-FP16 folded (float)(_Float16)x
   into a plain copy. */
static inline float f16r(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  uint32_t s = u & 0x80000000u, a = u ^ s;
  if (a >= 0x7F800000u) return f;
  if (a >= 0x477FF000u) a = 0x7F800000u;
  else if (a < 0x38800000u) {
    float m; memcpy(&m, &a, 4);
    m = __builtin_rintf(m * 16777216.0f) * 5.9604644775390625e-08f;
    memcpy(&a, &m, 4);
  } else a = (a + 0xFFFu + ((a >> 13) & 1u)) & ~0x1FFFu;
  u = s | a; memcpy(&f, &u, 4);
  return f;
}
"""

PRELUDE = r"""#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
""" + C_HELPERS + r"""/* 2^x without libm calls, so lane loops vectorize: x = n + f, |f| <= 1/2, Taylor to f^7
   (relative error ~1e-7), 2^n applied in two halves so no intermediate overflows. */
static inline float exp2_(float x) {
  float c = x > 129.0f ? 129.0f : (x < -152.0f ? -152.0f : x);
  float n = __builtin_rintf(c), f = c - n;
  float p = 1.5252733804059841e-05f;
  p = p * f + 1.5403530393381609e-04f; p = p * f + 1.3333558146428443e-03f;
  p = p * f + 9.6181291076284772e-03f; p = p * f + 5.5504108664821580e-02f;
  p = p * f + 2.4022650695910071e-01f; p = p * f + 6.9314718055994531e-01f; p = p * f + 1.0f;
  int e = (int)n, h = e / 2;
  uint32_t b1 = (uint32_t)(h + 127) << 23, b2 = (uint32_t)(e - h + 127) << 23;
  float s1, s2; memcpy(&s1, &b1, 4); memcpy(&s2, &b2, 4);
  float r = p * s1 * s2;
  return x != x ? x : r;
}
"""


# exp2_ on whole vectors (the per-lane loop over exp2_ does not vectorize): the same
# polynomial and exponent split, rounding by the 1.5 * 2^23 trick instead of rintf.
VEC_HELPERS = r"""static inline vf selv_(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
static inline vf maxv_(vf a, vf b) { return selv_((a != a) | (a > b), a, b); }  /* NaN-propagating, like maxf_nan */
static inline vf exp2v_(vf x) {
  vf zero_ = {0};  /* x - x + k was NaN for +-inf: exp2(+inf) = inf, exp2(-inf) = 0 like numpy */
  vf c = selv_(x > 129.0f, zero_ + 129.0f, x);
  c = selv_(c < -152.0f, zero_ - 152.0f, c);
  vf n = (c + 12582912.0f) - 12582912.0f, f = c - n;
  vf p = f * 1.5252733804059841e-05f + 1.5403530393381609e-04f;
  p = p * f + 1.3333558146428443e-03f; p = p * f + 9.6181291076284772e-03f; p = p * f + 5.5504108664821580e-02f;
  p = p * f + 2.4022650695910071e-01f; p = p * f + 6.9314718055994531e-01f; p = p * f + 1.0f;
  vi e = __builtin_convertvector(n, vi), h = e >> 1;
  vi b1 = (h + 127) << 23, b2 = (e - h + 127) << 23;
  vf s1, s2; memcpy(&s1, &b1, sizeof s1); memcpy(&s2, &b2, sizeof s2);
  return selv_(x != x, x, p * s1 * s2);
}
"""


def ctype(d: DType) -> str: return "float" if d.is_float else "int"


class CRenderer:
    def __init__(self, p: Program):
        self.p, self.L = p, p.lanes
        self.lines: list[str] = []
        self.n = 0
        self.scopes: list[dict[Node, str]] = [{}]
        self.volatile: list[Node] = []
        self.vec_memo: dict[Node, bool] = {}
        self.regs: dict[str, DType] = {}

    # ---- helpers --------------------------------------------------------------
    def vt(self, d: DType) -> str: return ("vf" if d.is_float else "vi") if self.L > 1 else ctype(d)

    def is_vec(self, n: Node) -> bool:
        if self.L == 1: return False
        if n not in self.vec_memo:
            self.vec_memo[n] = (n.op is Ops.SPECIAL and n.arg[0] == "lane") or n.op is Ops.REG or \
                any(self.is_vec(s) for s in n.src)
        return self.vec_memo[n]

    def emit(self, line: str, depth: int) -> None: self.lines.append("  " * depth + line)

    def fresh(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def lookup(self, n: Node) -> str | None:
        for sc in reversed(self.scopes):
            if n in sc: return sc[n]
        return None

    # ---- expressions ------------------------------------------------------------
    def ex(self, n: Node, d: int) -> str:
        """C expression for ``n`` (a vector-typed temp when lane-varying)."""
        if n.op is Ops.CONST: return _const(n)
        if n.op is Ops.SPECIAL:
            return "lanes_" if n.arg[0] == "lane" else f"s_{n.arg[0]}"
        if (name := self.lookup(n)) is not None: return name
        code = self._vec(n, d) if self.is_vec(n) else self._scalar(n, d)
        name = self.fresh()
        if self.is_vec(n) and not code.startswith("="):
            self.emit(f"{self.vt(n.dtype)} {name} = {code};", d)
        elif self.is_vec(n):
            self.emit(f"{self.vt(n.dtype)} {name}; {code[1:].replace('@', name)}", d)
        else:
            self.emit(f"{ctype(n.dtype)} {name} = {code};", d)
        self.scopes[-1][n] = name
        if any(x.op in (Ops.REG, Ops.SHARED) for x in n.toposort()): self.volatile.append(n)
        return name

    def _scalar(self, n: Node, d: int) -> str:
        if n.op is Ops.LOAD:
            idx, ok = self.ex(n.src[0], d), self.ex(n.src[1], d)
            val = _from_storage(f"in{n.arg}[{idx}]", self.p.inputs[n.arg].dtype)
            if ok != "1": self.scalar_masked = True
            return val if ok == "1" else f"({ok} ? {val} : 0)"
        if n.op is Ops.REG: return f"{n.arg}[{self.ex(n.src[0], d)}]"
        if n.op is Ops.SHARED: return f"{n.arg}[{self.ex(n.src[0], d)}]"
        return _op(n, [self.ex(s, d) for s in n.src])

    def _vec(self, n: Node, d: int) -> str:
        """Vector value; '=' prefix means a statement filling temp '@'."""
        L, vt = self.L, self.vt(n.dtype)
        if n.op is Ops.REG: return f"{n.arg}[{self.ex(n.src[0], d)}]"
        if n.op is Ops.LOAD:
            buf = self.p.inputs[n.arg]
            ok_vec = self.is_vec(n.src[1])
            if lane_stride(n.src[0], self.p.lane) == 1 and not ok_vec:
                base = self.ex(substitute(n.src[0], {self.p.lane: const(0, dt.int32)}), d)
                ok = self.ex(n.src[1], d)
                if buf.dtype is dt.float32:
                    fill = f"memcpy(&@, &in{n.arg}[{base}], sizeof(@));"
                else:
                    fill = f"for (int l_ = 0; l_ < {L}; l_++) @[l_] = {_from_storage(f'in{n.arg}[{base} + l_]', buf.dtype)};"
                return "=" + (fill if ok == "1" else f"if ({ok}) {{ {fill} }} else @ = ({vt}){{0}};")
            if lane_stride(n.src[0], self.p.lane) == 1:  # contiguous under a moving mask: a masked vector load
                base = self.ex(substitute(n.src[0], {self.p.lane: const(0, dt.int32)}), d)
                ok = self.ex(n.src[1], d)
                val = _from_storage(f"in{n.arg}[{base} + l_]", buf.dtype)
                return f"=for (int l_ = 0; l_ < {L}; l_++) @[l_] = {ok}[l_] ? {val} : 0;"
            idx, ok = self.ex(n.src[0], d), self.ex(n.src[1], d)
            il = f"{idx}[l_]" if self.is_vec(n.src[0]) else idx
            okl = f"{ok}[l_]" if ok_vec else ok
            val = _from_storage(f"in{n.arg}[{il}]", buf.dtype)
            return f"=for (int l_ = 0; l_ < {L}; l_++) @[l_] = ({okl}) ? {val} : 0;"
        srcs = [self.ex(s, d) for s in n.src]
        if n.op in (Ops.ADD, Ops.MUL) and n.dtype.is_float:
            return f"({srcs[0]} {'+' if n.op is Ops.ADD else '*'} {srcs[1]})"
        if n.op is Ops.EXP2 and n.dtype is dt.float32 and self.is_vec(n.src[0]): return f"exp2v_({srcs[0]})"
        if n.op is Ops.MAX and n.dtype.is_float:
            a, b = (c if self.is_vec(x) else f"((vf){{0}} + {c})" for c, x in zip(srcs, n.src))
            return f"maxv_({a}, {b})"
        if n.op is Ops.SHARED:
            return f"=for (int l_ = 0; l_ < {L}; l_++) @[l_] = {n.arg}[{srcs[0]}[l_]];"
        lane_srcs = [f"{c}[l_]" if self.is_vec(s) else c for c, s in zip(srcs, n.src)]
        return f"=for (int l_ = 0; l_ < {L}; l_++) @[l_] = {_op(n, lane_srcs)};"

    # ---- statements -------------------------------------------------------------
    def stmts(self, body: tuple[Stmt, ...], d: int) -> None:
        for s in body:
            self.stmt(s, d)
            for n in self.volatile:
                for sc in self.scopes: sc.pop(n, None)
            self.volatile.clear()

    def block(self, head: str, body: tuple[Stmt, ...], d: int) -> None:
        self.emit((head + " {").lstrip(), d)
        self.scopes.append({})
        self.stmts(body, d + 1)
        self.scopes.pop()
        self.emit("}", d)

    def stmt(self, s: Stmt, d: int) -> None:
        L = self.L
        if isinstance(s, Loop):
            if s.unroll and any(isinstance(x, Reg) for x in s.body):  # each copy declares its registers
                for i in range(s.size):
                    self.block("", tuple(subst_stmt(x, {s.var: const(i, dt.int32)}) for x in s.body), d)
            elif s.unroll:
                self.stmts(unrolled(s), d)
            else:
                v = f"s_{s.var.arg[0]}"
                self.block(f"for (int {v} = 0; {v} < {s.size}; {v}++)", s.body, d)
        elif isinstance(s, If):
            self.block(f"if ({self.ex(s.cond, d)})", s.body, d)
        elif isinstance(s, (Reg, Shared)):
            self.regs[s.name] = s.dtype
            t = self.vt(s.dtype) if isinstance(s, Reg) else ctype(s.dtype)
            self.emit(f"{t} {s.name}[{s.size}];", d)
        elif isinstance(s, Assign):
            idx, val = self.ex(s.index, d), self.ex(s.value, d)
            if L > 1 and not self.is_vec(s.value): val = f"(({self.vt(self.regs[s.name])}){{0}} + {val})"
            self.emit(f"{s.name}[{idx}] = {val};", d)
        elif isinstance(s, SharedStore):
            self._store(s.name, s.index, s.value, s.valid, self.regs[s.name], d, shared=True)
        elif isinstance(s, Store):
            self._store("out", s.index, s.value, s.valid, self.p.output.dtype, d)
        elif isinstance(s, Barrier):
            pass  # one thread per block on the CPU
        else:
            raise TypeError(f"unknown statement {s!r}")

    def _store(self, buf: str, index: Node, value: Node, valid: Node, to: DType, d: int, shared: bool = False) -> None:
        conv = (lambda x: f"({ctype(to)})({x})") if shared else (lambda x: _to_storage(x, value.dtype, to))
        val, L = self.ex(value, d), self.L
        vec_any = self.is_vec(index) or self.is_vec(valid) or self.is_vec(value)
        if not vec_any:
            idx, ok = self.ex(index, d), self.ex(valid, d)
            line = f"{buf}[{idx}] = {conv(val)};"
            self.emit(line if ok == "1" else f"if ({ok}) {line}", d)
            return
        if lane_stride(index, self.p.lane) == 1 and not self.is_vec(valid) and not shared and to is dt.float32 \
                and value.dtype is dt.float32 and self.is_vec(value):
            base = self.ex(substitute(index, {self.p.lane: const(0, dt.int32)}), d)
            ok = self.ex(valid, d)
            line = f"memcpy(&{buf}[{base}], &{val}, sizeof({val}));"
            self.emit(line if ok == "1" else f"if ({ok}) {line}", d)
            return
        idx, ok = self.ex(index, d), self.ex(valid, d)
        lane = lambda c, n: f"{c}[l_]" if self.is_vec(n) else c  # noqa: E731
        self.emit(f"for (int l_ = 0; l_ < {L}; l_++) if ({lane(ok, valid)}) {buf}[{lane(idx, index)}] = "
                  f"{conv(lane(val, value))};", d)

    # ---- whole file ---------------------------------------------------------------
    prelude = PRELUDE
    block_attrs = ""  # e.g. noinline, where the caller must see block_ as its own function

    def header(self) -> list[str]:
        head = [self.prelude]
        if self.L > 1:
            head += [f"typedef float vf __attribute__((vector_size({4 * self.L})));",
                     f"typedef int vi __attribute__((vector_size({4 * self.L})));", VEC_HELPERS]
        return head

    def block_fn(self) -> tuple[list[str], list[str]]:
        """(the parameters, the lines) of ``block_``, which runs one block of the program."""
        p, L = self.p, self.L
        args = [f"const {STORAGE[b.dtype.name]}* restrict in{i}" for i, b in enumerate(p.inputs)]
        args.append(f"{STORAGE[p.output.dtype.name]}* restrict out")
        self.stmts(p.body, 1)
        lanes = ["  const vi lanes_ = {" + ", ".join(map(str, range(L))) + "};"] if L > 1 else []
        # gcc 12's loop vectorizer (-O3 -march=native, AVX-512) miscompiles short reduction loops
        # of masked scalar loads `(ok ? in[i] : 0)` (a padded unroll of a conv's reduce axis under
        # an output loop gave 37% error); those functions are compiled without it
        attrs = self.block_attrs + ('__attribute__((optimize("no-tree-loop-vectorize"))) '
                                    if getattr(self, "scalar_masked", False) else "")
        return args, [f"{attrs}static void block_(int s_block, {', '.join(args)}) {{", *lanes, *self.lines, "}"]

    def entry(self, args: list[str]) -> list[str]:
        """The exported functions: run every block (OpenMP over workers) and time runs."""
        p = self.p
        casts = [f"({a.rsplit(' ', 1)[0]})bufs[{i}]" for i, a in enumerate(args)]
        return ["int superopt_run(void** bufs, int workers) {",
                f"  if (workers > {p.blocks}) workers = {p.blocks};  /* never wake a thread with no block */",
                "  if (workers > 1) {",
                "    #pragma omp parallel for num_threads(workers) schedule(static)",
                f"    for (int b = 0; b < {p.blocks}; b++) block_(b, {', '.join(casts)});",
                "  } else {",
                f"    for (int b = 0; b < {p.blocks}; b++) block_(b, {', '.join(casts)});",
                "  }", "  return 0;", "}",
                "double superopt_time(void** bufs, int workers, int iters) {",
                "  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);",
                "  /* a volatile function pointer and a memory clobber: the compiler can neither inline",
                "     the kernel into the loop nor fold identical runs together */",
                "  int (*volatile run)(void**, int) = superopt_run;",
                "  for (int i = 0; i < iters; i++) { run(bufs, workers); __asm__ volatile(\"\" ::: \"memory\"); }",
                "  clock_gettime(CLOCK_MONOTONIC, &t1);",
                "  return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);", "}"]

    def render(self) -> str:
        args, fn = self.block_fn()
        return "\n".join(self.header() + [""] + fn + [""] + self.entry(args)) + "\n"


def render(p: Program) -> str:
    return CRenderer(p).render()


# ---- scalar C for single ops ------------------------------------------------------------
def _const(n: Node) -> str:
    v = n.arg
    if n.dtype.kind == "b": return "1" if v else "0"
    if n.dtype.is_int: return str(int(v)) if -2**31 < v < 2**31 else f"(int){int(v) & 0xFFFFFFFF}u"
    if math.isnan(v): return "NAN"
    if math.isinf(v): return "INFINITY" if v > 0 else "(-INFINITY)"
    return f"{float(v)!r}f".replace("inff", "INFINITY")


def _from_storage(x: str, d: DType) -> str:
    if d is dt.bfloat16: return f"bf16_to_f({x})"
    if d.is_float: return f"(float){x}"
    if d.kind == "b": return f"(int)({x} != 0)"
    return f"(int){x}"


def _to_storage(x: str, src: DType, to: DType) -> str:
    if to is dt.bfloat16: return f"f_to_bf16((float)({x}))"
    if to.kind == "b": return f"(uint8_t)(({x}) != 0)"
    if to.is_int and src.is_float: return f"({STORAGE[to.name]})f2i({x})"
    return f"({STORAGE[to.name]})({x})"


def _wrap(x: str, d: DType) -> str:
    if d is dt.int8: return f"(int)(int8_t)({x})"
    if d is dt.uint8: return f"(int)(uint8_t)({x})"
    return x


def _cast(x: str, src: DType, to: DType) -> str:
    if to.kind == "b": return f"({x} != 0)"
    if to.is_float:
        if to is dt.float16: return f"f16r((float)({x}))"
        if to is dt.bfloat16: return f"bf16r((float)({x}))"
        return f"(float)({x})"
    if src.is_float:
        return f"(int)({STORAGE[to.name]})f2i({x})"
    return f"(int)({STORAGE[to.name]})({x})"


def _is_index(n: Node) -> bool:
    """Integer math over indices only (no data): small by construction, never wraps."""
    return not any(x.op in (Ops.LOAD, Ops.REG, Ops.SHARED) for x in n.toposort())


def _op(n: Node, a: list[str]) -> str:
    op, d = n.op, n.dtype
    fl = n.src[0].dtype.is_float if n.src else d.is_float
    if op is Ops.WHERE: return f"({a[0]} ? {a[1]} : {a[2]})"
    if op is Ops.CAST: return _cast(a[0], n.src[0].dtype, d)
    if op is Ops.NEG:
        if d.kind == "b": return f"(!{a[0]})"
        return f"(-{a[0]})" if fl else _wrap(f"(int)(0u - (unsigned){a[0]})", d)
    if op is Ops.EXP2: return f"exp2_({a[0]})"
    if op is Ops.LOG2: return f"log2f({a[0]})"
    if op is Ops.RECIP: return f"(1.0f / {a[0]})"
    if op is Ops.SQRT: return f"sqrtf({a[0]})"
    if op is Ops.SIN: return f"sinf({a[0]})"
    if op in (Ops.ADD, Ops.MUL):
        sym = "+" if op is Ops.ADD else "*"
        if fl: return f"({a[0]} {sym} {a[1]})"
        if d.kind == "b": return f"({a[0]} {'|' if op is Ops.ADD else '&'} {a[1]})"
        if _is_index(n): return f"({a[0]} {sym} {a[1]})"  # bounded index math: let the compiler reason about it
        return _wrap(f"(int)((unsigned){a[0]} {sym} (unsigned){a[1]})", d)
    if op is Ops.MAX: return f"maxf_nan({a[0]}, {a[1]})" if fl else f"({a[0]} > {a[1]} ? {a[0]} : {a[1]})"
    if op is Ops.CMPLT: return f"({a[0]} < {a[1]})"
    if op is Ops.CMPEQ: return f"({a[0]} == {a[1]})"
    if op is Ops.CMPNE: return f"({a[0]} != {a[1]})"
    if op in (Ops.IDIV, Ops.MOD):
        x, c = n.src
        if c.op is Ops.CONST and c.arg > 0 and x.vmin >= 0:
            return f"({a[0]} {'/' if op is Ops.IDIV else '%'} {a[1]})"
        return f"{'fdiv_i' if op is Ops.IDIV else 'fmod_i'}({a[0]}, {a[1]})"
    if op is Ops.AND: return f"({a[0]} & {a[1]})"
    if op is Ops.OR: return f"({a[0]} | {a[1]})"
    if op is Ops.XOR: return f"({a[0]} ^ {a[1]})"
    if op is Ops.SHL: return _wrap(f"(int)((unsigned){a[0]} << ({a[1]} & 31))", d)
    if op is Ops.SHR: return f"({a[0]} >> ({a[1]} & 31))"
    raise NotImplementedError(f"cpu backend cannot render {op}")
