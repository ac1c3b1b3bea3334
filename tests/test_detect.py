"""Haar-cascade face detection on composed photos."""

import cv2
import numpy as np
import pytest

from bregflax.inference import detect


def _background(height=480, width=640):
    yy, xx = np.mgrid[0:height, 0:width]
    gray = (80 + 100 * xx / width + 40 * yy / height).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


SPOTS = [(60, 100), (380, 160)]


def _two_faces(fer2013_dir):
    """A 640 x 480 photo with two FER2013 faces, 160 pixels a side, at ``SPOTS``."""
    faces = np.load(fer2013_dir / "val.npz")["images"]
    image = _background()
    for face, (x, y) in zip(faces[[2, 3]], SPOTS, strict=True):
        image[y : y + 160, x : x + 160] = cv2.resize(face, (160, 160))[..., None]
    return image


def test_two_pasted_faces_are_found(fer2013_dir):
    boxes = detect.FaceDetector()(_two_faces(fer2013_dir))
    assert len(boxes) == 2
    for x, y in SPOTS:  # each face's centre lies in one box, of about its size
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


class RecordingCascade:
    """Stands in for OpenCV's cascade: records what it is given, returns one fixed box."""

    def __init__(self, box=(10, 5, 20, 20)):
        self.box, self.calls = box, []

    def detectMultiScale(self, gray, scaleFactor, minNeighbors, minSize, maxSize=None):  # noqa: N802, N803
        self.calls.append((gray.shape, minSize))
        return np.array([self.box])


def test_images_are_searched_where_the_smallest_face_fills_the_window():
    assert detect.FaceDetector().min_size == detect.MIN_FACE == 48
    assert detect.FaceDetector().search_scale(480, 640) == 0.5  # 48 px faces -> 24 px
    assert detect.FaceDetector(min_size=24).search_scale(480, 640) == 1.0
    assert detect.FaceDetector(min_size=10).search_scale(480, 640) == 1.0  # never enlarged
    assert detect.FaceDetector(min_size=0.2).search_scale(480, 640) == 0.25  # 96 px faces
    detector = detect.FaceDetector(min_size=40)
    detector._classifier = cascade = RecordingCascade()
    assert detector(np.zeros((50, 100), np.uint8)) == [(17, 8, 33, 33)]  # boxes / 0.6
    assert cascade.calls == [((30, 60), (24, 24))]


def test_large_images_are_searched_scaled_down_and_boxes_mapped_back():
    detector = detect.FaceDetector(min_size=40, max_pixels=100 * 50)
    detector._classifier = cascade = RecordingCascade()
    assert detector(np.zeros((400, 800, 3), np.uint8)) == [(80, 40, 160, 160)]
    assert cascade.calls == [((50, 100), (5, 5))]  # 1/8 of each side, min size too
    detector = detect.FaceDetector(min_size=24, max_pixels=100 * 50)
    detector._classifier = cascade = RecordingCascade()
    assert detector(np.zeros((50, 100), np.uint8)) == [(10, 5, 20, 20)]  # at the limit: as is
    assert cascade.calls[-1] == ((50, 100), (24, 24))
    assert detect.FaceDetector().max_pixels == detect.MAX_DETECT_PIXELS


def test_faces_are_found_at_reduced_size(fer2013_dir):
    image = _two_faces(fer2013_dir)
    full = detect.FaceDetector(min_size=24)(image)  # searched at 640 x 480
    default = detect.FaceDetector()(image)  # 320 x 240
    small = detect.FaceDetector(min_size=24, max_pixels=320 * 240)(image)
    assert len(small) == len(default) == len(full) == 2
    np.testing.assert_allclose(np.array(small), np.array(full), atol=16)
    np.testing.assert_allclose(np.array(default), np.array(full), atol=16)


# --------------------------------------------------------------------------- tracking


class SquareCascade:
    """A "cascade" that finds the bright squares of a dark image (equalized gray over 64),
    within the size range it is given (in the searched image's pixels), and records each
    search's shape."""

    def __init__(self):
        self.shapes = []

    def detectMultiScale(self, gray, scaleFactor, minNeighbors, minSize, maxSize=None):  # noqa: N802, N803
        self.shapes.append(gray.shape)
        count, _, stats, _ = cv2.connectedComponentsWithStats((gray > 64).astype(np.uint8))
        found = []
        for x, y, w, h, _ in stats[1:count]:
            if w >= minSize[0] and (maxSize is None or w <= maxSize[0]):
                found.append((x, y, w, h))
        return np.array(found).reshape(-1, 4)


def _squares(*boxes, shape=(240, 320)):
    image = np.zeros(shape, np.uint8)
    for x, y, w, h in boxes:
        image[y : y + h, x : x + w] = 255
    return image


def _tracker(redetect_every):
    detector = detect.FaceDetector(min_size=24)
    detector._classifier = cascade = SquareCascade()
    return detect.FaceTracker(detector, redetect_every), cascade


def test_tracker_searches_the_whole_frame_every_k_frames_and_follows_in_between():
    tracker, cascade = _tracker(redetect_every=10)
    for t in range(30):
        box = (20 + 3 * t, 50 + t, 60, 60)  # moves 3 px right, 1 px down a frame
        got = tracker(_squares(box))
        assert len(got) == 1 and detect.iou(got[0], box) > 0.9, (t, got, box)
    assert tracker.full_searches == 3 and tracker.lost == 0 and tracker.followed == 27
    whole = [s for s in cascade.shapes if s == (240, 320)]
    assert len(whole) == 3  # every other search looked only near the face, scaled down:
    assert all(max(s) <= 1.5 * 60 + 2 for s in cascade.shapes if s not in whole)


def test_a_face_lost_is_searched_for_in_the_whole_frame_at_once():
    tracker, _ = _tracker(redetect_every=10)
    assert tracker(_squares((20, 20, 60, 60))) == [(20, 20, 60, 60)]
    assert tracker(_squares((20, 20, 30, 30))) == [(20, 20, 30, 30)]  # shrank: lost, found
    assert tracker.lost == 1 and tracker.full_searches == 2
    assert tracker(_squares()) == [] and tracker.lost == 2  # gone from where it was
    assert tracker.full_searches == 3 and tracker.patches == 0


def test_where_the_picture_changes_new_faces_are_searched_for():
    tracker, cascade = _tracker(redetect_every=10)
    followed = (20, 20, 60, 60)
    assert tracker(_squares(followed)) == [followed]
    assert tracker(_squares(followed)) == [followed] and tracker.patches == 0
    new = (200, 120, 50, 50)
    assert tracker(_squares(followed, new)) == [followed, new]  # came into view: found at once
    assert tracker.patches == 1 and tracker.full_searches == 1
    # Only the changed patch was searched: the blocks (16 px) the new square touches, and
    # one more on each side.
    assert all(50 + 2 * 16 <= side <= 50 + 4 * 16 for side in cascade.shapes[-1])
    # Nothing followed: a face coming into view is still found on its first frame.
    tracker, _ = _tracker(redetect_every=10)
    assert tracker(_squares()) == [] and tracker(_squares()) == []
    assert tracker(_squares(new)) == [new] and tracker.full_searches == 1
    # Over half the picture changed (a cut): the whole frame is searched.
    assert tracker(_squares(new, (0, 0, 180, 240))) == [(0, 0, 180, 240), new]
    assert tracker.full_searches == 2


def test_a_face_that_comes_into_view_unseen_is_found_within_k_frames():
    """A faint square (gray 10: under CHANGE_LEVEL, though the equalized image shows it)
    beside a followed one is found by the next whole-frame search, 10 frames after the
    last."""
    tracker, _ = _tracker(redetect_every=10)
    followed = (20, 20, 60, 60)
    assert tracker(_squares(followed)) == [followed]  # whole-frame search, frame 0
    faint = _squares(followed)
    faint[120:170, 200:250] = 10
    seen = [len(tracker(faint)) for _ in range(1, 12)]
    assert seen == [1] * 9 + [2, 2]  # frames 1-9 follow; frame 10 searches the whole frame
    assert tracker.full_searches == 2 and tracker.lost == tracker.patches == 0


def test_two_faces_are_followed_largest_first():
    tracker, _ = _tracker(redetect_every=5)
    for t in range(8):
        a, b = (10 + 2 * t, 10, 40, 40), (150, 100 + 2 * t, 80, 80)
        got = tracker(_squares(a, b))
        assert len(got) == 2 and detect.iou(got[0], b) > 0.9 and detect.iou(got[1], a) > 0.85
    assert tracker.lost == 0 and tracker.full_searches == 2


def test_redetect_every_1_searches_every_frame_whole():
    tracker, cascade = _tracker(redetect_every=1)
    for t in range(4):
        tracker(_squares((10 + t, 10, 40, 40)))
    assert tracker.full_searches == 4 and cascade.shapes == [(240, 320)] * 4
    with pytest.raises(ValueError, match="redetect_every"):
        detect.FaceTracker(detect.FaceDetector(), 0)


def test_tracked_faces_match_a_whole_frame_search(fer2013_dir):
    """A real face moving across 640 x 480 frames: the followed box stays on it."""
    face = cv2.resize(np.load(fer2013_dir / "val.npz")["images"][3], (150, 150))
    tracker = detect.FaceTracker(detect.FaceDetector(), redetect_every=100)
    for t in range(12):
        image = _background()
        x, y = 100 + 12 * t, 120 + 4 * t
        image[y : y + 150, x : x + 150] = face[..., None]
        got = tracker(image)
        assert len(got) == 1 and detect.iou(got[0], (x, y, 150, 150)) > 0.75, (t, got)
    assert tracker.full_searches == 1 and tracker.lost == 0
