"""Benchmarks that run sloeval for real on loopback (``python -m bench.<name>``)."""
