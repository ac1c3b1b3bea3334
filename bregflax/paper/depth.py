"""The depth study's report (``bregflax reproduce --table=depth``): the paper's depth story
tested where a CPU can test it.

From the runs of ``experiment.depth_study`` (their ``result.json`` and ``metrics.jsonl``):
accuracy and skew-normalized F1 against depth for H3 and identity with 95% intervals, the
paired H3 − identity gap at each depth and whether it grows with depth, seconds per epoch,
per-block gradient norms through training, a map with an unbounded derivative, convergence
speed (epochs to a fixed fraction of the final accuracy), the weighted loss rescaled to
average 1 and not, with per-class recall, and Tables III/IV (original and skew-normalized
metrics) at this scale. Every interval is the two-sided 95% t interval of
``bregflax.paper.stats``; a run that diverged is counted as such, never dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from bregflax import paths
from bregflax.configs import experiment
from bregflax.evaluation import plots, report
from bregflax.paper import cells, stats
from bregflax.paper.cells import (
    DASH,
    MAP_NAMES,
    mean_text,
    paired_row,
    paired_text,
    per_seed,
    runs_of,
    verdict_text,
)
from bregflax.paper.gradients import gradient_rows, gradients_png

# --------------------------------------------------------------------------- the sweep


def sweep_rows(results, depths: Sequence[int]) -> list[list[str]]:
    """Per depth and metric: each shortcut's mean [95% CI] and the paired H3 − identity gap."""
    rows = []
    for d in depths:
        h3, ident = runs_of(results, "h3", d), runs_of(results, "identity", d)
        any_run = next(iter({**h3, **ident}.values()), None)
        params = f"{any_run['params']:,}" if any_run and any_run.get("params") else DASH
        for key, digits in (("accuracy", 2), ("norm/f1", 4), ("seconds_per_epoch", 1)):
            a, b = per_seed(h3, key), per_seed(ident, key)
            p = stats.paired(a, b, higher_is_better=key != "seconds_per_epoch")
            rows.append(
                [str(d), params, key, mean_text(list(a.values()), digits),
                 mean_text(list(b.values()), digits), paired_text(p, digits), verdict_text(p)]
            )  # fmt: skip
    return rows


def gap_growth(results, depths: Sequence[int], key: str = "accuracy") -> stats.Paired:
    """The paired H3 − identity gap at the deepest depth against the shallowest, seed by
    seed: ``held`` means the gap grows with depth."""

    def gaps(d):
        a = per_seed(runs_of(results, "h3", d), key)
        b = per_seed(runs_of(results, "identity", d), key)
        return {s: a[s] - b[s] for s in set(a) & set(b)}

    return stats.paired(gaps(depths[-1]), gaps(depths[0]))


def sweep_png(results, depths, out: Path) -> Path:
    """Accuracy and skew-normalized F1 against depth, both shortcuts, mean with 95% CI bars."""
    panels = {}
    for key, label in (("accuracy", "accuracy (%)"), ("norm/f1", "skew-normalized F1")):
        series = {}
        for shortcut in ("h3", "identity"):
            points = []
            for d in depths:
                mean, low, high = stats.mean_interval(
                    per_seed(runs_of(results, shortcut, d), key).values()
                )
                if not math.isnan(mean):
                    points.append((d, mean, low, high))
            series[MAP_NAMES[shortcut]] = points
        panels[label] = series
    return plots.interval_panels_png(
        panels, out / "depth_sweep.png", "depth (6n + 3 weighted layers)",
        "Depth sweep: H3 against identity (mean and 95% t interval over seeds)",
    )  # fmt: skip


# --------------------------------------------------------------------------- convergence


# A run whose validation kappa is at most this predicted (nearly) one class: it converged to
# nothing, and "95% of its final accuracy" would count its first epoch as fast convergence.
LEARNED_KAPPA = 0.01


def _learned(result: dict) -> bool:
    kappa = cells.value(result, "kappa")
    return kappa is not None and kappa > LEARNED_KAPPA


def convergence_arms(results, depths) -> list[tuple[str, int, dict, dict, bool]]:
    """(other map, depth, H3's and the other's seed -> epochs to ``cells.FRACTION`` of the
    final accuracy, whether H3 learned): against identity at each depth, against H1 and H2 at
    the shallowest. A run that did not learn has no convergence epoch."""
    comparisons = [(d, "identity") for d in depths] + [(depths[0], m) for m in ("h1", "h2")]
    out = []
    for d, other in comparisons:
        h3_runs = runs_of(results, "h3", d)
        a, b = ({s: v for s, r in runs.items()
                 if _learned(r) and (v := cells.value(r, cells.CONVERGENCE)) is not None}
                for runs in (h3_runs, runs_of(results, other, d)))  # fmt: skip
        out.append((other, d, a, b, not h3_runs or any(map(_learned, h3_runs.values()))))
    return out


def convergence_rows(results, depths) -> list[list[str]]:
    """Each of ``convergence_arms``: both arms' mean [95% CI] and H3 − other, paired (fewer
    epochs is faster)."""
    rows = []
    for other, d, a, b, learned in convergence_arms(results, depths):
        p = stats.paired(a, b, higher_is_better=False)
        rows.append(
            [f"H3 vs {MAP_NAMES[other]}", str(d), mean_text(list(a.values()), 2),
             mean_text(list(b.values()), 2), paired_text(p, 2),
             verdict_text(p) if learned else "H3 did not learn"]
        )  # fmt: skip
    return rows


# --------------------------------------------------------------------------- other arms


def unbounded_rows(results, depths) -> list[list[str]]:
    """The unbounded map at the shallowest and deepest depth: diverged runs, accuracy, and
    the paired accuracy against H3 (H3 − cubic > 0: the bounded map trains better)."""
    rows = []
    for d in (depths[0], depths[-1]):
        cubic, h3 = runs_of(results, "cubic", d), runs_of(results, "h3", d)
        diverged = [r["diverged"] for r in cubic.values() if r.get("diverged")]
        steps = ", ".join(f"step {x['step']}" for x in diverged) or DASH
        a, b = per_seed(h3, "accuracy"), per_seed(cubic, "accuracy")
        p = stats.paired(a, b)
        rows.append(
            [str(d), f"{len(diverged)} of {len(cubic)}", steps,
             mean_text(list(b.values()), 2), mean_text(list(a.values()), 2),
             paired_text(p, 2), verdict_text(p) if p.n else DASH]
        )  # fmt: skip
    return rows


def unbounded_verdict(results, depths) -> str:
    """One sentence per depth: diverged, trained worse than H3, or no difference found."""
    out = []
    for d in (depths[0], depths[-1]):
        cubic = runs_of(results, "cubic", d)
        if not cubic:
            out.append(f"depth {d}: not run")
            continue
        diverged = sum(bool(r.get("diverged")) for r in cubic.values())
        p = stats.paired(per_seed(runs_of(results, "h3", d), "accuracy"),
                         per_seed(cubic, "accuracy"))  # fmt: skip
        if diverged == len(cubic):
            out.append(f"depth {d}: diverged in every run ({diverged} of {len(cubic)})")
        elif diverged:
            out.append(f"depth {d}: diverged in {diverged} of {len(cubic)} runs")
        elif p.verdict == stats.HELD:
            out.append(f"depth {d}: trains, but worse than H3 (H3 − cubic {paired_text(p, 2)})")
        else:
            out.append(f"depth {d}: no worse than H3 found ({p.verdict}, {paired_text(p, 2)})")
    return "; ".join(out)


WEIGHTED_ARMS = {"balanced": "rescaled", "weighted": "f_min / f_i", "regular": "regular"}
WEIGHTED_PAIRS = (("balanced", "regular"), ("weighted", "regular"), ("balanced", "weighted"))


def weighted_rows(results, depths, classes: Sequence[str]) -> list[list[str]]:
    """H3 at the shallowest depth with the weighted loss rescaled to average 1 ("balanced"),
    the paper's weights f_min / f_i ("weighted") and the regular loss: each arm's mean, then
    rescaled − regular, f_min / f_i − regular and rescaled − f_min / f_i, paired."""
    arms = {loss: runs_of(results, "h3", depths[0], loss) for loss in WEIGHTED_ARMS}
    rows = []
    keys = [("accuracy", 2), ("norm/f1", 4)] + [(f"recall/{c}", 3) for c in classes]
    for key, digits in keys:
        seeds = {loss: per_seed(arm, key) for loss, arm in arms.items()}
        row = [key] + [mean_text(list(v.values()), digits) for v in seeds.values()]
        for a, b in WEIGHTED_PAIRS:
            p = stats.paired(seeds[a], seeds[b])
            row += [paired_text(p, digits), verdict_text(p)]
        rows.append(row)
    return rows


def weighted_header() -> list[str]:
    return ["Metric", *WEIGHTED_ARMS.values()] + [
        part
        for a, b in WEIGHTED_PAIRS
        for part in (f"{WEIGHTED_ARMS[a]} − {WEIGHTED_ARMS[b]}", "Verdict")
    ]


def paper_tables(results, depths) -> str:
    """Tables III (weighted loss) and IV (regular loss) at this scale: H3 at the shallowest
    depth, each metric on the whole validation set and skew-normalized, beside the paper's."""
    parts = []
    for loss, table in (("weighted", "III"), ("regular", "IV")):
        runs = list(runs_of(results, "h3", depths[0], loss).values())
        rows = cells.orig_norm_rows(runs, "fer2013", loss)
        parts.append(
            f"### Table {table}: {loss} loss\n\n"
            + report.markdown_table(cells.ORIG_NORM_HEADER, rows)
        )
    return "\n\n".join(parts)


def _classes(results) -> list[str]:
    for r in results:
        if r.get("per_class"):
            return [row["class"] for row in r["per_class"] if "avg" not in row["class"]]
    return []


# --------------------------------------------------------------------------- every claim


def verdict_rows(results, depths) -> list[list[str]]:
    """Every claim of the study in the claims' form (``cells.PAIRED_HEADER``): A − B paired
    over seeds, A named first."""
    rows = []
    metrics = (("accuracy", 2), ("norm/f1", 4))
    for d in depths:
        h3, ident = runs_of(results, "h3", d), runs_of(results, "identity", d)
        for key, digits in metrics:
            p = stats.paired(per_seed(h3, key), per_seed(ident, key))
            rows.append(paired_row(f"H3 vs identity, depth {d}", key, p, digits))
    for key, digits in metrics:
        p = gap_growth(results, depths, key)
        rows.append(paired_row(f"gap at depth {depths[-1]} vs at {depths[0]}", key, p, digits))
    for d in (depths[0], depths[-1]):
        cubic, h3 = runs_of(results, "cubic", d), per_seed(runs_of(results, "h3", d), "accuracy")
        row = paired_row(f"H3 vs x + x³/3, depth {d}", "accuracy",
                         stats.paired(h3, per_seed(cubic, "accuracy")), 2)  # fmt: skip
        diverged = sum(bool(r.get("diverged")) for r in cubic.values())
        if cubic and diverged == len(cubic):  # nothing to pair: the finding is the divergence
            mean, sd = stats.mean_sd([h3[s] for s in cubic if s in h3])
            row[2:] = [str(len(cubic)), f"{mean:.2f} ± {sd:.2f}",
                       f"diverged in {diverged} of {len(cubic)}", DASH, stats.HELD]  # fmt: skip
        rows.append(row)
    for other, d, a, b, learned in convergence_arms(results, depths):
        p = stats.paired(a, b, higher_is_better=False)
        row = paired_row(f"H3 vs {MAP_NAMES[other]}, depth {d}", cells.CONVERGENCE, p, 2)
        rows.append(row if learned else [*row[:-1], "H3 did not learn"])
    arms = {loss: runs_of(results, "h3", depths[0], loss) for loss in WEIGHTED_ARMS}
    for a, b in WEIGHTED_PAIRS:
        for key, digits in (*metrics, ("recall/Disgust", 3)):
            p = stats.paired(per_seed(arms[a], key), per_seed(arms[b], key))
            name = f"{WEIGHTED_ARMS[a]} vs {WEIGHTED_ARMS[b]} loss, depth {depths[0]}"
            rows.append(paired_row(name, key, p, digits))
    return rows


# --------------------------------------------------------------------------- the page


def render(results: Sequence[dict], out, scale: str) -> str:
    """The markdown of ``--table=depth`` (figures written into ``out``)."""
    out = paths.path(out)
    depths, width, _, _ = experiment.DEPTH_STUDY[scale]
    table = report.markdown_table
    growth = {k: gap_growth(results, depths, k) for k in ("accuracy", "norm/f1")}
    text = [
        f"Family: the scale's network (`{experiment.MODELS[scale][0]}`, 3 stages) at widths "
        f"{width}/{2 * width}/{4 * width}, depths {', '.join(map(str, depths))} "
        "(6n + 3 weighted layers); H3 "
        "against identity with the same seeds (one seed fixes the initialization and the "
        "data order). Intervals: two-sided 95% t over seeds.\n",
        "## Every claim of the study\n",
        "A − B paired over seeds (A named first); the interval is the two-sided 95% t "
        "interval; held: A is better (fewer epochs for convergence; for x + x³/3, every run "
        "diverged). Accuracy in %.\n",
        table(cells.PAIRED_HEADER, verdict_rows(results, depths)),
        "\n## Accuracy, skew-normalized F1 and seconds per epoch against depth\n",
        table(
            ["Depth", "Params", "Metric", "H3", "identity", "H3 − identity", "Verdict"],
            sweep_rows(results, depths),
        ),  # fmt: skip
        "\nDoes the gap grow with depth? Paired over seeds, gap(deepest) − gap(shallowest): "
        + "; ".join(
            f"{k} {paired_text(p, 4 if k != 'accuracy' else 2)}, **{verdict_text(p)}**"
            for k, p in growth.items()
        )  # fmt: skip
        + " (held: the gap grows).\n",
        f"![depth sweep]({sweep_png(results, depths, out).name})\n",
        "## Gradient norms through training\n",
        "Tilt: log10(first block's gradient norm / last block's), in decades (> 0: gradients "
        "shrink from the input towards the output); span: log10(largest / smallest) over the "
        "blocks. At the first log (the mean of the first 100-step window) and at the end of "
        "training.\n",
        table(
            [
                "Depth",
                "Measure",
                "H3 first",
                "identity first",
                "H3 end",
                "identity end",
                "H3 − identity first",
                "H3 − identity end",
            ],  # fmt: skip
            gradient_rows(results, depths),
        ),
        f"\n![gradient norms]({gradients_png(results, depths, out).name})\n",
        f"## Convergence speed: epochs to {cells.FRACTION:.0%} of the final validation accuracy\n",
        table(
            ["Comparison", "Depth", "H3 epochs", "other epochs", "H3 − other", "Verdict"],
            convergence_rows(results, depths),
        ),  # fmt: skip
        "\nHeld: H3 reaches the fraction in fewer epochs. A run that did not learn (validation "
        f"kappa at most {LEARNED_KAPPA}: one class predicted) has no convergence epoch "
        "and is left out.\n",
        "## A map with an unbounded derivative: x + x³/3\n",
        table(
            [
                "Depth",
                "Diverged",
                "Where",
                "cubic accuracy",
                "H3 accuracy",
                "H3 − cubic",
                "Verdict",
            ],
            unbounded_rows(results, depths),
        ),  # fmt: skip
        f"\nVerdict: {unbounded_verdict(results, depths)}.\n",
        f"## The weighted loss, rescaled to average 1 and not (H3, depth {depths[0]})\n",
        "Rescaled: the paper's class weights f_min / f_i times a constant that makes their "
        "average over the training examples 1 (the regular loss's size); f_min / f_i: the "
        "paper's weights as they are (average 0.106 on FER2013's Training split).\n",
        table(weighted_header(), weighted_rows(results, depths, _classes(results))),
        f"\n## Tables III and IV at this scale (H3, depth {depths[0]}, FER2013)\n",
        "Orig: on the whole validation set; Norm: skew-normalized (balanced "
        "under-samplings). The paper's figures are BReG-Net-39's; its Table III is the "
        "weighted loss (f_min / f_i), Table IV the regular loss.\n",
        paper_tables(results, depths),
        "",
    ]
    return "\n".join(text) + "\n"
