"""A kernel whose output is a 0-d scalar (a full sum) survives capture, the loader and tune-cache."""
import numpy as np

import superopt
from superopt.cache import Cache
from superopt.cli import main
from superopt.io import load_kernel
from superopt.ir.tensor import Tensor


def test_captured_full_sum_loads_and_tunes(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(tmp_path / "user-cache"))
    x = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
    with superopt.capture(tmp_path / "k"):
        got = Tensor(x).sum().numpy()
    np.testing.assert_allclose(got, x.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)
    (f,) = [p for p in (tmp_path / "k").glob("*.json") if p.name != "manifest.json"]
    k = load_kernel(f)
    assert k.output.shape == () and k.output.size == 1
    assert main(["tune-cache", str(tmp_path / "k"), "--cache", str(tmp_path / "c.sqlite"), "--method", "hand",
                 "--budget-per-kernel", "1", "--no-progress"]) == 0
    with Cache(tmp_path / "c.sqlite") as c:
        (e,) = c.entries()
    assert e.verified and e.kernel_key == k.key
