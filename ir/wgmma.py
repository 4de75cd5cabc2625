"""Hopper warpgroup MMA (``wgmma.mma_async``, sm_90a) geometry, written once for the
legality check, the lowering, the CUDA renderer and the emulator.

Instruction: ``wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16}``: a
warpgroup (4 consecutive warps, 128 threads) computes D (64 x N, fp32 registers, N/2 a
thread) += A (64 x 16) * B (16 x N), both operands read from shared memory through 64-bit
matrix descriptors. ``TensorCore.instr`` is ``"wgmma.m64nNk16.f16.f32"`` or
``"wgmma.m64nNk16.bf16.f32"``; N is the schedule's warpgroup N tile.

Schedule convention (the mma.sync one of ir/tensorcore.py, with warpgroups):
- M axis ``GRID gm x THREAD wm x UPCAST tm``: ``wm`` warps, a multiple of 4 (a warpgroup
  is 4 warps stacked along M); a warpgroup owns ``4*tm`` rows = ``tm/16`` m64 tiles (tm a
  multiple of 16), its warp q holds rows ``16q .. 16q+15`` of each m64 tile;
- N axis ``GRID gn x THREAD wn x UPCAST tn``: ``wn`` warpgroup columns; ``tn`` = the
  instruction's N (a multiple of 16, at most 256);
- K axis ``LOOP kt x UNROLL bk`` (bk a multiple of 16), window/batch/M-outer axes as for
  mma.sync. Warpgroup ``g = warp // 4`` covers M slice ``g // wn`` and N slice ``g % wn``.

Shared layout (fixed by the descriptor, not chosen by the bank solver): an operand tile is
stored in its global orientation (``tcm.tile_shape``: rows x width, width the contiguous
axis) cut into *panels* of ``P = min(width, 64)`` columns (128, 64 or 32 bytes), panel
after panel; inside a panel, row r's 16-byte unit u sits at unit ``u ^ ((r >> s) & (P/8 -
1))`` — ``tcm.smem_offset(r, u, P, 0, log2(P/8), 3)`` — which is exactly the hardware's
128B / 64B / 32B swizzle (address bits [4, 4+log2(P/8)) XOR bits [7, ...)) when every
panel starts on a 1024-byte boundary. ``Staging`` records it as ``pad 0, swizzle
log2(P/8), shift 3`` (``staging``); ``check`` accepts only that.

Descriptor (PTX ISA "Matrix Descriptor Format"): bits 0-13 start address >> 4, 16-29
leading-dimension byte offset (LBO) >> 4, 32-45 stride-dimension byte offset (SBO) >> 4,
49-51 base offset (0: atoms 1024-byte aligned), 62-63 swizzle mode (0 none, 1 128B, 2
64B, 3 32B). Canonical layouts (T = 8 elements = 16 bytes, W = swizzle width in bytes):
- K-major (``trans`` 0; our ``Operand.k_major`` False): row r (M or N) of an 8-row group
  at ``(r % 8) * W``, groups at SBO, K chunk c at ``16 c`` (LBO unused, encoded 1);
- MN-major (``trans`` 1; ``Operand.k_major`` True): K row k at ``(k % 8) * W``, 8-row K
  groups at SBO, MN atoms of W/2 elements at LBO;
then the swizzle is applied to the byte address. For our panels: K-major SBO = 8 W, the
start address moves by 2 bytes per K element inside a panel; MN-major LBO = rows x W (one
panel), SBO = 8 W.

An operand with ``Staging.tma`` is copied into this same layout by TMA, one box a panel
with the TMA swizzle of the panel's row width (ir/tma.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from . import dtype as dt
from . import tensorcore as tcm

INSTRS = {"wgmma.m64nNk16.f16.f32": dt.float16, "wgmma.m64nNk16.bf16.f32": dt.bfloat16}
WG_M, WG_K = 64, 16
WARPS_PER_GROUP = 4
MODE = {64: 1, 32: 2, 16: 3}          # panel width (elements) -> descriptor swizzle mode
ATOM_ALIGN = 1024                     # bytes: every stage of a wgmma operand starts on it
MBAR_BYTES = 8                        # an mbarrier (TMA stages: one each)


def is_wgmma(instr: str) -> bool: return instr.startswith("wgmma.")


def ab_type(instr: str) -> str: return "bf16" if ".bf16." in instr else "f16"


# ---- matrix descriptors ----------------------------------------------------------
def encode(start: int, lbo: int, sbo: int, mode: int, base_offset: int = 0) -> int:
    """The 64-bit descriptor of a shared operand (byte addresses/offsets, multiples of 16)."""
    for name, v in (("start", start), ("lbo", lbo), ("sbo", sbo)):
        if v % 16 or not 0 <= v < (1 << 18): raise ValueError(f"descriptor {name} {v} is not a 16-byte multiple below 256 KB")
    if mode not in (0, 1, 2, 3) or base_offset not in range(8): raise ValueError("bad swizzle mode or base offset")
    return ((start >> 4) & 0x3FFF) | (((lbo >> 4) & 0x3FFF) << 16) | (((sbo >> 4) & 0x3FFF) << 32) | \
        (base_offset << 49) | (mode << 62)


def decode(desc: int) -> tuple[int, int, int, int, int]:
    """(start, lbo, sbo, base_offset, mode) of a descriptor (byte values)."""
    return ((desc & 0x3FFF) << 4, ((desc >> 16) & 0x3FFF) << 4, ((desc >> 32) & 0x3FFF) << 4,
            (desc >> 49) & 7, (desc >> 62) & 3)


def swizzle_width(mode: int) -> int:
    """Bytes of one swizzled row (16: no swizzle, a core matrix row)."""
    return {0: 16, 1: 128, 2: 64, 3: 32}[mode]


# ---- layout -------------------------------------------------------------------------
def panel(width: int) -> int:
    """Panel width (elements) of a tile whose rows hold ``width`` elements."""
    return min(width, 64)


def layout_ok(width: int) -> str | None:
    """Why a tile of this row width has no descriptor layout (None: it has one)."""
    p = panel(width)
    if p not in MODE or width % p: return f"tile rows of {width} elements (wgmma needs 16, 32 or a multiple of 64)"
    return None


def smem_offset(row, col, rows: int, width: int):
    """Element offset of tile element (row, col) in one stage (ints or index Nodes; col's
    low 3 bits pass through, so a 16-byte unit stays contiguous)."""
    p = panel(width)
    bits = int(math.log2(p // tcm.UNIT))
    return (col // p) * (rows * p) + tcm.smem_offset(row, (col % p) // tcm.UNIT, p, 0, bits, 3) + col % tcm.UNIT


def staging_of(op: tcm.Operand, rows: int, width: int):
    """The ``Staging`` that records this layout (pad 0, swizzle log2(P/8) at shift 3)."""
    from .schedule import Staging
    return Staging(op.input, 0, int(math.log2(panel(width) // tcm.UNIT)), op.vec, 3)


@dataclass(frozen=True)
class OperandDesc:
    """How one wgmma reads an operand tile: the descriptor's constant fields (start 0)
    and the element offset of its start inside the stage."""
    fields: int     # LBO, SBO and swizzle mode encoded (start address 0)
    trans: bool     # MN-major (imm-trans 1)


def operand_desc(op: tcm.Operand, rows: int, width: int) -> OperandDesc:
    p = panel(width)
    w = 2 * p                                   # bytes per panel row = the swizzle width
    if op.k_major:  # stored [k][outer]: MN-major
        return OperandDesc(encode(0, rows * w, 8 * w, MODE[p]), True)
    return OperandDesc(encode(0, 16, 8 * w, MODE[p]), False)


def operand_start(op: tcm.Operand, rows: int, width: int, outer0, k0):
    """Element offset (in the stage) where a wgmma's descriptor starts for the operand's
    rows ``outer0 ..`` (a multiple of 8, and of the panel width when MN-major) and K
    ``k0 .. k0+15``."""
    p = panel(width)
    if op.k_major: return (outer0 // p) * (rows * p) + k0 * p
    return (k0 // p) * (rows * p) + outer0 * p + k0 % p


# ---- schedules -------------------------------------------------------------------------
@dataclass(frozen=True)
class Groups:
    wgm: int      # warpgroups along M
    wgn: int      # warpgroups along N
    mt: int       # m64 tiles per warpgroup
    n: int        # the instruction's N (warpgroup N tile)

    @property
    def acc(self) -> int:
        """fp32 accumulators a thread holds."""
        return self.mt * self.n // 2


def groups(t: tcm.Tiles) -> Groups:
    return Groups(t.wm // WARPS_PER_GROUP, t.wn, t.tm // 16, t.tn)


def check(kernel, s, machine) -> list[str]:
    """Why a wgmma schedule is illegal (ir/schedule.check calls this for wgmma instrs)."""
    from .schedule import Level
    tc = s.tensor_core
    if tc.instr not in INSTRS: return [f"unknown wgmma instruction {tc.instr!r} (know {sorted(INSTRS)})"]
    if not machine.has("wgmma"): return [f"wgmma needs an sm_90 GPU ({machine.name} has no wgmma)"]
    if s.vector != 1 or s.order: return ["tensor-core schedules take no vector width or loop order"]
    m = tcm.match_tc(kernel, tc)
    if isinstance(m, str): return [f"tensor core: {m}"]
    if m.dtype is not INSTRS[tc.instr]: return [f"tensor core: {tc.instr} takes {INSTRS[tc.instr].name} operands, not {m.dtype.name}"]
    errs = [f"axis {a}: batch axes of a tensor-core schedule are GRID only" for a in m.batch
            if any(p.level is not Level.GRID and p.size > 1 for p in s.splits[a])]
    t = tcm.tiles(kernel, s, machine.warp)
    if isinstance(t, str): return errs + [f"tensor core: {t}"]
    g = groups(t)
    if t.wm % WARPS_PER_GROUP: errs.append(f"wgmma: {t.wm} warps along M is not whole warpgroups of 4")
    elif g.mt < 1: errs.append("wgmma: a warpgroup needs at least one 64-row tile")
    if not 16 <= t.tn <= 256: errs.append(f"wgmma: N tile {t.tn} not in 16..256")
    if g.acc > 128: errs.append(f"wgmma: {g.acc} fp32 accumulators a thread (at most 128)")
    by_input = {st.input: st for st in s.staging}
    if sorted(by_input) != sorted([m.a.input, m.b.input]) or len(s.staging) != 2:
        return errs + ["tensor core: both operands must be staged exactly once"]
    smem = 0
    for op, outer, slice_ in ((m.a, t.bm, WG_M), (m.b, t.bn, t.tn)):
        rows, width = tcm.tile_shape(op, outer, t.bk)
        why = layout_ok(width)
        if why: errs.append(f"input {op.input}: {why}"); continue  # noqa: E702
        st = by_input[op.input]
        want = staging_of(op, rows, width)
        if (st.pad, st.swizzle, st.shift) != (want.pad, want.swizzle, want.shift):
            errs.append(f"input {op.input}: wgmma's descriptor needs layout pad 0 swizzle {want.swizzle}@3, not "
                        f"pad {st.pad} swizzle {st.swizzle}@{st.shift}")
        if op.k_major and slice_ % panel(width): errs.append(f"input {op.input}: an MN-major slice of {slice_} splits a {panel(width)}-wide panel")
        smem += stage_bytes(rows, width)
        if st.tma and not machine.has("tma"): errs.append(f"input {op.input}: TMA copies need sm_90 ({machine.name} has no tma)")
        if st.tma:  # one thread's box copies: no per-thread copy shape to check
            from . import tma
            errs += tma.check(kernel, m, t, op)
            continue
        if st.vector not in (1, op.vec): errs.append(f"input {op.input}: staged copies are 1 element" + (f" or {op.vec}" if op.vec > 1 else ""))
        if op is m.a and op.k_major and st.vector > 1 and t.m_ext[-1] % st.vector:
            errs.append(f"input {op.input}: 16-byte copies along M need an inner M extent of {st.vector}s, not {t.m_ext[-1]}")
        if (rows * width // max(1, st.vector)) % t.threads: errs.append(f"input {op.input}: {rows}x{width} tile is not a whole number of copies per thread")
    if tc.producer and not all(x.tma for x in s.staging): errs.append("a producer warp copies by TMA only: every operand needs tma")
    # the renderer aligns the buffers up to 1024 bytes; TMA stages add an 8-byte mbarrier
    # each (a producer warp's stages two: "full" and "empty"); a staged epilogue its tile
    smem = smem * s.stages + ATOM_ALIGN + MBAR_BYTES * s.stages * mbarriers_a_stage(s) + epilogue_bytes(kernel, s, t)
    if smem > machine.smem_per_block: errs.append(f"shared memory {smem} B > {machine.smem_per_block} B per block")
    return errs


EPI_PAD = 8   # elements past each row of a staged epilogue tile: a warp's fragment writes hit 32 banks


def staged_epilogue(kernel, s) -> bool:
    """A producer-warp schedule with 2-byte outputs writes its output tile through shared
    memory (ir/lower_wgmma.py): fragments in, whole 16-byte row pieces out."""
    return s.tensor_core.producer and kernel.output.dtype.itemsize == 2


def epilogue_bytes(kernel, s, t: tcm.Tiles) -> int:
    """Shared bytes of the staged epilogue tile (``BM x (BN + EPI_PAD)``, 1024-byte aligned), or 0."""
    if not staged_epilogue(kernel, s): return 0
    return -(-t.bm * (t.bn + EPI_PAD) * kernel.output.dtype.itemsize // ATOM_ALIGN) * ATOM_ALIGN


def mbarriers_a_stage(s) -> int:
    """mbarriers a pipeline stage of wgmma schedule ``s`` uses: "full" for TMA copies,
    and "empty" too with a producer warp."""
    return 0 if not any(x.tma for x in s.staging) else 2 if s.tensor_core.producer else 1


def stage_bytes(rows: int, width: int) -> int:
    """Bytes of one stage of a tile, rounded up so the next stage stays 1024-byte aligned."""
    return -(-rows * width * 2 // ATOM_ALIGN) * ATOM_ALIGN


def staging(kernel, s) -> tuple:
    """The shared layouts a wgmma schedule must use (both operands), from its tiles; an
    operand ``s`` copies by TMA keeps ``tma`` (how it is copied, not its layout)."""
    m = tcm.match_tc(kernel, s.tensor_core)
    t = tcm.tiles(kernel, s, warp=1)   # the block tile's shape only (no thread count is read)
    tma = {x.input for x in s.staging if x.tma}
    return tuple(replace(staging_of(op, *tcm.tile_shape(op, outer, t.bk)), tma=op.input in tma)
                 for op, outer in ((m.a, t.bm), (m.b, t.bn)))
