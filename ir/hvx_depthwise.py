"""The HVX depthwise 3x3 template (schedule family ``hvx_depthwise``): geometry and legality.

Fits ``out[0, y, x, c] (int32) = sum_{dy,dx} x[0, s*y+dy-1, s*x+dx-1, c] * w[c, dy, dx, 0]``:
an int8 NHWC depthwise 3x3 convolution (groups = channels, one filter a channel), stride 1
or 2, padding 1, batch 1, as ``Tensor.conv2d(w, s, 1, C, "nhwc")`` builds it; stored as is
(int32) or through the library's per-channel requantize to int8 (``qconv2d``: bias,
rounding shift, Q15 multiplier, rounding shift, saturation).
The template holds a pixel pair of 64 channels in one 128-byte vector, so C must be 64
and the width even.

Parameters (``Schedule.params``), checked by ``check``:
- ``unroll``: output pixels an iteration of the row loop makes (stride x unroll even, so
  every iteration starts on a pixel pair; the output width a multiple of it). An
  iteration keeps ``3 * pairs(stride, unroll)`` unpacked pixel pairs (two vectors each),
  ``unroll`` accumulator pairs and the nine weight vectors in the 32 HVX registers;
- ``early``: 1 shuffles every output but the last right after its multiplies (needs
  unroll >= 2), 0 shuffles all of them with their stores in the next iteration.
With the requantize epilogue two int8 pixels make one store: unroll 2, early 0.
"""
from __future__ import annotations

import functools

from . import dtype as dt
from .node import Ops

C = 64
PARAMS = ("early", "unroll")
UNPACKED_REGS = 18      # v0..v17: unpacked pixel pairs (the weights sit in v22..v30, v31 is the load temporary)
ACC_REGS = 4            # v18..v21: accumulator pairs


def out_size(n: int, stride: int) -> int: return (n + 2 - 3) // stride + 1


def pairs(stride: int, unroll: int) -> int:
    """Pixel pairs of one input row an iteration reads: pixels s*x0-2 .. s*(x0+U-1)+1."""
    return (stride * (unroll - 1) + 3) // 2 + 1


@functools.lru_cache(maxsize=64)
def canonical(h: int, w: int, c: int, stride: int):
    """The kernel ``Tensor.conv2d`` builds for this depthwise convolution."""
    from .tensor import Tensor
    x = Tensor.empty(1, h, w, c, dtype=dt.int8, name="x")
    wt = Tensor.empty(c, 3, 3, 1, dtype=dt.int8, name="w")
    steps = x.conv2d(wt, stride, 1, c, "nhwc").schedule("out")
    return steps[-1].kernel if len(steps) == 1 else None


def epilogue(kernel) -> dict[str, int] | str:
    """None (the sum is stored: int32 out), or the library's requantize of ``sum + bias[c]``
    with a per-channel ``mult[c]`` to int8 (``kernels.builders.requantize``)."""
    from .hvx import match_requant
    red = kernel.reduce
    if kernel.body is red: return {"requant": 0}
    rq = match_requant(kernel.body)
    if rq is None: return "the stored value is neither the sum nor its requantize to int8"
    x = rq.x
    if x.op is not Ops.ADD or red not in x.src: return "the requantized value is not sum + bias"
    bias = x.src[1] if x.src[0] is red else x.src[0]
    for ld, what in ((bias, "bias"), (rq.mult, "multiplier")):
        if ld.op is not Ops.LOAD or len(kernel.inputs[ld.arg].shape) != 1 or kernel.inputs[ld.arg].dtype is not dt.int32:
            return f"the {what} is not a load of an int32 vector"
        if ld.src[0].op is not Ops.VAR or not (ld.src[1].op is Ops.CONST and ld.src[1].arg is True):
            return f"the {what} is not read per channel"
    return {"requant": 1, "bias_in": bias.arg, "mult_in": rq.mult.arg, "pre": rq.pre, "post": rq.post}


@functools.lru_cache(maxsize=256)
def match(kernel) -> dict[str, int] | str:
    """The geometry (h, w, c, stride, oh, ow, x_in, w_in, requant [, bias_in, mult_in, pre,
    post]), or why the kernel does not fit. Callers must not mutate the dict (cached)."""
    red = kernel.reduce
    if red is None or red.arg[0] != "sum": return "not a sum reduction"
    if red.dtype is not dt.int32: return f"accumulates in {red.dtype.name}, not int32"
    epi = epilogue(kernel)
    if isinstance(epi, str): return epi
    if len(kernel.inputs) != 2 + 2 * epi["requant"]: return "not the conv's two inputs (plus bias and multiplier)"
    rax = kernel.reduce_axes
    if len(rax) != 2 or any(kernel.axes[a].size != 3 for a in rax): return "not a 3x3 window (two reduce axes of 3)"
    prod = red.src[0]
    if prod.op is not Ops.MUL: return "the reduced value is not a product"
    loads = [f.src[0] if f.op is Ops.CAST else f for f in prod.src]
    if any(ld.op is not Ops.LOAD for ld in loads): return "the factors are not (widened) loads"
    if any(kernel.inputs[ld.arg].dtype is not dt.int8 for ld in loads): return "operands are not both int8"
    x_in = next((ld.arg for ld in loads if len(kernel.inputs[ld.arg].shape) == 4 and kernel.inputs[ld.arg].shape[3] != 1), None)
    if x_in is None: return "no NHWC activation operand"
    w_in = next(ld.arg for ld in loads if ld.arg != x_in) if len({ld.arg for ld in loads}) == 2 else None
    if w_in is None: return "both factors read the same input"
    n, h, w, c = kernel.inputs[x_in].shape
    if n != 1: return f"batch {n} (the template runs batch 1)"
    if kernel.inputs[w_in].shape != (c, 3, 3, 1): return f"weights {kernel.inputs[w_in].shape} are not one 3x3 filter a channel (depthwise)"
    if c != C: return f"{c} channels (the template holds a pixel pair of {C} channels a vector)"
    if w % 2: return f"width {w} is odd (pixel pairs)"
    if epi["requant"] and any(kernel.inputs[epi[b]].shape != (c,) for b in ("bias_in", "mult_in")):
        return f"bias and multiplier are not int32[{c}]"
    oshape = kernel.output.shape
    stride = next((s for s in (1, 2) if oshape == (1, out_size(h, s), out_size(w, s), c)), None)
    if stride is None: return f"output {oshape} is not a stride-1 or stride-2, pad-1 window of {(1, h, w, c)}"
    ref = canonical(h, w, c, stride)
    same = ref is not None and (ref.key == kernel.key if not epi["requant"] else
                                (x_in, w_in) == (0, 1) and red is ref.body and kernel.store is ref.store and kernel.axes == ref.axes)
    if not same: return "not the depthwise 3x3 NHWC convolution conv2d builds (index, mask or axis order differ)"
    return {"h": h, "w": w, "c": c, "stride": stride, "oh": out_size(h, stride), "ow": out_size(w, stride),
            "x_in": x_in, "w_in": w_in, **epi}


def check(geometry: dict[str, int], params: dict[str, int], machine=None) -> list[str]:
    """Every reason ``params`` are illegal for ``geometry``."""
    missing = [p for p in PARAMS if p not in params]
    if missing: return [f"missing parameter(s) {', '.join(missing)}"]
    unknown = sorted(set(params) - set(PARAMS))
    errs = [f"unknown parameter(s) {', '.join(unknown)}"] if unknown else []
    s, u, ow = geometry["stride"], params["unroll"], geometry["ow"]
    if not isinstance(u, int) or u < 1: return errs + ["unroll must be an integer >= 1"]
    if (s * u) % 2: errs.append(f"stride x unroll = {s * u} is odd (iterations must start on a pixel pair)")
    if ow % u: errs.append(f"output width {ow} is not a multiple of unroll {u}")
    regs = 3 * pairs(s, u) * 2
    if regs > UNPACKED_REGS or 2 * u > ACC_REGS:
        errs.append(f"{regs} unpacked + {2 * u} accumulator vectors do not fit the {UNPACKED_REGS} + {ACC_REGS} registers")
    if ow // u > 1024: errs.append("more than 1024 iterations a row (loop0's immediate count)")
    if params["early"] not in (0, 1): errs.append("early must be 0 or 1")
    elif params["early"] and u < 2: errs.append("early needs unroll >= 2 (the last output is always shuffled with its stores)")
    if geometry.get("requant") and (u != 2 or params["early"]):
        errs.append("the requantize epilogue packs two output pixels a store: unroll 2, early 0")
    if geometry["h"] * geometry["w"] * geometry["c"] >= 1 << 24: errs.append("image too large for the row offsets")
    if geometry.get("relu") and not geometry.get("requant"): errs.append("relu: ReLU6 fuses into the requantize epilogue only")
    return errs
