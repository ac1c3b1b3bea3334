"""The markdown of ``bregflax reproduce``: our runs beside the paper's figures.

Each table takes the results of its runs (the ``result.json`` dicts of
``reproduce.run_experiment``) and shows, in every cell the paper has, our mean ± sd over
seeds (sd with n - 1), the paper's figure (``bregflax.paper.published``) and the difference
Δ = ours - paper (our mean). Rows the paper has are shown even when no run of ours filled
them, so the paper's column is always complete. Tables I and II are in percent, as the
paper prints them; the others in fractions. ``claims`` (``bregflax.paper.claims``) compares
paired arms; ``depth`` is ``bregflax.paper.depth``'s study.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bregflax import paths
from bregflax.configs import experiment
from bregflax.evaluation import plots, report
from bregflax.paper import claims as claims_lib
from bregflax.paper import depth as depth_study
from bregflax.paper import published as paper
from bregflax.paper.cells import (
    ARCH_NAMES,
    DASH,
    DATASET_NAMES,
    ORIG_NORM_HEADER,
    _columns,
    arm_metrics,
    group,
    orig_norm_rows,
    ours,
    run_metrics,
    triple,
    values,
)

TITLES = {
    "1": "Table I: shortcut maps and losses",
    "2": "Table II: ResNet against BReG-Net",
    "3": "Table III: metrics, weighted loss",
    "4": "Table IV: metrics, regular loss",
    "5": "Table V: valence/arousal RMSE",
    "6": "Table VI: CC, CCC, SAGR of BReG-Net",
    "7": "Table VII: CC, CCC, SAGR of ResNet",
    "fig5": "Fig. 5: depth sweep",
    "fig6": "Fig. 6: the dimensional model's MSE loss, training and validation",
    "timing": "Timing: parameters and seconds per epoch",
    "claims": "The paper's claims, paired seeds",
    "depth": "The depth story: a depth sweep, gradients, an unbounded map, convergence speed",
}


# --------------------------------------------------------------------------- tables


def _accuracy_rows(results, rows: dict[str, dict]) -> list[list[str]]:
    """Recognition rate (%), ours beside the paper's, per categorical dataset; ``rows`` maps
    each row label to the experiment fields (arch, shortcut, loss) of its runs."""
    body = []
    for label, match in rows.items():
        row = [label]
        for d in experiment.CATEGORICAL:
            runs = group(results, dataset=d, **match)
            row += triple(values(runs, "accuracy"), paper.accuracy(d, **match), 2, 2, 100)
        body.append(row)
    return body


def render_table1(results, out, scale) -> str:
    rows = {
        f"{m.upper()}, {loss}": {"arch": "bregnet", "shortcut": m, "loss": loss}
        for m in experiment.MAPS
        for loss in experiment.LOSSES
    }
    header = ["Map, loss"] + _columns([DATASET_NAMES[d] for d in experiment.CATEGORICAL])
    return (
        "Recognition rate (%) of BReG-Net by shortcut map and loss.\n\n"
        + report.markdown_table(header, _accuracy_rows(results, rows))
        + "\n\n"
        + arm_metrics(results)
    )


def render_table2(results, out, scale) -> str:
    datasets = experiment.CATEGORICAL
    shortcut = {"bregnet": "h3", "resnet": "identity"}
    rows = {
        f"{ARCH_NAMES[arch]}, {loss}": {"arch": arch, "shortcut": shortcut[arch], "loss": loss}
        for arch in experiment.ARCHS
        for loss in experiment.LOSSES
    }
    body = _accuracy_rows(results, rows)
    sota = ["State of the art (the paper's references)"]
    for d in datasets:
        sota += [DASH, paper.TABLE_II_STATE_OF_THE_ART[d], DASH]
    body.append(sota)
    header = ["Network, loss"] + _columns([DATASET_NAMES[d] for d in datasets])
    return (
        "Recognition rate (%), ResNet against BReG-Net. The paper does not state the loss of "
        "its ResNet-110 column; its text implies the regular loss, so that figure sits in the "
        "regular row.\n\n" + report.markdown_table(header, body) + "\n\n" + arm_metrics(results)
    )


def _metrics_render(loss: str, table: str):
    def render(results, out, scale) -> str:
        parts = []
        for d in experiment.CATEGORICAL:
            runs = group(results, dataset=d, arch="bregnet", loss=loss)
            parts.append(
                f"## {DATASET_NAMES[d]}, BReG-Net (H3), {loss} loss (Table {table})\n\n"
                + report.markdown_table(ORIG_NORM_HEADER, orig_norm_rows(runs, d, loss))
            )
        return "\n\n".join(parts) + "\n"

    return render


def render_table5(results, out, scale) -> str:
    body = []
    for d in experiment.DIMENSIONAL:
        for arch in experiment.ARCHS:
            runs = group(results, dataset=d, arch=arch)
            row = [f"{DATASET_NAMES[d]}, {ARCH_NAMES[arch]}"]
            for dim in ("valence", "arousal"):
                row += triple(values(runs, f"{dim}/rmse"), paper.TABLE_V[(d, arch, dim)], 4, 4)
            body.append(row)
        sota = [f"{DATASET_NAMES[d]}, state of the art"]
        for dim in ("valence", "arousal"):
            v, ref = paper.TABLE_V_STATE_OF_THE_ART[(d, dim)]
            sota += [DASH, f"{v:.2f} {ref}", DASH]
        body.append(sota)
    header = ["Dataset, network"] + _columns(["valence RMSE", "arousal RMSE"])
    return report.markdown_table(header, body) + "\n"


def _dimensional_render(arch: str):
    def render(results, out, scale) -> str:
        cells = paper.DIMENSIONAL_BY_ARCH[arch]
        body = []
        for d in experiment.DIMENSIONAL:
            runs = group(results, dataset=d, arch=arch)
            for m in ("cc", "ccc", "sagr"):
                row = [f"{DATASET_NAMES[d]} {m.upper()}"]
                for dim in ("valence", "arousal"):
                    row += triple(values(runs, f"{dim}/{m}"), cells[(d, m, dim)], 3, 2)
                body.append(row)
        header = ["Dataset, metric"] + _columns(["valence", "arousal"])
        name = f"{ARCH_NAMES[arch]} (paper: {paper.NAMES[arch]})"
        return f"{name}, dimensional model.\n\n" + report.markdown_table(header, body) + "\n"

    return render


def render_timing(results, out, scale) -> str:
    body, spe = [], {}
    for d in experiment.CATEGORICAL:
        for arch in experiment.ARCHS:
            runs = group(results, dataset=d, arch=arch)
            timed = paper.TIMING[arch] if d == paper.TIMING_DATASET else None
            params = f"{runs[0]['params']:,}" if runs else DASH
            row = [f"{DATASET_NAMES[d]}, {ARCH_NAMES[arch]}", params]
            row.append(f"{timed['params'] / 1e6:.1f}M" if timed else DASH)
            row += triple(
                values(runs, "seconds_per_epoch"), timed and timed["seconds_per_epoch"], 1, 2
            )
            body.append(row)
            spe[(d, arch)] = values(runs, "seconds_per_epoch")
    ratio_paper = (
        paper.TIMING["bregnet"]["seconds_per_epoch"] / paper.TIMING["resnet"]["seconds_per_epoch"]
    )
    for d in experiment.CATEGORICAL:
        a, b = spe[(d, "bregnet")], spe[(d, "resnet")]
        ratio = [np.mean(a) / np.mean(b)] if a and b else []
        timed = ratio_paper if d == paper.TIMING_DATASET else None
        row = [f"{DATASET_NAMES[d]}, BReG-Net / ResNet seconds", DASH, DASH]
        body.append(row + triple(ratio, timed, 3, 3))
    header = ["Run", "Params ours", "Params paper"] + _columns(["s / epoch"])
    return (
        "Parameters and training seconds per epoch (ours from the logged images/s, validation "
        f"excluded). Paper: {paper.TIMING_SETUP}, BReG-Net-39 against ResNet-110; Δ of "
        "seconds compares different hardware, the ratio row compares like with like.\n\n"
        + report.markdown_table(header, body)
        + "\n"
    )


def render_fig5(results, out, scale) -> str:
    parts, series = [], {}
    for d in experiment.CATEGORICAL + experiment.DIMENSIONAL:
        runs = [r for r in results if r["experiment"]["dataset"] == d]
        if not runs:
            continue
        key = "accuracy" if d in experiment.CATEGORICAL else "valence/rmse"
        rows = []
        for depth in sorted({experiment.depth(r["experiment"]) for r in runs}):
            at = [r for r in runs if experiment.depth(r["experiment"]) == depth]
            rows.append([str(depth), str(at[0].get("layers", DASH)), f"{at[0]['params']:,}"])
            rows[-1].append(ours(values(at, key), 4))
            if d in experiment.DIMENSIONAL:
                rows[-1].append(ours(values(at, "arousal/rmse"), 4))
            series.setdefault(f"{DATASET_NAMES[d]} {key}", []).append(
                (depth, float(np.mean(values(at, key))))
            )
        header = ["Depth", "Layers", "Params", key]
        header += ["arousal/rmse"] if d in experiment.DIMENSIONAL else []
        parts.append(f"## {DATASET_NAMES[d]} ({d})\n\n" + report.markdown_table(header, rows))
    png = plots.metric_vs_png(
        series, paths.path(out) / "fig5.png", "depth (6n + 3)", "Fig. 5: depth sweep (H3)"
    )
    note = f"Paper: {paper.FIGURES['fig5']}; no cell to compare.\n\n"
    return note + "\n\n".join(parts) + f"\n\n![Fig. 5]({png.name})\n"


def render_fig6(results, out, scale) -> str:
    cols: dict[str, dict[str, list[Path]]] = {}
    for r in results:
        e = r["experiment"]
        name = DATASET_NAMES[e["dataset"]]
        if r["config"]["data"]["source"] == "synthetic":
            name = "synthetic faces' valence/arousal"
        runs = cols.setdefault(f"{ARCH_NAMES[e['arch']]} ({r['model']})", {})
        runs.setdefault(name, []).append(paths.path(r["workdir"]) / "metrics.jsonl")
    cols = dict(sorted(cols.items(), key=lambda kv: not kv[0].startswith("ResNet")))
    png = plots.curve_panels_png(
        cols,
        paths.path(out) / "fig6.png",
        {"training": "train/va_mse", "validation": "val/va_mse"},
        "MSE (valence, arousal)",
        "Fig. 6: the dimensional model's MSE loss (mean ± sd over seeds)",
    )
    body = []
    for arch in experiment.ARCHS:
        for d in dict.fromkeys(r["experiment"]["dataset"] for r in results):
            runs = group(results, dataset=d, arch=arch)
            if runs:
                finals = [_finals(runs, key) for key in ("train/va_mse", "val/va_mse")]
                label = f"{DATASET_NAMES[d]}, {ARCH_NAMES[arch]}"
                body.append([label] + [ours(f, 4) for f in finals])
    table = report.markdown_table(["Run", "final train MSE", "final val MSE"], body) if body else ""
    return (
        f"![Fig. 6]({png.name})\n\nPanels (a), (b): training; (c), (d): validation. "
        f"Paper: {paper.FIGURES['fig6']}.\n\n{table}\n"
    )


def _finals(results: Sequence[dict], key: str) -> list[float]:
    """The last logged value of ``key`` in each run's ``metrics.jsonl``."""
    out = []
    for r in results:
        records = plots.read_metrics_jsonl(paths.path(r["workdir"]) / "metrics.jsonl")
        _, logged = plots.metric_series(records, key)
        out += [float(logged[-1])] if logged.size else []
    return out


# --------------------------------------------------------------------------- dispatch

RENDER = {
    "1": render_table1,
    "2": render_table2,
    "3": _metrics_render("weighted", "III"),
    "4": _metrics_render("regular", "IV"),
    "5": render_table5,
    "6": _dimensional_render("bregnet"),
    "7": _dimensional_render("resnet"),
    "fig5": render_fig5,
    "fig6": render_fig6,
    "timing": render_timing,
}


def render(table: str, results: Sequence[dict], out, scale: str, claims=()) -> str:
    """The markdown body of ``table`` (a key of ``experiment.TABLES``) written into ``out``."""
    if table == "claims":
        return claims_lib.render_claims(results, out, scale, claims)
    if table == "depth":
        return depth_study.render(results, out, scale) + run_metrics(results)
    return RENDER[table](results, out, scale)


def header(
    table: str, scale: str, results: Sequence[dict], skipped: dict, missing: Sequence[str] = ()
) -> str:
    """The title, the settings the runs used, the hardware, the datasets skipped and the runs
    not finished (``--report_only``)."""
    lines = [f"# {TITLES[table]}\n"]
    if results:
        c = results[0]["config"]
        models = sorted({r["model"] for r in results})
        seeds_used = sorted({r["experiment"]["seed"] for r in results})
        lines.append(
            f"Settings: scale **{scale}**, seeds {seeds_used}, {c['num_epochs']} epochs, "
            f"batch {c['batch_size']}, lr {c['optim']['learning_rate']} "
            f"({c['optim']['schedule']}), weight decay {c['optim']['weight_decay']}; "
            f"networks {models}; evaluated on the `{results[0]['split']}` split at the best "
            f"checkpoint. Hardware: {results[0]['hardware']}. Ours: mean ± sd over seeds "
            "(sd with n - 1)."
        )
    if any(r["config"]["data"]["source"] == "synthetic" for r in results):
        lines.append(
            "Runs on the synthetic faces (every run at the test scale): a dataset's name only "
            "labels its place in the paper's grid."
        )
    lines.append(
        f"Paper: {paper.PAPER}, its networks BReG-Net-39 and ResNet-110 ({paper.TRAINING}); "
        "figures from `bregflax/paper/published.py`. Δ = ours − paper.\n"
    )
    if missing:
        lines.append(
            f"- **{len(missing)} of {len(missing) + len(results)} runs not finished**, left "
            f"out of every figure below: {', '.join(missing)}"
        )
    for dataset, message in skipped.items():
        first = message.strip().splitlines()[0]
        lines.append(f"- **{dataset} skipped**, not prepared: {first}")
    return "\n".join(lines) + "\n\n"
