"""The ``stackmff`` command line. Each sub-command lives in its own module exposing ``register(subparsers)``.

Every failure ends the program with one line on stderr (``stackmff: error: ...``) and exit code 2, never a
traceback (``-v`` shows it); SIGTERM cleans up like Ctrl-C (exit 130), a closed pipe is quiet (exit 141).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..errors import StackMFFError

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


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (``stackmff fuse: error: ...; see stackmff fuse --help``), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see {self.prog} --help\n")


def defer_arguments(parser: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]) -> None:
    """Call ``add(parser)`` only when ``parser`` parses or prints help, not when the CLI is built.

    For sub-commands whose options need heavy imports (``train``: torch for its defaults), so that ``stackmff
    --help`` and the other commands do not pay for them.
    """
    done = []

    def fill() -> None:
        if not done:
            done.append(True)
            add(parser)

    for name in ("parse_known_args", "format_help", "format_usage"):
        orig = getattr(parser, name)

        def wrapped(*a, _orig=orig, **k):
            fill()
            return _orig(*a, **k)

        setattr(parser, name, wrapped)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


def _setup_warnings(verbose: int) -> None:
    """Library warnings (numpy RuntimeWarnings, tifffile/PIL messages) become one line of ours per kind of problem;
    the library's own text is shown only with ``-v``. Third-party loggers are silenced below ``-v``."""
    import warnings

    seen: set[str] = set()
    log = logging.getLogger("stackmff")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if verbose:
            log.warning("%s: %s (%s:%d)", category.__name__, text, Path(filename).name, lineno)
            return
        if issubclass(category, DeprecationWarning | FutureWarning | PendingDeprecationWarning):
            return  # about library versions, not about the user's images
        ours = _our_words(category, text)
        if ours not in seen:
            seen.add(ours)
            log.warning("%s (run with -v for details)", ours)

    warnings.showwarning = show
    root = logging.getLogger()
    root.handlers[:] = [logging.StreamHandler(sys.stderr)] if verbose else [logging.NullHandler()]
    root.handlers[0].setFormatter(_OneLineFormatter())
    root.setLevel(logging.WARNING if verbose else logging.CRITICAL + 1)
    if not verbose:  # OpenCV's own [ WARN ] lines; it reads this when it is first imported (the commands import it)
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def _our_words(category: type, text: str) -> str:
    low = text.lower()
    if issubclass(category, RuntimeWarning) and any(
        k in low for k in ("invalid", "divide", "nan", "overflow", "empty")
    ):
        return "a numerical problem (NaN, division by zero, empty region) occurred; check for blank or tiny images"
    return "a library reported a problem while processing the images"


def _error_line(exc: BaseException) -> str:
    """One line (our words) for an exception that is not a :class:`StackMFFError`."""
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        code = exc.errno
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return f"could not write{where}: {exc.strerror}; free disk space or choose another output folder"
        if code in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"permission denied for{where or ' a file'}; fix its permissions or choose another path"
        if code == errno.ENOTDIR:
            return f"{where.strip() or 'a path'} has a parent that is a file, not a folder; choose another path"
        if code == errno.EISDIR:
            return f"{where.strip() or 'a path'} is a folder; give a file name"
        return f"{exc.strerror or type(exc).__name__}{':' + where if where else ''}; check the path and the disk"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {text[:300]}; rerun with -v for the traceback and report it"


def _on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # unwinds through the writers' cleanup (temp files removed) like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 error, 130 interrupted, 141 broken pipe).

    Every failure is one line on stderr without a traceback (``-v`` adds the traceback and the libraries' detail).
    """
    old_term = signal.getsignal(signal.SIGTERM)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # first: a SIGTERM during the (slow) imports is handled too
        signal.signal(signal.SIGTERM, _on_sigterm)
    root = logging.getLogger()
    root_state = root.handlers[:], root.level
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("stackmff: interrupted", file=sys.stderr)
        return 130
    finally:
        root.handlers[:], root.level = root_state  # main() may be called again in one process (tests, flows)
        if in_main_thread:
            signal.signal(signal.SIGTERM, old_term)


_FUSING = ("fuse", "fuse-dataset", "fuse-pairs", "align")  # the commands that make and free large arrays per band


def _run(argv: list[str] | None) -> int:
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.command in _FUSING:
        from .._memory import tune_malloc

        tune_malloc()  # arrays of tens of MB per tile and band are reused, not faulted in again (44M faults on 50 x 3 MP)
    try:
        with warnings.catch_warnings():
            _setup_warnings(args.verbose)
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe fails here, inside the wrapper, not in the interpreter's exit
            return code
    except StackMFFError as exc:
        _report(str(exc).replace("\n", " "), args.verbose)
        return 2
    except BrokenPipeError:  # `stackmff ... --json | head -c5`: the reader left; say nothing
        _silence_stdout()
        return 141
    except MemoryError:
        _report("out of memory; lower --memory-budget or use a smaller --method/tile size", args.verbose)
        return 2
    except Exception as exc:
        _report(_error_line(exc), args.verbose)
        return 2


def _report(line: str, verbose: int) -> None:
    if verbose:
        traceback.print_exc()
    try:
        print(f"stackmff: error: {line}", file=sys.stderr)
    except BrokenPipeError:
        pass


def _silence_stdout() -> None:
    try:  # the interpreter flushes stdout at exit; point it at /dev/null so that flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
