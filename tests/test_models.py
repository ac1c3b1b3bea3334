"""Shapes, parameter counts, BatchNorm modes, dtypes and gradient flow of the models."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bregflax import diagnostics, models


def _init(model, shape, seed=0):
    x = jax.random.normal(jax.random.key(seed), shape)
    return x, model.init(jax.random.key(seed + 1), x, train=False)


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
    assert (
        models.BReGNet39.keywords["shortcut"] if "shortcut" in models.BReGNet39.keywords else True
    )
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


@pytest.mark.parametrize(
    "head, keys", [("classes", {"logits"}), ("va", {"va"}), ("both", {"logits", "va"})]
)
@pytest.mark.parametrize("shape", [(2, 48, 48, 1), (3, 64, 80, 3)], ids=["gray48", "rgb64x80"])
def test_heads_and_input_shapes(head, keys, shape):
    model = models.BReGNetTiny(head=head, num_classes=8)
    x, variables = _init(model, shape)
    out = model.apply(variables, x, train=False)
    assert set(out) == keys
    if "logits" in out:
        chex.assert_shape(out["logits"], (shape[0], 8))
    if "va" in out:
        chex.assert_shape(out["va"], (shape[0], 2))
        assert np.all(np.abs(out["va"]) <= 1.0)
    chex.assert_tree_all_finite(out)


def test_bad_head_is_a_clear_error():
    with pytest.raises(ValueError, match="head must be one of"):
        _init(models.BReGNetTiny(head="emotion"), (1, 48, 48, 1))


def test_train_mode_uses_batch_statistics_and_eval_mode_running_averages():
    model = models.BReGNetTiny()
    x, variables = _init(model, (8, 48, 48, 1))
    out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    changed = jax.tree.map(
        lambda a, b: not np.allclose(a, b), variables["batch_stats"], updates["batch_stats"]
    )
    assert all(jax.tree.leaves(changed)), (
        "every BatchNorm's running statistics must move in train mode"
    )
    # Eval: an example's output does not depend on the rest of the batch.
    full = model.apply(variables, x, train=False)["logits"]
    alone = model.apply(variables, x[:1], train=False)["logits"]
    np.testing.assert_allclose(full[:1], alone, rtol=1e-5, atol=1e-5)
    # Train: it does (batch statistics).
    train_alone = model.apply(variables, x[:2], train=True, mutable=["batch_stats"])[0]["logits"]
    assert not np.allclose(out["logits"][:2], train_alone, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    model = models.BReGNetTiny(dtype=jnp.bfloat16, head="both")
    x, variables = _init(model, (2, 48, 48, 1))
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
    _, variables = _init(model, (1, 48, 48, 1))
    params = variables["params"]
    assert "proj_conv" not in params["stage0_block0"]  # 16 -> 16, stride 1
    assert "proj_conv" in params["stage1_block0"]  # 16 -> 32, stride 2
    out = model.apply(
        variables,
        jnp.zeros((1, 48, 48, 1)),
        train=False,
        capture_intermediates=True,
        mutable=["intermediates"],
    )[1]
    shapes = {k: v["__call__"][0].shape for k, v in out["intermediates"].items() if "block" in k}
    assert shapes == {
        "stage0_block0": (1, 48, 48, 16),
        "stage1_block0": (1, 24, 24, 32),
        "stage2_block0": (1, 12, 12, 64),
    }


def test_block_applies_the_named_shortcut():
    """With F's last BN scaled to zero the block is relu(H(x)): the shortcut is visible."""
    conv = functools.partial(models.nn.Conv, use_bias=False)
    norm = functools.partial(models.nn.BatchNorm, use_running_average=True)
    x = jnp.linspace(0.0, 5.0, 2 * 4 * 4 * 8).reshape(2, 4, 4, 8)
    for shortcut, expected in [
        ("identity", x),
        ("h3", jnp.arctan(x)),
        ("h1", jax.nn.log_sigmoid(x)),
    ]:
        block = models.BReGBlock(8, conv, norm, shortcut)
        variables = block.init(jax.random.key(0), x)
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: jnp.zeros_like(p) if "bn2" in str(path) else p, variables["params"]
        )
        y = block.apply({**variables, "params": params}, x)
        np.testing.assert_allclose(y, jax.nn.relu(expected), rtol=1e-6, atol=1e-6)


def test_zero_init_residual_makes_each_block_its_shortcut():
    model = models.BReGNetTiny(zero_init_residual=True, stage_sizes=(2, 1, 1))
    x, variables = _init(model, (2, 48, 48, 1))
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


@pytest.mark.parametrize("name", ["BReGNet39", "ResNet110"])
def test_gradient_reaches_every_block_at_init(name):
    images = jax.random.normal(jax.random.key(0), (8, 48, 48, 1))
    labels = jnp.arange(8) % 7
    table = {}
    for shortcut in ("identity", "h3"):
        model = models.MODELS.get(name)(shortcut=shortcut)
        variables = model.init(jax.random.key(1), images, train=False)
        norms = diagnostics.block_gradient_norms(model, variables, images, labels)
        assert len(norms) == sum(model.stage_sizes)
        values = np.array(list(norms.values()))
        assert np.all(np.isfinite(values)) and np.all(values > 0), norms
        table[f"{name} {shortcut}"] = norms
    print("\n" + diagnostics.format_norms(table))


def test_conv_implementations_give_the_same_gradients():
    """Every ``conv_impl`` of a network with strided stage entries: XLA's gradient, up to
    float32 rounding of each array's scale (``phased`` sums strided input gradients in
    another order)."""
    images = jax.random.normal(jax.random.key(0), (4, 48, 48, 1))
    labels = jnp.arange(4) % 7
    grads = {}
    for impl in ("xla", "materialized", "phased"):
        model = models.BReGNetTiny(conv_impl=impl)
        variables = model.init(jax.random.key(1), images, train=False)

        def loss(params, images, model=model, variables=variables):
            out, _ = model.apply({**variables, "params": params}, images, mutable=["batch_stats"])
            log_p = jax.nn.log_softmax(out["logits"])
            return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], 1))

        grads[impl] = jax.jit(jax.grad(loss, (0, 1)))(variables["params"], images)
    assert "proj_conv" in grads["xla"][0]["stage1_block0"]  # a stride-2 stage entry
    for impl in ("materialized", "phased"):
        for got, want in zip(
            jax.tree.leaves(grads[impl]), jax.tree.leaves(grads["xla"]), strict=True
        ):
            scale = float(jnp.max(jnp.abs(want)))
            assert scale > 0
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
