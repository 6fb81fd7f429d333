"""``perfsuite`` command line: a thin argparse layer over each command's pure ``run(args)``.

Commands live in :mod:`perfsuite.commands`, one module each, discovered here:
each module has ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sqlite3
import sys

from perfsuite.errors import PerfsuiteError


def build_parser() -> argparse.ArgumentParser:
    import perfsuite.commands as commands

    parser = argparse.ArgumentParser(prog="perfsuite", description="Performance regression suite for adapter layers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"perfsuite.commands.{info.name}")
        name = getattr(module, "NAME", info.name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


EXIT_USAGE = 2  # bad input or a fault of the machine (disk full, no permission): never 1, which means a regression


def os_error_line(e: OSError) -> str:
    """``PATH: No space left on device`` (or both paths of a rename), from an OSError."""
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{' -> '.join(names)}: {e.strerror or e}" if names else str(e.strerror or e)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except PerfsuiteError as e:
        print(f"perfsuite {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # the disk is full, a path is a folder or not ours to write: one line, not a traceback
        print(f"perfsuite {args.command}: error: {os_error_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.Error as e:
        print(f"perfsuite {args.command}: error: history store: {e}", file=sys.stderr)
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
