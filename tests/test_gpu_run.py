"""The prepared GPU run (scripts/gpu_run.sh, benchmarks/gpu_suite.py) end to end at the test
scale on this CPU, its epoch plan, and the carry folder of scripts/gpu_prepare.sh."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from benchmarks import gpu_guard, gpu_measure, gpu_report, gpu_suite, gpu_table2, throughput
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
    assert check["passed"] and not check["failed"]
    assert all(check["highest"][k] <= tol for k, tol in check["tolerance"].items())
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


# --------------------------------------------------------------------------- failures


STAGE_NAMES = [name for name, *_ in gpu_suite.STAGES]


def _suite(tmp_path, budget_s: float = 300.0) -> gpu_suite.Suite:
    args = [f"--out={tmp_path / 'out'}", "--scale=test", f"--work={tmp_path / 'work'}"]
    suite = gpu_suite.Suite(gpu_suite.parse_args(args))
    suite.budget_s = budget_s
    return suite


def test_time_guards_nest_and_each_names_itself():
    with pytest.raises(gpu_guard.TimeUp) as inner:
        with gpu_guard.time_guard(30, "outer"):
            with gpu_guard.time_guard(1, "inner") as own:
                time.sleep(10)
    assert inner.value.guard == own and "inner" in str(inner.value)
    with pytest.raises(gpu_guard.TimeUp) as outer:
        with gpu_guard.time_guard(1, "outer") as outer_id:
            try:
                with gpu_guard.time_guard(30, "inner") as own:
                    time.sleep(10)
            except gpu_guard.TimeUp as e:  # as train_arm does: only its own guard is caught
                if e.guard != own:
                    raise
    assert outer.value.guard == outer_id and "outer" in str(outer.value)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None, signal.default_int_handler)
    # No ``except Exception`` on the way swallows a guard's TimeUp.
    assert not issubclass(gpu_guard.TimeUp, Exception)


def test_a_stage_that_overruns_its_guard_is_recorded_and_the_next_stage_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_suite, "MIN_GUARD_DEFAULT_S", 0.5)
    suite = _suite(tmp_path, budget_s=20.0)
    began = time.perf_counter()
    suite.run("slow", lambda s: time.sleep(60), 1.0, 1.0 / 20.0)  # a 1 s guard
    assert time.perf_counter() - began < 10
    suite.run("after", lambda s: s.results.setdefault("after", 1) and None, 1.0, 1.0)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    slow = results["stages"]["slow"]
    assert slow["status"] == "timeout" and "stopped by stage slow's time guard" in slow["reason"]
    assert slow["guard_s"] == pytest.approx(1.0, abs=0.1) and slow["seconds"] < 10
    assert results["stages"]["after"]["status"] == "ok" and results["after"] == 1
    assert "| slow | timeout |" in (tmp_path / "out" / "report.md").read_text()


def test_a_stage_killed_from_outside_is_marked_killed(tmp_path):
    suite = _suite(tmp_path)
    suite.run("env", gpu_suite.environment, 1.0, 1.0)
    suite.results["stages"]["check"] = {"status": "running", "guard_s": 30.0}
    suite.save()  # as the suite leaves results.json while a stage runs
    assert gpu_suite.mark_killed(tmp_path / "out", "killed by timeout") == ["check"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["stages"]["check"] == {
        "status": "killed", "guard_s": 30.0, "reason": "killed by timeout",
    }  # fmt: skip
    assert results["stages"]["env"]["status"] == "ok"
    assert "| check | killed |" in (tmp_path / "out" / "report.md").read_text()


def test_a_failing_jax_row_is_recorded_and_the_next_row_runs(tmp_path, monkeypatch):
    suite = _suite(tmp_path)
    suite.scale = dataclasses.replace(suite.scale, matmul_n=32)
    monkeypatch.setenv(
        gpu_guard.FAULTS_ENV,
        "jax:BReGNetTiny float32 batch 32=error,jax:BReGNetTiny bfloat16 batch 32=error",
    )
    gpu_measure.throughput_stage(suite)
    t = suite.results["throughput"]
    assert t["rows"] == [] and [f["row"] for f in t["failed"]] == [
        "BReGNetTiny float32 batch 32", "BReGNetTiny bfloat16 batch 32",
    ]  # fmt: skip
    assert all("InjectedFault" in f["error"] for f in t["failed"])


@pytest.mark.slow
def test_a_failing_pytorch_row_costs_only_its_pytorch_figure(tmp_path, monkeypatch):
    """One PyTorch row fails (as a cuDNN error would); its JAX figures and the next row stay."""
    suite = _suite(tmp_path)
    suite.scale = dataclasses.replace(suite.scale, matmul_n=32, repeats=2)
    info = {"version": "stand-in", "cuda": False, "cudnn_allow_tf32": True}
    monkeypatch.setattr(gpu_measure, "torch_info", lambda: info)
    timed = []

    def stand_in(config, variables, dtype):  # PyTorch's place: a step that works
        timed.append(dtype)
        return throughput.Runner("torch", lambda: time.sleep(0.01), config.batch_size)

    monkeypatch.setattr(gpu_measure, "torch_runner", stand_in)
    monkeypatch.setenv(gpu_guard.FAULTS_ENV, "torch:BReGNetTiny float32 batch 32=error")
    gpu_measure.throughput_stage(suite)
    t = suite.results["throughput"]
    assert not t["failed"] and [r["dtype"] for r in t["rows"]] == ["float32", "bfloat16"]
    broken, fine = t["rows"]
    assert "InjectedFault" in broken["torch_error"] and "torch_images_per_s" not in broken
    assert broken["images_per_s"] > 0 and broken["images_per_s"] == pytest.approx(
        broken["batch"] / broken["median_step_s"]
    )
    assert "torch_error" not in fine and fine["torch_images_per_s"] > 0 and timed == ["bfloat16"]
    suite.results["stages"] = {}
    assert "PyTorch failed at BReGNetTiny float32 batch 32" in gpu_report.render(suite.results)


def _gpu_run(repo_root, tmp_path, faults: str, *args: str, timeout: int = 300):
    env = {
        **os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
        gpu_guard.FAULTS_ENV: faults,
    }  # fmt: skip
    cmd = ["bash", "scripts/gpu_run.sh", *args, f"--work={tmp_path / 'work'}"]
    return subprocess.run(
        cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=timeout
    )


def _out_fits_a_device_call(out):
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= DEVICE_FILES
    assert all(len(p.relative_to(out).parts) - 1 <= DEVICE_DEPTH for p in files)


@pytest.mark.slow
def test_gpu_run_skips_the_full_scale_when_the_test_scale_fails(repo_root, tmp_path):
    run = _gpu_run(repo_root, tmp_path, "test:env=error", "--test-budget-s=1")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "out"
    skipped = [line for line in run.stdout.splitlines() if "the full run is skipped" in line]
    assert len(skipped) == 1 and "the test scale failed (exit 1; env error" in skipped[0]
    test = json.loads((out / "test" / "results.json").read_text())
    assert test["scale"] == "test" and test["stages"]["env"]["status"] == "error"
    assert (out / "test" / "report.md").is_file() and not (out / "results.json").exists()
    assert skipped[0] in (out / "log.txt").read_text()
    _out_fits_a_device_call(out)


@pytest.mark.slow
def test_gpu_run_goes_on_to_the_full_scale_after_the_test_scale(repo_root, tmp_path):
    # A 1 s test budget leaves every stage after env skipped (a pass); each full stage fails.
    faults = ",".join(f"full:{name}=error" for name in STAGE_NAMES)
    run = _gpu_run(repo_root, tmp_path, faults, "--test-budget-s=1", "--budget-s=100")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "out"
    test = json.loads((out / "test" / "results.json").read_text())
    # env may overrun its 1 s (exit 3, slow but not broken): the full scale goes on then too.
    assert {r["status"] for r in test["stages"].values()} <= {"ok", "skipped", "timeout"}
    full = json.loads((out / "results.json").read_text())
    assert full["scale"] == "full" and full["budget_s"] <= 100
    assert [n for n, r in full["stages"].items() if r["status"] == "error"] == STAGE_NAMES
    log = (out / "log.txt").read_text()
    assert log.index("test scale passed") < log.index("stage env", log.index("test scale passed"))
    _out_fits_a_device_call(out)


@pytest.mark.slow
def test_gpu_run_kills_a_stalled_stage_and_marks_it(repo_root, tmp_path):
    # A stall blocks the alarm, as a call stuck in XLA or CUDA would: only `timeout` ends it.
    began = time.perf_counter()
    run = _gpu_run(repo_root, tmp_path, "test:check=stall", "--test-budget-s=20")
    assert time.perf_counter() - began < 150
    assert run.returncode == 124, run.stdout[-3000:] + run.stderr[-3000:]  # timeout's status
    test = json.loads((tmp_path / "out" / "test" / "results.json").read_text())
    check = test["stages"]["check"]
    assert check["status"] == "killed" and "killed by timeout after 45 s" in check["reason"]
    assert "the test scale failed (exit 124; check killed)" in run.stdout
    assert not (tmp_path / "out" / "results.json").exists()


def _planned_arm(tmp_path, monkeypatch) -> gpu_suite.Suite:
    """A suite whose plan gives bregnet_regular a guard of about 1 s and its evaluation 1 s."""
    monkeypatch.setattr(gpu_table2, "GUARD_SLACK_S", 0.0)
    monkeypatch.setattr(gpu_table2, "EVAL_S", {"test": 0.1})
    suite = _suite(tmp_path)
    cost = {"epoch_s": 0.2, "fixed_s": 0.3}
    suite.results["table2"] = {"arms": {}, "plan": {
        "dtype": "float32", "epochs": 1, "weighted": True,
        "costs": {"bregnet_regular": cost, "resnet_regular": cost},
    }}  # fmt: skip
    return suite


def test_a_run_stopped_before_its_first_epoch_is_recorded_not_an_error(tmp_path, monkeypatch):
    suite = _planned_arm(tmp_path, monkeypatch)
    monkeypatch.setattr(gpu_table2.train, "train_and_evaluate", lambda config, w: time.sleep(60))
    suite.run("table2_bregnet", lambda s: gpu_table2.train_arm(s, "bregnet_regular"), 1.0, 1.0)
    stage = suite.results["stages"]["table2_bregnet"]
    assert stage["status"] == "skipped" and stage["seconds"] < 10
    assert stage["reason"].startswith("stopped by the run's time guard after 1 s before its first")
    arm = suite.results["table2"]["arms"]["bregnet_regular"]
    assert arm["epochs_done"] == 0 and "val" not in arm
    assert (tmp_path / "out" / "runs.tar.gz").is_file()
    suite.run("weights", gpu_table2.weights, 1.0, 1.0)  # nothing to package: said, not failed
    assert suite.results["stages"]["weights"]["status"] == "skipped"


def test_an_evaluation_that_overruns_its_guard_stops_its_stage_only(tmp_path, monkeypatch):
    suite = _planned_arm(tmp_path, monkeypatch)

    def one_epoch(config, workdir):  # training that logged one validated epoch
        workdir.mkdir(parents=True)
        (workdir / "metrics.jsonl").write_text('{"epoch": 1.0, "val/accuracy": 0.5}\n')

    monkeypatch.setattr(gpu_table2.train, "train_and_evaluate", one_epoch)
    monkeypatch.setenv(gpu_guard.FAULTS_ENV, "evaluate=hang")
    suite.run("table2_bregnet", lambda s: gpu_table2.train_arm(s, "bregnet_regular"), 1.0, 1.0)
    stage = suite.results["stages"]["table2_bregnet"]
    assert stage["status"] == "timeout" and stage["seconds"] < 10
    assert stage["reason"] == "stopped by the evaluation's guard after 1 s"
    assert suite.results["table2"]["arms"]["bregnet_regular"]["epochs_done"] == 1
    with tarfile.open(tmp_path / "out" / "runs.tar.gz") as tar:  # written all the same
        assert "bregnet_regular/metrics.jsonl" in tar.getnames()
    suite.run("next", lambda s: None, 1.0, 1.0)
    assert suite.results["stages"]["next"]["status"] == "ok"


def test_a_guard_fires_again_when_its_timeup_is_swallowed(monkeypatch):
    monkeypatch.setattr(gpu_guard, "REFIRE_S", 0.5)
    began = time.perf_counter()
    with pytest.raises(gpu_guard.TimeUp):
        with gpu_guard.time_guard(1, "guard"):
            try:
                time.sleep(30)
            except gpu_guard.TimeUp:  # dropped, as "Exception ignored in" a callback does
                pass
            time.sleep(30)
    assert time.perf_counter() - began < 5


def test_the_alarm_waits_for_code_that_would_drop_the_timeup(monkeypatch):
    def _xla_gc_callback():  # named as jax's garbage-collection callback
        return sys._getframe()

    with gpu_guard.time_guard(30, "guard") as gid:
        deadline, what = gpu_guard._active[gid]
        monkeypatch.setitem(gpu_guard._active, gid, (time.monotonic() - 1, what))
        gpu_guard._expire(signal.SIGALRM, _xla_gc_callback())  # deferred: no TimeUp here
        with pytest.raises(gpu_guard.TimeUp):
            time.sleep(5)  # but right after
