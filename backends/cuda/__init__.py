"""``cuda``: Programs rendered to CUDA C++, compiled with NVRTC and launched through the
driver API (NVIDIA's cuda-python bindings) in a worker process."""
from .runtime import CudaError, NoDevice


def backend(machine=None):
    """The CUDA backend (raises ``NoDevice`` with a clear message where there is no GPU)."""
    from .cuda_backend import CudaBackend
    return CudaBackend(machine)


__all__ = ["backend", "CudaError", "NoDevice"]
