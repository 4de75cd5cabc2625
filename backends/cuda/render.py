"""Render a lowered ``Program`` as CUDA C++ (one ``extern "C" __global__`` function).

Decisions are the Program's; this module only spells them:
- ``block``/``thread`` are ``blockIdx.x``/``threadIdx.x``; ``__launch_bounds__(threads)``.
- Lanes (the schedule's vector width) are written out per lane; a global load or store
  whose index moves by 1 per lane, whose mask is lane-uniform and whose first element is
  provably aligned becomes 16-byte (or narrower) vector accesses.
- Unrolled loops are expanded here (``ir.program.unrolled``), so register arrays are
  indexed by constants and stay in registers; other loops stay ``for`` loops.
- Floats compute in fp32 whatever their storage (fp16/bf16 are stored as 16-bit patterns
  and converted with ``cvt``; a CAST to them rounds), as the reference does in float64.
- Loads of inputs are computed once per scope (inputs are read-only), so register tiles
  reuse a loaded value across slots.
- Runs of register assignments from consecutive, aligned shared elements become one
  vector shared load (``vectorize.shared_runs``, the rule the emulator counts by).
- Tensor-core statements are inline PTX (wgmma: ``wgmma.py``; TMA and mbarriers, with the
  kernel's tensor-map parameters: ``tma.py``): ``SharedCopy`` a 16-byte ``cp.async.cg`` (or a
  ``uint4`` copy), ``FragLoad`` ``ldmatrix.x4``, ``Mma`` ``mma.sync.m16n8k16``; fragment
  register arrays (the targets of ``FragLoad``) hold two 16-bit elements per 32-bit
  register, element 2r in the low half of register r, as the instructions expect.
"""
from __future__ import annotations

import math
import re

from ...ir import dtype as dt
from ...ir.node import Node, Ops, TRUE, const, substitute, toposort
from ...ir.program import (Assign, Barrier, CopyCommit, CopyWait, FragLoad, If, Loop, Mbarriers, Mma, Program, Reg,
                                 Roles, Shared, SharedCopy, SharedStore, Store, lane_stride, unrolled)

from . import shuffle, tma, wgmma
from .shuffle import NVIDIA_WARP, WarpCombine
from .vectorize import divisible, merged_loads, shared_runs, store_runs

STATIC_SMEM_LIMIT = 48 * 1024

PRELUDE = r"""
__device__ __forceinline__ float h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float b2f(unsigned short b) { return __uint_as_float(((unsigned int)b) << 16); }
__device__ __forceinline__ unsigned short f2b(float f) { unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float maxf_nan(float a, float b) { return (a != a || a > b) ? a : b; }  /* numpy's max: NaN propagates (fmaxf drops it) */
__device__ __forceinline__ int fdiv(int a, int b) { int q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }
__device__ __forceinline__ int fmod_(int a, int b) { int r = a % b; return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
"""

STORAGE = {"float32": "float", "float16": "unsigned short", "bfloat16": "unsigned short", "int8": "signed char",
           "uint8": "unsigned char", "int32": "int", "bool": "bool"}
VEC = {4: "unsigned int", 8: "uint2", 16: "uint4"}


def _zero(vt: str) -> str:
    """A zero of a copy type: ``unsigned int{}`` is not C++ (a two-word type in a functional cast)."""
    return "0u" if vt == "unsigned int" else f"{vt}{{}}"


def compute_type(d: dt.DType) -> str:
    return "float" if d.is_float else "bool" if d.kind == "b" else "int"


def kernel_name(p: Program) -> str:
    return "k_" + re.sub(r"\W", "_", p.name)


def to_compute(expr: str, d: dt.DType) -> str:
    """A storage value as its compute type."""
    if d is dt.float16: return f"h2f({expr})"
    if d is dt.bfloat16: return f"b2f({expr})"
    if d.is_float: return f"(float)({expr})"
    return expr


def to_storage(expr: str, d: dt.DType) -> str:
    if d is dt.float16: return f"f2h({expr})"
    if d is dt.bfloat16: return f"f2b({expr})"
    if d.kind == "b": return f"(bool)({expr})"
    return f"({STORAGE[d.name]})({expr})"


def literal(v, d: dt.DType) -> str:
    if d.is_float:
        v = float(v)
        if math.isnan(v): return "__int_as_float(0x7fc00000)"
        if math.isinf(v): return "__int_as_float(0x7f800000)" if v > 0 else "__int_as_float(0xff800000)"
        return f"{v!r}f" if "e" in repr(v) or "." in repr(v) else f"{v!r}.0f"
    if d.kind == "b": return "true" if v else "false"
    v = int(v)
    return f"({v + 1}-1)" if v == -2**31 else str(v)


class _Renderer:
    def __init__(self, p: Program):
        self.p = p
        self.lines: list[str] = []
        self.n = 0
        self.scopes: list[dict[Node, str]] = [{}]
        self.reg_dt: dict[str, dt.DType] = {}
        self.shared_dt: dict[str, dt.DType] = {}
        self.lane = p.lane if p.lanes > 1 else None
        self._pure: dict[Node, bool] = {}
        self.shuffled: set[str] = set()   # shared buffers replaced by warp shuffles
        self.frags = {x.name for x in p.walk() if isinstance(x, FragLoad)} | \
            {n for x in p.walk() if isinstance(x, Mma) for n in (x.a, x.b)}   # packed 16-bit pairs (mma operands)

    # ---- plumbing ----------------------------------------------------------------
    def emit(self, line: str) -> None: self.lines.append("  " * len(self.scopes) + line)

    def tmp(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def cached(self, n: Node) -> str | None:
        for s in reversed(self.scopes):
            if n in s: return s[n]
        return None

    def pure(self, n: Node) -> bool:
        """Depends only on indices and inputs (never on registers or shared memory)."""
        if n not in self._pure: self._pure[n] = all(x.op not in (Ops.REG, Ops.SHARED) for x in toposort(n))
        return self._pure[n]

    # ---- expressions -------------------------------------------------------------
    def expr(self, root: Node, lane: int = 0) -> str:
        """C expression for ``root`` at ``lane`` (the lane variable already substituted;
        register elements are ``lanes`` wide); loads and shared values become temporaries."""
        local: dict[Node, str] = {}
        for n in toposort(root):
            c = self.cached(n)
            if c is not None: local[n] = c; continue  # noqa: E702
            local[n] = s = self.node(n, local, lane)
            if n.op in (Ops.LOAD, Ops.SHARED, Ops.REG) or (len(s) > 60 and n.op is not Ops.CONST):
                t = self.tmp()
                self.emit(f"const {compute_type(n.dtype)} {t} = {s};")
                local[n] = t
                if self.pure(n) and n.op is not Ops.REG: self.scopes[-1][n] = t
        return local[root]

    def node(self, n: Node, v: dict[Node, str], lane: int) -> str:
        op, src = n.op, [v[s] for s in n.src]
        if op is Ops.CONST: return literal(n.arg, n.dtype)
        if op is Ops.SPECIAL:
            name = n.arg[0]
            if name == "block": return "(int)blockIdx.x"
            if name == "thread": return "(int)threadIdx.x"
            return name
        if op is Ops.LOAD:
            b = self.p.inputs[n.arg]
            val = to_compute(f"in{n.arg}[{src[0]}]", b.dtype)
            return val if n.src[1] is TRUE else f"({src[1]} ? {val} : {literal(0, b.dtype)})"
        if op is Ops.REG: return f"{n.arg}[({src[0]}) * {self.p.lanes} + {lane}]" if self.p.lanes > 1 else f"{n.arg}[{src[0]}]"
        if op is Ops.SHARED: return to_compute(f"{n.arg}[{src[0]}]", self.shared_dt[n.arg])
        f = n.dtype.is_float
        if op in (Ops.ADD, Ops.MUL, Ops.SHL) and n.dtype is dt.int32 and not -2**31 <= n.vmin <= n.vmax < 2**31:
            # may overflow (an index hash): wrap like the reference, in unsigned arithmetic (signed overflow is undefined)
            return f"(int)((unsigned){src[0]} {dict(ADD='+', MUL='*', SHL='<<')[op.name]} (unsigned){src[1]})"
        if op is Ops.ADD: return f"({src[0]} + {src[1]})" if n.dtype.kind != "b" else f"({src[0]} || {src[1]})"
        if op is Ops.MUL: return f"({src[0]} * {src[1]})" if n.dtype.kind != "b" else f"({src[0]} && {src[1]})"
        if op is Ops.MAX: return f"maxf_nan({src[0]}, {src[1]})" if f else f"max({src[0]}, {src[1]})"
        if op is Ops.CMPLT: return f"({src[0]} < {src[1]})"
        if op is Ops.CMPEQ: return f"({src[0]} == {src[1]})"
        if op is Ops.CMPNE: return f"({src[0]} != {src[1]})"
        if op in (Ops.IDIV, Ops.MOD):
            nonneg = n.src[0].vmin >= 0 and n.src[1].vmin > 0
            if nonneg: return f"({src[0]} {'/' if op is Ops.IDIV else '%'} {src[1]})"
            return f"{'fdiv' if op is Ops.IDIV else 'fmod_'}({src[0]}, {src[1]})"
        if op in (Ops.AND, Ops.OR, Ops.XOR):
            if n.dtype.kind == "b": return f"({src[0]} {dict(AND='&&', OR='||', XOR='!=')[op.name]} {src[1]})"
            return f"({src[0]} {dict(AND='&', OR='|', XOR='^')[op.name]} {src[1]})"
        if op is Ops.SHL: return f"({src[0]} << {src[1]})"
        if op is Ops.SHR: return f"({src[0]} >> {src[1]})"
        if op is Ops.WHERE: return f"({src[0]} ? {src[1]} : {src[2]})"
        if op is Ops.NEG: return f"(-{src[0]})" if n.dtype.kind != "b" else f"(!{src[0]})"
        if op is Ops.EXP2: return f"exp2f({src[0]})"
        if op is Ops.LOG2: return f"log2f({src[0]})"
        if op is Ops.SIN: return f"sinf({src[0]})"
        if op is Ops.SQRT: return f"sqrtf({src[0]})"
        if op is Ops.RECIP: return f"(1.0f / {src[0]})"
        if op is Ops.CAST: return self.cast(src[0], n.src[0].dtype, n.dtype)
        raise ValueError(f"cannot render {op} in a CUDA program")

    def cast(self, x: str, frm: dt.DType, to: dt.DType) -> str:
        if to.kind == "b": return f"({x} != 0)"
        if to.is_float:
            y = f"(float)({x})"
            if to is dt.float16: return f"h2f(f2h({y}))"
            if to is dt.bfloat16: return f"b2f(f2b({y}))"
            return y
        if frm.is_float:  # truncate toward zero, NaN -> 0 like the reference, then wrap
            x = f"(isnan({x}) ? 0 : (int)fmaxf(fminf({x}, 2147483520.0f), -2147483648.0f))"
        return f"(int)({STORAGE[to.name]})({x})" if to is not dt.int32 else f"(int)({x})"

    # ---- vector memory --------------------------------------------------------------
    def lanes_of(self, n: Node) -> list[Node]:
        return [substitute(n, {self.lane: const(i, dt.int32)}) for i in range(self.p.lanes)] if self.lane is not None else [n]

    def vector_loads(self, root: Node) -> None:
        """Emit vector loads for every contiguous, aligned, lane-uniformly masked load in
        ``root`` and cache each lane's element."""
        if self.lane is None: return
        for ld in toposort(root):
            if ld.op is not Ops.LOAD or self.lane not in toposort(ld) or not self.pure(ld): continue
            if self.cached(substitute(ld, {self.lane: const(0, dt.int32)})) is not None: continue
            idx, valid = ld.src
            if lane_stride(idx, self.lane) != 1 or lane_stride(valid, self.lane) != 0: continue
            b = self.p.inputs[ld.arg]
            base = substitute(idx, {self.lane: const(0, dt.int32)})
            per = 16 // b.dtype.itemsize
            chunk = min(self.p.lanes, per)
            if chunk * b.dtype.itemsize not in VEC or not divisible(base, chunk) or self.p.lanes % chunk: continue
            ok = None if valid is TRUE else self.expr(substitute(valid, {self.lane: const(0, dt.int32)}))
            bidx = self.expr(base)
            elems = self.lanes_of(ld)
            for c0 in range(0, self.p.lanes, chunk):
                self.emit_vector(ld.arg, bidx, c0, elems[c0:c0 + chunk], ok)

    def emit_vector(self, slot: int, base: str, c0: int, elems: list[Node], ok: str | None) -> None:
        """One vector load of ``len(elems)`` elements of input ``slot`` at ``base + c0``;
        each element's value cached for ``elems`` (the scalar loads it replaces)."""
        b = self.p.inputs[slot]
        vt = VEC[len(elems) * b.dtype.itemsize]
        t = self.tmp()
        load = f"*reinterpret_cast<const {vt}*>(in{slot} + {base} + {c0})"
        zero = "0u" if vt == "unsigned int" else f"{vt}{{}}"
        self.emit(f"const {vt} {t} = " + (load if ok is None else f"{ok} ? {load} : {zero}") + ";")
        for i, node in enumerate(elems):
            e = self.tmp()
            self.emit(f"const {compute_type(b.dtype)} {e} = {to_compute(f'reinterpret_cast<const {STORAGE[b.dtype.name]}*>(&{t})[{i}]', b.dtype)};")
            self.scopes[-1][node] = e

    def combine_loads(self, stmts) -> None:
        """In an unrolled block, loads of one input at ``base + c`` for consecutive constants
        ``c`` (same mask, aligned base) become vector loads of up to 16 bytes."""
        skip = lambda ld: self.cached(ld) is not None or (self.lane is not None and self.lane in toposort(ld))  # noqa: E731
        for slot, base, c0, valid, loads in merged_loads(stmts, self.p.inputs, skip):
            ok = None if valid is TRUE else self.expr(valid)
            self.emit_vector(slot, self.expr(base), c0, loads, ok)

    # ---- statements ----------------------------------------------------------------
    def body(self, stmts) -> None:
        stmts, i = list(stmts), 0
        runs = shared_runs(stmts, self.shared_dt) if self.lane is None else {}
        stores = store_runs(stmts, self.p.output.dtype) if self.lane is None else {}
        while i < len(stmts):
            if i in stores:
                self.store_vector(stmts[i:i + stores[i]])
                i += stores[i]
                continue
            m = self.warp_combine(stmts[i:i + 4])
            if m is not None:
                self.shuffle_combine(m)
                i += 4
                continue
            if i in runs and self.shared_vector(stmts[i:i + runs[i]]):
                i += runs[i]
                continue
            self.stmt(stmts[i])
            i += 1

    def shared_vector(self, run: list[Assign]) -> bool:
        """Register assignments of consecutive shared elements (vectorize.shared_runs, the
        rule the emulator counts by) as one vector shared load; False: left scalar."""
        first = run[0].value
        d = self.shared_dt[first.arg]
        if first.arg in self.shuffled or any(st.name in self.frags for st in run): return False
        vt = VEC[len(run) * d.itemsize]
        t = self.tmp()
        self.emit(f"const {vt} {t} = *reinterpret_cast<const {vt}*>(&{first.arg}[{self.expr(first.src[0])}]);")
        for e, st in enumerate(run):
            x = to_compute(f"reinterpret_cast<const {STORAGE[d.name]}*>(&{t})[{e}]", d)
            rd = self.reg_dt[st.name]
            self.emit(f"{st.name}[{self.expr(st.index)}] = {self.cast(x, rd, rd) if rd in (dt.float16, dt.bfloat16) else x};")
            self.forget_regs(st.name)
        return True

    # ---- split reductions inside a warp: shuffles instead of shared memory -------------
    def warp_combine(self, w: list) -> WarpCombine | None:
        m = shuffle.match(w, self.p)
        if m is not None: self.shuffled.add(m.shared)
        return m

    def shuffle_combine(self, m: WarpCombine) -> None:
        reg, n, tr, op, cond, stores = m.reg, m.size, m.threads, m.op, m.cond, m.stores
        mask = "0xffffffffu" if self.p.threads >= NVIDIA_WARP else hex((1 << self.p.threads) - 1) + "u"
        fold = "maxf_nan" if op is Ops.MAX and self.reg_dt[reg].is_float else "max" if op is Ops.MAX else None
        self.emit(f"// {tr} threads' partials folded with warp shuffles")
        for e in range(n * self.p.lanes):
            for off in (1 << i for i in reversed(range(tr.bit_length() - 1))):
                other = f"__shfl_xor_sync({mask}, {reg}[{e}], {off})"
                self.emit(f"{reg}[{e}] = " + (f"{fold}({reg}[{e}], {other});" if fold else f"{reg}[{e}] + {other};"))
        self.forget_regs(reg)
        self.scoped(f"if ({self.expr(cond)})", stores)
        if m.barrier: self.emit("__syncthreads();")

    def scoped(self, head: str, stmts) -> None:
        self.emit(head + " {")
        self.scopes.append({})
        self.body(stmts)
        self.scopes.pop()
        self.emit("}")

    def stmt(self, s) -> None:
        if isinstance(s, Loop):
            if s.unroll:
                stmts = unrolled(s)
                self.combine_loads(stmts)
                self.body(stmts)
                return
            v = s.var.arg[0]
            self.scoped(f"for (int {v} = 0; {v} < {s.size}; ++{v})", s.body)
        elif isinstance(s, If):
            self.vector_loads(s.cond)
            cond = self.expr(self.lanes_of(s.cond)[0])
            self.scoped(f"if ({cond})", s.body)
        elif isinstance(s, Roles):  # disjoint thread conditions: each thread runs its own branch's code
            for i, b in enumerate(s.branches):
                self.scoped(f"{'else ' if i else ''}if ({self.expr(b.cond)})", b.body)
        elif isinstance(s, Reg) and s.name in self.frags:
            self.reg_dt[s.name] = s.dtype
            self.emit(f"unsigned {s.name}[{-(-s.size // 2)}];")
        elif isinstance(s, Reg):
            self.reg_dt[s.name] = s.dtype
            self.emit(f"{compute_type(s.dtype)} {s.name}[{s.size * self.p.lanes}];")
        elif isinstance(s, Shared):
            pass  # declared at the top of the kernel
        elif isinstance(s, Assign) and s.name in self.frags:   # one 16-bit half of a packed pair (index constant)
            k, d = int(s.index.arg), self.reg_dt[s.name]
            keep = "0xffff0000u" if k % 2 == 0 else "0x0000ffffu"
            self.emit(f"{s.name}[{k // 2}] = ({s.name}[{k // 2}] & {keep}) | ((unsigned)({self.stored(s.value, 0, d)}) << {16 * (k % 2)});")
        elif isinstance(s, Assign):
            self.vector_loads(s.value)
            d = self.reg_dt[s.name]
            idx = self.expr(s.index)
            vals = [self.expr(x, i) for i, x in enumerate(self.lanes_of(s.value))]
            for i, x in enumerate(vals):
                x = self.cast(x, d, d) if d in (dt.float16, dt.bfloat16) else x
                at = f"({idx}) * {self.p.lanes} + {i}" if self.p.lanes > 1 else idx
                self.emit(f"{s.name}[{at}] = {x};")
            self.forget_regs(s.name)
        elif isinstance(s, Store):
            self.store(s)
        elif isinstance(s, SharedStore):
            self.vector_loads(s.value)
            d = self.shared_dt[s.name]
            for i, (idx, val, ok) in enumerate(zip(self.lanes_of(s.index), self.lanes_of(s.value), self.lanes_of(s.valid))):
                line = f"{s.name}[{self.expr(idx, i)}] = {self.stored(val, i, d)};"
                self.emit(line if ok is TRUE else f"if ({self.expr(ok, i)}) {line}")
        elif isinstance(s, Barrier):
            self.emit(f'asm volatile("bar.sync 1, {s.threads};\\n" ::: "memory");' if s.threads else "__syncthreads();")
        elif isinstance(s, SharedCopy):
            self.shared_copy(s)
        elif isinstance(s, CopyCommit):
            self.emit('asm volatile("cp.async.commit_group;\\n" ::);')
        elif isinstance(s, CopyWait):
            self.emit(f'asm volatile("cp.async.wait_group {s.pending};\\n" ::: "memory");')
        elif isinstance(s, FragLoad):
            r = ", ".join(f'"=r"({s.name}[{s.offset // 2 + j}])' for j in range(4))
            addr = f"(unsigned)__cvta_generic_to_shared(&{s.shared}[{self.expr(s.row)}])"
            self.emit(f'asm volatile("ldmatrix.sync.aligned.m8n8.x4{".trans" if s.trans else ""}.shared.b16 '
                      f'{{%0,%1,%2,%3}}, [%4];\\n" : {r} : "r"({addr}));')
        elif isinstance(s, Mma):
            ab = "bf16" if ".bf16." in s.instr else "f16"
            d = ", ".join(f'"+f"({s.d}[{s.d_off + i}])' for i in range(4))
            a = ", ".join(f'"r"({s.a}[{s.a_off // 2 + i}])' for i in range(4))
            b = ", ".join(f'"r"({s.b}[{s.b_off // 2 + i}])' for i in range(2))
            self.emit(f'asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.{ab}.{ab}.f32 {{%0,%1,%2,%3}}, '
                      f'{{%4,%5,%6,%7}}, {{%8,%9}}, {{%0,%1,%2,%3}};\\n" : {d} : {a}, {b});')
        elif isinstance(s, wgmma.STMTS):
            wgmma.render_stmt(self, s)
        elif isinstance(s, tma.STMTS):
            tma.render_stmt(self, s)
        else:
            raise ValueError(f"cannot render statement {type(s).__name__}")

    def shared_copy(self, s: SharedCopy) -> None:
        nbytes = s.width * self.p.inputs[s.input].dtype.itemsize
        dst, src = self.expr(s.dst), self.expr(s.src)
        ok = None if s.valid is TRUE else self.expr(s.valid)
        if s.async_:  # zero-fill form: src-size 0 reads nothing (the address still points into the input)
            if nbytes not in (4, 8, 16): raise ValueError(f"cp.async copies 4, 8 or 16 bytes, not {nbytes}")
            size, at = (str(nbytes), src) if ok is None else (f"({ok}) ? {nbytes} : 0", f"(({ok}) ? ({src}) : 0)")
            cache = "cg" if nbytes == 16 else "ca"
            self.emit(f'asm volatile("cp.async.{cache}.shared.global [%0], [%1], {nbytes}, %2;\\n" :: '
                      f'"r"((unsigned)__cvta_generic_to_shared(&{s.name}[{dst}])), "l"(in{s.input} + {at}), "r"({size}));')
            return
        if nbytes == 2:  # one 16-bit element (all-zero bits are +0.0 in fp16 and bf16)
            self.emit(f"{s.name}[{dst}] = " + (f"in{s.input}[{src}]" if ok is None else f"({ok}) ? in{s.input}[{src}] : (unsigned short)0") + ";")
            return
        if nbytes not in VEC: raise ValueError(f"shared copies of {nbytes} bytes are not rendered (2, 4, 8, 16 only)")
        load = f"*reinterpret_cast<const {VEC[nbytes]}*>(in{s.input} + {src})"
        self.emit(f"*reinterpret_cast<{VEC[nbytes]}*>(&{s.name}[{dst}]) = " + (load if ok is None else f"({ok}) ? {load} : {_zero(VEC[nbytes])}") + ";")

    def forget_regs(self, name: str) -> None:
        for sc in self.scopes:
            for n in [n for n in sc if any(x.op is Ops.REG and x.arg == name for x in toposort(n))]: del sc[n]

    def stored(self, val: Node, lane: int, d: dt.DType) -> str:
        """``val`` converted to storage type ``d``; a cast to ``d`` itself is the conversion
        (one rounding, not round, widen, round again: the conversions are inline asm the
        compiler cannot fold, three instructions an element of a tensor-core epilogue)."""
        if val.op is Ops.CAST and val.dtype is d and d in (dt.float16, dt.bfloat16) and val.src[0].dtype.is_float:
            return to_storage(f"(float)({self.expr(val.src[0], lane)})", d)
        return to_storage(self.expr(val, lane), d)

    def store(self, s: Store) -> None:
        d = self.p.output.dtype
        self.vector_loads(s.value)
        idxs, vals, oks = self.lanes_of(s.index), self.lanes_of(s.value), self.lanes_of(s.valid)
        L = self.p.lanes
        chunk = min(L, 16 // d.itemsize)
        vec = (self.lane is not None and lane_stride(s.index, self.lane) == 1 and lane_stride(s.valid, self.lane) == 0
               and chunk * d.itemsize in VEC and L % chunk == 0 and divisible(idxs[0], chunk))
        if not vec:
            for i, (idx, val, ok) in enumerate(zip(idxs, vals, oks)):
                line = f"out[{self.expr(idx, i)}] = {self.stored(val, i, d)};"
                self.emit(line if ok is TRUE else f"if ({self.expr(ok, i)}) {line}")
            return
        cv = [self.stored(v, i, d) for i, v in enumerate(vals)]
        base = self.expr(idxs[0])
        ok = None if oks[0] is TRUE else self.expr(oks[0])
        for c0 in range(0, L, chunk): self.vector_store(base, c0, cv[c0:c0 + chunk], ok)

    def store_vector(self, run: list[Store]) -> None:
        """Stores of consecutive output elements (vectorize.store_runs) as one vector store."""
        d = self.p.output.dtype
        for st in run: self.vector_loads(st.value)
        cv = [self.stored(st.value, 0, d) for st in run]
        ok = None if run[0].valid is TRUE else self.expr(run[0].valid)
        self.vector_store(self.expr(run[0].index), 0, cv, ok)

    def vector_store(self, base: str, c0: int, values: list[str], ok: str | None) -> None:
        d, t = self.p.output.dtype, self.tmp()
        vt = VEC[len(values) * d.itemsize]
        self.emit(f"__align__(16) {STORAGE[d.name]} {t}[{len(values)}] = {{{', '.join(values)}}};")
        line = f"*reinterpret_cast<{vt}*>(out + {base} + {c0}) = *reinterpret_cast<const {vt}*>({t});"
        self.emit(line if ok is None else f"if ({ok}) {line}")


def render(p: Program) -> tuple[str, int]:
    """CUDA C++ source of ``p`` and the dynamic shared memory (bytes) it launches with."""
    r = _Renderer(p)
    shared = [s for s in p.body if isinstance(s, Shared)]
    for s in shared: r.shared_dt[s.name] = s.dtype
    r.scopes.append({})
    r.body(p.body)
    shared = [s for s in shared if s.name not in r.shuffled]
    total = sum(s.nbytes for s in shared)
    dynamic = total > STATIC_SMEM_LIMIT
    decl, off = [], 0
    for s in shared:
        st = STORAGE[s.dtype.name]
        decl.append(f"{st}* {s.name} = reinterpret_cast<{st}*>(smem_ + {off});" if dynamic
                    else f"__shared__ __align__(16) {st} {s.name}[{s.size}];")
        off += s.nbytes
    if dynamic: decl.insert(0, "extern __shared__ __align__(16) unsigned char smem_[];")
    if wgmma.uses(p):  # 1024-byte aligned, the mbarriers of TMA copies after the buffers
        (decl, total), dynamic = wgmma.shared_decls(shared, STORAGE, [s for s in p.body if isinstance(s, Mbarriers)]), True
    elif tma.uses(p): raise ValueError("TMA copies are rendered in wgmma programs only")
    params = [f"{STORAGE[p.output.dtype.name]}* __restrict__ out"] + \
             [f"const {STORAGE[b.dtype.name]}* __restrict__ in{i}" for i, b in enumerate(p.inputs)] + tma.params(p)
    head = f'extern "C" __global__ void __launch_bounds__({p.threads}) {kernel_name(p)}({", ".join(params)}) {{'
    prelude = [PRELUDE.strip(), *([tma.PRELUDE.strip()] if tma.uses(p) or any(isinstance(s, Mbarriers) for s in p.body) else [])]
    src = "\n".join([*prelude, "", f"// {p.name}: {p.blocks} blocks x {p.threads} threads x {p.lanes} lanes",
                     head, *("    " + d for d in decl), *r.lines, "}", ""])
    return src, total if dynamic else 0
