"""Writing files without losing anything a user owns, and reading files that may be hostile.

One home for what every command that writes or reads a file needs:

* :func:`write_atomic` / :func:`atomic_path`: a file is written under a temporary name in its
  own folder and renamed into place, so a reader (or a kill) never meets half a file under
  the final name; never written through a symbolic link (the rename replaces the link
  itself), never onto a file named in ``protect`` (the inputs), whatever the route.
* :func:`publish_new`: a file created only where nothing is (hard-linked into place from a
  temporary name; an existing file, link or folder is never replaced): a name that is taken
  gives ``<stem>-2<suffix>``, ``-3``...
* :class:`OutputLock`: one writer per output file, refused in one line naming the first.
* :func:`strict_json`: JSON without NaN or Infinity (``null``, and the paths it replaced).
* :func:`text_path` / :func:`path_from_text`: file names that are not valid UTF-8, written
  as text with each byte that is not UTF-8 as ``\\xNN``, and read back to the same bytes.
* :func:`check_size`, :func:`read_json`, :func:`load_npy`: a file is checked by its size (or
  its header) before it is read, and one that cannot be parsed is named with what to do.
* :func:`exit_on_signals`: SIGTERM ends a command as Ctrl-C does (exit 143, 130), and a file
  size limit is an ``OSError`` (EFBIG), not a kill.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import signal
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

MiB = 1 << 20
MAX_IMAGE_BYTES = 256 * MiB  # an image file larger than this is refused before it is read
MAX_JSON_BYTES = 64 * MiB


class FileTooLargeError(ValueError):
    """A file over the size a reader accepts; the message names it and the limit."""


class DamagedFileError(ValueError):
    """A file that cannot be parsed; the message names it and says what to do."""


class OutputBusyError(ValueError):
    """An output file another process is writing; the message names that process."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM; ``signum`` says which, ``exit_code`` is 128 + it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


# --------------------------------------------------------------------------- identity


def identity(path: str | os.PathLike) -> tuple:
    """What makes two paths one file: device and inode (links followed), or the resolved
    path of a file that does not exist."""
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return ("missing", os.path.realpath(path))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are one file by any route (links, ``..``, relative forms)."""
    return identity(a) == identity(b) or os.path.realpath(a) == os.path.realpath(b)


def check_not_input(path: str | os.PathLike, protect: Iterable[str | os.PathLike]) -> None:
    """ValueError if ``path`` is (by any route) one of ``protect``."""
    for p in protect:
        if same_file(path, p):
            raise ValueError(f"{text_path(path)} is an input ({text_path(p)}): choose another")


# --------------------------------------------------------------------------- writing


def _temp_in(path: Path) -> tuple[int, Path]:
    """A new file (O_EXCL) next to ``path``, keeping its suffix (so writers that go by the
    suffix, like matplotlib's, pick the right format)."""
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem[:64]}.", suffix=f".tmp{path.suffix}"
    )
    try:  # mkstemp makes 0600: a new file gets the usual mode, a replaced one keeps its own
        mode = os.lstat(path).st_mode & 0o7777 if os.path.isfile(path) else None
    except OSError:
        mode = None
    if mode is None:
        mask = os.umask(0o22)
        os.umask(mask)
        mode = 0o666 & ~mask
    with contextlib.suppress(OSError):
        os.fchmod(fd, mode)
    return fd, Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, protect: Iterable = ()) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block ends
    without an exception, removed when it raises. ``path`` is never one of ``protect``."""
    path = Path(path)
    check_not_input(path, protect)
    fd, temp = _temp_in(path)
    os.close(fd)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str, protect: Iterable = ()) -> Path:
    """Writes ``data`` to ``path`` through a temporary file renamed into place (text as
    UTF-8); a symbolic link at ``path`` is replaced, not followed."""
    path = Path(path)
    check_not_input(path, protect)
    blob = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, temp = _temp_in(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return path


def numbered(path: Path, k: int) -> Path:
    """``photo.jpg`` -> ``photo-<k>.jpg`` (``photo.jpg`` for k = 1)."""
    return path if k == 1 else path.with_name(f"{path.stem}-{k}{path.suffix}")


def publish_new(path: str | os.PathLike, data: bytes, most: int = 10000) -> Path:
    """Writes ``data`` to a file that did not exist: ``path``, else ``<stem>-2<suffix>``...

    The file is written under a temporary name and hard-linked to the first free name, so
    no existing file, link or folder is ever replaced or written through, and no reader
    sees half a file. Returns the path written.
    """
    path = Path(path)
    fd, temp = _temp_in(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        for k in range(1, most + 1):
            target = numbered(path, k)
            try:
                os.link(temp, target)  # fails on any existing entry; follows no link
                return target
            except FileExistsError:
                continue
            except OSError as e:  # a file system without hard links: exclusive creation
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                return _create_new(path, data, k, most)
        raise FileExistsError(errno.EEXIST, f"{most} names taken", str(path))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _create_new(path: Path, data: bytes, start: int, most: int) -> Path:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for k in range(start, most + 1):
        target = numbered(path, k)
        try:
            fd = os.open(target, flags, 0o644)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            os.unlink(target)
            raise
        return target
    raise FileExistsError(errno.EEXIST, f"{most} names taken", str(path))


def safe_folder(root: Path, rel: Path) -> tuple[Path, bool]:
    """``root / rel`` as a real folder under ``root``: each part of ``rel`` that is taken by
    a file or a symbolic link gets ``-2``, ``-3``... instead. Returns it and whether a part
    was renamed."""
    folder, renamed = root, False
    for part in rel.parts:
        if part in ("", "."):
            continue
        for k in range(1, 10000):
            candidate = folder / (part if k == 1 else f"{part}-{k}")
            if candidate.is_symlink() or (candidate.exists() and not candidate.is_dir()):
                continue
            try:
                candidate.mkdir(exist_ok=True)
            except FileExistsError:  # made a file or link in between: next name
                continue
            if candidate.is_symlink():
                continue
            folder, renamed = candidate, renamed or k > 1
            break
    return folder, renamed


# --------------------------------------------------------------------------- one writer


class OutputLock:
    """``with OutputLock(path, what):`` one process at a time writes ``path``.

    The lock is the operating system's (``flock``) on ``.<name>.lock`` beside ``path``, so
    it ends with the process; the file says who holds it (pid, host, start), for the
    one-line :class:`OutputBusyError` a second writer gets. The file is removed on exit.
    """

    def __init__(self, path: str | os.PathLike, what: str = "--out"):
        path = Path(path)
        self.path, self.what = path, what
        self.lock = path.with_name(f".{path.name}.lock")
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        while True:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise OutputBusyError(
                    f"{self.what} {text_path(self.path)} is being written by another process "
                    f"({holder}); wait for it to end, or choose another file"
                ) from None
            try:  # the holder before may have removed the file between our open and flock
                if os.stat(self.lock).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.lock)
            os.close(self.fd)
            self.fd = None


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, since {since}"


# --------------------------------------------------------------------------- values


def finite(value: Any, where: str = "") -> tuple[Any, list[str]]:
    """``value`` with every NaN or infinite float (also in numpy types, lists and dicts) as
    None, and the dotted paths of those replaced."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return (value, []) if math.isfinite(value) else (None, [f"{where or 'value'}={value}"])
    if isinstance(value, dict):
        out, bad = {}, []
        for k, v in value.items():
            out[k], more = finite(v, f"{where}.{k}" if where else str(k))
            bad += more
        return out, bad
    if isinstance(value, list | tuple):
        out, bad = [], []
        for i, v in enumerate(value):
            item, more = finite(v, f"{where}[{i}]")
            out.append(item)
            bad += more
        return out, bad
    return value, []


def strict_json(value: Any, reason_key: str | None = None, **kwargs) -> str:
    """``json.dumps`` that never writes NaN or Infinity: they become ``null``; with
    ``reason_key`` (and ``value`` a dict), that key says which values were replaced.
    Text that is not valid UTF-8 (surrogate escapes) is written as :func:`text_path`."""
    clean, bad = finite(_texts(value))
    if bad and reason_key and isinstance(clean, dict):
        note = f"not finite, written as null: {', '.join(bad)}"
        old = clean.get(reason_key)
        clean[reason_key] = f"{old}; {note}" if old else note
    return json.dumps(clean, allow_nan=False, default=_plain, **kwargs)


def _plain(value):
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return text_path(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _texts(value):
    if isinstance(value, str):
        return text_path(value)
    if isinstance(value, dict):
        return {k: _texts(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_texts(v) for v in value]
    return value


_SURROGATE = re.compile("[\udc80-\udcff]")
_ESCAPED = re.compile(r"\\x([89a-fA-F][0-9a-fA-F])")


def text_path(path: str | bytes | os.PathLike) -> str:
    """A file name as text that can be written in UTF-8: each byte of the name that is not
    valid UTF-8 (held by Python as a surrogate escape) becomes ``\\xNN``. Valid names are
    unchanged. :func:`path_from_text` gives the name back."""
    text = os.fsdecode(path)
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def path_from_text(text: str) -> str:
    """The file name (as Python holds it, ``os.fsencode`` gives its bytes) that
    :func:`text_path` wrote as ``text``."""
    return _ESCAPED.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


# --------------------------------------------------------------------------- reading


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def check_size(path: str | os.PathLike, limit: int, flag: str = "") -> int:
    """The size of ``path``; FileTooLargeError, before anything is read, over ``limit``."""
    size = os.stat(path).st_size
    if size > limit:
        raise FileTooLargeError(
            f"{text_path(path)} is {human(size)}, over the {human(limit)} limit"
            + (f" (raise it with {flag})" if flag else "")
        )
    return size


def read_json(path: str | os.PathLike, advice: str = "delete it (or move it away) and rerun",
              limit: int = MAX_JSON_BYTES) -> Any:  # fmt: skip
    """The JSON in ``path``; DamagedFileError naming the file and what to do if it cannot
    be parsed (cut off by a kill, say)."""
    check_size(path, limit)
    data = Path(path).read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f"line {e.lineno} column {e.colno}: " if isinstance(e, json.JSONDecodeError) else ""
        raise DamagedFileError(
            f"{text_path(path)} is not valid JSON ({where}{getattr(e, 'msg', e)}; "
            f"{len(data)} bytes): it was cut off or damaged; {advice}"
        ) from None


def csv_any_length() -> None:
    """Lets Python's csv read fields of any length (its default stops at 131,072
    characters); a record's length is then judged by its own checks."""
    import csv

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def _npy_header(f, size: int, name: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype an .npy stream declares; ValueError if its data could not fit
    in ``size`` bytes (a header that declares petabytes)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.hasobject:
        raise ValueError(f"{name}: holds Python objects, which are not read")
    count = math.prod(shape)
    if count * dtype.itemsize > size:
        raise ValueError(
            f"{name}: header declares {shape} {dtype} ({human(count * dtype.itemsize)}) but "
            f"the data is {human(size)}: damaged or not what it claims"
        )
    return shape, dtype


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """An .npy file, its header checked against the file's size first (ValueError)."""
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        _npy_header(f, size, text_path(path))
    return np.load(path, allow_pickle=False)


def check_npz(path: str | os.PathLike) -> None:
    """ValueError naming ``path`` and the array if an .npz member's header declares more
    data than the member holds (numpy would try to allocate it: MemoryError)."""
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                _npy_header(f, info.file_size, f"{text_path(path)}: array {info.filename[:-4]}")


# --------------------------------------------------------------------------- signals


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
