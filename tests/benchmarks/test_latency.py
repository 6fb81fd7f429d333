"""The latency benchmark, from the package (:mod:`perfsuite.benchmarks.test_latency`): kept here so that ``pytest
tests/benchmarks`` and the node ids of a checkout's runs stay as they were."""

from perfsuite.benchmarks.test_latency import test_latency  # noqa: F401
