"""AffectNet builder: both releases, three tasks, held-out split, crops and bad input."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bregflax import data
from bregflax.data import affectnet, build_report

COLOUR = (200, 100, 50)  # RGB of the face square
BOX = (30, 20, 40, 40)
HEADER = ",".join(affectnet.COLUMNS)


@pytest.fixture
def make_config(data_config):
    """``make_config(**overrides)``: an AffectNet ``config.data`` under the test's tmp_path."""
    defaults = {"image_size": 16, "channels": 3, "affectnet_holdout_fraction": 0.25}
    return lambda **overrides: data_config(**{**defaults, **overrides})


def write_face(path, box=BOX, shape=(100, 120)):
    image = np.zeros((*shape, 3), np.uint8)
    x, y, w, h = box
    image[y : y + h, x : x + w] = COLOUR
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])


def landmark_text(points=None):
    points = np.tile([50.0, 40.0], (68, 1)) if points is None else points
    return ";".join(f"{x:.2f};{y:.2f}" for x, y in points)


def row(rel, code, valence=0.5, arousal=-0.25, box=BOX, landmarks=None):
    box_text = ",".join(map(str, box))
    return f"{rel},{box_text},{landmark_text(landmarks)},{code},{valence},{arousal}"


def training_rows(raw):
    """Codes 0-7 four times (code 1 once more, with valence -2), codes 8-10 once."""
    rows = []
    for code in range(8):
        for i in range(4):
            rel = f"{code}/img{i}.jpg"
            write_face(raw / affectnet.IMAGES / rel)
            rows.append(row(rel, code, valence=code / 10, arousal=-i / 10))
    write_face(raw / affectnet.IMAGES / "1/nova.jpg")
    rows.append(row("1/nova.jpg", 1, valence=-2, arousal=-2))
    for code in (8, 9, 10):
        write_face(raw / affectnet.IMAGES / f"{code}/x.jpg")
        rows.append(row(f"{code}/x.jpg", code))
    return rows


def validation_rows(raw):
    rows = []
    for code in (*range(8), 8):
        write_face(raw / affectnet.IMAGES / f"val/{code}.jpg")
        rows.append(row(f"val/{code}.jpg", code, valence=0.1, arousal=0.2))
    return rows


def write_lists(raw, training, validation):
    lists = raw / affectnet.LISTS
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "training.csv").write_text("\n".join([HEADER, *training]) + "\n")
    (lists / "validation.csv").write_text("\n".join(validation) + "\n")  # no header, as released


@pytest.fixture
def csv_release(tmp_path):
    raw = tmp_path / "raw"
    write_lists(raw, training_rows(raw), validation_rows(raw))
    return raw


def records(split):
    return [split.source[i] for i in range(len(split.source))]


def report_of(config, task="cat8"):
    path = Path(affectnet.builder(config, task).data_dir) / "build_report.json"
    return json.loads(path.read_text())


def test_cat8_splits_labels_crops(tmp_path, csv_release, make_config):
    config = make_config()
    train = data.load("affectnet", "train", config)
    holdout = data.load("affectnet", "holdout", config)
    val = data.load("affectnet", "val", config)
    assert (len(train.source), len(holdout.source), len(val.source)) == (25, 8, 8)
    assert train.class_names == affectnet.AFFECTNET_CLASSES
    assert train.class_counts.tolist() == [3, 4, 3, 3, 3, 3, 3, 3]
    assert sorted(int(r["label"]) for r in records(holdout)) == list(range(8))
    assert [int(r["label"]) for r in records(val)] == list(range(8))
    first = val.source[0]
    assert first["source_id"] == "Manually_Annotated_Images/val/0.jpg"
    assert first["image"].shape == (16, 16, 3)
    assert np.abs(first["image"][2:-2, 2:-2].astype(int) - COLOUR).max() <= 6  # the face box
    assert first["valence"] == np.float32(0.1) and first["arousal"] == np.float32(0.2)
    nova = [r for r in records(train) + records(holdout) if r["source_id"].endswith("nova.jpg")]
    assert len(nova) == 1 and np.isnan(nova[0]["valence"]) and nova[0]["label"] == 1
    report = report_of(config)
    assert {k: v["count"] for k, v in report["excluded"].items()} == {
        "code_8_none": 2,
        "code_9_uncertain": 1,
        "code_10_no_face": 1,
    }
    assert report["bad_input"] == {}


def test_cat7_and_va_tasks(tmp_path, csv_release, make_config):
    config = make_config()
    cat7 = data.load("affectnet7", "train", config)
    assert cat7.class_names == affectnet.AFFECTNET_CLASSES[:7]
    assert len(cat7.source) == 22 and max(int(r["label"]) for r in records(cat7)) == 6
    assert report_of(config, "cat7")["excluded"]["code_7_contempt"]["count"] == 5
    va_train = data.load("affectnet_va", "train", config)
    va = records(va_train) + records(data.load("affectnet_va", "holdout", config))
    assert len(va) == 35  # 36 training rows, one with valence -2
    assert all(np.isfinite(r["valence"]) and np.isfinite(r["arousal"]) for r in va)
    assert {int(r["label"]) for r in va if "/8/" in r["source_id"]} == {-1}
    excluded = report_of(config, "va")["excluded"]
    assert {k: v["count"] for k, v in excluded.items()} == {"va_not_annotated(-2)": 1}
    # The held-out images are drawn before the task's exclusions: the same in every task.
    held8 = {r["source_id"] for r in records(data.load("affectnet", "holdout", config))}
    held_va = {r["source_id"] for r in va[len(va_train.source) :]}
    assert held8 - held_va <= {"Manually_Annotated_Images/1/nova.jpg"}
    assert held_va - held8 <= {f"Manually_Annotated_Images/{c}/x.jpg" for c in (8, 9, 10)}


BAD = {
    "box_outside_image": dict(box=(500, 20, 40, 40)),
    "degenerate_box": dict(box=(30, 20, 0, 40)),
    "box_not_numeric": dict(box=(30, 20, "wide", 40)),
    "missing_image": dict(rel="9/none.jpg"),
    "unreadable_image": dict(rel="9/corrupt.jpg"),
    "label_out_of_range": dict(code=11),
    "label_not_numeric": dict(code="happy"),
    "valence_not_numeric": dict(valence="abc"),
    "arousal_out_of_range": dict(arousal=1.5),
}


def bad_rows(raw):
    write_face(raw / affectnet.IMAGES / "9/ok.jpg")
    (raw / affectnet.IMAGES / "9/corrupt.jpg").write_bytes(b"\xff\xd8\xff broken")
    rows = []
    for fields in BAD.values():
        fields = {"rel": "9/ok.jpg", "code": 1, **fields}
        rows.append(row(fields.pop("rel"), **fields))
    return rows + ["1/img0.jpg,30,20,40"]  # malformed: too few fields


def test_every_bad_row_is_counted(tmp_path, make_config):
    raw = tmp_path / "raw"
    training = training_rows(raw)
    write_lists(raw, training + bad_rows(raw), validation_rows(raw))
    config = make_config()
    assert len(data.load("affectnet", "train", config).source) == 25
    report = report_of(config)
    assert set(report["bad_input"]) == set(BAD) | {"malformed_row"}
    for line, reason in enumerate([*BAD, "malformed_row"], len(training) + 2):
        entry = report["bad_input"][reason]
        assert entry["count"] == 1, reason
        where = f"Manually_Annotated_file_lists/training.csv:line {line}"
        assert entry["examples"][0].startswith(where), (reason, entry)


def test_strict_names_file_and_line(tmp_path, make_config):
    raw = tmp_path / "raw"
    training = training_rows(raw)
    write_lists(raw, training + bad_rows(raw)[5:], validation_rows(raw))
    line = len(training) + 2
    with pytest.raises(build_report.BadRecordError, match=f"training.csv:line {line}: label_out"):
        data.load("affectnet", "train", make_config(strict=True))


def test_empty_official_validation_is_an_error(tmp_path, make_config):
    raw = tmp_path / "raw"
    write_lists(raw, training_rows(raw), [row("val/0.jpg", 12)])
    with pytest.raises(build_report.EmptySplitError, match="'val' has no usable records"):
        data.load("affectnet", "train", make_config())


def test_aligned_build_reads_landmarks(tmp_path, make_config):
    raw = tmp_path / "raw"
    eyes = np.tile([50.0, 40.0], (68, 1))
    eyes[36:42], eyes[42:48] = (40, 35), (60, 45)
    training = [row(f"{c}/img0.jpg", c, landmarks=eyes) for c in range(8)] + [
        "0/img1.jpg,30,20,40,40,1;2;3,0,0.1,0.1"
    ]
    for c in range(8):
        write_face(raw / affectnet.IMAGES / f"{c}/img0.jpg")
    write_face(raw / affectnet.IMAGES / "0/img1.jpg")
    write_lists(raw, training, validation_rows(raw))
    config = make_config(face_align=True, face_margin=0.25, affectnet_holdout_fraction=0)
    split = data.load("affectnet", "train", config)
    assert len(split.source) == 8
    assert "cat8_aligned_16px_rgb_margin0.25" in affectnet.builder(config).data_dir
    assert report_of(config)["bad_input"]["landmarks_malformed"]["count"] == 1
    assert data.load("affectnet", "train", make_config()).source[0]["image"].shape == (
        16,
        16,
        3,
    )


def save_text(path, text):
    np.save(path, np.array(text))  # AffectNet's .npy files hold strings


def write_npy_release(raw, folder, items):
    """items: (stem, exp, val, aro) with None to leave a file out."""
    for stem, exp, val, aro in items:
        write_face(raw / folder / "images" / f"{stem}.jpg", box=(0, 0, 224, 224), shape=(224, 224))
        annotations = raw / folder / "annotations"
        annotations.mkdir(parents=True, exist_ok=True)
        for kind, value in (("exp", exp), ("val", val), ("aro", aro)):
            if value is not None:
                save_text(annotations / f"{stem}_{kind}.npy", value)
        np.save(annotations / f"{stem}_lnd.npy", np.full(136, 100.0))


def test_npy_release(tmp_path, make_config):
    raw = tmp_path / "raw"
    train = [(str(i), str(i % 8), "0.25", "-0.5") for i in range(16)]
    train += [("100", None, "0.1", "0.1"), ("101", "12", "0.1", "0.1"), ("102", "3", "-2", "-2")]
    train += [("103", "1", None, "0.1")]
    write_npy_release(raw, "train_set", train)
    write_npy_release(raw, "val_set", [(str(i), str(i), "0.75", "0.5") for i in range(8)])
    save_text(raw / "val_set" / "annotations" / "55_exp.npy", "1")  # no image
    config = make_config(affectnet_holdout_fraction=0.5)
    split = data.load("affectnet", "train", config)
    # 17 usable (2 per code, code 3 once more with valence -2): half of each code held out.
    holdout = data.load("affectnet", "holdout", config)
    assert (len(split.source), len(holdout.source)) == (8, 9)
    assert split.class_counts.tolist() == [1] * 8
    val = records(data.load("affectnet", "val", config))
    assert [r["source_id"] for r in val[:3]] == [f"val_set/images/{i}.jpg" for i in range(3)]
    assert [int(r["label"]) for r in val] == list(range(8))
    assert val[0]["valence"] == np.float32(0.75)
    assert (np.abs(val[0]["image"].astype(int) - COLOUR) <= 4).all()  # whole 224x224 crop
    report = report_of(config)
    assert {k: v["count"] for k, v in report["bad_input"].items()} == {
        "missing_annotation": 2,
        "label_out_of_range": 1,
        "missing_image": 1,
    }
    assert report["source_format"].startswith("train_set/")
    va = [data.load("affectnet_va", s, config).source for s in ("train", "holdout")]
    assert sum(map(len, va)) == 16


def test_not_found_names_the_form_and_folder(tmp_path, make_config):
    config = make_config(manual_dir="")
    for source in ("affectnet", "affectnet7", "affectnet_va"):
        with pytest.raises(data.DatasetNotFoundError) as info:
            data.load(source, "val", config)
        assert "mohammadmahoor.com/affectnet" in str(info.value)
        assert str(tmp_path / "tfds" / "downloads" / "manual" / "affectnet") in str(info.value)
