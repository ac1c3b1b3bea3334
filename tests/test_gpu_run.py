"""The prepared GPU run (scripts/gpu_run.sh, benchmarks/gpu_suite.py) end to end at the test
scale on this CPU, its epoch plan, and the carry folder of scripts/gpu_prepare.sh."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from benchmarks import gpu_measure, gpu_suite, gpu_table2
from bregflax.data import arrays
from bregflax.inference import predictor
from bregflax.training import checkpoints, state

DEVICE_FILES = 8  # what a device call brings back from $OUT: files, MiB each, folders down
DEVICE_FILE_MIB = 16
DEVICE_DEPTH = 2
NAME_OK = re.compile(r"[A-Za-z0-9._-]+")


@pytest.fixture(scope="module")
def gpu_run(repo_root, tmp_path_factory):
    """``scripts/gpu_run.sh --scale=test`` into a fresh $OUT: (out, results)."""
    tmp = tmp_path_factory.mktemp("gpu_run")
    env = {**os.environ, "OUT": str(tmp / "out"), "PYTHON": sys.executable}
    cmd = ["bash", "scripts/gpu_run.sh", "--scale=test", f"--work={tmp / 'work'}"]
    result = subprocess.run(
        cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return tmp / "out", json.loads((tmp / "out" / "results.json").read_text())


@pytest.mark.slow
def test_every_stage_finishes_and_out_fits_what_a_device_call_brings_back(gpu_run):
    out, results = gpu_run
    stages = results["stages"]
    not_ok = {name: r for name, r in stages.items() if r["status"] != "ok"}
    # Every stage runs; only weights_best may decline, and only because the regular run,
    # already packaged, scores at least as high (a decision, not a failure).
    assert set(not_ok) <= {"weights_best"}, not_ok
    if not_ok:
        declined = not_ok["weights_best"]
        assert declined["status"] == "skipped", not_ok
        assert declined["reason"] == "the regular loss's run scores higher: it stays packaged"
    assert stages["weights"]["status"] == "ok"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} == {
        "results.json", "report.md", "log.txt", "runs.tar.gz", "fer2013-paper.tar",
    }  # fmt: skip
    assert len(files) <= DEVICE_FILES
    for p in files:
        assert p.stat().st_size <= DEVICE_FILE_MIB * 2**20
        assert len(p.relative_to(out).parts) - 1 <= DEVICE_DEPTH
        assert all(NAME_OK.fullmatch(part) for part in p.relative_to(out).parts)
    report = (out / "report.md").read_text()
    for title in ("Correctness", "Throughput", "Input pipeline", "Table II", "Weights"):
        assert f"## {title}" in report
    assert "stage table2_resnet" in (out / "log.txt").read_text()


@pytest.mark.slow
def test_the_check_passes_and_throughput_figures_agree_with_each_other(gpu_run):
    _, results = gpu_run
    check = results["check"]
    assert check["passed"] and check["highest"]["update_rel"] <= check["rtol"]
    t = results["throughput"]
    assert all(v > 0 for v in t["matmul"].values())
    assert {r["dtype"] for r in t["rows"]} == {"float32", "bfloat16"} and not t["skipped"]
    row = t["rows"][0]
    # A train step costs about three forward passes (forward, and backward for inputs and weights).
    model = state.build_model(_tiny_config(row["model"]))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 1))))
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
        variables, jax.ShapeDtypeStruct((row["batch"], 48, 48, 1), jnp.float32)
    )
    assert 2.5 <= row["flops_per_step"] / forward.cost_analysis()["flops"] <= 4.0
    assert gpu_suite.SCALES["test"].batches == (row["batch"],)
    for r in t["rows"]:
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["median_step_s"])
        assert r["affectnet_epoch_s"] == pytest.approx(
            gpu_measure.AFFECTNET_TRAIN / r["images_per_s"]
        )
        assert r["speedup_over_paper"] == pytest.approx(r["paper_epoch_s"] / r["affectnet_epoch_s"])
        assert r["tflops"] == pytest.approx(r["flops_per_step"] / r["median_step_s"] / 1e12)
        assert ("torch_images_per_s" in r) == ("torch" in t)
    p = results["pipeline"]
    assert p["images_per_s"] > 0 and p["examples"] == 160
    assert p["input_bound"] == (p["images_per_s"] < p["fastest_step"]["images_per_s"])


def _tiny_config(model_name):
    from bregflax import configs

    config = configs.get("table2", "fer2013,bregnet,regular,test")
    config.model.name = model_name
    return config


@pytest.mark.slow
def test_table2_reports_each_runs_best_checkpoint(gpu_run):
    out, results = gpu_run
    arms = results["table2"]["arms"]
    assert set(arms) == {"bregnet_regular", "resnet_regular", "bregnet_weighted"}
    assert (arms["bregnet_regular"]["shortcut"], arms["resnet_regular"]["shortcut"]) == (
        "h3",
        "identity",
    )
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
        for key, arm in arms.items():
            assert arm["epochs_done"] == arm["epochs_planned"] == 2 and "stopped" not in arm
            val = arm["val"]
            assert 0 <= val["accuracy"] <= 1
            assert all(0 <= m <= 1 for m in val["skew_normalized"]["accuracy"])
            # The best checkpoint scores on val what training logged at its best epoch.
            assert val["accuracy"] == pytest.approx(max(arm["val_accuracy_by_epoch"]), abs=1e-4)
            saved = json.load(tar.extractfile(f"{key}/eval/val.json"))
            assert saved["categorical"]["accuracy"] == val["accuracy"]
            assert f"{key}/metrics.jsonl" in names and f"{key}/config.json" in names


@pytest.mark.slow
def test_packaged_weights_are_float16_and_predict_as_the_trained_run(
    gpu_run, tmp_path, monkeypatch
):
    out, results = gpu_run
    with tarfile.open(out / "fer2013-paper.tar") as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / gpu_table2.NAME
    stored = serialization.msgpack_restore((folder / "params.msgpack").read_bytes())
    assert {np.asarray(a).dtype for a in jax.tree.leaves(stored)} == {np.dtype(np.float16)}
    meta = json.loads((folder / "meta.json").read_text())
    assert (
        meta["dtype"] == "float16" and meta["val"]["accuracy"] == results["weights"]["val_accuracy"]
    )
    monkeypatch.setattr(predictor, "PRETRAINED_DIR", tmp_path)
    shipped = predictor.Predictor.from_pretrained(gpu_table2.NAME)
    config, variables, _ = checkpoints.load_variables(
        results["table2"]["arms"]["bregnet_regular"]["workdir"]
    )
    reference = predictor.Predictor.from_config(config, variables, flip=shipped.flip)
    faces = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 1), dtype=np.uint8)
    np.testing.assert_allclose(
        shipped.predict(faces)["probs"], reference.predict(faces)["probs"], atol=1e-3
    )


def test_the_plan_fits_the_runs_into_the_time_left(tmp_path):
    args = [f"--out={tmp_path}", "--scale=test", f"--work={tmp_path / 'work'}"]
    suite = gpu_suite.Suite(gpu_suite.parse_args(args))
    suite.scale = dataclasses.replace(suite.scale, epochs=0, min_epochs=3, max_epochs=50)
    row = {"model": "BReGNetTiny", "batch": 32, "compile_s": 2.0}
    suite.results["throughput"] = {
        "rows": [
            {**row, "dtype": "float32", "images_per_s": 448.0},
            {**row, "dtype": "bfloat16", "images_per_s": 1000.0},
        ]
    }
    suite.results["pipeline"] = {"images_per_s": 560.0}  # bfloat16 is input-bound at 560
    epoch_s = (160 + 64) / 560.0 + gpu_table2.EPOCH_OVERHEAD_S["test"]
    fixed_s = 2 * 2.0 + gpu_table2.EVAL_S["test"]  # train and eval step compiles, evaluation

    def fits(budget: float, runs: int) -> set[int]:
        n = int((budget - gpu_table2.WEIGHTS_S["test"] - runs * fixed_s) // (runs * epoch_s))
        return {n, n - 1}  # the clock moves while it plans

    suite.budget_s = suite.elapsed() + 100.0
    gpu_table2.plan(suite)
    p = suite.results["table2"]["plan"]
    assert p["dtype"] == "bfloat16"  # min(1000, 560) / 448 = 1.25x >= BF16_GAIN
    assert p["costs"]["resnet_regular"] == pytest.approx({"epoch_s": epoch_s, "fixed_s": fixed_s})
    assert p["weighted"] and p["epochs"] in fits(100.0, 3)
    # BReGNet39 may take its share of the time left beside ResNet110's (equal plans here).
    planned = fixed_s + p["epochs"] * epoch_s
    room = suite.left() - 2 * gpu_table2.EVAL_S["test"] - gpu_table2.WEIGHTS_S["test"]
    expected = min(room / 2, gpu_table2.GUARD_FACTOR * planned + gpu_table2.GUARD_SLACK_S)
    assert gpu_table2._guard(suite, "bregnet_regular", p["epochs"]) == pytest.approx(
        expected, abs=0.5
    )
    suite.budget_s = suite.elapsed() + 40.0  # three runs no longer fit 3 epochs: two do
    gpu_table2.plan(suite)
    p = suite.results["table2"]["plan"]
    assert not p["weighted"] and p["epochs"] in fits(40.0, 2)


def test_gpu_prepare_needs_the_shared_fer2013_arrays(repo_root, tmp_path):
    cmd = [
        "bash",
        "scripts/gpu_prepare.sh",
        f"--data={tmp_path / 'none'}",
        f"--carry={tmp_path / 'c'}",
    ]
    result = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "train.npz not found" in result.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_gpu_prepare_converts_losslessly_and_counts_what_travels(repo_root, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "fer2013"
    data.mkdir()
    originals = {}
    for split, n in (("train", 70), ("val", 9)):
        originals[split] = (rng.integers(0, 256, (n, 48, 48), np.uint8), rng.integers(0, 7, n))
        np.savez_compressed(
            data / f"{split}.npz", images=originals[split][0], labels=originals[split][1]
        )
    cmd = [
        "bash",
        "scripts/gpu_prepare.sh",
        f"--data={data}",
        f"--carry={tmp_path / 'carry'}",
        "--no-wheels",
    ]
    env = {**os.environ, "PYTHON": sys.executable}
    first = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    for split, (images, labels) in originals.items():
        back = arrays.read(tmp_path / "carry" / "fer2013" / split)
        np.testing.assert_array_equal(back["images"][..., 0], images)
        np.testing.assert_array_equal(back["labels"], labels)
    carried = sum(p.stat().st_size for p in (tmp_path / "carry").rglob("*") if p.is_file())
    assert f"carry {tmp_path / 'carry'}: {carried / 2**20:.1f} MiB" in first.stdout
    assert re.search(r"total: [0-9.]+ MiB of 64.0 MiB", first.stdout)
    again = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already converted" in again.stdout
