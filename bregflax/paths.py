"""Paths that may be on object storage: ``gs://bucket/run`` as well as ``runs/x``.

The one home for what differs there. A local path is a :class:`pathlib.Path` and behaves
exactly as before (callers keep their atomic renames and ``flock`` locks). A path with a
scheme (``gs://``, ``s3://``...) is an ``etils.epath.Path``, the path library orbax itself
uses (through ``gcsfs`` for ``gs://`` when TensorFlow is absent, ``tf.io.gfile`` when it is
installed); ``pathlib`` would turn ``gs://b/run`` into a local folder ``gs:/b/run``.

Object storage has no rename that is atomic, no appending and no folders, so here:

* a file is written whole with one upload (:func:`write_bytes`): a reader meets the old
  object or the new one, never half of one (a single object write is atomic);
* :func:`create_new` creates an object only where none is, with the generation
  precondition ``ifGenerationMatch=0`` (``gcsfs``); :func:`delete_if_generation` deletes one
  only if nobody replaced it since it was read;
* appending (:func:`append_text`) rewrites the whole object;
* folders need not be made (:func:`make_folder` makes none).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from bregflax.errors import ConfigError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
CLIENTS = {"gs": "gcsfs", "s3": "s3fs"}  # the fsspec package epath needs for each scheme


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` names object storage (``gs://``, ``s3://``...), not a local file."""
    return bool(_SCHEME.match(os.fspath(path)))


def path(p: str | os.PathLike) -> Any:
    """``p`` as a path object: ``pathlib.Path`` for a local path (exactly as before), an
    ``etils.epath.Path`` for object storage; ``/``, ``.name``, ``.parent`` work on both."""
    if not is_remote(p):
        return Path(p)
    scheme = os.fspath(p).split("://", 1)[0]
    client = CLIENTS.get(scheme)
    if client and not (_installed(client) or (scheme == "gs" and _installed("tensorflow"))):
        extra = " (pip install 'bregflax[gcs]')" if scheme == "gs" else ""
        raise ConfigError(f"{os.fspath(p)} is on object storage, which needs {client}{extra}")
    from etils import epath  # orbax's path library; loaded only for object storage

    return epath.Path(os.fspath(p))


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def absolute(p: str | os.PathLike) -> Any:
    """``p`` as an absolute path object (an object-storage path is absolute already)."""
    return path(p) if is_remote(p) else Path(p).absolute()


def make_folder(p: str | os.PathLike) -> Any:
    """Makes the folder ``p`` and its parents (locally); object storage has no folders,
    so nothing is made there (and no bucket is ever created)."""
    p = path(p)
    if not is_remote(p):
        p.mkdir(parents=True, exist_ok=True)
    return p


def _filesystem(p: str | os.PathLike):
    """(fsspec file system, path in it) for an object-storage path."""
    import fsspec

    return fsspec.core.url_to_fs(os.fspath(p))


def write_bytes(p: str | os.PathLike, data: bytes) -> None:
    """Writes the object ``p`` whole with one upload (object storage only)."""
    path(p).write_bytes(bytes(data))


def create_new(p: str | os.PathLike, data: bytes) -> None:
    """Creates ``p`` holding ``data`` only if nothing is there (FileExistsError otherwise):
    one upload with ``ifGenerationMatch=0``, so of two writers at once exactly one wins."""
    fs, key = _filesystem(p)
    fs.pipe_file(key, bytes(data), mode="create")


def generation(p: str | os.PathLike) -> str | None:
    """The generation (version) of object ``p`` (None where the store has none)."""
    fs, key = _filesystem(p)
    info = fs.info(key)
    return info.get("generation") or info.get("ETag") or None


def delete_if_generation(p: str | os.PathLike, gen: str | None) -> None:
    """Deletes object ``p`` if it is still generation ``gen`` (``ifGenerationMatch``);
    FileNotFoundError if it is gone, an error if it was replaced."""
    fs, key = _filesystem(p)
    if gen is None or not hasattr(fs, "split_path"):  # a store without generations
        fs.rm_file(key)
        return
    bucket, name, _ = fs.split_path(key)
    fs.call("DELETE", "b/{}/o/{}", bucket, name, ifGenerationMatch=str(gen))
    fs.invalidate_cache(key)


def move(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Moves the file or folder ``source`` to ``target`` (whose parent is made): locally
    one rename; on object storage a copy of each object, then its deletion (not atomic)."""
    if not is_remote(source):
        Path(target).parent.mkdir(exist_ok=True)
        Path(source).rename(target)
        return
    fs, key = _filesystem(source)
    fs.mv(key, _filesystem(target)[1], recursive=True)


def append_text(p: str | os.PathLike, text: str) -> None:
    """Appends ``text`` to the file ``p``: locally by appending, on object storage by
    rewriting the object whole (there is no append; the file stays whole at every moment)."""
    if not is_remote(p):
        with open(p, "a") as f:
            f.write(text)
        return
    p = path(p)
    old = p.read_text() if p.exists() else ""
    write_bytes(p, (old + text).encode())


def size(p: str | os.PathLike) -> int:
    """The size of the file ``p`` in bytes, without reading it."""
    if not is_remote(p):
        return os.stat(p).st_size
    return int(path(p).stat().length)
