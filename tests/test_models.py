"""Shapes, parameter counts, BatchNorm modes, dtypes and gradient flow of the models."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bregflax.evaluation import diagnostics
from bregflax.nn import models


def _key(seed: int) -> jax.Array:
    """A PRNG key whose random bits compile several times faster than the default's; the
    initializers' distributions are the same."""
    return jax.random.key(seed, impl="rbg")


def _images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# One input shape for (almost) every test: op-by-op execution compiles each operation once
# per shape, so the tests after the first reuse what it compiled.
SHAPE = (2, 16, 16, 1)


def _init(model, shape=SHAPE, seed=0):
    x = _images(shape, seed)
    return x, model.init(_key(seed + 1), x, train=False)


def _num_params(model, shape=(1, 48, 48, 1)) -> int:
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    return models.num_params(variables["params"])


@pytest.mark.parametrize(
    "name, target, depth",
    [("BReGNet39", 4.9e6, 39), ("ResNet110", 7.2e6, 110)],
)
def test_paper_models_match_parameter_counts_and_depth(name, target, depth):
    model = models.MODELS.get(name)()
    assert abs(_num_params(model) - target) / target < 0.05
    assert models.weighted_layers(model.stage_sizes, model.stem_convs) == depth


def test_named_partials_and_shortcuts():
    assert models.BReGNet39().shortcut == "h3"
    assert models.ResNet110().shortcut == "identity"
    # The CPU pair differs only in the shortcut, so its parameter counts are equal.
    assert _num_params(models.BReGNetCPU()) == _num_params(models.ResNetCPU())


@pytest.mark.parametrize("depth", models.DEPTHS)
def test_depth_family(depth):
    model = models.MODELS.get(f"BReGNet{depth}")()
    assert models.weighted_layers(model.stage_sizes, model.stem_convs) == depth
    with pytest.raises(ValueError, match="6n \\+ 3"):
        models.depth_family(depth + 1)


def test_heads_and_input_shapes():
    x, variables = _init(models.BReGNetTiny(head="both", num_classes=8))
    for head, keys in [("classes", {"logits"}), ("va", {"va"}), ("both", {"logits", "va"})]:
        model = models.BReGNetTiny(head=head, num_classes=8)
        out = model.apply(variables, x, train=False)
        assert set(out) == keys
        if "logits" in out:
            chex.assert_shape(out["logits"], (2, 8))
        if "va" in out:
            chex.assert_shape(out["va"], (2, 2))
            assert np.all(np.abs(out["va"]) <= 1.0)
        chex.assert_tree_all_finite(out)

        # Any image size and channel count (shapes only: nothing is computed).
        def forward(x, model=model):
            return model.apply(model.init(_key(0), x, train=False), x, train=False)

        rgb = jax.ShapeDtypeStruct((3, 20, 12, 3), jnp.float32)
        shapes = {k: v.shape for k, v in jax.eval_shape(forward, rgb).items()}
        assert shapes == {k: (3, v.shape[1]) for k, v in out.items()}


def test_bad_head_is_a_clear_error():
    with pytest.raises(ValueError, match="head must be one of"):
        _init(models.BReGNetTiny(head="emotion"))


def test_train_mode_uses_batch_statistics_and_eval_mode_running_averages():
    model = models.BReGNetTiny()
    x, variables = _init(model)
    out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    changed = jax.tree.map(
        lambda a, b: not np.allclose(a, b), variables["batch_stats"], updates["batch_stats"]
    )
    assert all(jax.tree.leaves(changed)), (
        "every BatchNorm's running statistics must move in train mode"
    )
    other = x.copy()
    other[1] = _images(SHAPE[1:], seed=5)  # the first example with another beside it
    # Eval: an example's output does not depend on the rest of the batch.
    full = model.apply(variables, x, train=False)["logits"]
    beside_other = model.apply(variables, other, train=False)["logits"]
    np.testing.assert_allclose(full[0], beside_other[0], rtol=1e-5, atol=1e-5)
    # Train: it does (batch statistics).
    train_other = model.apply(variables, other, train=True, mutable=["batch_stats"])[0]["logits"]
    assert not np.allclose(out["logits"][0], train_other[0], atol=1e-4)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    model = models.BReGNetTiny(dtype=jnp.bfloat16, head="both")
    x, variables = _init(model)
    chex.assert_trees_all_equal_dtypes(
        variables["params"], jax.tree.map(lambda p: p.astype(jnp.float32), variables["params"])
    )
    out = model.apply(variables, x, train=False)
    chex.assert_type([out["logits"], out["va"]], jnp.float32)
    ref = models.BReGNetTiny(head="both").apply(variables, x, train=False)
    np.testing.assert_allclose(out["logits"], ref["logits"], rtol=0.1, atol=0.1)
    intermediates = model.apply(
        variables, x, train=False, capture_intermediates=True, mutable=["intermediates"]
    )[1]
    block_out = intermediates["intermediates"]["stage0_block0"]["__call__"][0]
    assert block_out.dtype == jnp.bfloat16


def test_projection_only_where_the_shape_changes():
    model = models.BReGNetTiny()
    _, variables = _init(model)
    params = variables["params"]
    assert "proj_conv" not in params["stage0_block0"]  # 16 -> 16, stride 1
    assert "proj_conv" in params["stage1_block0"]  # 16 -> 32, stride 2
    out = model.apply(
        variables,
        jnp.zeros(SHAPE),
        train=False,
        capture_intermediates=True,
        mutable=["intermediates"],
    )[1]
    shapes = {k: v["__call__"][0].shape for k, v in out["intermediates"].items() if "block" in k}
    assert shapes == {
        "stage0_block0": (2, 16, 16, 16),
        "stage1_block0": (2, 8, 8, 32),
        "stage2_block0": (2, 4, 4, 64),
    }


def test_block_applies_the_named_shortcut():
    """With F's last BN scaled to zero the block is relu(H(x)): the shortcut is visible."""
    conv = functools.partial(models.nn.Conv, use_bias=False)
    norm = functools.partial(models.nn.BatchNorm, use_running_average=True)
    x = jnp.linspace(0.0, 5.0, 2 * 16 * 16 * 16).reshape(2, 16, 16, 16)  # as in BReGNetTiny
    for shortcut, expected in [
        ("identity", x),
        ("h3", jnp.arctan(x)),
        ("h1", jax.nn.log_sigmoid(x)),
    ]:
        block = models.BReGBlock(16, conv, norm, shortcut)
        variables = block.init(_key(0), x)
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: jnp.zeros_like(p) if "bn2" in str(path) else p, variables["params"]
        )
        y = block.apply({**variables, "params": params}, x)
        np.testing.assert_allclose(y, jax.nn.relu(expected), rtol=1e-6, atol=1e-6)


def test_zero_init_residual_makes_each_block_its_shortcut():
    model = models.BReGNetTiny(zero_init_residual=True, stage_sizes=(2, 1, 1))
    x, variables = _init(model)
    _, state = model.apply(
        variables, x, train=False, capture_intermediates=True, mutable=["intermediates"]
    )
    inter = state["intermediates"]
    first = inter["stage0_block0"]["__call__"][0]
    second = inter["stage0_block1"]["__call__"][0]
    np.testing.assert_allclose(second, jax.nn.relu(jnp.arctan(first)), rtol=1e-6, atol=1e-6)


def test_create_model_from_config():
    config = ml_collections.ConfigDict(
        {
            "name": "BReGNet39",
            "shortcut": "h1",
            "num_classes": 8,
            "head": "both",
            "widths": [8, 16, 32],
        }
    )
    model = models.create_model(config, dtype=jnp.bfloat16)
    assert (model.shortcut, model.num_classes, model.head, model.widths, model.dtype) == (
        "h1",
        8,
        "both",
        (8, 16, 32),
        jnp.bfloat16,
    )
    with pytest.raises(KeyError, match="unknown model"):
        models.create_model(ml_collections.ConfigDict({"name": "VGG16"}))


@pytest.mark.parametrize(
    "name, size",
    [
        pytest.param("BReGNetTiny", 16, id="tiny-2x3"),  # 2 stages of 3 blocks
        pytest.param("BReGNet39", 48, marks=pytest.mark.slow),
        pytest.param("ResNet110", 48, marks=pytest.mark.slow),
    ],
)
def test_gradient_reaches_every_block_at_init(name, size):
    """Per-block gradient norms at initialization, identity shortcut against H3.

    Every block gets a finite, non-zero gradient. Identity's norm jumps up at each stage
    entry, whose projection's BN rescales the stream it carries. H3 bounds the stream
    (|atan| < pi/2), so each batch-normalized F passes gradients back with a gain above 1:
    its norms grow at every block from the output to the input, over more decades than
    identity's. A bounded H' does not bound the gradients at initialization.
    """
    images = _images((8, size, size, 1))
    labels = jnp.arange(8) % 7
    stages = {"stage_sizes": (3, 3), "widths": (16, 32)} if name == "BReGNetTiny" else {}
    table = {}
    for shortcut in ("identity", "h3"):  # the same parameters: H has none
        model = models.MODELS.get(name)(shortcut=shortcut, **stages)
        if shortcut == "identity":
            variables = model.init(_key(1), images[:2], train=False)
        norms = diagnostics.block_gradient_norms(model, variables, images, labels)
        assert len(norms) == sum(model.stage_sizes)
        values = np.array(list(norms.values()))
        assert np.all(np.isfinite(values)) and np.all(values > 0), norms
        table[shortcut] = norms
    print("\n" + diagnostics.format_norms(table))
    ident, h3 = (np.array(list(table[s].values())) for s in ("identity", "h3"))
    entries = np.cumsum(model.stage_sizes)[:-1]  # first block of each later stage
    assert np.all(ident[entries] > ident[entries - 1]), table["identity"]
    assert np.all(np.diff(h3) < 0), table["h3"]
    assert diagnostics.spread(table["h3"]) > diagnostics.spread(table["identity"])


def test_conv_implementations_give_the_same_gradients():
    """Every ``conv_impl`` of a network with strided stage entries: XLA's gradient, up to
    float32 rounding of each array's scale (``phased`` sums strided input gradients in
    another order)."""
    images = _images((4, *SHAPE[1:]))
    labels = jnp.arange(4) % 7
    impls = ("xla", "materialized", "phased")
    net = functools.partial(models.BReGNet, stage_sizes=(1, 1), widths=(16, 32))
    variables = net().init(_key(1), images[:2], train=False)  # the same for every conv_impl

    @jax.jit
    def gradients(params, images):
        def loss(params, images, model):
            out, _ = model.apply({**variables, "params": params}, images, mutable=["batch_stats"])
            log_p = jax.nn.log_softmax(out["logits"])
            return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], 1))

        return {i: jax.grad(loss, (0, 1))(params, images, net(conv_impl=i)) for i in impls}

    grads = gradients(variables["params"], images)
    assert "proj_conv" in grads["xla"][0]["stage1_block0"]  # a stride-2 stage entry
    for impl in ("materialized", "phased"):
        for got, want in zip(
            jax.tree.leaves(grads[impl]), jax.tree.leaves(grads["xla"]), strict=True
        ):
            scale = float(np.max(np.abs(want)))
            assert scale > 0
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
