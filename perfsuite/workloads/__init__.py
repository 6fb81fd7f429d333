"""One module per workload; each turns a :class:`~perfsuite.grid.Cell` into timed work and metrics."""
