"""The cpu backend's build folder is a constructor argument (no environment rewriting)."""
import numpy as np

from superopt.backends.base import Failure, get
from superopt.ir.lower import lower
from superopt.kernels import Workload
from superopt.search.hand import hand_schedule


def test_build_dir_receives_the_compiled_kernel(tmp_path):
    w = Workload.make("matmul", name="mm", M=16, N=16, K=16)
    be = get("cpu", build_dir=tmp_path / "b")
    try:
        c = be.compile(lower(w.kernel, hand_schedule(w.kernel, be.machine), be.machine))
        assert list((tmp_path / "b").glob("k_*.so"))                      # built there, nowhere else needed
        a, b = (np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32) for _ in range(2))
        out = np.empty((16, 16), np.float32)
        assert not isinstance(be.run(c, [a, b], out), Failure)
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    finally:
        be.close()
