"""superopt.ir: the graph node type, the lazy Tensor, kernels, schedules, lowering."""
from . import dtype as dtypes
from .node import Node, Ops
from .kernel import Kernel, Buffer, Axis
from .tensor import Tensor
from .kernelize import kernelize, Step

__all__ = ["dtypes", "Node", "Ops", "Kernel", "Buffer", "Axis", "Tensor", "kernelize", "Step"]
