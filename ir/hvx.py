"""The HVX int8 implicit-GEMM template (schedule family ``hvx_gemm``): geometry and legality.

One micro-kernel runs an int8 x int8 -> int32 GEMM and an int8 NHWC convolution (the
convolution as an implicit GEMM, no im2col copy): rows are output pixels (GEMM: rows of
A), columns output channels (GEMM: columns of B), and the reduction runs over ``kh``
*segments* (one per kernel row ky), each ``kw * c_in`` contiguous bytes of one input row
in NHWC (GEMM: one segment, a row of A). Row ``p = (oy, ox)`` of segment ``ky`` starts at
byte ``((oy*stride + ky) * wp + ox*stride) * c_in`` of the zero-padded image (row pitch
``wp = w + 2*pad``); a GEMM row ``i`` at ``i * a_rs``.

Geometry (named integers, ``match``): ``conv`` (0 GEMM, 1 convolution), ``m`` (rows:
pixels), ``n`` (columns), ``k`` (reduction length = kh*kw*c_in), ``kh, kw, c_in, h, w,
stride, pad, oh, ow`` (GEMM: kh = kw = stride = 1, pad 0, h = m, w = 1, c_in = k), ``a_rs``
(bytes between GEMM rows; for a convolution w*c_in), the weights' strides ``w_n`` (per
column) and ``w_ky, w_kx, w_c`` (GEMM: w_c = B's row stride, the others 0), the output's
row stride ``c_rs``, the input slots ``a_in, b_in``, and for a requantized output
(``requant`` 1) ``bias_in, mult_in, pre, post``.

Parameters (``Schedule.params``), checked by ``check``: ``rows`` R (output rows a tile),
``blocks`` J (32-column blocks a tile), ``corr`` (0: the 128 x row-sum correction
accumulated in the loop; 1: precomputed by a counted HVX pass, the accumulators start at
it), ``unroll`` U (4-byte groups a loop trip: 2 loads 8 bytes a row, corr 1 only) and
``fuse`` (1: a requantized output requantized in the tile's epilogue; 0: a separate pass) and
``late`` (the software pipeline's depth for the second group's weights: 0 a trip ahead, 1
loaded in the trip; unroll 2 only). Register budgets (``vector_regs``, ``scalar_regs``):
with the in-loop correction a tile holds R*J accumulators, J weight vectors, the 0x80 splat
and R correction accumulators in the 32 HVX registers, and J + R pointers and R words in the
24 scalar registers r4..r27; precomputed, R*J accumulators and U*J weight vectors (+ 2J for a
fused requantize), one weight and one row pointer and U*R words in r4..r28. R divides m,
32*J divides n; a segment is at most 1023 trips (``loop0``'s immediate); a tile's rows and
corrections lie within a load's offset of its first.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import dtype as dt
from .node import Node, Ops, axis_stride, const, substitute

PARAMS = ("blocks", "corr", "fuse", "late", "rows", "unroll")
HVX_REGS, SCALAR_REGS = 32, 24   # vector registers; scalar registers free for the tile (r4..r27)
LANES = 32                        # int32 lanes of a 128-byte vector: the columns of one block
MAX_TRIPS = 1023                  # loop0(label, #u10)


def _strides(kernel, idx: Node) -> tuple[dict[int, int], int] | str:
    """Per axis the constant stride of an affine index, and its offset; or why not."""
    if any(n.op not in (Ops.ADD, Ops.MUL, Ops.VAR, Ops.CONST) for n in idx.toposort()): return "index is not affine"
    out = {}
    for i, ax in enumerate(kernel.axes):
        s = axis_stride(idx, i, ax.size) if ax.size > 1 else 0
        if s is None: return "index stride is not constant"
        out[i] = s
    base = substitute(idx, {v: const(0, dt.int32) for v in idx.toposort() if v.op is Ops.VAR})
    if base.op is not Ops.CONST: return "index offset is not constant"
    return out, int(base.arg)


@dataclass(frozen=True)
class Requant:
    """``int8(clamp(rshift(clamp(rshift(x, pre), int16) * mult * 2 + 2^15 >> 16, post), int8))``
    with ``rshift(v, s) = (v + 2^(s-1)) >> s`` (``kernels.builders.requantize``)."""
    x: Node       # int32: accumulator + bias
    mult: Node    # int32 multiplier, 0..32767
    pre: int
    post: int


def match_requant(value: Node) -> Requant | None:
    """The requantize above with ``value`` its int8 result, or None."""
    if value.op is not Ops.CAST or value.dtype is not dt.int8: return None
    s = _clamp(value.src[0], -128, 127)
    post, z = _rshift(s) if s is not None else (None, None)
    if z is None or z.op is not Ops.SHR or _const(z.src[1]) != 16: return None
    t = _other(z.src[0], Ops.ADD, 1 << 15)
    m2 = _other(t, Ops.MUL, 2) if t is not None else None
    if m2 is None or m2.op is not Ops.MUL: return None
    y, mult = m2.src
    pre, x = _rshift(_clamp(y, -32768, 32767))
    if x is None:
        y, mult = mult, y
        pre, x = _rshift(_clamp(y, -32768, 32767))
    if x is None or x.dtype is not dt.int32 or mult.dtype is not dt.int32 or not 1 <= pre <= 15 or not 1 <= post <= 7:
        return None
    return Requant(x, mult, pre, post)


def _const(n: Node | None) -> int | None:
    return n.arg if n is not None and n.op is Ops.CONST and isinstance(n.arg, int) else None


def _clamp(n: Node | None, lo: int, hi: int) -> Node | None:
    """-max(-max(v, lo), -hi) -> v."""
    if n is None or n.op is not Ops.NEG: return None
    a = n.src[0]
    if a.op is not Ops.MAX or _const(a.src[1]) != -hi or a.src[0].op is not Ops.NEG: return None
    b = a.src[0].src[0]
    if b.op is not Ops.MAX or _const(b.src[1]) != lo: return None
    return b.src[0]


def _rshift(n: Node | None) -> tuple[int | None, Node | None]:
    """(v + 2^(s-1)) >> s -> (s, v)."""
    if n is None or n.op is not Ops.SHR: return None, None
    s = _const(n.src[1])
    v = _other(n.src[0], Ops.ADD, 1 << (s - 1)) if s is not None and s >= 1 else None
    return (s, v) if v is not None else (None, None)


def _other(n: Node, op: Ops, c: int) -> Node | None:
    """The operand of ``n = op(a, c)`` (either order) that is not the constant ``c``."""
    if n.op is not op: return None
    a, b = n.src
    return a if _const(b) == c else b if _const(a) == c else None


def _int8_load(n: Node) -> Node | None:
    return n.src[0] if n.op is Ops.CAST and n.dtype is dt.int32 and n.src[0].op is Ops.LOAD \
        and n.src[0].dtype is dt.int8 else None


def _epilogue(kernel) -> dict[str, int] | str:
    """Geometry of the stored value around the sum: none, or the requantize of
    ``sum + bias[n]`` with a per-column ``mult[n]``."""
    red = kernel.reduce
    if kernel.body is red: return {"requant": 0}
    rq = match_requant(kernel.body)
    if rq is None: return "the stored value is neither the sum nor its requantize to int8"
    x = rq.x
    if x.op is not Ops.ADD or red not in x.src: return "the requantized value is not sum + bias"
    bias = x.src[1] if x.src[0] is red else x.src[0]
    if bias.op is not Ops.LOAD or rq.mult.op is not Ops.LOAD: return "bias or multiplier is not a load"
    return {"requant": 1, "bias_in": bias.arg, "mult_in": rq.mult.arg, "pre": rq.pre, "post": rq.post,
            "_bias": bias, "_mult": rq.mult}


@functools.lru_cache(maxsize=256)  # every check() of a schedule space asks again
def match(kernel) -> dict[str, int] | str:
    """The geometry (module docstring), or why the kernel is not an int8 GEMM or NHWC
    convolution this template runs. Callers must not mutate the dict (cached)."""
    red = kernel.reduce
    if red is None or red.arg[0] != "sum": return "not a sum reduction"
    if red.dtype is not dt.int32: return f"accumulates in {red.dtype.name}, not int32"
    x = red.src[0]
    if x.op is not Ops.MUL: return "the reduced value is not a product"
    loads = [_int8_load(f) for f in x.src]
    if any(ld is None for ld in loads): return "the factors are not int8 loads widened to int32"
    if loads[0].arg == loads[1].arg: return "both factors read the same input"
    epi = _epilogue(kernel)
    if isinstance(epi, str): return epi
    st = [_strides(kernel, ld.src[0]) for ld in loads]
    if any(isinstance(s, str) for s in st): return next(s for s in st if isinstance(s, str))
    out_st = _strides(kernel, kernel.store)
    if isinstance(out_st, str): return "output " + out_st
    outs = [a for a in kernel.output_axes if kernel.axes[a].size > 1]
    reds = [a for a in kernel.reduce_axes if kernel.axes[a].size > 1]
    # the weights (columns' operand) read exactly one output axis; the activations the others
    own = [[a for a in outs if st[i][0][a]] for i in (0, 1)]
    if any(st[0][0][a] and st[1][0][a] for a in outs): return "an output axis read by both operands (a batch)"
    if any(not (st[0][0][a] or st[1][0][a]) for a in outs): return "an output axis no operand reads (a broadcast)"
    if any(not (st[0][0][a] and st[1][0][a]) for a in reds): return "a reduce axis not read by both operands"
    wi = next((i for i in (0, 1) if len(own[i]) == 1 and (len(own[1 - i]) != 1 or out_st[0][own[i][0]] == 1)), None)
    if wi is None: return "no operand reads exactly one output axis"
    act, wgt = loads[1 - wi], loads[wi]
    (sa, oa), (sw, ow_) = st[1 - wi], st[wi]
    n_ax = own[wi][0]
    if ow_ != 0: return "the weight index has an offset"
    if not (wgt.src[1].op is Ops.CONST and wgt.src[1].arg is True): return "the weight load is masked"
    if out_st[0][n_ax] != 1 or out_st[1] != 0: return "output columns are not contiguous"
    g = _conv(kernel, act, sa, oa, own[1 - wi], reds, out_st[0]) if len(kernel.inputs[act.arg].shape) == 4 \
        else _gemm(kernel, act, sa, oa, own[1 - wi], reds, out_st[0])
    if isinstance(g, str): return g
    ky, kx, c = g.pop("_ky"), g.pop("_kx"), g.pop("_c")
    g.update({"n": kernel.axes[n_ax].size, "a_in": act.arg, "b_in": wgt.arg, "w_n": sw[n_ax],
              "w_ky": sw[ky] if ky is not None else 0, "w_kx": sw[kx] if kx is not None else 0, "w_c": sw[c]})
    g["k"] = g["kh"] * g["kw"] * g["c_in"]
    if epi["requant"]:
        for key, ld in (("bias", epi["_bias"]), ("mult", epi["_mult"])):
            s = _strides(kernel, ld.src[0])
            if isinstance(s, str) or s[1] != 0 or any(v and a != n_ax for a, v in s[0].items()) or s[0][n_ax] != 1:
                return f"the {key} is not one int32 per output column"
    g.update({k: v for k, v in epi.items() if not k.startswith("_")})
    return g


def _gemm(kernel, act, sa, oa, pix, reds, out) -> dict[str, int] | str:
    if len(pix) != 1 or len(reds) != 1: return "a GEMM needs one row axis and one reduce axis"
    (m_ax,), (k_ax,) = pix, reds
    if oa != 0 or not (act.src[1].op is Ops.CONST and act.src[1].arg is True): return "operand A is offset or masked"
    if sa[k_ax] != 1: return "operand A is not contiguous along the reduction"
    m, k = kernel.axes[m_ax].size, kernel.axes[k_ax].size
    return {"conv": 0, "m": m, "kh": 1, "kw": 1, "c_in": k, "h": m, "w": 1, "stride": 1, "pad": 0, "oh": m, "ow": 1,
            "a_rs": sa[m_ax], "c_rs": out[m_ax], "_ky": None, "_kx": None, "_c": k_ax}


def _conv(kernel, act, sa, oa, pix, reds, out) -> dict[str, int] | str:
    nb, h, w, c = kernel.inputs[act.arg].shape
    if nb != 1: return "batch > 1 (one image a kernel)"
    by_stride = {sa[a]: a for a in reds}
    c_ax = by_stride.get(1)
    if c_ax is None or kernel.axes[c_ax].size != c: return "no reduce axis over the input channels"
    kx_ax, ky_ax = by_stride.get(c), by_stride.get(w * c)
    if len(reds) != 1 + (kx_ax is not None) + (ky_ax is not None): return "reduce axes are not (ky, kx, c_in)"
    axes = kernel.axes
    kh = axes[ky_ax].size if ky_ax is not None else 1
    kw = axes[kx_ax].size if kx_ax is not None else 1
    pix_st = sorted(pix, key=lambda a: -sa[a])
    if not pix_st and h == w == 1: pix_st = [None, None]   # a 1x1 map (a fully connected layer)
    if len(pix_st) == 1: pix_st = pix_st + [None] if sa[pix_st[0]] >= w * c else [None] + pix_st
    if len(pix_st) != 2: return "not two output pixel axes"
    oy_ax, ox_ax = pix_st
    oh = axes[oy_ax].size if oy_ax is not None else 1
    ow = axes[ox_ax].size if ox_ax is not None else 1
    s = sa[ox_ax] // c if ox_ax is not None else (sa[oy_ax] // (w * c) if oy_ax is not None else 1)
    if ox_ax is not None and sa[ox_ax] != s * c or oy_ax is not None and sa[oy_ax] != s * w * c:
        return "pixel strides are not stride * (c_in, w * c_in)"
    if oa % (c * (w + 1)): return "padding is not the same on both axes"
    pad = -oa // (c * (w + 1))
    if pad < 0 or (h + 2 * pad - kh) // s + 1 != oh or (w + 2 * pad - kw) // s + 1 != ow:
        return "output size does not match the input, filter, stride and padding"
    if c % 4: return "c_in is not a multiple of 4 (one vrmpy reads 4 channels)"
    c_rs = out[ox_ax] if ox_ax is not None else out[oy_ax] if oy_ax is not None else kernel.output.shape[-1]
    if ox_ax is not None and oy_ax is not None and out[oy_ax] != ow * c_rs: return "output pixels are not in raster order"
    err = _check_mask(act.src[1], kernel, oy_ax, ox_ax, ky_ax, kx_ax, s, pad, h, w)
    if err: return err
    return {"conv": 1, "m": oh * ow, "kh": kh, "kw": kw, "c_in": c, "h": h, "w": w, "stride": s, "pad": pad,
            "oh": oh, "ow": ow, "a_rs": w * c, "c_rs": c_rs, "_ky": ky_ax, "_kx": kx_ax, "_c": c_ax}


def _check_mask(mask: Node, kernel, oy, ox, ky, kx, s, pad, h, w) -> str | None:
    """The activation's mask must be exactly the zero padding's in-bounds test (evaluated
    over the whole (oy, ox, ky, kx) grid)."""
    ax = [a for a in (oy, ox, ky, kx) if a is not None]
    used = {n.arg[0] for n in mask.toposort() if n.op is Ops.VAR}
    if not used <= set(ax): return "the activation's mask reads other axes than the window"
    grids = np.meshgrid(*[np.arange(kernel.axes[a].size) for a in ax], indexing="ij")
    env = dict(zip(ax, grids))
    zero = np.zeros_like(grids[0]) if grids else np.zeros(())
    y = (env.get(oy, zero) * s + env.get(ky, zero) - pad)
    x = (env.get(ox, zero) * s + env.get(kx, zero) - pad)
    want = (0 <= y) & (y < h) & (0 <= x) & (x < w)
    got = _eval(mask, env, zero)
    if got is None: return "the activation's mask is not an affine comparison"
    return None if np.array_equal(np.broadcast_to(got, want.shape), want) else "the activation's mask is not the padding's"


_NP = {Ops.ADD: np.add, Ops.MUL: np.multiply, Ops.CMPLT: np.less, Ops.AND: np.logical_and, Ops.OR: np.logical_or,
       Ops.CMPNE: np.not_equal, Ops.CMPEQ: np.equal,
       Ops.XOR: np.logical_xor}


def _eval(n: Node, env: dict[int, np.ndarray], zero: np.ndarray):
    memo: dict[int, np.ndarray] = {}
    for x in n.toposort():
        if x.op is Ops.CONST: v = np.asarray(x.arg)
        elif x.op is Ops.VAR: v = env[x.arg[0]]
        elif x.op in _NP: v = _NP[x.op](memo[id(x.src[0])], memo[id(x.src[1])])
        else: return None
        memo[id(x)] = v
    return memo[id(n)]


def pitch(g: dict[str, int]) -> int:
    """Bytes between image rows of the buffer the kernel reads (padded for a convolution)."""
    return (g["w"] + 2 * g["pad"]) * g["c_in"] if g["conv"] else g["a_rs"]


def row_offset(g: dict[str, int], p: int) -> int:
    """Byte offset of output row ``p``'s first segment in the buffer the kernel reads."""
    if not g["conv"]: return p * g["a_rs"]
    oy, ox = divmod(p, g["ow"])
    return oy * g["stride"] * pitch(g) + ox * g["stride"] * g["c_in"]


def tile_spread(g: dict[str, int], r: int) -> int:
    """The largest byte distance from a tile's first row to one of its rows."""
    return max((row_offset(g, m0 + r - 1) - row_offset(g, m0) for m0 in range(0, g["m"], r)), default=0)


def chunk_stride(length: int) -> int | None:
    """Words between the sums of consecutive ``length``-byte chunks as the HVX sum pass
    (backends/hexagon/asm_gemm ``so_chunks``) leaves them: a chunk's sum sits in its first
    word (length/4 words apart; 32 for chunks of whole vectors); None where that pass does
    not fit (a chunk neither divides nor is a multiple of the 128-byte vector)."""
    if length % 4 == 0 and length < 128 and 128 % length == 0: return length // 4
    return 32 if length % 128 == 0 else None


def direct_rows(g: dict[str, int]) -> bool:
    """Are the rows' sums the sums of dense rows (a GEMM with rows back to back, or a 1x1
    convolution of stride 1 without padding)? Then the sum pass writes the correction itself."""
    dense = g["a_rs"] == g["k"] if not g["conv"] else g["kh"] == g["kw"] == g["stride"] == 1 and not g["pad"]
    return dense and chunk_stride(g["k"]) is not None


def hvx_windows(g: dict[str, int]) -> bool:
    """Does a convolution's correction fit the all-HVX pass (backends/hexagon/asm_gemm
    ``_c_corr_hvx``): a power-of-two number of 4-byte groups a pixel, at most a vector's 32,
    and stride 1 or 2?"""
    w = g["c_in"] // 4
    return bool(g["conv"]) and g["c_in"] % 4 == 0 and w & (w - 1) == 0 and w <= 32 and g["stride"] in (1, 2)


def corr_stride(g: dict[str, int]) -> int:
    """Words between consecutive rows' corrections of a GEMM or 1x1 (``direct_rows``)."""
    return chunk_stride(g["k"]) if direct_rows(g) else 1


def corr_pitch(g: dict[str, int]) -> int:
    """Words between output rows' corrections of a convolution from the HVX pass (whole
    vectors a row: the pass stores only aligned vectors)."""
    return 32 * -(-g["ow"] // 32)


def corr_index(g: dict[str, int], p: int) -> int:
    """Word of output row ``p``'s correction in the array the kernel reads."""
    if direct_rows(g): return p * corr_stride(g)
    if hvx_windows(g): return p // g["ow"] * corr_pitch(g) + p % g["ow"]
    return p


def scalar_regs(r: int, j: int, corr: int, unroll: int) -> int:
    """Scalar registers of a tile: in-loop correction, a pointer per block and per row plus a
    word per row; precomputed correction, one weight and one row pointer plus the rows' words."""
    return j + 2 * r if corr == 0 else 2 + unroll * r


def vector_regs(r: int, j: int, corr: int, unroll: int) -> int:
    """Accumulators, weight vectors, and for the in-loop correction the 0x80 splat and one
    correction accumulator a row."""
    return r * j + j + 1 + r if corr == 0 else r * j + unroll * j


def check(geometry: dict[str, int], params: dict[str, int], machine=None) -> list[str]:
    """Every reason ``params`` are illegal for ``geometry`` (module docstring)."""
    missing = [p for p in PARAMS if p not in params]
    if missing: return [f"missing parameter(s) {', '.join(missing)}"]
    unknown = sorted(set(params) - set(PARAMS))
    if unknown: return [f"unknown parameter(s) {', '.join(unknown)}"]
    r, j, corr, u = params["rows"], params["blocks"], params["corr"], params["unroll"]
    if r < 1 or j < 1: return ["rows and blocks must be >= 1"]
    if corr not in (0, 1) or u not in (1, 2) or corr == 0 and u != 1:
        return ["corr is 0 (in the loop) or 1 (precomputed); unroll is 1, or 2 with corr 1"]
    g = geometry
    errs = []
    if g["m"] % r: errs.append(f"rows={r} does not divide the {g['m']} output rows")
    if g["n"] % (LANES * j): errs.append(f"{LANES}*blocks={LANES * j} does not divide n={g['n']}")
    if j > 4: errs.append("blocks > 4 (vector offsets of one pointer)")
    nv, ns = vector_regs(r, j, corr, u), scalar_regs(r, j, corr, u)
    if nv > HVX_REGS: errs.append(f"the tile needs {nv} > {HVX_REGS} HVX registers")
    if ns > (SCALAR_REGS if corr == 0 else 25): errs.append(f"the tile needs {ns} scalar registers, more than there are")
    seg = g["kw"] * g["c_in"]
    if seg % (4 * u): errs.append(f"a segment ({seg} bytes) is not whole {4 * u}-byte loads")
    elif seg // (4 * u) > MAX_TRIPS: errs.append(f"a segment of {seg // (4 * u)} iterations exceeds loop0's {MAX_TRIPS}")
    if g["m"] > 1 and (g["a_rs"] % (4 * u) or pitch(g) % (4 * u) or g["conv"] and (g["stride"] * g["c_in"]) % (4 * u)):
        errs.append(f"rows are not {4 * u}-byte aligned")
    if corr == 1 and tile_spread(g, r) > (4096 if u == 1 else 8192) - 8:
        errs.append("a tile's rows lie farther apart than a load's offset reaches")
    if corr == 1 and not direct_rows(g) and (g["conv"] and g["c_in"] % 8 or not g["conv"] and g["a_rs"] % 8):
        errs.append("the precomputed correction reads 8-byte words: c_in (GEMM: A's row stride) % 8")
    if corr == 1 and max(corr_index(g, m0 + r - 1) - corr_index(g, m0) for m0 in range(0, g["m"], r)) * 4 > 4092:
        errs.append("a tile's corrections lie beyond a load's offset")
    if g["c_rs"] % LANES: errs.append("output rows are not 128-byte aligned (c_rs % 32)")
    if params["late"] not in (0, 1): errs.append("late is 0 or 1")
    elif params["late"] and (corr != 1 or u != 2 or j > 2):
        errs.append("late (the second group's weights loaded in the trip) needs corr 1, unroll 2, blocks <= 2")
    if params["fuse"] not in (0, 1): errs.append("fuse is 0 or 1")
    elif params["fuse"]:
        if not g["requant"]: errs.append("fuse: no requantize to fuse")
        if corr != 1: errs.append("fuse needs the precomputed correction (its registers)")
        if j * LANES != g["n"] or j > 2: errs.append("fuse: a tile spans all n columns in 1 or 2 blocks")
        if (r * j) % 4: errs.append("fuse: rows x blocks is whole groups of 4 vectors (128 output bytes)")
        if nv + 2 * j > HVX_REGS: errs.append("fuse: no registers for the bias and multiplier vectors")
        if geometry.get("relu") and nv + 2 * j + 1 > HVX_REGS: errs.append("fuse: no register for ReLU6's zero vector")
        if geometry.get("add") and nv + 2 * j + 2 > HVX_REGS: errs.append("fuse: no registers for the add's multiplier splats")
    if geometry.get("relu") and not geometry["requant"]: errs.append("relu: ReLU6 fuses into a requantize only")
    if geometry.get("add"):   # the residual add with requantize (geometry add_s, add_ma, add_mb)
        if not params["fuse"]: errs.append("add: the residual add fuses into the fused requantize epilogue only")
        if geometry.get("relu"): errs.append("add: a fused residual add takes no ReLU6")
        if not (1 <= geometry["add_ma"] <= 127 and 1 <= geometry["add_mb"] <= 127 and 1 <= geometry["add_s"] <= 15):
            errs.append("add: multipliers 1..127 (the halfword sum exact), shift 1..15")
    return errs
