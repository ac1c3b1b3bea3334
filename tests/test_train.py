"""The trainer: determinism, data parallelism, kill-and-resume, the NaN guard, overrides."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import ROOT, load_config, tiny

from bregflax import train

DEMO = load_config("configs/demo.py")
# The command-line form of tiny(DEMO): 6 steps per epoch, 2 epochs.
TINY_ARGS = [
    "--config.data.synthetic.num_train=192",
    "--config.data.synthetic.num_val=40",
    "--config.batch_size=32",
    "--config.eval_batch_size=32",
    "--config.num_epochs=2",
    "--config.log_every_steps=1",
    "--config.progress_bar=False",
]


def _losses(workdir: Path, key: str = "train/loss") -> np.ndarray:
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return np.array([r[key] for r in lines if key in r])


def assert_close_to_scale(a: np.ndarray, b: np.ndarray, rel: float = 1e-4) -> None:
    """Equal within ``rel`` of the array's largest magnitude plus 1e-5: rounding of gradient
    sums that cancel (BatchNorm offsets, early H3 blocks) moves single elements of a first
    update by up to ~2e-5 (measured), against parameters of order 0.1."""
    np.testing.assert_allclose(b, a, rtol=0, atol=rel * float(np.abs(a).max()) + 1e-5)


def _final_params(workdir: Path, config) -> dict:
    parallel = train.Parallel.over_all_devices()
    model = train.build_model(config)
    template = train.create_train_state(jax.random.key(0), config, model, steps_per_epoch=1)
    template = jax.device_put(template, parallel.replicated)
    manager = train.checkpoint_manager(workdir, config)
    return jax.device_get(train.restore_state(manager, manager.latest_step(), template).params)


def _main(workdir: Path, *overrides: str, env: dict | None = None, wait: bool = True):
    cmd = [
        sys.executable,
        "-m",
        "bregflax.main",
        "--config=configs/demo.py",
        f"--workdir={workdir}",
    ]
    cmd += [*TINY_ARGS, *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    if not wait:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_same_seed_same_run_and_it_learns(tmp_path):
    config = tiny(DEMO, num_epochs=4)
    train.train_and_evaluate(config, tmp_path / "a")
    train.train_and_evaluate(config, tmp_path / "b")
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    np.testing.assert_array_equal(a, b)
    assert a[-3:].mean() < a[:3].mean(), "the demo model must learn"
    records = [
        json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    ]
    val = [r for r in records if "val/accuracy" in r]
    assert len(val) == 4 and all(np.isfinite(r["val/va_rmse"]) for r in val)
    assert (tmp_path / "a" / "config.json").exists()
    assert list((tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))


def test_conv_implementations_train_the_same_curve(tmp_path):
    """``model.conv_impl`` changes how XLA:CPU schedules the gradient, not the math.

    "materialized" computes the very same operations: bit-identical losses, gradient norms
    and val losses when measured (float rounding is allowed for). "phased" sums each strided
    conv's input gradient in another order: step 1 is identical and step 2 agrees to float32
    rounding (1e-7 measured), then training amplifies the rounding by about 10x a step, as
    any reordering of float sums does (tests/test_train.py::test_four_devices_match_one_device):
    7e-3 at most by step 12, measured. A wrong gradient moves the curve by far more.
    """
    curves = {}
    for impl in ("xla", "materialized", "phased"):
        train.train_and_evaluate(tiny(DEMO, **{"model.conv_impl": impl}), tmp_path / impl)
        curves[impl] = [_losses(tmp_path / impl, k) for k in ("train/loss", "train/grad_norm")]
        curves[impl].append(_losses(tmp_path / impl, "val/loss"))
    for xla, same, phased in zip(
        curves["xla"], curves["materialized"], curves["phased"], strict=True
    ):
        assert len(xla) > 1
        np.testing.assert_allclose(same, xla, rtol=1e-5)
        np.testing.assert_allclose(phased, xla, rtol=3e-2)
    for xla, phased in zip(curves["xla"][:2], curves["phased"][:2], strict=True):
        np.testing.assert_allclose(phased[:2], xla[:2], rtol=1e-6)


def test_four_devices_match_one_device(tmp_path):
    """Same global batch on 4 devices: global BatchNorm statistics and mean gradients.

    Only the order of float reductions differs. The step-1 loss and gradient norm agree to
    float32 rounding, and so do the parameters after one step, up to 1e-4 of each array's
    scale (gradient sums that cancel can move single elements by ~1e-5). Later steps
    amplify rounding (about x10 per step at first: 3e-8 -> 1e-5 by step 4, measured), so
    the rest of the curve is compared loosely. Per-device BatchNorm statistics would change
    the step-1 loss by 4e-3 relative (measured), 400x its tolerance.
    """
    four = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    _main(tmp_path / "one")
    _main(tmp_path / "four", env=four)
    _main(tmp_path / "one_step1", "--config.max_steps=1")
    _main(tmp_path / "four_step1", "--config.max_steps=1", env=four)
    config = tiny(DEMO)
    p1, p4 = (
        _final_params(tmp_path / "one_step1", config),
        _final_params(tmp_path / "four_step1", config),
    )
    jax.tree.map(assert_close_to_scale, p1, p4)
    grad1, grad4 = (
        _losses(tmp_path / "one", "train/grad_norm"),
        _losses(tmp_path / "four", "train/grad_norm"),
    )
    np.testing.assert_allclose(grad4[0], grad1[0], rtol=1e-4)
    one, four = _losses(tmp_path / "one"), _losses(tmp_path / "four")
    assert len(one) == len(four) == 12
    np.testing.assert_allclose(four[0], one[0], rtol=1e-5)
    np.testing.assert_allclose(four[:2], one[:2], rtol=1e-4)
    np.testing.assert_allclose(four, one, rtol=1e-2)
    v1, v4 = _losses(tmp_path / "one", "val/loss"), _losses(tmp_path / "four", "val/loss")
    np.testing.assert_allclose(v4, v1, rtol=1e-2)


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path):
    config = tiny(DEMO, checkpoint_every_steps=2)
    train.train_and_evaluate(config, tmp_path / "full")
    # A clean interruption at step 5 (max_steps), then the same command again.
    train.train_and_evaluate(tiny(DEMO, checkpoint_every_steps=2, max_steps=5), tmp_path / "cut")
    train.train_and_evaluate(config, tmp_path / "cut")
    full, cut = _final_params(tmp_path / "full", config), _final_params(tmp_path / "cut", config)
    jax.tree.map(np.testing.assert_array_equal, full, cut)


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    """SIGKILL at an arbitrary point after the first checkpoint, then rerun the command."""
    args = ["--config.checkpoint_every_steps=1", "--config.num_epochs=6"]
    _main(tmp_path / "full", *args)
    proc = _main(tmp_path / "killed", *args, wait=False)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.exists() and any(
            p.name.isdigit() and int(p.name) >= 3 for p in checkpoints.iterdir()
        ):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert killed_at < 36
    _main(tmp_path / "killed", *args)
    config = tiny(DEMO, num_epochs=6)
    full, resumed = (
        _final_params(tmp_path / "full", config),
        _final_params(tmp_path / "killed", config),
    )
    jax.tree.map(np.testing.assert_array_equal, full, resumed)


def test_nan_guard_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny(
        DEMO, checkpoint_every_steps=1, **{"optim.learning_rate": 1e4, "optim.schedule": "constant"}
    )
    with pytest.raises(train.NonFiniteLossError, match=r"at step \d+") as err:
        train.train_and_evaluate(config, tmp_path)
    bad_step = int(err.value.args[0].split("at step ")[1].split(";")[0])
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and max(saved) < bad_step
    params = _final_params(tmp_path, config)
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


def test_config_overrides_reach_the_run(tmp_path):
    _main(
        tmp_path,
        "--config.model.shortcut=h1",
        "--config.optim.schedule=step",
        "--config.max_steps=3",
    )
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["shortcut"] == "h1" and saved["optim"]["schedule"] == "step"
    assert len(_losses(tmp_path)) == 3


def test_bad_override_is_rejected(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "bregflax.main",
        "--config=configs/demo.py",
        f"--workdir={tmp_path}",
    ]
    result = subprocess.run(
        cmd + ["--config.num_epoch=3"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "num_epoch" in result.stderr


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_learning_rate_schedules(schedule):
    config = tiny(
        DEMO,
        num_epochs=10,
        **{"optim.schedule": schedule, "optim.learning_rate": 0.1, "optim.step_epochs": (5,)},
    )
    lr = train.learning_rate_schedule(config, steps_per_epoch=10)
    start, late = float(lr(0)), float(lr(99))
    assert start == pytest.approx(0.1)
    expected = {
        "constant": 0.1,
        "step": 0.01,
        "cosine": 0.1 * 0.5 * (1 + np.cos(np.pi * 99 / 100)),
    }[schedule]
    assert late == pytest.approx(expected, rel=1e-4)  # float32 cos near pi


def test_weight_decay_only_on_kernels():
    params = {"conv": {"kernel": np.ones(2)}, "bn": {"scale": np.ones(2), "bias": np.ones(2)}}
    mask = train.decay_mask(params)
    assert mask == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False}}


def test_missing_dataset_says_what_to_download(tmp_path):
    cmd = [sys.executable, "-m", "bregflax.main", "--config=configs/fer2013.py"]
    cmd += [f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={tmp_path / 'data'}"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Put them in" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("mode, best", [("max", 2), ("min", 3)])
def test_checkpoints_keep_the_latest_k_plus_the_best(tmp_path, mode, best):
    config = tiny(DEMO, keep_checkpoints=3, best_mode=mode)
    manager = train.checkpoint_manager(tmp_path, config)
    accuracy = {1: 0.3, 2: 0.9, 3: 0.1, 4: None, 5: 0.5, 6: 0.6, 7: 0.7}  # 4: mid-epoch save
    for step, value in accuracy.items():
        state = {"w": np.full(3, step, np.float32)}
        metrics = None if value is None else {"val/accuracy": value}
        manager.save(step, args=train.ocp.args.StandardSave(state), metrics=metrics)
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == sorted({best, 5, 6, 7})
    assert manager.best_step() == best and manager.latest_step() == 7
    assert train.resolve_checkpoint(manager, "best") == best
    with pytest.raises(ValueError, match="saved steps"):
        train.resolve_checkpoint(manager, "1")
