"""Prints per-block gradient norms at initialization, identity shortcut against H3.

python benchmarks/gradient_norms.py [--batch 32] [--seed 0]
"""

import argparse

import jax
import jax.numpy as jnp

from bregflax.evaluation import diagnostics
from bregflax.nn import models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    key_x, key_init = jax.random.split(jax.random.key(args.seed))
    images = jax.random.normal(key_x, (args.batch, 48, 48, 1))
    labels = jnp.arange(args.batch) % 7
    for name in ("BReGNet39", "ResNet110"):
        table = {}
        for shortcut in ("identity", "h3"):
            model = models.MODELS.get(name)(shortcut=shortcut)
            variables = model.init(key_init, images, train=False)
            table[f"{name} {shortcut}"] = diagnostics.block_gradient_norms(
                model, variables, images, labels
            )
        print(f"\n## {name}\n")
        print(diagnostics.format_norms(table))


if __name__ == "__main__":
    main()
