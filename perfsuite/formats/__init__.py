"""Every file perfsuite reads or writes, one module per format, all through :mod:`perfsuite.formats.io`."""
