"""Haar-cascade face detection on composed photos."""

import cv2
import numpy as np
import pytest

from bregflax import detect


def _background(height=480, width=640):
    yy, xx = np.mgrid[0:height, 0:width]
    gray = (80 + 100 * xx / width + 40 * yy / height).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def test_two_pasted_faces_are_found(fer2013_dir):
    faces = np.load(fer2013_dir / "val.npz")["images"]
    image = _background()
    spots = [(60, 100), (380, 160)]
    for face, (x, y) in zip(faces[[2, 3]], spots, strict=True):
        image[y : y + 160, x : x + 160] = cv2.resize(face, (160, 160))[..., None]
    boxes = detect.FaceDetector()(image)
    assert len(boxes) == 2
    for x, y in spots:  # each face's centre lies in one box, of about its size
        cx, cy = x + 80, y + 80
        hits = [b for b in boxes if b[0] <= cx <= b[0] + b[2] and b[1] <= cy <= b[1] + b[3]]
        assert len(hits) == 1 and 0.7 < hits[0][2] / 160 < 1.3


def test_no_face_and_gray_input():
    assert detect.FaceDetector()(_background()[..., 0]) == []


def test_bad_input_and_missing_cascade():
    with pytest.raises(ValueError, match="uint8"):
        detect.FaceDetector()(np.zeros((10, 10), np.float32))
    with pytest.raises(FileNotFoundError, match="--no-detect"):
        detect.cascade_path("no_such_cascade.xml")
