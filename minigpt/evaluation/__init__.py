"""Benchmark metrics for eval.py (see metrics.py)."""
