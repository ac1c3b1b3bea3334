"""Evaluation: ``python -m bregflax.evaluate --workdir=DIR [--split=val] [--checkpoint=best]``.

Loads a checkpoint of a training run, predicts a split (jit-compiled, batched, with a
progress bar) and writes to ``DIR/eval/``, or to ``--out``: ``<split>.json`` with every
metric, the paper-layout table ``<split>_table.md``, ``<split>_per_class.md``, confusion
matrices, valence/arousal plots for dimensional runs, ``loss_curves.png`` and
``<split>_predictions.csv`` with each prediction's ``source_id``. User errors (a workdir
that is not a run, a checkpoint that does not restore, an edited ``config.json``, a folder
that cannot be written) are one line and exit status 2; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

from bregflax.training import xla_cpu

if __name__ == "__main__":  # before the heavy imports: a restart then costs only Python's start
    xla_cpu.reexec_with_hugepages()

import argparse
import csv
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from bregflax import data as data_lib
from bregflax import echoes, errors, flags, hostile, paths, rundir, safe_io, summary
from bregflax.data import pipeline, run_data
from bregflax.evaluation import metrics, plots, report
from bregflax.nn import models
from bregflax.training import checkpoints, steps, xla_cpu
from bregflax.training.parallel import Parallel


def predict_split(
    config: ml_collections.ConfigDict,
    variables: dict,
    source: data_lib.Source,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Model outputs and targets for every example of ``source``, in order, from the model's
    ``variables`` ({params, batch_stats}, as ``checkpoints.load_variables`` gives them)."""
    parallel = Parallel.over_all_devices()
    parallel.check_batch_size(batch_size)
    model = models.create_model(config.model)
    state = jax.device_put(
        steps.Model(model.apply, variables["params"], variables["batch_stats"]),
        parallel.replicated,
    )
    eval_fn = steps.jit_eval_step(parallel, state, config.loss.va_weight)
    batches = pipeline.eval_batches(source, config.data, global_batch_size=batch_size)
    total = pipeline.num_eval_batches(len(source), batch_size)
    keep: dict[str, list] = {}
    for batch in tqdm(
        batches, total=total, desc="predict", unit="batch", disable=jax.process_index() != 0
    ):
        outputs, _ = eval_fn(state, parallel.shard_batch(batch), None)
        outputs = jax.device_get(outputs)
        real = batch["mask"] > 0
        if "logits" in outputs:
            keep.setdefault("probs", []).append(
                np.asarray(jax.nn.softmax(jnp.asarray(outputs["logits"])))[real]
            )
        if "va" in outputs:
            keep.setdefault("va", []).append(np.asarray(outputs["va"])[real])
        for k in ("label", "valence", "arousal", "source_id"):
            keep.setdefault(k, []).append(batch[k][real])
    return {k: np.concatenate(v) for k, v in keep.items()}


def score(predictions: dict[str, np.ndarray], class_names, repeats: int, seed: int = 0) -> dict:
    """Every metric of the paper for these predictions (categorical and/or dimensional).

    Examples without a label (-1) are left out of the categorical metrics; ROC/PR-AUC
    need at least two classes among the labels and are left out otherwise.
    """
    out: dict = {"num_examples": int(len(predictions["source_id"]))}
    if "probs" in predictions:
        k = len(class_names)
        labelled = predictions["label"] >= 0
        labels, probs = predictions["label"][labelled], predictions["probs"][labelled]
        preds = probs.argmax(-1)
        ranked = probs if len(np.unique(labels)) > 1 else None
        out["categorical"] = metrics.categorical_metrics(labels, preds, k, probs=ranked)
        out["skew_normalized"] = metrics.skew_normalized(
            labels, preds, k, probs=ranked, repeats=repeats, seed=seed
        )
        out["per_class"] = metrics.classification_report(labels, preds, k, class_names)
        out["confusion_matrix"] = metrics.confusion_matrix(labels, preds, k).tolist()
    if "va" in predictions:
        true = np.stack([predictions["valence"], predictions["arousal"]], axis=-1)
        out["dimensional"] = metrics.dimensional_metrics(true, predictions["va"])
    return out


def write_predictions_csv(predictions: dict[str, np.ndarray], class_names, path: Path) -> None:
    header = ["source_id"]
    if "probs" in predictions:
        header += ["label", "pred", "pred_name"] + [f"p_{name}" for name in class_names]
    if "va" in predictions:
        header += ["valence", "arousal", "pred_valence", "pred_arousal"]
    with safe_io.atomic_path(path) as temp, open(temp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, source_id in enumerate(predictions["source_id"]):
            row = [hostile.text_path(str(source_id))]
            if "probs" in predictions:
                p = predictions["probs"][i]
                row += [int(predictions["label"][i]), int(p.argmax()), class_names[int(p.argmax())]]
                row += [f"{v:.5f}" for v in p]
            if "va" in predictions:
                row += [f"{predictions[k][i]:.5f}" for k in ("valence", "arousal")]
                row += [f"{v:.5f}" for v in predictions["va"][i]]
            writer.writerow(row)


REPORTS_MANIFEST = ".bregflax-reports.json"  # what evaluations wrote in a reports folder


def write_reports(
    workdir: Path,
    split: str,
    results: dict,
    predictions: dict,
    class_names,
    out: Path | None = None,
) -> tuple[list[Path], list[Path]]:
    """Writes every report of the run in ``workdir`` to ``out`` (default ``workdir/eval``).

    The reports are written in a temporary folder inside ``out``, then moved into place
    (``safe_io.publish_owned``): a report replaces only the same report of an earlier
    evaluation, unchanged since; a file of that name that is not one gets the report beside
    it under a new name (``val-2.json``). On object storage (``gs://``) each report is
    uploaded whole under its name. Returns the paths written and those renamed."""
    workdir = paths.path(workdir)
    out = workdir / "eval" if out is None else paths.path(out)
    paths.make_folder(out)
    check_outputs(workdir, out, split)
    remote = paths.is_remote(out)
    stage = Path(tempfile.mkdtemp(dir=None if remote else out, prefix=".reports-"))
    try:
        staged = _write_staged(workdir, split, results, predictions, class_names, stage)
        if remote:
            for p in staged:
                safe_io.write_atomic(out / p.name, p.read_bytes())  # one upload
            return [out / p.name for p in staged], []
        return safe_io.publish_owned(staged, out, REPORTS_MANIFEST)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_staged(workdir: Path, split, results, predictions, class_names, out: Path) -> list:
    written = [out / f"{split}.json"]
    text = hostile.strict_json(results, reason_key="nonfinite", indent=2)
    safe_io.write_atomic(written[0], text + "\n")
    tables = [
        f"# {split} ({results['num_examples']} examples, checkpoint step {results['step']})\n"
    ]
    if "categorical" in results:
        tables.append(report.categorical_table(results["categorical"], results["skew_normalized"]))
        per_class = out / f"{split}_per_class.md"
        safe_io.write_atomic(per_class, report.per_class_table(results["per_class"]) + "\n")
        cm = np.asarray(results["confusion_matrix"])
        written += [
            per_class,
            plots.confusion_matrix_png(
                cm, class_names, out / f"{split}_confusion.png", normalized=False
            ),
            plots.confusion_matrix_png(
                cm, class_names, out / f"{split}_confusion_normalized.png", normalized=True
            ),
        ]
    if "dimensional" in results:
        tables.append(report.dimensional_table(results["dimensional"]))
        true = np.stack([predictions["valence"], predictions["arousal"]], axis=-1)
        written += [
            plots.va_scatter_png(true, predictions["va"], out / f"{split}_va_scatter.png"),
            plots.error_histogram_png(true, predictions["va"], out / f"{split}_va_error_hist.png"),
        ]
    table = out / f"{split}_table.md"
    safe_io.write_atomic(table, "\n\n".join(tables) + "\n")
    csv_path = out / f"{split}_predictions.csv"
    write_predictions_csv(predictions, class_names, csv_path)
    written += [table, csv_path]
    if (workdir / "metrics.jsonl").exists():
        written.append(
            plots.loss_curves_png(
                {workdir.name: workdir / "metrics.jsonl"}, out / "loss_curves.png"
            )
        )
    return [paths.path(p) for p in written]


def report_names(split: str) -> list[str]:
    """The files :func:`write_reports` may write for ``split``."""
    names = ["json", "_per_class.md", "_confusion.png", "_confusion_normalized.png"]
    names += ["_va_scatter.png", "_va_error_hist.png", "_table.md", "_predictions.csv"]
    return [f"{split}.{n}" if n == "json" else f"{split}{n}" for n in names] + ["loss_curves.png"]


def check_outputs(workdir: str | Path, out: str | Path, split: str) -> None:
    """ValueError (one line) if a report would land on a file of the run (its config,
    metrics, checkpoints), by any route: ``--out`` the workdir with ``--split=config``."""
    workdir, out = paths.path(workdir), paths.path(out)
    inputs = [workdir / rundir.CONFIG_FILE, workdir / "metrics.jsonl"]
    for name in report_names(split):
        target = out / name
        if not target.exists():
            continue
        if paths.is_remote(target):  # object storage has no links: the names decide
            hit = next((p for p in inputs if str(p) == str(target)), None)
            inside = str(target).startswith(f"{workdir / 'checkpoints'}/")
        else:
            hit = next((p for p in inputs if safe_io.same_file(target, p)), None)
            inside = (workdir / "checkpoints").resolve() in target.resolve().parents
        if hit is not None or inside:
            raise ValueError(
                f"the report {target} would replace {hit or target}, a file of the run: "
                "pass another --out DIR"
            )


def _jsonable(value):
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value)}")


def evaluate_workdir(
    workdir: str | Path,
    split: str = "val",
    checkpoint: str = "best",
    repeats: int = 200,
    out: str | Path | None = None,
    data_dir: str | None = None,
) -> dict:
    """Evaluates checkpoint ``checkpoint`` of the run in ``workdir`` on ``split``; writes the
    reports to ``out`` (default ``workdir/eval``).

    The data are where the run recorded them (``data.json``, :mod:`bregflax.data.run_data`), or
    in ``data_dir``.

    A folder that cannot be written fails first (``rundir.WorkdirError``), before
    anything is computed. For ``best`` and ``latest``, a checkpoint that does not restore
    is skipped for the next one (see ``checkpoints.load_variables``); ``results["step"]``
    says which was evaluated.
    """
    workdir = paths.path(workdir)
    default = out is None
    out = workdir / "eval" if default else paths.path(out)
    if jax.process_index() == 0:
        advice = "; pass --out DIR to write the reports elsewhere" if default else ""
        rundir.ensure_writable(out, advice)
    config, variables, step = checkpoints.load_variables(workdir, checkpoint)
    for note in run_data.apply(config, workdir, data_dir):
        logging.warning(note)
    loaded = data_lib.load(config.data.source, split, config.data)
    batch_size = config.eval_batch_size
    predictions = predict_split(config, variables, loaded.source, batch_size)
    scores = score(predictions, loaded.class_names, repeats)
    results = {"split": split, "step": step, "checkpoint": checkpoint, **scores}
    if jax.process_index() == 0:
        written, renamed = write_reports(
            workdir, split, results, predictions, loaded.class_names, out
        )
        results["files"] = [str(p) for p in written]
        results["renamed"] = [str(p) for p in renamed]
    return results


def parser() -> argparse.ArgumentParser:
    return flags.evaluate_parser()


def main(argv: Sequence[str] | None = None) -> None:
    errors.exit_on_signals()
    xla_cpu.apply()  # before jax starts a backend: XLA reads its flags then
    args = parser().parse_args(argv)
    logging.set_verbosity(logging.WARNING)
    try:
        with echoes.suppressed():  # orbax's echoes of a damaged checkpoint, for the command
            results = evaluate_workdir(
                args.workdir, args.split, args.checkpoint, args.repeats, args.out, args.data_dir
            )
    except (
        rundir.RunError,
        data_lib.DatasetNotFoundError,
        FileNotFoundError,
        ValueError,  # a config.json that is not JSON, a checkpoint not saved, a bad split
    ) as e:
        if args.verbose:
            raise
        errors.fail(str(e))
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}): no report was replaced; run it again", file=sys.stderr)
        errors.quiet_exit(errors.exit_code(e))
    except Exception as e:  # a full disk or a file size limit while writing the reports
        what = errors.resource_error(e)
        if not what or args.verbose:
            raise
        print(f"error: cannot write the reports: {what}; none was half-written", file=sys.stderr)
        errors.quiet_exit(2)
    out = paths.path(args.out) if args.out else paths.path(args.workdir) / "eval"
    tables = [p for p in map(paths.path, results["files"]) if p.name.endswith(".md")]
    print(next(p for p in tables if p.name.startswith(f"{args.split}_table")).read_text())
    print("wrote:\n  " + "\n  ".join(results["files"]))
    print(summary.evaluate_summary(results, args.workdir, out))


if __name__ == "__main__":
    main()
