"""Builds one experiment of the paper's tables from a parameter string.

A table config calls ``build(arg, defaults)``; ``arg`` is the part after ``:`` in
``--config=configs/table1.py:h3,weighted,fer2013``: comma-separated tokens, each naming a
value of one field (its order does not matter), or ``seed=N`` / ``depth=N``.

Fields: ``arch`` (bregnet | resnet), ``shortcut`` (identity | h1 | h2 | h3), ``loss``
(regular | weighted), ``dataset`` (fer2013 | affectnet | affectnet_va | aff_wild),
``scale`` (paper | cpu | test), ``seed`` and ``depth`` (Fig. 5 only).

Scales: ``paper`` is the paper's pair (BReGNet39 / ResNet110) and optimizer (momentum SGD,
lr 0.01, weight decay 1e-4). ``cpu`` is the budget-matched pair BReGNetSmall / ResNetSmall
(0.70M parameters each, differing only in the shortcut) for 2 epochs with a cosine
schedule from lr 0.05, which a 2-core CPU finishes in ~6 min per FER2013 run. ``test`` is a
few steps of BReGNetTiny on synthetic data, for the test suite.
"""

from __future__ import annotations

import ml_collections

from configs import aff_wild, affectnet, affectnet_va, fer2013

FIELDS = {
    "arch": ("bregnet", "resnet"),
    "shortcut": ("identity", "h1", "h2", "h3"),
    "loss": ("regular", "weighted"),
    "dataset": ("fer2013", "affectnet", "affectnet_va", "aff_wild"),
    "scale": ("paper", "cpu", "test"),
}
DATASETS = {
    "fer2013": fer2013,
    "affectnet": affectnet,
    "affectnet_va": affectnet_va,
    "aff_wild": aff_wild,
}
# (bregnet, resnet) per scale.
MODELS = {
    "paper": ("BReGNet39", "ResNet110"),
    "cpu": ("BReGNetSmall", "ResNetSmall"),
    "test": ("BReGNetTiny", "BReGNetTiny"),
}
DEPTH_WIDTHS = {"paper": (48, 96, 192), "cpu": (32, 64, 128), "test": (16, 32, 64)}
BASE_BLOCKS = {"paper": 6, "cpu": 2, "test": 1}  # blocks per stage of the scale's BReG-Net


def parse(arg: str | None, defaults: dict) -> dict:
    """Fields from ``defaults`` overridden by the tokens of ``arg``; unknown tokens raise."""
    fields = dict(defaults)
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        if "=" in token:
            key, value = token.split("=", 1)
            if key not in ("seed", "depth"):
                raise ValueError(f"unknown parameter {key!r} in {arg!r} (seed=N, depth=N)")
            fields[key] = int(value)
            continue
        matches = [k for k, values in FIELDS.items() if token in values]
        if not matches:
            known = ", ".join(v for values in FIELDS.values() for v in values)
            raise ValueError(f"unknown token {token!r} in {arg!r}; known: {known}")
        fields[matches[0]] = token
    return fields


def build(arg: str | None, defaults: dict) -> ml_collections.ConfigDict:
    """The training config of one experiment; ``config.experiment`` records its fields."""
    fields = {"loss": "regular", "scale": "paper", "seed": 0, **parse(arg, defaults)}
    if fields["arch"] == "resnet":
        fields["shortcut"] = "identity"
    config = DATASETS[fields["dataset"]].get_config()
    categorical = config.model.head != "va"
    config.loss.weighted = categorical and fields["loss"] == "weighted"
    if not categorical:
        fields["loss"] = "mse"
    config.seed = fields["seed"]
    scale = fields["scale"]
    config.model.name = MODELS[scale][fields["arch"] == "resnet"]
    config.model.shortcut = fields["shortcut"]
    if "depth" in fields:
        n, rem = divmod(fields["depth"] - 3, 6)
        if rem or n < 1:
            raise ValueError(f"depth must be 6n + 3 (9, 15, 21, ...), got {fields['depth']}")
        if n != BASE_BLOCKS[scale]:
            config.model.stage_sizes = (n, n, n)
            config.model.widths = DEPTH_WIDTHS[scale]
        else:  # the base depth is the tables' own run, shared with them
            del fields["depth"]
    if scale == "cpu":
        config.optim.learning_rate = 0.05
        config.optim.schedule = "cosine"
        config.batch_size = 64
        config.num_epochs = 2
        config.log_every_steps = 100
    elif scale == "test":
        config.data.source = "synthetic"
        config.data.synthetic.num_train = 256
        config.data.synthetic.num_val = 64
        if not categorical:
            config.model.head = "va"
        config.data.image_size, config.data.channels = 48, 1
        config.model.num_classes = 7
        config.batch_size = 32
        config.eval_batch_size = 64
        config.num_epochs = 2
        config.log_every_steps = 4
        config.progress_bar = False
    config.experiment = ml_collections.ConfigDict(fields)
    return config


def depth(experiment: dict) -> int:
    """Weighted layers of an experiment's network (its scale's base depth if not swept)."""
    return experiment.get("depth") or 6 * BASE_BLOCKS[experiment["scale"]] + 3


def run_name(config: ml_collections.ConfigDict) -> str:
    """A workdir name that identifies the run, shared by every table that needs it."""
    e = config.experiment
    depth = f"_d{e.depth}" if config.model.stage_sizes is not None else ""
    return f"{e.dataset}_{config.model.name}{depth}_{e.shortcut}_{e.loss}_seed{e.seed}"
