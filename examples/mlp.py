"""A two-layer MLP block written in lazy superopt Tensors: x @ w1 + b1, relu, @ w2 + b2, softmax.

    superopt script examples/mlp.py --backend cpu      # through the kernel cache, timed against numpy

``forward()`` is what ``superopt script`` times again after the first run (warm: the kernels
compiled once); ``reference()`` is the same block in plain numpy, which it times and compares
with. Run as a plain script (``python examples/mlp.py``) it prints a row of the output
from the reference interpreter."""
import numpy as np

from superopt import Tensor

B, D, H, O = 64, 256, 512, 128        # batch, input, hidden, output features
rng = np.random.default_rng(0)
x = rng.standard_normal((B, D)).astype(np.float32)
w1 = (rng.standard_normal((D, H)) / np.sqrt(D)).astype(np.float32)
b1 = (0.1 * rng.standard_normal(H)).astype(np.float32)
w2 = (rng.standard_normal((H, O)) / np.sqrt(H)).astype(np.float32)
b2 = (0.1 * rng.standard_normal(O)).astype(np.float32)


def forward() -> np.ndarray:
    h = (Tensor(x, name="x") @ Tensor(w1, name="w1") + Tensor(b1, name="b1")).relu()
    return (h @ Tensor(w2, name="w2") + Tensor(b2, name="b2")).softmax().numpy()


def reference() -> np.ndarray:
    h = np.maximum(x @ w1 + b1, 0)
    y = h @ w2 + b2
    e = np.exp(y - y.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


if __name__ == "__main__":
    print("mlp row 0:", np.round(forward()[0, :4], 5))
