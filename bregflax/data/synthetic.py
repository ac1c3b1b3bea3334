"""Embedded demo data: procedurally drawn 48x48 grayscale faces, made with numpy alone.

Each face has an oval, eyes, brows and a mouth, with random pose, scale, lighting, noise
and occluders. The 7 FER2013 classes set the mean of four expression features (mouth
curvature and openness, brow tilt and height, eye openness); per-face jitter makes
neighbouring classes overlap. Valence follows the drawn smile and brow tilt, arousal the
mouth and eye openness and brow height, so both can be read off the pixels. Class
frequencies follow FER2013's training split, where Disgust is rare.
"""

from __future__ import annotations

import functools

import ml_collections
import numpy as np

from bregflax.data import FER2013_CLASSES, SOURCES, Split

SIZE = 48
FER2013_TRAIN_COUNTS = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965])
CLASS_PRIOR = FER2013_TRAIN_COUNTS / FER2013_TRAIN_COUNTS.sum()

# Per class: smile (mouth curvature, + = corners up), mouth openness, brow tilt (+ = inner
# ends down, a frown), brow raise, eye openness.
FEATURES = ("smile", "open", "tilt", "raise", "eye")
CLASS_MEANS = np.array(
    [
        [-0.45, 0.10, 0.70, -0.04, 0.75],  # Angry
        [-0.70, 0.05, 0.45, -0.02, 0.45],  # Disgust
        [-0.20, 0.55, -0.45, 0.08, 1.30],  # Fear
        [0.90, 0.30, 0.00, 0.00, 0.80],  # Happy
        [-0.75, 0.00, -0.55, 0.00, 0.70],  # Sad
        [0.05, 0.85, -0.10, 0.14, 1.40],  # Surprise
        [0.00, 0.00, 0.00, 0.00, 1.00],  # Neutral
    ]
)
FEATURE_JITTER = np.array([0.28, 0.14, 0.26, 0.04, 0.20])
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 8000, "val": 1000, "test": 1000}


def _soft(distance: np.ndarray, sharpness: float = 40.0) -> np.ndarray:
    """1 inside (distance < 0), 0 outside, with an anti-aliased edge."""
    return 1.0 / (1.0 + np.exp(np.clip(sharpness * distance, -50, 50)))


def _segment_distance(x, y, x0, y0, x1, y1):
    """Distance from points (x, y) to the segments (x0, y0)-(x1, y1), broadcast per face."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    return np.hypot(x - x0 - t * dx, y - y0 - t * dy)


def _draw(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Renders faces (n, 48, 48) in [0, 1] from expression features (n, 5)."""
    n = len(features)
    smile, open_, tilt, raise_, eye = (features[:, i, None, None] for i in range(5))
    grid = (np.arange(SIZE) + 0.5) / SIZE * 2 - 1
    v, u = np.meshgrid(grid, grid, indexing="ij")
    # Pose: rotate, scale and shift the face; (x, y) are face coordinates, y downwards.
    angle = rng.normal(0, 0.14, (n, 1, 1))
    scale = rng.uniform(0.85, 1.12, (n, 1, 1))
    cx, cy = rng.normal(0, 0.06, (2, n, 1, 1))
    du, dv = u - cx, v - cy
    x = (np.cos(angle) * du + np.sin(angle) * dv) / scale
    y = (-np.sin(angle) * du + np.cos(angle) * dv) / scale

    background = rng.uniform(0.05, 0.6, (n, 1, 1)) + rng.normal(0, 0.15, (n, 1, 1)) * u
    skin = rng.uniform(0.55, 0.9, (n, 1, 1))
    face = _soft(np.sqrt((x / 0.68) ** 2 + (y / 0.86) ** 2) - 1.0, 12.0)
    image = background * (1 - face) + skin * face

    dark = np.zeros_like(image)
    for side in (-1.0, 1.0):
        eyes = _soft(
            np.sqrt(((x - side * 0.28) / 0.12) ** 2 + ((y + 0.18) / (0.055 * eye)) ** 2) - 1, 8
        )
        dark = np.maximum(dark, eyes)
        inner, outer = side * 0.1, side * 0.42
        brow_y = -0.38 - raise_ - 0.35 * eye * 0.1
        brows = _segment_distance(x, y, inner, brow_y + 0.09 * tilt, outer, brow_y - 0.09 * tilt)
        dark = np.maximum(dark, _soft(brows - 0.035, 60))
    # Mouth: a curve y = 0.45 - 0.16 * smile * (x / w)^2 of thickness growing with openness.
    width = 0.3 + 0.05 * np.abs(smile)
    curve = 0.45 + 0.08 * smile - 0.16 * smile * (x / width) ** 2
    half = 0.025 + 0.12 * np.clip(open_, 0, None) * (1 - (x / width) ** 2).clip(0, 1)
    mouth = _soft(np.abs(y - curve) - half, 60) * _soft(np.abs(x) - width, 60)
    dark = np.maximum(dark, mouth)
    image = image * (1 - 0.8 * dark * face)

    # Lighting gradient, occluders (a bar or a block over part of the face), sensor noise.
    light = 1 + rng.normal(0, 0.2, (n, 1, 1)) * u + rng.normal(0, 0.1, (n, 1, 1)) * v
    image = image * light
    occluded = rng.random(n) < 0.3
    ox, oy = rng.uniform(-0.9, 0.9, (2, n, 1, 1))
    ow, oh = rng.uniform(0.1, 0.45, (2, n, 1, 1))
    block = (np.abs(u - ox) < ow) & (np.abs(v - oy) < oh) & occluded[:, None, None]
    image = np.where(block, rng.uniform(0, 1, (n, 1, 1)), image)
    image = image + rng.normal(0, rng.uniform(0.01, 0.06, (n, 1, 1)), image.shape)
    return np.clip(image, 0.0, 1.0)


def _affect(features: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Valence and arousal in [-1, 1], tied to the drawn features."""
    smile, open_, tilt, raise_, eye = features.T
    valence = 0.85 * smile - 0.25 * np.abs(tilt) + rng.normal(0, 0.08, len(smile))
    arousal = -0.55 + 0.9 * open_ + 0.7 * (eye - 0.8) + 2.0 * raise_ + 0.25 * np.abs(tilt)
    arousal = arousal + rng.normal(0, 0.08, len(smile))
    return np.clip(valence, -1, 1).astype(np.float32), np.clip(arousal, -1, 1).astype(np.float32)


def _labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """Class labels drawn from the FER2013 prior (the generator's first draw)."""
    return rng.choice(len(FER2013_CLASSES), size=n, p=CLASS_PRIOR).astype(np.int32)


def make_faces(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` faces from ``seed``: image uint8 (n, 48, 48, 1), label, valence, arousal, source_id."""
    if n < 0 or seed < 0:
        raise ValueError(f"n and seed must be >= 0, got n={n}, seed={seed}")
    rng = np.random.default_rng(seed)
    labels = _labels(n, rng)
    features = CLASS_MEANS[labels] + rng.normal(0, 1, (n, len(FEATURES))) * FEATURE_JITTER
    features[:, 1] = np.clip(features[:, 1], 0, 1.2)
    features[:, 4] = np.clip(features[:, 4], 0.25, 1.8)
    chunks = [_draw(features[i : i + 512], rng) for i in range(0, n, 512)]
    images = np.concatenate(chunks) if chunks else np.zeros((0, SIZE, SIZE))
    valence, arousal = _affect(features, rng)
    return {
        "image": np.round(images * 255).astype(np.uint8)[..., None],
        "label": labels,
        "valence": valence,
        "arousal": arousal,
        "source_id": np.array([f"synthetic/{seed}/{i}" for i in range(n)]),
    }


class ArraySource:
    """A random-access source over in-memory arrays of equal length."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays["label"])

    def __getitem__(self, index: int) -> dict:
        return {k: v[index] for k, v in self.arrays.items()}


@functools.lru_cache(maxsize=16)
def _cached_faces(n: int, seed: int) -> dict[str, np.ndarray]:
    """make_faces, generated once per process; read-only, since every load shares them."""
    arrays = make_faces(n, seed)
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def class_counts(n: int, seed: int) -> np.ndarray:
    """Label counts of ``make_faces(n, seed)``, without drawing the faces."""
    labels = _labels(n, np.random.default_rng(seed))
    return np.bincount(labels, minlength=len(FER2013_CLASSES))


@SOURCES.register("synthetic")
def load(split: str, config: ml_collections.ConfigDict) -> Split:
    """Split ``split`` of ``config.synthetic`` (sizes, seed); each split has its own seed."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"synthetic split must be one of {sorted(SPLIT_OFFSETS)}, got {split!r}")
    synthetic = config.get("synthetic", ml_collections.ConfigDict())
    seed = int(synthetic.get("seed", 0))
    size = lambda s: int(synthetic.get(f"num_{s}", DEFAULT_SIZES[s]))  # noqa: E731
    if seed < 0:
        raise ValueError(f"synthetic.seed must be >= 0, got {seed}")
    arrays = _cached_faces(size(split), 1000 * seed + SPLIT_OFFSETS[split])
    counts = class_counts(size("train"), 1000 * seed)
    return Split(ArraySource(arrays), counts, FER2013_CLASSES)
