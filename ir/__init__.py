"""superopt.ir: the graph node type, the lazy Tensor, kernels, schedules, lowering."""
from . import context, kernelize  # modules: superopt.ir.kernelize is the module, its function kernelize.kernelize
from . import dtype as dtypes
from .node import Node, Ops
from .kernel import Kernel, Buffer, Axis
from .tensor import Tensor
from .kernelize import Step

__all__ = ["context", "dtypes", "Node", "Ops", "Kernel", "Buffer", "Axis", "Tensor", "kernelize", "Step"]
