"""Losses against hand-computed values and optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bregflax.nn import losses


def test_class_weights_are_fmin_over_f():
    # FER2013 training counts: Disgust (436) is the rarest and gets weight 1.
    counts = [3995, 436, 4097, 7215, 4830, 3171, 4965]
    w = losses.class_weights(counts)
    np.testing.assert_allclose(w, [436 / c for c in counts], rtol=1e-6)
    assert w[1] == 1.0 and w.dtype == np.float32


def test_class_weights_edge_cases():
    np.testing.assert_allclose(losses.class_weights([4, 0, 2]), [0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="all zero"):
        losses.class_weights([0, 0])
    with pytest.raises(ValueError, match="non-empty"):
        losses.class_weights([])
    with pytest.raises(ValueError):
        losses.class_weights([3, -1])


def test_unweighted_equals_optax():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((16, 7)) * 3, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 7, 16), jnp.int32)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    np.testing.assert_allclose(losses.weighted_cross_entropy(logits, labels), expected, rtol=1e-6)
    ones = jnp.ones(7)
    np.testing.assert_allclose(
        losses.weighted_cross_entropy(logits, labels, ones), expected, rtol=1e-6
    )


def test_weighted_cross_entropy_by_hand():
    # Two examples, two classes. logits [0, 0] -> CE = log 2 for either label.
    # logits [log 3, 0] with label 0 -> p0 = 3/4 -> CE = log(4/3).
    logits = jnp.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    labels = jnp.array([1, 0])
    weights = jnp.array([0.5, 1.0])
    expected = (1.0 * np.log(2.0) + 0.5 * np.log(4.0 / 3.0)) / 2
    np.testing.assert_allclose(
        losses.weighted_cross_entropy(logits, labels, weights), expected, rtol=1e-6
    )


def test_absent_labels_and_mask_are_skipped():
    logits = jnp.array([[0.0, 0.0], [np.log(3.0), 0.0], [5.0, -5.0]])
    labels = jnp.array([1, 0, -1])  # -1: no label
    np.testing.assert_allclose(
        losses.weighted_cross_entropy(logits, labels),
        (np.log(2.0) + np.log(4.0 / 3.0)) / 2,
        rtol=1e-6,
    )
    mask = jnp.array([0.0, 1.0, 1.0])
    np.testing.assert_allclose(
        losses.weighted_cross_entropy(logits, labels, mask=mask), np.log(4.0 / 3.0), rtol=1e-6
    )
    assert float(losses.weighted_cross_entropy(logits, jnp.array([-1, -1, -1]))) == 0.0


def test_mse_by_hand_and_nan_targets():
    pred = jnp.array([[0.5, -0.5], [0.0, 1.0]])
    target = jnp.array([[1.0, -1.0], [jnp.nan, 0.0]])
    # valid errors: 0.5, 0.5, 1.0 -> (0.25 + 0.25 + 1) / 3
    np.testing.assert_allclose(losses.mse(pred, target), 0.5, rtol=1e-6)
    grad = jax.grad(lambda p: losses.mse(p, target))(pred)
    assert np.all(np.isfinite(grad)) and grad[1, 0] == 0.0
    np.testing.assert_allclose(
        losses.mse(pred, target, mask=jnp.array([1.0, 0.0])), 0.25, rtol=1e-6
    )


def test_mean1_weights_average_one_over_the_examples_with_the_papers_ratios():
    counts = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965])  # FER2013 Training
    paper = losses.class_weights(counts)
    fair = losses.class_weights(counts, "mean1")
    labels = np.repeat(np.arange(7), counts)  # every training example
    assert fair[labels].mean() == pytest.approx(1.0, rel=1e-6)
    assert paper[labels].mean() == pytest.approx(7 * 436 / counts.sum(), rel=1e-6)  # 0.106
    np.testing.assert_allclose(fair / fair[1], paper / paper[1], rtol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        losses.class_weights(counts, "sum1")
