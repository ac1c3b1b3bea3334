"""The grain input pipeline: determinism, epochs, resumption, per-process slices, padding."""

import itertools

import ml_collections
import numpy as np
import pytest

from bregflax.data import pipeline
from bregflax.data.synthetic import ArraySource, make_faces

AUGMENT = {
    "crop_pad": 4,
    "flip": True,
    "rotate_deg": 10.0,
    "scale": 0.1,
    "brightness": 0.2,
    "contrast": 0.2,
}


def _config(augment=True, size=48, channels=1):
    return ml_collections.ConfigDict(
        {
            "image_size": size,
            "channels": channels,
            "num_threads": 2,
            "augment": AUGMENT if augment else {},
        }
    )


@pytest.fixture(scope="module")
def source():
    return ArraySource(make_faces(100, seed=1))


def _take(iterator, n):
    return list(itertools.islice(iterator, n))


def test_batch_format(source):
    batch = next(pipeline.train_batches(source, _config(), global_batch_size=16, seed=0))
    assert batch["image"].shape == (16, 48, 48, 1) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].dtype == np.int32 and batch["mask"].tolist() == [1.0] * 16
    assert batch["source_id"][0].startswith("synthetic/1/")


def test_same_seed_same_stream_and_each_epoch_is_a_permutation(source):
    a = _take(pipeline.train_batches(source, _config(), global_batch_size=20, seed=3), 10)
    b = _take(pipeline.train_batches(source, _config(), global_batch_size=20, seed=3), 10)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    plain = _take(pipeline.train_batches(source, _config(False), global_batch_size=20, seed=3), 10)
    epochs = [np.concatenate([b["source_id"] for b in plain[e * 5 : (e + 1) * 5]]) for e in (0, 1)]
    for ids in epochs:
        assert len(set(ids)) == 100, "each example exactly once per epoch"
    assert not np.array_equal(epochs[0], epochs[1]), "a new order each epoch"


def test_start_step_resumes_exactly(source):
    stream = _take(pipeline.train_batches(source, _config(), global_batch_size=16, seed=0), 9)
    resumed = next(
        pipeline.train_batches(source, _config(), global_batch_size=16, seed=0, start_step=8)
    )
    np.testing.assert_array_equal(resumed["image"], stream[8]["image"])
    np.testing.assert_array_equal(resumed["source_id"], stream[8]["source_id"])


def test_process_slices_make_the_global_batch(source):
    whole = _take(
        pipeline.train_batches(
            source, _config(), global_batch_size=16, seed=0, process_count=1, process_index=0
        ),
        3,
    )
    parts = [
        _take(
            pipeline.train_batches(
                source, _config(), global_batch_size=16, seed=0, process_count=2, process_index=p
            ),
            3,
        )
        for p in (0, 1)
    ]
    for step in range(3):
        joined = np.concatenate([parts[0][step]["image"], parts[1][step]["image"]])
        np.testing.assert_array_equal(joined, whole[step]["image"])
    with pytest.raises(ValueError, match="not divisible"):
        next(
            pipeline.train_batches(
                source, _config(), global_batch_size=15, seed=0, process_count=2, process_index=0
            )
        )


def test_eval_pads_the_last_batch_and_covers_each_example_once(source):
    batches = list(pipeline.eval_batches(source, _config(), global_batch_size=32))
    assert len(batches) == 4 and all(len(b["mask"]) == 32 for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 100 and mask[:100].all()
    ids = np.concatenate([b["source_id"] for b in batches])[mask > 0]
    assert list(ids) == [f"synthetic/1/{i}" for i in range(100)]
    first = source[0]["image"].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(batches[0]["image"][0], first, atol=1e-6)  # no augmentation


def test_resize_and_channel_conversion(source):
    batch = next(pipeline.eval_batches(source, _config(size=64, channels=3), global_batch_size=4))
    assert batch["image"].shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200
    gray = pipeline.to_shape(rgb, 6, 1)
    assert gray.shape == (6, 6, 1) and np.all(gray == round(0.587 * 200))
    with pytest.raises(ValueError, match="uint8"):
        pipeline.to_shape(rgb.astype(np.float32), 6, 1)


def test_flip_is_horizontal_only():
    image = np.arange(48 * 48, dtype=np.float32).reshape(48, 48, 1)
    config = ml_collections.ConfigDict({"flip": True})
    outs = [pipeline.augment(image, np.random.default_rng(s), config) for s in range(20)]
    flipped = [o for o in outs if not np.array_equal(o, image)]
    assert 0 < len(flipped) < 20
    for o in flipped:
        np.testing.assert_array_equal(o, image[:, ::-1])


def test_augmentation_changes_images_but_keeps_range():
    image = np.full((48, 48, 1), 128.0, np.float32)
    image[10:20, 10:30] = 250.0
    out = pipeline.augment(image, np.random.default_rng(0), ml_collections.ConfigDict(AUGMENT))
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 255
    assert not np.array_equal(out, image)


def test_too_few_examples_for_a_batch(source):
    with pytest.raises(ValueError, match="no full batch"):
        pipeline.steps_per_epoch(10, 16)
