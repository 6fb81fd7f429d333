"""One module per workload; each turns a :class:`~perfsuite.cells.grid.Cell` into timed work and metrics."""
