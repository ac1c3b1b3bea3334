"""Training: ``train_and_evaluate(config, workdir)``, data parallel over every device.

Parallelism: one ``jax.jit`` program over a 1-D ``Mesh`` named "data". Batches are
sharded along it and the train state is replicated, so XLA's SPMD partitioner inserts
the all-reduces itself: gradients are averaged and BatchNorm statistics are computed
over the global batch, exactly as on one device. The step donates the old state, keeps
its metrics on the device, and the host fetches them only every ``log_every_steps``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bregflax import data as data_lib
from bregflax import losses, models, xla_cpu
from bregflax.data import pipeline
from bregflax.logger import MetricLogger

xla_cpu.apply()  # before jax's first computation: XLA reads its flags then

DEVICE_KEYS = ("image", "label", "valence", "arousal", "mask")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the message names the step."""


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)


# --------------------------------------------------------------------------- optimizer


def learning_rate_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
    """constant | step (times step_factor at step_epochs) | cosine, with optional linear warmup.

    ``config`` is the whole config; the schedule spans ``num_epochs``.
    """
    optim = config.optim
    base, total = optim.learning_rate, max(1, config.num_epochs * steps_per_epoch)
    warmup = int(optim.warmup_epochs * steps_per_epoch)
    if optim.schedule == "constant":
        main = optax.constant_schedule(base)
    elif optim.schedule == "step":
        boundaries = {
            int(e * steps_per_epoch) - warmup: optim.step_factor for e in optim.step_epochs
        }
        main = optax.piecewise_constant_schedule(base, boundaries)
    elif optim.schedule == "cosine":
        main = optax.cosine_decay_schedule(base, max(1, total - warmup))
    else:
        raise ValueError(f"optim.schedule must be constant, step or cosine, got {optim.schedule!r}")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])


def decay_mask(params) -> Any:
    """Weight decay applies to conv and dense kernels, not to biases or BatchNorm scales."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


def make_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
    """Momentum SGD with decoupled-from-the-loss L2 decay: g + wd * w on kernels."""
    optim = config.optim
    schedule = learning_rate_schedule(config, steps_per_epoch)
    return optax.chain(
        optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=optim.momentum, nesterov=optim.nesterov),
    )


# --------------------------------------------------------------------------- model and state


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    dtype = jnp.bfloat16 if config.half_precision else jnp.float32
    return models.create_model(config.model, dtype=dtype)


def input_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
    size = config.data.image_size
    return (1, size, size, config.data.channels)


def create_train_state(
    rng: jax.Array, config: ml_collections.ConfigDict, model: nn.Module, steps_per_epoch: int
) -> TrainState:
    variables = jax.jit(functools.partial(model.init, train=False))(
        rng, jnp.zeros(input_shape(config))
    )
    tx = make_optimizer(config, steps_per_epoch)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        apply_fn=model.apply,
        tx=tx,
    )


# --------------------------------------------------------------------------- steps


def compute_losses(
    outputs: dict[str, jax.Array],
    batch: dict[str, jax.Array],
    class_weights: jax.Array | None,
    va_weight: float,
) -> dict[str, jax.Array]:
    """Per-head losses and their sum ``loss``; absent targets and padding are masked out."""
    out = {}
    total = 0.0
    if "logits" in outputs:
        out["ce"] = losses.weighted_cross_entropy(
            outputs["logits"], batch["label"], class_weights, batch["mask"]
        )
        total = total + out["ce"]
    if "va" in outputs:
        target = jnp.stack([batch["valence"], batch["arousal"]], axis=-1)
        out["va_mse"] = losses.mse(outputs["va"], target, batch["mask"])
        total = total + va_weight * out["va_mse"]
    out["loss"] = total
    return out


def _batch_counts(
    outputs: dict[str, jax.Array], batch: dict[str, jax.Array]
) -> dict[str, jax.Array]:
    """Batch sums that add up across batches: correct, labelled, va squared error and count."""
    mask = batch["mask"] > 0
    counts = {"examples": jnp.sum(mask.astype(jnp.float32))}
    if "logits" in outputs:
        labelled = mask & (batch["label"] >= 0)
        correct = (jnp.argmax(outputs["logits"], -1) == batch["label"]) & labelled
        counts["correct"] = jnp.sum(correct.astype(jnp.float32))
        counts["labelled"] = jnp.sum(labelled.astype(jnp.float32))
    if "va" in outputs:
        target = jnp.stack([batch["valence"], batch["arousal"]], axis=-1)
        valid = jnp.isfinite(target) & mask[:, None]
        err = jnp.where(valid, outputs["va"] - jnp.where(valid, target, 0.0), 0.0)
        counts["va_sq_err"] = jnp.sum(err * err)
        counts["va_values"] = jnp.sum(valid.astype(jnp.float32))
    return counts


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    class_weights: jax.Array | None,
    va_weight: float,
) -> tuple[TrainState, dict[str, jax.Array]]:
    def loss_fn(params):
        outputs, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
        )
        parts = compute_losses(outputs, batch, class_weights, va_weight)
        return parts["loss"], (parts, outputs, updates["batch_stats"])

    grads, (parts, outputs, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    finite = jax.tree.reduce(jnp.logical_and, jax.tree.map(lambda p: jnp.isfinite(p).all(), params))
    metrics = {**parts, **_batch_counts(outputs, batch), "grad_norm": optax.tree.norm(grads)}
    return new_state, {**metrics, "params_finite": finite}


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    class_weights: jax.Array | None,
    va_weight: float,
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Model outputs (for predictions) and batch sums of the validation metrics."""
    outputs = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False
    )
    parts = compute_losses(outputs, batch, class_weights, va_weight)
    counts = _batch_counts(outputs, batch)
    sums = {f"{k}_sum": v * counts["examples"] for k, v in parts.items()}
    return outputs, {**sums, **counts}


# --------------------------------------------------------------------------- parallelism


@dataclasses.dataclass(frozen=True)
class Parallel:
    """The device mesh and the shardings of batches and of the replicated state."""

    mesh: Mesh

    @classmethod
    def over_all_devices(cls) -> Parallel:
        return cls(Mesh(np.asarray(jax.devices()), ("data",)))

    @property
    def batch(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec("data"))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def check_batch_size(self, global_batch_size: int) -> None:
        devices = self.mesh.devices.size
        if global_batch_size % devices:
            raise ValueError(
                f"batch size {global_batch_size} must be divisible by the {devices} devices"
            )

    def shard_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Assembles the global batch from this process's part of it (keys in DEVICE_KEYS)."""
        return {
            k: jax.make_array_from_process_local_data(self.batch, np.asarray(local[k]))
            for k in DEVICE_KEYS
            if k in local
        }


def jit_train_step(parallel: Parallel, state: TrainState, va_weight: float):
    state_sharding = jax.tree.map(lambda _: parallel.replicated, state)
    return jax.jit(
        functools.partial(train_step, va_weight=va_weight),
        in_shardings=(state_sharding, parallel.batch, parallel.replicated),
        out_shardings=(state_sharding, parallel.replicated),
        donate_argnums=0,
    )


def jit_eval_step(parallel: Parallel, state: TrainState, va_weight: float):
    state_sharding = jax.tree.map(lambda _: parallel.replicated, state)
    return jax.jit(
        functools.partial(eval_step, va_weight=va_weight),
        in_shardings=(state_sharding, parallel.batch, parallel.replicated),
        out_shardings=(parallel.batch, parallel.replicated),
    )


# --------------------------------------------------------------------------- checkpoints


def checkpoint_manager(
    workdir: str | Path, config: ml_collections.ConfigDict
) -> ocp.CheckpointManager:
    """Keeps the latest ``keep_checkpoints`` plus the best by ``best_metric``."""
    metric, mode = config.best_metric, config.best_mode
    best_fn = lambda m: m[metric]  # noqa: E731
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
        [
            ocp.checkpoint_managers.LatestN(n=config.keep_checkpoints),
            ocp.checkpoint_managers.BestN(
                get_metric_fn=best_fn,
                reverse=mode == "min",
                n=1,
                keep_checkpoints_without_metrics=False,  # mid-epoch saves: LatestN's alone
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


def restore_state(manager: ocp.CheckpointManager, step: int, template: TrainState) -> TrainState:
    """Restores ``step`` into the structure and shardings of ``template``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return restored


def resolve_checkpoint(manager: ocp.CheckpointManager, which: str) -> int:
    """``best`` | ``latest`` | a step number -> a saved step; clear error when absent."""
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoints under {manager.directory}")
    if which == "latest":
        return manager.latest_step()
    if which == "best":
        return manager.best_step()
    if not which.isdigit() or int(which) not in steps:
        raise ValueError(f"checkpoint {which!r} not found; saved steps: {sorted(steps)}")
    return int(which)


def load_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with (its ``config.json``)."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a bregflax training workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_trained(
    workdir: str | Path, which: str = "best"
) -> tuple[ml_collections.ConfigDict, TrainState, int]:
    """(config, state, step) of checkpoint ``which`` (best | latest | STEP) of a run."""
    config = load_config(workdir)
    model = build_model(config)
    template = create_train_state(jax.random.key(0), config, model, steps_per_epoch=1)
    template = jax.device_put(template, Parallel.over_all_devices().replicated)
    manager = checkpoint_manager(workdir, config)
    step = resolve_checkpoint(manager, which)
    return config, restore_state(manager, step, template), step


# --------------------------------------------------------------------------- loops


def _fetch(metrics: list[dict[str, jax.Array]]) -> dict[str, np.ndarray]:
    stacked = jax.device_get(metrics)
    return {k: np.asarray([m[k] for m in stacked]) for k in stacked[0]}


def summarize_train(history: dict[str, np.ndarray]) -> dict[str, float]:
    out = {
        f"train/{k}": float(np.mean(history[k]))
        for k in ("loss", "ce", "va_mse", "grad_norm")
        if k in history
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


def evaluate(
    eval_fn,
    state: TrainState,
    batches: Iterator[dict[str, np.ndarray]],
    parallel: Parallel,
    weights,
) -> dict[str, float]:
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
            "is kept. Lower optim.learning_rate or check the data."
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains ``config`` in ``workdir``, resuming from its latest checkpoint if there is one."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    parallel = Parallel.over_all_devices()
    parallel.check_batch_size(config.batch_size)

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
        weights = jnp.asarray(losses.class_weights(train_split.class_counts))
    schedule = learning_rate_schedule(config, steps_per_epoch)
    train_fn = jit_train_step(parallel, state, config.loss.va_weight)
    eval_fn = jit_eval_step(parallel, state, config.loss.va_weight)

    manager = checkpoint_manager(workdir, config)
    if manager.latest_step() is not None:
        state = restore_state(manager, manager.latest_step(), state)
        logging.info("resumed from step %d", int(state.step))
    start = int(state.step)
    logger = MetricLogger(workdir, config, total_steps=total_steps, initial_step=start)
    logger.write_config()

    step = start
    history: list[dict[str, jax.Array]] = []
    window_start, window_time = step, time.perf_counter()
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
            epoch_end = step % steps_per_epoch == 0 or step == total_steps
            save_now = epoch_end or (
                config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0
            )
            if step % config.log_every_steps == 0 or save_now:
                fetched = _fetch(history)
                _check_finite(fetched, window_start + 1)
                elapsed = time.perf_counter() - window_time
                summary = summarize_train(fetched)
                summary["train/images_per_sec"] = (
                    (step - window_start) * config.batch_size / max(elapsed, 1e-9)
                )
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
                    val = evaluate(eval_fn, state, eval_batches, parallel, weights)
                    logger.log(step, step / steps_per_epoch, val)
                    window_time = time.perf_counter()  # validation time is not training throughput
                manager.save(step, args=ocp.args.StandardSave(state), metrics=val or None)
    finally:
        manager.wait_until_finished()
        logger.close()
    return state
