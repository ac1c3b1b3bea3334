"""``bregflax export --workdir DIR --out model.bin``: the inference function as StableHLO.

The file runs with :mod:`bregflax.runtime` (jax only). Its input is uint8 face crops
(n, S, S, C) with a symbolic batch n; its outputs are the Predictor's ``probs`` and ``va``,
computed as the Predictor computes them: each BatchNorm folded into the convolution before
it (:mod:`bregflax.fold`). It is lowered for CPU, CUDA and TPU.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import export

import bregflax
from bregflax import flags, runtime, summary
from bregflax.predictor import Predictor, forward

PLATFORMS = flags.PLATFORMS


def export_predictor(predictor: Predictor, platforms: Sequence[str] = PLATFORMS) -> bytes:
    """The predictor's forward pass, weights included, serialized with its header."""
    fn = jax.jit(
        functools.partial(
            forward,
            predictor.model,
            predictor.inference_variables,
            flip=predictor.flip,
            folded=predictor.fold,
        )
    )
    (batch,) = export.symbolic_shape("n")
    shape = (batch, predictor.image_size, predictor.image_size, predictor.channels)
    exported = export.export(fn, platforms=tuple(platforms))(jax.ShapeDtypeStruct(shape, jnp.uint8))
    header = {
        "format": "bregflax-export",
        "bregflax": bregflax.__version__,
        "jax": jax.__version__,
        "class_names": list(predictor.class_names),
        "image_size": predictor.image_size,
        "channels": predictor.channels,
        "input": "uint8 face crops (n, S, S, C), scaled in the model to [-1, 1]",
        "flip": predictor.flip,
        "batchnorm": "folded into the convolutions" if predictor.fold else "as trained",
        "outputs": sorted(exported.out_tree.unflatten(range(exported.out_tree.num_leaves))),
        "platforms": list(exported.platforms),
        "source": predictor.info,
    }
    return runtime.pack(header, bytes(exported.serialize()))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return flags.export_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        predictor = Predictor.load(args.workdir, args.checkpoint, args.model)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    platforms = [p for p in args.platforms.split(",") if p]
    blob = export_predictor(predictor, platforms)
    Path(args.out).write_bytes(blob)
    source = f"{args.workdir} ({args.checkpoint})" if args.workdir else f"model {args.model}"
    print(summary.export_summary(args.out, len(blob), source, platforms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
