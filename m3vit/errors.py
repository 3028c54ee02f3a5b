"""The toolkit's own error types and how its command-line programs report them.

A :class:`ToolkitError` (or an ``OSError``) is a problem the user can fix: a bad config, flag, input file or
board. The command-line programs print it as one line ``m3vit: error: ...`` naming the file or flag, exit
with status 2, and show the traceback only with ``--debug``. Any other exception (``TypeError``,
``KeyError``, ...) is a bug in the toolkit and surfaces as a traceback. Ctrl-C exits with status 130.

This module imports only :mod:`m3vit` itself, so every layer may raise its errors.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from m3vit import BUILD_ENV, BUILD_ROOT


class ToolkitError(Exception):
    """Base of the toolkit's user-facing errors; ``str(err)`` is one line naming what was wrong."""


class UserError(ToolkitError, ValueError):
    """A bad flag or input value that the user can fix (e.g. ``--count must be at least 1, got 0``)."""


DEBUG_FLAG = "--debug"
INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line; an OSError names its file(s)."""
    if isinstance(err, OSError) and err.filename is not None:
        files = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 is not None else "")
        where = ""
        if os.environ.get(BUILD_ENV) and isinstance(err.filename, (str, os.PathLike)) \
                and Path(err.filename).is_relative_to(BUILD_ROOT):
            where = f" (under {BUILD_ENV}={os.environ[BUILD_ENV]})"
        return f"{files}: {err.strerror or type(err).__name__}{where}"
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def run_main(command: Callable[[list[str]], int | None], argv: Sequence[str] | None, prog: str = "m3vit") -> int:
    """Run ``command(argv)`` and return its exit status; a user error prints one line and returns 2,
    Ctrl-C prints one line and returns 130. ``--debug`` anywhere in ``argv`` (before ``--``) is removed and
    lets those exceptions propagate with their traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)
    debug = DEBUG_FLAG in args[:end]
    args = [a for a in args[:end] if a != DEBUG_FLAG] + args[end:]
    try:
        return int(command(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
    except (ToolkitError, OSError) as err:
        if debug:
            raise
        print(f"{prog}: error: {one_line(err)} (--debug shows the traceback)", file=sys.stderr)
        return 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with a usage error printed as one line (naming the flag) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------------ argparse types
def _number(kind: type, text: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in [low, high] (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        value = int(_number(int, text))
        if value < low or (high is not None and value > high):
            allowed = f"at least {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(low: float, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in [low, high] ((low, high] when ``low_open``)."""

    def parse(text: str) -> float:
        value = float(_number(float, text))
        if value < low or (low_open and value == low) or (high is not None and value > high):
            left = "(" if low_open else "["
            allowed = f"{'>' if low_open else '≥'} {low:g}" if high is None else f"in {left}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be a finite number {allowed}, got {text}")
        return value

    parse.__name__ = "number"
    return parse
