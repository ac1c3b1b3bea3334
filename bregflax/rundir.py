"""A run directory on disk: created, locked while a run trains in it, and its ``config.json``.

A workdir holds ``config.json`` (the config it was trained with, from which evaluation and
inference rebuild the model), ``checkpoints/`` (``bregflax.training.checkpoints``) and, while
a run trains in it, ``run.lock``. Needs neither jax nor the model: every stage may read a run.
A workdir may be on object storage (``gs://bucket/run``, :mod:`bregflax.paths`); its lock is
then an object created with a generation precondition (:func:`workdir_lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import ml_collections
from absl import logging

from bregflax import paths, safe_io
from bregflax.errors import ConfigError

CONFIG_FILE = "config.json"
LOCK_FILE = "run.lock"
CHECKPOINTS_DIR = "checkpoints"


class RunError(Exception):
    """A run on disk that cannot be used as asked; the message says why and what to do."""


class WorkdirError(RunError, OSError):
    """The workdir cannot be created or written."""


class WorkdirBusyError(WorkdirError):
    """Another process holds the workdir's lock: it is training there now."""


def write_config(workdir: str | Path, config: ml_collections.ConfigDict) -> Path:
    """Saves ``config`` as the run's ``config.json``; returns its path."""
    path = paths.path(workdir) / CONFIG_FILE
    safe_io.write_atomic(path, config.to_json_best_effort(indent=2) + "\n")
    return path


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config the run in ``workdir`` was trained with (its ``config.json``)."""
    path = paths.path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a bregflax training workdir?")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); restore the file") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} holds {type(values).__name__}, not a config object")
    return ml_collections.ConfigDict(values)


def prepare_workdir(workdir: str | Path) -> Path:
    """Creates ``workdir`` (and its parents); WorkdirError, one line, when it cannot. On
    object storage there is nothing to create: the path is returned."""
    if paths.is_remote(workdir):
        return paths.path(workdir)
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WorkdirError(f"workdir {workdir} is a file; pass a folder") from None
    except OSError as e:
        raise WorkdirError(f"cannot create workdir {workdir}: {e.strerror}") from None
    return workdir


def ensure_writable(folder: str | Path, advice: str = "") -> Path:
    """Checks that files can be written in ``folder`` (creating it, and a file in it, then
    removing what it created), so that a command fails before its work rather than after;
    WorkdirError, one line, when they cannot. On object storage: an object written and
    deleted."""
    if paths.is_remote(folder):
        probe = paths.path(folder) / f".write-test-{socket.gethostname()}-{os.getpid()}"
        try:
            paths.write_bytes(probe, b"")
            probe.unlink()
        except OSError as e:
            raise WorkdirError(f"cannot write to {folder} ({e}){advice}") from None
        return paths.path(folder)
    folder = Path(folder).absolute()
    created = next((p for p in [*reversed(folder.parents), folder] if not p.exists()), None)
    probe = folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        why = (
            "a file is in the way"
            if isinstance(e, FileExistsError | NotADirectoryError)
            else e.strerror
        )
        raise WorkdirError(f"cannot write to {folder} ({why}){advice}") from None
    finally:
        if created is not None and created.is_dir():
            shutil.rmtree(created, ignore_errors=True)
    return folder


@contextlib.contextmanager
def workdir_lock(workdir: str | Path) -> Iterator[Path]:
    """Holds ``workdir/run.lock`` while the block runs: one training run per workdir.

    The lock is the operating system's (``flock``), so it ends with the process that held
    it: the file a killed run leaves behind is taken over. The file says who holds it (pid,
    host, start time) for the WorkdirBusyError another run gets. On object storage it is
    an object instead (:func:`object_lock`).
    """
    if paths.is_remote(workdir):
        with object_lock(workdir) as path:
            yield path
        return
    path = prepare_workdir(workdir) / LOCK_FILE
    try:
        fd, holder = safe_io.take_flock(path)
    except OSError as e:
        raise WorkdirError(f"cannot write to workdir {workdir} ({e.strerror})") from None
    if fd is None:
        raise WorkdirBusyError(
            f"workdir {workdir} is in use by another training run ({holder}); wait for it "
            f"to end, or use another --workdir"
        )
    if holder:
        logging.info("took over the lock of a run that ended: %s", holder)
    try:
        yield path
    finally:
        safe_io.release_flock(path, fd)


# --------------------------------------------------------------------------- object storage


def _alive_here(info: dict) -> bool | None:
    """Whether the process a lock names is alive: True or False when it ran on this host,
    None when on another (no way to tell from here)."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return None
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


@contextlib.contextmanager
def object_lock(workdir: str | os.PathLike) -> Iterator:
    """Holds ``workdir/run.lock`` on object storage while the block runs.

    The lock is an object created only where none is (``ifGenerationMatch=0``), holding the
    holder's pid, host and start time, and deleted when the block ends. Object storage
    cannot see a process end, so a lock left by a killed run is taken over only when it
    names a process of this host that is gone; any other is named in the WorkdirBusyError
    with how to remove it once its run is known to be dead.
    """
    path = paths.path(workdir) / LOCK_FILE
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    blob = json.dumps(mine).encode()
    for _ in range(3):  # a stale lock removed, then taken; another run may race us
        try:
            paths.create_new(path, blob)
            break
        except FileExistsError:
            pass
        except OSError as e:
            raise WorkdirError(f"cannot write to workdir {workdir} ({e})") from None
        try:
            gen = paths.generation(path)
            info = json.loads(path.read_text() or "{}")
        except FileNotFoundError:  # released between our create and our read
            continue
        except ValueError:
            info = {}
        if _alive_here(info) is not False:
            holder = safe_io.describe_holder(info)
            raise WorkdirBusyError(
                f"workdir {workdir} is in use by another training run ({holder}); "
                f"wait for it to end, or use another --workdir. If that run was killed, "
                f"remove its lock: gcloud storage rm {path}"
            )
        logging.info("took over the lock of a run that ended: %s", safe_io.describe_holder(info))
        with contextlib.suppress(FileNotFoundError):
            paths.delete_if_generation(path, gen)
    else:
        raise WorkdirBusyError(f"workdir {workdir}: could not take {path}; try again")
    try:
        yield path
    finally:  # ours only: a lock removed by hand and taken by another run stays
        with contextlib.suppress(Exception):
            gen = paths.generation(path)
            if json.loads(path.read_text()) == mine:
                paths.delete_if_generation(path, gen)
