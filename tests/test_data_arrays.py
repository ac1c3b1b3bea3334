"""The arrays source: npz and lossless image sheets, conversion, checks, and training on it."""

import json
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from bregflax import data, rundir
from bregflax.data import arrays, convert, pipeline


def faces(n, size=12, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, size, size + 2) if channels == 1 else (n, size, size + 2, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def per_image(n, seed=0):
    rng = np.random.default_rng(seed)
    valence = rng.uniform(-1, 1, n).astype(np.float32)
    valence[1] = np.nan  # not annotated
    labels = rng.integers(0, 7, n)
    labels[2] = -1  # unlabelled
    return {
        "labels": labels,
        "valence": valence,
        "arousal": rng.uniform(-1, 1, n),
        "source_ids": np.array([f"img{i}" for i in range(n)]),
    }


def config(root="", image_size=12, channels=1, **settings):
    return ml_collections.ConfigDict(
        {
            "image_size": image_size,
            "channels": channels,
            "train_split": "train",
            "arrays": {"dir": str(root), **settings},
        }
    )


def as_records(split):
    return [split.source[i] for i in range(len(split.source))]


def test_npz_splits_records_and_training_counts(tmp_path):
    """Records carry each array as given; counts are the train labels', in every split."""
    train, val = per_image(30, seed=1), per_image(9, seed=2)
    arrays.write_split(tmp_path / "train.npz", faces(30, size=12)[..., :12], **train)
    np.savez(tmp_path / "val.npz", images=faces(9, size=12)[..., :12], labels=val["labels"])
    cfg = config(tmp_path)
    loaded = data.load("arrays", "train", cfg)
    assert loaded.class_names == data.FER2013_CLASSES
    want = np.bincount(train["labels"][train["labels"] >= 0], minlength=7)
    np.testing.assert_array_equal(loaded.class_counts, want)
    records = as_records(loaded)
    assert len(records) == 30
    for i, r in enumerate(records):
        np.testing.assert_array_equal(r["image"][..., 0], faces(30, size=12)[i, :, :12])
        assert r["image"].shape == (12, 12, 1) and r["image"].dtype == np.uint8
        assert r["label"] == train["labels"][i] and r["label"].dtype == np.int32
        np.testing.assert_equal(r["valence"], np.float32(train["valence"][i]))
        assert r["arousal"] == np.float32(train["arousal"][i]) and r["source_id"] == f"img{i}"
    assert records[2]["label"] == -1 and np.isnan(records[1]["valence"])
    val_split = data.load("arrays", "val", cfg)
    np.testing.assert_array_equal(val_split.class_counts, want)  # training counts
    first = val_split.source[4]
    assert first["source_id"] == "val.npz#4" and first["label"] == val["labels"][4]
    assert np.isnan(first["valence"]) and np.isnan(first["arousal"])
    with pytest.raises(ValueError, match="read-only"):
        first["image"][0, 0, 0] = 1
    # Without a train split there are no counts; the other splits still load.
    (tmp_path / "train.npz").unlink()
    assert len(data.load("arrays", "val", config(tmp_path, image_size=6)).class_counts) == 0


@pytest.mark.parametrize(
    ("image_format", "channels"), [("webp", 1), ("webp", 3), ("png", 1), ("png", 3)]
)
def test_sheets_read_back_bit_exact_over_several_sheets(
    tmp_path, monkeypatch, image_format, channels
):
    monkeypatch.setattr(arrays, "MAX_TILES_PER_SIDE", 3)  # 9 tiles a sheet: 3 sheets, 1 partial
    images, labels = faces(20, channels=channels, seed=3), per_image(20)
    folder = arrays.write_split(tmp_path / "val", images, image_format=image_format, **labels)
    layout = json.loads((folder / "sheets.json").read_text())
    assert layout == {
        "count": 20,
        "tile": [12, 14, channels],
        "columns": 3,
        "rows": 3,
        "files": [f"{k:05d}.{image_format}" for k in range(3)],
    }
    stored = arrays.read(folder)
    expected = images if channels == 3 else images[..., None]
    np.testing.assert_array_equal(stored["images"], expected)  # 12x14 tiles, bit-exact
    for key, value in labels.items():
        np.testing.assert_array_equal(stored[key], value)
    split = data.load("arrays", "val", config(tmp_path, image_size=12, channels=channels))
    for i in (0, 9, 19):  # loaded as the pipeline would convert the originals
        want = pipeline.to_shape(images[i], 12, channels)
        np.testing.assert_array_equal(split.source[i]["image"], want)
    assert split.source[7]["source_id"] == "img7"


def test_rgb_channel_order_survives_the_sheets(tmp_path):
    red = np.zeros((2, 8, 8, 3), np.uint8)
    red[..., 0] = 255
    arrays.write_split(tmp_path / "train", red)
    (record,) = as_records(data.load("arrays", "train", config(tmp_path, 8, 3)))[:1]
    assert record["image"][..., 0].min() == 255 and record["image"][..., 1:].max() == 0
    assert record["source_id"] == "train#0" and record["label"] == -1


def test_images_are_resized_and_converted_as_the_pipeline_does(tmp_path):
    rgb, gray = faces(5, size=20, channels=3), faces(5, size=6)[..., :6]
    arrays.write_split(tmp_path / "train.npz", rgb)
    arrays.write_split(tmp_path / "val.npz", gray)
    to_gray = data.load("arrays", "train", config(tmp_path, image_size=9, channels=1))
    to_rgb = data.load("arrays", "val", config(tmp_path, image_size=6, channels=3))
    for i in range(5):
        np.testing.assert_array_equal(to_gray.source[i]["image"], pipeline.to_shape(rgb[i], 9, 1))
        np.testing.assert_array_equal(to_rgb.source[i]["image"], pipeline.to_shape(gray[i], 6, 3))
    assert to_gray.source.arrays["images"].shape == (5, 9, 9, 1)


def test_per_split_paths_and_class_names_from_the_config(tmp_path):
    arrays.write_split(tmp_path / "a" / "mine.npz", faces(4), labels=np.array([0, 1, 1, 1]))
    arrays.write_split(tmp_path / "b" / "held", faces(3), labels=np.array([1, 0, 0]))
    cfg = config(
        "",
        train=str(tmp_path / "a" / "mine.npz"),
        val=str(tmp_path / "b" / "held"),
        class_names=("calm", "tense"),
    )
    val = data.load("arrays", "val", cfg)
    assert val.class_names == ("calm", "tense")
    assert val.class_counts.tolist() == [1, 3]
    assert [int(r["label"]) for r in as_records(val)] == [1, 0, 0]
    with pytest.raises(data.DatasetNotFoundError, match="config.data.arrays.dir"):
        data.load("arrays", "test", cfg)
    arrays.write_split(tmp_path / "c.npz", faces(2), labels=np.array([0, 2]))
    with pytest.raises(ValueError, match=r"label 2 at index 1 is out of range \[0, 2\)"):
        data.load(
            "arrays", "train", config("", train=str(tmp_path / "c.npz"), class_names=("a", "b"))
        )


def bad_npz(path, **changes):
    """Writes a valid 4-image split with ``changes`` applied (None removes a key)."""
    good = {"images": faces(4), "labels": np.arange(4), "valence": np.zeros(4)}
    np.savez(path, **{k: v for k, v in {**good, **changes}.items() if v is not None})


ERRORS = {
    "float images": (dict(images=faces(4).astype(np.float32)), "images must be uint8"),
    "flat images": (dict(images=np.zeros((4, 144), np.uint8)), "images must be uint8"),
    "4 channels": (dict(images=np.zeros((4, 8, 8, 4), np.uint8)), "1 or 3 channels"),
    "no images": (dict(images=None), "no 'images' array"),
    "no rows": (dict(images=faces(0), labels=None, valence=None), "has no images"),
    "label range": (dict(labels=np.array([0, 1, 7, 2])), "label 7 at index 2 is out of range"),
    "negative label": (dict(labels=np.array([0, -2, 1, 2])), "label -2 at index 1"),
    "float labels": (dict(labels=np.zeros(4)), "labels must be integers"),
    "valence range": (dict(valence=np.array([0, 0, 0, 1.5])), r"valence 1.5 at index 3"),
    "infinite": (dict(valence=np.array([0, np.inf, 0, 0])), "outside"),
    "int valence": (dict(valence=np.zeros(4, int)), "valence must be floats"),
    "length": (dict(labels=np.arange(3)), r"labels has shape \(3,\), expected \(4,\)"),
    "unknown key": (dict(label=np.arange(4)), r"unknown arrays \['label'\]"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_arrays_are_clear_errors_naming_the_file(tmp_path, case):
    changes, message = ERRORS[case]
    bad_npz(tmp_path / "train.npz", **changes)
    with pytest.raises(ValueError, match=message) as info:
        data.load("arrays", "train", config(tmp_path))
    assert str(tmp_path / "train.npz") in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="needs config.data.arrays.dir"):
        data.load("arrays", "train", config(""))
    with pytest.raises(data.DatasetNotFoundError, match="train.npz and .*train/sheets.json"):
        data.load("arrays", "train", config(tmp_path))
    with pytest.raises(data.DatasetNotFoundError, match="arrays.val: .*nowhere.npz does not exist"):
        data.load("arrays", "val", config(tmp_path, val=str(tmp_path / "nowhere.npz")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError, match="empty is a folder without sheets.json"):
        data.load("arrays", "train", config("", train=str(tmp_path / "empty")))
    (tmp_path / "train.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        data.load("arrays", "train", config(tmp_path))
    np.save(tmp_path / "val.npy", faces(2))
    (tmp_path / "val.npy").rename(tmp_path / "val.npz")
    with pytest.raises(ValueError, match="a single array"):
        data.load("arrays", "val", config(tmp_path))


def test_broken_sheets_are_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "MAX_TILES_PER_SIDE", 2)
    folder = arrays.write_split(tmp_path / "train", faces(6), labels=np.zeros(6, int))
    layout = json.loads((folder / "sheets.json").read_text())
    (folder / "sheets.json").write_text(json.dumps({**layout, "count": 9}))
    with pytest.raises(ValueError, match="9 images need 3 sheets of 2x2, but 2 are listed"):
        data.load("arrays", "train", config(tmp_path))
    (folder / "sheets.json").write_text(json.dumps({**layout, "columns": 3, "rows": 1}))
    with pytest.raises(ValueError, match="00000.webp: sheet is 28x24, expected 42x12"):
        data.load("arrays", "train", config(tmp_path))
    (folder / "sheets.json").write_text(json.dumps(layout))
    (folder / "00001.webp").unlink()
    with pytest.raises(ValueError, match="00001.webp: missing or not a readable image"):
        data.load("arrays", "train", config(tmp_path))
    (folder / "sheets.json").write_text("{}")
    with pytest.raises(ValueError, match="sheets.json: malformed"):
        data.load("arrays", "train", config(tmp_path))


def test_convert_command_is_lossless_and_smaller(tmp_path, capsys):
    src = tmp_path / "src"
    smooth = np.add.outer(np.arange(48), np.arange(48)).astype(np.uint8)  # compressible faces
    images = (smooth[None] + np.arange(40)[:, None, None]).astype(np.uint8)
    arrays.write_split(src / "train.npz", images, labels=np.arange(40) % 7)
    arrays.write_split(src / "val.npz", images[:5])
    convert.main([str(src), str(tmp_path / "out"), "--format=webp"])
    assert "train: " in capsys.readouterr().out
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]
    sheets = data.load("arrays", "train", config(out, image_size=48))
    plain = data.load("arrays", "train", config(src, image_size=48))
    np.testing.assert_array_equal(sheets.source.arrays["images"], plain.source.arrays["images"])
    np.testing.assert_array_equal(sheets.class_counts, plain.class_counts)
    assert sum(f.stat().st_size for f in (out / "train").iterdir()) < images.nbytes / 4
    assert convert.convert(src, tmp_path / "png", "png", ["val"]).keys() == {"val"}
    with pytest.raises(data.DatasetNotFoundError, match="no <split>.npz"):
        convert.convert(tmp_path / "out", tmp_path / "x", "webp")


def test_convert_never_writes_over_an_existing_split_or_its_input(tmp_path, capsys):
    """``convert SRC SRC --format=npz`` would rewrite the inputs in place, and a second run
    into one folder would replace the first: both are refused in one line, nothing written."""
    src = tmp_path / "src"
    arrays.write_split(src / "train.npz", faces(6), labels=np.arange(6) % 7)
    before = (src / "train.npz").read_bytes()
    with pytest.raises(SystemExit) as e:
        convert.main([str(src), str(src), "--format=npz"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "train.npz exist" in err
    assert (src / "train.npz").read_bytes() == before
    (tmp_path / "out" / "train").mkdir(parents=True)
    (tmp_path / "out" / "train" / "mine.txt").write_text("mine")
    with pytest.raises(SystemExit):
        convert.main([str(src), str(tmp_path / "out"), "--format=webp"])
    assert [p.name for p in (tmp_path / "out" / "train").iterdir()] == ["mine.txt"]
    with pytest.raises(FileExistsError, match="exists"):
        arrays.write_split(src / "train.npz", faces(2))
    assert (src / "train.npz").read_bytes() == before
    assert not [p for p in src.iterdir() if p.name.startswith(".")]  # no temporary left


def test_loading_a_source_imports_only_its_module(tmp_path):
    """synthetic and arrays load without TensorFlow Datasets (the GPU machine has none)."""
    arrays.write_split(tmp_path / "val.npz", faces(3))
    code = f"""
import sys
import ml_collections
from bregflax import data
arrays = {{"dir": {str(tmp_path)!r}}}
cfg = ml_collections.ConfigDict({{"synthetic": {{"num_val": 8}}, "arrays": arrays}})
assert len(data.load("synthetic", "val", cfg).source) == 8
assert len(data.load("arrays", "val", cfg).source) == 3
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow_datasets", "tensorflow"))
others = sorted(m for m in sys.modules if m.startswith("bregflax.data."))
print(heavy, others)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    heavy, loaded = result.stdout.split("] [")
    assert heavy == "[", heavy
    assert "bregflax.data.arrays" in loaded and "bregflax.data.synthetic" in loaded
    for other in ("fer2013", "affectnet", "aff_wild", "tfds_base"):
        assert f"bregflax.data.{other}'" not in loaded
    assert "arrays" in data.names() and "aff_wild" in data.names()
    with pytest.raises(KeyError, match="unknown data source 'celeba'; known: aff_wild, affectnet"):
        data.load("celeba", "train", config())


def test_training_on_arrays_matches_training_on_the_same_synthetic_data(
    tmp_path, trained_run, read_metric
):
    """The shared tiny run, retrained from its data written as arrays: identical losses."""
    from bregflax.training import train

    run = rundir.read_config(trained_run)
    for split in (run.data.train_split, run.data.eval_split):
        source = data.load("synthetic", split, run.data).source.arrays
        arrays.write_split(
            tmp_path / "arrays" / split,
            source["image"],
            labels=source["label"],
            valence=source["valence"],
            arousal=source["arousal"],
            source_ids=source["source_id"],
        )
    run.data.source = "arrays"
    run.data.arrays = {"dir": str(tmp_path / "arrays")}
    steps_per_epoch = run.data.synthetic.num_train // run.batch_size
    run.max_steps = steps_per_epoch  # one epoch: training and validation both compared
    train.train_and_evaluate(run, tmp_path / "run")
    losses = read_metric(tmp_path / "run", "train/loss")
    assert len(losses) == steps_per_epoch
    np.testing.assert_array_equal(losses, read_metric(trained_run, "train/loss")[: len(losses)])
    val = read_metric(tmp_path / "run", "val/loss")
    assert val[0] == read_metric(trained_run, "val/loss")[0]


@pytest.mark.slow
def test_real_fer2013_as_webp_sheets(tmp_path, fer2013_dir):
    """The shared FER2013 arrays as lossless WebP sheets: bit-exact, and small enough to carry."""
    sizes = convert.convert(fer2013_dir, tmp_path / "webp", "webp", ["train", "val"])
    assert sum(sizes.values()) < 56 * 2**20, sizes  # the npz files take 68 MiB
    cfg = config(tmp_path / "webp", image_size=48)
    train, val = (data.load("arrays", s, cfg) for s in ("train", "val"))
    assert (len(train.source), len(val.source)) == (28709, 3589)
    assert train.class_counts.tolist() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    with np.load(fer2013_dir / "val.npz") as original:
        np.testing.assert_array_equal(val.source.arrays["images"][..., 0], original["images"])
        np.testing.assert_array_equal(val.source.arrays["labels"], original["labels"])


def _npy_declaring(shape, dtype="|u1", data=b"\x00" * 64) -> bytes:
    """The bytes of an .npy whose header declares ``shape`` but holds only ``data``."""
    import io

    f = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)
    return f.getvalue() + data


def test_an_npz_header_declaring_petabytes_is_an_error_naming_the_file(tmp_path):
    """Issue 27: numpy would try to allocate what the header declares (MemoryError, naming
    no file); the header is checked against the data first."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "train.npz", "w") as z:
        z.writestr("images.npy", _npy_declaring((10**12, 48, 48)))
    with pytest.raises(ValueError, match="header declares") as info:
        data.load("arrays", "train", config(tmp_path))
    assert str(tmp_path / "train.npz") in str(info.value) and "images" in str(info.value)
