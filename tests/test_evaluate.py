"""The evaluate CLI end to end on small trained workdirs."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, load_config, tiny

from bregflax import evaluate, metrics, train

DEMO = load_config("configs/demo.py")


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    train.train_and_evaluate(tiny(DEMO, num_epochs=2), workdir)
    return workdir


def _run(*args):
    cmd = [sys.executable, "-m", "bregflax.evaluate", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_writes_every_file(demo_workdir):
    result = _run(f"--workdir={demo_workdir}", "--split=val", "--checkpoint=best", "--repeats=50")
    assert result.returncode == 0, result.stderr[-3000:]
    out = demo_workdir / "eval"
    expected = [
        "val.json", "val_table.md", "val_per_class.md", "val_confusion.png",
        "val_confusion_normalized.png", "val_va_scatter.png", "val_va_error_hist.png",
        "loss_curves.png", "val_predictions.csv",
    ]  # fmt: skip
    for name in expected:
        path = out / name
        assert path.exists() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "val.json").read_text())
    assert results["num_examples"] == 40
    for key in ("accuracy", "f1", "kappa", "alpha", "mcc", "ppv"):
        assert key in results["categorical"] and key in results["skew_normalized"]
    assert "valence/ccc" in results["dimensional"]
    table = (out / "val_table.md").read_text()
    assert "| Accuracy |" in table and "Orig" in table and "Norm" in table and "| CCC |" in table
    rows = (out / "val_predictions.csv").read_text().splitlines()
    assert len(rows) == 41 and rows[0].startswith("source_id,label,pred,pred_name")


def test_predictions_agree_with_the_written_metrics(demo_workdir):
    config, state, _ = train.load_trained(demo_workdir, "latest")
    from bregflax import data

    split = data.load(config.data.source, "val", config.data)
    predictions = evaluate.predict(config, state, split.source, batch_size=16)
    assert len(predictions["probs"]) == 40
    np.testing.assert_allclose(predictions["probs"].sum(-1), 1.0, rtol=1e-5)
    acc = metrics.categorical_metrics(predictions["label"], predictions["probs"].argmax(-1), 7)[
        "accuracy"
    ]
    manual = float(np.mean(predictions["label"] == predictions["probs"].argmax(-1)))
    assert acc == pytest.approx(manual)


def test_checkpoint_choice_and_errors(demo_workdir, tmp_path):
    steps = sorted(
        int(p.name) for p in (demo_workdir / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert (
        _run(f"--workdir={demo_workdir}", f"--checkpoint={steps[0]}", "--repeats=5").returncode == 0
    )
    bad = _run(f"--workdir={demo_workdir}", "--checkpoint=99999")
    assert bad.returncode == 2 and "saved steps" in bad.stderr
    empty = _run(f"--workdir={tmp_path}")
    assert empty.returncode == 2 and "config.json" in empty.stderr


def test_categorical_only_run_has_no_va_files(tmp_path):
    train.train_and_evaluate(tiny(DEMO, num_epochs=1, **{"model.head": "classes"}), tmp_path)
    results = evaluate.evaluate_workdir(tmp_path, repeats=10)
    assert "dimensional" not in results and "categorical" in results
    assert not (tmp_path / "eval" / "val_va_scatter.png").exists()
