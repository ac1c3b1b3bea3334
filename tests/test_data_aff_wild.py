"""Aff-Wild builder: tiny MJPG videos, per-frame boxes and values, splits by video."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bregflax import data
from bregflax.data import aff_wild, build_report

COLOUR = (200, 100, 50)  # RGB
BOX = (16, 12, 24, 24)


@pytest.fixture
def make_config(data_config):
    """``make_config(**overrides)``: the tiny Aff-Wild ``config.data`` these tests build."""

    def make(**overrides):
        defaults = dict(image_size=16, channels=3, aff_wild_stride=3, aff_wild_val_fraction=0.34)
        return data_config(**{**defaults, **overrides})

    return make


def write_video(path, frames=12, box=BOX):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    x, y, w, h = box
    for _ in range(frames):
        frame = np.zeros((64, 64, 3), np.uint8)
        frame[y : y + h, x : x + w] = COLOUR[::-1]  # BGR
        writer.write(frame)
    writer.release()


def pts_text(points):
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    return f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n"


def write_boxes(raw, split, video, frames=12, box=BOX, kind="bboxes"):
    x, y, w, h = box
    corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    folder = raw / kind / split / video
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(1, frames + 1):
        (folder / f"{k}.pts").write_text(pts_text(corners))


def write_values(raw, video, valence, arousal):
    for kind, values in (("valence", valence), ("arousal", arousal)):
        path = raw / "annotations" / "train" / kind / f"{video}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(map(str, values)) + "\n")


def add_video(raw, split, video, frames=12, suffix=".avi", annotate=True):
    write_video(raw / "videos" / split / f"{video}{suffix}", frames)
    write_boxes(raw, split, video, frames)
    if annotate and split == "train":
        write_values(
            raw,
            video,
            [k / 100 for k in range(1, frames + 1)],
            [-k / 100 for k in range(1, frames + 1)],
        )


@pytest.fixture
def release(tmp_path):
    raw = tmp_path / "raw"
    for video in ("1", "2", "3"):
        add_video(raw, "train", video)
    add_video(raw, "test", "9", frames=6, suffix=".mp4")
    return raw


def records(split):
    return [split.source[i] for i in range(len(split.source))]


def video_of(record):
    return record["source_id"].split("#")[0]


def report_of(config):
    path = Path(aff_wild.builder(config).data_dir) / "build_report.json"
    return json.loads(path.read_text())


def test_splits_by_video_values_and_crops(release, make_config):
    config = make_config()
    train, val, test = (data.load("aff_wild", s, config) for s in ("train", "val", "test"))
    assert (len(train.source), len(val.source), len(test.source)) == (8, 4, 2)
    assert train.class_names == () and train.class_counts.shape == (0,)
    train_videos = {video_of(r) for r in records(train)}
    val_videos = {video_of(r) for r in records(val)}
    assert len(train_videos) == 2 and len(val_videos) == 1 and not train_videos & val_videos
    first = records(train)[1]
    video = video_of(first)
    assert first["source_id"] == f"{video}#frame=4"
    assert first["valence"] == np.float32(0.04) and first["arousal"] == np.float32(-0.04)
    assert first["label"] == -1 and first["image"].shape == (16, 16, 3)
    assert np.abs(first["image"][2:-2, 2:-2].astype(int) - COLOUR).max() <= 12  # the box
    test_ids = [r["source_id"] for r in records(test)]
    assert test_ids == ["videos/test/9.mp4#frame=1", "videos/test/9.mp4#frame=4"]
    assert all(np.isnan(r["valence"]) and np.isnan(r["arousal"]) for r in records(test))


def test_bad_input_is_counted_by_reason(tmp_path, make_config):
    raw = tmp_path / "raw"
    for video in ("1", "2", "3", "5"):
        add_video(raw, "train", video, annotate=video != "5")
    (raw / "videos" / "train" / "4.avi").write_bytes(b"not a video" * 20)
    write_values(raw, "4", [0.1] * 12, [0.1] * 12)
    valence = [k / 100 for k in range(1, 13)]
    arousal = [-v for v in valence]
    valence[3], arousal[6] = "abc", 1.5  # frames 4 and 7 of video 1
    write_values(raw, "1", valence, arousal)
    write_values(raw, "2", [0.1] * 6, [0.1] * 6)  # frames 7 and 10 have no values
    write_values(raw, "3", [0.0] * 15, [0.0] * 15)  # three lines past the last frame
    boxes = raw / "bboxes" / "train" / "3"
    (boxes / "4.pts").unlink()
    (boxes / "7.pts").write_text("version: 1\nn_points: 4\n{\n1 2\n}\n")
    (boxes / "10.pts").write_text(pts_text([(70, 70), (90, 70), (90, 90), (70, 90)]))
    config = make_config(aff_wild_val_fraction=0.0)
    train = data.load("aff_wild", "train", config)
    assert len(train.source) == 2 + 2 + 1  # videos 1, 2, 3
    report = report_of(config)
    assert report["absent_splits"] == ["test", "val"]
    counts = {k: v["count"] for k, v in report["bad_input"].items()}
    assert counts == {
        "unreadable_video": 1,
        "missing_annotation": 1,
        "valence_not_numeric": 1,
        "arousal_out_of_range": 1,
        "no_annotation_for_frame": 2,
        "malformed_pts": 1,
        "box_outside_image": 1,
    }
    examples = {k: v["examples"][0] for k, v in report["bad_input"].items()}
    assert examples["valence_not_numeric"] == "annotations/train/valence/1.txt:line 4"
    assert examples["arousal_out_of_range"] == "annotations/train/arousal/1.txt:line 7"
    assert examples["unreadable_video"] == "videos/train/4.avi"
    assert examples["missing_annotation"] == "annotations/train/valence/5.txt"
    assert examples["no_annotation_for_frame"] == "videos/train/2.avi#frame=7"
    assert examples["malformed_pts"] == "bboxes/train/3/7.pts"
    assert examples["box_outside_image"].startswith("bboxes/train/3/10.pts")
    assert report["excluded"]["no_face_box"] == {
        "count": 1,
        "examples": ["videos/train/3.avi#frame=4"],
    }
    assert report["notes"]["annotation_lines_without_frame"]["count"] == 1


def test_strict_names_file_and_line(release, make_config):
    write_values(release, "2", [0.1, 0.2, "oops"] + [0.1] * 9, [0.1] * 12)
    config = make_config(strict=True, aff_wild_stride=1)
    with pytest.raises(build_report.BadRecordError, match=r"valence/2.txt:line 3: valence_not"):
        data.load("aff_wild", "train", config)
    assert not aff_wild.builder(config).is_prepared()


def test_empty_split_is_an_error(release, make_config):
    (release / "videos" / "test" / "9.mp4").write_bytes(b"broken")
    with pytest.raises(build_report.EmptySplitError, match="'test' has no usable records"):
        data.load("aff_wild", "train", make_config())


def test_box_folder_variants_and_alignment(tmp_path, make_config):
    raw = tmp_path / "raw"
    write_video(raw / "videos" / "train" / "1.avi", 6)
    write_boxes(raw, "train/train", "1", 6, kind="bboxs")  # bboxs/train/train/1/<k>.pts
    write_values(raw, "1", [0.5] * 6, [0.5] * 6)
    eyes = np.tile([28.0, 24.0], (68, 1))
    eyes[36:42], eyes[42:48] = (22, 20), (34, 26)
    marks = raw / "landmarks" / "train" / "1"
    marks.mkdir(parents=True)
    (marks / "1.pts").write_text(pts_text(eyes))
    config = make_config(face_align=True, aff_wild_val_fraction=0.0)
    assert len(data.load("aff_wild", "train", config).source) == 1  # frame 1
    assert report_of(config)["excluded"]["no_landmarks"]["count"] == 1  # frame 4
    unaligned = make_config(aff_wild_val_fraction=0.0, aff_wild_stride=1)
    assert len(data.load("aff_wild", "train", unaligned).source) == 6


def test_second_load_reuses_the_prepared_data(release, monkeypatch, make_config):
    config = make_config()
    data.load("aff_wild", "train", config)
    prepared = Path(aff_wild.builder(config).data_dir)
    before = {p: p.stat().st_mtime_ns for p in prepared.iterdir()}
    monkeypatch.setattr(aff_wild.AffWild, "plan", lambda *a: pytest.fail("rebuilt"))
    assert len(data.load("aff_wild", "val", config).source) == 4
    assert {p: p.stat().st_mtime_ns for p in prepared.iterdir()} == before
    other = make_config(aff_wild_stride=1, image_size=8)
    with pytest.raises(pytest.fail.Exception, match="rebuilt"):
        data.load("aff_wild", "train", other)  # a new stride is a new copy


def test_annotation_lines_keep_their_frame_numbers(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("0.1\n\n0.3\n\n\n")
    assert aff_wild.read_lines(path) == ["0.1", "", "0.3"]  # line 2 stays frame 2


def test_pts_parsing(tmp_path):
    path = tmp_path / "a.pts"
    path.write_text(pts_text([(1, 2), (3, 4.5)]))
    np.testing.assert_array_equal(aff_wild.read_pts(path), [[1, 2], [3, 4.5]])
    assert aff_wild.points_box(np.array([[1, 2], [5, 3], [2, 8]])) == (1, 2, 4, 6)
    for text in ("", "version: 1\nn_points: 3\n{\n1 2\n}\n", "n_points: 1\n{\n1 x\n}\n"):
        path.write_text(text)
        with pytest.raises(ValueError, match="malformed_pts"):
            aff_wild.read_pts(path)


def test_not_found_names_the_request_and_folder(tmp_path, make_config):
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load("aff_wild", "train", make_config())
    assert "ibug.doc.ic.ac.uk" in str(info.value)
    assert str(tmp_path / "raw") in str(info.value)
