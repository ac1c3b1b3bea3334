"""BatchNorm folded into the convolution before it: same outputs, fewer operations."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bregflax.inference.predictor import Predictor
from bregflax.nn import fold, models


def _random_variables(model, shape, seed=0):
    """Random kernels and non-trivial BatchNorm statistics (scale, shift, mean, variance)."""
    init = functools.partial(model.init, train=False)
    shapes = jax.eval_shape(init, jax.random.key(0), jnp.zeros(shape))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            fan_in = np.prod(leaf.shape[:-1])
            return (rng.normal(size=leaf.shape) * np.sqrt(2 / fan_in)).astype(np.float32)
        if "var" in name:
            return rng.uniform(0.2, 3.0, leaf.shape).astype(np.float32)
        if "scale" in name:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.normal(0, 0.3, leaf.shape).astype(np.float32)  # mean, bias

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _both(model, variables, x):
    plain = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    folded_vars = fold.fold_batchnorm(model, variables, x.shape)
    folded = jax.jit(lambda v, x: fold.apply(model, v, x))(folded_vars, x)
    return plain, folded, folded_vars


TINY = dict(stage_sizes=(1, 1), widths=(8, 16), num_classes=7)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(head="both"),
        dict(shortcut="identity", stem_convs=2, stem_stride=2),
        dict(stem_pool=True, shortcut="h2"),
    ],
    ids=["bregnet-both-heads", "resnet-stride-stem", "pool-h2"],
)
def test_folded_network_equals_the_network(kwargs):
    model = models.BReGNet(**TINY, **kwargs)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 24, 24, 1)).astype(np.float32)
    variables = _random_variables(model, x.shape)
    plain, folded, folded_vars = _both(model, variables, x)
    for key in plain:
        scale = float(np.abs(plain[key]).max())
        np.testing.assert_allclose(folded[key], plain[key], atol=1e-5 * max(scale, 1))
    # Every BatchNorm went: no statistics, no BN parameters, one shift each.
    assert "batch_stats" not in folded_vars
    bn_params = [p for p in jax.tree_util.tree_flatten_with_path(folded_vars["params"])[0]
                 if "bn" in jax.tree_util.keystr(p[0])]  # fmt: skip
    assert bn_params == []
    num_bn = len(fold.conv_bn_pairs(model, variables, x.shape))
    assert num_bn == len(jax.tree.leaves(folded_vars[fold.COLLECTION])) > 0


def test_kernels_are_scaled_and_shifts_computed_in_float64():
    model = models.BReGNet(**TINY)
    variables = _random_variables(model, (1, 24, 24, 1), seed=3)
    folded = fold.fold_batchnorm(model, variables, (1, 24, 24, 1))
    p, s = variables["params"], variables["batch_stats"]
    g = np.float64(p["stem_bn0"]["scale"]) / np.sqrt(np.float64(s["stem_bn0"]["var"]) + 1e-5)
    want = (np.float64(p["stem_conv0"]["kernel"]) * g).astype(np.float32)
    np.testing.assert_array_equal(folded["params"]["stem_conv0"]["kernel"], want)
    shift = np.float64(p["stem_bn0"]["bias"]) - np.float64(s["stem_bn0"]["mean"]) * g
    np.testing.assert_array_equal(
        folded[fold.COLLECTION]["stem_bn0"]["shift"], shift.astype(np.float32)
    )
    # The input variables are left as they were.
    assert "stem_bn0" in variables["params"] and "batch_stats" in variables


class _Odd(nn.Module):
    """A BatchNorm after a ReLU, and a convolution read by two BatchNorms: neither folds."""

    @nn.compact
    def __call__(self, x, train=False):
        y = nn.Conv(4, (3, 3), use_bias=True, name="conv_a")(x)
        y = nn.BatchNorm(use_running_average=not train, name="after_relu")(nn.relu(y))
        z = nn.Conv(4, (3, 3), use_bias=False, name="conv_b")(y)
        first = nn.BatchNorm(use_running_average=not train, name="first")(z)
        second = nn.BatchNorm(use_running_average=not train, name="second")(z)
        w = nn.Conv(4, (1, 1), use_bias=True, name="conv_c")(first + second)
        return {"out": nn.BatchNorm(use_running_average=not train, name="last")(w)}


def test_only_a_batchnorm_right_after_its_own_convolution_is_folded():
    model = _Odd()
    x = np.random.default_rng(2).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    variables = _random_variables(model, x.shape)
    pairs = fold.conv_bn_pairs(model, variables, x.shape)
    assert list(pairs) == [("last",)] and pairs[("last",)][0] == ("conv_c",)
    plain, folded, folded_vars = _both(model, variables, x)
    np.testing.assert_allclose(folded["out"], plain["out"], atol=1e-5)
    assert set(folded_vars["batch_stats"]) == {"after_relu", "first", "second"}


def test_predictor_folds_by_default_and_gives_the_same_outputs():
    folded = Predictor.from_pretrained("fer2013")
    plain = dataclasses.replace(folded, fold=False)
    assert folded.fold and not plain.fold and folded.flip
    assert "batch_stats" not in folded.inference_variables
    assert plain.inference_variables is plain.variables
    faces = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 1), dtype=np.uint8)
    a, b = folded.predict_faces(faces), plain.predict_faces(faces)
    np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-5)
    np.testing.assert_array_equal(a["probs"].argmax(-1), b["probs"].argmax(-1))
