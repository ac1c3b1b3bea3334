"""``python -m bregflax.main``'s command line: the config, its overrides, the launch flags."""

import json
import re
import types

import pytest

import bregflax.flags
from bregflax import configs, main
from bregflax.training import train


@pytest.fixture
def captured(monkeypatch):
    """Runs ``main.main(args)`` with the trainer replaced: returns (config, workdir) it got."""
    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", lambda c, w: calls.append((c, w)))

    def run(*args):
        main.main(list(args))
        assert len(calls) == 1
        return calls.pop()

    return run


def test_overrides_in_both_spellings_are_cast_to_the_field_types(captured):
    config, workdir = captured(
        "--config=configs/demo.py",
        "--workdir=runs/x",
        "--config.num_epochs=3",
        "--config.model.shortcut",
        "h1",
        "--config.optim.learning_rate",
        "1e-3",
        "--config.progress_bar=false",
        "--config.optim.step_epochs=(2, 4)",
    )
    assert workdir == "runs/x"
    assert config.num_epochs == 3 and config.model.shortcut == "h1"
    assert config.optim.learning_rate == 0.001 and config.progress_bar is False
    assert config.optim.step_epochs == (2, 4)
    assert config.model.name == "BReGNetTiny"  # the rest is demo.py's
    with pytest.raises(AttributeError):  # locked, as absl's config flags were
        config.new_field = 1


def test_parameter_strings_pick_a_table_experiment(captured):
    config, _ = captured("--config=configs/table2.py:resnet,fer2013,test", "--workdir", "w")
    assert config.model.shortcut == "identity" and config.data.source == "synthetic"
    assert config.to_dict() == configs.get("table2", "resnet,fer2013,test").to_dict()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.num_epoch=3"], "unknown config key 'num_epoch'; did you mean num_epochs?"),
        (["--config.num_epochs=three"], "num_epochs expects a int, got 'three'"),
        (["--config.num_epochs"], "--config.num_epochs needs a value"),
        (["--config.progress_bar", "--workdir=w"], "--config.progress_bar needs a value"),
    ],
)
def test_a_bad_override_is_one_line_and_status_2(captured, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        captured("--config=configs/demo.py", "--workdir=w", *args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


@pytest.mark.parametrize(
    "spec, message",
    [
        ("configs/nope.py", "config file configs/nope.py not found"),
        ("configs/table1.py:h4", "h4"),
    ],
)
def test_a_bad_config_file_is_one_line_and_status_2(captured, capsys, spec, message):
    with pytest.raises(SystemExit) as e:
        captured(f"--config={spec}", "--workdir=w")
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_config_and_workdir_are_required(captured, capsys):
    with pytest.raises(SystemExit) as e:
        captured("--config=configs/demo.py")
    assert e.value.code == 2 and "--workdir" in capsys.readouterr().err


def test_missing_dataset_says_what_to_download(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main.main(
            [
                "--config=configs/fer2013.py",
                f"--workdir={tmp_path / 'run'}",
                f"--config.data.data_dir={tmp_path / 'data'}",
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "Put them in" in err and "Traceback" not in err


def test_multihost_flags(captured, monkeypatch):
    """--multihost (or config.multihost) initializes JAX's distributed runtime with the flags."""
    seen = []
    monkeypatch.setattr(main, "initialize_distributed", seen.append)
    captured("--config=configs/demo.py", "--workdir=w")
    captured("--config=configs/demo.py", "--workdir=w", "--config.multihost=true", "--no-multihost")
    assert seen == []
    captured(
        "--config=configs/demo.py",
        "--workdir=w",
        "--multihost",
        "--coordinator_address=127.0.0.1:1234",
        "--num_processes=2",
        "--process_id=1",
    )
    captured("--config=configs/demo.py", "--workdir=w", "--config.multihost=true")
    assert len(seen) == 2
    assert (seen[0].coordinator_address, seen[0].num_processes, seen[0].process_id) == (
        "127.0.0.1:1234",
        2,
        1,
    )
    assert seen[1].coordinator_address is None and seen[1].num_processes is None


def test_the_launch_scripts_pass_flags_main_knows(repo_root):
    """launch/local.sh, slurm.sbatch and tpu_pod.sh start ``python -m bregflax.main``."""
    known = {a for action in main.parser()._actions for a in action.option_strings}
    for script in ("local.sh", "slurm.sbatch", "tpu_pod.sh"):
        text = (repo_root / "launch" / script).read_text().replace("\\\n", " ")
        commands = [
            line.split("-m bregflax.main", 1)[1]
            for line in text.splitlines()
            if "-m bregflax.main" in line and not line.lstrip().startswith("#")
        ]
        found = re.findall(r"(--[a-z_-]+)(?:=|\s|\$|$)", " ".join(commands))
        flags = set(bregflax.flags.normalize(found))  # either spelling is the same flag
        assert "--multihost" in flags, script
        assert flags <= known, (script, flags - known)


def test_training_ends_with_a_summary(monkeypatch, capsys, tmp_path):
    """What was done, the best score and its checkpoint, the outputs, the next command."""

    def fake_training(config, workdir):
        rows = [{"step": 6, "epoch": 1.0, "val/accuracy": 0.25},
                {"step": 12, "epoch": 2.0, "val/accuracy": 0.5}]  # fmt: skip
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return types.SimpleNamespace(step=12)

    monkeypatch.setattr(train, "train_and_evaluate", fake_training)
    main.main(["--config=demo", f"--workdir={tmp_path}", "--config.num_epochs=2"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("done: trained BReGNetTiny on synthetic for 2 epoch(s), 12 steps")
    assert out[1] == (
        f"best val/accuracy: 0.5000 at epoch 2 (step 12), checkpoint {tmp_path}/checkpoints/12"
    )
    assert out[-1] == f"next: bregflax evaluate --workdir={tmp_path}"
