"""superopt: a constraint-solver-driven kernel superoptimizer."""
from superopt.ir import Tensor, Kernel, dtypes

__version__ = "0.1.0"
__all__ = ["Tensor", "Kernel", "dtypes", "__version__"]
