"""The train state and the model it trains, built from a config.

``TrainState`` is flax's ``train_state.TrainState`` with the model's BatchNorm statistics
beside its parameters (as flax's ImageNet example keeps them): ``apply_gradients`` updates
the step, the parameters and the optimizer state, and the train step hands it the new
``batch_stats``.
"""

from __future__ import annotations

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


# Initialization runs once, and XLA:CPU's optimizing passes spend seconds on its random
# draws (one threefry per parameter tensor) for nothing: the demo model's init compiles in
# 4.9 s by default and 1.1 s unoptimized, BReG-Net-39's in 6.5 and 3.2 s (quiet 2-core
# machine, benchmarks/init_compile.py). The values differ from the optimized program's by
# at most a few ulps in a few tensors.
_INIT_OPTIONS_CPU = {"xla_backend_optimization_level": 0}


def create_train_state(
    rng: jax.Array, config: ml_collections.ConfigDict, model: nn.Module, steps_per_epoch: int
) -> TrainState:
    """Step 0 (an int32 array, so that it stays on the device), initialized variables and
    the optimizer of ``config`` with its schedule over ``steps_per_epoch``."""
    tx = optim.make_optimizer(config, steps_per_epoch)

    def init(rng: jax.Array) -> tuple[Any, Any]:
        variables = model.init(rng, jnp.zeros(input_shape(config)), train=False)
        return variables, tx.init(variables["params"])

    traced = isinstance(rng, jax.core.Tracer)  # under eval_shape: options only at the top
    options = _INIT_OPTIONS_CPU if jax.default_backend() == "cpu" and not traced else None
    variables, opt_state = jax.jit(init, compiler_options=options)(rng)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        opt_state=opt_state,
        batch_stats=variables["batch_stats"],
    )
