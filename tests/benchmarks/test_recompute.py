"""The recompute benchmark, from the package (:mod:`perfsuite.benchmarks.test_recompute`): kept here so that ``pytest
tests/benchmarks`` and the node ids of a checkout's runs stay as they were."""

from perfsuite.benchmarks.test_recompute import test_recompute  # noqa: F401
