"""Benchmarks; committed results live in ``bench/results/<gpu>/``."""
