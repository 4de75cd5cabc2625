"""superopt: a constraint-solver-driven kernel superoptimizer."""
from superopt.ir import Tensor, Kernel, dtypes

__version__ = "0.1.0"

# ``with superopt.capture(dir) as cap:`` records realized kernels (the function shadows the
# submodule name as an attribute; ``from superopt.capture import ...`` still reaches the module)
from superopt.capture import capture  # noqa: E402

__all__ = ["Tensor", "Kernel", "dtypes", "capture", "__version__"]
