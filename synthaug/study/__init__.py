"""The whole study as one job (E1-E5) and its claims report."""
