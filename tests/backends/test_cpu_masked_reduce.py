"""A padded unroll of a convolution's reduce axis under an output loop (found by the random
schedule test): gcc 12's loop vectorizer at -O3 -march=native got it 37% wrong."""
import numpy as np

from superopt import Tensor
from superopt.ir.kernelize import kernelize
from superopt.ir.schedule import Level, Schedule, Split, check
from superopt.search.machine import load
from superopt.verify import verify


def test_padded_unroll_of_a_reduce_axis_inside_an_output_loop(cpu_backend):
    x, w = Tensor.empty(1, 1, 5, 5, name="x"), Tensor.empty(2, 1, 3, 3, name="w")
    (k,) = [s.kernel for s in kernelize(x.conv2d(w).node)]
    splits = [[("loop", 2)], [("loop", 3)], [("upcast", 3)], [("loop", 3)], [("unroll", 2), ("loop", 2)]]
    s = Schedule(splits=tuple(tuple(Split(Level(lv), n) for lv, n in ax) for ax in splits), order=(0, 2, 3, 1, 4))
    assert not check(k, s, load("cpu"))
    v = verify(k, s, cpu_backend, np.random.default_rng(0))
    assert v.ok, v.reason
