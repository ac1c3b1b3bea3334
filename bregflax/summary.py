"""What the commands tell a person: training's time estimate and the summary at the end.

Pure functions of a run's files and numbers, so that each is tested alone:
:func:`estimate` (training's expected wall time, printed once a few steps have run),
:func:`sizing_note` (a config sized for an accelerator, on a CPU) and
:func:`train_summary` (what was done, the best score and where, the outputs, what next).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import ml_collections

from bregflax import paths

# Networks sized for accelerators: on a 2-core CPU an epoch of FER2013 takes hours.
ACCELERATOR_MODELS = ("BReGNet39", "ResNet110")
CPU_HOURS = 2.0  # a CPU run estimated above this many hours gets the note too
CPU_CONFIGS = {"fer2013": "fer2013_small"}  # data source -> the config sized for a CPU


def duration(seconds: float) -> str:
    """``1 h 05 min``, ``3 min 20 s``, ``42 s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def estimate(seconds_per_step: float, steps_left: int, measured: int) -> str:
    """The line training prints once ``measured`` steps after the compiled first have run."""
    return (
        f"estimated training time: {duration(seconds_per_step * steps_left)} for "
        f"{steps_left:,} more steps ({seconds_per_step:.3g} s/step, measured over {measured} "
        "steps after compilation; validation adds to it)"
    )


def sizing_note(
    config: ml_collections.ConfigDict, backend: str, seconds: float | None = None
) -> str | None:
    """A line saying the config is sized for an accelerator, when it runs on a CPU and its
    network is one of ``ACCELERATOR_MODELS`` or it is estimated to take over ``CPU_HOURS``
    (``seconds``); None otherwise."""
    if backend != "cpu":
        return None
    big = config.model.name in ACCELERATOR_MODELS
    slow = seconds is not None and seconds > CPU_HOURS * 3600
    if not (big or slow):
        return None
    cpu_config = CPU_CONFIGS.get(config.data.source)
    instead = (
        f"--config={cpu_config} (BReGNetSmall, 0.70M parameters)"
        if cpu_config
        else "--config.model.name=BReGNetSmall"
    )
    what = f"{config.model.name} for {config.num_epochs} epochs"
    return f"note: this config ({what}) is sized for an accelerator; on a CPU use {instead}"


def best_score(
    metrics_path: Path, metric: str, mode: str = "max"
) -> tuple[float, int, float] | None:
    """(value, step, epoch) of the best ``metric`` logged in ``metrics.jsonl``; None if none."""
    metrics_path = paths.path(metrics_path)
    if not metrics_path.exists():
        return None
    best = None
    for line in metrics_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        value = record.get(metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue
        better = best is None or (value > best[0] if mode == "max" else value < best[0])
        if better:
            best = (float(value), int(record["step"]), float(record.get("epoch", 0.0)))
    return best


def train_summary(
    workdir: str | Path, config: ml_collections.ConfigDict, steps: int, seconds: float
) -> str:
    """The lines printed when ``bregflax train`` ends."""
    workdir = paths.path(workdir)
    lines = [
        f"done: trained {config.model.name} on {config.data.source} for "
        f"{config.num_epochs} epoch(s), {steps:,} steps, in {duration(seconds)} (this call)"
    ]
    best = best_score(workdir / "metrics.jsonl", config.best_metric, config.best_mode)
    if best is not None:
        value, step, epoch = best
        checkpoint = workdir / "checkpoints" / str(step)
        lines.append(
            f"best {config.best_metric}: {value:.4f} at epoch {epoch:g} (step {step}), "
            f"checkpoint {checkpoint}"
        )
    outputs = [
        name
        for name in ("config.json", "data.json", "metrics.jsonl", "checkpoints/", "tensorboard/")
        if (workdir / name.rstrip("/")).exists()
    ]
    lines.append(f"outputs in {workdir}: {', '.join(outputs)}")
    lines.append(f"next: bregflax evaluate --workdir={workdir}")
    return "\n".join(lines)


def evaluate_summary(results: dict, workdir: str | Path, out: str | Path) -> str:
    """The lines printed when ``bregflax evaluate`` ends."""
    scores = []
    categorical = results.get("categorical", {})
    for key in ("accuracy", "f1"):
        if key in categorical:
            scores.append(f"{'macro F1' if key == 'f1' else key} {categorical[key]:.4f}")
    dimensional = results.get("dimensional", {})
    for dim in ("valence", "arousal"):
        if f"{dim}/rmse" in dimensional:
            scores.append(f"{dim} RMSE {dimensional[f'{dim}/rmse']:.4f}")
    lines = [
        f"done: evaluated {workdir} at checkpoint step {results['step']} "
        f"({results.get('checkpoint', 'best')}) on {results['split']}, "
        f"{results['num_examples']:,} examples"
    ]
    if scores:
        lines.append("scores: " + ", ".join(scores))
    lines.append(f"reports in {out}/ ({len(results.get('files', []))} files)")
    for path in results.get("renamed", []):
        lines.append(f"renamed: {path} (a file of that name there is not an earlier report)")
    lines.append(f"next: bregflax predict --workdir={workdir} photo.jpg")
    return "\n".join(lines)


def export_summary(out: str | Path, size_bytes: int, source: str, platforms) -> str:
    """The lines printed when ``bregflax export`` ends."""
    return "\n".join(
        [
            f"done: exported {source} for {', '.join(platforms)}",
            f"wrote {out} ({size_bytes / 1e6:.2f} MB)",
            'next: python -c "from bregflax.inference.runtime import ExportedModel; '
            f"m = ExportedModel.load('{out}'); print(m.class_names)\" "
            "(uint8 face crops in, the model's outputs out)",
        ]
    )


def reproduce_summary(
    out: str | Path, table: str, scale: str, workdir: str | Path, names: list[str]
) -> str:
    """The lines printed when ``bregflax reproduce`` ends: ``names`` are the table's runs."""
    runs = paths.path(workdir) / scale
    finished = sum((runs / name / "result.json").exists() for name in names)
    lines = [
        f"done: table {table} at scale {scale}: {finished} of {len(names)} runs finished",
        f"table: {out}; runs in {runs}/",
    ]
    if finished < len(names):
        lines.append(
            f"next: bregflax reproduce --table={table} --scale={scale} --workdir={workdir} "
            "to train the others (--report-only rewrites the table from the finished ones)"
        )
    else:
        lines.append(f"next: read {out}")
    return "\n".join(lines)
