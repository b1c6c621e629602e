"""The pytreemod benchmark suite: run it with `python -m benchmarks`."""
