"""The subspace benchmark, from the package (:mod:`perfsuite.benchmarks.test_subspace`): kept here so that ``pytest
tests/benchmarks`` and the node ids of a checkout's runs stay as they were."""

from perfsuite.benchmarks.test_subspace import test_subspace  # noqa: F401
