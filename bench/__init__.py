"""The streaming benchmark: the real stack against a direct relay (README, "Benchmarks")."""
