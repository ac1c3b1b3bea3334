"""Annotated copies: where they go (never over an input or each other) and what is drawn."""

from pathlib import Path

import cv2
import numpy as np

from bregflax.inference.annotate import Annotations
from bregflax.inference.engine import Frame


def test_annotate_draws_a_photo(tmp_path):
    frame = Frame("in/sub/c.png", np.zeros((80, 80, 3), np.uint8), rel="sub/c.png")
    row = {"status": "ok", "box": [10, 20, 30, 30], "label": "Happy", "probs": {"Happy": 0.9}}
    out = Annotations(tmp_path).write(frame, [row])
    assert out == tmp_path / "sub" / "c.png"
    drawn = cv2.imread(str(out))
    assert drawn[20:50, 10, 1].mean() > 200 and drawn[70:, 60:].max() < 30  # box edge, not beyond


def test_a_video_is_annotated_as_a_video_of_the_same_size_and_rate(tmp_path):
    annotations = Annotations(tmp_path)
    row = {"status": "ok", "box": [10, 20, 30, 30], "label": "Happy", "probs": {"Happy": 0.9}}
    paths = set()
    for i in range(6):
        image = np.full((48, 80, 3), 20 * i, np.uint8)
        frame = Frame("in/sub/clip.avi", image, i, i / 12.5, rel="sub/c.avi", fps=12.5)
        paths.add(annotations.write(frame, [row]))
    annotations.finish("in/sub/clip.avi")
    (path,) = paths  # one file for the whole video
    assert path.parent == tmp_path / "sub" and path.stem == "c"
    video = cv2.VideoCapture(str(path))
    assert video.get(cv2.CAP_PROP_FPS) == 12.5 and video.get(cv2.CAP_PROP_FRAME_COUNT) == 6
    ok, first = video.read()
    assert ok and first.shape == (48, 80, 3) and first[20:50, 10, 1].mean() > 150  # the box (green)


def test_annotation_paths_never_meet_an_input_or_each_other(tmp_path):
    photo = tmp_path / "p.png"
    photo.write_bytes(b"the original")
    annotations = Annotations(tmp_path, protect=[photo, tmp_path / "out.csv"])

    def at(rel, frame=None):
        return annotations.path_for(Frame(str(tmp_path / rel), None, frame, rel=rel))

    assert at("p.png") == tmp_path / "p.annotated.png"  # the input itself
    assert at("p.png") == tmp_path / "p.annotated-2.png"  # the same name again
    assert at("x.pgm") == tmp_path / "x.pgm.png"  # OpenCV writes .pgm in gray only
    assert at("noext") == tmp_path / "noext.png"
    assert at("sub/v.mp4", 3) == tmp_path / "sub" / "v.mp4"
    assert at("sub/v.mp4", 3) == tmp_path / "sub" / "v-2.mp4"
    assert [Path(src).name for src, _ in annotations.renamed] == ["p.png", "p.png", "v.mp4"]
    assert photo.read_bytes() == b"the original"
