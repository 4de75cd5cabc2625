"""One BERT-large encoder layer (post-norm): batch 16 x sequence 512, hidden 1024, 16 heads,
FFN 4096, fp16 (fp32 accumulation). ``python bert_layer.py small`` runs the same structure
at small fp32 shapes (what CI tunes). Capture its kernels with
``superopt capture bench/models/bert_layer.py -o DIR [--no-execute] [-- small]``."""
import sys

import numpy as np

from superopt import Tensor, dtypes

SMALL = "small" in sys.argv[1:]
B, S, H, NH, F = (1, 16, 32, 2, 64) if SMALL else (16, 512, 1024, 16, 4096)
DT = dtypes.float32 if SMALL else dtypes.float16
T, D = B * S, H // NH
rng = np.random.default_rng(0)


def param(*shape):
    return Tensor((rng.standard_normal(shape, dtype=np.float32) * 0.05).astype(DT.np), dtype=DT)


def heads(t):                      # (T, H) -> (B*NH, S, D)
    return t.reshape(B, S, NH, D).permute(0, 2, 1, 3).reshape(B * NH, S, D)


x = param(T, H)
wq, wk, wv, wo, w1, w2 = param(H, H), param(H, H), param(H, H), param(H, H), param(H, F), param(F, H)
q, k, v = heads(x @ wq), heads(x @ wk), heads(x @ wv)
att = ((q @ k.transpose(-1, -2)) * (1.0 / D ** 0.5)).softmax(-1)
ctx = (att @ v).reshape(B, NH, S, D).permute(0, 2, 1, 3).reshape(T, H)
h = (x + ctx @ wo).layernorm()
out = (h + (h @ w1).gelu() @ w2).layernorm()
RESULT = out.numpy()
print("bert layer", RESULT.shape, RESULT.dtype)
