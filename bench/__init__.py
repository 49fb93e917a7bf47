"""Benchmarks: each script prints its figures; results are in docs/benchmarks.md."""
