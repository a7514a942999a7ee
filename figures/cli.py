"""Command-line helpers shared by every entry point (docs/formats.md: bad input exits with
status 2 and one clear line, before anything is written)."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from pathlib import Path

# A value that starts with '-' but is a number or a comma-separated list of numbers.
_NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


class CliError(ValueError):
    """Bad command-line input or output location: one line on stderr, exit status 2."""


class DefaultsFormatter(argparse.HelpFormatter):
    """Append "(default: X)" to a flag's help unless the help already names its default or
    there is none to name (None, False, a suppressed default)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or any(default is x for x in (None, False, argparse.SUPPRESS))
                or (isinstance(default, (list, tuple)) and not default)
                or action.nargs == 0 or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit status 2 (no usage dump).

    Values that start with '-' and look like numbers (``--values -0.1,0.2``, ``--seed -1``)
    are taken as the option's value, so that they reach validation instead of argparse's
    "expected one argument"."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def fail(self, message) -> int:
        """Print ``message`` as the one error line and return exit status 2 (no exit)."""
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        return 2

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        joined, i = [], 0
        while i < len(args):
            tok = args[i]
            action = self._option_string_actions.get(tok)
            if (action is not None and action.nargs is None and i + 1 < len(args)
                    and _NEGATIVE_VALUE.match(args[i + 1])):
                joined.append(f"{tok}={args[i + 1]}")
                i += 2
                continue
            joined.append(tok)
            i += 1
        return super().parse_known_args(joined, namespace)


def _number(raw: str, kind, what: str):
    try:
        value = kind(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {raw!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {raw!r} (not finite)")
    return value


def finite_float(raw: str) -> float:
    """argparse type: any finite float."""
    return _number(raw, float, "a finite number")


def positive_float(raw: str) -> float:
    """argparse type: a finite float > 0."""
    value = _number(raw, float, "a finite positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {raw!r}")
    return value


def nonneg_float(raw: str) -> float:
    """argparse type: a finite float >= 0."""
    value = _number(raw, float, "a finite number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {raw!r}")
    return value


def int_at_least(minimum: int):
    """argparse type: an integer >= minimum."""
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}")

    def parse(raw: str) -> int:
        value = _number(raw, int, what)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {raw!r}")
        return value

    parse.__name__ = f"int>={minimum}"  # argparse names the type in "invalid ... value"
    return parse


nonneg_int = int_at_least(0)
positive_int = int_at_least(1)


def check_out_dir(path, flag: str = "--out") -> Path:
    """The output directory ``path`` if it is or can become a writable directory.

    Checks without leaving anything behind: an existing path must be a directory; otherwise
    its nearest existing ancestor must be a directory. Writability is probed by creating and
    removing a temporary file there (os.access is not enough: it says yes to root on a
    read-only mount)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CliError(f"{flag} {path} exists and is not a directory")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise CliError(f"{flag} {path}: {probe} is not a directory")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".write-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise CliError(f"{flag} {path}: cannot write in {probe} ({err.strerror or err})") from None
    return path


def machine_memory_bytes() -> int:
    """Physical memory of this machine (bytes); a large number where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 50


def check_memory(estimate: float, what: str) -> None:
    """CliError when ``estimate`` bytes exceed this machine's physical memory."""
    have = machine_memory_bytes()
    if estimate > have:
        raise CliError(f"{what} needs an estimated {estimate / 2**30:.3g} GiB of memory, "
                       f"more than this machine's {have / 2**30:.3g} GiB; choose smaller sizes")
