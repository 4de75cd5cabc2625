"""End-to-end models for fusion benchmarks: each is a lazy ``Tensor`` program with its
parameters, plus the same forward pass written in numpy (``kernels/reference.py``, float64:
the reference) and in PyTorch (eager, the vendor baseline) over the same arrays.

- ``bert_layer``: one BERT-large encoder layer (post-norm): batch 16 x sequence 512,
  hidden 1024, 16 heads, FFN 4096, fp16 (fp32 accumulation); small: 1 x 16, hidden 32,
  2 heads, FFN 64, fp32.
- ``resnet_block``: a ResNet stage-1 basic block: two 3x3 convolutions (batch 32,
  64 channels, 56x56, fp16), residual add, ReLU; small: 2 x 8 x 8 x 8, fp32.
- ``bottleneck``: a ResNet-50 stage-1 bottleneck block: 1x1 conv 256 -> 64, ReLU, 3x3 conv
  64 -> 64, ReLU, 1x1 conv 64 -> 256, residual add, ReLU (batch 32, 56x56, fp16); small:
  2 x 16 x 6 x 6 (4 inner channels), fp32.
- ``embed``: BERT's embedding input: token lookup in a 30522 x 1024 table for 8192
  tokens, dropout (index-hash mask), layernorm; small: 64 tokens, vocabulary 100, 32 wide.
The scripts in ``bench/models`` run them (``superopt capture`` / ``superopt plan`` take
those scripts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from superopt.ir import dtypes
from superopt.ir.tensor import Tensor

from . import reference as ref


@dataclass
class Model:
    name: str
    out: Tensor                       # the lazy output
    arrays: dict[str, np.ndarray]     # every input by buffer name ("<model>_<param>"; storage arrays)
    torch_forward: Callable           # (torch, {param: device tensor}) -> output tensor
    numpy_forward: Callable           # ({param: float64 array}) -> the reference output

    def reference(self) -> np.ndarray:
        """The numpy (float64) forward pass over this model's arrays."""
        return self.numpy_forward({k: a.astype(np.float64 if a.dtype.kind == "f" else np.int64)
                                   for k, a in self.params().items()})

    def params(self) -> dict[str, np.ndarray]:
        """The arrays by parameter name (buffer names without the model's prefix)."""
        return {k[len(self.name) + 1:]: a for k, a in self.arrays.items()}

    def torch_inputs(self, torch) -> dict:
        """The arrays as CUDA tensors, by parameter name."""
        return {k: torch.from_numpy(a).cuda() for k, a in self.params().items()}


class _Params:
    """Random parameters as named input Tensors (names prefixed by the model's)."""
    def __init__(self, model: str, dtype, seed: int = 0):
        self.model, self.dtype, self.rng, self.arrays = model, dtype, np.random.default_rng(seed), {}

    def __call__(self, name: str, *shape, scale: float = 0.05) -> Tensor:
        return self.put(name, (self.rng.standard_normal(shape, dtype=np.float32) * scale).astype(self.dtype.np), self.dtype)

    def put(self, name: str, a: np.ndarray, dtype) -> Tensor:
        self.arrays[f"{self.model}_{name}"] = a
        return Tensor(a, dtype=dtype, name=f"{self.model}_{name}")


def bert_layer(small: bool = False) -> Model:
    B, S, H, NH, F = (1, 16, 32, 2, 64) if small else (16, 512, 1024, 16, 4096)
    T, D = B * S, H // NH
    p = _Params("bert_layer", dtypes.float32 if small else dtypes.float16)
    x = p("x", T, H, scale=1.0)
    wq, wk, wv, wo, w1, w2 = (p(n, *s) for n, s in (("wq", (H, H)), ("wk", (H, H)), ("wv", (H, H)), ("wo", (H, H)),
                                                      ("w1", (H, F)), ("w2", (F, H))))

    def heads(t):                      # (T, H) -> (B*NH, S, D)
        return t.reshape(B, S, NH, D).permute(0, 2, 1, 3).reshape(B * NH, S, D)

    q, k, v = heads(x @ wq), heads(x @ wk), heads(x @ wv)
    att = ((q @ k.transpose(-1, -2)) * (1.0 / D ** 0.5)).softmax(-1)
    ctx = (att @ v).reshape(B, NH, S, D).permute(0, 2, 1, 3).reshape(T, H)
    h = (x + ctx @ wo).layernorm()
    out = (h + (h @ w1).gelu() @ w2).layernorm()

    def torch_forward(torch, t):
        F_ = torch.nn.functional

        def th(a): return a.reshape(B, S, NH, D).permute(0, 2, 1, 3).reshape(B * NH, S, D)
        q, k, v = th(t["x"] @ t["wq"]), th(t["x"] @ t["wk"]), th(t["x"] @ t["wv"])
        a = torch.softmax((q @ k.transpose(-1, -2)) * (1.0 / D ** 0.5), dim=-1)
        c = (a @ v).reshape(B, NH, S, D).permute(0, 2, 1, 3).reshape(T, H)
        h = F_.layer_norm(t["x"] + c @ t["wo"], (H,), eps=1e-5)
        return F_.layer_norm(h + F_.gelu(h @ t["w1"], approximate="tanh") @ t["w2"], (H,), eps=1e-5)

    def numpy_forward(t):
        def th(a): return a.reshape(B, S, NH, D).transpose(0, 2, 1, 3).reshape(B * NH, S, D)
        q, k, v = th(t["x"] @ t["wq"]), th(t["x"] @ t["wk"]), th(t["x"] @ t["wv"])
        c = (ref.softmax((q @ k.transpose(0, 2, 1)) / D ** 0.5) @ v).reshape(B, NH, S, D).transpose(0, 2, 1, 3).reshape(T, H)
        h = ref.layernorm(t["x"] + c @ t["wo"], 1.0, 0.0, 1e-5)
        u = h @ t["w1"]
        gelu = 0.5 * u * (1 + np.tanh(0.7978845608028654 * (u + 0.044715 * u ** 3)))
        return ref.layernorm(h + gelu @ t["w2"], 1.0, 0.0, 1e-5)
    return Model("bert_layer", out, p.arrays, torch_forward, numpy_forward)


def resnet_block(small: bool = False) -> Model:
    N, C, HW = (2, 8, 8) if small else (32, 64, 56)
    p = _Params("resnet_block", dtypes.float32 if small else dtypes.float16)
    x = p("x", N, C, HW, HW, scale=1.0)
    w1, w2 = p("w1", C, C, 3, 3), p("w2", C, C, 3, 3)
    out = (x.conv2d(w1, padding=1).relu().conv2d(w2, padding=1) + x).relu()

    def torch_forward(torch, t):
        F_ = torch.nn.functional
        y = F_.conv2d(F_.relu(F_.conv2d(t["x"], t["w1"], padding=1)), t["w2"], padding=1)
        return F_.relu(y + t["x"])

    def numpy_forward(t):
        y = ref.conv2d(np.maximum(ref.conv2d(t["x"], t["w1"], pad=1), 0), t["w2"], pad=1)
        return np.maximum(y + t["x"], 0)
    return Model("resnet_block", out, p.arrays, torch_forward, numpy_forward)


def bottleneck(small: bool = False) -> Model:
    N, C, M, HW = (2, 16, 4, 6) if small else (32, 256, 64, 56)
    p = _Params("bottleneck", dtypes.float32 if small else dtypes.float16)
    x = p("x", N, C, HW, HW, scale=1.0)
    w1, w2, w3 = p("w1", M, C, 1, 1), p("w2", M, M, 3, 3), p("w3", C, M, 1, 1)
    y = x.conv2d(w1).relu().conv2d(w2, padding=1).relu().conv2d(w3)
    out = (y + x).relu()

    def torch_forward(torch, t):
        F_ = torch.nn.functional
        y = F_.conv2d(F_.relu(F_.conv2d(F_.relu(F_.conv2d(t["x"], t["w1"])), t["w2"], padding=1)), t["w3"])
        return F_.relu(y + t["x"])

    def numpy_forward(t):
        y = np.maximum(ref.conv2d(t["x"], t["w1"]), 0)
        y = ref.conv2d(np.maximum(ref.conv2d(y, t["w2"], pad=1), 0), t["w3"])
        return np.maximum(y + t["x"], 0)
    return Model("bottleneck", out, p.arrays, torch_forward, numpy_forward)


def embed(small: bool = False, drop: float = 0.1, seed: int = 0) -> Model:
    T, V, H = (64, 100, 32) if small else (8192, 30522, 1024)
    p = _Params("embed", dtypes.float32)
    table = p("table", V, H, scale=1.0)
    ids = p.put("ids", p.rng.integers(0, V, T).astype(np.int32), dtypes.int32)
    out = table.embedding(ids).dropout(drop, seed).layernorm()

    def torch_forward(torch, t):     # torch draws its own dropout mask: the same work
        F_ = torch.nn.functional
        return F_.layer_norm(F_.dropout(F_.embedding(t["ids"].long(), t["table"]), drop, training=True), (H,), eps=1e-5)

    def numpy_forward(t):
        return ref.layernorm(ref.embedding_dropout(t["ids"], t["table"], drop, seed), 1.0, 0.0, 1e-5)
    return Model("embed", out, p.arrays, torch_forward, numpy_forward)


MODELS = {"bert_layer": bert_layer, "resnet_block": resnet_block, "bottleneck": bottleneck, "embed": embed}
