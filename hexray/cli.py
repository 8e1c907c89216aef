"""`hexray` command line: parse, then hand off to one function per subcommand.

Each subcommand lives in `hexray/commands/<name>.py` and exposes
`register(subparsers) -> None`, which adds its parser and sets `func(args) -> int`.
Command modules import heavy libraries (torch, ray) lazily inside `func`, so that
`hexray --help` and argument errors stay instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("shard", "train", "export", "sweep", "eval", "report")


class UserError(Exception):
    """An error caused by the user's input: printed as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hexray", description="Self-supervised pretraining with HEX on Ray."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"hexray.commands.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"hexray {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hexray {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
