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
import json
import platform
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from bregflax import data as data_lib
from bregflax import rundir
from bregflax.evaluation import evaluate, plots, report
from bregflax.inference import predictor
from bregflax.nn import models
from bregflax.training import checkpoints, xla_cpu

LIMIT_BYTES = 10 * 2**20


def training_time(workdir: Path) -> dict:
    """Hours spent in train steps, from the images/s logged over the whole run (resumes too)."""
    records = plots.read_metrics_jsonl(workdir / "metrics.jsonl")
    rates = [(r["step"], r["train/images_per_sec"]) for r in records if "train/images_per_sec" in r]
    batch = rundir.read_config(workdir).batch_size
    seconds, last = 0.0, 0
    for step, rate in sorted(rates):
        seconds += (step - last) * batch / rate
        last = step
    return {"train_step_hours": round(seconds / 3600, 3), "steps": last}


def shipped_scores(config, variables, names, flip: bool) -> dict:
    """Every metric on val of the model as shipped (with or without mirror averaging)."""
    source = data_lib.load(config.data.source, "val", config.data).source
    records = [source[i] for i in range(len(source))]
    model = predictor.Predictor.from_config(config, variables, flip=flip)
    probs = model.predict_faces(model.preprocess([r["image"] for r in records]))["probs"]
    labels = np.array([r["label"] for r in records], np.int32)
    ids = np.array([str(r.get("source_id", i)) for i, r in enumerate(records)])
    return evaluate.score({"probs": probs, "label": labels, "source_id": ids}, names, 200)


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
    scores = shipped_scores(config, variables, names, args.flip)
    out = predictor.PRETRAINED_DIR / args.name
    out.mkdir(parents=True, exist_ok=True)
    blob = serialization.msgpack_serialize(jax.tree.map(np.asarray, variables))
    if len(blob) > LIMIT_BYTES:
        raise SystemExit(f"weights are {len(blob) / 2**20:.1f} MiB, over the 10 MiB limit")
    (out / "params.msgpack").write_bytes(blob)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    view = "each face and its mirror image, averaged" if args.flip else "each face once"
    title = f"# val (PublicTest, 3,589 faces), checkpoint step {step}, {view}\n\n"
    table = report.categorical_table(scores["categorical"], scores["skew_normalized"])
    (out / "val_table.md").write_text(title + table + "\n")
    (out / "val_per_class.md").write_text(report.per_class_table(scores["per_class"]) + "\n")
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
        "training_time": training_time(args.workdir),
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
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=float) + "\n")
    print(f"wrote {out}: {len(blob) / 2**20:.2f} MiB, val accuracy {cat['accuracy']:.4f}")


if __name__ == "__main__":
    main()
