"""A ResNet-50 stage-1 basic block: two 3x3 convolutions (batch 32, 64 channels, 56x56, fp16
with fp32 accumulation), residual add, ReLU; the model is ``superopt.kernels.models.resnet_block``.
``python resnet_block.py small`` runs the same structure at small fp32 shapes (what CI tunes)."""
import sys

from superopt.kernels.models import resnet_block

RESULT = resnet_block(small="small" in sys.argv[1:]).out.numpy()
print("resnet block", RESULT.shape, RESULT.dtype)
