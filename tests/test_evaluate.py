"""Evaluation of a trained run: the files it writes, its predictions, checkpoint choice."""

import json

import numpy as np
import pytest

from bregflax import data
from bregflax.evaluation import evaluate, metrics
from bregflax.training import checkpoints, train

VA_FILES = ("val_va_scatter.png", "val_va_error_hist.png")


def test_cli_writes_every_file(trained_run, capsys):
    evaluate.main([f"--workdir={trained_run}", "--split=val", "--checkpoint=best", "--repeats=50"])
    out = trained_run / "eval"
    expected = [
        "val.json", "val_table.md", "val_per_class.md", "val_confusion.png",
        "val_confusion_normalized.png", *VA_FILES, "loss_curves.png", "val_predictions.csv",
    ]  # fmt: skip
    for name in expected:
        path = out / name
        assert path.exists() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "val.json").read_text())
    assert results["num_examples"] == 40 and results["checkpoint"] == "best"
    for key in ("accuracy", "f1", "kappa", "alpha", "mcc", "ppv"):
        assert key in results["categorical"] and key in results["skew_normalized"]
    assert "valence/ccc" in results["dimensional"]
    table = (out / "val_table.md").read_text()
    assert "| Accuracy |" in table and "Orig" in table and "Norm" in table and "| CCC |" in table
    assert capsys.readouterr().out.startswith(table)  # the command prints the table
    rows = (out / "val_predictions.csv").read_text().splitlines()
    assert len(rows) == 41 and rows[0].startswith("source_id,label,pred,pred_name")


def test_predictions_agree_with_the_trainers_validation(trained_run, read_metric):
    """predict_split in batches of 16 gives the accuracy and loss the trainer logged at the
    last step (batches of 32), and the scores evaluate computes from the same predictions."""
    config, variables, step = checkpoints.load_variables(trained_run, "latest")
    split = data.load(config.data.source, "val", config.data)
    predictions = evaluate.predict_split(config, variables, split.source, batch_size=16)
    assert len(predictions["probs"]) == len(predictions["va"]) == 40
    np.testing.assert_allclose(predictions["probs"].sum(-1), 1.0, rtol=1e-5)
    labels, predicted = predictions["label"], predictions["probs"].argmax(-1)
    accuracy = float(np.mean(labels == predicted))
    assert accuracy == pytest.approx(read_metric(trained_run, "val/accuracy")[-1])
    true = np.stack([predictions["valence"], predictions["arousal"]], -1)
    rmse = float(np.sqrt(np.mean((predictions["va"] - true) ** 2)))
    assert rmse == pytest.approx(read_metric(trained_run, "val/va_rmse")[-1], rel=1e-4)
    scores = evaluate.score(predictions, split.class_names, repeats=5)
    assert scores["categorical"]["accuracy"] == pytest.approx(accuracy)
    expected = metrics.categorical_metrics(labels, predicted, 7)["accuracy"]
    assert scores["categorical"]["accuracy"] == pytest.approx(expected)


def test_checkpoint_choice_and_errors(trained_run, tmp_path, capsys):
    results = evaluate.evaluate_workdir(trained_run, checkpoint="3", repeats=5)
    assert results["step"] == 3
    assert json.loads((trained_run / "eval" / "val.json").read_text())["step"] == 3
    with pytest.raises(SystemExit) as e:
        evaluate.main([f"--workdir={trained_run}", "--checkpoint=99999"])
    assert e.value.code == 2 and "saved steps: [3, 6, 9, 12]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        evaluate.main([f"--workdir={tmp_path}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "config.json" in err and err.startswith("error: ")
    with pytest.raises(SystemExit) as e:
        evaluate.main([])
    assert e.value.code == 2 and "--workdir" in capsys.readouterr().err


def _categorical_reports(workdir):
    config, variables, step = checkpoints.load_variables(workdir, "latest")
    split = data.load(config.data.source, "val", config.data)
    predictions = evaluate.predict_split(config, variables, split.source, batch_size=32)
    del predictions["va"]
    results = {"split": "val", "step": step, **evaluate.score(predictions, split.class_names, 5)}
    return results, predictions, split.class_names


def test_categorical_predictions_write_no_va_files(trained_run, tmp_path):
    results, predictions, class_names = _categorical_reports(trained_run)
    assert "dimensional" not in results and "categorical" in results
    written, renamed = evaluate.write_reports(tmp_path, "val", results, predictions, class_names)
    assert renamed == []
    names = {p.name for p in written}
    assert "val_confusion.png" in names and not names & set(VA_FILES)
    assert not any((tmp_path / "eval" / name).exists() for name in VA_FILES)
    header = (tmp_path / "eval" / "val_predictions.csv").read_text().splitlines()[0]
    assert (
        "valence" not in header
        and "| CCC |" not in (tmp_path / "eval" / "val_table.md").read_text()
    )


def test_reports_replace_only_earlier_reports_and_never_a_users_file(trained_run, tmp_path):
    """A folder of the user's with a ``val.json`` of theirs, a link named ``val_table.md`` to
    a file elsewhere and a folder named ``val_predictions.csv``: the reports land beside them
    under new names, listed; evaluating again replaces those reports (no ``-3``), but not
    one the user edited since."""
    reports = _categorical_reports(trained_run)
    out, elsewhere = tmp_path / "mine", tmp_path / "elsewhere.md"
    out.mkdir()
    (out / "val.json").write_text("my notes")
    elsewhere.write_text("keep me")
    (out / "val_table.md").symlink_to(elsewhere)
    (out / "val_predictions.csv").mkdir()
    written, renamed = evaluate.write_reports(trained_run, "val", *reports, out=out)
    assert {p.name for p in renamed} == {"val-2.json", "val_table-2.md", "val_predictions-2.csv"}
    assert set(renamed) <= set(written) and all(p.parent == out for p in written)
    assert (out / "val.json").read_text() == "my notes" and elsewhere.read_text() == "keep me"
    assert (out / "val_table.md").is_symlink() and (out / "val_predictions.csv").is_dir()
    assert json.loads((out / "val-2.json").read_text())["step"] == reports[0]["step"]
    assert not [p for p in out.iterdir() if p.name.startswith(".reports-")]  # staging gone

    again, renamed_again = evaluate.write_reports(trained_run, "val", *reports, out=out)
    assert again == written and renamed_again == renamed  # its own reports replaced
    (out / "val_per_class.md").write_text("edited by hand")
    third, _ = evaluate.write_reports(trained_run, "val", *reports, out=out)
    assert (out / "val_per_class.md").read_text() == "edited by hand"
    assert out / "val_per_class-2.md" in third


@pytest.mark.slow
def test_categorical_only_run_has_no_va_files(shrink, demo_config, tmp_path):
    config = shrink(demo_config, num_epochs=1, **{"model.head": "classes"})
    train.train_and_evaluate(config, tmp_path)
    results = evaluate.evaluate_workdir(tmp_path, repeats=10)
    assert "dimensional" not in results and "categorical" in results
    assert not (tmp_path / "eval" / "val_va_scatter.png").exists()
