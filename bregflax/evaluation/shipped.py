"""A model as shipped: its val scores through the ``Predictor`` (as users run it, with or
without mirror averaging) and the hours its run spent in train steps, for ``meta.json``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bregflax import data as data_lib
from bregflax import rundir
from bregflax.evaluation import evaluate, plots
from bregflax.inference import predictor


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
