"""superopt.backends."""
