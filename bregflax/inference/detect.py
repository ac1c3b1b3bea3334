"""Face detection in full photos and video frames: OpenCV's Haar cascade.

The frontal-face cascade ships inside ``opencv-python-headless`` below 5.0
(``cv2.data.haarcascades``), so detection needs no download. Boxes are
``(x, y, width, height)`` in pixels, as in :mod:`bregflax.data.faces`.

Each image is searched at the scale where the smallest face asked for (``min_size``,
default ``MIN_FACE``: the model's 48-pixel input; smaller faces would be upscaled into it)
fills the cascade's ``WINDOW``: a 640 x 480 frame is searched at 320 x 240, a quarter of the
pixels. A photo over ``MAX_DETECT_PIXELS`` is searched smaller still (OpenCV's cascade
crashes the process on very large images, around 20000 x 20000). Boxes are given in the
full image either way.

In a video, :class:`FaceTracker` searches the whole frame every ``REDETECT_EVERY`` frames
only; in between, each face is looked for near its last box, at its own size, and a face
not found there sends the frame to a whole-frame search at once.

``FER2013_MARGIN``: on 438 FER2013 PublicTest faces (upscaled 4x, padded, one detection
each) the cascade's box is centred on the FER2013 crop and its side is a median 0.96 of the
crop's, so growing the box by 2% on each side gives crops framed like the training data.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

FER2013_MARGIN = 0.02
MAX_DETECT_PIXELS = 4096 * 4096  # larger photos are searched at reduced size
CASCADE = "haarcascade_frontalface_default.xml"
WINDOW = 24  # the frontal-face cascade's window: the smallest face it finds, in pixels
MIN_FACE = 48  # default smallest face: the model's input side
REDETECT_EVERY = 20  # video: whole-frame search every 20th frame (benchmarks/predict_pipeline.py)
CHANGE_BLOCK = 16  # video: the scene is compared in blocks of 16 x 16 searched pixels
CHANGE_LEVEL = 12  # a block whose mean gray level moved more than this has changed

Box = tuple[int, int, int, int]


class Prepared(NamedTuple):
    """An image ready for the cascade: see :meth:`FaceDetector.prepare`."""

    gray: np.ndarray  # scaled, gray, histogram-equalized
    scale: float  # of ``gray`` to the full image
    min_side: float  # the smallest face side in full-image pixels
    plain: np.ndarray | None = None  # ``gray`` before equalization


def cascade_path(name: str = CASCADE) -> Path:
    """The cascade file shipped with OpenCV; a clear error where this OpenCV has none."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / name
    if not folder or not path.is_file():
        raise FileNotFoundError(
            f"OpenCV {cv2.__version__} has no {name}: install opencv-python-headless<5.0, "
            "or pass --boxes / --no-detect"
        )
    return path


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 gray (H, W) of a gray (H, W[, 1]) or RGB (H, W, 3) image."""
    if image.ndim == 3 and image.shape[-1] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image if image.ndim == 2 else image[..., 0])


def _check(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W[, C]) image, got {image.dtype} {image.shape}")
    return image


def _largest_first(boxes: list[Box]) -> list[Box]:
    return sorted(boxes, key=lambda b: (-b[2] * b[3], b[0], b[1]))


def iou(a, b) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclasses.dataclass
class FaceDetector:
    """Haar-cascade frontal faces, largest first.

    ``min_size`` is the smallest face side in pixels (as a fraction of the image's shorter
    side when below 1); the image is searched scaled by ``WINDOW / min_size`` (when below 1),
    so ``min_size=24`` searches at full resolution. Images over ``max_pixels`` are searched
    scaled down to that many pixels. Boxes are in the full image.

    ``min_neighbors`` (overlapping hits a box needs) trades recall for fewer false boxes.
    A face gives fewer hits in fewer pixels, so the default (None) asks for 5 at full
    resolution, 4 down to half and 3 below: on the faces of benchmarks/predict_pipeline.py,
    3 at half size finds at least the faces 5 finds at full size, with no more false boxes.
    """

    scale_factor: float = 1.1
    min_neighbors: int | None = None  # None: by the search scale (above)
    min_size: float = MIN_FACE
    cascade: str = CASCADE
    max_pixels: int = MAX_DETECT_PIXELS

    def __post_init__(self):
        self._classifier = cv2.CascadeClassifier(str(cascade_path(self.cascade)))
        if self._classifier.empty():
            raise RuntimeError(f"OpenCV could not load {self.cascade}")

    def min_side(self, height: int, width: int) -> float:
        """The smallest face side, in pixels, in an image of that size."""
        return self.min_size if self.min_size >= 1 else self.min_size * min(height, width)

    def neighbors(self, scale: float) -> int:
        """``min_neighbors`` for an image searched at ``scale``."""
        if self.min_neighbors is not None:
            return self.min_neighbors
        return 5 if scale >= 0.99 else 4 if scale > 0.51 else 3  # 0.51: pixel rounding

    def search_scale(self, height: int, width: int) -> float:
        """The factor (at most 1) the image is scaled by before the cascade searches it."""
        scale = math.sqrt(self.max_pixels / max(height * width, 1))
        return min(1.0, scale, WINDOW / max(self.min_side(height, width), WINDOW))

    def __call__(self, image: np.ndarray) -> list[Box]:
        """Face boxes in a uint8 gray (H, W[, 1]) or RGB (H, W, 3) image."""
        return _largest_first(self.search(self.prepare(image)))

    def prepare(self, image: np.ndarray) -> Prepared:
        """The image as the cascade searches it: scaled, gray, histogram-equalized."""
        image = _check(image)
        height, width = image.shape[:2]
        scale = self.search_scale(height, width)
        if scale < 1:  # shrink before the gray conversion: no full-size copy is made
            size = (max(int(round(width * scale)), 1), max(int(round(height * scale)), 1))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(
                size[1], size[0], *image.shape[2:]
            )
            scale = size[0] / width
        gray = to_gray(image)
        return Prepared(cv2.equalizeHist(gray), scale, self.min_side(height, width), gray)

    def search(
        self, prepared: Prepared, region: Box | None = None, sizes: tuple[float, float] = (0, 0)
    ) -> list[Box]:
        """Boxes in ``prepared`` (in the full image's pixels), in all of it or in ``region``
        (x, y, width, height in the full image), of sides from ``sizes[0]`` to ``sizes[1]``
        full-image pixels (0: any), and never below ``min_size``."""
        gray, scale = prepared.gray, prepared.scale
        x0 = y0 = 0
        if region is not None:
            x0, y0 = max(int(region[0] * scale), 0), max(int(region[1] * scale), 0)
            x1 = min(int(math.ceil((region[0] + region[2]) * scale)), gray.shape[1])
            y1 = min(int(math.ceil((region[1] + region[3]) * scale)), gray.shape[0])
            gray = gray[y0:y1, x0:x1]
        lo = max(int(max(sizes[0], prepared.min_side) * scale), 1)
        hi = int(math.ceil(sizes[1] * scale)) if sizes[1] else 0
        if hi and (hi < WINDOW or min(gray.shape) < lo):
            return []
        # The cascade's time grows with the image, whatever minSize skips: shrink by whole
        # steps of scale_factor (the sizes searched stay those of a whole-image search)
        # while the smallest size asked for stays over twice the window, where OpenCV
        # still slides the window 1 pixel at a time (2 below: fewer hits, faces lost).
        smallest = 2 * WINDOW * 1.02
        steps = int(math.floor(math.log(max(lo, smallest) / smallest, self.scale_factor)))
        shrink = 1.0
        if steps > 0:
            height, width = gray.shape
            size = (max(round(width / self.scale_factor**steps), 1),
                    max(round(height / self.scale_factor**steps), 1))  # fmt: skip
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
            shrink = size[0] / width
            lo, hi = max(int(lo * shrink), WINDOW), int(math.ceil(hi * shrink))
        limits = {"minSize": (lo, lo)}
        if hi:
            limits["maxSize"] = (max(hi, lo + 1),) * 2
        found = self._classifier.detectMultiScale(
            np.ascontiguousarray(gray),
            scaleFactor=self.scale_factor,
            minNeighbors=self.neighbors(scale),
            **limits,
        )
        found = np.asarray(found, np.float64).reshape(-1, 4) / shrink
        found[:, :2] += (x0, y0)
        return [tuple(int(round(v)) for v in box / scale) for box in found]


@dataclasses.dataclass
class FaceTracker:
    """The faces of consecutive frames of one video (one tracker per video).

    A whole-frame search (``detector``) runs on the first frame and then every
    ``redetect_every``-th. In between, each face is searched for only near its last box
    (grown by ``reach`` of its side on each side) and at sizes from 3/4 to 4/3 of it, in
    the scaled image a whole-frame search would use, so boxes are found as that search
    finds them; and where the picture changed away from those faces (blocks of
    ``CHANGE_BLOCK`` searched pixels whose mean gray level moved by over ``CHANGE_LEVEL``
    since the previous frame), each changed patch, grown by a block, is searched for new
    faces. A frame gets a whole-frame search at once where a face is not found near its
    box (it left, turned, or moved too far) and where over half the picture changed (a
    cut, a camera move). So only a face that comes into view without changing the picture
    (a slow fade) is found late, by up to ``redetect_every - 1`` frames; a moving thing the
    cascade does not take for a face costs a search of its patch on each frame.
    ``redetect_every=1`` searches every frame whole.
    """

    detector: FaceDetector
    redetect_every: int = REDETECT_EVERY
    reach: float = 0.25

    def __post_init__(self):
        if self.redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {self.redetect_every}")
        self.boxes: list[Box] = []
        self.full_searches, self.followed, self.lost, self.patches = 0, 0, 0, 0
        self._since = 0  # frames since the last whole-frame search
        self._previous: np.ndarray | None = None  # the last frame's unequalized gray

    def __call__(self, image: np.ndarray) -> list[Box]:
        """The face boxes of the next frame, largest first."""
        prepared = self.detector.prepare(image)
        patches = self._changed(prepared)
        self._previous = prepared.plain
        if patches is None or self._since + 1 >= self.redetect_every:
            return self._search_whole(prepared)
        found: list[Box] = []
        for box in self.boxes:
            near = self._follow(prepared, box)
            if near is None:
                self.lost += 1
                return self._search_whole(prepared)
            if all(iou(near, other) < 0.5 for other in found):
                found.append(near)
        self.followed += len(found)
        for patch in patches:
            self.patches += 1
            for box in self.detector.search(prepared, patch):
                if all(iou(box, other) < 0.3 for other in found):
                    found.append(box)
        self._since += 1
        self.boxes = _largest_first(found)
        return list(self.boxes)

    def _changed(self, prepared: Prepared) -> list[Box] | None:
        """The patches (full-image boxes) that changed away from the followed faces since
        the last frame; None where there is no last frame or over half of it changed."""
        before, now = self._previous, prepared.plain
        if before is None or before.shape != now.shape:
            return None
        height, width = now.shape
        rows, cols = max(height // CHANGE_BLOCK, 1), max(width // CHANGE_BLOCK, 1)
        diff = cv2.resize(cv2.absdiff(now, before), (cols, rows), interpolation=cv2.INTER_AREA)
        blocks = (diff > CHANGE_LEVEL).astype(np.uint8)
        by_x, by_y = cols / width * prepared.scale, rows / height * prepared.scale
        for x, y, w, h in self.boxes:  # the followed faces and their reach may change
            pad = self.reach * max(w, h)
            x0, y0 = max(int((x - pad) * by_x), 0), max(int((y - pad) * by_y), 0)
            x1, y1 = int(math.ceil((x + w + pad) * by_x)), int(math.ceil((y + h + pad) * by_y))
            blocks[y0:y1, x0:x1] = 0
        if blocks.sum() > blocks.size / 2:
            return None
        count, _, stats, _ = cv2.connectedComponentsWithStats(blocks, connectivity=8)
        return [
            ((col - 1) / by_x, (row - 1) / by_y, (w + 2) / by_x, (h + 2) / by_y)
            for col, row, w, h, _ in stats[1:count]
        ]

    def _search_whole(self, prepared: Prepared) -> list[Box]:
        self.full_searches += 1
        self._since = 0
        self.boxes = _largest_first(self.detector.search(prepared))
        return list(self.boxes)

    def _follow(self, prepared: Prepared, box: Box) -> Box | None:
        """The face nearest ``box`` in the region around it, or None."""
        x, y, w, h = box
        side = max(w, h)
        pad = self.reach * side
        region = (x - pad, y - pad, w + 2 * pad, h + 2 * pad)
        found = self.detector.search(prepared, region, (side * 3 / 4, side * 4 / 3))
        return max(found, key=lambda b: iou(b, box)) if found else None
