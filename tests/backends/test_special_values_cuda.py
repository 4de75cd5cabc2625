"""Special values on the GPU (issue 22, item 4): the CUDA renderer's exp2 and float max follow
numpy for ±inf, NaN, -0.0 and denormals, and a causal-masked softmax (-inf above the diagonal,
a fully masked row, NaN and +inf rows) equals numpy. Skips without a CUDA device."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import Tensor
from superopt.backends.base import Compiled
from superopt.ir.lower import lower
from superopt.search.hand import hand_schedule
from superopt.verify import poison
from test_special_values import _kernel, _np_softmax, _same, _special_rows, M, N


def _gpu_run(be, k, x):
    c = be.compile(lower(k, hand_schedule(k, be.machine), be.machine))
    assert isinstance(c, Compiled), c
    return be.run(c, [x.reshape(-1)], poison(k.output))


@pytest.mark.parametrize("op", ["softmax", "exp2", "max"])
def test_special_values_follow_numpy_on_cuda(cuda, op):
    x, t = _special_rows(), Tensor.empty(M, N, name="x")
    with np.errstate(all="ignore"):
        k, want, rtol, atol = {"softmax": (lambda: (_kernel(t.softmax(1)), _np_softmax(x), 2e-4, 2e-6)),
                               "exp2": (lambda: (_kernel(t.exp2()), np.exp2(x).astype(np.float64), 2e-6, 1e-44)),
                               "max": (lambda: (_kernel(t.max(1)), x.astype(np.float64).max(1), 0, 0))}[op]()
    _same(_gpu_run(cuda, k, x), want, rtol, atol)
