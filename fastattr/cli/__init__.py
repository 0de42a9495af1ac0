"""Command line: `fastattr explain` (maps for a few images), `fastattr run` (dataset-scale runner),
`fastattr eval` (metrics tables). One module per command over the shared option definitions of
options.py; every value is checked when the command line is parsed, every model by the one
preflight (fastattr.runner.preflight.load_checked) before anything is written. With no arguments
everything uses the bundled EfficientNet-Lite0 and the bundled photos."""
from __future__ import annotations

import argparse
import os
import sys

from fastattr.cli import eval as eval_command
from fastattr.cli import explain, run
from fastattr.cli.explain import output_names
from fastattr.cli.options import Parser
from fastattr.errors import UserError

__all__ = ["main", "build_parser", "output_names"]
COMMANDS = (explain, eval_command, run)


def build_parser() -> argparse.ArgumentParser:
    """The `fastattr` parser with one subparser per command module."""
    parser = Parser(prog="fastattr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `fastattr` command. A UserError (bad option, unreadable file, busy folder) prints one
    line and returns 2, an output write error (WriteError: disk full, read-only, no such folder)
    one line and 1 (FASTATTR_DEBUG=1: the traceback too); any other exception is a bug and keeps
    its traceback. Errors found while parsing exit with code 2 from argparse."""
    from fastattr.runner.shards import WriteError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, WriteError) as exc:
        if os.environ.get("FASTATTR_DEBUG"):
            raise
        print(f"fastattr {args.command}: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, WriteError) else 2
    except KeyboardInterrupt:
        print(f"fastattr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
