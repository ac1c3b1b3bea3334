"""Face detection in full photos and video frames: OpenCV's Haar cascade.

The frontal-face cascade ships inside ``opencv-python-headless`` below 5.0
(``cv2.data.haarcascades``), so detection needs no download. Boxes are
``(x, y, width, height)`` in pixels, as in :mod:`bregflax.data.faces`.

``FER2013_MARGIN``: on 438 FER2013 PublicTest faces (upscaled 4x, padded, one detection
each) the cascade's box is centred on the FER2013 crop and its side is a median 0.96 of the
crop's, so growing the box by 2% on each side gives crops framed like the training data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

FER2013_MARGIN = 0.02
CASCADE = "haarcascade_frontalface_default.xml"


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


@dataclasses.dataclass
class FaceDetector:
    """Haar-cascade frontal faces, largest first.

    ``min_size`` is the smallest face side in pixels (as a fraction of the image's shorter
    side when below 1). ``min_neighbors`` trades recall for fewer false boxes.
    """

    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: float = 24
    cascade: str = CASCADE

    def __post_init__(self):
        self._classifier = cv2.CascadeClassifier(str(cascade_path(self.cascade)))
        if self._classifier.empty():
            raise RuntimeError(f"OpenCV could not load {self.cascade}")

    def __call__(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes in a uint8 gray (H, W[, 1]) or RGB (H, W, 3) image."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 (H, W[, C]) image, got {image.dtype} {image.shape}")
        gray = image if image.ndim == 2 else image[..., 0]
        if image.ndim == 3 and image.shape[-1] == 3:
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(np.ascontiguousarray(gray))
        side = self.min_size if self.min_size >= 1 else self.min_size * min(gray.shape)
        side = max(int(side), 1)
        found = self._classifier.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(side, side),
        )
        boxes = [tuple(int(v) for v in box) for box in np.asarray(found).reshape(-1, 4)]
        return sorted(boxes, key=lambda b: (-b[2] * b[3], b[0], b[1]))
