"""superopt.kernels."""
