"""The paper's tables, figures and claims, one command each.

    bregflax reproduce --table=1|2|3|4|5|6|7|fig5|fig6|timing|claims --scale=paper|cpu|test
        --workdir=DIR [--seeds=0,1,2] [--only=fer2013,h3] [--set KEY=VALUE ...] [--report_only]

Each table names its runs as parameter strings of a config module of ``bregflax.configs``
(``table2:resnet,weighted,fer2013``; the grid is ``bregflax.configs.experiment``). Every run
trains in ``DIR/<scale>/<run name>``, a name shared by every table that needs that run, so
runs are never repeated: a run with ``result.json`` is skipped, an interrupted run resumes
from its checkpoints. Each run is then evaluated (best checkpoint on the eval split, every
metric) and ``DIR/<table>.md`` gets our numbers beside the paper's (``bregflax.paper.tables``).
``claims`` runs the paired-seed comparisons of the paper's claims and gives each a 95%
interval and a verdict. A dataset that is not prepared is skipped with the message saying
how to prepare it; nothing falls back to other data.
"""

from __future__ import annotations

from bregflax.training import xla_cpu

if __name__ == "__main__":  # before the heavy imports: a restart then costs only Python's start
    xla_cpu.reexec_with_hugepages()

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bregflax import compile_cache, configs, echoes, errors, flags, hostile, paths, safe_io, summary
from bregflax import data as data_lib
from bregflax.configs import experiment
from bregflax.evaluation import evaluate, plots
from bregflax.nn import models
from bregflax.paper import tables
from bregflax.training import state as state_lib
from bregflax.training import train, xla_cpu

ADVICE = "delete it (or move the run's folder away) and rerun: the run trains or is scored again"
REPEATS = {"paper": 200, "cpu": 200, "test": 10}  # skew-normalization repeats by scale


class RunConflictError(ValueError):
    """A run directory holds a run of another config; the message says which."""


# --------------------------------------------------------------------------- one run


def _comparable(config: dict) -> dict:
    """A config without the fields that do not change the experiment (paths, logging, conv)."""
    config = json.loads(json.dumps(config))
    for key in ("data_dir", "manual_dir", "num_threads"):
        config.get("data", {}).pop(key, None)
    for key in ("progress_bar", "log_every_steps", "multihost"):
        config.pop(key, None)
    config.get("model", {}).pop("conv_impl", None)  # same values and gradients (float order)
    return config


def differences(saved: dict, current: dict, where: str = "") -> list[str]:
    """The fields where a run's saved config and ``current`` disagree. A field ``current``
    has and ``saved`` lacks is not one: a later version added it, with a default that keeps
    the experiment as it was, so finished runs stay finished."""
    out = []
    for key, value in saved.items():
        name = f"{where}{key}"
        if key not in current:
            out.append(f"{name}: {value!r} -> (absent)")
        elif isinstance(value, dict) and isinstance(current[key], dict):
            out += differences(value, current[key], f"{name}.")
        elif value != current[key]:
            out.append(f"{name}: {value!r} -> {current[key]!r}")
    return out


def seconds_per_epoch(metrics_path: Path, num_examples: int) -> float | None:
    """Training seconds per epoch from the logged images/s (validation excluded)."""
    records = plots.read_metrics_jsonl(metrics_path) if metrics_path.exists() else []
    rates = [r["train/images_per_sec"] for r in records if "train/images_per_sec" in r]
    return num_examples / float(np.median(rates)) if rates else None


def hardware() -> str:
    """The devices, the CPU threads this process may use, and the processor."""
    devices = jax.devices()
    kind = devices[0].device_kind
    cpu = platform.processor() or platform.machine()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = f"{usable} of {os.cpu_count()} CPU threads"
    return f"{len(devices)} x {kind} ({jax.default_backend()}), {threads}, {cpu}"


def run_experiment(
    config: ml_collections.ConfigDict, workdir: Path, repeats: int, log: Callable = print
) -> dict:
    """Trains (or resumes) and evaluates one run; returns and saves its ``result.json``.

    The returned dict also holds ``workdir`` (not saved), where its ``metrics.jsonl`` is.
    """
    workdir = paths.path(workdir)
    done = workdir / "result.json"
    if done.exists():
        result = hostile.read_json(done, ADVICE)
        changed = differences(result["config"], _comparable(config.to_dict()))
        if changed:
            raise RunConflictError(
                f"{workdir} holds a finished run of a different config ({'; '.join(changed)}); "
                "move it away or pick another --workdir"
            )
        log(f"  skip (finished): {workdir.name}")
        return {**result, "workdir": str(workdir)}
    saved = workdir / "config.json"
    if saved.exists() and differences(
        _comparable(hostile.read_json(saved, ADVICE)), _comparable(config.to_dict())
    ):
        raise RunConflictError(f"{workdir} holds a run of a different config; move it away")
    log(f"  train: {workdir.name}")
    start = time.perf_counter()
    try:
        state = train.train_and_evaluate(config, str(workdir))
    except train.NonFiniteLossError as e:  # a finding (the unbounded map), not a crash
        log(f"  diverged: {workdir.name}: {e}")
        return _save_result(workdir, diverged_result(config, workdir, e, start))
    wall = time.perf_counter() - start
    split = config.data.eval_split
    scores = evaluate.evaluate_workdir(workdir, split, "best", repeats)
    num_train = len(data_lib.load(config.data.source, config.data.train_split, config.data).source)
    result = {
        "config": _comparable(config.to_dict()),
        "experiment": config.experiment.to_dict(),
        "model": config.model.name,
        "params": models.num_params(state.params),
        "layers": experiment.layers(config),
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
    return _save_result(workdir, result)


def _save_result(workdir: Path, result: dict) -> dict:
    text = hostile.strict_json(result, reason_key="nonfinite", indent=2)
    safe_io.write_atomic(workdir / "result.json", text + "\n")
    return {**result, "workdir": str(workdir)}


def diverged_result(
    config: ml_collections.ConfigDict, workdir: Path, error: train.NonFiniteLossError, start: float
) -> dict:
    """The ``result.json`` of a run whose loss or parameters became non-finite: where, and
    no scores."""
    model = state_lib.build_model(config)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(state_lib.input_shape(config)), train=False)
    )
    return {
        "config": _comparable(config.to_dict()),
        "experiment": config.experiment.to_dict(),
        "model": config.model.name,
        "params": models.num_params(shapes["params"]),
        "layers": experiment.layers(config),
        "split": config.data.eval_split,
        "diverged": {"step": error.step, "message": str(error)},
        "seconds_per_epoch": None,
        "wall_seconds_this_call": time.perf_counter() - start,
        "scores": {},
        "per_class": None,
        "hardware": hardware(),
    }


# --------------------------------------------------------------------------- a table


def selected(fields: dict, tokens: Sequence[str]) -> bool:
    """Whether an experiment has every token (``fer2013``, ``weighted``, ``depth=15``...)."""
    have = {str(v) for v in fields.values()} | {f"{k}={v}" for k, v in fields.items()}
    return all(t in have for t in tokens)


def reproduce(
    table: str,
    scale: str,
    workdir: str | Path,
    seeds: Sequence[int] | None = None,
    repeats: int | None = None,
    overrides: dict | None = None,
    only: str = "",
    claims: Sequence[str] = (),
    log: Callable = print,
    train_missing: bool = True,
    run_names: Sequence[str] = (),
) -> Path:
    """Runs every experiment of ``table`` at ``scale`` and writes ``workdir/<table>.md``.

    ``seeds`` defaults to (0,), or to each claim's own seeds for ``claims``; ``repeats``
    (skew-normalization) to ``REPEATS[scale]``; ``overrides`` ({dotted key: value}) apply
    to every run; ``only`` keeps the runs that have every comma-separated token; ``claims``
    names the claims of the ``claims`` table to run (all if empty); ``run_names`` keeps the
    runs of those names (``run_names_of``). Without ``train_missing`` nothing trains: the
    table holds the finished runs and names the others.
    """
    workdir = paths.path(workdir)
    repeats = REPEATS[scale] if repeats is None else repeats
    wanted = [t.strip() for t in only.split(",") if t.strip()]
    results, skipped, missing = [], {}, []
    for name, arg in experiment.runs(table, scale, seeds, claims):
        config = configs.get(name, arg)
        if not selected(config.experiment.to_dict(), wanted):
            continue
        configs.apply_overrides(config, overrides or {})
        dataset = config.experiment.dataset
        if dataset in skipped:
            continue
        run_dir = workdir / scale / experiment.run_name(config)
        if run_names and run_dir.name not in run_names:
            continue
        if not train_missing and not (run_dir / "result.json").exists():
            missing.append(run_dir.name)
            log(f"  not finished: {run_dir.name}")
            continue
        try:
            results.append(run_experiment(config, run_dir, repeats, log))
        except data_lib.DatasetNotFoundError as e:
            skipped[dataset] = str(e)
            log(f"  skip {dataset}: not prepared\n{e}")
    out = workdir / f"{f'table{table}' if table.isdigit() else table}.md"
    paths.make_folder(workdir)
    body = tables.render(table, results, workdir, scale, claims)
    safe_io.write_atomic(out, tables.header(table, scale, results, skipped, missing) + body)
    log(f"wrote {out}")
    return out


def run_names_of(table: str, scale: str, seeds=None, claims=()) -> list[str]:
    """The run directory names of a table, in the order it trains them."""
    return [
        experiment.run_name(configs.get(n, a))
        for n, a in experiment.runs(table, scale, seeds, claims)
    ]


# --------------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    return flags.reproduce_parser().parse_args(argv)


def parse_overrides(items: Sequence[str]) -> dict:
    """``["a.b=1", ...]`` as ``{"a.b": "1"}``; ``configs.apply_overrides`` casts the values."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise configs.ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = value
    return overrides


def main(argv=None) -> None:
    errors.exit_on_signals()
    xla_cpu.apply()
    args = parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
    except configs.ConfigError as e:
        errors.fail(str(e))
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    cache = args.compile_cache
    if cache is None:
        cache = paths.path(args.workdir) / "jax_cache"
    if cache:  # the seeds of one arm share their compiled programs
        compile_cache.enable(cache)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] or None
    claims = [c.strip() for c in args.claims.split(",") if c.strip()]
    try:
        names = run_names_of(args.table, args.scale, seeds, claims)  # unknown claims fail here
        if args.list_runs:
            print("\n".join(names))
            return
        unknown = sorted(set(args.run) - set(names))
        if unknown:
            raise configs.ConfigError(f"--run: no run named {', '.join(unknown)} in this table")
        with echoes.suppressed():  # orbax's echoes of a damaged checkpoint, for the command
            out = reproduce(
                args.table,
                args.scale,
                args.workdir,
                seeds,
                args.repeats,
                overrides,
                args.only,
                claims,
                train_missing=not args.report_only,
                run_names=args.run,
            )
        print(summary.reproduce_summary(out, args.table, args.scale, args.workdir, names))
    except (configs.ConfigError, RunConflictError, hostile.DamagedFileError) as e:
        errors.fail(str(e))
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: finished runs and checkpoints stay
        print(f"interrupted ({e}); run the same command again to resume", file=sys.stderr)
        errors.quiet_exit(errors.exit_code(e))
    except ValueError as e:  # an unknown claim or parameter string
        if "unknown" not in str(e):
            raise
        errors.fail(str(e))


if __name__ == "__main__":
    main()
