"""Copies a training run's best checkpoint into the package as shipped weights.

    python scripts/package_weights.py --workdir=runs/shipped --name=fer2013 \
        --command="python -m bregflax.main --config=configs/fer2013_small.py ..."

Evaluates the best checkpoint on val (every metric, ``DIR/eval/``) and writes
``bregflax/weights/<name>/``: ``params.msgpack`` (params and BatchNorm statistics),
``config.json``, ``meta.json`` (class names, val metrics, the training command, time and
hardware), and ``val_table.md`` / ``val_per_class.md`` for the model as shipped (``--flip``:
each face averaged with its mirror image).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from bregflax.evaluation import evaluate, report, shipped
from bregflax.inference import predictor, weights
from bregflax.nn import models
from bregflax.training import checkpoints, xla_cpu

LIMIT_BYTES = 10 * 2**20


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--name", default="fer2013")
    p.add_argument("--command", required=True, help="the command that trained the run")
    p.add_argument("--hardware", default="", help="where it trained (default: this machine)")
    p.add_argument("--flip", action="store_true", help="ship with mirror-image averaging")
    args = p.parse_args(argv)
    xla_cpu.apply()  # evaluation's XLA:CPU flags, before jax computes anything
    single = evaluate.evaluate_workdir(args.workdir, "val", "best")
    config, variables, step = checkpoints.load_variables(args.workdir, "best")
    variables = jax.device_get(variables)
    names = predictor.class_names(config)
    scores = shipped.shipped_scores(config, variables, names, args.flip)
    out = predictor.PRETRAINED_DIR / args.name
    view = "each face and its mirror image, averaged" if args.flip else "each face once"
    title = f"# val (PublicTest, 3,589 faces), checkpoint step {step}, {view}\n\n"
    tables = {
        "val_table.md": title
        + report.categorical_table(scores["categorical"], scores["skew_normalized"])
        + "\n",
        "val_per_class.md": report.per_class_table(scores["per_class"]) + "\n",
    }
    cat, skew = scores["categorical"], scores["skew_normalized"]
    meta = {
        "class_names": list(names),
        "flip": args.flip,
        "model": config.model.name,
        "params": models.num_params(variables["params"]),
        "trained_on": "FER2013 Training split (28,709 faces); checkpoint chosen on PublicTest",
        "command": args.command,
        "checkpoint_step": int(step),
        "epochs": config.num_epochs,
        "training_time": shipped.training_time(args.workdir),
        "hardware": args.hardware or f"{platform.machine()}, {jax.devices()[0].device_kind}",
        "val": {
            "split": "PublicTest (3,589 faces)",
            "accuracy": cat["accuracy"],
            "skew_normalized": skew,
            "categorical": cat,
            "per_class": scores["per_class"],
            "accuracy_without_flip": single["categorical"]["accuracy"],
        },
    }
    size = len(serialization.msgpack_serialize(jax.tree.map(np.asarray, variables)))
    if size > LIMIT_BYTES:
        raise SystemExit(f"weights are {size / 2**20:.1f} MiB, over the 10 MiB limit")
    weights.write(out, config, jax.tree.map(np.asarray, variables), meta, tables)
    print(f"wrote {out}: {size / 2**20:.2f} MiB, val accuracy {cat['accuracy']:.4f}")


if __name__ == "__main__":
    main()
