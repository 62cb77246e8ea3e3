"""Reproducible benchmarks of the agent against bare dockerd (``python -m bench.run``).

Owns: the measurements, the table in bench/RESULTS.md and the plot. Does not
own the agent or the test harness it reuses (tests/integration/sandbox.py).
"""
