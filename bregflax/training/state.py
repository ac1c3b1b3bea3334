"""The train state and the model it trains, built from a config.

``TrainState`` is flax's ``train_state.TrainState`` with the model's BatchNorm statistics
beside its parameters (as flax's ImageNet example keeps them): ``apply_gradients`` updates
the step, the parameters and the optimizer state, and the train step hands it the new
``batch_stats``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax.training import train_state

from bregflax.data import pipeline
from bregflax.nn import models
from bregflax.training import optim


class TrainState(train_state.TrainState):
    batch_stats: Any = None


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """``config.model`` computing in bfloat16 if ``config.half_precision``, else float32."""
    dtype = jnp.bfloat16 if config.half_precision else jnp.float32
    return models.create_model(config.model, dtype=dtype)


def input_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
    """The shape of one input image as a batch of one (``pipeline.input_shape``)."""
    return pipeline.input_shape(config.data)


def create_train_state(
    rng: jax.Array, config: ml_collections.ConfigDict, model: nn.Module, steps_per_epoch: int
) -> TrainState:
    """Step 0 (an int32 array, so that it stays on the device), initialized variables and
    the optimizer of ``config`` with its schedule over ``steps_per_epoch``."""
    variables = jax.jit(functools.partial(model.init, train=False))(
        rng, jnp.zeros(input_shape(config))
    )
    tx = optim.make_optimizer(config, steps_per_epoch)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        opt_state=tx.init(variables["params"]),
        batch_stats=variables["batch_stats"],
    )
