"""What the commands tell a person: the estimate, the accelerator note, the closing summaries."""

import json

import pytest

from bregflax import configs, summary


def test_duration():
    assert [summary.duration(s) for s in (0.4, 42, 200, 3900, 86400 + 61)] == [
        "0 s", "42 s", "3 min 20 s", "1 h 05 min", "24 h 01 min"]  # fmt: skip


def test_estimate_is_rate_times_steps_left():
    line = summary.estimate(2.0, 1800, 5)
    assert line.startswith("estimated training time: 1 h 00 min for 1,800 more steps")
    assert "2 s/step, measured over 5 steps after compilation" in line


@pytest.mark.parametrize(
    "name, backend, seconds, points_to",
    [
        ("fer2013", "cpu", None, "--config=fer2013_small"),  # BReGNet39: said at once
        ("fer2013", "gpu", None, None),  # sized for it
        ("fer2013_small", "cpu", 1800.0, None),  # half an hour on a CPU: fine
        ("fer2013_small", "cpu", 3 * 3600.0, "--config=fer2013_small"),  # too long anyway
        ("affectnet", "cpu", None, "--config.model.name=BReGNetSmall"),
        ("demo", "cpu", 100.0, None),
    ],
)
def test_sizing_note(name, backend, seconds, points_to):
    note = summary.sizing_note(configs.get(name), backend, seconds)
    if points_to is None:
        assert note is None
    else:
        assert "sized for an accelerator" in note and points_to in note


def _metrics(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9, "val/acc')


def test_best_score_reads_the_best_logged_value(tmp_path):
    rows = [
        {"step": 10, "epoch": 1.0, "val/accuracy": 0.5, "val/loss": 1.2},
        {"step": 20, "epoch": 2.0, "val/accuracy": 0.7, "val/loss": 1.1},
        {"step": 25, "epoch": 2.5, "train/loss": 0.3},
        {"step": 30, "epoch": 3.0, "val/accuracy": 0.6, "val/loss": float("nan")},
    ]
    _metrics(tmp_path / "metrics.jsonl", rows)  # and a row cut short by a crash
    assert summary.best_score(tmp_path / "metrics.jsonl", "val/accuracy") == (0.7, 20, 2.0)
    assert summary.best_score(tmp_path / "metrics.jsonl", "val/loss", "min") == (1.1, 20, 2.0)
    assert summary.best_score(tmp_path / "nope.jsonl", "val/loss") is None


def test_train_summary_names_the_best_the_outputs_and_the_next_command(tmp_path):
    config = configs.get("demo")
    _metrics(tmp_path / "metrics.jsonl", [{"step": 94, "epoch": 1.0, "val/accuracy": 0.5625}])
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    lines = summary.train_summary(tmp_path, config, 564, 111.2).splitlines()
    assert lines == [
        "done: trained BReGNetTiny on synthetic for 6 epoch(s), 564 steps, in 1 min 51 s "
        "(this call)",
        f"best val/accuracy: 0.5625 at epoch 1 (step 94), checkpoint {tmp_path}/checkpoints/94",
        f"outputs in {tmp_path}: config.json, metrics.jsonl, checkpoints/",
        f"next: bregflax evaluate --workdir={tmp_path}",
    ]


def test_evaluate_export_and_reproduce_summaries(tmp_path):
    results = {"split": "val", "step": 12, "checkpoint": "best", "num_examples": 3589,
               "categorical": {"accuracy": 0.684, "f1": 0.654},
               "dimensional": {"valence/rmse": 0.3}, "files": ["a", "b"]}  # fmt: skip
    text = summary.evaluate_summary(results, "runs/x", "runs/x/eval")
    assert "at checkpoint step 12 (best) on val, 3,589 examples" in text
    assert "scores: accuracy 0.6840, macro F1 0.6540, valence RMSE 0.3000" in text
    assert "reports in runs/x/eval/ (2 files)" in text
    assert text.endswith("next: bregflax predict --workdir=runs/x photo.jpg")
    text = summary.export_summary("m.bin", 2_700_000, "model fer2013", ["cpu", "cuda"])
    assert "exported model fer2013 for cpu, cuda" in text and "wrote m.bin (2.70 MB)" in text
    assert "ExportedModel.load('m.bin')" in text
    (tmp_path / "cpu" / "a").mkdir(parents=True)
    (tmp_path / "cpu" / "a" / "result.json").write_text("{}")
    text = summary.reproduce_summary(tmp_path / "t.md", "2", "cpu", tmp_path, ["a", "b"])
    assert "1 of 2 runs finished" in text and "--table=2 --scale=cpu" in text
    text = summary.reproduce_summary(tmp_path / "t.md", "2", "cpu", tmp_path, ["a"])
    assert text.endswith(f"next: read {tmp_path / 't.md'}")
