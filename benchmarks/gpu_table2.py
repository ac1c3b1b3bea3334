"""Table II at paper scale and the packaged BReGNet39: the last stages of benchmarks/gpu_suite.py.

* ``plan``: the training dtype (``--train-dtype``; ``auto`` takes bfloat16 only where it
  trains both networks at least ``BF16_GAIN`` times faster than float32, counting the input
  pipeline's rate) and the epochs of every run, the same for each: ``--epochs``, the
  scale's, or as many as the budget left fits (from the measured step and pipeline rates and
  compile times), at least the scale's minimum. The weighted loss is planned in when three
  runs fit that minimum, and otherwise runs only if time is left at its turn.
* ``table2_bregnet``, ``table2_resnet``, ``table2_weighted``: one training run each
  (``train.train_and_evaluate`` on the arrays source), stopped by a time guard if it runs
  past 1.3 times its plan or into the time the later stages need; then every metric of its
  best checkpoint on val (``evaluate.evaluate_workdir``), under its own guard
  (``STEP_GUARD_FACTOR`` times ``EVAL_S`` + ``GUARD_SLACK_S``). ``OUT/runs.tar.gz`` holds each
  run's config, metrics.jsonl and evaluation reports.
* ``weights`` (after the first run, before ResNet110 trains): the best BReGNet39 checkpoint
  in float16, in the layout of ``bregflax/weights/fer2013`` (``scripts/package_weights.py``
  scores it), as ``OUT/fer2013-paper.tar``; unpacked into ``bregflax/weights/`` it is
  ``Predictor.from_pretrained("fer2013-paper")``. ``weights_best`` repackages the weighted
  run instead when it scores higher on val. Packaging is guarded like an evaluation
  (``WEIGHTS_S``).
"""

from __future__ import annotations

import json
import math
import tarfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from benchmarks import gpu_guard
from benchmarks.gpu_guard import TimeUp, time_guard
from bregflax import data as data_lib
from bregflax.configs import experiment
from bregflax.evaluation import evaluate, plots, report, shipped
from bregflax.inference import predictor
from bregflax.inference import weights as weights_layout
from bregflax.nn import models
from bregflax.training import checkpoints, train

NAME = "fer2013-paper"
FILE_LIMIT = 16 * 10**6  # bytes in one file the device run brings back
BF16_GAIN = 1.15
GUARD_FACTOR = 1.3  # a run may overrun its planned time by this factor (+ GUARD_SLACK_S)
GUARD_SLACK_S = 15.0
STEP_GUARD_FACTOR = 3.0  # an evaluation or a packaging may overrun its plan by this factor
EPOCH_OVERHEAD_S = {"paper": 1.5, "test": 0.5}  # checkpoint, logging, validation start
EVAL_S = {"paper": 25.0, "test": 8.0}  # one run's best checkpoint, every metric
WEIGHTS_S = {"paper": 40.0, "test": 10.0}  # packaging: scoring as shipped, the tar
ARMS = {  # stage key -> (arch, loss)
    "bregnet_regular": ("bregnet", "regular"),
    "resnet_regular": ("resnet", "regular"),
    "bregnet_weighted": ("bregnet", "weighted"),
}
RUN_FILES = ("config.json", "metrics.jsonl", "eval/val.json", "eval/val_table.md",
             "eval/val_per_class.md")  # fmt: skip


def _step_guard_s(suite, planned_s: float) -> float:
    """Seconds an evaluation or a packaging planned at ``planned_s`` may take: STEP_GUARD_FACTOR
    times its plan (+ GUARD_SLACK_S), never past the budget's end. Generous (the plan's
    EVAL_S and WEIGHTS_S are estimates, and stopping one loses a run's results): it is there
    for one that hangs."""
    return max(min(STEP_GUARD_FACTOR * planned_s + GUARD_SLACK_S, suite.left()), 1.0)


# --------------------------------------------------------------------------- plan


def _row(suite, model: str, dtype: str, batch: int) -> dict | None:
    rows = suite.results.get("throughput", {}).get("rows", [])
    key = (model, dtype, batch)
    return next((r for r in rows if (r["model"], r["dtype"], r["batch"]) == key), None)


def _effective_rate(suite, model: str, dtype: str, batch: int) -> tuple[float, dict] | None:
    """Images/s a run can train at: the slower of its step and the input pipeline."""
    row = _row(suite, model, dtype, batch)
    if row is None:
        return None
    pipe = suite.results.get("pipeline", {}).get("images_per_s", math.inf)
    return min(row["images_per_s"], pipe), row


def choose_dtype(suite, names: dict[str, str], batch: int) -> tuple[str, str]:
    if suite.args.train_dtype != "auto":
        return suite.args.train_dtype, "--train-dtype"
    unique, gains = list(dict.fromkeys(names.values())), []
    for model in unique:
        f32, bf16 = (_effective_rate(suite, model, d, batch) for d in ("float32", "bfloat16"))
        if f32 is None or bf16 is None:
            return "float32", "no bfloat16 and float32 figures for every network"
        gains.append(bf16[0] / f32[0])
    shown = ", ".join(f"{m} {g:.2f}x" for m, g in zip(unique, gains, strict=True))
    if min(gains) >= BF16_GAIN:
        return "bfloat16", f"trains every network >= {BF16_GAIN}x faster ({shown})"
    return "float32", f"bfloat16 is not >= {BF16_GAIN}x faster for every network ({shown})"


def plan(suite) -> None:
    s, table = suite.scale, suite.scale.table
    suite.data()
    configs = {key: suite.config(arch, loss) for key, (arch, loss) in ARMS.items()}
    names = {key: c.model.name for key, c in configs.items()}
    batch = configs["bregnet_regular"].batch_size
    data = configs["bregnet_regular"].data
    n_train = len(data_lib.load("arrays", "train", data).source)
    n_val = len(data_lib.load("arrays", "val", data).source)
    dtype, why = choose_dtype(suite, names, batch)
    costs = {}
    for key, model in names.items():
        rate = _effective_rate(suite, model, dtype, batch)
        if rate is not None:
            per_epoch = (n_train + n_val) / rate[0] + EPOCH_OVERHEAD_S[table]
            costs[key] = {"epoch_s": per_epoch, "fixed_s": 2 * rate[1]["compile_s"] + EVAL_S[table]}
    out = {"dtype": dtype, "dtype_reason": why, "batch": batch, "costs": costs,
           "n_train": n_train, "n_val": n_val, "time_left_s": suite.left()}  # fmt: skip
    fixed = suite.args.epochs or s.epochs
    if fixed:
        out.update(epochs=fixed, weighted=True, epochs_reason="fixed (--epochs or the scale)")
    elif len(costs) < len(ARMS):
        out.update(epochs=s.min_epochs, weighted=False, epochs_reason="no rates measured: minimum")
    else:
        room = suite.left() - WEIGHTS_S[table]

        def fits(keys) -> int:
            spent = sum(costs[k]["fixed_s"] for k in keys)
            return int((room - spent) // sum(costs[k]["epoch_s"] for k in keys))

        three, two = fits(list(ARMS)), fits(list(ARMS)[:2])
        weighted = three >= s.min_epochs
        epochs = min(three if weighted else max(two, 1), s.max_epochs)
        reason = f"as many as fit the {suite.left():.0f} s left"
        out.update(epochs=epochs, weighted=weighted, epochs_reason=reason)
    suite.results.setdefault("table2", {"arms": {}})["plan"] = out


# --------------------------------------------------------------------------- runs


def _curve(workdir: Path) -> dict:
    path = workdir / "metrics.jsonl"  # absent when a guard stopped the run before it logged
    records = plots.read_metrics_jsonl(path) if path.is_file() else []
    val = [(r["epoch"], r["val/accuracy"]) for r in records if "val/accuracy" in r]
    rates = [r["train/images_per_sec"] for r in records if "train/images_per_sec" in r]
    best = max(val, key=lambda v: v[1], default=(None, None))
    return {
        "epochs_done": round(val[-1][0]) if val else 0,
        "val_accuracy_by_epoch": [round(a, 4) for _, a in val],
        "best_epoch": best[0] and round(best[0]),
        "train_images_per_s": float(np.median(rates)) if rates else None,
    }


def _val_summary(results: dict) -> dict:
    cat, norm = results["categorical"], results["skew_normalized"]
    keep = ("accuracy", "f1", "kappa", "alpha", "mcc", "ppv", "roc_auc", "pr_auc")
    return {
        "step": results["step"],
        "accuracy": cat["accuracy"],
        "categorical": {k: cat[k] for k in keep if k in cat},
        "skew_normalized": {k: norm[k] for k in keep if k in norm},
    }


def _guard(suite, key: str, epochs: int) -> float:
    """Seconds run ``key`` may train: its share of the time left after the evaluations and
    the packaging still to come, shared with the regular-loss run after it in proportion to
    their planned times, and at most GUARD_FACTOR times its own plan (+ GUARD_SLACK_S)."""
    table, costs = suite.scale.table, suite.results["table2"]["plan"]["costs"]
    later = ["resnet_regular"] if key == "bregnet_regular" else []
    reserve = EVAL_S[table] * (1 + len(later))
    reserve += 0 if "weights" in suite.results else WEIGHTS_S[table]
    room = suite.left() - reserve
    planned = {k: costs[k]["fixed_s"] + epochs * costs[k]["epoch_s"] for k in [key, *later]
               if k in costs}  # fmt: skip
    if key not in planned:
        return room
    share = room * planned[key] / sum(planned.values())
    return min(share, GUARD_FACTOR * planned[key] + GUARD_SLACK_S)


def train_arm(suite, key: str) -> str | None:
    t2 = suite.results["table2"]
    p = t2["plan"]
    cost = p["costs"].get(key)
    arch, loss = ARMS[key]
    if key == "bregnet_weighted" and not p["weighted"]:
        need = cost and cost["fixed_s"] + p["epochs"] * cost["epoch_s"] + EVAL_S[suite.scale.table]
        if not need or need > suite.left():
            return f"no time left for {p['epochs']} epochs of the weighted loss"
    config = suite.config(arch, loss, dtype=p["dtype"])
    config.num_epochs = p["epochs"]
    config.keep_checkpoints = 1  # the latest, and the best by val accuracy
    workdir = suite.work / "runs" / experiment.run_name(config)
    guard = _guard(suite, key, p["epochs"])
    if guard <= 0:
        return f"no time left ({suite.left():.0f} s)"
    record = t2["arms"][key] = {
        "arch": arch, "model": config.model.name, "shortcut": config.model.shortcut, "loss": loss,
        "dtype": p["dtype"], "epochs_planned": p["epochs"], "guard_s": round(guard, 1),
        "workdir": str(workdir),
    }  # fmt: skip
    suite.save()
    began = time.perf_counter()
    try:
        with time_guard(guard, "the run's time guard") as own:
            train.train_and_evaluate(config, workdir)
    except TimeUp as e:
        if e.guard != own:  # the stage's guard: no time left to evaluate either
            raise
        record["stopped"] = str(e)
    record["train_s"] = round(time.perf_counter() - began, 1)
    record.update(_curve(workdir))
    if not record["epochs_done"]:  # no epoch validated, so no best checkpoint to evaluate
        write_runs_tar(suite)
        stopped = record.get("stopped", "stopped")
        return f"{stopped} before its first epoch ended: nothing to evaluate"
    try:
        with time_guard(_step_guard_s(suite, EVAL_S[suite.scale.table]), "the evaluation's guard"):
            gpu_guard.fault("evaluate")
            results = evaluate.evaluate_workdir(
                workdir, "val", "best", repeats=suite.scale.eval_repeats
            )
        record["val"] = _val_summary(results)
    finally:  # an evaluation that fails or overruns keeps the run's files
        write_runs_tar(suite)
    return None


def write_runs_tar(suite) -> None:
    partial = suite.out / ".runs.tar.gz.partial"
    with tarfile.open(partial, "w:gz") as tar:
        for key, arm in suite.results["table2"]["arms"].items():
            for name in RUN_FILES:
                path = Path(arm["workdir"]) / name
                if path.is_file():
                    tar.add(path, arcname=f"{key}/{name}")
    partial.replace(suite.out / "runs.tar.gz")


# --------------------------------------------------------------------------- weights


def package(workdir: Path, folder: Path, meta: dict, flip: bool = True) -> dict:
    """Writes the best checkpoint of ``workdir`` in float16 to ``folder`` as
    ``bregflax.inference.weights`` lays out a shipped model; returns its meta.json."""
    config, variables, step = checkpoints.load_variables(workdir, "best")
    variables = jax.device_get(variables)
    half = jax.tree.map(lambda a: np.asarray(a, np.float16), variables)
    overflow = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(half)
        if not np.isfinite(leaf).all()
    ]
    if overflow:
        raise ValueError(f"float16 cannot hold {overflow[:3]}: package these weights in float32")
    blob = serialization.msgpack_serialize(half)
    if len(blob) > FILE_LIMIT:
        raise ValueError(f"params.msgpack would be {len(blob) / 1e6:.1f} MB, over the limit")
    names = predictor.class_names(config)
    scores = shipped.shipped_scores(config, half, names, flip)
    cat, norm = scores["categorical"], scores["skew_normalized"]
    view = "each face and its mirror image, averaged" if flip else "each face once"
    tables = {
        "val_table.md": f"# val, checkpoint step {step}, float16 weights, {view}\n\n"
        + report.categorical_table(cat, norm)
        + "\n",
        "val_per_class.md": report.per_class_table(scores["per_class"]) + "\n",
    }
    meta.update(
        class_names=list(names),
        flip=flip,
        model=config.model.name,
        params=models.num_params(variables["params"]),
        dtype="float16",
        checkpoint_step=int(step),
        epochs=config.num_epochs,
        training_time=shipped.training_time(workdir),
    )
    meta["val"] = {"accuracy": cat["accuracy"], "skew_normalized": norm, "categorical": cat,
                   "per_class": scores["per_class"]}  # fmt: skip
    weights_layout.write(folder, config, half, meta, tables)
    return meta


def weights(suite, key: str = "bregnet_regular") -> str | None:
    arm = suite.results.get("table2", {}).get("arms", {}).get(key)
    if not arm or "val" not in arm:
        return f"no evaluated {key} run to package"
    env = suite.results.get("env", {})
    kind = (env.get("devices") or [{}])[0].get("kind", "?")
    meta = {
        "trained_on": "FER2013 Training split (28,709 faces); checkpoint chosen on PublicTest"
        if suite.scale.table == "paper"
        else "tiny synthetic arrays (the test scale)",
        "command": f"scripts/gpu_run.sh --scale={suite.results['scale']}: Table II run "
        f"fer2013,{','.join(ARMS[key])}, {arm['epochs_planned']} epochs, {arm['dtype']}",
        "hardware": f"{kind}, jax {jax.__version__}",
        "accuracy_without_flip_float32": arm["val"]["accuracy"],
    }
    folder = suite.work / "weights" / NAME
    with time_guard(_step_guard_s(suite, WEIGHTS_S[suite.scale.table]), "the packaging's guard"):
        gpu_guard.fault("package")
        meta = package(Path(arm["workdir"]), folder, meta)
    partial = suite.out / f".{NAME}.tar.partial"
    with tarfile.open(partial, "w") as tar:
        tar.add(folder, arcname=NAME)
    partial.replace(suite.out / f"{NAME}.tar")
    shipped = json.loads((predictor.PRETRAINED_DIR / "fer2013" / "meta.json").read_text())
    suite.results["weights"] = {
        "tar": f"{NAME}.tar", "run": key, "bytes": (suite.out / f"{NAME}.tar").stat().st_size,
        "files": {p.name: p.stat().st_size for p in sorted(folder.iterdir())},
        "val_accuracy": meta["val"]["accuracy"],
        "shipped": {"name": "fer2013", "model": shipped["model"],
                    "val_accuracy": shipped["val"]["accuracy"]},
        "beats_shipped": meta["val"]["accuracy"] > shipped["val"]["accuracy"],
    }  # fmt: skip
    return None


def weights_best(suite) -> str | None:
    arms = suite.results.get("table2", {}).get("arms", {})
    regular, weighted = arms.get("bregnet_regular"), arms.get("bregnet_weighted")
    if not (regular and weighted and "val" in regular and "val" in weighted):
        return "one of the two BReGNet39 runs is missing"
    if weighted["val"]["accuracy"] <= regular["val"]["accuracy"]:
        return "the regular loss's run scores higher: it stays packaged"
    if suite.left() < WEIGHTS_S[suite.scale.table]:
        return "no time left to repackage the weighted run"
    return weights(suite, "bregnet_weighted")


STAGES = (  # as gpu_suite.STAGES: name, function, the fractions to start by and stop at
    ("plan", plan, 1.0, 1.0),
    ("table2_bregnet", lambda suite: train_arm(suite, "bregnet_regular"), 1.0, 1.0),
    ("weights", weights, 1.0, 1.0),
    ("table2_resnet", lambda suite: train_arm(suite, "resnet_regular"), 1.0, 1.0),
    ("table2_weighted", lambda suite: train_arm(suite, "bregnet_weighted"), 1.0, 1.0),
    ("weights_best", weights_best, 1.0, 1.0),
)
