"""The serving benchmark, from the package (:mod:`perfsuite.benchmarks.test_serving`): kept here so that ``pytest
tests/benchmarks`` runs it with the others."""

from perfsuite.benchmarks.test_serving import test_serving  # noqa: F401
