"""Copies a training run's best checkpoint into the package as shipped weights.

    python scripts/package_weights.py --workdir=runs/shipped --name=fer2013 \
        --command="python -m bregflax.main --config=configs/fer2013_small.py ..."

Evaluates the best checkpoint on val (every metric, ``DIR/eval/``) and writes
``bregflax/weights/<name>/``: ``params.msgpack`` (params and BatchNorm statistics),
``config.json``, ``meta.json`` (class names, val metrics, the training command, time and
hardware) and the evaluation's ``val_table.md`` / ``val_per_class.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
from flax import serialization

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bregflax import evaluate, plots, predict, train  # noqa: E402

LIMIT_BYTES = 10 * 2**20


def training_time(workdir: Path) -> dict:
    """Wall time from config.json to the last metrics line, and time in train steps."""
    records = plots.read_metrics_jsonl(workdir / "metrics.jsonl")
    rates = [(r["step"], r["train/images_per_sec"]) for r in records if "train/images_per_sec" in r]
    config = train.load_config(workdir)
    steps_time, last = 0.0, 0
    for step, rate in rates:
        steps_time += (step - last) * config.batch_size / rate
        last = step
    wall = (workdir / "metrics.jsonl").stat().st_mtime - (workdir / "config.json").stat().st_mtime
    return {"wall_hours": round(wall / 3600, 3), "train_step_hours": round(steps_time / 3600, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--name", default="fer2013")
    p.add_argument("--command", required=True, help="the command that trained the run")
    p.add_argument("--hardware", default="", help="where it trained (default: this machine)")
    args = p.parse_args()
    scores = evaluate.evaluate_workdir(args.workdir, "val", "best")
    config, state, step = train.load_trained(args.workdir, "best")
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    out = predict.PRETRAINED_DIR / args.name
    out.mkdir(parents=True, exist_ok=True)
    blob = serialization.msgpack_serialize(jax.tree.map(np.asarray, variables))
    if len(blob) > LIMIT_BYTES:
        raise SystemExit(f"weights are {len(blob) / 2**20:.1f} MiB, over the 10 MiB limit")
    (out / "params.msgpack").write_bytes(blob)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    for name in ("val_table.md", "val_per_class.md"):
        shutil.copy(args.workdir / "eval" / name, out / name)
    cat, skew = scores["categorical"], scores["skew_normalized"]
    meta = {
        "class_names": list(predict.class_names(config)),
        "model": config.model.name,
        "params": int(sum(np.size(x) for x in jax.tree.leaves(variables["params"]))),
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
        },
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=float) + "\n")
    print(f"wrote {out}: {len(blob) / 2**20:.2f} MiB, val accuracy {cat['accuracy']:.4f}")


if __name__ == "__main__":
    main()
