"""One module per ``perfsuite`` subcommand (see perfsuite.cli)."""
