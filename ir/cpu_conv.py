"""The CPU implicit-GEMM convolution template (schedule family ``cpu_conv``): geometry, legality.

Fits a kernel ``out[n, co, oh, ow] = sum_{ci, r, s} x[n, ci, oh*SH + r - PH, ow*SW + s - PW]
* w[co, ci, r, s]`` in float32, or in int32 of uint8/int8 inputs and an int8 filter (the
int8 variant, geometry ``dtype``; NCHW or NHWC input, any filter and output strides), zero
outside the input (padding, the load's mask), dilation 1, one group. As an implicit GEMM:
M = OH*OW output pixels (a batch loop over n), N = c_out, K = c_in*R*S.

The match is exact, not by shape: every index must be affine with constant strides (the
input's offset is the padding), the input's strides must be a layout of its 4-D buffer
(NCHW or NHWC), and the input's mask must equal ``0 <= ih < H and 0 <= iw < W`` on every
point of the (oh, r, ow, s) grid (evaluated, so a simplified mask matches too). The C
template then reads exactly the addresses the kernel reads.

Parameters: those of ``ir.cpu_gemm`` (MR x NR register tile over pixels x c_out, MC/KC/NC
cache blocks of the implicit GEMM, PF, workers), checked by its ``check``.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np

from . import cpu_gemm
from . import dtype as dt
from .interpret import evaluate
from .node import Node, Ops, axis_stride, const, substitute

PARAMS = cpu_gemm.PARAMS
PAD_MAX = 8          # paddings tried when solving the input's offset
GRID_MAX = 1 << 23   # (oh, r, ow, s) points the mask check evaluates at most
ROLES_OUT, ROLES_RED = ("n", "oh", "ow"), ("ci", "r", "s")


@functools.lru_cache(maxsize=256)  # every check() of a schedule space asks again
def match(kernel) -> dict[str, int] | str:
    """The geometry (named integers, see ``_geometry``), or why the kernel is not a plain
    fp32 convolution. Callers must not mutate the dict (cached)."""
    red = kernel.reduce
    if red is None or red.arg[0] != "sum": return "not a sum reduction"
    if kernel.body is not red: return "the stored value is not the sum itself (an epilogue)"
    x = red.src[0]
    if x.op is not Ops.MUL: return "the reduced value is not a product of two loads"
    if red.dtype is dt.int32:  # the int8 variant: each factor a byte load cast to int32
        if any(f.op is not Ops.CAST or f.src[0].op is not Ops.LOAD for f in x.src): return "the reduced value is not a product of two loads"
        loads = tuple(f.src[0] for f in x.src)
        if any(ld.dtype not in (dt.int8, dt.uint8) for ld in loads): return "int32 accumulation of operands that are not 8-bit"
    elif red.dtype is dt.float32:
        loads = x.src
        if any(f.op is not Ops.LOAD for f in loads): return "the reduced value is not a product of two loads"
        if any(ld.dtype is not dt.float32 for ld in loads): return "operands are not both float32"
    else:
        return f"accumulates in {red.dtype.name}, not float32 or int32"
    if loads[0].arg == loads[1].arg: return "both factors read the same input"
    whys = []
    for xl, wl in (loads, loads[::-1]):  # either factor may be the input
        g = _try(kernel, xl, wl)
        if isinstance(g, dict): return _with_dtype(g, xl, wl)
        whys.append(g)
    return whys[0] if loads[0].src[1].op is not Ops.CONST or loads[1].src[1].op is Ops.CONST else whys[1]


def _with_dtype(g: dict[str, int], xl: Node, wl: Node) -> dict[str, int] | str:
    """``g`` with its operand types: dtype 0 fp32, 1 uint8 input x int8 filter, 2 int8 x int8
    (the template offsets the input to unsigned and subtracts 128 * the filter's sums)."""
    if xl.dtype is dt.float32: return dict(g, dtype=0)
    if wl.dtype is not dt.int8: return "the filter is not int8 (VNNI multiplies unsigned by signed bytes)"
    return dict(g, dtype=1 if xl.dtype is dt.uint8 else 2)


def _affine(kernel, idx: Node) -> tuple[dict[int, int], int] | str:
    """Per axis the constant stride of an affine index, and its offset; or why not."""
    if any(n.op not in cpu_gemm.AFFINE_OPS for n in idx.toposort()): return "index is not affine (div, mod or other ops)"
    st = {}
    for i, ax in enumerate(kernel.axes):
        s = axis_stride(idx, i, ax.size) if ax.size > 1 else 0
        if s is None: return "index stride is not constant"
        st[i] = s
    base = substitute(idx, {v: const(0, dt.int32) for v in idx.toposort() if v.op is Ops.VAR})
    if base.op is not Ops.CONST: return "index offset is not constant"
    return st, int(base.arg)


def _layouts(shape: tuple[int, ...]) -> list[tuple[str, dict[str, int], dict[str, int]]]:
    """(name, dims C/H/W, element strides n/ci/h/w) of each layout the 4-D input could have."""
    if len(shape) != 4: return []
    a, b, c, d = shape
    return [("nchw", {"C": b, "H": c, "W": d}, {"n": b * c * d, "ci": c * d, "h": d, "w": 1}),
            ("nhwc", {"C": d, "H": b, "W": c}, {"n": b * c * d, "ci": 1, "h": c * d, "w": d})]


def _try(kernel, xl: Node, wl: Node) -> dict[str, int] | str:
    """The geometry with ``xl`` as the input and ``wl`` as the filter, or why not."""
    if not (wl.src[1].op is Ops.CONST and wl.src[1].arg is True): return "the filter load is masked"
    xa, wa, oa = _affine(kernel, xl.src[0]), _affine(kernel, wl.src[0]), _affine(kernel, kernel.store)
    for r, what in ((xa, "input "), (wa, "filter "), (oa, "output ")):
        if isinstance(r, str): return what + r
    (xs, xoff), (ws, woff), (os_, ooff) = xa, wa, oa
    if woff or ooff: return "the filter or the output index has an offset"
    big = [i for i, ax in enumerate(kernel.axes) if ax.size > 1]
    outs = [i for i in big if not kernel.axes[i].reduce]
    reds = [i for i in big if kernel.axes[i].reduce]
    co = [i for i in outs if ws[i]]
    if any(xs[i] for i in co): return "an output axis both operands read (groups or a batch of filters)"
    if len(co) > 1: return "the filter reads more than one output axis"
    if any(not xs[i] for i in outs if i not in co): return "an output axis no operand reads (a broadcast)"
    if any(not xs[i] or not ws[i] for i in reds): return "a reduce axis one operand does not read"
    xin = kernel.inputs[xl.arg]
    why = "input strides are no NCHW/NHWC layout of its 4-D buffer"
    for name, dims, lay in _layouts(tuple(xin.shape)):
        for roles in _assignments(kernel, xs, [i for i in outs if i not in co], reds, lay):
            g = _geometry(kernel, xl, roles, co[0] if co else None, dims, lay, xs, xoff, ws, os_)
            if isinstance(g, dict): return dict(g, x_in=xl.arg, w_in=wl.arg, layout=0 if name == "nchw" else 1)
            why = g
    return why


def _assignments(kernel, xs: dict[int, int], outs: list[int], reds: list[int], lay: dict[str, int]):
    """Every assignment of roles (n/oh/ow to output axes, ci/r/s to reduce axes) that the
    input's strides allow under layout ``lay``: {role: axis}."""
    def fits(role: str, stride: int) -> bool:
        if role in ("n", "ci"): return stride == lay[role]
        base = lay["h" if role in ("oh", "r") else "w"]
        return stride == base if role in ("r", "s") else stride > 0 and stride % base == 0
    for po in itertools.permutations(ROLES_OUT, len(outs)):
        if not all(fits(r, xs[a]) for r, a in zip(po, outs)): continue
        for pr in itertools.permutations(ROLES_RED, len(reds)):
            if all(fits(r, xs[a]) for r, a in zip(pr, reds)): yield dict(zip(po + pr, outs + reds))


def _geometry(kernel, xl, roles, co, dims, lay, xs, xoff, ws, os_) -> dict[str, int] | str:
    """The named integers of one role assignment, checked against the offset and the mask."""
    size = {r: kernel.axes[a].size for r, a in roles.items()}
    n, oh, ow, ci, r, s = (size.get(x, 1) for x in ROLES_OUT + ROLES_RED)
    if ci > dims["C"]: return "more input channels reduced than the input has"
    sh = xs[roles["oh"]] // lay["h"] if "oh" in roles else 1
    sw = xs[roles["ow"]] // lay["w"] if "ow" in roles else 1
    o_w = os_[roles["ow"]] if "ow" in roles else (os_[roles["oh"]] if "oh" in roles else 1)
    if "ow" in roles and "oh" in roles and os_[roles["oh"]] != ow * o_w:
        return "output pixels are not one linear run per image (oh stride != OW * ow stride)"
    pad = _padding(kernel, xl.src[1], roles, dims, lay, (sh, sw), xoff)
    if isinstance(pad, str): return pad
    st = lambda t, role: t[roles[role]] if role in roles else 0  # noqa: E731 - a role's stride, 0 where absent
    return {"batch": n, "c": ci, "h": dims["H"], "w": dims["W"], "oh": oh, "ow": ow, "r": r, "s": s, "sh": sh, "sw": sw,
            "ph": pad[0], "pw": pad[1], "m": oh * ow, "n": kernel.axes[co].size if co is not None else 1, "k": ci * r * s,
            "x_off": xoff, "x_n": st(xs, "n"), "x_c": lay["ci"], "x_h": lay["h"], "x_w": lay["w"],
            "w_k": ws[co] if co is not None else 0, "w_c": st(ws, "ci"), "w_r": st(ws, "r"), "w_s": st(ws, "s"),
            "o_n": st(os_, "n"), "o_m": o_w, "o_k": os_[co] if co is not None else 0}


def _padding(kernel, mask: Node, roles, dims, lay, strides: tuple[int, int], xoff: int) -> tuple[int, int] | str:
    """(PH, PW) whose offset is the input's and whose window test equals its mask on every
    (oh, r, ow, s) point, or why none does."""
    pads = [(ph, pw) for ph in range(PAD_MAX + 1) for pw in range(PAD_MAX + 1) if xoff == -(ph * lay["h"] + pw * lay["w"])]
    if not pads: return f"input offset {xoff} is no padding up to {PAD_MAX}"
    used = {v.arg[0] for v in mask.toposort() if v.op is Ops.VAR}
    grid = {roles[x]: d for d, x in enumerate(("oh", "r", "ow", "s")) if x in roles}  # axis -> grid dim
    if not used <= set(grid): return "the input's mask reads axes other than oh, r, ow, s"
    oh, r, ow, s = (kernel.axes[roles[x]].size if x in roles else 1 for x in ("oh", "r", "ow", "s"))
    if oh * r * ow * s > GRID_MAX: return "mask grid too large to check"
    got = _mask_grid(kernel, mask, grid)
    idx = np.ix_(np.arange(oh), np.arange(r), np.arange(ow), np.arange(s))
    for ph, pw in pads:
        ih, iw = idx[0] * strides[0] + idx[1] - ph, idx[2] * strides[1] + idx[3] - pw
        want = (ih >= 0) & (ih < dims["H"]) & (iw >= 0) & (iw < dims["W"])
        if np.array_equal(np.broadcast_to(got, want.shape), want): return ph, pw
    return "the input's mask is not the padding of the window"


def _mask_grid(kernel, mask: Node, grid: dict[int, int]) -> np.ndarray:
    """The mask's value on the (oh, r, ow, s) grid (``grid``: axis -> its dim; absent roles
    are size-1 dims)."""
    env = {}
    for a, d in grid.items():
        shape = [1] * 4
        shape[d] = kernel.axes[a].size
        env[a] = np.arange(kernel.axes[a].size).reshape(shape)
    return np.asarray(evaluate(mask.toposort(), env, [], 4, ())[mask], dtype=bool)


def check(geometry: dict[str, int], params: dict[str, int], machine) -> list[str]:
    """Every reason ``params`` are illegal for ``geometry`` on ``machine``: the GEMM's rules
    (for int8, KC counts micro-kernel steps: ``int8_step`` k each)."""
    errs = cpu_gemm.check(geometry, params, machine)
    if geometry.get("dtype", 0) and int8_step(machine) == 0:
        errs.append("int8 needs AVX-512 VNNI or AVX2 (vpmaddwd); AVX-512 without VNNI is not done")
    return errs


def int8_step(machine) -> int:
    """k elements one int8 micro-kernel step takes on ``machine``: 4 with AVX-512 VNNI
    (vpdpbusd), 2 with AVX2 (vpmaddwd on int16), 0 where the template has no int8 kernel."""
    return 4 if has_vnni(machine) else 2 if machine.simd_bytes == 32 else 0


def has_vnni(machine) -> bool:
    return machine.simd_bytes >= 64 and "avx512_vnni" in getattr(machine, "capabilities", ())
