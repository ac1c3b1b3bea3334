"""A training run's orbax checkpoints: saving, fingerprints, and loading past damage.

``WORKDIR/checkpoints/<step>/`` holds the whole train state, each with a fingerprint of the
config fields that shape the model and its inputs (the workdir itself, its ``config.json``
and its lock are ``bregflax.rundir``'s). ``load_variables`` restores only the model's
variables, for evaluation and inference: it builds the model once and imports neither the
trainer nor the optimizer (the train state's module is imported only to resume or save).

Loading is careful: a checkpoint that cannot be restored (a file truncated or deleted) is
skipped for the next one, with a warning that names it and why; a config that disagrees
with the checkpoint's fingerprint stops the load with the fields that differ.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from bregflax import echoes, errors, paths, rundir
from bregflax.nn import models
from bregflax.training.parallel import Parallel

if TYPE_CHECKING:
    from bregflax.training.state import TrainState

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


class CheckpointError(rundir.RunError, ValueError):
    """No checkpoint asked for restores."""


class ConfigMismatchError(rundir.RunError, ValueError):
    """A config disagrees with the fingerprint a checkpoint was saved with."""


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
        model = models.create_model(config.model)
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
    return ocp.CheckpointManager(paths.absolute(workdir) / rundir.CHECKPOINTS_DIR, options=options)


def reader(workdir: str | Path) -> ocp.CheckpointManager:
    """The run's checkpoints, to read: it creates, writes and deletes nothing as long as
    nothing is saved with it, and a step whose metrics file is damaged does not stop it from
    opening (``ranked`` reads the metrics). (orbax's ``read_only`` option would say so in
    three warnings each time.)"""
    options = ocp.CheckpointManagerOptions(create=False, lightweight_initialize=True)
    return ocp.CheckpointManager(
        paths.absolute(workdir) / rundir.CHECKPOINTS_DIR,
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
    from bregflax.training.state import build_model, create_train_state  # the optimizer

    model = build_model(config)
    create = functools.partial(create_train_state, config=config, model=model, steps_per_epoch=1)
    shapes = jax.eval_shape(create, jax.random.key(0))
    replicated = Parallel.over_all_devices().replicated
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes
    )


def restore_state(manager: ocp.CheckpointManager, step: int, template: TrainState) -> TrainState:
    """Restores ``step`` into the structure and shardings of ``template`` (arrays or
    ``jax.ShapeDtypeStruct``s, as ``abstract_state`` gives)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


# --------------------------------------------------------------------------- damage


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
            logging.warning("checkpoint %d: metrics unreadable (%s)", step, errors.one_line(e))
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
    restore: Any = None,
) -> tuple[Any, int, dict[int, str]]:
    """Restores the first of ``steps`` that restores: (state, step, {skipped step: why}),
    with a warning for each step skipped (``warn``).

    Each step's fingerprint is checked first: a ConfigMismatchError is not damage, it stops
    at once. CheckpointError when none restores; nothing is moved or deleted.
    """
    skipped: dict[int, str] = {}
    restore = restore or restore_state
    for step in steps:
        check_fingerprint(manager, step, config, advice)
        try:
            with echoes.restoring(os.path.join(str(manager.directory), str(step))):
                return restore(manager, step, template), step, skipped
        except Exception as e:  # noqa: BLE001 - any damage: orbax, tensorstore, json, OS
            skipped[step] = errors.one_line(e)
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
    it), so that the run can save that step again; returns where it went. (On object storage
    the move is a copy of each object, then its deletion.)"""
    source = paths.absolute(workdir) / rundir.CHECKPOINTS_DIR / str(step)
    target = paths.absolute(workdir) / DAMAGED_DIR / str(step)
    n = 0
    while target.exists():
        n += 1
        target = target.with_name(f"{step}.{n}")
    paths.move(source, target)
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
            damaged[step] = f"metrics unreadable: {errors.one_line(e)}"
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


def variables_template(config: ml_collections.ConfigDict) -> dict:
    """The shapes and dtypes of ``config``'s model variables (params, batch_stats), on the
    first local device, computed without initializing them."""
    from bregflax.data.pipeline import input_shape

    model = models.create_model(config.model)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(input_shape(config.data)), train=False)
    )
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)


def restore_variables(manager: ocp.CheckpointManager, step: int, template: dict) -> dict:
    """Restores only the model variables of checkpoint ``step`` (no optimizer state)."""
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(dtype=x.dtype, sharding=x.sharding), template
    )
    args = ocp.args.PyTreeRestore(item=template, restore_args=restore_args, partial_restore=True)
    path = paths.path(str(manager.directory)) / str(step) / "default"
    return ocp.PyTreeCheckpointer().restore(path, args=args)


def load_variables(
    workdir: str | Path, which: str = "best"
) -> tuple[ml_collections.ConfigDict, dict, int]:
    """(config, {params, batch_stats}, step) of checkpoint ``which`` (best | latest | STEP)
    of a run: the model's variables only, for evaluation and inference.

    For ``best`` and ``latest``, a checkpoint that does not restore is skipped for the next
    (a warning names it and why); it stays where it is. ConfigMismatchError when the run's
    ``config.json`` disagrees with the checkpoint's fingerprint (it was edited).
    """
    config = rundir.read_config(workdir)
    checkpoints = reader(workdir)
    steps = ranked(checkpoints, which, config.best_metric, config.best_mode)
    config_file = paths.path(workdir) / rundir.CONFIG_FILE
    advice = f"Was {config_file} edited? Put back the values it was trained with."
    check_fingerprint(checkpoints, steps[0], config, advice)  # before the config builds a model
    template = variables_template(config)
    variables, step, _ = restore_first(
        checkpoints, steps, template, config, advice, restore=restore_variables
    )
    return config, variables, step
