"""A training run on disk: its ``config.json``, its orbax checkpoints, its lock, and loading.

A workdir holds ``config.json`` (the config it was trained with, from which evaluation and
inference rebuild the model), ``checkpoints/<step>/`` (the whole train state, each with a
fingerprint of the config fields that shape the model and its inputs) and, while a run
trains in it, ``run.lock``. This module needs the model and the optimizer, never the
trainer, so inference can load a run without importing ``bregflax.train``.

Loading is careful: a checkpoint that cannot be restored (a file truncated or deleted) is
skipped for the next one, with a warning that names it and why; a config that disagrees
with the checkpoint's fingerprint stops the load with the fields that differ.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging as py_logging
import os
import shutil
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from bregflax import configs, safe_io
from bregflax.parallel import Parallel
from bregflax.state import TrainState, build_model, create_train_state

CONFIG_FILE = "config.json"
LOCK_FILE = "run.lock"
DAMAGED_DIR = "damaged_checkpoints"
FINGERPRINT_KEY = "bregflax_fingerprint"
# The model's fields that decide its parameter shapes and what it computes (resolved from
# the named model, so an unset field and the model's own default agree), and the data
# fields that decide what an input image is. Every other field (data location, optimizer,
# epochs, batch sizes, conv_impl, precision) may change between training and loading.
MODEL_FIELDS = (
    "stage_sizes",
    "widths",
    "shortcut",
    "stem_convs",
    "stem_stride",
    "stem_pool",
    "head",
    "num_classes",
)
DATA_FIELDS = ("image_size", "channels")


class RunError(Exception):
    """A run on disk that cannot be used as asked; the message says why and what to do."""


class WorkdirError(RunError, OSError):
    """The workdir cannot be created or written."""


class WorkdirBusyError(WorkdirError):
    """Another process holds the workdir's lock: it is training there now."""


class CheckpointError(RunError, ValueError):
    """No checkpoint asked for restores."""


class ConfigMismatchError(RunError, ValueError):
    """A config disagrees with the fingerprint a checkpoint was saved with."""


# --------------------------------------------------------------------------- config.json


def write_config(workdir: str | Path, config: ml_collections.ConfigDict) -> Path:
    """Saves ``config`` as the run's ``config.json``; returns its path."""
    path = Path(workdir) / CONFIG_FILE
    safe_io.write_atomic(path, config.to_json_best_effort(indent=2) + "\n")
    return path


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config the run in ``workdir`` was trained with (its ``config.json``)."""
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a bregflax training workdir?")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise configs.ConfigError(f"{path} is not valid JSON ({e}); restore the file") from None
    if not isinstance(values, dict):
        raise configs.ConfigError(f"{path} holds {type(values).__name__}, not a config object")
    return ml_collections.ConfigDict(values)


# --------------------------------------------------------------------------- fingerprint


def _plain(value):
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def fingerprint(config: ml_collections.ConfigDict) -> dict:
    """The config fields that shape the model and its inputs, as JSON values.

    The model's fields are those of the model ``config.model`` builds (``model.name``'s
    defaults filled in); for a model that cannot be built, only the fields the config sets.
    """
    out = {"model.name": config.model.get("name")}
    try:
        model = build_model(config)
        model_fields = {f: getattr(model, f) for f in MODEL_FIELDS}
    except (KeyError, ValueError, TypeError):  # an unknown name or field
        model_fields = {f: config.model.get(f) for f in MODEL_FIELDS if config.model.get(f)}
    out.update({f"model.{f}": _plain(v) for f, v in model_fields.items()})
    out.update({f"data.{f}": _plain(config.data.get(f)) for f in DATA_FIELDS})
    return out


def fingerprint_changes(saved: dict, current: dict) -> list[str]:
    """``field: old -> new`` for each field both fingerprints have and that differs."""
    return [
        f"{key}: {saved[key]!r} -> {current[key]!r}"
        for key in saved
        if key in current and saved[key] != current[key]
    ]


def saved_fingerprint(manager: ocp.CheckpointManager, step: int) -> dict | None:
    """The fingerprint checkpoint ``step`` was saved with (None: unreadable, or saved
    before checkpoints had one)."""
    try:
        custom = manager.metadata(step).custom_metadata or {}
    except Exception:  # noqa: BLE001 - damaged metadata: restoring will tell
        return None
    return custom.get(FINGERPRINT_KEY)


def check_fingerprint(
    manager: ocp.CheckpointManager, step: int, config: ml_collections.ConfigDict, advice: str
) -> None:
    """Raises ConfigMismatchError naming each field where ``config`` disagrees with
    checkpoint ``step``'s fingerprint."""
    saved = saved_fingerprint(manager, step)
    changes = fingerprint_changes(saved, fingerprint(config)) if saved else []
    if changes:
        raise ConfigMismatchError(
            f"checkpoint {step} under {manager.directory} was trained with another model or "
            f"input: {'; '.join(changes)}. {advice}"
        )


# --------------------------------------------------------------------------- the manager


def manager(workdir: str | Path, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    """The run's checkpoints: keeps the latest ``keep_checkpoints`` plus the best by
    ``best_metric`` (saves without metrics, mid-epoch ones, count only as latest)."""
    metric, mode = config.best_metric, config.best_mode
    best_fn = lambda m: m[metric]  # noqa: E731
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
        [
            ocp.checkpoint_managers.LatestN(n=config.keep_checkpoints),
            ocp.checkpoint_managers.BestN(
                get_metric_fn=best_fn,
                reverse=mode == "min",
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        best_fn=best_fn,
        best_mode=mode,
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options)


def reader(workdir: str | Path) -> ocp.CheckpointManager:
    """The run's checkpoints, to read: it creates, writes and deletes nothing as long as
    nothing is saved with it, and a step whose metrics file is damaged does not stop it from
    opening (``ranked`` reads the metrics). (orbax's ``read_only`` option would say so in
    three warnings each time.)"""
    options = ocp.CheckpointManagerOptions(create=False, lightweight_initialize=True)
    return ocp.CheckpointManager(
        Path(workdir).absolute() / "checkpoints",
        options=options,
        item_handlers=ocp.StandardCheckpointHandler(),
    )


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state,
    metrics: dict | None = None,
    config: ml_collections.ConfigDict | None = None,
) -> None:
    """Saves ``state`` as ``step``; ``metrics`` (validation) make it a candidate for best;
    ``config`` gives the fingerprint loading checks."""
    custom = {FINGERPRINT_KEY: fingerprint(config)} if config is not None else None
    manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, custom_metadata=custom)


def abstract_state(config: ml_collections.ConfigDict) -> TrainState:
    """The shapes, dtypes and (replicated) shardings of ``config``'s train state, computed
    without initializing it: a template to restore a checkpoint into."""
    model = build_model(config)
    create = functools.partial(create_train_state, config=config, model=model, steps_per_epoch=1)
    shapes = jax.eval_shape(create, jax.random.key(0))
    replicated = Parallel.over_all_devices().replicated
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes
    )


def restore(manager: ocp.CheckpointManager, step: int, template: TrainState) -> TrainState:
    """Restores ``step`` into the structure and shardings of ``template`` (arrays or
    ``jax.ShapeDtypeStruct``s, as ``abstract_state`` gives)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


# --------------------------------------------------------------------------- damage


def _reason(error: BaseException) -> str:
    """One line: the error's type and the start of its first line."""
    lines = str(error).strip().splitlines()
    first = (lines[0] if lines else "").split(" See full TensorStore details")[0]
    return f"{type(error).__name__}: {first[:160]}{'...' if len(first) > 160 else ''}"


_ECHOES = ("Event loop is closed", "error while reading array")


UNAWAITED_READ = r"coroutine '.*_index_and_device_put' was never awaited"


class _Echoes:
    """The echoes of a restore that fails: each array read that failed, or was still
    pending when orbax closed its event loop, is reported again as an unraisable error or
    an asyncio task error ("Task exception was never retrieved", with the read's
    traceback), hundreds of lines for one damaged file, and a read abandoned unstarted as a
    coroutine "never awaited" (under load). The restore's own exception says it once.

    An echo names a checkpoint directory whose restore failed, or says one of ``_ECHOES``.
    While a restore runs, messages naming its directory are held: dropped if it fails,
    shown if it succeeds. Every other unraisable error, asyncio message and warning shows.
    """

    def __init__(self) -> None:
        self.failed: set[str] = set()
        self.trying: str | None = None
        self.held: list = []
        self.previous_hook = None
        self.lock = threading.Lock()  # orbax's reads report from their own threads

    def shows(self, text: str, replay) -> bool:
        """Whether a message shows now; ``replay()`` shows it later if it is held."""
        with self.lock:
            if any(echo in text for echo in _ECHOES) or any(d in text for d in self.failed):
                return False
            if self.trying is not None and self.trying in text:
                self.held.append(replay)
                return False
            return True

    def _hook(self, unraisable) -> None:
        text = f"{unraisable.err_msg} {unraisable.exc_value}"
        if self.shows(text, lambda: self.previous_hook(unraisable)):
            self.previous_hook(unraisable)

    def _filter(self, record: py_logging.LogRecord) -> bool:
        logger = py_logging.getLogger(record.name)
        return self.shows(record.getMessage(), lambda: logger.handle(record))

    def install(self) -> None:
        """On each call: the warnings filter (pytest resets filters after each test) and the
        unraisable hook if another has replaced it. The asyncio filter once."""
        warnings.filterwarnings("ignore", message=UNAWAITED_READ, category=RuntimeWarning)
        if sys.unraisablehook != self._hook:
            self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._hook
        asyncio_logger = py_logging.getLogger("asyncio")
        if self._filter not in asyncio_logger.filters:
            asyncio_logger.addFilter(self._filter)

    @contextlib.contextmanager
    def restoring(self, directory: str | os.PathLike) -> Iterator[None]:
        """Holds what names ``directory`` while the block restores it (see the class)."""
        self.install()
        trying = os.path.join(os.path.abspath(directory), "")
        with self.lock:
            self.trying, self.held = trying, []
        try:
            yield
        except BaseException:
            with self.lock:
                self.failed.add(trying)
                self.trying, self.held = None, []
            raise
        with self.lock:
            held, self.trying, self.held = self.held, None, []
            self.failed.discard(trying)  # restored: a checkpoint saved there again is sound
        for replay in held:
            replay()


_echoes = _Echoes()


def ranked(manager: ocp.CheckpointManager, which: str, metric: str, mode: str) -> list[int]:
    """The steps to try for ``which``: the one asked for first, then its fallbacks.

    ``latest``: newest first. ``best``: by ``metric`` (``mode`` max or min) among the steps
    saved with validation metrics, then the others newest first. A step number: only it.
    A step whose metrics cannot be read is ranked with those without.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise FileNotFoundError(f"no checkpoints under {manager.directory}")
    if which == "latest":
        return steps
    if which != "best":
        if not which.isdigit() or int(which) not in steps:
            raise ValueError(f"checkpoint {which!r} not found; saved steps: {sorted(steps)}")
        return [int(which)]
    scored = {}
    for step in steps:
        try:
            value = (manager.metrics(step) or {}).get(metric)
        except Exception as e:  # noqa: BLE001 - a damaged metrics file
            logging.warning("checkpoint %d: metrics unreadable (%s)", step, _reason(e))
            continue
        if value is not None:
            scored[step] = float(value)
    by_metric = sorted(scored, key=scored.get, reverse=mode == "max")
    return by_metric + [s for s in steps if s not in scored]


def restore_first(
    manager: ocp.CheckpointManager,
    steps: list[int],
    template: TrainState,
    config: ml_collections.ConfigDict,
    advice: str,
    warn: bool = True,
) -> tuple[TrainState, int, dict[int, str]]:
    """Restores the first of ``steps`` that restores: (state, step, {skipped step: why}),
    with a warning for each step skipped (``warn``).

    Each step's fingerprint is checked first: a ConfigMismatchError is not damage, it stops
    at once. CheckpointError when none restores; nothing is moved or deleted.
    """
    skipped: dict[int, str] = {}
    for step in steps:
        check_fingerprint(manager, step, config, advice)
        try:
            with _echoes.restoring(os.path.join(str(manager.directory), str(step))):
                return restore(manager, step, template), step, skipped
        except Exception as e:  # noqa: BLE001 - any damage: orbax, tensorstore, json, OS
            skipped[step] = _reason(e)
            if warn and len(steps) > 1:
                logging.warning(
                    "checkpoint %d cannot be restored, skipped (%s)", step, skipped[step]
                )
    raise _none_restores(manager.directory, skipped)


def _none_restores(directory, skipped: dict[int, str]) -> CheckpointError:
    if len(skipped) == 1:
        [(step, why)] = skipped.items()
        text = (
            f"checkpoint {step} under {directory} cannot be restored ({why}); it is left in place"
        )
    else:
        listed = "; ".join(f"{s}: {why}" for s, why in sorted(skipped.items(), reverse=True))
        text = f"no checkpoint under {directory} restores ({listed}); they are left in place"
    error = CheckpointError(text)
    error.skipped = skipped
    return error


def move_aside(workdir: str | Path, step: int) -> Path:
    """Moves damaged checkpoint ``step`` to ``workdir/damaged_checkpoints/`` (never deletes
    it), so that the run can save that step again; returns where it went."""
    source = Path(workdir).absolute() / "checkpoints" / str(step)
    target = Path(workdir).absolute() / DAMAGED_DIR / str(step)
    n = 0
    while target.exists():
        n += 1
        target = target.with_name(f"{step}.{n}")
    target.parent.mkdir(exist_ok=True)
    source.rename(target)
    return target


RESUME_ADVICE = "Resume with the config it was trained with, or train in another --workdir."


def check_resume(workdir: str | Path, config: ml_collections.ConfigDict) -> None:
    """ConfigMismatchError, before any work, when ``config`` disagrees with the fingerprint
    of the newest checkpoint in ``workdir``."""
    checkpoints = reader(workdir)
    latest = checkpoints.latest_step()
    if latest is not None:
        check_fingerprint(checkpoints, latest, config, RESUME_ADVICE)


def resume(
    workdir: str | Path, config: ml_collections.ConfigDict, template: TrainState
) -> TrainState | None:
    """The newest checkpoint of ``workdir`` that restores into ``template``, or None when
    there is none yet. Newer ones that do not restore, and any whose metrics cannot be read
    (orbax cannot open a run with one), are moved to ``damaged_checkpoints/`` with a warning.

    ConfigMismatchError when ``config`` disagrees with the checkpoint's fingerprint.
    """
    checkpoints = reader(workdir)
    steps = sorted(checkpoints.all_steps(), reverse=True)
    if not steps:
        return None
    damaged = {}
    for step in steps:
        try:
            checkpoints.metrics(step)
        except Exception as e:  # noqa: BLE001 - orbax would fail to open the run
            damaged[step] = f"metrics unreadable: {_reason(e)}"
    try:
        state, step, skipped = restore_first(
            checkpoints,
            [s for s in steps if s not in damaged],
            template,
            config,
            RESUME_ADVICE,
            warn=False,  # each is said once, below, with where it was moved
        )
    except CheckpointError as e:
        raise _none_restores(checkpoints.directory, {**damaged, **e.skipped}) from None
    damaged.update(skipped)
    if jax.process_index() == 0:
        for bad, why in sorted(damaged.items()):
            moved = move_aside(workdir, bad)
            logging.warning("checkpoint %d is damaged (%s): moved to %s", bad, why, moved)
    if damaged:
        logging.warning("resuming from checkpoint %d", step)
    return state


def load_trained(
    workdir: str | Path, which: str = "best"
) -> tuple[ml_collections.ConfigDict, TrainState, int]:
    """(config, state, step) of checkpoint ``which`` (best | latest | STEP) of a run.

    For ``best`` and ``latest``, a checkpoint that does not restore is skipped for the next
    (a warning names it and why); it stays where it is. ConfigMismatchError when the run's
    ``config.json`` disagrees with the checkpoint's fingerprint (it was edited).
    """
    config = read_config(workdir)
    checkpoints = reader(workdir)
    steps = ranked(checkpoints, which, config.best_metric, config.best_mode)
    advice = f"Was {Path(workdir) / CONFIG_FILE} edited? Put back the values it was trained with."
    check_fingerprint(checkpoints, steps[0], config, advice)  # before the config builds a model
    template = abstract_state(config)
    state, step, _ = restore_first(checkpoints, steps, template, config, advice)
    return config, state, step


# --------------------------------------------------------------------------- the workdir


def prepare_workdir(workdir: str | Path) -> Path:
    """Creates ``workdir`` (and its parents); WorkdirError, one line, when it cannot."""
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
    WorkdirError, one line, when they cannot."""
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


def _holder(fd: int) -> str:
    """Who holds a lock file, from what it wrote: ``pid N on host H, since T``."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    host = info.get("host", "an unknown host")
    return f"pid {info.get('pid', '?')} on host {host}, since {since}"


@contextlib.contextmanager
def workdir_lock(workdir: str | Path) -> Iterator[Path]:
    """Holds ``workdir/run.lock`` while the block runs: one training run per workdir.

    The lock is the operating system's (``flock``), so it ends with the process that held
    it: the file a killed run leaves behind is taken over. The file says who holds it (pid,
    host, start time) for the WorkdirBusyError another run gets.
    """
    path = prepare_workdir(workdir) / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise WorkdirError(f"cannot write to workdir {workdir} ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise WorkdirBusyError(
                f"workdir {workdir} is in use by another training run ({holder}); wait for it "
                f"to end, or use another --workdir"
            ) from None
        try:  # the holder before may have removed the file between our open and flock
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        stale = os.pread(fd, 4096, 0)
        if stale:
            logging.info("took over the lock of a run that ended: %s", _holder(fd))
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
