"""bregflax.evaluation.plots: each function writes a readable PNG."""

import json

import numpy as np
import pytest
from PIL import Image

from bregflax.evaluation import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def assert_png(path, min_side=300, max_side=3000):
    assert path.exists() and path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert min_side <= min(image.size) and max(image.size) <= max_side, image.size
    assert path.stat().st_size > 5000


@pytest.mark.parametrize("normalized", [False, True])
def test_confusion_matrix_png(tmp_path, normalized):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 50, (7, 7)) + np.diag(rng.integers(100, 400, 7))
    cm[1] = 0  # a class with no samples: its normalized row is 0, not NaN
    out = plots.confusion_matrix_png(cm, NAMES, tmp_path / "sub" / "cm.png", normalized)
    assert out == tmp_path / "sub" / "cm.png"
    assert_png(out)


def test_confusion_matrix_png_rejects_mismatched_names(tmp_path):
    with pytest.raises(ValueError, match="one name per class"):
        plots.confusion_matrix_png(np.eye(3), NAMES, tmp_path / "cm.png")


def test_row_normalized():
    got = plots.row_normalized([[1, 3], [0, 0]])
    np.testing.assert_array_equal(got, [[0.25, 0.75], [0.0, 0.0]])


def _va(n=400, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.uniform(-1, 1, (n, 2))
    pred = np.clip(0.7 * true + rng.normal(0, 0.25, true.shape), -1, 1)
    true[:10, 1] = np.nan  # absent arousal
    return true, pred


def test_va_scatter_and_histogram(tmp_path):
    true, pred = _va()
    assert_png(plots.va_scatter_png(true, pred, tmp_path / "scatter.png"))
    assert_png(plots.error_histogram_png(true, pred, tmp_path / "hist.png"))
    assert_png(plots.va_scatter_png(true[:, 0], pred[:, 0], tmp_path / "one.png"), min_side=250)


def _write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_log(path, steps_per_epoch=10, epochs=6, scale=1.0, resumed=False):
    lines = []
    for step in range(1, steps_per_epoch * epochs + 1):
        epoch = step / steps_per_epoch
        lines.append(json.dumps({"step": step, "epoch": epoch, "train/loss": scale / epoch}))
        if step % steps_per_epoch == 0:
            record = {"step": step, "epoch": epoch, "val/loss": 1.2 * scale / epoch}
            lines.append(json.dumps(record))
    if resumed:  # a resumed run logs steps 21-30 a second time
        lines += lines[20:30]
    lines.insert(3, '{"step": 4, "epoch": 0.4, "train/accuracy": 0.5}')  # no loss key
    lines.insert(5, '{"step": 999, "train/loss": 0.9}')  # no epoch
    lines.append('{"step": 61, "epoch": 6.1, "train/lo')  # cut short by a kill
    return _write_jsonl(path, lines)


def test_metric_series_tolerates_missing_keys_and_repeats(tmp_path):
    log = _run_log(tmp_path / "metrics.jsonl", resumed=True)
    records = plots.read_metrics_jsonl(log)
    epochs, values = plots.metric_series(records, "train/loss")
    assert epochs.size == 60  # repeated steps once; step 999 (no epoch) left out
    assert np.all(np.diff(epochs) > 0)
    np.testing.assert_allclose(values, 1.0 / epochs)
    epochs, _ = plots.metric_series(records, "val/loss")
    np.testing.assert_array_equal(epochs, np.arange(1, 7))
    assert plots.metric_series(records, "nope")[0].size == 0


def test_loss_curves_png(tmp_path):
    a = _run_log(tmp_path / "a.jsonl", scale=1.0)
    b = _run_log(tmp_path / "b.jsonl", scale=0.8, resumed=True)
    out = plots.loss_curves_png({"ResNet-110": a, "BReG-Net": b}, tmp_path / "loss.png")
    assert_png(out)
    assert_png(plots.loss_curves_png(a, tmp_path / "single.png"))


def test_loss_curves_png_with_no_loss_records(tmp_path):
    log = _write_jsonl(tmp_path / "metrics.jsonl", ['{"step": 1, "epoch": 0.1}', ""])
    assert_png(plots.loss_curves_png({"empty": log}, tmp_path / "loss.png"))


def test_mean_curve_over_seeds(tmp_path):
    a = _run_log(tmp_path / "a.jsonl", scale=1.0)
    b = _run_log(tmp_path / "b.jsonl", scale=0.5, resumed=True)
    epochs, mean, sd = plots.mean_curve([a, b], "val/loss")
    np.testing.assert_array_equal(epochs, np.arange(1, 7))
    np.testing.assert_allclose(mean, 1.2 * 0.75 / epochs)
    np.testing.assert_allclose(sd, np.std([1.2 / epochs, 0.6 / epochs], axis=0, ddof=1))
    epochs, mean, sd = plots.mean_curve([a], "val/loss")
    np.testing.assert_allclose(mean, 1.2 / epochs)
    assert not sd.any()  # one run: no spread


def test_curve_panels_png(tmp_path):
    a = _run_log(tmp_path / "a.jsonl", scale=1.0)
    b = _run_log(tmp_path / "b.jsonl", scale=0.8)
    panels = {"ResNet": {"synthetic": [a, b]}, "BReG-Net": {"synthetic": [b]}}
    keys = {"training": "train/loss", "validation": "val/loss"}
    out = plots.curve_panels_png(panels, tmp_path / "fig6.png", keys, "loss", "Fig. 6")
    assert_png(out, min_side=600)
    keys["missing"] = "nope"  # a row with no records says so instead of failing
    assert_png(plots.curve_panels_png(panels, tmp_path / "fig6b.png", keys, "loss", "Fig. 6"))


def test_arm_curves_png_puts_one_panel_per_metric_in_a_row(tmp_path):
    a = _run_log(tmp_path / "a.jsonl", scale=1.0)
    b = _run_log(tmp_path / "b.jsonl", scale=0.8)
    keys = {"training loss": "train/loss", "validation loss": "val/loss", "absent": "nope"}
    out = plots.arm_curves_png({"A: h3": [a, b], "B: identity": [a], "C": []}, tmp_path / "c.png",
                               keys, "claim")  # fmt: skip
    width, height = Image.open(out).size
    assert width > 2.5 * height  # three panels side by side
