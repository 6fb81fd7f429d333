"""``perfsuite`` command line: a thin argparse layer over each command's pure ``run(args)``.

Commands live in :mod:`perfsuite.commands`, one module each, discovered here:
each module has ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. A command line that
names its command imports that command's module only: ``perfsuite history add`` must not pay for the imports
of ``perfsuite run`` (torch among them); ``perfsuite --help`` imports them all.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sqlite3
import sys

from perfsuite.errors import EXIT_USAGE, PerfsuiteError
from perfsuite.table import printable


def command_names() -> list[str]:
    """The commands' module names (without importing them)."""
    import perfsuite.commands as commands

    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of command ``only`` alone (the others' modules are not imported)."""
    parser = argparse.ArgumentParser(prog="perfsuite", description="Performance regression suite for adapter layers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_names():
        if only is not None and name != only:
            continue
        module = importlib.import_module(f"perfsuite.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def os_error_line(e: OSError) -> str:
    """``PATH: No space left on device`` (or both paths of a rename), from an OSError."""
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{' -> '.join(names)}: {e.strerror or e}" if names else str(e.strerror or e)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    named = argv[0] if argv and argv[0] in command_names() else None
    args = build_parser(only=named).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except PerfsuiteError as e:
        print(f"perfsuite {args.command}: error: {printable(e)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # the disk is full, a path is a folder or not ours to write: one line, not a traceback
        print(f"perfsuite {args.command}: error: {printable(os_error_line(e))}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.Error as e:
        print(f"perfsuite {args.command}: error: history store: {printable(e)}", file=sys.stderr)
        return EXIT_USAGE
    except (RecursionError, MemoryError) as e:
        print(f"perfsuite {args.command}: error: the input is too large or nested too deeply "
              f"({type(e).__name__})", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"perfsuite {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
