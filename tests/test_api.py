"""The one-line API: ``bregflax.detect_emotions`` and ``bregflax.video_emotions``."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

import bregflax
from bregflax.data import FER2013_CLASSES, faces, synthetic
from bregflax.inference import predict
from bregflax.inference.detect import FER2013_MARGIN
from bregflax.inference.predictor import Predictor


def _scene(spots=((60, 100), (380, 160)), side=160):
    """A 640 x 480 RGB photo with the embedded synthetic faces pasted at ``spots`` (no data
    needed; OpenCV's cascade finds them, so these tests use ``detector="haar"``)."""
    images = synthetic.make_faces(4, seed=0)["image"][..., 0]
    yy, xx = np.mgrid[0:480, 0:640]
    gray = (80 + 100 * xx / 640 + 40 * yy / 480).astype(np.uint8)
    image = np.repeat(gray[..., None], 3, axis=-1)
    for face, (x, y) in zip(images[[0, 1]], spots, strict=False):
        image[y : y + side, x : x + side] = cv2.resize(face, (side, side))[..., None]
    return image


def test_import_is_cheap(repo_root):
    code = (
        "import sys, bregflax\n"
        "heavy = [m for m in ('jax', 'cv2', 'flax', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(bregflax.detect_emotions) and callable(bregflax.video_emotions)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()[-2000:]


def test_detect_emotions_on_an_array_and_a_path(tmp_path):
    image = _scene()
    found = bregflax.detect_emotions(image, detector="haar")
    keys = ["box", "label", "label_index", "probs"]
    assert len(found) == 2 and [sorted(f) for f in found] == [keys] * 2
    predictor = Predictor.from_pretrained()
    for f in found:  # each face as the Predictor classifies its (unturned) crop
        assert len(f["box"]) == 4 and all(isinstance(v, int) for v in f["box"])
        crop = faces.crop_face(image, f["box"], size=48, channels=1, margin=FER2013_MARGIN)
        want = predictor.predict_faces(crop[None])["probs"][0]
        assert list(f["probs"]) == list(FER2013_CLASSES)
        np.testing.assert_allclose(list(f["probs"].values()), want, atol=1e-5)
        assert f["label"] == FER2013_CLASSES[f["label_index"]] == FER2013_CLASSES[want.argmax()]
    xs = sorted(f["box"][0] for f in found)
    assert abs(xs[0] - 60) < 20 and abs(xs[1] - 380) < 20
    cv2.imwrite(str(tmp_path / "p.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    from_path = bregflax.detect_emotions(tmp_path / "p.png", detector="haar")
    assert [f["box"] for f in from_path] == [f["box"] for f in found]
    # The same rows as `bregflax predict` writes for that file.
    code = predict.main([str(tmp_path / "p.png"), "--format", "jsonl", "--no-progress",
                         "--detector", "haar", "--out", str(tmp_path / "p.jsonl")])  # fmt: skip
    rows = [json.loads(line) for line in open(tmp_path / "p.jsonl")]
    assert code == 0 and [{k: r[k] for k in keys} for r in rows] == from_path  # one schema
    gray = bregflax.detect_emotions(image[..., 0].astype(np.float32) / 255, detector="haar")
    assert len(gray) == 2


def test_detect_emotions_without_faces_and_bad_input(tmp_path):
    assert bregflax.detect_emotions(np.full((120, 160, 3), 128, np.uint8)) == []
    with pytest.raises(FileNotFoundError, match="nope.png"):
        bregflax.detect_emotions(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        bregflax.detect_emotions(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="shape"):
        bregflax.detect_emotions(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bregflax.detect_emotions(np.full((10, 10), 2.0))
    with pytest.raises(ValueError, match="min_face"):  # checked as `bregflax predict` does
        bregflax.detect_emotions(np.zeros((10, 10), np.uint8), min_face=float("nan"))


def test_video_emotions_streams_rows_like_the_cli(tmp_path):
    path = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for t in range(12):
        blank = t in (4, 5)  # two frames without a face: no row
        image = _scene(spots=() if blank else ((60 + 5 * t, 100),))
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    rows = bregflax.video_emotions(path, every=2, detector="haar")
    assert not isinstance(rows, list)  # an iterator: rows come as frames are read
    rows = list(rows)
    assert [r["frame"] for r in rows] == [0, 2, 6, 8, 10]
    assert [r["time_s"] for r in rows] == [0.0, 0.2, 0.6, 0.8, 1.0]
    assert all(r["face"] == 0 and abs(r["box"][0] - 60 - 5 * r["frame"]) < 20 for r in rows)
    code = predict.main([str(path), "--every", "2", "--format", "jsonl", "--no-progress",
                         "--detector", "haar", "--out", str(tmp_path / "v.jsonl")])  # fmt: skip
    cli = [json.loads(line) for line in open(tmp_path / "v.jsonl")]
    cli = [r for r in cli if r["status"] == "ok"]
    assert code == 0 and [r["frame"] for r in cli] == [r["frame"] for r in rows]
    assert [r["probs"] for r in cli] == [r["probs"] for r in rows]
    assert [{k: r[k] for k in rows[0]} for r in cli] == rows  # the same keys and values
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        list(bregflax.video_emotions(tmp_path / "nope.mp4"))
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot decode video"):
        list(bregflax.video_emotions(tmp_path / "bad.mp4"))


def test_the_public_api_is_all_that_is_visible():
    assert dir(bregflax) == sorted(bregflax.__all__)
    assert "functools" not in dir(bregflax) and "_predictor" not in dir(bregflax)
    assert bregflax.Predictor is Predictor  # imported when first asked for
    for name in bregflax.__all__:
        assert getattr(bregflax, name) is not None
        if callable(getattr(bregflax, name)):
            assert getattr(bregflax, name).__doc__  # documented
    with pytest.raises(AttributeError):
        bregflax.nope  # noqa: B018
