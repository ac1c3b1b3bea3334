"""Training: ``train_and_evaluate(config, workdir)``, data parallel over every device.

The train and eval steps, their ``jax.jit`` wrappers over ``parallel.Parallel``'s mesh
(state replicated, batches sharded), validation, and the loop that logs, checks for
non-finite values, and checkpoints. The step donates the old state, keeps its metrics on
the device, and the host fetches them only every ``log_every_steps``. The train state, the
optimizer and the checkpoints live in ``state``, ``optim`` and ``checkpoints``; so do the
workdir's lock (one run per workdir) and resuming past a damaged checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from bregflax import configs, rundir
from bregflax import data as data_lib
from bregflax import summary as summaries
from bregflax.data import pipeline, run_data
from bregflax.nn import losses
from bregflax.training import checkpoints, optim, steps
from bregflax.training.logger import MetricLogger, drop_rows_after
from bregflax.training.parallel import Parallel
from bregflax.training.state import TrainState, build_model, create_train_state

ESTIMATE_AFTER = 5  # steps after the compiled first one that time the estimate


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the message names the step (also ``.step``)."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


# --------------------------------------------------------------------------- loops


def _fetch(metrics: list[dict[str, jax.Array]]) -> dict[str, np.ndarray]:
    stacked = jax.device_get(metrics)
    return {k: np.asarray([m[k] for m in stacked]) for k in stacked[0]}


def summarize_train(history: dict[str, np.ndarray]) -> dict[str, float]:
    out = {
        f"train/{k}": float(np.mean(history[k]))
        for k in history
        if k in ("loss", "ce", "va_mse", "grad_norm") or k.startswith("grad_norm/")
    }
    if "correct" in history:
        out["train/accuracy"] = float(history["correct"].sum() / max(history["labelled"].sum(), 1))
    return out


def summarize_eval(sums: dict[str, float]) -> dict[str, float]:
    n = max(sums["examples"], 1.0)
    out = {f"val/{k[:-4]}": v / n for k, v in sums.items() if k.endswith("_sum")}
    if "correct" in sums:
        out["val/accuracy"] = sums["correct"] / max(sums["labelled"], 1.0)
    if "va_sq_err" in sums:
        out["val/va_rmse"] = math.sqrt(sums["va_sq_err"] / max(sums["va_values"], 1.0))
    return out


def validate(
    eval_fn,
    state: TrainState,
    batches: Iterator[dict[str, np.ndarray]],
    parallel: Parallel,
    weights,
) -> dict[str, float]:
    """The validation metrics (``val/...``) of ``state`` over every batch of ``batches``."""
    totals: dict[str, jax.Array] = {}
    for batch in batches:
        _, sums = eval_fn(state, parallel.shard_batch(batch), weights)
        totals = sums if not totals else jax.tree.map(jnp.add, totals, sums)
    return summarize_eval({k: float(v) for k, v in jax.device_get(totals).items()})


def _check_finite(history: dict[str, np.ndarray], first_step: int) -> None:
    """Raises at the first step whose loss, or whose updated parameters, are not finite."""
    bad = np.flatnonzero(~np.isfinite(history["loss"]) | ~history["params_finite"].astype(bool))
    if bad.size:
        i = int(bad[0])
        what = f"loss {history['loss'][i]}" if not np.isfinite(history["loss"][i]) else "parameters"
        raise NonFiniteLossError(
            f"non-finite training {what} at step {first_step + i}; the last good checkpoint "
            "is kept. Lower optim.learning_rate or check the data.",
            first_step + i,
        )


def _print_estimate(logger, config, metrics, timed_from, step, total_steps) -> None:
    """Prints the expected training time from the steps since the compiled first one (and
    the accelerator note where the estimate calls for it)."""
    jax.block_until_ready(metrics)
    per_step = (time.perf_counter() - timed_from[1]) / (step - timed_from[0])
    left = total_steps - step
    logger.write(summaries.estimate(per_step, left, step - timed_from[0]))
    if config.model.name not in summaries.ACCELERATOR_MODELS:  # else said at the start
        note = summaries.sizing_note(config, jax.default_backend(), per_step * left)
        if note:
            logger.write(note)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains ``config`` in ``workdir``, resuming from its newest checkpoint that restores.

    Checks the config first (``configs.ConfigError``), then holds the workdir's lock while
    it trains (``rundir.WorkdirBusyError`` if another run has it). Resuming under a
    config whose model or input differs from the checkpoint's raises
    ``checkpoints.ConfigMismatchError``.
    """
    configs.validate(config)
    parallel = Parallel.over_all_devices()
    parallel.check_batch_size(config.batch_size)
    parallel.check_batch_size(config.eval_batch_size, "config.eval_batch_size")
    workdir = rundir.prepare_workdir(workdir)
    lock = rundir.workdir_lock if jax.process_index() == 0 else contextlib.nullcontext
    with lock(workdir):
        return _train(config, workdir, parallel)


def _train(config: ml_collections.ConfigDict, workdir: Path, parallel: Parallel) -> TrainState:
    checkpoints.check_resume(workdir, config)  # before the data and the model are built
    train_split = data_lib.load(config.data.source, config.data.train_split, config.data)
    eval_split = data_lib.load(config.data.source, config.data.eval_split, config.data)
    steps_per_epoch = pipeline.steps_per_epoch(len(train_split.source), config.batch_size)
    total_steps = config.num_epochs * steps_per_epoch
    if config.max_steps > 0:
        total_steps = min(total_steps, config.max_steps)

    model = build_model(config)
    state = create_train_state(jax.random.key(config.seed), config, model, steps_per_epoch)
    state = jax.device_put(state, parallel.replicated)
    weights = None
    if config.loss.weighted and config.model.head != "va":
        scale = config.loss.get("weight_scale", "paper")
        weights = jnp.asarray(losses.class_weights(train_split.class_counts, scale))
    schedule = optim.learning_rate_schedule(config, steps_per_epoch)
    train_fn = steps.jit_train_step(
        parallel, state, config.loss.va_weight, config.get("log_grad_norms", False)
    )
    eval_fn = steps.jit_eval_step(parallel, state, config.loss.va_weight)

    resumed = checkpoints.resume(workdir, config, state)
    if resumed is not None:
        state = resumed
        logging.info("resumed from step %d", int(state.step))
    manager = checkpoints.manager(workdir, config)
    start = int(state.step)
    if jax.process_index() == 0:
        drop_rows_after(workdir, start)
        rundir.write_config(workdir, config)
        run_data.record(workdir, config.data)
    logger = MetricLogger(workdir, config, total_steps=total_steps, initial_step=start)
    note = summaries.sizing_note(config, jax.default_backend())
    if note:
        logger.write(note)

    step = start
    timed_from = None  # (step, time) once the first, compiled step has run
    history: list[dict[str, jax.Array]] = []
    window_start, window_time = step, time.perf_counter()
    rate_start, rate_time = step, window_time  # after the compiled first step, once run
    batches = pipeline.train_batches(
        train_split.source,
        config.data,
        global_batch_size=config.batch_size,
        seed=config.seed,
        start_step=start,
    )
    try:
        for step in range(start + 1, total_steps + 1):
            state, metrics = train_fn(state, parallel.shard_batch(next(batches)), weights)
            history.append(metrics)
            if step == start + 1:  # compiled: rates and the estimate start after it
                jax.block_until_ready(metrics)
                timed_from = (step, time.perf_counter())
                rate_start, rate_time = timed_from
                logger.compiled(step)
            elif timed_from and step == timed_from[0] + ESTIMATE_AFTER:
                _print_estimate(logger, config, metrics, timed_from, step, total_steps)
            epoch_end = step % steps_per_epoch == 0 or step == total_steps
            save_now = epoch_end or (
                config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0
            )
            if step % config.log_every_steps == 0 or save_now:
                fetched = _fetch(history)
                _check_finite(fetched, window_start + 1)
                timed, elapsed = step - window_start, time.perf_counter() - window_time
                if window_start < rate_start < step:  # leave the compiled first step out
                    timed, elapsed = step - rate_start, time.perf_counter() - rate_time
                summary = summarize_train(fetched)
                summary["train/images_per_sec"] = timed * config.batch_size / max(elapsed, 1e-9)
                summary["train/learning_rate"] = float(schedule(step - 1))
                logger.log(step, step / steps_per_epoch, summary)
                history, window_start, window_time = [], step, time.perf_counter()
            logger.advance(step)
            if save_now:
                val = {}
                if epoch_end:
                    eval_batches = pipeline.eval_batches(
                        eval_split.source, config.data, global_batch_size=config.eval_batch_size
                    )
                    val = validate(eval_fn, state, eval_batches, parallel, weights)
                    logger.log(step, step / steps_per_epoch, val)
                    window_time = time.perf_counter()  # validation time is not training throughput
                checkpoints.save(manager, step, state, metrics=val or None, config=config)
    finally:
        manager.wait_until_finished()
        logger.close()
    return state
