"""How perfsuite fails: the one exception type for bad input (the CLI prints it as a single line, never a traceback)
and the exit codes every entry point shares — the job, the CLI, the API's results and the pytest plugin."""

EXIT_OK = 0
EXIT_REGRESSION = 1  # a confirmed regression, and nothing else
EXIT_USAGE = 2  # bad input or a fault of the machine (disk full, no permission): never 1
EXIT_INTERRUPTED = 130  # Ctrl-C: what was measured is kept
# pytest's exit status when a journal line could not be written (disk full): the session stops at once, since every
# later cell would be lost too. 74 is EX_IOERR of sysexits.h, far from pytest's own codes.
EXIT_JOURNAL_WRITE_FAILED = 74


class PerfsuiteError(Exception):
    pass
