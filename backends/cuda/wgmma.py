"""CUDA spelling of Hopper warpgroup MMA statements (ir/program.py ``SharedFence``,
``WgmmaFence``, ``Wgmma``, ``WgmmaCommit``, ``WgmmaWait``) as inline PTX for sm_90a,
called from ``render.py``.

- ``Wgmma``: the two 64-bit descriptors are the statement's constant fields ORed with
  ``(shared address of the start element & 0x3FFFF) >> 4``; the accumulators are ``"+f"``
  operands (N/2 of them), scale-d a predicate set from a register.
- Accumulator registers are pinned after a ``WgmmaWait(0)``: an empty ``asm volatile``
  that reads and writes every accumulator, so the compiler cannot move the epilogue's
  reads before the wait (registers are not memory: a "memory" clobber does not order
  them). Nowhere else: an instruction touching the accumulators while a wgmma is in
  flight makes ptxas serialize every wgmma (its warning C7514); the zero-fill before the
  first wgmma is ordered by the wgmma's own ``"+f"`` operands.
- Shared memory of a wgmma program is dynamic and its base rounded up at run time to
  1024 bytes (the 128B swizzle atom; the descriptors carry base offset 0), each buffer
  starting on a 1024-byte boundary, as the emulator lays them out.
- NVRTC must target ``sm_90a`` (the arch-specific feature set) for wgmma: ``arch_for``.
"""
from __future__ import annotations

from ...ir import wgmma as wg
from ...ir.program import Mbarriers, Program, Reg, Shared, SharedFence, Wgmma, WgmmaCommit, WgmmaFence, WgmmaWait

STMTS = (SharedFence, WgmmaFence, Wgmma, WgmmaCommit, WgmmaWait)
MARK = "wgmma.mma_async"


def uses(p: Program) -> bool:
    return any(isinstance(s, Wgmma) for s in p.walk())


def arch_for(source: str, arch: str) -> str:
    """The NVRTC arch of ``source`` on a device of ``arch`` (e.g. sm_90): wgmma needs sm_90a."""
    return arch + "a" if MARK in source and arch == "sm_90" else arch


def accumulators(p: Program) -> list[tuple[str, int]]:
    """(register array, size) of every wgmma accumulator array."""
    names = {s.d for s in p.walk() if isinstance(s, Wgmma)}
    return [(s.name, s.size) for s in p.walk() if isinstance(s, Reg) and s.name in names]


def _pin(r) -> None:
    """Order every accumulator register against the surrounding asm statements."""
    for name, size in accumulators(r.p):
        for i in range(0, size, 8):
            regs = ", ".join(f'"+f"({name}[{j}])' for j in range(i, min(size, i + 8)))
            r.emit(f'asm volatile("" : {regs} :: "memory");')


def render_stmt(r, s) -> None:
    """Emit ``s`` through the renderer ``r`` (backends/cuda/render._Renderer)."""
    if isinstance(s, SharedFence):
        r.emit('asm volatile("fence.proxy.async.shared::cta;\\n" ::: "memory");')
    elif isinstance(s, WgmmaFence):
        r.emit('asm volatile("wgmma.fence.sync.aligned;\\n" ::: "memory");')
    elif isinstance(s, WgmmaCommit):
        r.emit('asm volatile("wgmma.commit_group.sync.aligned;\\n" ::: "memory");')
    elif isinstance(s, WgmmaWait):
        r.emit(f'asm volatile("wgmma.wait_group.sync.aligned {s.pending};\\n" ::: "memory");')
        if s.pending == 0: _pin(r)
    elif isinstance(s, Wgmma):
        _wgmma(r, s)
    else:
        raise ValueError(f"not a wgmma statement: {type(s).__name__}")


def _desc(r, buf: str, start, fields: int) -> str:
    t = r.tmp()
    r.emit(f"const unsigned long long {t} = {fields:#x}ULL | (unsigned long long)"
           f"((__cvta_generic_to_shared(&{buf}[{r.expr(start)}]) & 0x3FFFF) >> 4);")
    return t


def _wgmma(r, s: Wgmma) -> None:
    n2 = s.n // 2
    da, db = _desc(r, s.a, s.a_start, s.a_desc), _desc(r, s.b, s.b_start, s.b_desc)
    d = ", ".join(f"%{i}" for i in range(n2))
    ab = wg.ab_type(s.instr)
    ptx = (f"{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{n2 + 2}, 0;\\n"
           f"wgmma.mma_async.sync.aligned.m64n{s.n}k16.f32.{ab}.{ab} {{{d}}}, %{n2}, %{n2 + 1}, p, 1, 1, "
           f"{int(s.a_trans)}, {int(s.b_trans)};\\n}}\\n")
    outs = ", ".join(f'"+f"({s.d}[{s.d_off + i}])' for i in range(n2))
    r.emit(f'asm volatile("{ptx}" : {outs} : "l"({da}), "l"({db}), "r"({int(s.scale_d)}) : "memory");')


def shared_decls(shared: list[Shared], storage: dict[str, str], bars: list[Mbarriers] = ()) -> tuple[list[str], int]:
    """Declarations of the shared buffers of a wgmma program (dynamic memory, base and
    every buffer 1024-byte aligned; mbarriers after them, 8 bytes each: a static array
    would push the 1024-byte aligned dynamic memory up by 1024 bytes) and the dynamic
    bytes to launch with."""
    a = wg.ATOM_ALIGN
    decl = ["extern __shared__ __align__(1024) unsigned char smem_raw_[];",
            f"unsigned char* smem_ = smem_raw_ + (({a} - (unsigned)(__cvta_generic_to_shared(smem_raw_) & {a - 1})) & {a - 1});"]
    off = 0
    for s in shared:
        st = storage[s.dtype.name]
        decl.append(f"{st}* {s.name} = reinterpret_cast<{st}*>(smem_ + {off});")
        off += -(-s.size * s.dtype.itemsize // a) * a
    for b in bars:
        decl.append(f"unsigned long long* {b.name} = reinterpret_cast<unsigned long long*>(smem_ + {off});")
        off += wg.MBAR_BYTES * b.size
    return decl, off + a
