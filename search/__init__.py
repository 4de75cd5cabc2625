"""superopt.search."""
