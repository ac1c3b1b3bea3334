"""A run on disk: config.json, the checkpoints kept, and loading a trained state back."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bregflax import rundir
from bregflax.training import checkpoints


@pytest.mark.parametrize("mode, best", [("max", 2), ("min", 3)])
def test_checkpoints_keep_the_latest_k_plus_the_best(shrink, demo_config, tmp_path, mode, best):
    config = shrink(demo_config, keep_checkpoints=3, best_mode=mode)
    manager = checkpoints.manager(tmp_path, config)
    accuracy = {1: 0.3, 2: 0.9, 3: 0.1, 4: None, 5: 0.5, 6: 0.6, 7: 0.7}  # 4: mid-epoch save
    for step, value in accuracy.items():
        saved = {"w": np.full(3, step, np.float32)}
        checkpoints.save(manager, step, saved, None if value is None else {"val/accuracy": value})
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == sorted({best, 5, 6, 7})
    assert manager.best_step() == best and manager.latest_step() == 7
    ranked = functools.partial(checkpoints.ranked, manager, metric="val/accuracy", mode=mode)
    assert ranked("best")[0] == best
    assert ranked("latest")[0] == 7
    assert ranked("6") == [6]
    for missing in ("1", "four"):
        with pytest.raises(ValueError, match="saved steps"):
            ranked(missing)


def test_no_checkpoints_is_a_clear_error(demo_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints under"):
        checkpoints.ranked(
            checkpoints.manager(tmp_path, demo_config), "best", "val/accuracy", "max"
        )


def test_config_round_trips_through_config_json(demo_config, tmp_path):
    path = rundir.write_config(tmp_path, demo_config)
    assert path == tmp_path / "config.json"
    read = rundir.read_config(tmp_path)
    assert read.to_dict() == json.loads(demo_config.to_json_best_effort())
    assert read.model.name == "BReGNetTiny" and read.optim.learning_rate == 0.05


def test_a_workdir_without_config_json_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        rundir.read_config(tmp_path)


def test_abstract_state_is_the_real_state_without_computing_it(trained_run, trained_run_config):
    real = checkpoints.restore_state(
        checkpoints.reader(trained_run), 12, checkpoints.abstract_state(trained_run_config)
    )
    assert isinstance(real.params, dict) and jax.tree.leaves(real.params)[0].size > 0
    abstract = checkpoints.abstract_state(trained_run_config)
    leaves = lambda tree: [  # noqa: E731
        (jax.tree_util.keystr(path), x.shape, x.dtype)
        for path, x in jax.tree_util.tree_leaves_with_path(tree)
    ]
    assert leaves(abstract) == leaves(real)
    assert abstract.step.dtype == jnp.int32


def test_load_variables_gives_each_saved_checkpoints_variables(
    trained_run, final_params, read_metric
):
    config, latest, step = checkpoints.load_variables(trained_run, "latest")
    assert step == 12 and set(latest) == {"params", "batch_stats"}  # no optimizer state
    expected = final_params(trained_run, config)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(latest["params"]), expected)
    manager = checkpoints.reader(trained_run)
    whole = checkpoints.restore_state(manager, 12, checkpoints.abstract_state(config))
    jax.tree.map(np.testing.assert_array_equal, latest["batch_stats"], whole.batch_stats)

    _, third, step = checkpoints.load_variables(trained_run, "9")
    assert step == 9
    assert not np.array_equal(
        jax.tree.leaves(third["params"])[0], jax.tree.leaves(latest["params"])[0]
    )

    _, _, best = checkpoints.load_variables(trained_run, "best")
    records = [
        json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()
    ]
    accuracy = {r["step"]: r["val/accuracy"] for r in records if "val/accuracy" in r}
    assert best in accuracy and accuracy[best] == max(accuracy.values())


def test_loading_a_run_needs_neither_the_trainer_nor_the_optimizer(trained_run):
    code = (
        "import sys\n"
        "hook = sys.unraisablehook\n"
        "from bregflax.inference.predictor import Predictor\n"
        f"p = Predictor.from_workdir({str(trained_run)!r}, 'latest')\n"
        "assert p.info['step'] == 12, p.info\n"
        "assert sys.unraisablehook is hook, 'a process-wide hook was left installed'\n"
        "print(sorted(m for m in sys.modules if m.startswith(('optax', 'bregflax.training.'))\n"
        "             and m != 'bregflax.training.checkpoints'\n"
        "             and m != 'bregflax.training.parallel'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_fingerprint_is_the_model_built_not_the_text(demo_config):
    base = checkpoints.fingerprint(demo_config)
    assert base["model.shortcut"] == "h3" and base["model.widths"] == [16, 32, 64]
    assert base["data.image_size"] == 48 and base["model.head"] == "both"
    same = demo_config.copy_and_resolve_references()
    same.model.shortcut, same.model.widths = "h3", (16, 32, 64)  # BReGNetTiny's own
    same.model.conv_impl, same.half_precision, same.optim.learning_rate = "xla", True, 1.0
    same.data.data_dir, same.batch_size, same.num_epochs = "/elsewhere", 8, 1
    assert checkpoints.fingerprint(same) == base
    other = demo_config.copy_and_resolve_references()
    other.model.name, other.data.channels = "BReGNetSmall", 3
    assert checkpoints.fingerprint_changes(base, checkpoints.fingerprint(other)) == [
        "model.name: 'BReGNetTiny' -> 'BReGNetSmall'",
        "model.stage_sizes: [1, 1, 1] -> [2, 2, 2]",
        "model.widths: [16, 32, 64] -> [32, 64, 128]",
        "model.stem_convs: 1 -> 2",
        "model.stem_stride: 1 -> 2",
        "data.channels: 1 -> 3",
    ]
    unknown = demo_config.copy_and_resolve_references()
    unknown.model.name = "NoSuchNet"  # cannot be built: only what the config says is compared
    assert checkpoints.fingerprint_changes(base, checkpoints.fingerprint(unknown)) == [
        "model.name: 'BReGNetTiny' -> 'NoSuchNet'"
    ]


def test_fallbacks_are_ranked_and_damaged_metrics_do_not_stop_reading(
    shrink, demo_config, tmp_path, caplog
):
    config = shrink(demo_config, keep_checkpoints=10)
    writer = checkpoints.manager(tmp_path, config)
    for step, value in {1: 0.3, 2: 0.9, 3: None, 4: 0.5, 5: 0.7}.items():
        metrics = None if value is None else {"val/accuracy": value}
        checkpoints.save(writer, step, {"w": np.full(3, step, np.float32)}, metrics, config)
    writer.wait_until_finished()
    reader = checkpoints.reader(tmp_path)
    assert checkpoints.ranked(reader, "latest", "val/accuracy", "max") == [5, 4, 3, 2, 1]
    assert checkpoints.ranked(reader, "best", "val/accuracy", "max") == [2, 5, 4, 1, 3]
    assert checkpoints.ranked(reader, "best", "val/accuracy", "min") == [1, 4, 5, 2, 3]
    assert checkpoints.ranked(reader, "4", "val/accuracy", "max") == [4]
    assert checkpoints.saved_fingerprint(reader, 3) == checkpoints.fingerprint(config)

    (next((tmp_path / "checkpoints" / "2").rglob("metrics/metrics"))).write_text('{"val/acc')
    with pytest.raises(json.JSONDecodeError):  # orbax's own manager cannot open the run
        checkpoints.manager(tmp_path, config)
    reader = checkpoints.reader(tmp_path)
    assert checkpoints.ranked(reader, "best", "val/accuracy", "max") == [5, 4, 1, 3, 2]
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("checkpoint")]
    assert [w[:38] for w in warned] == ["checkpoint 2: metrics unreadable (JSON"]


def test_a_folder_is_checked_for_writing_without_leaving_anything(tmp_path):
    assert rundir.ensure_writable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(rundir.WorkdirError, match=r"a file is in the way\); do this"):
        rundir.ensure_writable(tmp_path / "file" / "eval", "; do this")
    with pytest.raises(OSError, match="is a file"):
        rundir.prepare_workdir(tmp_path / "file")


def test_the_lock_names_its_holder_and_goes_with_it(tmp_path):
    with rundir.workdir_lock(tmp_path / "run") as path:
        assert path == tmp_path / "run" / rundir.LOCK_FILE
        with pytest.raises(rundir.WorkdirBusyError, match=f"pid {os.getpid()} on host"):
            with rundir.workdir_lock(tmp_path / "run"):
                pass
    assert not path.exists()
    with rundir.workdir_lock(tmp_path / "run"):  # again, once released
        pass
