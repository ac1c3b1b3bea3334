"""The experiment grid of the paper's tables: parameter strings, run names, the depth family.

A table config calls ``build(arg, defaults)``; ``arg`` is the part after ``:`` in
``--config=configs/table1.py:h3,weighted,fer2013``: comma-separated tokens, each naming a
value of one field (its order does not matter), or ``seed=N`` / ``depth=N``.

Fields: ``arch`` (bregnet | resnet), ``shortcut`` (identity | h1 | h2 | h3 | cubic, the
depth study's unbounded control), ``loss`` (regular | weighted | balanced, the weighted loss
rescaled to average 1), ``dataset`` (fer2013 | affectnet | affectnet_va | aff_wild |
synthetic_va, the dimensional model on the synthetic faces), ``scale`` (paper | cpu |
test), ``seed``, ``depth`` and ``width`` (the first stage's width, doubling per stage;
it also logs each block's gradient norm).

Scales: ``paper`` is the paper's pair (BReGNet39 / ResNet110) and optimizer (momentum SGD,
lr 0.01, weight decay 1e-4). ``cpu`` is the budget-matched pair BReGNetSmall / ResNetSmall
(the same network but for the shortcut) for 10 epochs with a cosine schedule from lr 0.05,
long enough to decay to the end and converge (H3, regular loss: about 60% on FER2013's val;
``--set num_epochs=N`` changes it, the cosine then spans the N epochs). ``test`` is a
few steps of BReGNetTiny on the synthetic faces, for the test suite.

``depth=N`` (N = 6n + 3, the family of ``bregflax.nn.models.DEPTHS``) gives the scale's network
n blocks per stage at its own widths. ``runs(table, scale, seeds)`` lists every run of a
table of ``bregflax reproduce`` as (config module, parameter string); ``CLAIMS`` are the
paired comparisons of its ``claims`` table.
"""

from __future__ import annotations

import dataclasses
import itertools

import ml_collections

from bregflax.configs import aff_wild, affectnet, affectnet_va, fer2013
from bregflax.nn import models

FIELDS = {
    "arch": ("bregnet", "resnet"),
    "shortcut": ("identity", "h1", "h2", "h3", "cubic"),
    "loss": ("regular", "weighted", "balanced"),
    "dataset": ("fer2013", "affectnet", "affectnet_va", "aff_wild", "synthetic_va"),
    "scale": ("paper", "cpu", "test"),
}
DATASETS = {
    "fer2013": fer2013,
    "affectnet": affectnet,
    "affectnet_va": affectnet_va,
    "aff_wild": aff_wild,
    "synthetic_va": affectnet_va,  # the dimensional model on the synthetic faces
}
CATEGORICAL = ("affectnet", "fer2013")
DIMENSIONAL = ("affectnet_va", "aff_wild")
# Fig. 6's dimensional runs: AffectNet and Aff-Wild, or the synthetic faces' valence and
# arousal where a CPU trains them.
FIG6_DATASETS = {"paper": DIMENSIONAL, "cpu": ("synthetic_va",), "test": ("synthetic_va",)}
ARCHS = ("resnet", "bregnet")
LOSSES = ("regular", "weighted")
MAPS = ("h1", "h2", "h3")  # the paper's bounded shortcut maps, eq. (4)
# (bregnet, resnet) per scale: names in bregflax.nn.models.MODELS.
MODELS = {
    "paper": ("BReGNet39", "ResNet110"),
    "cpu": ("BReGNetSmall", "ResNetSmall"),
    "test": ("BReGNetTiny", "BReGNetTiny"),
}
# Fig. 5's depths: the paper's family, and its shallowest members where a CPU trains them.
FIG5_DEPTHS = {"paper": models.DEPTHS, "cpu": models.DEPTHS[:3], "test": models.DEPTHS[:2]}
# The depth claim's deep identity network: the paper's ResNet-110, or twice the blocks per
# stage of the scale's BReG-Net (its widths, its budget).
DEEP_RESNET = {"paper": "resnet", "cpu": "resnet,depth=27", "test": "resnet,depth=15"}


def base_model(scale: str, arch: str) -> dict:
    """The registered defaults (stage_sizes, widths, ...) of the scale's network ``arch``."""
    return dict(models.MODELS.get(MODELS[scale][arch == "resnet"]).keywords)


def parse(arg: str | None, defaults: dict) -> dict:
    """Fields from ``defaults`` overridden by the tokens of ``arg``; unknown tokens raise."""
    fields = dict(defaults)
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        if "=" in token:
            key, value = token.split("=", 1)
            if key not in ("seed", "depth", "width"):
                raise ValueError(f"unknown parameter {key!r} in {arg!r} (seed=N, depth=N, width=N)")
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
    if fields["dataset"] == "synthetic_va":
        config.data.source = "synthetic"
    categorical = config.model.head != "va"
    config.loss.weighted = categorical and fields["loss"] in ("weighted", "balanced")
    if config.loss.weighted and fields["loss"] == "balanced":
        config.loss.weight_scale = "mean1"
    if not categorical:
        fields["loss"] = "mse"
    config.seed = fields["seed"]
    scale = fields["scale"]
    config.model.name = MODELS[scale][fields["arch"] == "resnet"]
    config.model.shortcut = fields["shortcut"]
    if "width" in fields:  # the depth study's family: its own widths, so depth is explicit
        base = base_model(scale, fields["arch"])
        fields.setdefault("depth", 6 * base["stage_sizes"][0] + 3)
        w = fields["width"]
        config.model.widths = tuple(w * 2**i for i in range(len(base["widths"])))
        config.log_grad_norms = True
    if "depth" in fields:
        n, rem = divmod(fields["depth"] - 3, 6)
        if rem or n < 1:
            raise ValueError(f"depth must be 6n + 3 (9, 15, 21, ...), got {fields['depth']}")
        base = base_model(scale, fields["arch"])
        if "width" in fields:
            config.model.stage_sizes = (n,) * len(base["stage_sizes"])
        elif n != base["stage_sizes"][0]:
            config.model.stage_sizes = (n,) * len(base["stage_sizes"])
            config.model.widths = tuple(base["widths"])
        else:  # the base depth is the tables' own run, shared with them
            del fields["depth"]
    if scale == "cpu":
        config.optim.learning_rate = 0.05
        config.optim.schedule = "cosine"
        config.batch_size = 64
        config.num_epochs = 10
        config.log_every_steps = 100
    elif scale == "test":
        config.data.source = "synthetic"
        config.data.synthetic.num_train = 128
        config.data.synthetic.num_val = 64
        if not categorical:
            config.model.head = "va"
        config.data.image_size, config.data.channels = 48, 1
        config.model.num_classes = 7
        config.batch_size = 32
        config.eval_batch_size = 64
        config.num_epochs = 2
        config.log_every_steps = 2
        config.progress_bar = False
    config.experiment = ml_collections.ConfigDict(fields)
    return config


def depth(experiment: dict) -> int:
    """Fig. 5's depth of an experiment: 6n + 3 for n blocks per stage (swept or the base)."""
    if experiment.get("depth"):
        return experiment["depth"]
    return 6 * base_model(experiment["scale"], experiment["arch"])["stage_sizes"][0] + 3


def layers(config: ml_collections.ConfigDict) -> int:
    """The weighted layers of a config's network, counted as ``models.weighted_layers``."""
    kwargs = base_model(config.experiment.scale, config.experiment.arch)
    stages = config.model.stage_sizes or kwargs["stage_sizes"]
    return models.weighted_layers(stages, kwargs.get("stem_convs", 1))


def run_name(config: ml_collections.ConfigDict) -> str:
    """A workdir name that identifies the run, shared by every table that needs it."""
    e = config.experiment
    depth = f"_d{e.depth}" if config.model.stage_sizes is not None else ""
    width = f"_w{e.width}" if "width" in e else ""
    return f"{e.dataset}_{config.model.name}{depth}{width}_{e.shortcut}_{e.loss}_seed{e.seed}"


# --------------------------------------------------------------------------- the grid


@dataclasses.dataclass(frozen=True)
class Claim:
    """A paired comparison: arm ``a`` beats arm ``b`` (parameter strings, scale-free)."""

    name: str
    title: str
    a: str
    b: str
    seeds: int  # how many paired seeds, 0..seeds-1 (2 at the test scale)
    metrics: tuple[str, ...] = ("accuracy", "norm/f1")

    def arms(self, scale: str) -> tuple[str, str]:
        """Both arms' parameter strings at ``scale`` (the token ``deep``: ``DEEP_RESNET``)."""
        return tuple(arm.replace("deep", DEEP_RESNET[scale]) for arm in (self.a, self.b))


# The paper: H3 "yields better results in terms of both prediction rate and convergence
# speed" (epochs to 95% of the final validation accuracy, ``paper.cells.CONVERGENCE``).
CONVERGES = ("accuracy", "norm/f1", "epochs_to_95%")
CLAIMS = (
    Claim("h3_vs_identity", "H3 beats the identity shortcut (regular loss)",
          "fer2013,bregnet,regular", "fer2013,resnet,regular", seeds=5, metrics=CONVERGES),
    Claim("weighted_h3", "the weighted loss beats the regular loss (H3)",
          "fer2013,bregnet,weighted", "fer2013,bregnet,regular", seeds=3,
          metrics=("accuracy", "norm/f1", "recall/Disgust")),
    Claim("weighted_identity", "the weighted loss beats the regular loss (identity)",
          "fer2013,resnet,weighted", "fer2013,resnet,regular", seeds=3,
          metrics=("accuracy", "norm/f1", "recall/Disgust")),
    Claim("h3_vs_h1", "H3 beats H1 (regular loss)",
          "fer2013,bregnet,regular", "fer2013,h1,regular", seeds=3, metrics=CONVERGES),
    Claim("h3_vs_h2", "H3 beats H2 (regular loss)",
          "fer2013,bregnet,regular", "fer2013,h2,regular", seeds=3, metrics=CONVERGES),
    Claim("depth", "a shallow H3 network beats an identity network about twice as deep",
          "fer2013,bregnet,regular", "fer2013,regular,deep", seeds=3,
          metrics=("accuracy", "norm/f1", "seconds_per_epoch")),
)  # fmt: skip
CLAIM_CONFIG = "table1"  # its builder takes every arm's tokens (arch, shortcut, loss, depth)
TEST_SEEDS = 2  # the fewest seeds with a confidence interval, for the test scale


def claim_seeds(claim: Claim, scale: str, seeds=None) -> tuple[int, ...]:
    """The seeds of a claim's pairs: ``seeds`` if given, else the claim's own count."""
    if seeds:
        return tuple(seeds)
    return tuple(range(min(claim.seeds, TEST_SEEDS) if scale == "test" else claim.seeds))


def _product(*fields) -> list[str]:
    return [",".join(p) for p in itertools.product(*fields)]


GRIDS = {  # table -> (config module, scale -> parameter strings)
    "1": ("table1", lambda scale: _product(CATEGORICAL, MAPS, LOSSES)),
    "2": ("table2", lambda scale: _product(CATEGORICAL, ARCHS, LOSSES)),
    "3": ("table3", lambda scale: _product(CATEGORICAL)),
    "4": ("table4", lambda scale: _product(CATEGORICAL)),
    "5": ("table5", lambda scale: _product(DIMENSIONAL, ARCHS)),
    "6": ("table5", lambda scale: _product(DIMENSIONAL, ("bregnet",))),
    "7": ("table5", lambda scale: _product(DIMENSIONAL, ("resnet",))),
    "fig5": (
        "fig5",
        lambda scale: _product(
            CATEGORICAL + DIMENSIONAL, [f"depth={d}" for d in FIG5_DEPTHS[scale]]
        ),
    ),
    "fig6": ("table5", lambda scale: _product(FIG6_DATASETS[scale], ARCHS)),
    "timing": ("table2", lambda scale: _product(CATEGORICAL, ARCHS, ("regular",))),
}


# The depth study (issue 29): H3 and identity over depths of one family (the scale's network
# at narrow widths, 6n + 3 layers), a map with an unbounded derivative at the shallowest and
# deepest depth, the weighted loss rescaled to average 1 and not, and H1/H2 for convergence
# speed.
# scale -> (depths, first-stage width, seeds of the sweep, seeds of the unbounded map)
# At cpu scale width 8 (8/16/32 channels) fits the sweep in about 10 core-hours: measured on
# the 2-core machine, one core per run, 110 images/s at depth 111 against 51 at width 16.
DEPTH_STUDY = {"paper": ((15, 39, 111), 48, 3, 2), "cpu": ((15, 39, 111), 8, 3, 2),
               "test": ((9, 15), 8, 2, 2)}  # fmt: skip


def depth_study(scale: str) -> list[tuple[str, int]]:
    """(parameter string without scale and seed, seeds) of every arm of the depth study, in
    the order they are worth running: the sweep first, shallow to deep."""
    depths, width, seeds, cubic_seeds = DEPTH_STUDY[scale]
    arms = []
    for d in depths:
        for shortcut in ("h3", "identity"):
            arch = "resnet" if shortcut == "identity" else "bregnet"
            arms.append((f"fer2013,{arch},{shortcut},regular,depth={d},width={width}", seeds))
    for d in (depths[0], depths[-1]):
        arms.append((f"fer2013,cubic,regular,depth={d},width={width}", cubic_seeds))
    arms.append((f"fer2013,bregnet,balanced,depth={depths[0]},width={width}", seeds))
    for m in ("h1", "h2"):
        arms.append((f"fer2013,{m},regular,depth={depths[0]},width={width}", seeds))
    # added after the others had run: the paper's weights, not rescaled (the control of the
    # rescaled loss, and Table III's arm at this scale)
    arms.append((f"fer2013,bregnet,weighted,depth={depths[0]},width={width}", seeds))
    return arms


TABLES = (*GRIDS, "claims", "depth")


def runs(table: str, scale: str, seeds=None, claims=()) -> list[tuple[str, str]]:
    """(config module, parameter string with scale and seed) of every run of ``table``.

    ``seeds`` defaults to (0,) for the tables and to each claim's own seeds for ``claims``;
    ``claims`` names the claims to run (all if empty).
    """
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose from {', '.join(TABLES)}")
    out = []
    if table == "claims":
        unknown = set(claims) - {c.name for c in CLAIMS}
        if unknown:
            known = ", ".join(c.name for c in CLAIMS)
            raise ValueError(f"unknown claim(s) {', '.join(sorted(unknown))}; known: {known}")
        for claim in CLAIMS:
            if claims and claim.name not in claims:
                continue
            for arm in claim.arms(scale):
                for seed in claim_seeds(claim, scale, seeds):
                    out.append((CLAIM_CONFIG, f"{arm},{scale},seed={seed}"))
    elif table == "depth":  # seed by seed, so that pairs of every arm finish early
        arms = depth_study(scale)
        for seed in seeds or range(max(n for _, n in arms)):
            for arm, n in arms:
                if seeds or seed < n:
                    out.append((CLAIM_CONFIG, f"{arm},{scale},seed={seed}"))
    else:
        name, specs = GRIDS[table]
        out = [(name, f"{arg},{scale},seed={s}") for arg in specs(scale) for s in seeds or (0,)]
    return list(dict.fromkeys(out))
