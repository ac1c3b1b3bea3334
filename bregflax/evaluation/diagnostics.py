"""Diagnostics of a model's gradient flow at a given point (e.g. at initialization)."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import numpy as np
import optax

from bregflax.evaluation import report
from bregflax.nn import losses


def block_gradient_norms(
    model: nn.Module, variables: dict, images: jax.Array, labels: jax.Array
) -> dict[str, float]:
    """L2 norm of d(cross-entropy)/d(params) per residual block, in network order.

    The loss is evaluated in training mode (batch statistics), as in a train step.
    """

    def loss(params):
        out, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        return losses.weighted_cross_entropy(out["logits"], labels)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    norms = {name: float(optax.tree.norm(sub)) for name, sub in grads.items() if "_block" in name}
    order = lambda name: tuple(int(n) for n in re.findall(r"\d+", name))  # noqa: E731
    return dict(sorted(norms.items(), key=lambda kv: order(kv[0])))


def spread(norms: dict[str, float]) -> float:
    """log10(max / min) of a run's norms: how many decades its blocks' gradients span."""
    values = np.array(list(norms.values()), np.float64)
    return float(np.log10(values.max() / values.min()))


def format_norms(table: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per block, one column per labelled run, then each run's
    ``spread``."""
    runs = list(table)
    blocks = list(next(iter(table.values())))
    rows = [[b] + [f"{table[r][b]:.3e}" for r in runs] for b in blocks]
    rows.append(["log10(max/min)"] + [f"{spread(table[r]):.2f}" for r in runs])
    return report.markdown_table(["block", *runs], rows)
