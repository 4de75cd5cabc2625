"""Outside baselines: numpy computes the same values as the kernel's reference; unsupported kernels say so."""
import numpy as np
import pytest

from superopt.baseline import NO_BASELINE, Unsupported, numpy_baseline, numpy_program, outside_baseline, ratio_phrase
from superopt.ir.interpret import run_kernel
from superopt.kernels.registry import Workload


@pytest.mark.parametrize("kind,kw", [("matmul", dict(M=64, N=48, K=32)), ("bmm", dict(B=2, M=8, N=8, K=16, b_layout="nk")),
                                     ("conv2d", dict(N=2, C=4, H=8, W=8, K=4, pad=0)), ("fma", dict(n=1000)),
                                     ("transpose", dict(M=3, N=5)), ("rowsum", dict(M=8, N=32))])
def test_numpy_program_matches_reference(kind, kw):
    k = Workload.make(kind, **kw).kernels[0]
    run, ins, out = numpy_program(k)
    run()
    ref = run_kernel(k, [a.astype(b.dtype.np) for a, b in zip(ins, k.inputs)]).reshape(-1)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    b = numpy_baseline(k, runs=3)
    assert b.time_s > 0 and b.reason is None and "float32" in b.how


def test_no_baseline_is_said():
    k = Workload.make("softmax", M=4, N=32).kernels[-1]
    with pytest.raises(Unsupported):
        numpy_program(k)
    b = outside_baseline(k, "cpu")
    assert b.time_s is None and b.reason.startswith(NO_BASELINE)
    assert outside_baseline(Workload.make("fma", n=8).kernels[0], "hexagon").reason.startswith(NO_BASELINE)


def test_ratio_phrase_names_the_faster_side():
    assert ratio_phrase(1.8, 1.0, "numpy") == "1.80x slower than numpy"
    assert ratio_phrase(1.0, 1.23, "torch") == "1.23x faster than torch"
    assert ratio_phrase(1.0, 20.0, "numpy") == "20.0x faster than numpy"
    with pytest.raises(ValueError):
        ratio_phrase(0.0, 1.0, "numpy")
