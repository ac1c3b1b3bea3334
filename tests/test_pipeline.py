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


def _train(source, config, n, **kwargs):
    kwargs = {"global_batch_size": 16, "seed": 0} | kwargs
    return _take(pipeline.train_batches(source, config, **kwargs), n)


def _draws(n, seed=0):
    return np.random.default_rng(seed).random((n, pipeline.NUM_DRAWS))


def test_batch_format(source):
    (batch,) = _train(source, _config(), 1)
    assert set(batch) == set(pipeline.BATCH_KEYS)
    assert batch["image"].shape == (16, 48, 48, 1) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].dtype == np.int32 and batch["mask"].tolist() == [1.0] * 16
    assert batch["valence"].dtype == batch["arousal"].dtype == np.float32
    assert batch["source_id"].dtype.kind == "U" and batch["source_id"][0].startswith("synthetic/1/")


def test_same_seed_same_stream_and_each_epoch_is_a_permutation(source):
    a = _train(source, _config(), 10, global_batch_size=20, seed=3)
    b = _train(source, _config(), 10, global_batch_size=20, seed=3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    other = _train(source, _config(), 1, global_batch_size=20, seed=4)
    assert not np.array_equal(a[0]["source_id"], other[0]["source_id"])
    plain = _train(source, _config(False), 10, global_batch_size=20, seed=3)
    epochs = [np.concatenate([b["source_id"] for b in plain[e * 5 : (e + 1) * 5]]) for e in (0, 1)]
    for ids in epochs:
        assert sorted(ids) == sorted(source.arrays["source_id"]), "each example once per epoch"
    assert not np.array_equal(epochs[0], epochs[1]), "a new order each epoch"


def test_partial_last_batch_is_dropped(source):
    """100 examples in batches of 16: 6 steps an epoch, 96 distinct examples, then epoch 2."""
    assert pipeline.steps_per_epoch(100, 16) == 6
    batches = _train(source, _config(False), 12)
    for e in (0, 1):
        ids = np.concatenate([b["source_id"] for b in batches[6 * e : 6 * (e + 1)]])
        assert len(ids) == len(set(ids)) == 96


def test_start_step_resumes_exactly(source):
    stream = _train(source, _config(), 9)
    for k in (3, 8):  # within the first epoch and in the second
        (resumed,) = _train(source, _config(), 1, start_step=k)
        for key in pipeline.BATCH_KEYS:
            np.testing.assert_array_equal(resumed[key], stream[k][key])


def test_process_slices_make_the_global_batch(source):
    whole = _train(source, _config(), 8, process_count=1, process_index=0)
    parts = [_train(source, _config(), 8, process_count=2, process_index=p) for p in (0, 1)]
    for step in range(8):  # augmentation included, across an epoch boundary
        for key in ("image", "source_id"):
            joined = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(joined, whole[step][key])
    with pytest.raises(ValueError, match="not divisible"):
        _train(source, _config(), 1, global_batch_size=15, process_count=2, process_index=0)
    with pytest.raises(ValueError, match="process index"):
        _train(source, _config(), 1, process_count=2, process_index=2)


def test_eval_pads_the_last_batch_and_covers_each_example_once(source):
    batches = list(pipeline.eval_batches(source, _config(), global_batch_size=32))
    assert len(batches) == pipeline.num_eval_batches(100, 32) == 4
    assert all(len(b["mask"]) == 32 and b["mask"].dtype == np.float32 for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 100 and mask[:100].all()
    ids = np.concatenate([b["source_id"] for b in batches])[mask > 0]
    assert list(ids) == [f"synthetic/1/{i}" for i in range(100)]
    first = source[0]["image"].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(batches[0]["image"][0], first, atol=1e-6)  # no augmentation
    halves = [
        list(
            pipeline.eval_batches(
                source, _config(), global_batch_size=32, process_index=p, process_count=2
            )
        )
        for p in (0, 1)
    ]
    joined = np.concatenate([np.concatenate([h[b]["mask"] for h in halves]) for b in range(4)])
    np.testing.assert_array_equal(joined, mask)


def test_other_sources_bytes_ids_and_missing_fields():
    """A TFDS-like source: RGB images of another size, bytes ids, no valence/arousal."""
    rng = np.random.default_rng(0)
    records = [
        {"image": rng.integers(0, 256, (96, 80, 3), dtype=np.uint8), "source_id": b"x/%d" % i}
        for i in range(5)
    ]
    (batch,) = list(pipeline.eval_batches(records, _config(), global_batch_size=8))
    assert batch["image"].shape == (8, 48, 48, 1)
    assert list(batch["source_id"][:5]) == [f"x/{i}" for i in range(5)]
    assert np.isnan(batch["valence"]).all() and np.isnan(batch["arousal"]).all()
    assert (batch["label"] == -1).all()
    records[2] = {"image": records[2]["image"].astype(np.float32)}
    with pytest.raises(ValueError, match="uint8"):
        list(pipeline.eval_batches(records, _config(), global_batch_size=8))


def test_resize_and_channel_conversion(source):
    batch = next(pipeline.eval_batches(source, _config(size=64, channels=3), global_batch_size=4))
    assert batch["image"].shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200
    gray = pipeline.to_shape(rgb, 6, 1)
    assert gray.shape == (6, 6, 1) and np.all(gray == round(0.587 * 200))
    up = pipeline.to_shape(np.full((4, 4), 7, np.uint8), 9, 3)
    assert up.shape == (9, 9, 3) and np.all(up == 7)
    with pytest.raises(ValueError, match="uint8"):
        pipeline.to_shape(rgb.astype(np.float32), 6, 1)
    with pytest.raises(ValueError, match="uint8"):
        pipeline.to_shape(np.zeros((2, 3, 3, 1), np.uint8), 6, 1)


def test_flip_is_horizontal_only():
    image = np.arange(48 * 48, dtype=np.float32).reshape(48, 48, 1)
    images = np.repeat(image[None], 20, axis=0)
    outs = pipeline.augment(images, _draws(20), {"flip": True})
    flipped = [o for o in outs if not np.array_equal(o, image)]
    assert 0 < len(flipped) < 20
    for o in flipped:
        np.testing.assert_array_equal(o, image[:, ::-1])


def test_crop_and_flip_match_a_padded_crop():
    """crop_pad is a crop of the reflect-padded image at offset floor(u * (2 pad + 1))."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 48, 48, 1)).astype(np.float32)
    draws, pad = _draws(12), 4
    outs = pipeline.augment(images, draws, {"crop_pad": pad, "flip": True})
    for image, u, out in zip(images, draws, outs, strict=True):
        dx, dy = np.floor(u[2:4] * (2 * pad + 1)).astype(int)
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        want = padded[dy : dy + 48, dx : dx + 48]
        np.testing.assert_array_equal(out, want[:, ::-1] if u[4] < 0.5 else want)


def test_contrast_keeps_the_mean_and_brightness_shifts_it():
    images = np.full((8, 48, 48, 1), 100.0, np.float32)
    images[:, 10:20, 10:30] = 140.0
    draws = _draws(8)
    out = pipeline.augment(images, draws, {"contrast": 0.3})
    np.testing.assert_allclose(out.mean((1, 2, 3)), images.mean((1, 2, 3)), rtol=1e-5)
    ratio = out.std((1, 2, 3)) / images.std((1, 2, 3))
    np.testing.assert_allclose(ratio, 1 + 0.3 * (2 * draws[:, 5] - 1), rtol=1e-4)
    out = pipeline.augment(images, draws, {"brightness": 0.1})
    shift = 25.5 * (2 * draws[:, 6] - 1)
    np.testing.assert_allclose(
        out - images, np.broadcast_to(shift[:, None, None, None], out.shape), atol=1e-3
    )


def test_full_augmentation_changes_images_but_keeps_range():
    image = np.full((4, 48, 48, 1), 128.0, np.float32)
    image[:, 10:20, 10:30] = 250.0
    out = pipeline.augment(image, _draws(4), ml_collections.ConfigDict(AUGMENT))
    assert out.shape == image.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 255
    assert not np.array_equal(out, image)
    np.testing.assert_array_equal(pipeline.augment(image, _draws(4), {}), image)


def test_bad_arguments(source):
    with pytest.raises(ValueError, match="no full batch"):
        pipeline.steps_per_epoch(10, 16)
    with pytest.raises(ValueError, match="start_step"):
        _train(source, _config(), 1, start_step=-1)
