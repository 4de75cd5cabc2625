"""One BERT-large encoder layer (post-norm): batch 16 x sequence 512, hidden 1024, 16 heads,
FFN 4096, fp16 (fp32 accumulation); the model itself is ``superopt.kernels.models.bert_layer``.
``python bert_layer.py small`` runs the same structure at small fp32 shapes (what CI tunes).
Capture its kernels with ``superopt capture bench/models/bert_layer.py -o DIR [--no-execute] [-- small]``."""
import sys

from superopt.kernels.models import bert_layer

RESULT = bert_layer(small="small" in sys.argv[1:]).out.numpy()
print("bert layer", RESULT.shape, RESULT.dtype)
