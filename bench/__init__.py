"""Benchmarks for shelf event detectors: baselines and the scoring runs that compare them."""
