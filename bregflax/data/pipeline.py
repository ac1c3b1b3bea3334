"""Input pipeline on grain: deterministic, resumable, per-process batches.

Global train batch ``k`` is a pure function of (seed, k, len(source)): epoch
``e = k // steps_per_epoch`` shuffles with a permutation seeded by (seed, e), the partial
last batch of an epoch is dropped, and the augmentation of the example at position ``p``
of epoch ``e`` uses row ``p`` of a table of uniform draws seeded by (seed, e). A process
yields its contiguous slice of each global batch, so the global batch (augmentation
included) is the same whatever the number of processes, and resuming at step k needs
nothing but k. grain maps step indices to batches on threads and prefetches them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import grain
import jax
import ml_collections
import numpy as np

from bregflax.data import Source

BATCH_KEYS = ("image", "label", "valence", "arousal", "mask", "source_id")
# Uniform draws per example: angle, scale, crop x, crop y, flip, contrast, brightness.
NUM_DRAWS = 7


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Full global batches in one epoch (the remainder is dropped in training)."""
    if global_batch_size < 1:
        raise ValueError(f"global batch size must be >= 1, got {global_batch_size}")
    steps = num_examples // global_batch_size
    if steps == 0:
        raise ValueError(f"{num_examples} examples make no full batch of {global_batch_size}")
    return steps


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    """Batches in one eval pass (the last one padded)."""
    return -(-num_examples // global_batch_size)


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process index {index} is not in [0, {count})")
    return index, count


def _local_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by {process_count} processes"
        )
    return global_batch_size // process_count


# --------------------------------------------------------------------------- per example


def normalize(images):
    """uint8 pixels in [0, 255] -> float32 in [-1, 1], the model's input: the one place both
    training and inference (numpy or jax arrays) normalize images."""
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def input_shape(data_config: Any) -> tuple[int, int, int, int]:
    """The shape of one input image as a batch of one: (1, size, size, channels)."""
    return (1, data_config.image_size, data_config.image_size, data_config.channels)


def to_shape(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 (H, W, C) or (H, W) -> uint8 (size, size, channels), resizing and converting."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"a record's image must be uint8 (H, W[, C]), got {image.dtype} {image.shape}"
        )
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] not in (1, 3) or 0 in image.shape:
        raise ValueError(f"a record's image must be (H, W, 1 or 3), got shape {image.shape}")
    if image.shape[:2] != (size, size):
        interp = cv2.INTER_AREA if max(image.shape[:2]) > size else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interp).reshape(size, size, -1)
    if image.shape[-1] != channels:
        if channels == 1:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
        elif channels == 3:
            image = np.repeat(image, 3, axis=-1)
        else:
            raise ValueError(f"channels must be 1 or 3, got {channels}")
    return image


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | np.bytes_) else str(value)


@dataclasses.dataclass(frozen=True)
class Augment:
    """Train-time augmentation ranges; 0 / False turns a part off."""

    crop_pad: int = 0  # random crop after reflect-padding by this many pixels
    flip: bool = False  # horizontal flip with p = 0.5
    rotate_deg: float = 0.0  # max |rotation|, degrees
    scale: float = 0.0  # max relative zoom change
    brightness: float = 0.0  # max shift, as a fraction of 255
    contrast: float = 0.0  # max relative contrast change

    @classmethod
    def from_config(cls, config: Any) -> Augment:
        """Reads ``config.augment``-style fields; missing ones are off."""
        if isinstance(config, Augment):
            return config
        get = (config or {}).get
        return cls(
            crop_pad=int(get("crop_pad", 0) or 0),
            flip=bool(get("flip", False)),
            rotate_deg=float(get("rotate_deg", 0.0) or 0.0),
            scale=float(get("scale", 0.0) or 0.0),
            brightness=float(get("brightness", 0.0) or 0.0),
            contrast=float(get("contrast", 0.0) or 0.0),
        )

    @property
    def geometric(self) -> bool:
        return bool(self.crop_pad or self.flip or self.rotate_deg or self.scale)


def affine_matrices(draws: np.ndarray, aug: Augment, size: int) -> np.ndarray:
    """(b, 2, 3) source->output maps: rotate/scale about the centre, then crop, then flip."""
    b = len(draws)
    angle = np.deg2rad(aug.rotate_deg * (2 * draws[:, 0] - 1))
    factor = 1 + aug.scale * (2 * draws[:, 1] - 1)
    c = (size - 1) / 2
    alpha, beta = factor * np.cos(angle), factor * np.sin(angle)
    m = np.zeros((b, 3, 3))
    m[:, 0] = np.stack([alpha, beta, (1 - alpha) * c - beta * c], -1)  # cv2's rotation matrix
    m[:, 1] = np.stack([-beta, alpha, beta * c + (1 - alpha) * c], -1)
    m[:, 2, 2] = 1
    # Cropping the padded image at offset d in [0, 2 * pad] shifts the content by pad - d.
    shift = aug.crop_pad - np.floor(draws[:, 2:4] * (2 * aug.crop_pad + 1))
    m[:, :2, 2] += shift
    if aug.flip:
        flipped = draws[:, 4] < 0.5
        m[flipped, 0] = -m[flipped, 0]
        m[flipped, 0, 2] += size - 1
    return m[:, :2]


def augment(images: np.ndarray, draws: np.ndarray, config: Any) -> np.ndarray:
    """Augments a batch (b, S, S, C) in [0, 255] -> float32, from (b, NUM_DRAWS) uniforms.

    Rotation, scale, padded crop and horizontal flip are one affine warp per image (reflected
    border); brightness and contrast are then applied to the whole batch at once.
    """
    aug = Augment.from_config(config)
    images = np.asarray(images, np.float32)
    draws = np.asarray(draws, np.float64).reshape(len(images), NUM_DRAWS)
    size = images.shape[1]
    if aug.geometric:
        matrices = affine_matrices(draws, aug, size)
        images = np.stack(
            [
                cv2.warpAffine(
                    image,
                    matrix,
                    (size, size),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT_101,
                ).reshape(image.shape)
                for image, matrix in zip(images, matrices, strict=True)
            ]
        )
    if aug.brightness or aug.contrast:
        shape = (-1,) + (1,) * (images.ndim - 1)
        gain = (1 + aug.contrast * (2 * draws[:, 5] - 1)).astype(np.float32).reshape(shape)
        shift = (255 * aug.brightness * (2 * draws[:, 6] - 1)).astype(np.float32).reshape(shape)
        mean = images.mean(axis=tuple(range(1, images.ndim)), keepdims=True)
        images = np.clip((images - mean) * gain + mean + shift, 0.0, 255.0)
    return images


# --------------------------------------------------------------------------- batches


@dataclasses.dataclass(frozen=True)
class _Format:
    """What every batch needs from ``config.data``, read once."""

    size: int
    channels: int
    augment: Augment

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> _Format:
        return cls(
            size=int(config.get("image_size", 48)),
            channels=int(config.get("channels", 1)),
            augment=Augment.from_config(config.get("augment", None)),
        )


def _batch(
    records: Sequence[dict], fmt: _Format, draws: np.ndarray | None, mask: np.ndarray
) -> dict[str, np.ndarray]:
    """Records -> a batch dict; augments when ``draws`` is given."""
    try:
        raw = [r["image"] for r in records]
    except KeyError:
        raise ValueError("a record has no 'image'") from None
    images = np.stack([to_shape(image, fmt.size, fmt.channels) for image in raw])
    if draws is not None:
        images = augment(images, draws, fmt.augment)
    return {
        "image": normalize(images),
        "label": np.array([r.get("label", -1) for r in records], np.int32),
        "valence": np.array([r.get("valence", np.nan) for r in records], np.float32),
        "arousal": np.array([r.get("arousal", np.nan) for r in records], np.float32),
        "mask": mask.astype(np.float32),
        "source_id": np.array([_as_str(r.get("source_id", "")) for r in records], dtype=str),
    }


@functools.lru_cache(maxsize=4)
def _epoch_tables(seed: int, epoch: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ``epoch``'s example order and per-position augmentation draws."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(n), rng.random((n, NUM_DRAWS), dtype=np.float32)


class _TrainBatch:
    """Maps a global step to this process's slice of that step's batch."""

    def __init__(self, source, config, global_batch_size, seed, process_index, process_count):
        self.source, self.seed = source, int(seed)
        self.fmt = _Format.from_config(config)
        self.global_batch_size = global_batch_size
        self.local = _local_size(global_batch_size, process_count)
        self.offset = process_index * self.local
        self.steps = steps_per_epoch(len(source), global_batch_size)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        epoch, within = divmod(int(step), self.steps)
        first = within * self.global_batch_size + self.offset
        positions = slice(first, first + self.local)
        perm, draws = _epoch_tables(self.seed, epoch, len(self.source))
        records = [self.source[int(i)] for i in perm[positions]]
        return _batch(records, self.fmt, draws[positions], np.ones(self.local))


def _threaded(dataset: grain.MapDataset, config: ml_collections.ConfigDict) -> Iterator:
    threads = max(1, int(config.get("num_threads", 2)))
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(2, 2 * threads))
    return iter(dataset.to_iter_dataset(options))


def train_batches(
    source: Source,
    config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless per-process training batches from global step ``start_step`` on."""
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    index, count = _process(process_index, process_count)
    make = _TrainBatch(source, config, global_batch_size, seed, index, count)
    dataset = grain.MapDataset.range(start_step, 2**62).map(make)
    return _threaded(dataset, config)


def eval_batches(
    source: Source,
    config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass, no augmentation; the last batch is padded and ``mask`` marks real rows."""
    index, count = _process(process_index, process_count)
    local = _local_size(global_batch_size, count)
    n = len(source)
    if n == 0:
        raise ValueError("cannot evaluate on an empty split")
    fmt = _Format.from_config(config)

    def make(b: int) -> dict[str, np.ndarray]:
        first = b * global_batch_size + index * local
        positions = np.arange(first, first + local)
        records = [source[int(p)] for p in np.minimum(positions, n - 1)]
        return _batch(records, fmt, None, positions < n)

    dataset = grain.MapDataset.range(num_eval_batches(n, global_batch_size)).map(make)
    return _threaded(dataset, config)
