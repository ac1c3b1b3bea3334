"""The embedded synthetic faces: deterministic, FER2013-skewed, affect tied to the drawing."""

import ml_collections
import numpy as np
import pytest

from bregflax import data
from bregflax.data import synthetic


@pytest.fixture(scope="module")
def faces():
    return synthetic.make_faces(3000, seed=7)


def test_shapes_dtypes_and_determinism(faces):
    assert faces["image"].shape == (3000, 48, 48, 1) and faces["image"].dtype == np.uint8
    assert faces["label"].dtype == np.int32
    assert faces["valence"].dtype == faces["arousal"].dtype == np.float32
    small = synthetic.make_faces(64, seed=7)
    again = synthetic.make_faces(64, seed=7)
    for k in faces:
        np.testing.assert_array_equal(small[k], again[k])
    other = synthetic.make_faces(64, seed=8)
    assert not np.array_equal(small["image"], other["image"])
    assert faces["source_id"][5] == "synthetic/7/5"


def test_class_skew_follows_fer2013(faces):
    freq = np.bincount(faces["label"], minlength=7) / len(faces["label"])
    assert np.argmin(freq) == 1, "Disgust must be the rarest class"
    np.testing.assert_allclose(freq, synthetic.CLASS_PRIOR, atol=0.02)


def test_affect_in_range_and_tied_to_class(faces):
    v, a, y = faces["valence"], faces["arousal"], faces["label"]
    assert np.all(np.abs(v) <= 1) and np.all(np.abs(a) <= 1)
    mean_v = [v[y == c].mean() for c in range(7)]
    mean_a = [a[y == c].mean() for c in range(7)]
    happy, sad, angry, neutral, surprise = 3, 4, 0, 6, 5
    assert mean_v[happy] > mean_v[neutral] > max(mean_v[sad], mean_v[angry])
    assert mean_a[surprise] > mean_a[neutral] and mean_a[surprise] > mean_a[sad]


def test_classes_overlap_but_are_learnable(faces):
    """A nearest-class-mean classifier on pixels is well above chance, far below 100%."""
    x = faces["image"].reshape(len(faces["image"]), -1).astype(np.float32)
    y = faces["label"]
    train, test = slice(0, 2000), slice(2000, None)
    means = np.stack([x[train][y[train] == c].mean(0) for c in range(7)])
    pred = np.argmin(((x[test, None, :] - means[None]) ** 2).sum(-1), axis=1)
    accuracy = (pred == y[test]).mean()
    assert 1 / 7 + 0.05 < accuracy < 0.9, accuracy


def test_registry_loader():
    config = ml_collections.ConfigDict({"synthetic": {"num_train": 300, "num_val": 50, "seed": 3}})
    split = data.load("synthetic", "val", config)
    assert len(split.source) == 50
    train = data.load("synthetic", "train", config)
    labels = np.array([train.source[i]["label"] for i in range(len(train.source))])
    np.testing.assert_array_equal(split.class_counts, np.bincount(labels, minlength=7))
    assert split.class_names == data.FER2013_CLASSES
    record = split.source[0]
    assert set(record) == {"image", "label", "valence", "arousal", "source_id"}
    assert not np.array_equal(train.source[0]["image"], split.source[0]["image"])
    with pytest.raises(ValueError, match="synthetic split must be one of"):
        data.load("synthetic", "holdout", config)
    with pytest.raises(KeyError, match="unknown data source"):
        data.load("celeba", "train", config)


def test_loads_share_one_read_only_copy():
    config = ml_collections.ConfigDict({"synthetic": {"num_train": 64, "num_test": 32}})
    a, b = (data.load("synthetic", "test", config) for _ in range(2))
    assert a.source.arrays["image"] is b.source.arrays["image"], "cached in-process"
    with pytest.raises(ValueError, match="read-only"):
        a.source[0]["image"][0, 0, 0] = 1
    np.testing.assert_array_equal(
        synthetic.class_counts(64, 0),
        np.bincount(synthetic.make_faces(64, 0)["label"], minlength=7),
    )
    with pytest.raises(ValueError, match="seed"):
        data.load("synthetic", "train", ml_collections.ConfigDict({"synthetic": {"seed": -1}}))
