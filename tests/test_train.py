"""The trainer: determinism, data parallelism, kill-and-resume, the NaN guard, overrides."""

import json
import signal
import time

import jax
import numpy as np
import pytest

from bregflax import main, rundir
from bregflax.data import pipeline
from bregflax.training import steps, train

FOUR_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


def _saved_steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_same_seed_same_run_and_it_learns(
    trained_run, trained_run_config, read_metric, tmp_path, capsys
):
    train.train_and_evaluate(trained_run_config, tmp_path)
    # Once 5 steps after the compiled first have run, the time the rest will take:
    out = capsys.readouterr().out
    assert "estimated training time: " in out and " for 6 more steps (" in out
    a, b = read_metric(trained_run), read_metric(tmp_path)
    assert len(a) == 12
    np.testing.assert_array_equal(a, b)
    assert a[-3:].mean() < a[:3].mean(), "the demo model must learn"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val/accuracy" in r]
    assert len(val) == trained_run_config.num_epochs
    assert all(np.isfinite(r["val/va_rmse"]) for r in val)
    np.testing.assert_array_equal(
        read_metric(tmp_path, "val/loss"), read_metric(trained_run, "val/loss")
    )
    assert rundir.read_config(tmp_path).to_dict() == json.loads(
        trained_run_config.to_json_best_effort()
    )
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_interrupted_run_resumes_to_the_same_parameters(
    trained_run, trained_run_config, final_params, read_metric, tmp_path
):
    """A clean interruption at step 5 (max_steps), then the same command again."""
    cut = trained_run_config.copy_and_resolve_references()
    cut.max_steps = 5
    train.train_and_evaluate(cut, tmp_path)
    assert _saved_steps(tmp_path)[-1] == 5
    train.train_and_evaluate(trained_run_config, tmp_path)
    full = final_params(trained_run, trained_run_config)
    resumed = final_params(tmp_path, trained_run_config)
    jax.tree.map(np.testing.assert_array_equal, full, resumed)
    np.testing.assert_array_equal(read_metric(tmp_path), read_metric(trained_run))


def test_nan_guard_names_the_step_and_keeps_the_last_good_checkpoint(
    trained_run_config, final_params, monkeypatch, tmp_path
):
    """An infinite pixel in step 4's batch makes step 4's update NaN; steps 1-3 are kept."""
    real = pipeline.train_batches

    def poisoned(*args, **kwargs):
        for step, batch in enumerate(real(*args, **kwargs), start=kwargs["start_step"] + 1):
            if step == 4:
                batch = {**batch, "image": batch["image"].copy()}
                batch["image"][0, 0, 0, 0] = np.inf
            yield batch

    monkeypatch.setattr(pipeline, "train_batches", poisoned)
    config = trained_run_config
    config.checkpoint_every_steps = 1
    with pytest.raises(
        train.NonFiniteLossError, match=r"non-finite training (loss|parameters).* at step 4;"
    ):
        train.train_and_evaluate(config, tmp_path)
    assert _saved_steps(tmp_path) == [1, 2, 3]
    params = final_params(tmp_path, config)
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


@pytest.mark.slow
def test_nan_guard_stops_a_diverging_run(shrink, demo_config, final_params, tmp_path):
    """The real thing: a learning rate of 1e4 diverges within a few steps."""
    config = shrink(
        demo_config,
        checkpoint_every_steps=1,
        **{"optim.learning_rate": 1e4, "optim.schedule": "constant"},
    )
    with pytest.raises(train.NonFiniteLossError, match=r"at step \d+") as err:
        train.train_and_evaluate(config, tmp_path)
    bad_step = int(err.value.args[0].split("at step ")[1].split(";")[0])
    saved = _saved_steps(tmp_path)
    assert saved and max(saved) < bad_step
    params = final_params(tmp_path, config)
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


def test_config_overrides_reach_the_run(tiny_args, read_metric, tmp_path):
    """The command line (both override spellings) to the run's config.json and its steps."""
    main.main(
        [
            "--config=configs/demo.py",
            f"--workdir={tmp_path}",
            *tiny_args,
            "--config.max_steps",
            "3",
            "--config.best_metric=val/loss",
            "--config.best_mode",
            "min",
            "--config.data.augment.flip=false",
            "--config.data.augment.rotate_deg=5",
        ]
    )
    saved = rundir.read_config(tmp_path)
    assert saved.max_steps == 3 and saved.best_metric == "val/loss" and saved.best_mode == "min"
    assert saved.data.augment.flip is False and saved.data.augment.rotate_deg == 5.0
    assert isinstance(saved.data.augment.rotate_deg, float)
    assert len(read_metric(tmp_path)) == 3
    assert len(read_metric(tmp_path, "val/loss")) == 1  # max_steps ends the run with a validation


@pytest.mark.slow
def test_four_devices_match_one_device(
    run_main, read_metric, final_params, assert_close_to_scale, shrink, demo_config, tmp_path
):
    """Same global batch on 4 devices: global BatchNorm statistics and mean gradients.

    Only the order of float reductions differs. The step-1 loss and gradient norm agree to
    float32 rounding, and so do the parameters after one step, up to 1e-4 of each array's
    scale (gradient sums that cancel can move single elements by ~1e-5). Later steps
    amplify rounding (about x10 per step at first: 3e-8 -> 1e-5 by step 4, measured), so
    the rest of the curve is compared loosely. Per-device BatchNorm statistics would change
    the step-1 loss by 4e-3 relative (measured), 400x its tolerance.
    """
    run_main(tmp_path / "one")
    run_main(tmp_path / "four", env=FOUR_DEVICES)
    run_main(tmp_path / "one_step1", "--config.max_steps=1")
    run_main(tmp_path / "four_step1", "--config.max_steps=1", env=FOUR_DEVICES)
    config = shrink(demo_config)
    p1 = final_params(tmp_path / "one_step1", config)
    p4 = final_params(tmp_path / "four_step1", config)
    jax.tree.map(assert_close_to_scale, p1, p4)
    grad1 = read_metric(tmp_path / "one", "train/grad_norm")
    grad4 = read_metric(tmp_path / "four", "train/grad_norm")
    np.testing.assert_allclose(grad4[0], grad1[0], rtol=1e-4)
    one, four = read_metric(tmp_path / "one"), read_metric(tmp_path / "four")
    assert len(one) == len(four) == 12
    np.testing.assert_allclose(four[0], one[0], rtol=1e-5)
    np.testing.assert_allclose(four[:2], one[:2], rtol=1e-4)
    np.testing.assert_allclose(four, one, rtol=1e-2)
    v1, v4 = read_metric(tmp_path / "one", "val/loss"), read_metric(tmp_path / "four", "val/loss")
    np.testing.assert_allclose(v4, v1, rtol=1e-2)


@pytest.mark.slow
def test_conv_implementations_train_the_same_curve(shrink, demo_config, read_metric, tmp_path):
    """``model.conv_impl`` changes how XLA:CPU schedules the gradient, not the math.

    "materialized" computes the very same operations: bit-identical losses, gradient norms
    and val losses when measured (float rounding is allowed for). "phased" sums each strided
    conv's input gradient in another order: step 1 is identical and step 2 agrees to float32
    rounding (1e-7 measured), then training amplifies the rounding by about 10x a step, as
    any reordering of float sums does (test_four_devices_match_one_device): 7e-3 at most by
    step 12, measured. A wrong gradient moves the curve by far more. The default suite
    checks the gradients themselves (tests/test_conv.py).
    """
    curves = {}
    for impl in ("xla", "materialized", "phased"):
        config = shrink(demo_config, **{"model.conv_impl": impl})
        train.train_and_evaluate(config, tmp_path / impl)
        keys = ("train/loss", "train/grad_norm", "val/loss")
        curves[impl] = [read_metric(tmp_path / impl, k) for k in keys]
    for xla, same, phased in zip(
        curves["xla"], curves["materialized"], curves["phased"], strict=True
    ):
        assert len(xla) > 1
        np.testing.assert_allclose(same, xla, rtol=1e-5)
        np.testing.assert_allclose(phased, xla, rtol=3e-2)
    for xla, phased in zip(curves["xla"][:2], curves["phased"][:2], strict=True):
        np.testing.assert_allclose(phased[:2], xla[:2], rtol=1e-6)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(
    run_main, final_params, read_metric, shrink, demo_config, tmp_path
):
    """SIGKILL at an arbitrary point after the first checkpoint, then rerun the command: the
    same parameters, and the same loss curve with each step logged once (the rows logged
    after the checkpoint it resumes from are dropped, then logged again)."""
    args = ["--config.checkpoint_every_steps=1", "--config.num_epochs=6"]
    run_main(tmp_path / "full", *args)
    proc = run_main(tmp_path / "killed", *args, wait=False)
    saved = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if saved.exists() and any(p.name.isdigit() and int(p.name) >= 3 for p in saved.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(_saved_steps(tmp_path / "killed"))
    assert killed_at < 36
    run_main(tmp_path / "killed", *args)
    config = shrink(demo_config, num_epochs=6)
    full, resumed = (
        final_params(tmp_path / "full", config),
        final_params(tmp_path / "killed", config),
    )
    jax.tree.map(np.testing.assert_array_equal, full, resumed)
    np.testing.assert_array_equal(read_metric(tmp_path / "killed"), read_metric(tmp_path / "full"))


def test_module_grad_norms_are_each_modules_l2_norm():
    rng = np.random.default_rng(0)
    grads = {
        "stage0_block0": {"conv1": {"kernel": rng.normal(size=(3, 3, 2, 2))}},
        "classifier": {"kernel": rng.normal(size=(4, 7)), "bias": rng.normal(size=7)},
    }
    norms = jax.device_get(steps.module_grad_norms(grads))
    assert set(norms) == {"grad_norm/stage0_block0", "grad_norm/classifier"}
    for name, g in grads.items():
        flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])
        assert norms[f"grad_norm/{name}"] == pytest.approx(np.linalg.norm(flat), rel=1e-5)
    total = np.sqrt(sum(v**2 for v in norms.values()))
    all_flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads)])
    assert total == pytest.approx(np.linalg.norm(all_flat), rel=1e-5)
