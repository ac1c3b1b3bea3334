"""FER2013 builder: both Kaggle formats, bad-input accounting, strict mode, reuse, errors."""

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from bregflax import data, rundir
from bregflax.data import build_report, fer2013


@pytest.fixture
def make_config(data_config):
    """``make_config(**overrides)``: a FER2013 ``config.data`` under the test's tmp_path."""
    return lambda **overrides: data_config(**{"image_size": 48, "channels": 1, **overrides})


def pixels(seed):
    return np.random.default_rng(seed).integers(0, 256, (48, 48)).astype(np.uint8)


def pixel_text(image):
    return " ".join(map(str, image.reshape(-1)))


def write_csv(path, rows, header="emotion,pixels,Usage"):
    """rows: (emotion, pixels text, usage) or a raw line string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header] + [r if isinstance(r, str) else ",".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def good_rows():
    rows = [(c, pixel_text(pixels(c)), "Training") for c in range(7)]
    rows += [(c, pixel_text(pixels(10 + c)), "PublicTest") for c in (0, 3, 3)]
    rows += [(c, pixel_text(pixels(20 + c)), "PrivateTest") for c in (6, 1)]
    return rows


def report_of(config):
    return json.loads((Path(fer2013.builder(config).data_dir) / "build_report.json").read_text())


def test_csv_splits_labels_and_records(tmp_path, make_config):
    write_csv(tmp_path / "raw" / "fer2013.csv", good_rows())
    config = make_config()
    train = data.load("fer2013", "train", config)
    assert len(train.source) == 7
    assert train.class_names == data.FER2013_CLASSES
    np.testing.assert_array_equal(train.class_counts, np.ones(7))
    record = train.source[3]
    assert record["source_id"] == "fer2013.csv:line 5"
    assert record["label"] == 3 and record["label"].dtype == np.int32
    assert np.isnan(record["valence"]) and record["arousal"].dtype == np.float32
    assert record["image"].shape == (48, 48, 1) and record["image"].dtype == np.uint8
    np.testing.assert_array_equal(record["image"][..., 0], pixels(3))
    val = data.load("fer2013", "val", config)
    assert [int(val.source[i]["label"]) for i in range(len(val.source))] == [0, 3, 3]
    np.testing.assert_array_equal(val.class_counts, train.class_counts)  # training counts
    test = data.load("fer2013", "test", config)
    assert [test.source[i]["source_id"] for i in range(2)] == [
        "fer2013.csv:line 12",
        "fer2013.csv:line 13",
    ]
    assert "tensorflow" not in sys.modules  # built and read without TensorFlow


def test_csv_with_a_byte_order_mark(tmp_path, make_config):
    """Spreadsheet programs save UTF-8 with a BOM; it must not become part of "emotion"."""
    write_csv(tmp_path / "raw" / "fer2013.csv", good_rows())
    path = tmp_path / "raw" / "fer2013.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    train = data.load("fer2013", "train", make_config())
    assert len(train.source) == 7 and int(train.source[3]["label"]) == 3


def test_other_kaggle_csv_variant(tmp_path, make_config):
    """icml_face_data.csv: columns in another order, with spaces after the commas."""
    rows = [f"{c}, Training, {pixel_text(pixels(c))}" for c in range(3)]
    write_csv(tmp_path / "raw" / "icml_face_data.csv", rows, header="emotion, Usage, pixels")
    split = data.load("fer2013", "train", make_config())
    assert len(split.source) == 3
    np.testing.assert_array_equal(split.source[2]["image"][..., 0], pixels(2))


BAD_ROWS = {
    "wrong_pixel_count": (0, " ".join(["1"] * 2303), "Training"),
    "pixels_not_numeric": (0, " ".join(["1"] * 2303 + ["x"]), "Training"),
    "pixel_out_of_range": (0, " ".join(["1"] * 2303 + ["256"]), "Training"),
    "label_out_of_range": (7, pixel_text(pixels(0)), "Training"),
    "label_not_numeric": ("happy", pixel_text(pixels(0)), "Training"),
    "unknown_usage": (0, pixel_text(pixels(0)), "Validation"),
    "malformed_row": "0,1 2 3",
}


def test_every_bad_row_is_counted_with_its_reason_and_line(tmp_path, make_config):
    rows = good_rows()
    rows[1:1] = list(BAD_ROWS.values()) + [""]  # lines 3-9 bad, line 10 blank
    write_csv(tmp_path / "raw" / "fer2013.csv", rows)
    config = make_config()
    assert len(data.load("fer2013", "train", config).source) == 7
    report = report_of(config)
    assert report["kept"] == {"train": 7, "val": 3, "test": 2}
    assert set(report["bad_input"]) == set(BAD_ROWS)
    for line, reason in enumerate(BAD_ROWS, 3):
        entry = report["bad_input"][reason]
        assert entry["count"] == 1
        assert entry["examples"][0].startswith(f"fer2013.csv:line {line}")
    assert report["label_counts"]["train"] == [1] * 7
    assert fer2013.builder(config).info.metadata["build_report"]["kept"]["train"] == 7


def test_strict_stops_at_the_first_bad_row(tmp_path, make_config):
    rows = good_rows()
    rows.insert(4, BAD_ROWS["pixels_not_numeric"])
    write_csv(tmp_path / "raw" / "fer2013.csv", rows)
    config = make_config(strict=True)
    with pytest.raises(
        build_report.BadRecordError, match=r"fer2013.csv:line 6: pixels_not_numeric"
    ):
        data.load("fer2013", "train", config)
    assert not fer2013.builder(config).is_prepared()
    # Built leniently, the prepared data still refuses a strict load.
    data.load("fer2013", "train", make_config())
    with pytest.raises(build_report.BadRecordError, match="fer2013.csv:line 6"):
        data.load("fer2013", "train", config)


def test_empty_split_is_an_error(tmp_path, make_config):
    rows = [r for r in good_rows() if r[2] != "PublicTest"]
    rows.append((9, pixel_text(pixels(0)), "PublicTest"))
    write_csv(tmp_path / "raw" / "fer2013.csv", rows)
    config = make_config()
    with pytest.raises(build_report.EmptySplitError, match="'val' has no usable records"):
        data.load("fer2013", "train", config)
    assert not fer2013.builder(config).is_prepared()


def test_split_absent_from_the_source_is_reported_and_only_an_error_when_requested(
    tmp_path, make_config
):
    write_csv(tmp_path / "raw" / "fer2013.csv", [r for r in good_rows() if r[2] != "PrivateTest"])
    config = make_config()
    assert len(data.load("fer2013", "val", config).source) == 3
    assert report_of(config)["absent_splits"] == ["test"]
    with pytest.raises(build_report.EmptySplitError, match="no split 'test' .absent"):
        data.load("fer2013", "test", config)


def test_second_load_reuses_the_prepared_data(tmp_path, monkeypatch, make_config):
    write_csv(tmp_path / "raw" / "fer2013.csv", good_rows())
    config = make_config()
    data.load("fer2013", "train", config)
    prepared = Path(fer2013.builder(config).data_dir)
    before = {p: p.stat().st_mtime_ns for p in prepared.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(fer2013.Fer2013, "_split_generators", fail)
    time.sleep(0.01)
    assert len(data.load("fer2013", "train", config).source) == 7
    assert {p: p.stat().st_mtime_ns for p in prepared.iterdir()} == before


def test_size_and_channels_build_separate_copies(tmp_path, make_config):
    write_csv(tmp_path / "raw" / "fer2013.csv", good_rows())
    small = data.load("fer2013", "train", make_config(image_size=32, channels=3))
    assert small.source[0]["image"].shape == (32, 32, 3)
    full = data.load("fer2013", "train", make_config())
    assert full.source[0]["image"].shape == (48, 48, 1)
    assert len(list((tmp_path / "tfds" / "fer2013").iterdir())) == 2


def test_not_found_says_what_and_where(tmp_path, monkeypatch, make_config):
    monkeypatch.setenv("BREGFLAX_DATA_DIR", str(tmp_path / "store"))
    config = make_config(data_dir="", manual_dir="")
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load("fer2013", "train", config)
    message = str(info.value)
    assert "Kaggle" in message and "fer2013.csv" in message
    assert str(tmp_path / "store" / "downloads" / "manual" / "fer2013") in message
    # The default manual dir is used once the files are there.
    write_csv(tmp_path / "store" / "downloads" / "manual" / "fer2013" / "fer2013.csv", good_rows())
    assert len(data.load("fer2013", "test", config).source) == 2


def write_image(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_image_folders_with_usage_prefixes(tmp_path, make_config):
    raw = tmp_path / "raw"
    for i, cls in enumerate(fer2013.CLASS_FOLDERS):
        write_image(raw / "train" / cls / f"Training_{100 + i}.jpg", pixels(i))
    write_image(raw / "test" / "happy" / "PublicTest_7.jpg", pixels(7))
    write_image(raw / "test" / "sad" / "PublicTest_8.jpg", pixels(8))
    write_image(raw / "test" / "neutral" / "PrivateTest_9.jpg", pixels(9))
    config = make_config()
    train = data.load("fer2013", "train", config)
    assert sorted(int(train.source[i]["label"]) for i in range(7)) == list(range(7))
    assert train.source[0]["source_id"] == "train/angry/Training_100.jpg"
    assert np.abs(train.source[0]["image"][..., 0].astype(int) - pixels(0)).mean() < 12  # jpeg
    val = data.load("fer2013", "val", config)
    assert [int(val.source[i]["label"]) for i in range(2)] == [3, 4]
    assert data.load("fer2013", "test", config).source[0]["source_id"].endswith("PrivateTest_9.jpg")
    assert report_of(config)["source_format"].startswith("image folders (split by Usage")


def test_image_folders_without_prefixes_carve_a_stratified_val(tmp_path, make_config):
    raw = tmp_path / "raw"
    for cls, n in (("angry", 10), ("happy", 20)):
        for i in range(n):
            write_image(raw / "train" / cls / f"im{i:03d}.png", pixels(i))
    write_image(raw / "test" / "fear" / "t.png", pixels(0))
    config = make_config(fer2013_val_fraction=0.2)
    val = data.load("fer2013", "val", config)
    labels = sorted(int(val.source[i]["label"]) for i in range(len(val.source)))
    assert labels == [0, 0, 3, 3, 3, 3]
    train = data.load("fer2013", "train", config)
    assert len(train.source) == 24
    ids = {train.source[i]["source_id"] for i in range(24)}
    assert not ids & {val.source[i]["source_id"] for i in range(6)}
    assert train.class_counts.tolist() == [8, 0, 0, 16, 0, 0, 0]
    assert len(data.load("fer2013", "test", config).source) == 1
    # Seeded: the same seed holds out the same files.
    assert fer2013.builder(config).info.splits["val"].num_examples == 6


def test_image_folder_bad_files_are_counted(tmp_path, make_config):
    raw = tmp_path / "raw"
    write_image(raw / "train" / "angry" / "Training_1.jpg", pixels(1))
    write_image(raw / "test" / "happy" / "PublicTest_2.jpg", pixels(2))
    write_image(raw / "test" / "happy" / "PrivateTest_3.jpg", pixels(3))
    (raw / "train" / "angry" / "Training_4.jpg").write_bytes(b"\xff\xd8 truncated")
    (raw / "train" / "angry" / "Training_5.txt").write_text("notes")
    write_image(raw / "train" / "contempt" / "Training_6.jpg", pixels(6))
    (raw / "train" / "angry" / ".DS_Store").write_bytes(b"\0")
    config = make_config()
    assert len(data.load("fer2013", "train", config).source) == 1
    report = report_of(config)
    assert {k: v["count"] for k, v in report["bad_input"].items()} == {
        "unreadable_image": 1,
        "not_an_image": 1,
        "unknown_class_folder": 1,
    }
    assert report["bad_input"]["unreadable_image"]["examples"] == ["train/angry/Training_4.jpg"]
    assert report["excluded"]["hidden_file"]["count"] == 1


def write_arrays_csv(path, splits):
    """A fer2013.csv of ``{usage: (images (N, 48, 48) uint8, labels)}``, in that order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write("emotion,pixels,Usage\n")
        for usage, (images, labels) in splits.items():
            for image, label in zip(images, labels, strict=True):
                f.write(f"{label},{' '.join(map(str, image.reshape(-1)))},{usage}\n")


def test_training_on_a_prepared_build(tmp_path, make_config, trained_run, read_metric):
    """The shared tiny run's faces, written as a fer2013.csv and built, train the same run.

    The same images, labels and training counts give the same first batch, so step 1's
    cross-entropy equals the shared run's; FER2013 has no valence/arousal, so the loss is
    the cross-entropy alone. (The shared run's config keeps the compiled steps cached.)
    """
    from bregflax.training import train as train_lib

    run = rundir.read_config(trained_run)
    synthetic = {
        usage: data.load("synthetic", split, run.data).source.arrays
        for usage, split in (("Training", "train"), ("PublicTest", "val"))
    }
    config = make_config()
    write_arrays_csv(
        tmp_path / "raw" / "fer2013.csv",
        {u: (a["image"][..., 0], a["label"]) for u, a in synthetic.items()},
    )
    train = data.load("fer2013", "train", config)
    np.testing.assert_array_equal(train.source[5]["image"], synthetic["Training"]["image"][5])
    run.data.source = "fer2013"
    run.data.data_dir, run.data.manual_dir = config.data_dir, config.manual_dir
    run.max_steps = 3
    train_lib.train_and_evaluate(run, tmp_path / "run")
    ce = read_metric(tmp_path / "run", "train/ce")
    np.testing.assert_array_equal(read_metric(tmp_path / "run", "train/loss"), ce)
    assert len(ce) == 3 and ce[0] == read_metric(trained_run, "train/ce")[0]
    assert len(read_metric(tmp_path / "run", "val/accuracy")) == 1


@pytest.mark.slow
def test_real_fer2013_through_the_csv(tmp_path, make_config, fer2013_dir, shrink):
    """Builds from a fer2013.csv written from the shared arrays (no PrivateTest rows)."""
    usages = (("Training", "train"), ("PublicTest", "val"))
    arrays = {u: np.load(fer2013_dir / f"{s}.npz") for u, s in usages}
    write_arrays_csv(
        tmp_path / "raw" / "fer2013.csv", {u: (a["images"], a["labels"]) for u, a in arrays.items()}
    )
    config = make_config()
    start = time.perf_counter()
    train = data.load("fer2013", "train", config)
    seconds = time.perf_counter() - start
    prepared = Path(fer2013.builder(config).data_dir)
    size = sum(p.stat().st_size for p in prepared.iterdir())
    print(f"\nFER2013 build: {seconds:.1f} s, {size / 2**20:.1f} MiB at {prepared}")
    val = data.load("fer2013", "val", config)
    assert len(train.source) == 28709 and len(val.source) == 3589
    assert train.class_counts.tolist() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    report = report_of(config)
    assert report["label_counts"]["val"] == [467, 56, 496, 895, 653, 415, 607]
    assert report["bad_input"] == {} and report["absent_splits"] == ["test"]
    for i in (0, 12345, 28708):
        record = train.source[i]
        assert record["source_id"] == f"fer2013.csv:line {i + 2}"
        np.testing.assert_array_equal(record["image"][..., 0], arrays["Training"]["images"][i])
        assert record["label"] == arrays["Training"]["labels"][i]
    np.testing.assert_array_equal(val.source[7]["image"][..., 0], arrays["PublicTest"]["images"][7])
    with pytest.raises(build_report.EmptySplitError):
        data.load("fer2013", "test", config)
    # The prepared build trains: python -m bregflax.main --config=configs/fer2013.py would.
    from bregflax import configs
    from bregflax.training import train as train_lib

    overrides = {"data.source": "fer2013", "model.name": "BReGNetTiny", "max_steps": 3}
    run = shrink(configs.get("fer2013"), **overrides, batch_size=16, eval_batch_size=256)
    run.data.data_dir, run.data.manual_dir = config.data_dir, config.manual_dir
    train_lib.train_and_evaluate(run, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3]
    assert any("val/accuracy" in r for r in records)


def test_any_number_and_any_field_length_is_a_counted_bad_row(tmp_path, make_config):
    """Issue 27: a 20-digit pixel (OverflowError), a field of 200,000 characters (over csv's
    131,072 limit), a 5000-digit label and a byte that is not UTF-8 are each counted, and the
    rows after them still load; strict mode names the line."""
    rows = good_rows()
    huge_pixel = pixel_text(pixels(1)).split()
    huge_pixel[5] = "9" * 20
    rows[1:1] = [
        (0, " ".join(huge_pixel), "Training"),  # line 3
        (0, "1 " * 100_000, "Training"),  # line 4: a 200,000-character field
        ("9" * 5000, pixel_text(pixels(2)), "Training"),  # line 5
    ]
    path = tmp_path / "raw" / "fer2013.csv"
    write_csv(path, rows)
    text = path.read_bytes().replace(b"\n", b"\n0,12 \xff\xfe 7,Training\n", 1)  # line 2
    path.write_bytes(text)
    config = make_config()
    assert len(data.load("fer2013", "train", config).source) == 7
    bad = report_of(config)["bad_input"]
    assert {k: v["count"] for k, v in bad.items()} == {
        "wrong_pixel_count": 2,
        "pixel_out_of_range": 1,
        "label_out_of_range": 1,
    }
    assert bad["pixel_out_of_range"]["examples"][0].startswith("fer2013.csv:line 4")
    strict = make_config(strict=True, image_size=48, channels=1, split_seed=1)
    with pytest.raises(build_report.BadRecordError, match=r"fer2013.csv:line 2: wrong_pixel"):
        data.load("fer2013", "train", strict)


def test_a_20_digit_pixel_or_label_is_out_of_range():
    values = ["0"] * fer2013.PIXELS
    values[7] = "1" + "0" * 19
    with pytest.raises(ValueError, match="pixel_out_of_range"):
        fer2013.parse_pixels(" ".join(values))
    values[7] = "-" + "9" * 30
    with pytest.raises(ValueError, match="pixel_out_of_range"):
        fer2013.parse_pixels(" ".join(values))
    with pytest.raises(ValueError, match="label_out_of_range"):
        fer2013.parse_label("7" * 5000, 7)
