"""The paper's losses: class-weighted softmax cross-entropy and valence/arousal MSE.

Absent targets are masked out, never turned into NaN: a label of -1 is skipped by the
cross-entropy and a NaN valence/arousal by the MSE. Each loss is a mean over the
examples (or values) that count, so a batch with none of them gives 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

WEIGHT_SCALES = ("paper", "mean1")


def class_weights(counts, scale: str = "paper") -> np.ndarray:
    """H_ii = f_min / f_i from training-label counts; the rarest class gets 1.

    A class with no training examples never occurs as a training label; it gets
    weight 1 (that of the rarest class) so that evaluation losses stay finite.
    ``scale="mean1"`` multiplies every weight by one factor so that their mean over the
    training examples, sum_i f_i H_ii / sum_i f_i, is 1: the same class ratios with the
    loss (and its gradient steps) at the regular loss's size. The paper's weights average
    K f_min / N (0.106 on FER2013's Training split).
    """
    if scale not in WEIGHT_SCALES:
        raise ValueError(f"scale must be one of {WEIGHT_SCALES}, got {scale!r}")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0):
        raise ValueError(f"counts must be a non-empty 1-D array of counts >= 0, got {counts}")
    present = counts > 0
    if not present.any():
        raise ValueError("class counts are all zero: no training labels to weight by")
    f_min = counts[present].min()
    weights = np.where(present, f_min / np.where(present, counts, 1.0), 1.0)
    if scale == "mean1":
        weights = weights * (counts.sum() / np.sum(counts * weights))
    return weights.astype(np.float32)


def _mean_over(values: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def weighted_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    weights: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> jax.Array:
    """mean_n H[y_n, y_n] * CE(logits_n, y_n) over examples with a label (y >= 0) and mask 1.

    With ``weights=None`` (H = I) this is optax's softmax cross-entropy, averaged.
    """
    labels = jnp.asarray(labels)
    valid = labels >= 0
    if mask is not None:
        valid = valid & (jnp.asarray(mask) > 0)
    safe = jnp.where(valid, labels, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    w = jnp.ones_like(ce) if weights is None else jnp.asarray(weights, jnp.float32)[safe]
    return _mean_over(ce * w, valid.astype(jnp.float32))


def mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error over the finite target values (NaN marks an absent value).

    ``mask`` (one per example) drops whole examples, e.g. padding.
    """
    target = jnp.asarray(target, jnp.float32)
    valid = jnp.isfinite(target)
    if mask is not None:
        valid = valid & (jnp.asarray(mask).reshape(-1, *([1] * (target.ndim - 1))) > 0)
    err = jnp.where(valid, pred.astype(jnp.float32) - jnp.where(valid, target, 0.0), 0.0)
    return _mean_over(err * err, valid.astype(jnp.float32))
