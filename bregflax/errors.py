"""How bregflax reports a failure: an exception in one line, and a command that stops.

Every command fails the same way: ``fail(message)`` prints ``error: <message>`` on stderr
and exits with status 2 (argparse's status for bad usage), so scripts can tell a
refused input from a crash.
"""

from __future__ import annotations

import sys
from typing import NoReturn

LIMIT = 160  # characters of an exception's text kept in one line


class ConfigError(ValueError):
    """A config file, parameter string or override that cannot be used; the message says why
    (``bregflax.configs.ConfigError``)."""


def one_line(error: BaseException) -> str:
    """The error's type and the first line of its text, cut at ``LIMIT`` characters
    (TensorStore's pointer to its "full details" dropped)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    first = (lines[0] if lines else "").split(" See full TensorStore details")[0].strip()
    if not first:
        return type(error).__name__
    return f"{type(error).__name__}: {first[:LIMIT]}{'...' if len(first) > LIMIT else ''}"


def fail(message: str, status: int = 2) -> NoReturn:
    """Stops a command: ``error: <message>`` on stderr, exit ``status``. The message is one
    line, but for the few that must say where to put things (a dataset not prepared)."""
    print(f"error: {str(message).strip() or 'failed'}", file=sys.stderr)
    raise SystemExit(status)
