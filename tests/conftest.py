"""Keep every test's kernel cache and calibration files out of the user's cache dir."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SUPEROPT_CACHE_DIR", str(tmp_path_factory.mktemp("superopt-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def cpu_backend():
    """The CPU backend (this machine's description, default timeouts), one per test module."""
    from superopt.backends.cpu import CPUBackend
    be = CPUBackend()
    yield be
    be.close()
