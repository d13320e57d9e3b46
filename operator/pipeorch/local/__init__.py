"""Running the system as processes on one machine (tests, benchmarks, local mode)."""
