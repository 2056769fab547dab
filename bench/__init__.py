"""Benchmarks: each writes JSON to bench/results/ and prints a one-line summary (``make bench``)."""
