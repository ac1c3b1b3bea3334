"""Annotated copies: where they go (never over an input or each other) and what is drawn."""

from pathlib import Path

import cv2
import numpy as np

from bregflax.inference.annotate import Annotations
from bregflax.inference.engine import Frame


def test_annotate_names_video_frames(tmp_path):
    frame = Frame("in/sub/clip.avi", np.zeros((80, 80, 3), np.uint8), 4, rel="sub/c.avi")
    row = {"status": "ok", "box": [10, 20, 30, 30], "name": "Happy", "probs": {"Happy": 0.9}}
    out = Annotations(tmp_path).write(frame, [row])
    assert out == tmp_path / "sub" / "c_f000004.jpg"
    drawn = cv2.imread(str(out))
    assert drawn[20:50, 10].mean() > 100 and drawn[70:, 60:].max() < 30  # box edge, not beyond


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
    assert at("sub/v.mp4", 3) == tmp_path / "sub" / "v_f000003.jpg"
    assert at("sub/v.mp4", 3) == tmp_path / "sub" / "v_f000003-2.jpg"
    assert [Path(src).name for src, _ in annotations.renamed] == ["p.png", "p.png", "v.mp4"]
    assert photo.read_bytes() == b"the original"
