"""The optimizer: momentum SGD with L2 decay on kernels and a learning-rate schedule."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax


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
    """Momentum SGD with L2 decay added to the gradient, not the loss: g + wd * w on kernels."""
    optim = config.optim
    schedule = learning_rate_schedule(config, steps_per_epoch)
    return optax.chain(
        optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=optim.momentum, nesterov=optim.nesterov),
    )
