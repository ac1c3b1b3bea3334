"""Markdown tables in the paper's layout, from the dicts of ``bregflax.evaluation.metrics``.

Tables III/IV: categorical metrics, with "Orig" (the test set as it is) and "Norm"
(skew-normalized, mean ± std) columns. Tables V-VII: RMSE, CC, CCC and SAGR of valence
and arousal. Optional columns hold the paper's numbers for comparison. A metric missing
from a column shows as "–".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

CATEGORICAL_ROWS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("f1", "F1-score"),
    ("kappa", "Kappa"),
    ("alpha", "Alpha"),
    ("mcc", "MCC"),
    ("ppv", "PPV"),
    ("roc_auc", "AUC-ROC"),
    ("pr_auc", "AUC-PR"),
)
"""(metric key, row label) in table order; a row shows when any column has its key."""

DIMENSIONAL_ROWS: tuple[tuple[str, str], ...] = (
    ("rmse", "RMSE"),
    ("cc", "CC"),
    ("ccc", "CCC"),
    ("sagr", "SAGR"),
)


def format_value(value, digits: int = 3) -> str:
    """A number, "mean ± std" for a (mean, std) pair, a string as it is, "–" for None."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        mean, std = value
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; the first column left-aligned, the others right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def read_markdown_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """The rows of every table in ``text`` as {column: cell}, grouped by the ``## `` section
    they follow ("" before the first); the inverse of ``markdown_table``."""
    out: dict[str, list[dict[str, str]]] = {}
    section, header = "", None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set(":-"):
            out.setdefault(section, []).append(dict(zip(header, cells, strict=True)))
    return out


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every table in ``text``, in order; cells stripped."""
    out: list[tuple[list[str], list[list[str]]]] = []
    in_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not in_table:
            out.append((cells, []))
            in_table = True
        elif not set("".join(cells)) <= set(":-"):
            out[-1][1].append(cells)
    return out


def metric_table(
    columns: Mapping[str, Mapping], rows: Sequence[tuple[str, str]], digits: int = 3
) -> str:
    """Rows (key, label) by columns (title -> {key: value}); rows no column has are dropped."""
    shown = [(k, label) for k, label in rows if any(k in col for col in columns.values())]
    body = [
        [label] + [format_value(col.get(k), digits) for col in columns.values()]
        for k, label in shown
    ]
    return markdown_table(["Metric", *columns], body)


def categorical_table(
    orig: Mapping,
    norm: Mapping | None = None,
    paper: Mapping | None = None,
    paper_norm: Mapping | None = None,
    digits: int = 3,
) -> str:
    """Tables III/IV: ``orig`` from ``categorical_metrics``, ``norm`` from
    ``skew_normalized``, and optionally the paper's "Orig" and "Norm" numbers by metric key."""
    columns = {"Orig": orig}
    if norm is not None:
        columns["Norm"] = norm
    if paper is not None:
        columns["Paper (Orig)"] = paper
    if paper_norm is not None:
        columns["Paper (Norm)"] = paper_norm
    return metric_table(columns, CATEGORICAL_ROWS, digits)


def dimensional_table(
    scores: Mapping,
    paper: Mapping | None = None,
    names: Sequence[str] = ("valence", "arousal"),
    digits: int = 3,
) -> str:
    """Tables V-VII: RMSE, CC, CCC, SAGR (and the sample count N) by dimension, from
    ``dimensional_metrics``; ``paper`` uses the same keys (``valence/rmse``, ...)."""
    dims = [d for d in names if any(f"{d}/{m}" in scores for m, _ in DIMENSIONAL_ROWS)]
    columns: dict[str, dict] = {}
    for source, suffix in ((scores, ""), (paper, " (paper)")):
        if source is None:
            continue
        for d in dims:
            prefix = f"{d}/"
            picked = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
            columns[d.capitalize() + suffix] = picked
    return metric_table(columns, DIMENSIONAL_ROWS + (("n", "N"),), digits)


def per_class_table(
    rows: Sequence[Mapping], class_names: Sequence[str] | None = None, digits: int = 3
) -> str:
    """The rows of ``metrics.classification_report`` as Class | Precision | Recall | F1 |
    Support; ``class_names`` relabels the per-class rows (the "macro avg" row stays)."""
    body = []
    for i, r in enumerate(rows):
        name = r["class"]
        if class_names is not None and i < len(class_names) and name != "macro avg":
            name = class_names[i]
        body.append(
            [name]
            + [format_value(r[k], digits) for k in ("precision", "recall", "f1")]
            + [str(r["support"])]
        )
    return markdown_table(["Class", "Precision", "Recall", "F1", "Support"], body)
