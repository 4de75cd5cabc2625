"""The HVX int8 implicit-GEMM family (``hvx_gemm``; template ir/hvx.py, assembly in
backends/hexagon/asm_gemm.py): int8 GEMMs and NHWC convolutions on the Hexagon DSP.

The micro-kernel (one tile = R output rows x J blocks of 32 columns): weights are prepacked
once into the ``vrmpy`` layout as unsigned bytes (w + 128), the activations are the scalar
operand, ``Vx.w += vrmpy(Vu.ub, Rt.b)``, and the product carries 128 x each row's sum of
activations, removed one of two ways (``corr``): 0, R more vrmpy a group of a 0x80 splat by
the same Rt, subtracted at the end; 1, the accumulators start at -128 x the row's window sum,
computed by a counted HVX pass before the kernel. The reduction runs over ``kh`` segments
(kernel rows; a GEMM has one) of ``kw * c_in`` contiguous bytes, each a hardware loop
(``loop0``) whose trips take U 4-byte groups (``unroll``; U = 2 loads 8 bytes a row); every
operand is loaded a trip ahead, except with ``late`` the second group's weights, loaded in
the trip; ``fuse`` requantizes a qconv's output in the tile's epilogue.

This module writes the instruction stream of every part (tile prologue, segment prologue,
loop body, tile epilogue) and packs each with ``search.vliw.pack`` (Z3, the slot and unit
rules of LLVM's v66 itineraries): the backend emits exactly these packets. The model:

    packets = frame + tiles * (prologue + segment0 + (kh - 1) * segment + kh * trips * body + epilogue)
              + estimates of the passes clang schedules (padding copy, correction, separate requantize)

and seconds = packets / ``machine.notes["clock_hz"]`` (no stall model: qemu counts issued
packets). ``solve`` is a branch and bound over the decisions, ordered by a resource lower
bound of each point's streams, priced by their Z3 packings; a pick is proved optimal under the
model when its packings are proved minimal and no other point's bound is below it. Packings of
identical streams are cached (in the process and in a file under the cache directory): tiles
differ only in ``##``-extended constants, which take the same slots whatever their value.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Iterable

from ...ir import hvx as tpl
from ...ir.kernel import Kernel
from ...ir.schedule import Level, Schedule, Split

from .. import vliw
from . import Candidate, Solved
from .native_template import TemplateFamily, clock_hz

ROWS, BLOCKS = tuple(range(1, 12)), (1, 2, 3, 4)
PACK_TIMEOUT_S = 0.5   # per stream; an unproved packing makes the result unproved, never wrong


def frame_packets(p: dict[str, int], relu: int = 0, add: int = 0) -> int:
    """The emitted function's frame (backends/hexagon/asm_gemm.emit): allocframe, six
    callee-saved pair stores, six restores, dealloc_return, and with the in-loop correction the
    0x80 constant and its splat: one packet each; the fused requantize's bias/multiplier loads
    and with a fused ReLU6 the zeroing of its zero vector; with a fused residual add the
    residual pointer's save in the frame and the two multipliers' constants and splats."""
    fused = 2 * p["blocks"] + (1 if relu else 0) + (5 if add else 0) if p["fuse"] else 0
    return 14 + (2 if p["corr"] == 0 else 0) + fused


# ---- the instruction stream: in-loop correction (corr 0) ---------------------------------
def regs(r: int, j: int) -> dict[str, list[int]]:
    """Register numbers of an R x J tile with the in-loop correction."""
    return {"bp": [4 + x for x in range(j)], "ap": [4 + j + i for i in range(r)], "aw": [4 + j + r + i for i in range(r)],
            "acc": list(range(r * j)), "bv": [r * j + x for x in range(j)], "splat": [r * j + j],
            "corr": [r * j + j + 1 + i for i in range(r)]}


def body(r: int, j: int) -> list[str]:
    """One 4-k group: the MACs and corrections on the current operands, then the next loads."""
    g = regs(r, j)
    out = [f"v{g['acc'][i * j + x]}.w += vrmpy(v{g['bv'][x]}.ub,r{g['aw'][i]}.b)" for i in range(r) for x in range(j)]
    out += [f"v{g['corr'][i]}.w += vrmpy(v{g['splat'][0]}.ub,r{g['aw'][i]}.b)" for i in range(r)]
    out += [f"v{g['bv'][x]} = vmem(r{g['bp'][x]}++#1)" for x in range(j)]
    out += [f"r{g['aw'][i]} = memw(r{g['ap'][i]}++#4)" for i in range(r)]
    return out


def tile_prologue(r: int, j: int, b_offs: list[int]) -> list[str]:
    """Weight pointers of the tile's blocks, zeroed accumulators, the first weight vectors."""
    g = regs(r, j)
    out = [f"r{g['bp'][x]} = add(r1,##{b_offs[x]})" for x in range(j)]
    out += [f"v{v} = vxor(v{v},v{v})" for v in g["acc"] + g["corr"]]
    out += [f"v{g['bv'][x]} = vmem(r{g['bp'][x]}++#1)" for x in range(j)]
    return out


def segment_texts(r: int, j: int, a_offs: list[int] | None, delta: int, trips: int, label: str) -> list[str]:
    """Row pointers of one segment, the first words, loop0. The first segment: row 0 at its
    ``##`` offset from r0, the others relative to row 0 (small: no extender); the later
    segments: every pointer moved by ``delta`` from where the previous segment left it."""
    g = regs(r, j)
    ap, aw = g["ap"], g["aw"]
    if a_offs is None: out = [f"r{ap[i]} = add(r{ap[i]},#{delta})" for i in range(r)]
    else: out = [f"r{ap[0]} = add(r0,##{a_offs[0]})"] + [f"r{ap[i]} = add(r{ap[0]},#{a_offs[i] - a_offs[0]})" for i in range(1, r)]
    out += [f"r{aw[i]} = memw(r{ap[i]}++#4)" for i in range(r)]
    return out + [f"loop0({label},#{trips})"]


def tile_epilogue(r: int, j: int, c_offs: list[int]) -> list[str]:
    """Subtract the corrections, point at the output rows (reusing the row pointers), store."""
    g = regs(r, j)
    out = [f"v{g['acc'][i * j + x]}.w = vsub(v{g['acc'][i * j + x]}.w,v{g['corr'][i]}.w)" for i in range(r) for x in range(j)]
    out += [f"r{g['ap'][0]} = add(r2,##{c_offs[0]})"]
    out += [f"r{g['ap'][i]} = add(r{g['ap'][0]},#{c_offs[i] - c_offs[0]})" for i in range(1, r)]
    out += [f"vmem(r{g['ap'][i]}+#{x}) = v{g['acc'][i * j + x]}" for i in range(r) for x in range(j)]
    return out


# ---- precomputed correction (corr 1): one weight pointer r4, one row pointer r5 ---------------
# The accumulators start at -128 * (the row's sum) (``corr_pass``, r3 = its int32 array); the
# weights of a tile's J blocks are interleaved ([N/32J][K/4][J][32][4]), so one pointer with
# vector offsets reads them; the rows are offsets from one pointer; U 4-k groups an iteration
# (U = 2: one memd a row feeds two).
def word(i: int, u: int, unroll: int) -> str:
    return f"r{6 + unroll * i + u}"


def load_row(i: int, unroll: int, off: int) -> str:
    return f"r{7 + 2 * i}:{6 + 2 * i} = memd(r5+#{off})" if unroll == 2 else f"r{6 + i} = memw(r5+#{off})"


def load_rows(r: int, unroll: int, offs: list[int]) -> list[str]:
    """The rows' next words; row 0 (offset 0) last, post-incrementing the row pointer: the
    others read it first (no add of its own to place)."""
    last = f"r7:6 = memd(r5++#8)" if unroll == 2 else "r6 = memw(r5++#4)"
    return [load_row(i, unroll, offs[i]) for i in range(1, r)] + [last]


def body_pre(r: int, j: int, u: int, offs: list[int], late: int = 0) -> list[str]:
    """One trip of U groups. ``late`` 0: every operand is loaded a trip ahead (the loads
    follow the vrmpy that read the old values); 1 (U = 2): the second group's weight vectors
    are loaded in the trip itself, first, so the trip's last packet needs no weight reload."""
    bv = lambda q, x: r * j + q * j + x   # noqa: E731
    mac = lambda q: [f"v{i * j + x}.w += vrmpy(v{bv(q, x)}.ub,{word(i, q, u)}.b)" for i in range(r) for x in range(j)]  # noqa: E731
    if late:   # r4 at this trip's first group: group 1 now, the next trip's group 0 ahead
        out = [f"v{bv(1, x)} = vmem(r4+#{j + x})" for x in range(j)] + mac(0) + mac(1)
        out += [f"v{bv(0, x)} = vmem(r4+#{2 * j + x})" for x in range(j)]
    else:      # r4 at the next trip's first group
        out = mac(0) + (mac(1) if u == 2 else []) + [f"v{bv(q, x)} = vmem(r4+#{q * j + x})" for q in range(u) for x in range(j)]
    out += [f"r4 = add(r4,#{u * j * 128})"]
    return out + load_rows(r, u, offs)


def prologue_pre(r: int, j: int, u: int, b_off: int, cw: list[int], late: int = 0) -> list[str]:
    """Accumulators from the rows' corrections (at words ``cw``), the first weight vectors."""
    out = [f"r4 = add(r1,##{b_off})", f"r5 = add(r3,##{4 * cw[0]})"]
    out += [f"r{6 + i} = memw(r5+#{4 * (cw[i] - cw[0])})" for i in range(r)]
    out += [f"v{i * j} = vsplat(r{6 + i})" for i in range(r)]      # vsplat takes a multiplier: once a row,
    out += [f"v{i * j + x} = v{i * j}" for i in range(r) for x in range(1, j)]   # copied to the row's other blocks
    if late: return out + [f"v{r * j + x} = vmem(r4+#{x})" for x in range(j)]
    out += [f"v{r * j + q * j + x} = vmem(r4+#{q * j + x})" for q in range(u) for x in range(j)]
    return out + [f"r4 = add(r4,#{u * j * 128})"]


def segment_pre(r: int, u: int, offs: list[int], base: int | None, delta: int, trips: int, label: str) -> list[str]:
    out = [f"r5 = add(r0,##{base})" if base is not None else f"r5 = add(r5,#{delta})"]
    return out + load_rows(r, u, offs) + [f"loop0({label},#{trips})"]


def qregs(r: int, j: int, u: int) -> tuple[list[int], list[int]]:
    """Vector registers of the fused requantize: bias and (halfword-paired) multiplier a block."""
    b0 = r * j + u * j
    return [b0 + x for x in range(j)], [b0 + j + x for x in range(j)]


def zero_reg(r: int, j: int, u: int) -> int:
    """The zero vector of a fused ReLU6 (the register after the bias and multipliers)."""
    return r * j + u * j + 2 * j


def add_regs(r: int, j: int, u: int) -> tuple[int, int]:
    """Splats of a fused residual add's two multipliers (the conv's, the residual's): the
    registers after the bias and multipliers (a fused add takes no ReLU6)."""
    return r * j + u * j + 2 * j, r * j + u * j + 2 * j + 1


ADD_SLOT = 48   # the residual pointer (the kernel's sixth argument, r5) in the frame, past the six saves


def epilogue_fused(r: int, j: int, u: int, base: int, pre: int, post: int, relu: int = 0,
                   add: tuple[int, int] | None = None) -> list[str]:
    """int32 -> int8 in the tile (``kernels.builders.requantize``, HVX as
    ``backends/hexagon/requant.HELPERS``, four vectors at once): + bias; rounding shift by
    ``pre`` saturated to halfwords, pairing vectors (a, a+2) and (a+1, a+3); Q15 multiply;
    rounding shift by ``post`` saturated to bytes (bytes 4i..4i+3: the four vectors' lane i);
    two byte deals put the four vectors' 32 bytes in order: 128 output bytes, one store.
    ``relu`` (ReLU6 fused): ``vmax`` by the zero vector before the deals (the upper bound 6 is
    the int8 saturation). ``add`` = (the shift s, 0): the residual add with requantize fused
    (``kernels.dsp_models``: sat8((conv * mb + res * ma + 2^(s-1)) >> s)): the residual's 128
    bytes at the same offset (its pointer from the frame), ``vmpy`` of the bytes by the splat of
    mb into a halfword pair (the two accumulators the packing freed), ``+= vmpy`` of the residual
    by the splat of ma, ``vasr`` by s rounded and saturated back to bytes in order, one store."""
    bias, mult = qregs(r, j, u)
    out = [f"r4 = #{pre}", f"r5 = #{post}", f"r6 = add(r2,##{base})"]
    if add:   # r7: the add's shift (vasr's Rt is r0..r7); r8: the residual at this tile
        out += [f"r7 = #{add[0]}", f"r8 = memw(r29+#{ADD_SLOT})", f"r8 = add(r8,##{base})"]
    out += [f"v{c}.w = vadd(v{c}.w,v{bias[c % j]}.w)" for c in range(r * j)]
    for t in range(r * j // 4):
        a = [4 * t + k for k in range(4)]
        out += [f"v{a[0]}.h = vasr(v{a[2]}.w,v{a[0]}.w,r4):rnd:sat", f"v{a[1]}.h = vasr(v{a[3]}.w,v{a[1]}.w,r4):rnd:sat",
                f"v{a[0]}.h = vmpy(v{a[0]}.h,v{mult[a[0] % j]}.h):<<1:rnd:sat",
                f"v{a[1]}.h = vmpy(v{a[1]}.h,v{mult[a[1] % j]}.h):<<1:rnd:sat",
                f"v{a[0]}.b = vasr(v{a[1]}.h,v{a[0]}.h,r5):rnd:sat"]
        if relu: out.append(f"v{a[0]}.b = vmax(v{a[0]}.b,v{zero_reg(r, j, u)}.b)")
        out += [f"v{a[0]}.b = vdeal(v{a[0]}.b)", f"v{a[0]}.b = vdeal(v{a[0]}.b)"]
        if add:
            sa, sb = add_regs(r, j, u)
            out += [f"v{a[1]} = vmem(r8+#{t})", f"v{a[3]}:{a[2]}.h = vmpy(v{a[0]}.b,v{sb}.b)",
                    f"v{a[3]}:{a[2]}.h += vmpy(v{a[1]}.b,v{sa}.b)", f"v{a[0]}.b = vasr(v{a[3]}.h,v{a[2]}.h,r7):rnd:sat"]
        out.append(f"vmem(r6+#{t}) = v{a[0]}")
    return out


def epilogue_pre(r: int, j: int, c_rs: int, base: int) -> list[str]:
    """Stores through output pointers 16 vectors apart (a store's offset reaches -8..7)."""
    vo = {(i, x): (i * c_rs + x * tpl.LANES) // tpl.LANES for i in range(r) for x in range(j)}
    ptrs = max(vo.values()) // 16 + 1
    out = [f"r6 = add(r2,##{base + 8 * 128})"] + [f"r{6 + q} = add(r6,#{16 * 128 * q})" for q in range(1, ptrs)]
    return out + [f"vmem(r{6 + v // 16}+#{v % 16 - 8}) = v{i * j + x}" for (i, x), v in vo.items()]


# ---- packing (cached by the stream's shape) -------------------------------------------------
def _canonical(texts: list[str]) -> tuple[str, ...]:
    """The stream with its extended constants and loop labels blanked: tiles differ only there,
    and a ``##`` constant takes the same slots whatever its value."""
    return tuple(re.sub(r"##-?\d+", "##0", re.sub(r"loop0\([^,]+,", "loop0(L,", t)) for t in texts)


@functools.lru_cache(maxsize=4096)
def _assignment(canon: tuple[str, ...]) -> tuple[tuple[int, ...], bool]:
    """Packet of each instruction and whether the packing is proved minimal: from the packings
    file when this stream was packed before (by any process), else packed now and recorded."""
    key = hashlib.sha256(("\n".join(canon) + vliw.CPU).encode()).hexdigest()[:24]
    known = _stored().get(key)
    if known is not None: return tuple(known[0]), bool(known[1])
    res = vliw.pack([vliw.classify(t) for t in canon], timeout_s=PACK_TIMEOUT_S)
    out = (tuple(res.assignment), res.proved) if res.assignment else (tuple(range(len(canon))), False)
    _record(key, out)
    return out


def _packings_file() -> Path:
    from ..machine import calibration_dir
    return calibration_dir() / "hvx-packings.json"


def _stored() -> dict:
    try:
        return json.loads(_packings_file().read_text())
    except (OSError, ValueError):
        return {}


def _record(key: str, value: tuple) -> None:
    """Add one packing to the file (read-modify-replace: a concurrent writer loses at most a
    cache entry, never corrupts the file)."""
    f = _packings_file()
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        d = _stored()
        d[key] = [list(value[0]), value[1]]
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(d))
        os.replace(tmp, f)
    except OSError:
        pass   # an unwritable cache only costs the packing again


def packets(texts: list[str]) -> list[list[str]]:
    """``texts`` grouped into the packets the packer chose (empty packets dropped)."""
    asg, _ = _assignment(_canonical(texts))
    out: list[list[str]] = [[] for _ in range(max(asg) + 1)] if asg else []
    for t, p in zip(texts, asg): out[p].append(t)
    return [p for p in out if p]


def proved(texts: list[str]) -> bool:
    return _assignment(_canonical(texts))[1]


# ---- geometry of the emitted tiles -----------------------------------------------------------
def trips(g: dict[str, int], unroll: int = 1) -> int: return g["kw"] * g["c_in"] // (4 * unroll)


pitch, row_offset = tpl.pitch, tpl.row_offset


def delta(g: dict[str, int], unroll: int = 1) -> int:
    """Move of a row pointer from the end of one segment to the start of the next: one image
    row down, less the segment and the group(s) the pipelined body read ahead."""
    return pitch(g) - (trips(g, unroll) + 1) * 4 * unroll


def tiles(g: dict[str, int], p: dict[str, int]) -> Iterable[tuple[int, int]]:
    """(first row, first column) of every tile, in the emitted order."""
    for m0 in range(0, g["m"], p["rows"]):
        for n0 in range(0, g["n"], tpl.LANES * p["blocks"]):
            yield m0, n0


def tile_streams(g: dict[str, int], p: dict[str, int], m0: int, n0: int) -> dict[str, list[str]]:
    """The streams of one tile as emitted (loop labels ``L``): prologue, first segment, a
    later segment, loop body, epilogue."""
    r, j, u = p["rows"], p["blocks"], p["unroll"]
    groups = g["k"] // 4
    if p["corr"] == 0:
        return {"pro": tile_prologue(r, j, [(n0 // tpl.LANES + x) * groups * 128 for x in range(j)]),
                "seg0": segment_texts(r, j, [row_offset(g, m0 + i) for i in range(r)], 0, trips(g), "L"),
                "seg": segment_texts(r, j, None, delta(g), trips(g), "L"), "body": body(r, j),
                "epi": tile_epilogue(r, j, [((m0 + i) * g["c_rs"] + n0) * 4 for i in range(r)])}
    offs = [row_offset(g, m0 + i) - row_offset(g, m0) for i in range(r)]
    late = p["late"]
    cw = [tpl.corr_index(g, m0 + i) for i in range(r)]
    return {"pro": prologue_pre(r, j, u, n0 // (tpl.LANES * j) * groups * j * 128, cw, late),
            "seg0": segment_pre(r, u, offs, row_offset(g, m0), 0, trips(g, u), "L"),
            "seg": segment_pre(r, u, offs, None, delta(g, u), trips(g, u), "L"), "body": body_pre(r, j, u, offs, late),
            "epi": epilogue_fused(r, j, u, m0 * g["n"], g["pre"], g["post"], g.get("relu", 0),
                                  (g["add_s"], 0) if g.get("add") else None) if p["fuse"] else
            epilogue_pre(r, j, g["c_rs"], (m0 * g["c_rs"] + n0) * 4)}


def parts(g: dict[str, int], p: dict[str, int]) -> list[list[str]]:
    """Every distinct stream the kernel packs (tiles whose rows' offsets differ alike share one)."""
    seen: dict[tuple[str, ...], list[str]] = {}
    for m0, n0 in tiles(g, p):
        for t in tile_streams(g, p, m0, n0).values(): seen.setdefault(_canonical(t), t)
    return list(seen.values())


def pad_packets(g: dict[str, int]) -> int:
    """Estimate of the padding copy (convolutions with pad > 0, backends/hexagon/asm_gemm):
    per input row one unaligned vector load and store per 128 bytes (or one word load and
    store per 4 bytes below a vector), about one packet each, and 4 of loop overhead."""
    if not g["conv"] or not g["pad"]: return 0
    row = g["w"] * g["c_in"]
    per = -(-row // 128) * 2 if row >= 128 else row // 4
    return g["h"] * (per + 4)


def corr_packets(g: dict[str, int]) -> int:
    """Estimate of the precomputed correction (backends/hexagon/asm_gemm ``so_corr``; clang
    schedules it, so this is an estimate, not a packing): a GEMM's or 1x1's rows, a packet a
    vrmpy and a rotation (the rotations share the one permute unit);
    a convolution in HVX, about 2 packets a 4-byte group of 32 pixels (vrmpy, then the word
    deals that fold a pixel's groups), one a loaded vector of the window sums along the rows
    and down the columns; otherwise scalar C, 8 bytes a load, two loads a packet, one packet a
    padded pixel (prefix sums) and 2 a window row of each output pixel."""
    hp, wp = g["h"] + 2 * g["pad"], g["w"] + 2 * g["pad"]
    if tpl.direct_rows(g):
        length = g["k"]
        if length >= 128: return g["m"] * (length // 128 + 5)   # a vrmpy a vector, 5 rotations (one permute unit)
        return -(-g["m"] * length // 128) * (length // 4).bit_length()   # a vrmpy and log2(length/4) rotations a vector
    if tpl.hvx_windows(g):
        xs = -(-g["ow"] * g["stride"] // 32)
        return -(-hp * wp // 32) * 2 * (g["c_in"] // 4) + xs * (hp * g["kw"] + g["oh"] * g["kh"] * g["stride"])
    rows = g["m"] if not g["conv"] else hp * wp
    length = g["k"] if not g["conv"] else g["c_in"]
    return rows * (length // 16 + 2) + (g["m"] * 2 * g["kh"] + rows if g["conv"] else 0)


def requant_packets(g: dict[str, int], p: dict[str, int]) -> int:
    """Estimate of the separate requantize pass (fuse 0; C with HVX intrinsics, clang's
    schedule): 10 packets an output vector, its count on the 3x3 qconv of
    bench/results/dsp-asm-conv.json (2636 for 256 vectors); a ReLU6 fused into that pass
    (``relu``) one more (its vmax, an estimate: clang schedules it)."""
    return (10 + g.get("relu", 0)) * g["m"] * (g["n"] // tpl.LANES) if g["requant"] and not p["fuse"] else 0


def modeled_packets(g: dict[str, int], p: dict[str, int]) -> int:
    total = frame_packets(p, g.get("relu", 0), g.get("add", 0)) + pad_packets(g) + (corr_packets(g) if p["corr"] else 0) + requant_packets(g, p)
    for m0, n0 in tiles(g, p):
        n = {k: len(packets(v)) for k, v in tile_streams(g, p, m0, n0).items()}
        total += n["pro"] + n["seg0"] + (g["kh"] - 1) * n["seg"] + g["kh"] * trips(g, p["unroll"]) * n["body"] + n["epi"]
    return total


def macs(g: dict[str, int]) -> int: return g["m"] * g["n"] * g["k"]


# ---- the family -------------------------------------------------------------------------------
def schedule(kernel: Kernel, rows: int, blocks: int, corr: int = 0, unroll: int = 1, fuse: int = 0,
             late: int = 0) -> Schedule:
    return Schedule(tuple((Split(Level.LOOP, ax.size),) for ax in kernel.axes), family="hvx_gemm",
                    params=(("rows", rows), ("blocks", blocks), ("corr", corr), ("unroll", unroll), ("fuse", fuse),
                            ("late", late)))


def key(p: dict[str, int]) -> str:
    return f"{p['rows']}x{p['blocks']}" + (f" pre u{p['unroll']}" if p["corr"] else "") + (" late" if p.get("late") else "") + (" fused" if p["fuse"] else "")


_clock = clock_hz


class HvxGemm(TemplateFamily):
    name = "hvx_gemm"
    tpl = tpl
    packets = staticmethod(modeled_packets)

    def space(self, kernel: Kernel, machine) -> Iterable[Schedule]:
        g = tpl.match(kernel)
        if isinstance(g, str): return
        for corr, u, fuse, late in ((0, 1, 0, 0), (1, 1, 0, 0), (1, 2, 0, 0), (1, 2, 0, 1), (1, 1, 1, 0), (1, 2, 1, 0),
                                    (1, 2, 1, 1)):
            for r in ROWS:
                for j in BLOCKS:
                    p = {"rows": r, "blocks": j, "corr": corr, "unroll": u, "fuse": fuse, "late": late}
                    if not tpl.check(g, p): yield schedule(kernel, **p)

    def hand(self, kernel: Kernel, machine) -> Schedule | None:
        """What an engineer writes first: 4 rows by one block of 32 columns (the smallest
        tile that keeps both multipliers busy), fewer rows where 4 does not divide."""
        g = tpl.match(kernel)
        if isinstance(g, str): return None
        for r in (4, 2, 1):
            if not tpl.check(g, {"rows": r, "blocks": 1, "corr": 0, "unroll": 1, "fuse": 0, "late": 0}):
                return schedule(kernel, r, 1)
        return None

    def solve(self, kernel: Kernel, machine, timeout_s: float = 30.0, top: int = 4) -> Solved:
        """Branch and bound over (corr, unroll, late, fuse, rows, blocks): points in the order
        of a lower bound of their packets (``lower_bound``); each is packed and priced exactly
        until the next bound exceeds the ``top``-th best price (the rest cannot enter the top),
        or the time is up (stopping before a point that could overrun ``timeout_s``)."""
        t0 = time.perf_counter()
        g = tpl.match(kernel)
        if isinstance(g, str): return Solved(self.name, [], "enumeration", False, detail={"why": g})
        pts = sorted(((lower_bound(g, dict(s.params)), i, s) for i, s in enumerate(self.space(kernel, machine))),
                     key=lambda x: x[:2])
        cands, table, bounds, complete, exact = [], {}, {}, True, {}
        slowest = 0.0
        for lb, _, s in pts:
            if len(cands) >= top and lb >= sorted(c.modeled_s for c in cands)[top - 1] * _clock(machine): break
            if time.perf_counter() - t0 + slowest > timeout_s:   # the next point could overrun: stop before it
                complete = False
                break
            t1 = time.perf_counter()
            p = dict(s.params)
            mp = modeled_packets(g, p)
            table[key(p)], bounds[key(p)] = mp, point_bound(g, p)
            exact[key(p)] = all(proved(v) for v in parts(g, p))
            cands.append(Candidate(s, mp / _clock(machine)))
            slowest = max(slowest, time.perf_counter() - t1)
        cands.sort(key=lambda c: c.modeled_s)
        if not cands: return Solved(self.name, [], "branch and bound", False, solve_s=time.perf_counter() - t0)
        best = key(dict(cands[0].schedule.params))
        # proved: every packing of the pick minimal, every other priced point's bound (its
        # unproved packings at their resource bound) no better, the unpriced ones pruned by theirs
        ok = complete and exact[best] and all(b >= table[best] for b in bounds.values())
        rest = [lb for lb, _, s in pts if key(dict(s.params)) not in table]
        bound = None if ok else min(rest + list(bounds.values())) / _clock(machine)
        return Solved(self.name, cands[:top], "branch and bound", ok, bound_s=bound, solve_s=time.perf_counter() - t0,
                      detail={"modeled_packets": table, "bound_packets": bounds, "points": len(pts), "priced": len(table),
                              "packings_proved": all(exact.values()), "pick_packings_proved": exact[best], "macs": macs(g)})


def stream_bound(texts: list[str]) -> int:
    """Packets no packing of one stream can beat: 4 slots (an extender takes one), two
    multipliers, two loads and one HVX load, one HVX store a packet."""
    ins = [vliw.classify(t) for t in _canonical(texts)]
    mpy = sum(min(sum(u.startswith("mpy") for u in a) for a in i.iclass.units) for i in ins)
    return max(1, -(-sum(i.words for i in ins) // vliw.SLOTS), -(-mpy // 2), -(-sum(i.mem == "load" for i in ins) // 2),
               sum(i.mem == "load" and i.iclass.hvx for i in ins), sum(i.mem == "store" and i.iclass.hvx for i in ins))


def point_bound(g: dict[str, int], p: dict[str, int]) -> int:
    """``modeled_packets`` with every packing not proved minimal replaced by its stream's bound."""
    def n(t: list[str]) -> int: return len(packets(t)) if proved(t) else min(len(packets(t)), stream_bound(t))
    total = frame_packets(p, g.get("relu", 0), g.get("add", 0)) + pad_packets(g) + (corr_packets(g) if p["corr"] else 0) + requant_packets(g, p)
    for m0, n0 in tiles(g, p):
        c = {k: n(v) for k, v in tile_streams(g, p, m0, n0).items()}
        total += c["pro"] + c["seg0"] + (g["kh"] - 1) * c["seg"] + g["kh"] * trips(g, p["unroll"]) * c["body"] + c["epi"]
    return total


def lower_bound(g: dict[str, int], p: dict[str, int]) -> int:
    """Packets no packing of the point's streams can beat: ``modeled_packets`` with every
    stream at its resource bound (``stream_bound``; no Z3)."""
    total = frame_packets(p, g.get("relu", 0), g.get("add", 0)) + pad_packets(g) + (corr_packets(g) if p["corr"] else 0) + requant_packets(g, p)
    for m0, n0 in tiles(g, p):
        c = {k: _bound(_canonical(v)) for k, v in tile_streams(g, p, m0, n0).items()}
        total += c["pro"] + c["seg0"] + (g["kh"] - 1) * c["seg"] + g["kh"] * trips(g, p["unroll"]) * c["body"] + c["epi"]
    return total


@functools.lru_cache(maxsize=4096)
def _bound(canon: tuple[str, ...]) -> int: return stream_bound(list(canon))


FAMILY = HvxGemm()
