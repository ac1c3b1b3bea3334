"""The paper's tables and figures, one command each.

    bregflax reproduce --table=1|2|3|4|5|6|7|fig5|fig6|timing --scale=paper|cpu --workdir=DIR

Each table names its experiments as parameter strings of a config in ``configs/``
(``table2.py:resnet,weighted,fer2013``). Every run trains in ``DIR/<scale>/<run name>``,
a name shared by every table that needs that run, so runs are never repeated: a run with
``result.json`` is skipped, an interrupted run resumes from its checkpoints. Each run is
then evaluated (best checkpoint on the eval split, every metric) and ``DIR/<table>.md``
gets our numbers beside the paper's, the settings used and the figures. A dataset that is
not prepared is skipped with the message saying how to prepare it; nothing falls back to
other data.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

from bregflax import data as data_lib
from bregflax import evaluate, models, plots, report, train, xla_cpu

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

# The paper's figures that are transcribed here (../shared/ANCHORS.md, from the paper):
# BReG-Net's best categorical recognition rate and its valence/arousal RMSE. Cells of the
# paper's tables that are not transcribed show "–"; fill them in here, never guess them.
PAPER = {
    ("fer2013", "bregnet", "accuracy"): 0.6949,
    ("affectnet", "bregnet", "accuracy"): 0.6354,
    ("affectnet_va", "bregnet", "valence/rmse"): 0.2597,
    ("affectnet_va", "bregnet", "arousal/rmse"): 0.3067,
    ("aff_wild", "bregnet", "valence/rmse"): 0.2661,
    ("aff_wild", "bregnet", "arousal/rmse"): 0.3265,
}
CATEGORICAL = ("affectnet", "fer2013")
LOSSES = ("regular", "weighted")
DIMENSIONAL = ("affectnet_va", "aff_wild")
FIG5_DEPTHS = {"paper": (9, 15, 21, 27, 33, 39, 45, 57, 75), "cpu": (9, 15, 21), "test": (9, 15)}
ARCH_NAMES = {"bregnet": "BReG-Net (H3)", "resnet": "ResNet (identity)"}


@dataclasses.dataclass(frozen=True)
class Table:
    config: str  # a file in configs/
    specs: Callable[[str], list[str]]  # scale -> parameter strings
    render: Callable[[list[dict], str], str]  # (results, out dir) -> markdown body
    title: str


# --------------------------------------------------------------------------- running


def load_config(config_file: str, arg: str, configs_dir: Path = CONFIGS_DIR):
    """``configs/<config_file>`` with parameter string ``arg``, as ``--config=`` loads it."""
    path = configs_dir / config_file
    if str(configs_dir.parent) not in sys.path:
        sys.path.insert(0, str(configs_dir.parent))  # the configs import each other
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _comparable(config: dict) -> dict:
    """A config without the fields that do not change the experiment (paths, logging, conv)."""
    config = json.loads(json.dumps(config))
    for key in ("data_dir", "manual_dir", "num_threads"):
        config.get("data", {}).pop(key, None)
    for key in ("progress_bar", "log_every_steps", "multihost"):
        config.pop(key, None)
    config.get("model", {}).pop("conv_impl", None)  # same values and gradients (float order)
    return config


def seconds_per_epoch(metrics_path: Path, num_examples: int) -> float | None:
    """Training seconds per epoch from the logged images/s (validation excluded)."""
    records = plots.read_metrics_jsonl(metrics_path) if metrics_path.exists() else []
    rates = [r["train/images_per_sec"] for r in records if "train/images_per_sec" in r]
    return num_examples / float(np.median(rates)) if rates else None


def run_experiment(
    config: ml_collections.ConfigDict, workdir: Path, repeats: int, log: Callable = print
) -> dict:
    """Trains (or resumes) and evaluates one run; returns and saves its ``result.json``."""
    done = workdir / "result.json"
    if done.exists():
        result = json.loads(done.read_text())
        if result["config"] == _comparable(config.to_dict()):
            log(f"  skip (finished): {workdir.name}")
            return result
        raise ValueError(
            f"{workdir} holds a finished run of a different config; move it away or pick "
            "another --workdir"
        )
    saved = workdir / "config.json"
    if saved.exists() and _comparable(json.loads(saved.read_text())) != _comparable(
        config.to_dict()
    ):
        raise ValueError(f"{workdir} holds a run of a different config; move it away")
    log(f"  train: {workdir.name}")
    start = time.perf_counter()
    state = train.train_and_evaluate(config, str(workdir))
    wall = time.perf_counter() - start
    split = config.data.eval_split
    scores = evaluate.evaluate_workdir(workdir, split, "best", repeats)
    num_train = len(data_lib.load(config.data.source, config.data.train_split, config.data).source)
    result = {
        "config": _comparable(config.to_dict()),
        "experiment": config.experiment.to_dict(),
        "model": config.model.name,
        "params": models.num_params(state.params),
        "split": split,
        "step": scores["step"],
        "repeats": repeats,
        "num_train": num_train,
        "seconds_per_epoch": seconds_per_epoch(workdir / "metrics.jsonl", num_train),
        "wall_seconds_this_call": wall,
        "scores": {k: v for k, v in scores.items() if k not in ("files", "per_class")},
        "per_class": scores.get("per_class"),
        "hardware": hardware(),
    }
    done.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


def hardware() -> str:
    devices = jax.devices()
    kind = devices[0].device_kind
    cpu = platform.processor() or platform.machine()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = f"{usable} of {os.cpu_count()} CPU threads"
    return f"{len(devices)} x {kind} ({jax.default_backend()}), {threads}, {cpu}"


def reproduce(
    table: str,
    scale: str,
    workdir: str | Path,
    seeds: Sequence[int] = (0,),
    repeats: int = 200,
    overrides: dict | None = None,
    only: str = "",
    log: Callable = print,
) -> Path:
    """Runs every experiment of ``table`` at ``scale`` and writes ``workdir/<table>.md``."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose from {', '.join(TABLES)}")
    spec = TABLES[table]
    workdir = Path(workdir)
    results, skipped = [], {}
    wanted = [t.strip() for t in only.split(",") if t.strip()]
    for arg in spec.specs(scale):
        for seed in seeds:
            config = load_config(spec.config, f"{arg},{scale},seed={seed}")
            if not selected(config.experiment.to_dict(), wanted):
                continue
            for key, value in (overrides or {}).items():
                _set(config, key, value)
            dataset = config.experiment.dataset
            if dataset in skipped:
                continue
            from configs import experiment

            run_dir = workdir / scale / experiment.run_name(config)
            try:
                results.append(run_experiment(config, run_dir, repeats, log))
            except data_lib.DatasetNotFoundError as e:
                skipped[dataset] = str(e)
                log(f"  skip {dataset}: not prepared\n{e}")
    out = workdir / f"{_file_stem(table)}.md"
    body = spec.render(results, str(workdir)) if results else "No experiment of this table ran.\n"
    out.write_text(_header(spec, table, scale, seeds, results, skipped) + body)
    log(f"wrote {out}")
    return out


def selected(experiment: dict, tokens: Sequence[str]) -> bool:
    """Whether an experiment has every token (``fer2013``, ``weighted``, ``depth=15``...)."""
    have = {str(v) for v in experiment.values()} | {f"{k}={v}" for k, v in experiment.items()}
    return all(t in have for t in tokens)


def _set(config, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        config = config[p]
    old = config[leaf]
    if isinstance(value, str) and isinstance(old, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{dotted} expects true or false, got {value!r}")
        value = value.lower() in ("true", "1")
    config[leaf] = type(old)(value) if old is not None else value


def _file_stem(table: str) -> str:
    return f"table{table}" if table.isdigit() else table


def _header(spec: Table, table: str, scale: str, seeds, results, skipped) -> str:
    lines = [f"# {spec.title}\n"]
    if results:
        c = results[0]["config"]
        lines.append(
            f"Settings: scale **{scale}**, seeds {list(seeds)}, {c['num_epochs']} epochs, "
            f"batch {c['batch_size']}, lr {c['optim']['learning_rate']} "
            f"({c['optim']['schedule']}), weight decay {c['optim']['weight_decay']}; "
            f"models {sorted({r['model'] for r in results})}; evaluated on the "
            f"`{results[0]['split']}` split at the best checkpoint. Hardware: "
            f"{results[0]['hardware']}. Ours: mean ± std over seeds (std with n - 1)."
        )
        lines.append(
            "Paper: the transcribed figures (bregflax/reproduce.py, PAPER); '–' where a cell "
            "of the paper is not transcribed.\n"
        )
    for dataset, message in skipped.items():
        first = message.strip().splitlines()[0]
        lines.append(f"- **{dataset} skipped**, not prepared: {first}")
    return "\n".join(lines) + "\n\n"


# --------------------------------------------------------------------------- aggregating


def _value(result: dict, key: str):
    """A metric of one run: ``accuracy``, ``norm/f1``, ``valence/rmse``, ``recall/Disgust``."""
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


def group(results: list[dict], **match) -> list[dict]:
    return [r for r in results if all(r["experiment"].get(k) == v for k, v in match.items())]


def mean_std(results: list[dict], key: str):
    """ "mean ± std (n)" over runs, or "–"."""
    values = [v for v in (_value(r, key) for r in results) if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f} (n=1)"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} (n={len(values)})"


def _paper(dataset: str, arch: str, key: str) -> str:
    v = PAPER.get((dataset, arch, key))
    return "–" if v is None else f"{v:.4f}"


def _grid(results, rows, datasets, key: str, row_label) -> str:
    header = ["Run"]
    for d in datasets:
        header += [f"{d} ours", f"{d} paper"]
    body = []
    for match in rows:
        cells = [row_label(match)]
        for d in datasets:
            runs = group(results, dataset=d, **match)
            best = match.get("arch", "bregnet") == "bregnet" and match.get("shortcut", "h3") == "h3"
            cells += [mean_std(runs, key), _paper(d, "bregnet", key) if best else "–"]
        body.append(cells)
    return report.markdown_table(header, body)


def render_table1(results, out) -> str:
    rows = [{"shortcut": s, "loss": loss} for s in ("h1", "h2", "h3") for loss in LOSSES]
    text = "Recognition rate (accuracy) by shortcut map and loss.\n\n"
    text += _grid(
        results, rows, CATEGORICAL, "accuracy", lambda m: f"{m['shortcut'].upper()}, {m['loss']}"
    )
    return text + "\n\n" + _claims(results) + _paper_note()


def render_table2(results, out) -> str:
    rows = [{"arch": a, "loss": loss} for a in ("resnet", "bregnet") for loss in LOSSES]
    text = "Recognition rate (accuracy), ResNet against BReG-Net.\n\n"
    text += _grid(
        results, rows, CATEGORICAL, "accuracy", lambda m: f"{ARCH_NAMES[m['arch']]}, {m['loss']}"
    )
    return text + "\n\n" + _claims(results) + _paper_note()


def _paper_note() -> str:
    return (
        "\nThe paper column holds BReG-Net's best reported recognition rate, shown in the H3 "
        "rows; which loss variant produced it is not transcribed.\n"
    )


CLAIM_KEYS = ("accuracy", "norm/accuracy", "norm/f1", "norm/kappa", "norm/mcc", "recall/Disgust")


def _claim_group(result: dict) -> tuple[str, str, str, str]:
    e = result["experiment"]
    return e["dataset"], result["model"], e["shortcut"], e["loss"]


def _claims(results) -> str:
    """Every metric the claims are judged on, one row per distinct run group."""
    body = []
    for key in sorted({_claim_group(r) for r in results}):
        runs = [r for r in results if _claim_group(r) == key]
        body.append([" ".join(key)] + [mean_std(runs, k) for k in CLAIM_KEYS])
    header = [
        "Run",
        "Accuracy",
        "Norm accuracy",
        "Norm F1",
        "Norm kappa",
        "Norm MCC",
        "Disgust recall",
    ]
    return (
        "Every metric the paper's claims rest on (Norm = skew-normalized, "
        f"{results[0].get('repeats', 200)} repeats):\n\n"
        + report.markdown_table(header, body)
        + "\n"
    )


def _categorical_render(loss: str):
    def render(results, out) -> str:
        parts = []
        for d in CATEGORICAL:
            runs = group(results, dataset=d, loss=loss)
            if not runs:
                continue
            orig = {k: mean_std(runs, k) for k, _ in report.CATEGORICAL_ROWS}
            norm = {k: mean_std(runs, f"norm/{k}") for k, _ in report.CATEGORICAL_ROWS}
            paper = {"accuracy": _paper(d, "bregnet", "accuracy")}
            parts.append(
                f"## {d}, BReG-Net, {loss} loss\n\n" + report.categorical_table(orig, norm, paper)
            )
        return "\n\n".join(parts) + "\n"

    return render


def _dimensional_render(metrics: Sequence[str], datasets: Sequence[str]):
    def render(results, out) -> str:
        header = ["Run"]
        for dim in ("valence", "arousal"):
            header += [f"{dim} {m.upper()}" for m in metrics]
        body = []
        for d in datasets:
            for arch in ("resnet", "bregnet"):
                runs = group(results, dataset=d, arch=arch)
                if not runs:
                    continue
                row = [f"{d} {ARCH_NAMES[arch]} ours"]
                paper = [f"{d} {ARCH_NAMES[arch]} paper"]
                for dim in ("valence", "arousal"):
                    row += [mean_std(runs, f"{dim}/{m}") for m in metrics]
                    paper += [_paper(d, arch, f"{dim}/{m}") for m in metrics]
                body += [row, paper]
        return report.markdown_table(header, body) + "\n"

    return render


def render_fig5(results, out) -> str:
    from configs import experiment

    parts, series = [], {}
    for d in CATEGORICAL + DIMENSIONAL:
        runs = group(results, dataset=d)
        if not runs:
            continue
        key = "accuracy" if d in CATEGORICAL else "valence/rmse"
        depths = sorted({experiment.depth(r["experiment"]) for r in runs})
        rows = []
        for depth in depths:
            at = [r for r in runs if experiment.depth(r["experiment"]) == depth]
            rows.append([str(depth), f"{at[0]['params']:,}", mean_std(at, key)])
            if d in DIMENSIONAL:
                rows[-1].append(mean_std(at, "arousal/rmse"))
            series.setdefault(f"{d} {key}", []).append(
                (depth, np.mean([_value(r, key) for r in at]))
            )
        header = ["Depth", "Params", key] + (["arousal/rmse"] if d in DIMENSIONAL else [])
        parts.append(f"## {d}\n\n" + report.markdown_table(header, rows))
    png = plots.metric_vs_png(
        series, Path(out) / "fig5.png", "depth (weighted layers)", "Fig. 5: depth sweep"
    )
    return "\n\n".join(parts) + f"\n\n![Fig. 5]({png.name})\n"


def render_fig6(results, out) -> str:
    runs = {}
    for r in results:
        e = r["experiment"]
        label = f"{e['dataset']} {ARCH_NAMES[e['arch']]} seed {e['seed']}"
        runs[label] = Path(out) / r["config"]["experiment"]["scale"] / _run_dir(r) / "metrics.jsonl"
    png = plots.loss_curves_png(
        runs, Path(out) / "fig6.png", "Fig. 6: training and validation loss"
    )
    return f"![Fig. 6]({png.name})\n\nRuns: " + ", ".join(runs) + "\n"


def _run_dir(result: dict) -> str:
    from configs import experiment

    return experiment.run_name(ml_collections.ConfigDict(result["config"]))


def render_timing(results, out) -> str:
    rows = []
    for r in results:
        e = r["experiment"]
        spe = r["seconds_per_epoch"]
        rows.append(
            [
                f"{e['dataset']} {r['model']} ({e['shortcut']}) seed {e['seed']}",
                f"{r['params']:,}",
                "–" if spe is None else f"{spe:.1f}",
            ]
        )
    return (
        "Parameters and training seconds per epoch (from the logged images/s, validation "
        "excluded). Paper, on a GTX 1080 Ti over AffectNet: BReG-Net 750 s, ResNet-110 836 s.\n\n"
        + report.markdown_table(["Run", "Params", "s / epoch"], rows)
        + "\n"
    )


def _grid_specs(fields: Sequence[Sequence[str]]) -> Callable[[str], list[str]]:
    return lambda scale: [",".join(p) for p in itertools.product(*fields)]


TABLES: dict[str, Table] = {
    "1": Table(
        "table1.py",
        _grid_specs([CATEGORICAL, ("h1", "h2", "h3"), ("regular", "weighted")]),
        render_table1,
        "Table I: shortcut maps and losses",
    ),
    "2": Table(
        "table2.py",
        _grid_specs([CATEGORICAL, ("resnet", "bregnet"), ("regular", "weighted")]),
        render_table2,
        "Table II: ResNet against BReG-Net",
    ),
    "3": Table(
        "table3.py",
        _grid_specs([CATEGORICAL]),
        _categorical_render("weighted"),
        "Table III: metrics, weighted loss",
    ),
    "4": Table(
        "table4.py",
        _grid_specs([CATEGORICAL]),
        _categorical_render("regular"),
        "Table IV: metrics, regular loss",
    ),
    "5": Table(
        "table5.py",
        _grid_specs([DIMENSIONAL, ("resnet", "bregnet")]),
        _dimensional_render(("rmse",), DIMENSIONAL),
        "Table V: valence/arousal RMSE",
    ),
    "6": Table(
        "table5.py",
        _grid_specs([("affectnet_va",), ("resnet", "bregnet")]),
        _dimensional_render(("cc", "ccc", "sagr"), ("affectnet_va",)),
        "Table VI: CC, CCC, SAGR on AffectNet",
    ),
    "7": Table(
        "table5.py",
        _grid_specs([("aff_wild",), ("resnet", "bregnet")]),
        _dimensional_render(("cc", "ccc", "sagr"), ("aff_wild",)),
        "Table VII: CC, CCC, SAGR on Aff-Wild",
    ),
    "fig5": Table(
        "fig5.py",
        lambda scale: [
            f"{d},depth={n}" for d in CATEGORICAL + DIMENSIONAL for n in FIG5_DEPTHS[scale]
        ],
        render_fig5,
        "Fig. 5: depth sweep",
    ),
    "fig6": Table(
        "table2.py",
        _grid_specs([CATEGORICAL, ("resnet", "bregnet"), ("regular",)]),
        render_fig6,
        "Fig. 6: loss curves",
    ),
    "timing": Table(
        "table2.py",
        _grid_specs([CATEGORICAL, ("resnet", "bregnet"), ("regular",)]),
        render_timing,
        "Timing: parameters and seconds per epoch",
    ),
}


# --------------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bregflax reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, choices=list(TABLES))
    parser.add_argument("--scale", default="cpu", choices=("paper", "cpu", "test"))
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    parser.add_argument(
        "--only", default="", help="run only experiments with all these tokens, e.g. fer2013,h3"
    )
    parser.add_argument("--repeats", type=int, default=200, help="skew-normalization repeats")
    parser.add_argument("--data_dir", default="", help="prepared datasets ($BREGFLAX_DATA_DIR)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, e.g. --set progress_bar=False",
    )
    return parser.parse_args(argv)


def parse_overrides(items: Sequence[str]) -> dict:
    """``["a.b=1", ...]`` as ``{"a.b": "1"}``; values are cast to the config field's type."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = value
    return overrides


def main(argv=None) -> None:
    args = parse_args(argv)
    overrides = parse_overrides(args.set)
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    reproduce(args.table, args.scale, args.workdir, seeds, args.repeats, overrides, args.only)


if __name__ == "__main__":
    xla_cpu.reexec_with_hugepages()
    main()
