"""Face crops: box plus margin, made square, optionally eye-levelled, resized, gray or RGB.

Images are uint8 numpy arrays, RGB (H, W, 3) or gray (H, W) / (H, W, 1). Boxes are
``(x, y, width, height)`` in pixels, x to the right and y down. A box partly outside the
image is kept: the part outside is padded with black (zeros). A box with no area, a
non-finite coordinate, no overlap with the image, or a side over ``MAX_BOX_SCALE`` times the
image's longer side raises :class:`BadFaceBox`, whose ``reason`` (``"degenerate_box"``,
``"box_outside_image"`` or ``"box_too_large"``) is what the build report counts. A crop window
(box plus margin) wider than ``MAX_WINDOW`` pixels is cut at reduced resolution, so no box
allocates more than ``MAX_WINDOW`` squared pixels before the final resize.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

# Image reading lives in media; fer2013.py and affectnet.py still call it as faces.read_image.
from bregflax.data.media import read_image  # noqa: F401

# 68-point iBUG landmarks: 36-41 outline the eye on the image's left, 42-47 the other.
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)

Box = Sequence[float]
MAX_BOX_SCALE = 4  # a box side beyond 4x the image's longer side is refused, not cropped
MAX_WINDOW = 4096  # crop windows wider than this are cut at reduced resolution


class BadFaceBox(ValueError):
    """A box that cannot give a crop; ``reason`` is a short key for the build report."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def check_box(box: Box, image_shape: Sequence[int]) -> tuple[float, float, float, float]:
    """Validates ``box`` against an image of ``image_shape``; returns it as floats."""
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 1 or h < 1:
        raise BadFaceBox("degenerate_box", f"box {tuple(box)}")
    height, width = image_shape[:2]
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise BadFaceBox("box_outside_image", f"box {tuple(box)} in image {width}x{height}")
    if max(w, h) > MAX_BOX_SCALE * max(width, height):
        raise BadFaceBox(
            "box_too_large",
            f"box {tuple(box)} is over {MAX_BOX_SCALE}x the image's size {width}x{height}",
        )
    return x, y, w, h


def square_region(box: Box, margin: float) -> tuple[float, float, float]:
    """Centre and side of the square around ``box``, grown by ``margin`` x size on each side."""
    x, y, w, h = (float(v) for v in box)
    return x + w / 2, y + h / 2, max(w, h) * (1 + 2 * margin)


def padded_crop(
    image: np.ndarray, cx: float, cy: float, side: int, max_side: int | None = None
) -> np.ndarray:
    """The ``side`` x ``side`` window centred at (cx, cy); outside the image is black.

    With ``max_side`` below ``side``, the window comes back scaled down to ``max_side``
    pixels a side (area averaging), without ever holding it at full size.
    """
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    height, width = image.shape[:2]
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, width), min(y0 + side, height)
    scale = 1.0 if max_side is None or side <= max_side else max_side / side
    out_side = side if scale == 1.0 else max_side
    out = np.zeros((out_side, out_side, *image.shape[2:]), image.dtype)
    if sx1 <= sx0 or sy1 <= sy0:
        return out
    if scale == 1.0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        return out
    tx0, ty0 = (int(round((s - o) * scale)) for s, o in ((sx0, x0), (sy0, y0)))
    tx1 = min(max(int(round((sx1 - x0) * scale)), tx0 + 1), out_side)
    ty1 = min(max(int(round((sy1 - y0) * scale)), ty0 + 1), out_side)
    tx0, ty0 = min(tx0, tx1 - 1), min(ty0, ty1 - 1)
    part = cv2.resize(image[sy0:sy1, sx0:sx1], (tx1 - tx0, ty1 - ty0), interpolation=cv2.INTER_AREA)
    out[ty0:ty1, tx0:tx1] = part.reshape(ty1 - ty0, tx1 - tx0, *image.shape[2:])
    return out


def eye_angle(landmarks: np.ndarray) -> float:
    """Angle in degrees of the line between the eye centres (positive: right side lower)."""
    points = np.asarray(landmarks, np.float64).reshape(68, 2)
    left, right = points[LEFT_EYE].mean(0), points[RIGHT_EYE].mean(0)
    dx, dy = right - left
    return math.degrees(math.atan2(dy, dx))


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotates about the centre so a line at ``degrees`` (y down) becomes level."""
    side_y, side_x = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((side_x / 2, side_y / 2), degrees, 1.0)
    rotated = cv2.warpAffine(image, matrix, (side_x, side_y), flags=cv2.INTER_LINEAR, borderValue=0)
    return rotated.reshape(image.shape)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes a square image to ``size`` x ``size`` (area averaging when shrinking)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation).reshape(
        size, size, *image.shape[2:]
    )


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Converts gray or RGB ``image`` to (H, W, channels), channels 1 (gray) or 3 (RGB)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    return np.repeat(image[..., :1], 3, axis=-1)


def crop_face(
    image: np.ndarray,
    box: Box,
    *,
    size: int,
    channels: int,
    margin: float = 0.0,
    landmarks: np.ndarray | None = None,
    align: bool = False,
) -> np.ndarray:
    """The face in ``box`` as uint8 (size, size, channels).

    ``margin`` grows the box by that fraction of its size on each side before it is made
    square (around the box centre). With ``align`` and 68-point ``landmarks``, the crop is
    rotated about the box centre so the eyes are level.
    """
    check_box(box, image.shape)
    cx, cy, side = square_region(box, margin)
    side = max(int(round(side)), 1)
    if align and landmarks is not None:
        big = int(math.ceil(side * math.sqrt(2))) + 2  # room for the rotated corners
        window = rotate(padded_crop(image, cx, cy, big, MAX_WINDOW), eye_angle(landmarks))
        inner = side if len(window) == big else max(int(round(side * len(window) / big)), 1)
        start = (len(window) - inner) // 2
        window = window[start : start + inner, start : start + inner]
    else:
        window = padded_crop(image, cx, cy, side, MAX_WINDOW)
    return resize(to_channels(window, channels), size).astype(np.uint8)


def full_image_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """The box covering all of ``image``."""
    return 0, 0, image.shape[1], image.shape[0]
