"""fnnet's benchmarks: `python -m benchmarks.run [--quick]`."""
