"""Quantized networks for the Hexagon DSP (issue 29): their layers, deterministic weights and
the numpy reference, which is the ground truth (integer arithmetic exactly as the HVX
kernels of ``backends/hexagon`` compute it).

- ``mobilenet_v2``: a MobileNetV2-class network. A 3x3 stride-2 first layer 3 -> 32, then
  inverted residual blocks (1x1 expand 32 -> 64, ReLU6; 3x3 depthwise stride 1 or 2, ReLU6;
  1x1 linear project 64 -> 32; a residual add with requantize where the shape is kept), a
  1x1 head 32 -> 128 with ReLU6, a global average pool and a fully connected layer (a 1x1
  convolution of the pooled 1x1 map). Narrower than the real one: the expansion is always
  64 channels (the HVX depthwise kernel's channel count) and the bottleneck 32 (the GEMM
  template's column block). The input is 192x192 (MobileNetV2's 192 resolution): at 224 the
  last stage is 7x7, and the depthwise kernel needs an even output width.
  ``small=True``: 16x16 input, 2 blocks, 32 classes (tests).
- ``openpilot_stack``: a smaller conv stack in the openpilot style (a strided first layer,
  then depthwise-separable stages that halve the resolution, a 1x1 head), no residuals.

Quantization (``variant="int8"``, the one the DSP runs): symmetric int8 activations (zero
point 0), int8 weights quantized per output channel from Gaussian floats (each channel's
largest weight is +-127), per-channel int32 bias and Q15 multipliers; the library's
requantize (``kernels.reference.requantize``: rounding shift ``pre`` to int16, Q15 multiply,
rounding shift ``post`` to int8). ReLU6 is a clamp: with an output scale of 6/127 the int8
saturation is the upper bound 6, so the clamp is max(q, 0). ``post`` of each layer is
calibrated once on the reference (output spread about 30) so activations neither vanish nor
saturate through the depth. ``variant="uint8"``: the same network with uint8 activations and
per-tensor zero points (the TFLite convention: padding reads the zero point, ReLU6 clamps at
it); numpy reference only (the DSP binary runs the int8 variant).

Other layers' integer definitions (what the HVX kernels compute, bit for bit):
- add: out = sat8((a * ma + b * mb + 2^(s-1)) >> s), ma, mb in [1, 127] (per tensor);
- average pool over P pixels: S = sum (|S| < 2^15: P <= 255), z = sat16((2 S m + 2^15) >> 16),
  out = sat8((z + 2^(post-1)) >> post), with m = round(2^(15+post) / P) < 2^15.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import reference as ref
from .builders import qshifts

EXPAND, BOTTLENECK, HEAD = 64, 32, 128


@dataclass
class Layer:
    name: str
    op: str                        # conv | add | pool
    src: tuple[int, ...]           # producing layers (-1: the image)
    cin: int = 0
    cout: int = 0
    k: int = 1
    stride: int = 1
    groups: int = 1
    relu: bool = False
    q: dict = field(default_factory=dict)   # weights and requantize constants

    @property
    def pad(self) -> int: return self.k // 2


@dataclass
class Net:
    name: str
    h: int
    w: int
    layers: list[Layer]
    variant: str = "int8"
    zero_points: dict = field(default_factory=dict)   # uint8: layer index (-1 image) -> zero point
    notes: str = ""

    def shape(self, i: int) -> tuple[int, int, int]:
        """(H, W, C) of layer i's output (-1: the image)."""
        if i < 0: return self.h, self.w, 3
        ly = self.layers[i]
        if ly.op == "add": return self.shape(ly.src[0])
        h, w, _ = self.shape(ly.src[0])
        if ly.op == "pool": return 1, 1, ly.cout
        return (h + 2 * ly.pad - ly.k) // ly.stride + 1, (w + 2 * ly.pad - ly.k) // ly.stride + 1, ly.cout

    def macs(self, i: int) -> int:
        ly = self.layers[i]
        h, w, c = self.shape(i)
        if ly.op == "conv": return h * w * c * ly.k * ly.k * ly.cin // ly.groups
        return h * w * c if ly.op == "add" else int(np.prod(self.shape(ly.src[0])))

    def layer_kernel(self, i: int):
        """The library kernel (qconv2d) of conv layer i: what an HVX family's solver prices."""
        from .registry import Workload
        ly = self.layers[i]
        h, w, _ = self.shape(ly.src[0])
        return Workload.make("qconv2d", H=h, W=w, C=ly.cin, K=ly.cout, R=ly.k, S=ly.k, stride=ly.stride,
                             pad=ly.pad, groups=ly.groups).kernel


def _arch(blocks: list[tuple[int, bool]], head: bool, classes: int) -> list[Layer]:
    """Stem, then per block (stride, residual): expand, depthwise, project[, add]; head, pool, fc."""
    L = [Layer("stem", "conv", (-1,), 3, 32, 3, 2, relu=True)]
    for b, (stride, res) in enumerate(blocks):
        top, cin = len(L) - 1, L[-1].cout
        L.append(Layer(f"b{b}_expand", "conv", (top,), cin, EXPAND, relu=True))
        L.append(Layer(f"b{b}_dw", "conv", (len(L) - 1,), EXPAND, EXPAND, 3, stride, EXPAND, relu=True))
        L.append(Layer(f"b{b}_project", "conv", (len(L) - 1,), EXPAND, BOTTLENECK))
        if res: L.append(Layer(f"b{b}_add", "add", (top, len(L) - 1), cout=BOTTLENECK))
    if head: L.append(Layer("head", "conv", (len(L) - 1,), L[-1].cout, HEAD, relu=True))
    L.append(Layer("pool", "pool", (len(L) - 1,), cout=L[-1].cout))
    L.append(Layer("fc", "conv", (len(L) - 1,), L[-1].cout, classes))
    return L


def mobilenet_v2(small: bool = False, size: int = 192, classes: int = 1024, variant: str = "int8", seed: int = 0) -> Net:
    if small:
        blocks, size, classes = [(1, True), (2, False)], 16, 32
    else:   # the stride schedule of MobileNetV2 (five stride-2 stages to 1/32), a residual block after each
        blocks = [(1, True), (2, False), (1, True), (2, False), (1, True), (1, True), (2, False), (1, True),
                  (1, True), (2, False), (1, True)]
    net = Net("mobilenet_v2" + ("_small" if small else ""), size, size, _arch(blocks, True, classes), variant,
              notes=f"{size}x{size} input; expansion {EXPAND}, bottleneck {BOTTLENECK}, head {HEAD}, {classes} classes")
    return quantize(net, seed)


def openpilot_stack(small: bool = False, size: int = 128, variant: str = "int8", seed: int = 1) -> Net:
    blocks = [(2, False), (2, False)] if small else [(2, False), (1, False), (2, False), (2, False)]
    size = 16 if small else size
    net = Net("openpilot_stack" + ("_small" if small else ""), size, size, _arch(blocks, True, 32), variant,
              notes=f"{size}x{size} input; depthwise-separable stages, no residuals, head {HEAD}, 32 outputs")
    return quantize(net, seed)


# ---- weights and calibration --------------------------------------------------------------
def _conv_weights(ly: Layer, rng: np.random.Generator) -> dict:
    shape = (ly.cout, ly.k, ly.k, ly.cin // ly.groups)
    wf = rng.standard_normal(shape)
    scale = np.abs(wf).reshape(ly.cout, -1).max(1) / 127.0          # per output channel
    w = np.round(wf / scale[:, None, None, None]).astype(np.int8)
    pre, _ = qshifts({"C": ly.cin, "groups": ly.groups, "R": ly.k, "S": ly.k})
    return {"w": w, "bias": rng.integers(-4000, 4000, ly.cout).astype(np.int32),
            "mult": rng.integers(1 << 14, 1 << 15, ly.cout).astype(np.int32), "pre": pre, "post": 1}


def pool_constants(p: int) -> tuple[int, int]:
    """(m, post) of the average of p pixels: the largest post <= 7 with m < 2^15."""
    if not 1 <= p <= 255: raise ValueError(f"average pool over {p} pixels: the int16 sum needs 1..255")
    post = max(s for s in range(1, 8) if round(2 ** (15 + s) / p) < 1 << 15) if p > 2 else 1
    return round(2 ** (15 + post) / p), post


def quantize(net: Net, seed: int) -> Net:
    """Deterministic weights, then each layer's ``post`` calibrated on a deterministic image."""
    rng = np.random.default_rng(seed)
    for ly in net.layers:
        if ly.op == "conv": ly.q = _conv_weights(ly, rng)
        elif ly.op == "add": ly.q = {"ma": int(rng.integers(64, 128)), "mb": int(rng.integers(64, 128)), "s": 7}
        else: ly.q = dict(zip(("m", "post"), pool_constants(int(np.prod(net.shape(ly.src[0])[:2])))))
    if net.variant == "uint8":
        net.zero_points = {i: int(rng.integers(100, 156)) for i in range(-1, len(net.layers))}
        for i, ly in enumerate(net.layers):
            if ly.relu: net.zero_points[i] = 0 if ly.op == "conv" else net.zero_points[i]
    x = image(net, seed)
    outs: list[np.ndarray] = []
    for i, ly in enumerate(net.layers):
        if ly.op == "conv":   # post: the output's spread about 30 (the accumulator's, not clipped)
            ly.q["post"] = 1
            z = _conv_z(net, ly, _src(net, outs, x, ly.src[0]), ly.src[0])
            ly.q["post"] = int(min(7, max(1, round(math.log2(max(z.std(), 1.0) / 30.0)))))
        outs.append(_layer(net, i, outs, x))
    return net


def image(net: Net, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    lo, hi = (0, 256) if net.variant == "uint8" else (-128, 128)
    return rng.integers(lo, hi, (net.h, net.w, 3)).astype(np.uint8 if net.variant == "uint8" else np.int8)


# ---- the reference -----------------------------------------------------------------------
def _src(net: Net, outs: list, x: np.ndarray, i: int) -> np.ndarray: return x if i < 0 else outs[i]


def _zp(net: Net, i: int) -> int: return net.zero_points.get(i, 0) if net.variant == "uint8" else 0


def _conv_acc(net: Net, ly: Layer, a: np.ndarray, src: int) -> np.ndarray:
    """int64 accumulators [OH, OW, K]; padding reads the input's zero point (the real 0)."""
    z = _zp(net, src)
    xp = np.pad(a.astype(np.int64) - z, ((ly.pad, ly.pad), (ly.pad, ly.pad), (0, 0)))
    return ref.conv2d(xp[None], ly.q["w"].astype(np.int64), ly.stride, 0, ly.groups, "nhwc")[0]


def _conv_z(net: Net, ly: Layer, a: np.ndarray, src: int) -> np.ndarray:
    q = ly.q
    y = np.clip((_conv_acc(net, ly, a, src) + q["bias"] + (1 << (q["pre"] - 1))) >> q["pre"], -32768, 32767)
    return (2 * y * q["mult"] + (1 << 15)) >> 16


def _layer(net: Net, i: int, outs: list, x: np.ndarray) -> np.ndarray:
    ly, u8 = net.layers[i], net.variant == "uint8"
    lo, hi, zo = (0, 255, _zp(net, i)) if u8 else (-128, 127, 0)
    srcs = [_src(net, outs, x, s).astype(np.int64) - _zp(net, s) for s in ly.src]
    if ly.op == "conv":
        q = ly.q
        acc = _conv_acc(net, ly, _src(net, outs, x, ly.src[0]), ly.src[0])
        out = ref.requantize(acc, q["bias"].astype(np.int64), q["mult"].astype(np.int64), q["pre"], q["post"]) if not u8 else \
            np.clip(((_conv_z(net, ly, _src(net, outs, x, ly.src[0]), ly.src[0]) + (1 << (q["post"] - 1))) >> q["post"]) + zo, lo, hi)
        if ly.relu: out = np.maximum(out, zo)
    elif ly.op == "add":
        q = ly.q
        out = np.clip(((srcs[0] * q["ma"] + srcs[1] * q["mb"] + (1 << (q["s"] - 1))) >> q["s"]) + zo, lo, hi)
    else:
        q = ly.q
        s = srcs[0].reshape(-1, srcs[0].shape[-1]).sum(0)
        z = np.clip((2 * s * q["m"] + (1 << 15)) >> 16, -32768, 32767)
        out = np.clip(((z + (1 << (q["post"] - 1))) >> q["post"]) + zo, lo, hi).reshape(1, 1, -1)
    return out.astype(np.uint8 if u8 else np.int8)


def forward(net: Net, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output (uint8 or int8 [H, W, C]), in order: the last is the logits."""
    if x.shape != (net.h, net.w, 3): raise ValueError(f"image {x.shape}, expected {(net.h, net.w, 3)}")
    outs: list[np.ndarray] = []
    for i in range(len(net.layers)): outs.append(_layer(net, i, outs, x))
    return outs


def lazy(net: Net, x: np.ndarray):
    """The int8 network as a lazy ``Tensor`` graph over the same weights (what ``superopt
    capture`` records: bench/models/dsp_mobilenetv2.py): each conv the library's qconv2d
    (``builders.requantize`` of the int32 conv) and ReLU6 as max(q, 0), the add and the pool in
    the integer definitions above. Its output is ``forward(net, x)[-1]`` bit for bit."""
    from ..ir import dtypes
    from ..ir.tensor import Tensor
    from .builders import requantize
    if net.variant != "int8": raise ValueError("the lazy graph is the int8 variant (symmetric activations)")
    i8, i32 = dtypes.int8, dtypes.int32
    img = Tensor(x[None], dtype=i8, name=f"{net.name}_image")
    outs: list = []
    for ly in net.layers:
        q = ly.q
        a = img if ly.src[0] < 0 else outs[ly.src[0]]
        if ly.op == "conv":
            acc = a.conv2d(Tensor(q["w"], dtype=i8, name=f"{net.name}_{ly.name}_w"), ly.stride, ly.pad, ly.groups, "nhwc")
            y = requantize(acc, Tensor(q["bias"], dtype=i32, name=f"{net.name}_{ly.name}_bias"),
                           Tensor(q["mult"], dtype=i32, name=f"{net.name}_{ly.name}_mult"), q["pre"], q["post"])
            y = y.maximum(0) if ly.relu else y
        elif ly.op == "add":
            b = outs[ly.src[1]]
            y = ((a.cast(i32) * q["ma"] + b.cast(i32) * q["mb"] + (1 << (q["s"] - 1))) >> q["s"]).maximum(-128).minimum(127).cast(i8)
        else:
            z = ((a.cast(i32).sum((1, 2), keepdim=True) * q["m"] * 2 + (1 << 15)) >> 16).maximum(-32768).minimum(32767)
            y = ((z + (1 << (q["post"] - 1))) >> q["post"]).maximum(-128).minimum(127).cast(i8)
        outs.append(y)
    return outs[-1]


NETS = {"mobilenet_v2": mobilenet_v2, "openpilot_stack": openpilot_stack}
