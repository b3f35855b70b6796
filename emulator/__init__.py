"""A faithful emulator of the Rfmcube REST API, for tests, the demo and benchmarks."""
