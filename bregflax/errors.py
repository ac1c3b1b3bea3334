"""How bregflax reports a failure: an exception in one line, and a command that stops.

Every command fails the same way: ``fail(message)`` prints ``error: <message>`` on stderr
and exits with status 2 (argparse's status for bad usage), so scripts can tell a
refused input from a crash. SIGTERM ends a command as Ctrl-C does (:func:`exit_on_signals`:
exit 143 or 130), and a full disk, a file size limit or a closed pipe is told in words
(:func:`resource_error`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
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


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM; ``signum`` says which, ``exit_code`` is 128 + it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def exit_on_signals() -> None:
    """SIGTERM raises :class:`Interrupted` as Ctrl-C does (so ``finally`` blocks run and the
    command can exit 143 or 130); a file size limit makes writes fail with EFBIG instead of
    killing the process; a closed pipe raises BrokenPipeError (Python's default)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            signal.signal(signum, _raise_interrupted)
    if hasattr(signal, "SIGXFSZ"):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def exit_code(error: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return getattr(error, "exit_code", 128 + signal.SIGINT)


def quiet_exit(code: int) -> None:
    """Ends the process at once with ``code``, after flushing what Python holds, without
    the teardown (threads of XLA or orbax still running) that can crash at exit."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


RESOURCE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EPIPE)
_RESOURCE_TEXT = re.compile(
    r"No space left|File too large|Disk quota exceeded|Read-only file system", re.IGNORECASE
)


def resource_error(e: BaseException) -> str:
    """What ran out, in words, if ``e`` (or an error it wraps) is a full disk, a file size
    limit, a quota, a read-only file system or a closed pipe; "" otherwise."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in RESOURCE_ERRNOS:
            return write_error(e)
        match = _RESOURCE_TEXT.search(str(e))
        if match:
            return match.group().lower()
        e = e.__cause__ or e.__context__
    return ""


def write_error(e: OSError) -> str:
    """A write failure in words: disk full, file too large, closed pipe, or its strerror."""
    known = {
        errno.ENOSPC: "no space left on the device",
        errno.EFBIG: "file size limit reached",
        errno.EPIPE: "the reader closed the pipe",
        errno.EROFS: "read-only file system",
        errno.EDQUOT: "disk quota exceeded",
    }
    return known.get(e.errno, e.strerror or str(e))
