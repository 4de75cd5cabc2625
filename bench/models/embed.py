"""BERT's embedding input: token lookup in a 30522 x 1024 table for 8192 tokens, dropout
(an index-hash mask), layernorm: one kernel; the model is ``superopt.kernels.models.embed``.
``python embed.py small`` runs it at small shapes."""
import sys

from superopt.kernels.models import embed

RESULT = embed(small="small" in sys.argv[1:]).out.numpy()
print("embed", RESULT.shape, RESULT.dtype)
