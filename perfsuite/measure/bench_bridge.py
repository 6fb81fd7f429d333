"""The bridge to pytest-benchmark: pytest-benchmark times one target per test, but perfsuite's loop
(:func:`perfsuite.measure.timing.round_robin`) times many together, so the loop measures and :func:`record_rounds` gives each
cell's rounds to pytest-benchmark, whose table, JSON and statistics then show exactly them. No torch.
"""

from __future__ import annotations


def record_rounds(benchmark, samples_ms: list[float]) -> bool:
    """Give pytest-benchmark a cell's rounds (ms) measured by :func:`perfsuite.measure.timing.round_robin`: its statistics, table and JSON
    then hold exactly them. False when pytest-benchmark is disabled (``--benchmark-disable``: nothing recorded)."""
    if benchmark is None or getattr(benchmark, "disabled", False):
        if benchmark is not None:
            benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # marks the fixture as used
        return False
    benchmark.pedantic(lambda: None, rounds=len(samples_ms), iterations=1)
    benchmark.stats.stats.data[:] = [t / 1e3 for t in samples_ms]  # pytest-benchmark keeps seconds
    return True
