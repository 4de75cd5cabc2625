"""A ResNet-50 stage-1 bottleneck block: 1x1 conv 256 -> 64, ReLU, 3x3 conv 64 -> 64, ReLU,
1x1 conv 64 -> 256, residual add, ReLU (batch 32, 56x56, fp16 with fp32 accumulation); the model
is ``superopt.kernels.models.bottleneck``. ``python bottleneck.py small`` runs it at small fp32 shapes."""
import sys

from superopt.kernels.models import bottleneck

RESULT = bottleneck(small="small" in sys.argv[1:]).out.numpy()
print("bottleneck", RESULT.shape, RESULT.dtype)
