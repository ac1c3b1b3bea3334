"""Per-block gradient norms and their table, against a direct computation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bregflax.evaluation import diagnostics

BLOCKS = ("stage1_block0", "stage0_block10", "stage0_block2", "stage0_block0")  # not in order


class Toy(nn.Module):
    """Dense "blocks" named as BReGNet's, a BatchNorm and a classifier that is no block."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.BatchNorm(use_running_average=not train, name="stem_bn")(x)
        for name in BLOCKS:
            x = jnp.tanh(nn.Dense(5, name=name)(x))
        return {"logits": nn.Dense(3, name="classifier")(x)}


def test_block_gradient_norms_are_each_blocks_l2_norm_in_network_order():
    images = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    model = Toy()
    variables = model.init(jax.random.key(0, impl="rbg"), images, train=False)
    norms = diagnostics.block_gradient_norms(model, variables, images, labels)
    assert list(norms) == ["stage0_block0", "stage0_block2", "stage0_block10", "stage1_block0"]

    def loss(params):  # cross-entropy in train mode, written out
        out, _ = model.apply(
            {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(out["logits"], labels).mean()

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for name, value in norms.items():
        leaves = jax.tree.leaves(grads[name])
        want = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in leaves))
        np.testing.assert_allclose(value, want, rtol=1e-5)


def test_format_norms_is_a_markdown_table_with_each_runs_spread():
    table = {
        "identity": {"stage0_block0": 2.0, "stage0_block1": 0.2},
        "h3": {"stage0_block0": 30.0, "stage0_block1": 0.3},
    }
    assert diagnostics.spread(table["h3"]) == pytest.approx(2.0)
    assert diagnostics.format_norms(table).splitlines() == [
        "| block | identity | h3 |",
        "| :--- | ---: | ---: |",
        "| stage0_block0 | 2.000e+00 | 3.000e+01 |",
        "| stage0_block1 | 2.000e-01 | 3.000e-01 |",
        "| log10(max/min) | 1.00 | 2.00 |",
    ]
