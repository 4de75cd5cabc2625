"""The HVX few-channel first-layer template (schedule family ``hvx_firstlayer``): geometry and legality.

Fits ``out[0, y, x, k] (int32) = sum_{dy,dx,c} x[0, 2y+dy-1, 2x+dx-1, c] * w[k, dy, dx, c]``:
an int8 NHWC 3x3 stride-2 pad-1 convolution from 3 input channels to 32 output channels,
batch 1, as ``Tensor.conv2d(w, 2, 1, 1, "nhwc")`` builds it (the stem of image networks:
224x224x3 -> 112x112x32); stored as is (int32) or through the library's per-channel
requantize to int8 (``qconv2d``). The template reads the natural layout: a row
of an output pixel pair's window is four aligned words (three pixels of three bytes are
nine of their twelve bytes), so the width must be a multiple of 4; the 32 output
channels are the 32 word lanes of one vector.

Parameters (``Schedule.params``), checked by ``check``:
- ``pipeline``: 1 stores a pixel pair in the next iteration (software pipelining one
  stage deep), 0 at the end of its own iteration;
- ``tload``: 1 loads the next pair's window corrections one iteration ahead, 0 in its own;
- ``pre``: vectors (1 or 2) an iteration of the per-row correction pre-pass makes;
- ``pairs``: output pixel pairs (1 or 2) a main-loop iteration makes (two alternate two
  accumulator sets).
"""
from __future__ import annotations

import functools

from . import dtype as dt
from .node import Ops

CIN, COUT = 3, 32
PARAMS = ("pairs", "pipeline", "pre", "tload")


def out_size(n: int) -> int: return (n + 2 - 3) // 2 + 1


@functools.lru_cache(maxsize=64)
def canonical(h: int, w: int):
    """The kernel ``Tensor.conv2d`` builds for this first layer."""
    from .tensor import Tensor
    x = Tensor.empty(1, h, w, CIN, dtype=dt.int8, name="x")
    wt = Tensor.empty(COUT, 3, 3, CIN, dtype=dt.int8, name="w")
    steps = x.conv2d(wt, 2, 1, 1, "nhwc").schedule("out")
    return steps[-1].kernel if len(steps) == 1 else None


@functools.lru_cache(maxsize=256)
def match(kernel) -> dict[str, int] | str:
    """The geometry (h, w, oh, ow, x_in, w_in), or why the kernel does not fit. Callers
    must not mutate the dict (cached)."""
    from .hvx_depthwise import epilogue
    red = kernel.reduce
    if red is None or red.arg[0] != "sum": return "not a sum reduction"
    if red.dtype is not dt.int32: return f"accumulates in {red.dtype.name}, not int32"
    epi = epilogue(kernel)
    if isinstance(epi, str): return epi
    if len(kernel.inputs) != 2 + 2 * epi["requant"]: return "not the conv's two inputs (plus bias and multiplier)"
    rax = kernel.reduce_axes
    if len(rax) != 3: return "not a (channel, row, column) window reduction"
    prod = red.src[0]
    if prod.op is not Ops.MUL: return "the reduced value is not a product"
    loads = [f.src[0] if f.op is Ops.CAST else f for f in prod.src]
    if any(ld.op is not Ops.LOAD for ld in loads): return "the factors are not (widened) loads"
    if any(kernel.inputs[ld.arg].dtype is not dt.int8 for ld in loads): return "operands are not both int8"
    shapes = [kernel.inputs[ld.arg].shape for ld in loads]
    x_in = next((ld.arg for ld, s in zip(loads, shapes) if len(s) == 4 and s[0] == 1 and s[3] == CIN), None)
    if x_in is None: return f"no NHWC activation operand of batch 1 with {CIN} channels"
    w_in = next((ld.arg for ld in loads if ld.arg != x_in), None)
    if w_in is None: return "both factors read the same input"
    _, h, w, _ = kernel.inputs[x_in].shape
    if kernel.inputs[w_in].shape != (COUT, 3, 3, CIN):
        return f"weights {kernel.inputs[w_in].shape} are not {COUT} filters of 3x3x{CIN} (NHWC order)"
    if w % 4: return f"width {w} is not a multiple of 4 (a pixel pair's window row is whole words)"
    if h < 2 or w < 4: return "image too small"
    if kernel.output.shape != (1, out_size(h), out_size(w), COUT):
        return f"output {kernel.output.shape} is not a stride-2, pad-1 window of {(1, h, w, CIN)}"
    if epi["requant"] and any(kernel.inputs[epi[b]].shape != (COUT,) for b in ("bias_in", "mult_in")):
        return f"bias and multiplier are not int32[{COUT}]"
    ref = canonical(h, w)
    same = ref is not None and (ref.key == kernel.key if not epi["requant"] else
                                (x_in, w_in) == (0, 1) and red is ref.body and kernel.store is ref.store and kernel.axes == ref.axes)
    if not same: return "not the 3x3 stride-2 NHWC convolution conv2d builds (index, mask or axis order differ)"
    return {"h": h, "w": w, "oh": out_size(h), "ow": out_size(w), "x_in": x_in, "w_in": w_in, **epi}


def check(geometry: dict[str, int], params: dict[str, int], machine=None) -> list[str]:
    """Every reason ``params`` are illegal for ``geometry``."""
    missing = [p for p in PARAMS if p not in params]
    if missing: return [f"missing parameter(s) {', '.join(missing)}"]
    unknown = sorted(set(params) - set(PARAMS))
    errs = [f"unknown parameter(s) {', '.join(unknown)}"] if unknown else []
    errs += [f"{p} must be 0 or 1" for p in ("pipeline", "tload") if params[p] not in (0, 1)]
    errs += [f"{p} must be 1 or 2" for p in ("pre", "pairs") if params[p] not in (1, 2)]
    if geometry["ow"] // 2 - 1 > 1023: errs.append("more than 1024 iterations a row (loop0's immediate count)")
    if geometry["h"] * geometry["w"] * CIN >= 1 << 24: errs.append("image too large for the row offsets")
    if geometry.get("relu") and not geometry.get("requant"): errs.append("relu: ReLU6 fuses into the requantize epilogue only")
    if geometry.get("requant") and (params["pairs"] != 2 or geometry["ow"] % 4):
        errs.append("the requantize epilogue stores four int8 pixels a vector: pairs 2 and an output width a multiple of 4")
    return errs
