"""The train and eval steps, pure functions of (state, batch), and their ``jax.jit`` wrappers
over ``parallel.Parallel``'s mesh (state replicated, batches sharded).

The eval step is the one evaluation uses too: it needs only ``apply_fn``, ``params`` and
``batch_stats``, which a ``TrainState`` has and so does ``Model``, the variables of a
loaded run (``checkpoints.load_variables``), so evaluating never builds an optimizer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from bregflax.nn import losses
from bregflax.training.parallel import Parallel


@struct.dataclass
class Model:
    """A model's apply function and variables: what ``eval_step`` needs of a state."""

    apply_fn: Callable = struct.field(pytree_node=False)
    params: Any = None
    batch_stats: Any = None


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


def module_grad_norms(grads: dict) -> dict[str, jax.Array]:
    """The L2 norm of each top-level module's gradients (stem convs, each block, the head),
    as ``grad_norm/<module>``."""
    return {f"grad_norm/{name}": optax.tree.norm(g) for name, g in grads.items()}


def train_step(
    state: Any,
    batch: dict[str, jax.Array],
    class_weights: jax.Array | None,
    va_weight: float,
    grad_norms: bool = False,
) -> tuple[Any, dict[str, jax.Array]]:
    """One optimizer step; its metrics stay on the device (``params_finite`` for the guard).

    ``grad_norms`` adds each module's gradient norm (``module_grad_norms``).
    """

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
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    finite = jax.tree.reduce(
        jnp.logical_and, jax.tree.map(lambda p: jnp.isfinite(p).all(), new_state.params)
    )
    metrics = {**parts, **_batch_counts(outputs, batch), "grad_norm": optax.tree.norm(grads)}
    if grad_norms:
        metrics.update(module_grad_norms(grads))
    return new_state, {**metrics, "params_finite": finite}


def eval_step(
    state: Any,
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


def jit_train_step(parallel: Parallel, state: Any, va_weight: float, grad_norms: bool = False):
    state_sharding = jax.tree.map(lambda _: parallel.replicated, state)
    return jax.jit(
        functools.partial(train_step, va_weight=va_weight, grad_norms=grad_norms),
        in_shardings=(state_sharding, parallel.batch, parallel.replicated),
        out_shardings=(state_sharding, parallel.replicated),
        donate_argnums=0,
    )


def jit_eval_step(parallel: Parallel, state: Any, va_weight: float):
    state_sharding = jax.tree.map(lambda _: parallel.replicated, state)
    return jax.jit(
        functools.partial(eval_step, va_weight=va_weight),
        in_shardings=(state_sharding, parallel.batch, parallel.replicated),
        out_shardings=(parallel.batch, parallel.replicated),
    )
