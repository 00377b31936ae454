"""The ``stackmff`` command line. Each sub-command lives in its own module exposing ``register(subparsers)``.

Errors in user input end the program with one line on stderr (``stackmff: error: ...``) and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from .._checks import StackMFFError

__all__ = ["main"]

# Sub-command modules, in the order `stackmff --help` lists them.
_COMMAND_MODULES = (
    "stackmff.cli.fuse",
    "stackmff.cli.data",
    "stackmff.cli.train",
    "stackmff.cli.evaluate",
    "stackmff.cli.align",
    "stackmff.cli.export",
)


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage().replace("\n", " ")
        return f"stackmff: {record.levelname.lower()}: {msg}"


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    logger = logging.getLogger("stackmff")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stackmff",
        description="General multi-focus image stack fusion (StackMFF V3) and its research pipeline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stackmff {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 1 unexpected failure, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except StackMFFError as exc:
        print(f"stackmff: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stackmff: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "stackmff: error: out of memory; lower --memory-budget or use a smaller --method/tile size",
            file=sys.stderr,
        )
        return 2
