"""`hexray` command line: parse, then hand off to one function per subcommand.

Each subcommand lives in `hexray/commands/<name>.py` and exposes
`register(subparsers) -> None`, which adds its parser and sets `func(args) -> int`.
Command modules import heavy libraries (torch, ray) lazily inside `func`, so that
`hexray --help` and argument errors stay instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from hexray.errors import UserError

COMMAND_MODULES = ("shard", "train", "export", "sweep", "eval", "report")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written (they hold examples) and every option's default after its help text."""


def build_parser() -> argparse.ArgumentParser:
    from hexray import __version__

    parser = argparse.ArgumentParser(
        prog="hexray", description="Self-supervised pretraining with HEX on Ray.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"hexray {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"hexray.commands.{name}")
        module.register(sub)
    for command in sub.choices.values():
        command.formatter_class = HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:  # hexray's own: bad input, bad data, a run its config can fix; a bug keeps its traceback
        print(f"hexray {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk, a permission, object storage: one line naming the path, no traceback
        if os.environ.get("HEXRAY_DEBUG"):
            raise
        print(f"hexray {args.command}: error: {_os_message(err)}", file=sys.stderr)
        return 2 if isinstance(err, FileNotFoundError) else 1
    except KeyboardInterrupt:
        print(f"hexray {args.command}: interrupted", file=sys.stderr)
        return 130


def _os_message(err: OSError) -> str:
    """'No space left on device: /data/out' — the reason, then the path(s) it concerns (hexray's own messages,
    which carry no errno, as they are)."""
    paths = [str(p) for p in (err.filename, err.filename2) if p]
    if err.strerror and paths:
        return f"{err.strerror}: {' -> '.join(paths)}"
    return err.strerror or str(err)


if __name__ == "__main__":
    sys.exit(main())
