"""Face detection with YuNet, a small CNN that also gives five landmarks; eye-levelled crops.

YuNet (ShiqiYu/libfacedetection.train, 75,856 parameters, Apache 2.0) runs in OpenCV's
``cv2.FaceDetectorYN`` from the ONNX file shipped in ``bregflax/weights/yunet/`` with its
licence: no download, no new dependency. The network is read once per process and shared
(behind a lock: OpenCV's detector keeps its input size as state).

:class:`YuNetDetector` has the interface of :class:`bregflax.inference.detect.FaceDetector`
(``prepare`` / ``search``), so :class:`bregflax.inference.detect.FaceTracker` follows its boxes in a
video unchanged. Each face is a :class:`Face`: a plain ``(x, y, width, height)`` tuple that
also carries its five landmarks (eyes, nose tip, mouth corners, in the full image's pixels)
and its score.

Boxes mean what the cascade's mean: YuNet's own box is narrower than a FER2013 crop and sits
a little low, so each is re-framed into the square the cascade would give, whose side is
``1 / (1 + 2 * FER2013_MARGIN)`` (0.96) of a FER2013 crop and whose centre is the crop's
(``BOX_SIDE``, ``BOX_SHIFT``, measured as the cascade's 0.96 was: see
``benchmarks/detect_accuracy.py --framing``). So ``--margin`` frames both detectors' crops
alike. :func:`crop_aligned` turns the crop about the box centre so the eyes are level.

A photo in which no upright face is found is searched again turned by -30 and then +30
degrees (``TURNS``; the boxes and landmarks are mapped back, so the eye-level crop takes
out the turn).

Each image is searched scaled so that the smallest face asked for (``min_size``) is
``SEARCH_PIXELS`` pixels a side; ``SCORE_THRESHOLD`` and ``SEARCH_PIXELS`` were chosen by
``benchmarks/detect_accuracy.py --sweep`` (docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from bregflax.data import faces
from bregflax.inference.detect import FER2013_MARGIN, MAX_DETECT_PIXELS, MIN_FACE, Box
from bregflax.inference.weights import WEIGHTS_DIR

MODEL_PATH = WEIGHTS_DIR / "yunet" / "yunet_n_640_640.onnx"
SCORE_THRESHOLD = 0.6  # by benchmarks/detect_accuracy.py --sweep
NMS_THRESHOLD = 0.3
TOP_K = 100
SEARCH_PIXELS = 32  # the smallest face is this many pixels in the searched image
REFINE_PIXELS = 80  # alignment looks at the face again at this size (level_angle)
REFINE_PASSES = 0  # by benchmarks/detect_accuracy.py: one pass gained no accuracy it could show
SIZE_SLACK = 0.75  # faces down to 3/4 of min_size are kept (the search finds them anyway)
# A photo with no upright face is searched again turned by each of these (degrees): YuNet
# finds about half of the faces turned by 30 degrees, and four in five with these searches
# (benchmarks/detect_accuracy.py, docs/performance.md). Not in videos (the tracker searches).
TURNS = (-30.0, 30.0)
# Re-framing of YuNet's box (height bh, centre c) into the cascade's square box: side
# BOX_SIDE * bh, centre c - BOX_SHIFT * bh along the face's own down direction. From
# ``benchmarks/detect_accuracy.py --framing --limit 300 --search-pixels 32`` (medians over
# the 279 of the first 300 PublicTest faces found once: height 1.0027 of the crop's side,
# centre 0.0159 of it below the crop's).
BOX_SIDE = 1.0027**-1 / (1 + 2 * FER2013_MARGIN)
BOX_SHIFT = 0.0159 / 1.0027

DETECTORS = ("yunet", "haar")

_lock = threading.Lock()


class Face(tuple):
    """A face box ``(x, y, width, height)`` with its five ``landmarks`` ((5, 2) pixels:
    eye on the image's left, the other eye, nose tip, mouth corners) and ``score``."""

    landmarks: np.ndarray | None
    score: float

    def __new__(cls, box, landmarks=None, score: float = 1.0):
        face = super().__new__(cls, box)
        face.landmarks = None if landmarks is None else np.asarray(landmarks, np.float64)
        face.score = float(score)
        return face

    def __reduce__(self):
        return Face, (tuple(self), self.landmarks, self.score)


class PreparedBGR(NamedTuple):
    """An image ready for YuNet: see :meth:`YuNetDetector.prepare`."""

    bgr: np.ndarray  # scaled, 3 channels, BGR order
    scale: float  # of ``bgr`` to the full image
    min_side: float  # the smallest face side in full-image pixels
    plain: np.ndarray  # ``bgr`` in gray, for the tracker's change test


@functools.lru_cache(maxsize=1)
def network(path: str = str(MODEL_PATH)):
    """The shared ``cv2.FaceDetectorYN`` (read once per process); use it under ``_lock``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no YuNet model at {path}: reinstall bregflax, or --detector haar")
    return cv2.FaceDetectorYN.create(path, "", (320, 320), SCORE_THRESHOLD, NMS_THRESHOLD, TOP_K)


def eye_angle(landmarks: np.ndarray) -> float:
    """Degrees of the line from the eye on the image's left to the other (y down)."""
    (x0, y0), (x1, y1) = np.asarray(landmarks, np.float64)[:2]
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def reframe(raw: np.ndarray) -> Face:
    """A YuNet row (x, y, w, h, 10 landmark coordinates, score) as the cascade's box."""
    x, y, w, h = (float(v) for v in raw[:4])
    landmarks = np.asarray(raw[4:14], np.float64).reshape(5, 2)
    angle = math.radians(eye_angle(landmarks))
    down = (-math.sin(angle), math.cos(angle))  # the face's own down, in the image
    cx = x + w / 2 - BOX_SHIFT * h * down[0]
    cy = y + h / 2 - BOX_SHIFT * h * down[1]
    side = BOX_SIDE * h
    box = (cx - side / 2, cy - side / 2, side, side)
    return Face(tuple(int(round(v)) for v in box), landmarks, float(raw[-1]))


def _sized(rows, prepared: PreparedBGR, sizes: tuple[float, float] = (0, 0)) -> list[Face]:
    """YuNet's rows as faces (``reframe``) of sides ``sizes[0]`` (at least ``SIZE_SLACK``
    of the search's smallest) to ``sizes[1]`` (0: any)."""
    lo = max(sizes[0], SIZE_SLACK * prepared.min_side)
    faces = (reframe(row) for row in rows)
    return [f for f in faces if f[2] >= lo and (not sizes[1] or f[2] <= sizes[1])]


def _check(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W[, C]) image, got {image.dtype} {image.shape}")
    return image


@dataclasses.dataclass
class YuNetDetector:
    """YuNet faces, largest first, as :class:`Face` boxes in the full image.

    ``min_size``: the smallest face side in pixels (below 1: a fraction of the shorter
    side); the image is searched scaled (never enlarged) so it is ``search_pixels`` pixels,
    and faces below ``SIZE_SLACK`` of it are dropped. Images over ``max_pixels`` are searched
    scaled down to that many pixels.
    """

    min_size: float = MIN_FACE
    score_threshold: float = SCORE_THRESHOLD
    search_pixels: float = SEARCH_PIXELS
    max_pixels: int = MAX_DETECT_PIXELS
    turns: tuple[float, ...] = TURNS

    def __post_init__(self):
        network()  # a missing model file fails here, before any image is read

    def min_side(self, height: int, width: int) -> float:
        return self.min_size if self.min_size >= 1 else self.min_size * min(height, width)

    def search_scale(self, height: int, width: int) -> float:
        """The factor (at most 1) the image is scaled by before YuNet searches it."""
        scale = math.sqrt(self.max_pixels / max(height * width, 1))
        side = max(self.min_side(height, width), self.search_pixels)
        return min(1.0, scale, self.search_pixels / side)

    def __call__(self, image: np.ndarray) -> list[Face]:
        """Faces in a uint8 gray (H, W[, 1]) or RGB (H, W, 3) image; if there is no upright
        one, the faces found in the image turned by the first of ``turns`` that finds any."""
        prepared = self.prepare(image)
        found = self.search(prepared)
        for angle in () if found else self.turns:
            found = self.search_turned(prepared, angle)
            if found:
                break
        return largest_first(found)

    def search_turned(self, prepared: PreparedBGR, angle: float) -> list[Face]:
        """Faces found in ``prepared`` turned by ``angle`` degrees (counter-clockwise) about
        its centre, with their boxes and landmarks in the image as it is; faces whose
        centre the turn brought in from outside the image are dropped."""
        height, width = prepared.bgr.shape[:2]
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
        bgr = cv2.warpAffine(prepared.bgr, turn, (width, height), borderMode=cv2.BORDER_CONSTANT)
        back = cv2.invertAffineTransform(turn)
        raws = []
        for row in self.rows(prepared._replace(bgr=bgr)):
            points = row[:14].reshape(7, 2).copy()  # (x, y), (w, h), five landmarks
            centre = points[0] + points[1] / 2
            moved = np.vstack([centre, points[2:]]) * prepared.scale
            moved = (moved @ back[:, :2].T + back[:, 2]) / prepared.scale
            cx, cy = moved[0]
            if not (0 <= cx < width / prepared.scale and 0 <= cy < height / prepared.scale):
                continue
            w, h = points[1]
            raws.append(
                np.concatenate([[cx - w / 2, cy - h / 2, w, h], moved[1:].ravel(), row[14:]])
            )
        return _sized(raws, prepared)

    def prepare(self, image: np.ndarray) -> PreparedBGR:
        """The image as YuNet searches it: scaled, BGR."""
        image = _check(image)
        height, width = image.shape[:2]
        scale = self.search_scale(height, width)
        if scale < 1:
            size = (max(int(round(width * scale)), 1), max(int(round(height * scale)), 1))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(
                size[1], size[0], *image.shape[2:]
            )
            scale = size[0] / width
        if image.ndim == 3 and image.shape[-1] == 3:
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            plain = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        else:
            plain = np.ascontiguousarray(image if image.ndim == 2 else image[..., 0])
            bgr = cv2.cvtColor(plain, cv2.COLOR_GRAY2BGR)
        return PreparedBGR(bgr, scale, self.min_side(height, width), plain)

    def search(
        self, prepared: PreparedBGR, region: Box | None = None, sizes: tuple[float, float] = (0, 0)
    ) -> list[Face]:
        """Faces in ``prepared`` (full-image pixels), in all of it or in ``region`` (x, y,
        width, height in the full image), of sides ``sizes[0]`` to ``sizes[1]`` (0: any)."""
        return _sized(self.rows(prepared, region), prepared, sizes)

    def rows(self, prepared: PreparedBGR, region: Box | None = None) -> np.ndarray:
        """YuNet's own rows (x, y, w, h, 10 landmark coordinates, score), (n, 15), in the
        full image's pixels, scored at least ``score_threshold``."""
        bgr, scale = prepared.bgr, prepared.scale
        x0 = y0 = 0
        if region is not None:
            x0, y0 = max(int(region[0] * scale), 0), max(int(region[1] * scale), 0)
            x1 = min(int(math.ceil((region[0] + region[2]) * scale)), bgr.shape[1])
            y1 = min(int(math.ceil((region[1] + region[3]) * scale)), bgr.shape[0])
            if x1 - x0 < 8 or y1 - y0 < 8:
                return np.zeros((0, 15))
            bgr = np.ascontiguousarray(bgr[y0:y1, x0:x1])
        net = network()
        with _lock:
            net.setInputSize((bgr.shape[1], bgr.shape[0]))
            net.setScoreThreshold(self.score_threshold)
            _, rows = net.detect(bgr)
        if rows is None:
            return np.zeros((0, 15))
        rows = np.array(rows, np.float64).reshape(-1, 15)
        rows[:, [0, 4, 6, 8, 10, 12]] += x0  # x, w, h, then the landmarks' (x, y)
        rows[:, [1, 5, 7, 9, 11, 13]] += y0
        rows[:, :14] /= scale
        return rows


def largest_first(boxes: list) -> list:
    return sorted(boxes, key=lambda b: (-b[2] * b[3], b[0], b[1]))


def level_angle(image: np.ndarray, face: Face, refine: int | None = None) -> float:
    """The turn (degrees) that levels ``face``'s eyes in ``image``.

    YuNet sees less of a turn than there is (of a 20-degree turn, about 6 degrees on a face
    of 48 searched pixels, about 14 on one of 160): each of ``refine`` passes turns the face
    by the angle found so far, looks at it again at ``REFINE_PIXELS`` pixels a side, and
    adds the turn that is left.
    """
    angle = eye_angle(face.landmarks)
    refine = REFINE_PASSES if refine is None else refine
    if refine < 1:
        return angle
    cx, cy, side = faces.square_region(face, 0.0)
    out = 2 * REFINE_PIXELS  # the face with half its side of context all round
    window = faces.padded_crop(image, cx, cy, max(int(round(2 * side)), 1), out)
    window = faces.resize(faces.to_channels(window, 3), out)
    net = network()
    for _ in range(refine):
        bgr = np.ascontiguousarray(faces.rotate(window, angle)[..., ::-1])
        with _lock:
            net.setInputSize((out, out))
            net.setScoreThreshold(0.3)  # the face is known to be there
            _, rows = net.detect(bgr)
        if rows is None:
            break
        centre = np.hypot(
            rows[:, 0] + rows[:, 2] / 2 - out / 2, rows[:, 1] + rows[:, 3] / 2 - out / 2
        )
        nearest = rows[int(np.argmin(centre))]
        if centre.min() > REFINE_PIXELS / 2:
            break
        angle += eye_angle(nearest[4:14].reshape(5, 2))
    return angle


def crop_aligned(
    image: np.ndarray,
    face: Face,
    *,
    size: int,
    channels: int,
    margin: float = FER2013_MARGIN,
    refine: int | None = None,
) -> np.ndarray:
    """``face``'s crop (as :func:`bregflax.data.faces.crop_face` with ``margin``), turned
    about the box centre so that its eyes are level (:func:`level_angle`): uint8
    (size, size, channels)."""
    faces.check_box(face, image.shape)
    angle = level_angle(image, face, refine)
    cx, cy, side = faces.square_region(face, margin)
    side = max(int(round(side)), 1)
    big = int(math.ceil(side * math.sqrt(2))) + 2  # room for the turned corners
    window = faces.rotate(faces.padded_crop(image, cx, cy, big, faces.MAX_WINDOW), angle)
    inner = side if len(window) == big else max(int(round(side * len(window) / big)), 1)
    start = (len(window) - inner) // 2
    window = window[start : start + inner, start : start + inner]
    return faces.resize(faces.to_channels(window, channels), size).astype(np.uint8)


def make_detector(name: str, min_size: float = MIN_FACE):
    """The detector called ``name`` (``yunet`` or ``haar``) for faces from ``min_size``."""
    if name == "yunet":
        return YuNetDetector(min_size=min_size)
    if name == "haar":
        from bregflax.inference.detect import FaceDetector

        return FaceDetector(min_size=min_size)
    raise ValueError(f"unknown detector {name!r}: yunet or haar")
