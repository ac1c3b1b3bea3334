"""``bregflax export --workdir DIR --out model.bin``: the inference function as StableHLO.

The file runs with :mod:`bregflax.inference.runtime` (jax only). Its input is uint8 face crops
(n, S, S, C) with a symbolic batch n; its outputs are the Predictor's ``probs`` and ``va``,
computed as the Predictor computes them: each BatchNorm folded into the convolution before
it (:mod:`bregflax.nn.fold`). It is lowered for CPU, CUDA and TPU.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import export

import bregflax
from bregflax import errors, flags, safe_io, summary
from bregflax.inference import runtime
from bregflax.inference.predictor import Predictor, forward

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


def check_out(out: str | Path, workdir: str | None) -> Path:
    """Refuses (ValueError, one line) an ``--out`` that lies in no folder, is a folder or a
    symbolic link, is a file of the run (by any route), or is a file other than an earlier
    export: an export replaces only an export."""
    path = Path(out)
    if path.is_symlink():
        raise ValueError(f"--out {out} is a symbolic link: name the file itself")
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder: name a file in it, e.g. {path / 'model.bin'}")
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist"
        raise ValueError(f"--out {out}: folder {path.parent} {what}; create it or choose another")
    if workdir and path.exists():
        run = Path(workdir)
        for root, _, names in os.walk(run):
            for name in names:
                if safe_io.same_file(path, Path(root) / name):
                    raise ValueError(
                        f"--out {out} is a file of the run in {workdir} ({Path(root) / name}): "
                        "choose another file name"
                    )
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(len(runtime.MAGIC))
        if head != runtime.MAGIC:
            raise ValueError(
                f"--out {out} exists and is not a bregflax export: choose another file name "
                "(or delete it)"
            )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    errors.exit_on_signals()
    args = parse_args(argv)
    try:
        out = check_out(args.out, args.workdir)
        predictor = Predictor.load(args.workdir, args.checkpoint, args.model)
        blob = export_predictor(predictor, [p for p in args.platforms.split(",") if p])
        protect = [args.workdir] if args.workdir else []
        safe_io.write_atomic(out, blob, protect=protect)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write --out {args.out}: {errors.write_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}): nothing written", file=sys.stderr)
        return errors.exit_code(e)
    platforms = [p for p in args.platforms.split(",") if p]
    source = f"{args.workdir} ({args.checkpoint})" if args.workdir else f"model {args.model}"
    print(summary.export_summary(args.out, len(blob), source, platforms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
