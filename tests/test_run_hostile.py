"""A run's work against a hostile but fair user (issue 18, cases 6-9, 11, 12).

Damaged checkpoints, two runs on one workdir, a config.json edited after training, numbers
no run can use, a workdir that is a file or read-only, and evaluate's ``--out``. Each test
copies the session's ``trained_run`` before it damages anything.
"""

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import jax
import numpy as np
import pytest

from bregflax import main, rundir
from bregflax.evaluation import evaluate
from bregflax.inference import predict
from bregflax.inference.predictor import Predictor
from bregflax.training import checkpoints, train
from bregflax.training.parallel import Parallel


def _copy(run: Path, to: Path) -> Path:
    return Path(shutil.copytree(run, to, ignore=shutil.ignore_patterns("eval", "run.lock")))


def _files(folder: Path) -> dict[str, int]:
    """Every file under ``folder``: relative path -> size."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def _largest_file(step_dir: Path) -> Path:
    """The largest file of a checkpoint: array data, whatever orbax names it."""
    return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _damage(workdir: Path, step: int, how: str) -> Path:
    target = _largest_file(workdir / "checkpoints" / str(step))
    if how == "truncate":
        os.truncate(target, target.stat().st_size // 2)
    else:
        target.unlink()
    return target


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` and everything in it read-only, also for root (``chattr +i``) if it can
    be; skips the test where neither makes it so."""
    subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
    immutable = False
    probe = folder / ".probe"
    try:
        if os.access(folder, os.W_OK) and shutil.which("chattr"):  # root: chmod does not stop it
            chattr = subprocess.run(["chattr", "-R", "+i", str(folder)], capture_output=True)
            immutable = chattr.returncode == 0
        try:
            probe.write_text("")
        except OSError:
            yield folder
            return
        probe.unlink()
        pytest.skip("cannot make a folder read-only here (root without chattr)")
    finally:
        if immutable:
            subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)
        subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)


def _evaluate(*args, capsys) -> tuple[int, str]:
    """``bregflax evaluate ARGS``: (exit status, stderr)."""
    try:
        evaluate.main([*map(str, args), "--repeats=5"])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _train_cli(*args, capsys, tiny_args) -> tuple[int, str]:
    """``python -m bregflax.main`` on the tiny demo config, in this process."""
    try:
        main.main(["--config=configs/demo.py", *tiny_args, *map(str, args)])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- case 6


def _damage_arrays(workdir: Path, step: int, how: str = "truncate") -> None:
    """Every array file of checkpoint ``step`` cut in half (or deleted): the model's variables
    too (evaluation restores only those, so damage to the optimizer's alone would not show)."""
    for path in (workdir / "checkpoints" / str(step) / "default").glob("ocdbt.process_*/d/*"):
        if path.is_file():
            if how == "truncate":
                os.truncate(path, path.stat().st_size // 2)
            else:
                path.unlink()


def test_evaluate_skips_a_damaged_checkpoint_and_leaves_it(trained_run, tmp_path, capsys, caplog):
    run = _copy(trained_run, tmp_path / "run")
    _damage_arrays(run, 12)
    before = _files(run / "checkpoints")

    code, err = _evaluate(f"--workdir={run}", "--checkpoint=latest", capsys=capsys)
    assert code == 0, err
    assert json.loads((run / "eval" / "val.json").read_text())["step"] == 9
    skipped = [r.getMessage() for r in caplog.records if "cannot be restored" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].startswith("checkpoint 12 cannot be restored")
    assert "\n" not in skipped[0] and len(skipped[0]) < 300
    assert _files(run / "checkpoints") == before  # the damaged checkpoint is left as it was

    code, err = _evaluate(f"--workdir={run}", "--checkpoint=12", capsys=capsys)
    line = _one_line(err)
    assert code == 2 and line.startswith("error: checkpoint 12 under") and "left in place" in line


def test_the_command_line_says_it_in_one_line(trained_run, tmp_path):
    """A fresh process: what a user sees, without pytest's capture of the echoes of the
    failed reads (hundreds of lines of asyncio and tensorstore errors before)."""
    run = _copy(trained_run, tmp_path / "run")
    _damage_arrays(run, 12, "delete")
    cmd = [sys.executable, "-m", "bregflax.evaluation.evaluate", f"--workdir={run}", "--repeats=5"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "eval" / "val.json").read_text())["step"] != 12
    progress = "predict:"  # tqdm's bar, redrawn on one line
    lines = [line for line in out.stderr.splitlines() if line.strip() and progress not in line]
    assert len(lines) == 1 and "checkpoint 12 cannot be restored, skipped" in lines[0], lines


def test_resume_skips_damaged_checkpoints_and_moves_them_aside(
    trained_run, trained_run_config, final_params, read_metric, tmp_path, caplog
):
    """A run killed while saving: its lock is left (a dead pid), step 12 lost a file,
    step 6's metrics and the last row of metrics.jsonl are cut short. The rerun takes the
    lock over, resumes from 9, moves 6 and 12 to damaged_checkpoints/ as they were, and
    ends where the unbroken run ended, with each step logged once."""
    run = _copy(trained_run, tmp_path / "run")
    (run / rundir.LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": "x"}))
    deleted = _damage(run, 12, "delete")
    metrics = next((run / "checkpoints" / "6").rglob("metrics/metrics"))
    os.truncate(metrics, 5)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "train/lo')
    damaged = {s: _files(run / "checkpoints" / str(s)) for s in (6, 12)}

    train.train_and_evaluate(trained_run_config, run)

    for step, files in damaged.items():
        assert _files(run / checkpoints.DAMAGED_DIR / str(step)) == files
    assert not (
        run / checkpoints.DAMAGED_DIR / "12" / deleted.relative_to(run / "checkpoints" / "12")
    ).exists()
    assert 12 in checkpoints.reader(run).all_steps()
    jax.tree.map(
        np.testing.assert_array_equal,
        final_params(trained_run, trained_run_config),
        final_params(run, trained_run_config),
    )
    # steps 10-12 are logged once: the rows of the lost steps are replaced, not repeated
    np.testing.assert_array_equal(read_metric(run), read_metric(trained_run))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("checkpoint 12 is damaged") and "moved to" in w for w in warnings)
    assert any(w.startswith("checkpoint 6 is damaged (metrics unreadable") for w in warnings)
    assert len(warnings) == 3 and warnings[-1] == "resuming from checkpoint 9", warnings
    assert not (run / rundir.LOCK_FILE).exists()


# --------------------------------------------------------------------------- case 7


def test_a_busy_workdir_is_refused_naming_the_run_that_holds_it(tmp_path, capsys, tiny_args):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from bregflax import rundir\n"
            "with rundir.workdir_lock(sys.argv[1]):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(120)\n",
            str(workdir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = _train_cli(f"--workdir={workdir}", capsys=capsys, tiny_args=tiny_args)
        line = _one_line(err)
        assert code == 2 and "in use by another training run" in line
        assert f"pid {holder.pid} on host {socket.gethostname()}" in line
        assert sorted(p.name for p in workdir.iterdir()) == [rundir.LOCK_FILE]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # killed: its lock file stays, stale, and is taken over
    assert str(holder.pid) in (workdir / rundir.LOCK_FILE).read_text()
    with rundir.workdir_lock(workdir) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


@pytest.mark.slow
def test_two_runs_at_once_one_trains_the_other_exits_2(run_main, read_metric, tmp_path):
    first = run_main(tmp_path, wait=False)
    lock = tmp_path / rundir.LOCK_FILE
    deadline = time.time() + 120
    while not lock.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = run_main(tmp_path, check=False)
    output = first.communicate(timeout=300)[0].decode()
    assert first.returncode == 0, output[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"pid {first.pid} on host" in second.stderr and "Traceback" not in second.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").open()]
    assert len(read_metric(tmp_path)) == 12 and len(steps) == len(set(steps)) + 2  # + 2 val rows


# --------------------------------------------------------------------------- case 8


@pytest.mark.parametrize(
    "edits, changes",
    [
        (
            {"model.shortcut": "identity", "data.image_size": 64},
            ["model.shortcut: 'h3' -> 'identity'", "data.image_size: 48 -> 64"],
        ),
        ({"model.name": "BReGNetSmall"}, ["model.name: 'BReGNetTiny' -> 'BReGNetSmall'"]),
        ({"model.name": "NoSuchNet"}, ["model.name: 'BReGNetTiny' -> 'NoSuchNet'"]),
    ],
)
def test_an_edited_config_json_is_refused_naming_the_fields(
    trained_run, tmp_path, capsys, edits, changes
):
    run = _copy(trained_run, tmp_path / "run")
    values = json.loads((run / "config.json").read_text())
    for dotted, value in edits.items():
        section, key = dotted.split(".")
        values[section][key] = value
    (run / "config.json").write_text(json.dumps(values))

    code, err = _evaluate(f"--workdir={run}", capsys=capsys)
    line = _one_line(err)
    assert code == 2 and "was trained with another model or input" in line
    assert all(change in line for change in changes), line
    assert "config.json edited?" in line and not (run / "eval").exists()
    with pytest.raises(checkpoints.ConfigMismatchError, match=changes[0].replace(".", r"\.")):
        Predictor.from_workdir(run, "latest")
    face = tmp_path / "face.png"
    assert cv2.imwrite(str(face), np.full((48, 48), 128, np.uint8))
    code = predict.main(["--workdir", str(run), "--no-detect", "--no-progress", str(face)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "error:" in lines[0], lines
    assert all(change in lines[0] for change in changes), lines[0]


def test_resuming_under_another_model_is_refused(trained_run, trained_run_config, tmp_path):
    run = _copy(trained_run, tmp_path / "run")
    before = _files(run)
    config = trained_run_config
    config.model.shortcut, config.model.widths = "h1", (16, 32, 32)
    with pytest.raises(checkpoints.ConfigMismatchError) as e:
        train.train_and_evaluate(config, run)
    assert "model.widths: [16, 32, 64] -> [16, 32, 32]; model.shortcut: 'h3' -> 'h1'" in str(
        e.value
    )
    assert _files(run) == before


# --------------------------------------------------------------------------- cases 9, 11


@pytest.mark.parametrize(
    "override, message",
    [
        ("num_epochs=0", "config.num_epochs must be at least 1, got 0"),
        ("num_epochs=-1", "config.num_epochs must be at least 1, got -1"),
        ("batch_size=0", "config.batch_size must be at least 1, got 0"),
        ("eval_batch_size=-32", "config.eval_batch_size must be at least 1, got -32"),
        ("keep_checkpoints=0", "config.keep_checkpoints must be at least 1, got 0"),
        ("data.channels=2", "config.data.channels must be 1 or 3, got 2"),
        ("optim.learning_rate=-0.1", "config.optim.learning_rate must be a positive number"),
        ("model.name=BReGNet40", "unknown model 'BReGNet40'; did you mean BReGNet45"),
        ("best_metric=val/acc", "'val/acc' is not logged by a 'both' head"),
        ("batch_size=33", "batch size 33 must be divisible by the"),
        ("eval_batch_size=33", "config.eval_batch_size 33 must be divisible by the 2 devices"),
    ],
)
def test_numbers_no_run_can_use_stop_before_the_workdir_exists(
    tmp_path, capsys, tiny_args, monkeypatch, override, message
):
    if override.endswith("batch_size=33"):  # unusable on two devices
        two = SimpleNamespace(mesh=SimpleNamespace(devices=np.empty((2,), object)))
        two.check_batch_size = functools.partial(Parallel.check_batch_size, two)
        monkeypatch.setattr(Parallel, "over_all_devices", lambda: two)
    code, err = _train_cli(
        f"--workdir={tmp_path / 'run'}", f"--config.{override}", capsys=capsys, tiny_args=tiny_args
    )
    assert code == 2 and message in _one_line(err)
    assert not (tmp_path / "run").exists()


def test_a_workdir_that_is_a_file_or_read_only(tmp_path, capsys, tiny_args):
    (tmp_path / "file").write_text("mine")
    code, err = _train_cli(f"--workdir={tmp_path / 'file'}", capsys=capsys, tiny_args=tiny_args)
    assert code == 2 and "is a file" in _one_line(err)
    assert (tmp_path / "file").read_text() == "mine"
    code, err = _train_cli(
        f"--workdir={tmp_path / 'file' / 'run'}", capsys=capsys, tiny_args=tiny_args
    )
    assert code == 2 and "cannot create workdir" in _one_line(err)

    (tmp_path / "ro").mkdir()
    with _read_only(tmp_path / "ro"):
        code, err = _train_cli(f"--workdir={tmp_path / 'ro'}", capsys=capsys, tiny_args=tiny_args)
        assert code == 2 and "cannot write to workdir" in _one_line(err)
        assert list((tmp_path / "ro").iterdir()) == []


def test_verbose_shows_the_traceback(tmp_path, capsys, tiny_args):
    code, err = _train_cli(
        f"--workdir={tmp_path}", "--config.num_epoch=1", capsys=capsys, tiny_args=tiny_args
    )
    assert code == 2 and _one_line(err).endswith("did you mean num_epochs?")
    with pytest.raises(ValueError, match="did you mean num_epochs"):
        main.main(
            [
                "--config=configs/demo.py",
                f"--workdir={tmp_path}",
                "--config.num_epoch=1",
                "--verbose",
            ]
        )


def test_a_broken_config_json_is_named(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path / "run")
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[: len(text) // 2])
    code, err = _evaluate(f"--workdir={run}", capsys=capsys)
    line = _one_line(err)
    assert code == 2 and f"{run / 'config.json'} is not valid JSON" in line
    with pytest.raises(ValueError, match="is not valid JSON"):
        evaluate.main([f"--workdir={run}", "--verbose"])


# --------------------------------------------------------------------------- case 12


def test_evaluate_out_and_a_read_only_workdir(trained_run, tmp_path, capsys, monkeypatch):
    """Read-only workdir: without --out, evaluate fails before it computes anything; with
    --out it writes there and nothing in the workdir."""
    run = _copy(trained_run, tmp_path / "run")
    computed = []
    real = evaluate.predict_split
    monkeypatch.setattr(
        evaluate, "predict_split", lambda *a, **k: computed.append(1) or real(*a, **k)
    )
    before = _files(run)
    with _read_only(run):
        code, err = _evaluate(f"--workdir={run}", capsys=capsys)
        line = _one_line(err)
        assert code == 2 and f"cannot write to {run / 'eval'}" in line
        assert line.endswith("pass --out DIR to write the reports elsewhere")
        assert computed == []

        code, _ = _evaluate(f"--workdir={run}", f"--out={tmp_path / 'reports'}", capsys=capsys)
        assert code == 0 and computed == [1]
    assert _files(run) == before
    results = json.loads((tmp_path / "reports" / "val.json").read_text())
    assert results["num_examples"] == 40
    names = {p.name for p in (tmp_path / "reports").iterdir()}
    assert {"val_table.md", "val_predictions.csv", "loss_curves.png"} <= names
