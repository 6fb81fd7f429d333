"""The one exception type for bad input: the CLI prints it as a single line, never a traceback."""


class PerfsuiteError(Exception):
    pass
