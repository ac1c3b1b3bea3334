"""Input pipeline on grain: deterministic, resumable, per-process batches.

Global train batch ``k`` is a pure function of (seed, k, len(source)): epoch
``e = k // steps_per_epoch`` shuffles with a permutation seeded by (seed, e), the partial
last batch of an epoch is dropped, and each example's augmentation is seeded by
(seed, e, its position in the epoch). A process yields its contiguous slice of each
global batch, so the global batch is the same whatever the number of processes, and
resuming at step k needs nothing but k. grain maps batch indices to batches on threads
and prefetches them.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import grain
import jax
import ml_collections
import numpy as np

from bregflax.data import Source

BATCH_KEYS = ("image", "label", "valence", "arousal", "mask", "source_id")


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Full global batches in one epoch (the remainder is dropped in training)."""
    steps = num_examples // global_batch_size
    if steps == 0:
        raise ValueError(f"{num_examples} examples make no full batch of {global_batch_size}")
    return steps


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    return index, count


def _local_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by {process_count} processes"
        )
    return global_batch_size // process_count


# --------------------------------------------------------------------------- per example


def to_shape(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 (H, W, C) or (H, W) -> uint8 (size, size, channels), resizing and converting."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"a record's image must be uint8 (H, W[, C]), got {image.dtype} {image.shape}"
        )
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] not in (1, 3):
        raise ValueError(f"a record's image must have 1 or 3 channels, got shape {image.shape}")
    if image.shape[:2] != (size, size):
        interp = cv2.INTER_AREA if max(image.shape[:2]) > size else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interp).reshape(size, size, -1)
    if image.shape[-1] != channels:
        if channels == 1:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
        else:
            image = np.repeat(image, 3, axis=-1)
    return image


def augment(
    image: np.ndarray, rng: np.random.Generator, config: ml_collections.ConfigDict
) -> np.ndarray:
    """Random affine (rotation, scale), padded crop, horizontal flip, brightness and contrast.

    ``image`` is float32 (S, S, C) in [0, 255]; a missing or zero field turns its part off.
    """
    size = image.shape[0]
    rotate, scale = config.get("rotate_deg", 0.0), config.get("scale", 0.0)
    if rotate or scale:
        angle = rng.uniform(-rotate, rotate)
        factor = 1.0 + rng.uniform(-scale, scale)
        matrix = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, factor)
        image = cv2.warpAffine(
            image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        ).reshape(image.shape)
    pad = config.get("crop_pad", 0)
    if pad:
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        dy, dx = rng.integers(0, 2 * pad + 1, 2)
        image = padded[dy : dy + size, dx : dx + size]
    if config.get("flip", False) and rng.random() < 0.5:
        image = image[:, ::-1]
    brightness, contrast = config.get("brightness", 0.0), config.get("contrast", 0.0)
    if brightness or contrast:
        mean = image.mean()
        c = 1.0 + rng.uniform(-contrast, contrast)
        b = rng.uniform(-brightness, brightness) * 255.0
        image = np.clip((image - mean) * c + mean + b, 0.0, 255.0)
    return image


def _example(
    record: dict, config: ml_collections.ConfigDict, rng: np.random.Generator | None
) -> dict:
    image = to_shape(record["image"], config.get("image_size", 48), config.get("channels", 1))
    image = image.astype(np.float32)
    if rng is not None:
        image = augment(image, rng, config.get("augment", ml_collections.ConfigDict()))
    source_id = record.get("source_id", "")
    if isinstance(source_id, bytes | np.bytes_):
        source_id = source_id.decode()
    return {
        "image": image / 127.5 - 1.0,
        "label": np.int32(record.get("label", -1)),
        "valence": np.float32(record.get("valence", np.nan)),
        "arousal": np.float32(record.get("arousal", np.nan)),
        "source_id": str(source_id),
    }


def _stack(examples: list[dict], mask: np.ndarray) -> dict[str, np.ndarray]:
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["image"] = batch["image"].astype(np.float32)
    batch["mask"] = mask.astype(np.float32)
    return batch


# --------------------------------------------------------------------------- streams


class _TrainBatch:
    """Maps a global step to this process's slice of that step's batch (picklable)."""

    def __init__(self, source, config, global_batch_size, seed, process_index, process_count):
        self.source, self.config, self.seed = source, config, seed
        self.global_batch_size = global_batch_size
        self.local = _local_size(global_batch_size, process_count)
        self.offset = process_index * self.local
        self.steps = steps_per_epoch(len(source), global_batch_size)
        self._perm: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        cached = self._perm
        if cached is None or cached[0] != epoch:
            cached = (
                epoch,
                np.random.default_rng([self.seed, epoch]).permutation(len(self.source)),
            )
            self._perm = cached
        return cached[1]

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        epoch, within = divmod(int(step), self.steps)
        first = within * self.global_batch_size + self.offset
        positions = range(first, first + self.local)
        perm = self._permutation(epoch)
        examples = [
            _example(
                self.source[int(perm[p])],
                self.config,
                np.random.default_rng([self.seed, epoch, p]),
            )
            for p in positions
        ]
        return _stack(examples, np.ones(self.local))


def _threaded(dataset: grain.MapDataset, config: ml_collections.ConfigDict) -> Iterator:
    threads = int(config.get("num_threads", 2))
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
    num_batches = -(-n // global_batch_size)

    def make(b: int) -> dict[str, np.ndarray]:
        first = b * global_batch_size + index * local
        positions = np.arange(first, first + local)
        real = positions < n
        examples = [_example(source[int(min(p, n - 1))], config, None) for p in positions]
        return _stack(examples, real)

    return _threaded(grain.MapDataset.range(num_batches).map(make), config)


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    return -(-num_examples // global_batch_size)
