"""The train state: flax's TrainState with BatchNorm statistics, built from a config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from bregflax.training import optim, state


def test_state_starts_at_an_int32_step_zero_with_the_models_variables(trained_run_config):
    model = state.build_model(trained_run_config)
    created = state.create_train_state(jax.random.key(3), trained_run_config, model, 6)
    assert isinstance(created, train_state.TrainState)
    assert created.step.dtype == jnp.int32 and int(created.step) == 0
    assert state.input_shape(trained_run_config) == (1, 48, 48, 1)
    shapes = jax.eval_shape(model.init, jax.random.key(3), jnp.zeros((1, 48, 48, 1)))
    as_shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
    assert as_shapes(created.params) == as_shapes(shapes["params"])
    assert as_shapes(created.batch_stats) == as_shapes(shapes["batch_stats"])
    other = state.create_train_state(jax.random.key(4), trained_run_config, model, 6)
    differ = jax.tree.map(lambda a, b: not np.array_equal(a, b), created.params, other.params)
    assert any(jax.tree.leaves(differ)), "the rng must seed the parameters"
    # BatchNorm starts from mean 0 and variance 1; momentum SGD from zero velocity.
    start = jax.tree_util.tree_map_with_path(
        lambda path, x: np.all(x == (0.0 if path[-1].key == "mean" else 1.0)), created.batch_stats
    )
    assert all(jax.tree.leaves(start))
    assert all(np.all(t == 0) for t in jax.tree.leaves(created.opt_state))


@pytest.mark.slow  # compiles the model's init optimized too: about 10 s
def test_the_states_variables_are_the_models_init_within_a_few_ulps(trained_run_config):
    """The init is compiled unoptimized on the CPU (fast to compile); its values are the
    optimized program's (XLA's default, ``jax.jit(model.init)``) but for rounding."""
    model = state.build_model(trained_run_config)
    created = state.create_train_state(jax.random.key(3), trained_run_config, model, 6)
    reference = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, 48, 48, 1)), train=False))(
        jax.random.key(3)
    )

    def ulps(a, b):
        a, b = (np.asarray(x, np.float32).view(np.int32).astype(np.int64) for x in (a, b))
        return int(np.abs(a - b).max())

    for name in ("params", "batch_stats"):
        distances = jax.tree.leaves(jax.tree.map(ulps, getattr(created, name), reference[name]))
        assert max(distances) <= 8, (name, distances)


def test_apply_gradients_steps_the_optimizer_and_replaces_batch_stats(trained_run_config):
    """What the train step relies on: one optimizer update, step + 1 (still int32), and the
    BatchNorm statistics it is handed."""
    model = state.build_model(trained_run_config)
    before = state.create_train_state(jax.random.key(0), trained_run_config, model, 6)
    grads = jax.tree.map(jnp.ones_like, before.params)
    stats = jax.tree.map(lambda s: s + 1.0, before.batch_stats)
    after = jax.jit(lambda s: s.apply_gradients(grads=grads, batch_stats=stats))(before)
    assert after.step.dtype == jnp.int32 and int(after.step) == 1
    tx = optim.make_optimizer(trained_run_config, 6)
    updates, _ = tx.update(grads, tx.init(before.params), before.params)
    expected = optax.apply_updates(before.params, updates)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), after.params, expected
    )
    jax.tree.map(np.testing.assert_array_equal, after.batch_stats, stats)


def test_half_precision_picks_bfloat16_compute(trained_run_config):
    assert state.build_model(trained_run_config).dtype == jnp.float32
    trained_run_config.half_precision = True
    model = state.build_model(trained_run_config)
    assert model.dtype == jnp.bfloat16
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 48, 48, 1)))
    assert {p.dtype for p in jax.tree.leaves(shapes["params"])} == {jnp.dtype(jnp.float32)}
