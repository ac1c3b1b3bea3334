"""The cells of reproduced tables: one number of a run, our mean ± sd beside the paper's
figure and their difference, every metric of each run group and of each run, and a study's
arms seed by seed with their 95% intervals and paired differences."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bregflax import paths
from bregflax.evaluation import plots, report
from bregflax.paper import published, stats

DATASET_NAMES = {
    "fer2013": "FER2013",
    "affectnet": "AffectNet",
    "affectnet_va": "AffectNet",
    "aff_wild": "Aff-Wild",
    "synthetic_va": "synthetic faces",
}
ARCH_NAMES = {"bregnet": "BReG-Net (H3)", "resnet": "ResNet (identity)"}
MAP_NAMES = {"h3": "H3", "identity": "identity", "h1": "H1", "h2": "H2", "cubic": "x + x³/3"}
DASH = "–"


# --------------------------------------------------------------------------- values


FRACTION = 0.95  # convergence: the first (interpolated) epoch at this fraction of the final
CONVERGENCE = f"epochs_to_{FRACTION:.0%}"  # the value key: "epochs_to_95%"
LOWER_IS_BETTER = ("seconds_per_epoch", CONVERGENCE)


def epochs_to_fraction(metrics_path, fraction: float = FRACTION) -> float | None:
    """The first epoch (linearly interpolated between validations) at which the validation
    accuracy reaches ``fraction`` of its final value; None without validations."""
    records = plots.read_metrics_jsonl(metrics_path) if paths.path(metrics_path).exists() else []
    epochs, acc = plots.metric_series(records, "val/accuracy")
    if not epochs.size:
        return None
    target = fraction * acc[-1]
    prev_e, prev_a = 0.0, None
    for e, a in zip(epochs, acc, strict=True):
        if a >= target:
            if prev_a is None or a == prev_a:
                return float(e)
            return float(prev_e + (target - prev_a) / (a - prev_a) * (e - prev_e))
        prev_e, prev_a = e, a
    return float(epochs[-1])


def value(result: dict, key: str):
    """One number of a run: ``accuracy``, ``norm/f1``, ``valence/rmse``, ``recall/Disgust``,
    ``seconds_per_epoch``, ``params``, ``layers`` or ``CONVERGENCE`` (from the run's
    ``metrics.jsonl``); None where the run has none."""
    if key in ("seconds_per_epoch", "params", "layers"):
        return result.get(key)
    if key == CONVERGENCE:
        return epochs_to_fraction(paths.path(result["workdir"]) / "metrics.jsonl")
    s = result["scores"]
    if key.startswith("norm/"):
        v = s.get("skew_normalized", {}).get(key[5:])
        return v[0] if isinstance(v, list | tuple) else v
    if key.startswith("recall/"):
        rows = {r["class"]: r for r in result.get("per_class") or []}
        return rows.get(key[7:], {}).get("recall")
    if "/" in key:
        return s.get("dimensional", {}).get(key)
    return s.get("categorical", {}).get(key)


def values(results: Sequence[dict], key: str) -> list[float]:
    return [float(v) for v in (value(r, key) for r in results) if v is not None]


def group(results: Sequence[dict], **match) -> list[dict]:
    """The runs whose experiment has every field of ``match`` (depth-swept runs only when
    ``depth`` is matched)."""
    match.setdefault("depth", None)
    return [r for r in results if all(r["experiment"].get(k) == v for k, v in match.items())]


def ours(vals: Sequence[float], digits: int, factor: float = 1.0) -> str:
    """Our cell: the mean ± sd (n=k) of ``vals`` times ``factor``, or "–" for none."""
    if not vals:
        return DASH
    mean, sd = stats.mean_sd(np.asarray(vals) * factor)
    if len(vals) == 1:
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (n={len(vals)})"


def triple(vals, paper_value, digits: int, paper_digits: int, factor: float = 1.0) -> list:
    """[ours, paper, Δ] cells; Δ = our mean - the paper's figure."""
    paper_text = DASH if paper_value is None else f"{paper_value:.{paper_digits}f}"
    diff = DASH
    if vals and paper_value is not None:
        diff = f"{np.mean(vals) * factor - paper_value:+.{digits}f}"
    return [ours(vals, digits, factor), paper_text, diff]


def _columns(names: Sequence[str]) -> list[str]:
    return [f"{n} {part}" for n in names for part in ("ours", "paper", "Δ")]


ORIG_NORM_HEADER = ["Metric"] + _columns(["Orig", "Norm"])


def orig_norm_rows(runs: Sequence[dict], dataset: str, loss: str) -> list[list[str]]:
    """Tables III/IV's rows for BReG-Net with ``loss`` on ``dataset``: each metric on the
    whole validation set (Orig) and skew-normalized (Norm), ours beside the paper's; its
    accuracy, which Tables III/IV lack, from Table II as a fraction."""
    body = []
    for key, label in report.CATEGORICAL_ROWS:
        orig, norm = published.orig_norm(dataset, key, loss)
        if key == "accuracy":
            percent = published.TABLE_II.get((dataset, "bregnet", loss))
            orig = None if percent is None else percent / 100
            label += " (paper: Table II)"
        body.append(
            [label]
            + triple(values(runs, key), orig, 3, 4 if key == "accuracy" else 2)
            + triple(values(runs, f"norm/{key}"), norm, 3, 2)
        )
    return body


def _arm_label(e: dict) -> str:
    depth = f", depth {e['depth']}" if e.get("depth") else ""
    return f"{e['dataset']} {e['arch']} {e['shortcut']} {e['loss']}{depth}"


# Tables III/IV's metrics, each original (Orig) beside its skew-normalized value (Norm).
ARM_KEYS = (
    ("accuracy", "Accuracy", 4),
    ("norm/accuracy", "Norm accuracy", 4),
    *(
        item
        for key, name in (
            ("f1", "F1"),
            ("kappa", "kappa"),
            ("alpha", "alpha"),
            ("mcc", "MCC"),
            ("ppv", "PPV"),
        )  # fmt: skip
        for item in ((key, f"Orig {name}", 4), (f"norm/{key}", f"Norm {name}", 4))
    ),
    ("recall/Disgust", "Disgust recall", 4),
    ("seconds_per_epoch", "s / epoch", 1),
)


def arm_metrics(results: Sequence[dict]) -> str:
    """Every metric the claims rest on, mean ± sd over the seeds of each distinct arm."""
    arms: dict[str, list[dict]] = {}
    for r in results:
        if "categorical" in r["scores"]:
            arms.setdefault(_arm_label(r["experiment"]), []).append(r)
    if not arms:
        return ""
    body = [
        [label, f"{runs[0]['params']:,}", str(runs[0].get("layers", DASH))]
        + [ours(values(runs, k), d) for k, _, d in ARM_KEYS]
        for label, runs in sorted(arms.items())
    ]
    header = ["Run", "Params", "Layers"] + [name for _, name, _ in ARM_KEYS]
    repeats = results[0].get("repeats", 200)
    return (
        "## Every metric per run group\n\n"
        f"Mean ± sd over seeds; Orig = on the whole validation set, Norm = skew-normalized "
        f"({repeats} balanced under-samplings), as the paper's Tables III and IV.\n\n"
        + report.markdown_table(header, body)
        + "\n"
    )


def _number(v, digits: int) -> str:
    return DASH if v is None else f"{v:.{digits}f}"


def run_metrics(results: Sequence[dict]) -> str:
    """The same metrics for every run, one row each (seed by seed)."""
    runs = sorted(
        (r for r in results if "categorical" in r["scores"] or r.get("diverged")),
        key=lambda r: r["workdir"],
    )
    if not runs:
        return ""
    body = [
        [paths.path(r["workdir"]).name]
        + (
            [f"diverged at step {r['diverged']['step']}"] + [DASH] * (len(ARM_KEYS) - 1)
            if r.get("diverged")
            else [_number(value(r, k), d) for k, _, d in ARM_KEYS]
        )
        for r in runs
    ]
    header = ["Run"] + [name for _, name, _ in ARM_KEYS]
    return "## Every run\n\n" + report.markdown_table(header, body) + "\n"


# --------------------------------------------------------------------------- arms of a study


def runs_of(results: Sequence[dict], shortcut: str, depth: int, loss: str = "regular") -> dict:
    """seed -> result of the runs of one arm."""
    out = {}
    for r in results:
        e = r["experiment"]
        if (e["shortcut"], e.get("depth"), e["loss"]) == (shortcut, depth, loss):
            out[e["seed"]] = r
    return out


def study_value(result: dict, key: str) -> float | None:
    """``accuracy`` (in %), ``norm/f1``, ``recall/<class>``, ``seconds_per_epoch`` of a run
    (``value``); None for a run that diverged or lacks it."""
    v = None if result.get("diverged") else value(result, key)
    return None if v is None else 100.0 * v if key == "accuracy" else v


def per_seed(arm: dict, key: str) -> dict[int, float]:
    """seed -> ``study_value`` of an arm's runs that have it."""
    return {s: v for s, r in arm.items() if (v := study_value(r, key)) is not None}


def mean_text(vals, digits: int) -> str:
    """mean [95% t interval] (n=k) of ``vals``."""
    mean, low, high = stats.mean_interval(vals)
    if math.isnan(mean):
        return DASH
    if low is None:
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] (n={len(vals)})"


def paired_text(p: stats.Paired, digits: int) -> str:
    """A − B [95% t interval] (n=k) of a paired comparison; "–" for none."""
    if not p.n:
        return DASH
    if p.low is None:
        return f"{p.diff:+.{digits}f} (n=1)"
    return f"{p.diff:+.{digits}f} [{p.low:+.{digits}f}, {p.high:+.{digits}f}] (n={p.n})"


def verdict_text(p: stats.Paired) -> str:
    return p.verdict if p.n else "not run"


PAIRED_HEADER = ["Claim", "Metric", "n", "A mean ± sd", "B mean ± sd", "A − B [95% CI]", "Verdict"]


def paired_row(claim: str, metric: str, p: stats.Paired, digits: int) -> list[str]:
    """A claim's row under ``PAIRED_HEADER``: both arms' mean ± sd over the shared seeds, the
    paired difference with its 95% interval, and the verdict."""
    interval = DASH if p.low is None else f"[{p.low:+.{digits}f}, {p.high:+.{digits}f}]"
    arms = [
        DASH if not p.n else f"{m:.{digits}f} ± {sd:.{digits}f}"
        for m, sd in ((p.mean_a, p.sd_a), (p.mean_b, p.sd_b))
    ]
    diff = DASH if not p.n else f"{p.diff:+.{digits}f} {interval}"
    return [claim, metric, str(p.n), *arms, diff, verdict_text(p)]
