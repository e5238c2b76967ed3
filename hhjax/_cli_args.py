"""Argument types and the parser class of the `hhjax` command line (no JAX imported here).

Every numeric option is parsed by one of these types, so that a count of 0, a NaN or an
infinite number is refused while parsing (exit 2, one line on stderr naming the option) rather
than during or after the computation.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

__all__ = [
    "Parser",
    "finite_float",
    "positive_float",
    "nonnegative_float",
    "int_at_least",
    "output_folder_problem",
]


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose usage errors are one line: `hhjax fit: error: ...` (exit 2)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def finite_float(text: str) -> float:
    """A finite number (NaN and ±inf refused)."""
    x = _number(text)
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return x


def positive_float(text: str) -> float:
    """A finite number > 0."""
    x = finite_float(text)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return x


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    x = finite_float(text)
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return x


def output_folder_problem(text: str) -> str | None:
    """What is wrong with `--out TEXT` as an output folder (created if missing), or None."""
    out = pathlib.Path(text)
    if out.exists() and not out.is_dir():
        return (
            f"--out {text}: is an existing file, not a folder; name a folder (created if missing)."
        )
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return f"--out {text}: {parent} is a file, so the folder cannot be created there."
    return None


def int_at_least(minimum: int):
    """The argument type of a whole number >= `minimum` (e.g. 1 for a count)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
        return n

    parse.__name__ = f"int_at_least_{minimum}"
    return parse
