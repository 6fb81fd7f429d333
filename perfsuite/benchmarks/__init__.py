"""The benchmark tests themselves, shipped in the package so that an installed perfsuite can run a job.

``perfsuite run`` hands this folder to pytest (a checkout's ``tests/benchmarks``, which re-exports these
tests, keeps its node ids); each test asks the plugin for its cells with ``@pytest.mark.perfsuite(...)``.
"""
