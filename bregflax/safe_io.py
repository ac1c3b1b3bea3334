"""Writing files without losing anything a user owns, and reading files that may be hostile.

One home for what every command that writes or reads a file needs:

* :func:`write_atomic` / :func:`atomic_path`: a file is written under a temporary name in its
  own folder and renamed into place, so a reader (or a kill) never meets half a file under
  the final name; never written through a symbolic link (the rename replaces the link
  itself), never onto a file named in ``protect`` (the inputs), whatever the route.
* :func:`publish_new`: a file created only where nothing is (hard-linked into place from a
  temporary name; an existing file, link or folder is never replaced): a name that is taken
  gives ``<stem>-2<suffix>``, ``-3``...
* :func:`publish_owned`: files moved into a folder that replace only the files an earlier
  call wrote there (a manifest in the folder says which), else take a free name.
* :class:`OutputLock`: one writer per output file, refused in one line naming the first.

Reading hostile files, strict JSON and any file name are :mod:`bregflax.hostile`'; signals
and what ran out are :mod:`bregflax.errors`'.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from bregflax import paths
from bregflax.hostile import text_path


class OutputBusyError(ValueError):
    """An output file another process is writing; the message names that process."""


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
    without an exception, removed when it raises. ``path`` is never one of ``protect``.
    On object storage the temporary file is local and uploaded whole (:mod:`bregflax.paths`)."""
    if paths.is_remote(path):
        with _uploaded(path) as temp:
            yield temp
        return
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
    UTF-8); a symbolic link at ``path`` is replaced, not followed. On object storage the
    object is written whole with one upload (there is no rename; a single write is atomic)."""
    blob = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if paths.is_remote(path):
        paths.write_bytes(path, blob)
        return paths.path(path)
    path = Path(path)
    check_not_input(path, protect)
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


@contextlib.contextmanager
def _uploaded(path: str | os.PathLike) -> Iterator[Path]:
    """A local temporary file (with ``path``'s suffix) uploaded whole to the object
    ``path`` when the block ends without an exception; removed either way."""
    fd, name = tempfile.mkstemp(prefix=".bregflax-", suffix=f".tmp{paths.path(path).suffix}")
    os.close(fd)
    try:
        yield Path(name)
        paths.write_bytes(path, Path(name).read_bytes())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


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
        return publish_file(temp, path, most)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def publish_file(temp: str | os.PathLike, path: str | os.PathLike, most: int = 10000) -> Path:
    """Gives the finished file ``temp`` (in ``path``'s folder) the first free name of
    ``path``, ``<stem>-2<suffix>``..., as :func:`publish_new` does; ``temp`` stays for the
    caller to remove. Returns the path given."""
    path = Path(path)
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
            return _create_new(path, Path(temp).read_bytes(), k, most)
    raise FileExistsError(errno.EEXIST, f"{most} names taken", str(path))


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


# --------------------------------------------------------------------------- a folder's own files


def _stamp(path: Path) -> list | None:
    """A regular file's inode, size and modification time; None for anything else."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns] if stat.S_ISREG(st.st_mode) else None


def _manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _own_or_free(path: Path, ours: dict, most: int = 10000) -> Path:
    """The first of ``path``, ``<stem>-2<suffix>``... that is free or a file of ``ours``."""
    for k in range(1, most + 1):
        candidate = numbered(path, k)
        stamp = _stamp(candidate)
        if stamp is None and not os.path.lexists(candidate):
            return candidate
        if stamp is not None and ours.get(candidate.name) == stamp:
            return candidate
    raise FileExistsError(errno.EEXIST, f"{most} names taken", str(path))


def publish_owned(
    files: Iterable[str | os.PathLike], folder: str | os.PathLike, manifest: str
) -> tuple[list[Path], list[Path]]:
    """Moves the finished ``files`` into ``folder`` under their names, each replacing only a
    file that an earlier call wrote there and no one changed since (``folder/manifest``
    records what every call wrote: inode, size, time); any other file, link or folder of
    that name stays, and the file takes the first free name (``<stem>-2<suffix>``...). One
    call at a time per folder (:class:`OutputLock`). Returns the paths written, in order, and
    those that got a new name."""
    folder = Path(folder)
    written, renamed = [], []
    with OutputLock(folder / manifest, "the folder"):
        ours = _manifest(folder / manifest)
        for temp in map(Path, files):
            target = _own_or_free(folder / temp.name, ours)
            if os.path.lexists(target):
                os.replace(temp, target)  # a file of an earlier call, unchanged
            else:
                target = publish_file(temp, target)  # created only where nothing is
                os.unlink(temp)
            if target.name != temp.name:
                renamed.append(target)
            ours[target.name] = _stamp(target)
            written.append(target)
        write_atomic(folder / manifest, json.dumps(ours, indent=1) + "\n")
    return written, renamed


# --------------------------------------------------------------------------- one writer


def take_flock(lock: str | os.PathLike) -> tuple[int | None, str]:
    """Takes the operating system's lock (``flock``, without waiting) on the file ``lock``,
    created if need be and never through a symbolic link, and writes who holds it (pid,
    host, start). Returns ``(fd, before)``, ``before`` the holder a run that ended left in
    the file ("" if none), or ``(None, holder)`` when a live process holds it. The lock ends
    with the process; :func:`release_flock` removes the file."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            return None, holder
        try:  # the holder before may have removed the file between our open and flock
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    before = _holder(fd) if os.pread(fd, 1, 0) else ""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd, before


def release_flock(lock: str | os.PathLike, fd: int) -> None:
    """Removes the lock file taken by :func:`take_flock` and lets the lock go."""
    with contextlib.suppress(OSError):
        os.unlink(lock)
    os.close(fd)


class OutputLock:
    """``with OutputLock(path, what):`` one process at a time writes ``path``.

    The lock is :func:`take_flock`'s on ``.<name>.lock`` beside ``path``, so it ends with
    the process; a second writer gets the one-line :class:`OutputBusyError` naming the
    first. The file is removed on exit.
    """

    def __init__(self, path: str | os.PathLike, what: str = "--out"):
        path = Path(path)
        self.path, self.what = path, what
        self.lock = path.with_name(f".{path.name}.lock")
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        fd, holder = take_flock(self.lock)
        if fd is None:
            raise OutputBusyError(
                f"{self.what} {text_path(self.path)} is being written by another process "
                f"({holder}); wait for it to end, or choose another file"
            )
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            release_flock(self.lock, self.fd)
            self.fd = None


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    return describe_holder(info if isinstance(info, dict) else {})


def describe_holder(info: dict) -> str:
    """Who holds a lock, from what it wrote: ``pid N on host H, since T``."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    host = info.get("host", "an unknown host")
    return f"pid {info.get('pid', '?')} on host {host}, since {since}"
