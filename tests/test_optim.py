"""The optimizer: learning-rate schedules and weight decay on kernels only."""

import jax
import numpy as np
import optax
import pytest

from bregflax.training import optim


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_learning_rate_schedules(schedule, shrink, demo_config):
    config = shrink(
        demo_config,
        num_epochs=10,
        **{"optim.schedule": schedule, "optim.learning_rate": 0.1, "optim.step_epochs": (5,)},
    )
    lr = optim.learning_rate_schedule(config, steps_per_epoch=10)
    start, late = float(lr(0)), float(lr(99))
    assert start == pytest.approx(0.1)
    expected = {
        "constant": 0.1,
        "step": 0.01,
        "cosine": 0.1 * 0.5 * (1 + np.cos(np.pi * 99 / 100)),
    }[schedule]
    assert late == pytest.approx(expected, rel=1e-4)  # float32 cos near pi


def test_warmup_rises_linearly_then_hands_over(shrink, demo_config):
    config = shrink(
        demo_config,
        num_epochs=10,
        **{"optim.schedule": "constant", "optim.learning_rate": 0.1, "optim.warmup_epochs": 1.0},
    )
    lr = optim.learning_rate_schedule(config, steps_per_epoch=10)
    np.testing.assert_allclose([float(lr(s)) for s in (0, 5, 10, 50)], [0, 0.05, 0.1, 0.1])


def test_unknown_schedule_is_named(shrink, demo_config):
    config = shrink(demo_config, **{"optim.schedule": "linear"})
    with pytest.raises(ValueError, match="'linear'"):
        optim.learning_rate_schedule(config, steps_per_epoch=10)


def test_weight_decay_only_on_kernels():
    params = {"conv": {"kernel": np.ones(2)}, "bn": {"scale": np.ones(2), "bias": np.ones(2)}}
    mask = optim.decay_mask(params)
    assert mask == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False}}


def test_optimizer_adds_decay_to_kernel_gradients_then_momentum_sgd(shrink, demo_config):
    """One update by hand: -lr * (g + wd * w) on kernels, -lr * g elsewhere; then momentum."""
    config = shrink(
        demo_config,
        **{
            "optim.schedule": "constant",
            "optim.learning_rate": 0.5,
            "optim.weight_decay": 0.1,
            "optim.momentum": 0.9,
        },
    )
    tx = optim.make_optimizer(config, steps_per_epoch=6)
    params = {"dense": {"kernel": np.full(3, 2.0, np.float32), "bias": np.full(3, 2.0, np.float32)}}
    grads = jax.tree.map(lambda p: np.full_like(p, 1.0), params)
    state = tx.init(params)
    first, state = tx.update(grads, state, params)
    np.testing.assert_allclose(first["dense"]["kernel"], -0.5 * (1.0 + 0.1 * 2.0))
    np.testing.assert_allclose(first["dense"]["bias"], -0.5 * 1.0)
    params = optax.apply_updates(params, first)
    second, _ = tx.update(grads, state, params)
    kernel = params["dense"]["kernel"][0]
    np.testing.assert_allclose(second["dense"]["kernel"], -0.5 * (0.9 * 1.2 + 1.0 + 0.1 * kernel))
    np.testing.assert_allclose(second["dense"]["bias"], -0.5 * (0.9 * 1.0 + 1.0), rtol=1e-6)
