"""Fixtures shared by the backend tests."""
import pytest


@pytest.fixture(scope="module")
def cuda():
    """The CUDA backend; a test that takes it skips where no CUDA device is present."""
    from superopt.backends.base import get
    from superopt.backends.cuda.cuda_backend import probe
    ok, why = probe()
    if not ok: pytest.skip(f"no CUDA device: {why}")
    be = get("cuda")
    yield be
    be.close()
