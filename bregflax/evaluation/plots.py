"""PNG figures of an evaluation: confusion matrices, valence/arousal scatter and error
histograms, training/validation loss curves, and panels of curves averaged over seeds
(the paper's Fig. 6).

Figures are drawn on matplotlib's Agg canvas through the object API (no pyplot), so
importing this module changes no global backend and leaks no open figures. Each function
writes one PNG and returns its path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bregflax import paths as paths_lib
from bregflax import safe_io
from bregflax.evaluation import metrics

DPI = 120


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> Path:
    path = paths_lib.path(path)
    paths_lib.make_folder(path.parent)
    with safe_io.atomic_path(path) as temp:  # a reader never meets half a picture
        fig.savefig(temp, format="png")
    return path


# ---------------------------------------------------------------------------------------
# Confusion matrix


def row_normalized(cm) -> np.ndarray:
    """Each row divided by its sum (the per-class recall on the diagonal); empty rows 0."""
    cm = np.asarray(cm, dtype=np.float64)
    sums = cm.sum(1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


def confusion_matrix_png(
    cm, class_names: Sequence[str], path, normalized: bool = False, title: str | None = None
) -> Path:
    """Heat map with every cell annotated: counts, or row percentages when ``normalized``."""
    cm = np.asarray(cm)
    k = cm.shape[0]
    if cm.shape != (k, k) or len(class_names) != k:
        raise ValueError(f"need a square matrix and one name per class, got {cm.shape}")
    shade = row_normalized(cm)
    side = max(4.0, 0.65 * k + 2.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    if normalized:
        image = ax.imshow(100 * shade, cmap="Blues", vmin=0, vmax=100)
    else:
        image = ax.imshow(cm, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="% of true class" if normalized else "count")
    for i in range(k):
        for j in range(k):
            text = f"{100 * shade[i, j]:.1f}" if normalized else f"{int(cm[i, j])}"
            dark = shade[i, j] > 0.5 if normalized else cm[i, j] > 0.5 * cm.max()
            color = "white" if dark else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    default = "Confusion matrix (% of each true class)" if normalized else "Confusion matrix"
    ax.set_title(title or default)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------
# Valence / arousal


def _as_columns(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"truth and prediction shapes differ: {y_true.shape} vs {y_pred.shape}")
    if y_true.ndim == 1:
        return y_true[:, None], y_pred[:, None]
    return y_true, y_pred


def va_scatter_png(y_true, y_pred, path, names: Sequence[str] = ("valence", "arousal")) -> Path:
    """Predicted against true, one panel per dimension, with the identity line and the
    metrics of ``metrics.dimensional_metrics`` in each title (rows with NaN truth left out)."""
    y_true, y_pred = _as_columns(y_true, y_pred)
    scores = metrics.dimensional_metrics(y_true, y_pred, names)
    d = y_true.shape[1]
    fig = _figure(4.2 * d, 4.4)
    for j, ax in enumerate(fig.subplots(1, d, squeeze=False)[0]):
        keep = ~np.isnan(y_true[:, j])
        t, p = y_true[keep, j], y_pred[keep, j]
        lo = min(-1.0, t.min(), p.min()) - 0.05
        hi = max(1.0, t.max(), p.max()) + 0.05
        alpha = float(np.clip(300.0 / t.size, 0.05, 0.8))
        ax.scatter(t, p, s=6, alpha=alpha, linewidths=0, color="tab:blue")
        ax.plot([lo, hi], [lo, hi], "--", color="gray", linewidth=1, label="y = x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel(f"true {names[j]}")
        ax.set_ylabel(f"predicted {names[j]}")
        s = {m: scores[f"{names[j]}/{m}"] for m in ("rmse", "cc", "ccc", "sagr", "n")}
        ax.set_title(
            f"{names[j]} (n={s['n']})\nRMSE {s['rmse']:.3f}  CC {s['cc']:.3f}  "
            f"CCC {s['ccc']:.3f}  SAGR {s['sagr']:.3f}",
            fontsize=9,
        )
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def error_histogram_png(
    y_true, y_pred, path, names: Sequence[str] = ("valence", "arousal"), bins: int = 50
) -> Path:
    """Histogram of prediction - truth per dimension (rows with NaN truth left out)."""
    y_true, y_pred = _as_columns(y_true, y_pred)
    d = y_true.shape[1]
    fig = _figure(4.2 * d, 3.4)
    for j, ax in enumerate(fig.subplots(1, d, squeeze=False)[0]):
        keep = ~np.isnan(y_true[:, j])
        if not keep.any():
            raise ValueError(f"no {names[j]} targets: all are NaN")
        err = y_pred[keep, j] - y_true[keep, j]
        ax.hist(err, bins=bins, color="tab:orange", alpha=0.85)
        ax.axvline(0.0, color="gray", linestyle="--", linewidth=1)
        ax.axvline(err.mean(), color="black", linewidth=1, label=f"mean {err.mean():+.3f}")
        ax.set_xlabel(f"predicted - true {names[j]}")
        ax.set_ylabel("count")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{names[j]} error (std {err.std():.3f}, n={err.size})", fontsize=9)
        ax.legend(fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------
# Loss curves


def read_metrics_jsonl(path) -> list[dict]:
    """The records of a ``metrics.jsonl``; blank or unparsable lines (say a line cut short
    by a kill) are skipped."""
    records = []
    for line in paths_lib.path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def metric_series(records: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of ``key``, sorted by epoch. Records missing the key, an epoch or a
    finite value are skipped; a step logged twice (a resumed run) keeps its last record."""
    points: dict = {}
    for i, r in enumerate(records):
        value, epoch, step = r.get(key), r.get("epoch"), r.get("step")
        if not (_finite(value) and _finite(epoch)):
            continue
        order = step if _finite(step) else i
        points[("step", step) if _finite(step) else ("line", i)] = (epoch, order, value)
    ordered = sorted(points.values())
    epochs = np.array([p[0] for p in ordered], dtype=np.float64)
    return epochs, np.array([p[2] for p in ordered], dtype=np.float64)


def _finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


LOSS_STYLES = {
    "train/loss": {"linewidth": 1.2},
    "val/loss": {"linestyle": "--", "marker": "o", "markersize": 3},
}


def loss_curves_png(runs, path, title: str = "Training and validation loss") -> Path:
    """Training (solid) and validation (dashed, dots) loss against epoch, one color per
    run. ``runs`` is a ``metrics.jsonl`` path or a mapping label -> path, e.g.
    ``{"ResNet-110": a, "BReG-Net": b}``. A run with no loss records is named in the plot."""
    if not isinstance(runs, Mapping):
        runs = {paths_lib.path(runs).parent.name or "run": runs}
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    empty = []
    for i, (label, run_path) in enumerate(runs.items()):
        records = read_metrics_jsonl(run_path)
        color = f"C{i % 10}"
        drawn = False
        for key, style in LOSS_STYLES.items():
            epochs, values = metric_series(records, key)
            if epochs.size:
                part = key.split("/")[0]
                ax.plot(epochs, values, color=color, label=f"{label} {part}", **style)
                drawn = True
        if not drawn:
            empty.append(str(label))
    if empty:
        note = "no loss records: " + ", ".join(empty)
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", color="gray")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(empty) < len(runs):
        ax.legend(fontsize=8)
    return _save(fig, path)


def mean_curve(paths: Sequence, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, sd) of ``key`` over runs (``metrics.jsonl`` paths), epoch by epoch;
    an epoch some runs did not log averages the runs that did (sd 0 for one run)."""
    by_epoch: dict[float, list[float]] = {}
    for path in paths:
        epochs, values = metric_series(read_metrics_jsonl(path), key)
        for epoch, value in zip(epochs, values, strict=True):
            by_epoch.setdefault(round(float(epoch), 6), []).append(float(value))
    epochs = np.array(sorted(by_epoch), dtype=np.float64)
    groups = [np.asarray(by_epoch[e]) for e in epochs]
    mean = np.array([g.mean() for g in groups], dtype=np.float64)
    sd = np.array([g.std(ddof=1) if g.size > 1 else 0.0 for g in groups], dtype=np.float64)
    return epochs, mean, sd


def curve_panels_png(
    panels: Mapping[str, Mapping[str, Sequence]],
    path,
    keys: Mapping[str, str],
    ylabel: str,
    title: str,
) -> Path:
    """A grid of curves: one row per ``keys`` item (row title -> metric key), one column per
    ``panels`` item (column title -> {arm label -> [metrics.jsonl of each seed]}). Each arm
    is its mean over seeds with a band of one sd; panels are lettered (a), (b), ... row by
    row, as the paper's Fig. 6 (training above, validation below), and the panels of a row
    share their y axis so that columns compare at a glance."""
    rows, cols = len(keys), max(len(panels), 1)
    fig = _figure(4.4 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharey="row")
    arms = list(dict.fromkeys(arm for runs in panels.values() for arm in runs))
    for i, (row_title, key) in enumerate(keys.items()):
        for j, (col_title, runs) in enumerate(panels.items()):
            letter = chr(ord("a") + i * cols + j)
            _mean_bands(axes[i][j], runs, key, arms, f"({letter}) {col_title}: {row_title}")
            axes[i][j].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _mean_bands(ax, runs: Mapping[str, Sequence], key: str, arms: list, title: str) -> None:
    """Each arm's mean of ``key`` over its runs with a band of one sd, colored by its place
    in ``arms``; an axis with no records says so."""
    for arm, paths in runs.items():
        epochs, mean, sd = mean_curve(paths, key)
        if not epochs.size:
            continue
        color = f"C{arms.index(arm) % 10}"
        label = f"{arm} (n={len(paths)})"
        ax.plot(epochs, mean, color=color, label=label, marker="o", markersize=2)
        ax.fill_between(epochs, mean - sd, mean + sd, color=color, alpha=0.2)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, f"no {key} records", transform=ax.transAxes, ha="center")


def arm_curves_png(runs: Mapping[str, Sequence], path, keys: Mapping[str, str], title: str) -> Path:
    """One row of panels, one per ``keys`` item (panel title -> metric key), each with every
    arm of ``runs`` (arm label -> [metrics.jsonl of each seed]) as its mean over seeds and a
    band of one sd: the curves behind a paired claim."""
    fig = _figure(4.4 * max(len(keys), 1), 3.6)
    axes = fig.subplots(1, max(len(keys), 1), squeeze=False)[0]
    for i, (panel, key) in enumerate(keys.items()):
        _mean_bands(axes[i], runs, key, list(runs), f"({chr(ord('a') + i)}) {panel}")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def metric_vs_png(series: Mapping[str, Sequence], path, xlabel: str, title: str) -> Path:
    """One line per name in ``series`` (name -> [(x, y), ...]), e.g. accuracy against depth."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for i, (label, points) in enumerate(series.items()):
        xs, ys = zip(*sorted(points), strict=True) if points else ((), ())
        ax.plot(xs, ys, marker="o", color=f"C{i % 10}", label=label)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return _save(fig, path)


def interval_panels_png(
    panels: Mapping[str, Mapping[str, Sequence]], path, xlabel: str, title: str
) -> Path:
    """One panel per ``panels`` item (y label -> {line -> [(x, mean, low, high), ...]}):
    means joined by lines, 95% intervals as error bars (none where low is None)."""
    fig = _figure(5.0 * max(len(panels), 1), 3.8)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (ylabel, series) in zip(axes, panels.items(), strict=False):
        for i, (label, points) in enumerate(series.items()):
            if not points:
                continue
            xs, means, lows, highs = zip(*sorted(points), strict=True)
            lo = [m - (low if low is not None else m) for m, low in zip(means, lows, strict=True)]
            hi = [(h if h is not None else m) - m for m, h in zip(means, highs, strict=True)]
            ax.errorbar(xs, means, yerr=[lo, hi], marker="o", capsize=3, color=f"C{i % 10}",
                        label=label)  # fmt: skip
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def profile_grid_png(
    panels: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    path,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """A grid of log-scale profiles: panels keyed (row, column) -> {line -> values}, each line
    its values against their index (e.g. gradient norm by block)."""
    rows = list(dict.fromkeys(r for r, _ in panels))
    cols = list(dict.fromkeys(c for _, c in panels))
    fig = _figure(4.0 * max(len(cols), 1), 3.0 * max(len(rows), 1))
    axes = fig.subplots(max(len(rows), 1), max(len(cols), 1), squeeze=False)
    for (row, col), series in panels.items():
        ax = axes[rows.index(row)][cols.index(col)]
        for i, (label, values) in enumerate(series.items()):
            ax.plot(np.arange(len(values)), values, color=f"C{i % 10}", label=label)
        ax.set_yscale("log")
        ax.set_title(f"{col}, {row}", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
