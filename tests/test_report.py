"""bregflax.evaluation.report: markdown tables in the paper's layout."""

import numpy as np

from bregflax.evaluation import metrics, report


def _table_rows(text: str) -> list[list[str]]:
    """The cells of each line of a markdown table, header and alignment row included."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()]


def _case(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(4), [30, 5, 20, 12]))
    preds = np.where(rng.random(labels.size) < 0.6, labels, rng.integers(0, 4, labels.size))
    probs = rng.dirichlet(np.ones(4), labels.size)
    return labels, preds, probs


def test_categorical_table_layout():
    labels, preds, probs = _case()
    orig = metrics.categorical_metrics(labels, preds, 4, probs=probs)
    norm = metrics.skew_normalized(labels, preds, 4, probs=probs, repeats=20)
    text = report.categorical_table(orig, norm, paper={"accuracy": 0.7263, "f1": "0.72"})
    rows = _table_rows(text)
    assert rows[0] == ["Metric", "Orig", "Norm", "Paper (Orig)"]
    assert rows[1] == [":---", "---:", "---:", "---:"]
    labels_shown = [r[0] for r in rows[2:]]
    assert labels_shown == [
        "Accuracy",
        "F1-score",
        "Kappa",
        "Alpha",
        "MCC",
        "PPV",
        "AUC-ROC",
        "AUC-PR",
    ]
    acc = rows[2]
    assert acc[1] == f"{orig['accuracy']:.3f}"
    mean, std = norm["accuracy"]
    assert acc[2] == f"{mean:.3f} ± {std:.3f}"
    assert acc[3] == "0.726"
    assert rows[3][3] == "0.72" and rows[4][3] == "–"
    assert all(len(r) == 4 for r in rows)


def test_categorical_table_without_probs_or_norm():
    labels, preds, _ = _case()
    rows = _table_rows(report.categorical_table(metrics.categorical_metrics(labels, preds, 4)))
    assert rows[0] == ["Metric", "Orig"]
    assert [r[0] for r in rows[2:]] == ["Accuracy", "F1-score", "Kappa", "Alpha", "MCC", "PPV"]


def test_norm_column_survives_a_json_round_trip():
    # skew_normalized's (mean, std) pairs come back from JSON as lists.
    rows = _table_rows(report.categorical_table({"accuracy": 0.5}, {"accuracy": [0.51, 0.02]}))
    assert rows[2] == ["Accuracy", "0.500", "0.510 ± 0.020"]


def test_dimensional_table_layout():
    rng = np.random.default_rng(1)
    true = rng.uniform(-1, 1, (50, 2))
    true[:4, 1] = np.nan
    pred = np.clip(true + rng.normal(0, 0.3, true.shape), -1, 1)
    pred[np.isnan(pred)] = 0.0
    scores = metrics.dimensional_metrics(true, pred)
    paper = {"valence/rmse": 0.38, "arousal/ccc": 0.41}
    rows = _table_rows(report.dimensional_table(scores, paper=paper))
    assert rows[0] == ["Metric", "Valence", "Arousal", "Valence (paper)", "Arousal (paper)"]
    assert [r[0] for r in rows[2:]] == ["RMSE", "CC", "CCC", "SAGR", "N"]
    assert rows[2][1] == f"{scores['valence/rmse']:.3f}" and rows[2][3] == "0.380"
    assert rows[4][4] == "0.410" and rows[4][3] == "–"
    assert rows[6][1:3] == ["50", "46"]


def test_dimensional_table_one_dimension():
    scores = metrics.dimensional_metrics([0.1, -0.3, 0.5], [0.2, -0.1, 0.4])
    rows = _table_rows(report.dimensional_table(scores))
    assert rows[0] == ["Metric", "Valence"]


def test_per_class_table(tmp_path):
    labels, preds, _ = _case()
    rows = metrics.classification_report(labels, preds, 4)
    names = ["angry", "disgust", "fear", "happy"]
    text = report.per_class_table(rows, names)
    cells = _table_rows(text)
    assert cells[0] == ["Class", "Precision", "Recall", "F1", "Support"]
    assert [c[0] for c in cells[2:]] == names + ["macro avg"]
    assert [c[4] for c in cells[2:]] == ["30", "5", "20", "12", "67"]
    assert cells[2][3] == f"{rows[0]['f1']:.3f}"
    path = tmp_path / "per_class.md"
    path.write_text(text + "\n")
    assert path.stat().st_size > 100


def test_read_markdown_tables_inverts_markdown_table():
    first = report.markdown_table(["Run", "a", "c"], [["x", "1", "2"], ["y", "–", "3"]])
    second = report.markdown_table(["Metric", "v"], [["F1", "0.5"]])
    text = f"intro\n\n{first}\n\n## Section two\n\n{second}\n"
    tables = report.read_markdown_tables(text)
    assert tables[""] == [{"Run": "x", "a": "1", "c": "2"}, {"Run": "y", "a": "–", "c": "3"}]
    assert tables["Section two"] == [{"Metric": "F1", "v": "0.5"}]


def test_markdown_tables_reads_back_what_markdown_table_wrote():
    first = report.markdown_table(["a", "b"], [["1", "x y"], ["2", "–"]])
    second = report.markdown_table(["a", "c"], [["3", "-0.5"]])
    text = f"# T\n\n{first}\n\nprose | not a table\n\n{second}\n"
    assert report.markdown_tables(text) == [
        (["a", "b"], [["1", "x y"], ["2", "–"]]),
        (["a", "c"], [["3", "-0.5"]]),
    ]
