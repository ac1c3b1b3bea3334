"""The paper's figures: every cell of its Tables I-VII and its epoch timing.

Hasani, Negi and Mahoor, "Bounded Residual Gradient Networks (BReG-Net) for Facial Affect
Computing", FG 2019. Transcribed by hand from the paper; nothing here is read from a file
at run time. Keys use this package's names: datasets ``fer2013``, ``affectnet`` (the
categorical model), ``affectnet_va``, ``aff_wild`` (the dimensional model; the paper's
"Affect-in-Wild"), archs ``bregnet`` (BReG-Net-39, H3) and ``resnet`` (ResNet-110),
shortcut maps ``h1``-``h3``, losses ``regular``/``weighted``.

Every figure is on the datasets' validation sets. Tables I and II give recognition rates in
percent (``DIGITS`` gives each table's printed decimals); the other tables give fractions,
as this package's metrics do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

PAPER = 'Hasani, Negi, Mahoor: "Bounded Residual Gradient Networks (BReG-Net)", FG 2019'
NAMES = {"bregnet": "BReG-Net-39", "resnet": "ResNet-110"}
TRAINING = (
    "momentum optimizer, learning rate 0.01, weight decay 0.0001, MSE loss for the "
    "dimensional model, TensorFlow + TFLearn; batch size, epochs, widths, input size and "
    "augmentation not given"
)


def _table(columns: list[tuple], rows: dict[str, tuple]) -> dict[tuple, float]:
    """{(row, *column): value} from the paper's rows, read left to right."""
    return {(r, *c): v for r, vals in rows.items() for c, v in zip(columns, vals, strict=True)}


def _pairs(values: tuple) -> tuple:
    """(Orig, Norm) pairs from a row that alternates them."""
    return tuple(zip(values[::2], values[1::2], strict=True))


# Table I: recognition rate (%) of the three maps of eq. (4), BReG-Net, categorical model;
# (dataset, map, loss).
MAP_LOSS = [(m, loss) for m in ("h1", "h2", "h3") for loss in ("regular", "weighted")]
TABLE_I = _table(
    MAP_LOSS,
    {
        "affectnet": (57.37, 58.83, 59.43, 64.02, 60.03, 63.54),
        "fer2013": (65.80, 66.21, 65.16, 67.66, 68.74, 69.49),
    },
)

# Table II: recognition rate (%), (dataset, arch, loss). The ResNet-110 column does not
# state its loss; the text implies the regular loss. BReG-Net's cells are Table I's H3.
TABLE_II = _table(
    [("resnet", "regular"), ("bregnet", "regular"), ("bregnet", "weighted")],
    {"affectnet": (58.20, 60.03, 63.54), "fer2013": (66.48, 68.74, 69.49)},
)
TABLE_II_STATE_OF_THE_ART = {
    "affectnet": "58.0 [20], 57.31 [33]",
    "fer2013": "69.3 [28], 66.4 [19]",
}

# Tables III (weighted loss) and IV (regular loss): BReG-Net, (dataset, metric) ->
# (Orig, Norm), Norm = skew-normalized (200 random under-samplings of the val set). The
# converted header of Table III reads "CC" for its fourth group; the text and Table IV say MCC.
METRICS = [("f1",), ("kappa",), ("alpha",), ("mcc",), ("ppv",)]
TABLE_III = _table(
    METRICS,
    {
        "affectnet": _pairs((0.63, 0.68, 0.58, 0.63, 0.58, 0.64, 0.59, 0.64, 0.62, 0.71)),
        "fer2013": _pairs((0.67, 0.67, 0.62, 0.62, 0.62, 0.62, 0.62, 0.62, 0.69, 0.68)),
    },
)
TABLE_IV = _table(
    METRICS,
    {
        "affectnet": _pairs((0.58, 0.60, 0.52, 0.54, 0.52, 0.54, 0.52, 0.54, 0.58, 0.62)),
        "fer2013": _pairs((0.67, 0.68, 0.61, 0.62, 0.61, 0.62, 0.62, 0.62, 0.69, 0.69)),
    },
)


def orig_norm(dataset: str, metric: str, loss: str) -> tuple[float | None, float | None]:
    """BReG-Net's (Orig, Norm) of ``metric`` on ``dataset``: Table III for the weighted loss,
    Table IV for the regular one; (None, None) where the paper has none."""
    table = TABLE_III if loss == "weighted" else TABLE_IV
    return table.get((dataset, metric), (None, None))


# Table V: RMSE of the dimensional model, (dataset, arch, dimension).
DIMS = ("valence", "arousal")
TABLE_V = _table(
    [(arch, dim) for arch in ("resnet", "bregnet") for dim in DIMS],
    {
        "affectnet_va": (0.2693, 0.3082, 0.2597, 0.3067),
        "aff_wild": (0.2733, 0.3309, 0.2661, 0.3265),
    },
)
TABLE_V_STATE_OF_THE_ART = {  # (dataset, dimension) -> (RMSE, reference)
    ("affectnet_va", "valence"): (0.37, "[20]"),
    ("affectnet_va", "arousal"): (0.41, "[20]"),
    ("aff_wild", "valence"): (0.27, "[6]"),
    ("aff_wild", "arousal"): (0.36, "[6]"),
}

# Tables VI (BReG-Net) and VII (ResNet-110): (dataset, metric, dimension). The converted
# headers read "CC, CC, CC, SAGR"; the text names the groups CC, CCC and SAGR.
CC_CCC_SAGR = [(m, dim) for m in ("cc", "ccc", "sagr") for dim in DIMS]
TABLE_VI = _table(
    CC_CCC_SAGR,
    {
        "affectnet_va": (0.66, 0.84, 0.66, 0.82, 0.73, 0.84),
        "aff_wild": (0.45, 0.40, 0.43, 0.34, 0.63, 0.77),
    },
)
TABLE_VII = _table(
    CC_CCC_SAGR,
    {
        "affectnet_va": (0.66, 0.84, 0.63, 0.82, 0.66, 0.84),
        "aff_wild": (0.41, 0.41, 0.38, 0.35, 0.61, 0.75),
    },
)
DIMENSIONAL_BY_ARCH = {"bregnet": TABLE_VI, "resnet": TABLE_VII}

# The text's timing: one epoch of AffectNet, categorical model, on a GeForce GTX 1080 Ti.
TIMING = {
    "bregnet": {"seconds_per_epoch": 750.21, "params": 4.9e6},
    "resnet": {"seconds_per_epoch": 836.04, "params": 7.2e6},
}
TIMING_SETUP = "one AffectNet epoch, categorical model, GeForce GTX 1080 Ti"
TIMING_DATASET = "affectnet"

# Fig. 5 (recognition rate and RMSE against depth, H3) and Fig. 6 (the dimensional model's
# MSE loss, training (a, b) and validation (c, d), ResNet-110 and BReG-Net) are plots only.
FIGURES = {
    "fig5": "recognition rate (categorical) and RMSE (dimensional) against depth, H3; the "
    "paper plots them only and does not list the depths",
    "fig6": "mean square loss of training (a, b) and validation (c, d), ResNet-110 and "
    "BReG-Net, dimensional model: BReG-Net's falls faster and ends lower on both (plot only)",
}

DIGITS = {"I": 2, "II": 2, "III": 2, "IV": 2, "V": 4, "VI": 2, "VII": 2, "timing": 2}


def accuracy(dataset: str, arch: str, shortcut: str, loss: str) -> float | None:
    """The paper's recognition rate (%) of one categorical run, from Table I or II."""
    if arch == "resnet":
        return TABLE_II.get((dataset, "resnet", loss))
    return TABLE_I.get((dataset, shortcut, loss))


@dataclasses.dataclass(frozen=True)
class Cell:
    table: str  # "I" .. "VII" or "timing"
    key: tuple
    value: float | str
    digits: int | None = None  # printed decimals where they differ from the table's

    @property
    def text(self) -> str:
        """The cell as the paper prints it."""
        if isinstance(self.value, str):
            return self.value
        return f"{self.value:.{self.digits or DIGITS[self.table]}f}"


def cells() -> Iterator[Cell]:
    """Every cell of the paper's results, one value each (Orig and Norm apart)."""
    for table, values in (("I", TABLE_I), ("II", TABLE_II)):
        yield from (Cell(table, k, v) for k, v in values.items())
    yield from (
        Cell("II", (d, "state of the art"), v) for d, v in TABLE_II_STATE_OF_THE_ART.items()
    )
    for table, values in (("III", TABLE_III), ("IV", TABLE_IV)):
        for key, pair in values.items():
            yield from (
                Cell(table, (*key, col), v) for col, v in zip(("orig", "norm"), pair, strict=True)
            )
    yield from (Cell("V", k, v) for k, v in TABLE_V.items())
    for (dataset, dim), (value, _) in TABLE_V_STATE_OF_THE_ART.items():
        yield Cell("V", (dataset, "state of the art", dim), value, digits=2)
    for table, values in (("VI", TABLE_VI), ("VII", TABLE_VII)):
        yield from (Cell(table, k, v) for k, v in values.items())
    for arch, row in TIMING.items():
        yield Cell("timing", (arch, "seconds_per_epoch"), row["seconds_per_epoch"])
        yield Cell("timing", (arch, "params"), f"{row['params'] / 1e6:.1f}M")
