"""The paper's claims as paired comparisons: each claim's arms, its paired difference with
a 95% interval and a verdict (``stats.paired``), and both arms' curves."""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections

from bregflax import configs, paths
from bregflax.configs import experiment
from bregflax.evaluation import plots, report
from bregflax.paper import published as paper
from bregflax.paper import stats
from bregflax.paper.cells import (
    CONVERGENCE,
    DASH,
    LOWER_IS_BETTER,
    PAIRED_HEADER,
    _arm_label,
    arm_metrics,
    paired_row,
    run_metrics,
    value,
)


def arm_key(config: ml_collections.ConfigDict | dict) -> str:
    """A run's name without its seed: the runs of one arm share it."""
    config = ml_collections.ConfigDict(config) if isinstance(config, dict) else config
    return experiment.run_name(config).rsplit("_seed", 1)[0]


def _by_arm(results: Sequence[dict]) -> dict[str, list[dict]]:
    by_arm: dict[str, list[dict]] = {}
    for r in results:
        by_arm.setdefault(arm_key(r["config"]), []).append(r)
    return by_arm


def _claims(names=()) -> list:
    return [c for c in experiment.CLAIMS if not names or c.name in names]


def _claim_arms(claim, scale: str) -> list[ml_collections.ConfigDict]:
    return [configs.get(experiment.CLAIM_CONFIG, f"{a},{scale}") for a in claim.arms(scale)]


CLAIM_CURVES = {
    "training loss": "train/loss",
    "validation loss": "val/loss",
    "validation accuracy": "val/accuracy",
}


def claim_figures(results: Sequence[dict], out, scale: str, claims=()) -> str:
    """Per claim, both arms' training and validation curves over the seeds they share (the
    pairs of its interval) whose ``metrics.jsonl`` is there: mean ± sd, the legend giving n.
    Markdown image lines; a claim without a finished pair has none."""
    by_arm = _by_arm(results)
    lines = []
    for claim in _claims(claims):
        arms = [(side, c, by_arm.get(arm_key(c), [])) for side, c in
                zip("AB", _claim_arms(claim, scale), strict=True)]  # fmt: skip
        paired = set.intersection(*({r["experiment"]["seed"] for r in rs} for _, _, rs in arms))
        runs = {
            f"{side}: {_arm_label(c.experiment.to_dict())}": [
                log
                for r in sorted(rs, key=lambda r: r["experiment"]["seed"])
                if r["experiment"]["seed"] in paired
                and (log := paths.path(r["workdir"]) / "metrics.jsonl").exists()
            ]
            for side, c, rs in arms
        }
        if paired:
            title = f"{claim.name}: {claim.title} (mean ± sd over {len(paired)} paired seeds)"
            png = plots.arm_curves_png(
                runs, paths.path(out) / f"claims_{claim.name}.png", CLAIM_CURVES, title
            )
            lines.append(f"![{claim.name}]({png.name})")
    return "## Curves per arm\n\n" + "\n\n".join(lines) + "\n\n" if lines else ""


def _paper_value(e: dict, metric: str):
    """The paper's figure for an arm (accuracy in %, skew-normalized F1, seconds)."""
    if metric == "accuracy":
        return paper.accuracy(e["dataset"], e["arch"], e["shortcut"], e["loss"])
    if metric.startswith("norm/") and e["arch"] == "bregnet" and e["shortcut"] == "h3":
        return paper.orig_norm(e["dataset"], metric[5:], e["loss"])[1]
    if metric == "seconds_per_epoch":
        return paper.TIMING[e["arch"]]["seconds_per_epoch"]
    return None


CLAIM_DIGITS = {"accuracy": (2, 100.0), "seconds_per_epoch": (1, 1.0), CONVERGENCE: (2, 1.0)}


def claim_rows(results: Sequence[dict], scale: str, claims=()) -> list[list[str]]:
    """One row per (claim, metric): both arms, the paired difference and its verdict."""
    by_arm = _by_arm(results)
    rows = []
    for claim in _claims(claims):
        arms = _claim_arms(claim, scale)
        runs = [by_arm.get(arm_key(c), []) for c in arms]
        for metric in claim.metrics:
            digits, factor = CLAIM_DIGITS.get(metric, (4, 1.0))
            a, b = ({r["experiment"]["seed"]: value(r, metric) for r in rs} for rs in runs)
            a, b = ({s: v * factor for s, v in x.items() if v is not None} for x in (a, b))
            p = stats.paired(a, b, higher_is_better=metric not in LOWER_IS_BETTER)
            pa, pb = (_paper_value(c.experiment.to_dict(), metric) for c in arms)
            rows.append(
                paired_row(claim.name, metric, p, digits)
                + [DASH if v is None else f"{v:.2f}" for v in (pa, pb)]
                + [DASH if pa is None or pb is None else f"{pa - pb:+.2f}"]
            )
    return rows


def render_claims(results, out, scale, claims=()) -> str:
    lines = []
    for claim in _claims(claims):
        a, b = claim.arms(scale)
        lines.append(f"- `{claim.name}`: {claim.title}; A = `{a}`, B = `{b}`.")
    header = PAIRED_HEADER + ["Paper A", "Paper B", "Paper A − B"]
    text = (
        "Each claim says arm A beats arm B; both arms ran with the same seeds (a seed fixes "
        "the initialization and the data order), so each seed gives one difference A − B. "
        "The interval is the two-sided 95% t interval over seeds, mean ± t(0.975, n − 1) · "
        "sd / √n; held: above 0 (below 0 for seconds per epoch and for epochs to 95% of the "
        "final validation accuracy, the convergence speed), not held: on the other side, "
        "inconclusive: it contains 0 or n < 2. Accuracy in %. The paper's figures are for "
        "its own networks (BReG-Net-39, ResNet-110) on full training; its seconds are one "
        "AffectNet epoch on a GTX 1080 Ti.\n\n"
    )
    text += "\n".join(lines) + "\n\n"
    text += report.markdown_table(header, claim_rows(results, scale, claims)) + "\n\n"
    text += claim_figures(results, out, scale, claims)
    return text + arm_metrics(results) + "\n" + run_metrics(results)
