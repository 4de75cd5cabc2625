"""A ResNet-50 stage-1 basic block: two 3x3 convolutions (batch 32, 64 channels, 56x56,
fp16 with fp32 accumulation), residual add, ReLU. ``python resnet_block.py small`` runs the
same structure at small fp32 shapes (what CI tunes)."""
import sys

import numpy as np

from superopt import Tensor, dtypes

SMALL = "small" in sys.argv[1:]
N, C, HW = (2, 8, 8) if SMALL else (32, 64, 56)
DT = dtypes.float32 if SMALL else dtypes.float16
rng = np.random.default_rng(0)


def param(*shape):
    return Tensor((rng.standard_normal(shape, dtype=np.float32) * 0.05).astype(DT.np), dtype=DT)


x = param(N, C, HW, HW)
w1, w2 = param(C, C, 3, 3), param(C, C, 3, 3)
y = x.conv2d(w1, padding=1).relu().conv2d(w2, padding=1)
RESULT = (y + x).relu().numpy()
print("resnet block", RESULT.shape, RESULT.dtype)
