"""Benchmarks (`make bench`): results go to bench/results/ and are printed as tables."""
