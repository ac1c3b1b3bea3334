"""Diagnostics of a model's gradient flow at a given point (e.g. at initialization)."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bregflax import losses


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
    norms = {
        name: float(jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(sub))))
        for name, sub in grads.items()
        if "_block" in name
    }
    order = lambda name: tuple(int(n) for n in re.findall(r"\d+", name))  # noqa: E731
    return dict(sorted(norms.items(), key=lambda kv: order(kv[0])))


def format_norms(table: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per block, one column per labelled run."""
    runs = list(table)
    blocks = list(next(iter(table.values())))
    lines = ["| block | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for b in blocks:
        lines.append(f"| {b} | " + " | ".join(f"{table[r][b]:.3e}" for r in runs) + " |")
    ratios = [np.log10(max(t.values()) / min(t.values())) for t in table.values()]
    lines.append("| log10(max/min) | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    return "\n".join(lines)
