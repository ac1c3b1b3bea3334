"""The inference engine: frames, face boxes, crops, batching across frames, rows."""

import dataclasses
import functools
import os
import threading
import tracemalloc
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest

from bregflax import configs
from bregflax.data import faces, media
from bregflax.inference import detect, predict
from bregflax.inference import engine as inference
from bregflax.inference import frames as frames_lib
from bregflax.inference.boxes import Boxes
from bregflax.inference.predictor import Predictor
from bregflax.nn import models


def write_video(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 64))
    for k in range(frames):
        writer.write(np.full((64, 64, 3), 10 * k, np.uint8))
    writer.release()
    return path


def test_frames_of_photos_videos_and_bad_files(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((10, 20), 50, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    write_video(tmp_path / "clip.avi", 10)

    def frames(name, every=1):
        return list(frames_lib.frames(tmp_path / name, f"sub/{name}", every))

    (photo,) = frames("a.png")
    assert photo.image.shape == (10, 20, 3) and photo.frame is None and photo.rel == "sub/a.png"
    assert [f.error for f in frames("missing.png")] == ["no such file"]
    assert [f.error for f in frames("broken.jpg")] == ["cannot decode image"]
    assert [f.error for f in frames("broken.mp4")] == ["cannot decode video (no frames read)"]
    video = frames("clip.avi", every=4)
    assert [(f.frame, f.time_s) for f in video] == [(0, 0.0), (4, 0.4), (8, 0.8)]
    assert [round(float(f.image.mean()) / 10) for f in video] == [0, 4, 8]


def test_frames_a_video_lacks_are_named(tmp_path, monkeypatch):
    class Video:  # frames 0-9 in the header; 2 and 4 fail to decode; the file ends after 7
        def __init__(self, path, every):
            self.every, self.fps, self.frames_read, self.frame_count = every, 10.0, 0, 10

        def time_s(self, index):
            return index / self.fps

        def ends_early(self):
            return self.frame_count > self.frames_read

        def time_note(self):
            return ""

        def __iter__(self):
            for index in range(0, 7):
                self.frames_read += 1
                if index % self.every == 0:
                    yield index, None if index in (2, 4) else np.zeros((4, 4, 3), np.uint8)

    monkeypatch.setattr(inference.media, "Video", Video)
    write_video(tmp_path / "v.avi", 1)
    got = list(frames_lib.frames(tmp_path / "v.avi", "v.avi", 2))
    assert [f.frame for f in got[:-1]] == [0, 6]
    assert got[-1].image is None and got[-1].warning == (
        "frames 7-9 missing: only 7 of the 10 frames its header gives could be read "
        "(truncated or damaged file?); frame(s) 2, 4 could not be decoded"
    )
    (row,) = inference.rows_for(got[-1], [], "", {}, (), [])
    assert row["status"] == "warning" and row["error"] == got[-1].warning


def test_face_boxes_prefer_the_users_for_that_frame(tmp_path):
    image = np.zeros((30, 40, 3), np.uint8)
    key = str((tmp_path / "v.mp4").resolve())
    boxes = Boxes({(key, 2): [(1, 1, 5, 5)], (key, None): [(2, 2, 6, 6)]})
    boxes.lines = {(key, 2): [2], (key, None): [3]}
    at = lambda path, frame: inference.Frame(str(path), image, frame)  # noqa: E731
    options = inference.Options(detect=False, boxes=boxes)
    assert inference.face_boxes(at(tmp_path / "v.mp4", 2), options, None) == (
        [(1, 1, 5, 5)],
        "user",
    )
    assert boxes.unmatched() == [f"--boxes:3 ({key}, every frame read has its own rows)"]
    assert inference.face_boxes(at(tmp_path / "v.mp4", 5), options, None)[0] == [(2, 2, 6, 6)]
    assert boxes.unmatched() == []
    # A file without a row has no face, unless the user asks for a fallback.
    assert inference.face_boxes(at(tmp_path / "w.png", None), options, None) == ([], "user")
    fallback = dataclasses.replace(options, boxes_fallback=True)
    other = inference.face_boxes(at(tmp_path / "w.png", None), fallback, None)
    assert other == ([(0, 0, 40, 30)], "full_image")
    detected = inference.Options(boxes=boxes, boxes_fallback=True)
    got = inference.face_boxes(at(tmp_path / "w.png", None), detected, lambda im: [(3, 3, 9, 9)])
    assert got == ([(3, 3, 9, 9)], "detector")


@pytest.mark.parametrize(
    "margin, min_face, batch_size, message",
    [
        (float("nan"), 24, 1, "margin"),
        (-0.1, 24, 1, "margin"),
        (1.5, 24, 1, "margin"),
        (0.0, float("inf"), 1, "min_face"),
        (0.0, -1, 1, "min_face"),
        (0.0, 24, 0, "batch_size"),
    ],
)
def test_options_are_checked(margin, min_face, batch_size, message):
    with pytest.raises(ValueError, match=message):
        inference.Options(margin=margin, min_face=min_face, batch_size=batch_size)
    inference.Options(margin=1.0, min_face=0.1)  # the ends of the ranges are fine


def test_ranges():
    assert frames_lib.ranges([]) == ""
    assert frames_lib.ranges([9, 0, 4, 5, 6, 7]) == "0, 4-7, 9"
    assert frames_lib.ranges(range(0, 20, 2), most=3) == "0, 2, 4 and 7 more"


class BrightnessModel:
    """Stands in for a Predictor: each crop's mean brightness m gives probs (1 - m, m) and
    valence/arousal (m, -m), so every row can be traced back to its crop."""

    image_size, channels, class_names, has_va = 48, 1, ("dark", "bright"), True

    def __init__(self):
        self.batches = []

    def predict_faces(self, crops):
        self.batches.append(len(crops))
        m = crops.reshape(len(crops), -1).mean(1) / 255
        return {"probs": np.stack([1 - m, m], -1), "va": np.stack([m, -m], -1)}


@pytest.mark.parametrize(
    "batch_size, batches",
    [(1, [1, 1, 1, 1, 1, 1, 3]), (2, [2, 2, 1, 1, 3]), (64, [4, 1, 1, 3])],
)
def test_crops_are_batched_within_a_file_and_rows_keep_their_face(
    tmp_path, monkeypatch, batch_size, batches
):
    """A video's frames share batches; a file's rows all come before the next file is read."""
    levels = {"crop3.png": 30, "crop4.png": 60, "scene.png": (90, 150, 210)}
    scene = np.full((60, 200), 250, np.uint8)
    for i, level in enumerate(levels["scene.png"]):
        scene[6:54, 10 + 60 * i : 58 + 60 * i] = level
    cv2.imwrite(str(tmp_path / "scene.png"), scene)
    for name in ("crop3.png", "crop4.png"):
        cv2.imwrite(str(tmp_path / name), np.full((48, 48), levels[name], np.uint8))
    write_video(tmp_path / "clip.avi", 4)  # frame k is a flat 10 * k
    boxes = {
        (str((tmp_path / "scene.png").resolve()), None): [
            *((10 + 60 * i, 6, 48, 48) for i in range(3)),
            (900, 900, 5, 5),  # outside the image: an error row, the others still run
        ]
    }
    model = BrightnessModel()
    options = inference.Options(
        detect=False, boxes=boxes, boxes_fallback=True, margin=0.0, batch_size=batch_size
    )
    read = []  # the file each row arrived after: rows of a file come before the next read
    original = frames_lib.frames

    def frames(path, rel, every):
        read.append(path.name)
        yield from original(path, rel, every)

    monkeypatch.setattr(frames_lib, "frames", frames)
    rows = [(read[-1], r) for r in inference.run(model, [tmp_path], options, progress=False)]
    assert model.batches == batches
    assert all(Path(r["path"]).name == last for last, r in rows)
    rows = [r for _, r in rows]
    got = [
        (Path(r["path"]).name, r["frame"], r.get("face"), r["status"], r["source"]) for r in rows
    ]
    assert got == [
        *[("clip.avi", k, 0, "ok", "full_image") for k in range(4)],
        ("crop3.png", None, 0, "ok", "full_image"),
        ("crop4.png", None, 0, "ok", "full_image"),
        *[("scene.png", None, i, "ok", "user") for i in range(3)],
        ("scene.png", None, 3, "error", "user"),
    ]
    assert "box_outside_image" in rows[-1]["error"] and rows[-1]["box"] == [900, 900, 5, 5]
    video = [r["probs"]["bright"] * 255 for r in rows[:4]]
    np.testing.assert_allclose(video, [0, 10, 20, 30], atol=3)  # MJPG is lossy
    want = [30, 60, 90, 150, 210]
    assert [r["probs"]["bright"] for r in rows[4:9]] == [round(v / 255, 6) for v in want]
    assert [r["label"] for r in rows[4:9]] == ["dark", "dark", "dark", "bright", "bright"]
    assert [r["arousal"] for r in rows[4:9]] == [round(-v / 255, 6) for v in want]


def test_a_file_that_raises_is_its_error_row_and_the_next_still_runs(tmp_path, monkeypatch):
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), np.full((48, 48), 100, np.uint8))
    original = inference.crops

    def crops(frame, *args):
        if frame.path.endswith("b.png"):
            raise MemoryError()
        return original(frame, *args)

    monkeypatch.setattr(inference, "crops", crops)
    options = inference.Options(detect=False)
    rows = list(inference.run(BrightnessModel(), [str(tmp_path)], options, progress=False))
    assert [(Path(r["path"]).name, r["status"], r["error"]) for r in rows] == [
        ("a.png", "ok", ""),
        ("b.png", "error", "MemoryError"),
        ("c.png", "ok", ""),
    ]


def test_crops_frame_the_box_with_its_margin():
    image = np.zeros((100, 100), np.uint8)
    image[40:60, 40:60] = 255
    frame = inference.Frame("x.png", image)
    predictor = type("P", (), {"image_size": 20, "channels": 1})()
    (crop,), errors = inference.crops(frame, [(40, 40, 20, 20)], "user", predictor, 0.5)
    want = faces.crop_face(image, (40, 40, 20, 20), size=20, channels=1, margin=0.5)
    np.testing.assert_array_equal(crop, want)
    (whole,), _ = inference.crops(frame, [(0, 0, 100, 100)], "full_image", predictor, 0.5)
    assert whole.shape == (20, 20, 1) and errors == [""]  # no margin around a whole image
    assert inference.crops(frame, [(0, 0, 0, 5)], "user", predictor, 0.0)[0] == [None]


def test_each_run_annotates_afresh_under_a_folder_name(tmp_path):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.full((48, 48), 100, np.uint8))
    options = inference.Options(detect=False, annotate=tmp_path / "ann")
    for name in ("a.png", "a-2.png"):  # the second run replaces nothing, not even the first's
        rows = list(inference.run(BrightnessModel(), [tmp_path / "in"], options, progress=False))
        assert [r["annotation"] for r in rows] == [str(tmp_path / "ann" / name)]


# --------------------------------------------------------------------------- video stages


def _moving_face_video(path, face, frames=40, size=(320, 240)):
    """A gray face of 100 px moving 3 px right and 1 px down a frame; its boxes."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    scene = (80 + 100 * xx / width + 40 * yy / height).astype(np.uint8)
    big = cv2.resize(face, (100, 100), interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    boxes = []
    for t in range(frames):
        image = scene.copy()
        x, y = 30 + 3 * t, 40 + t
        image[y : y + 100, x : x + 100] = big
        writer.write(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
        boxes.append((x, y, 100, 100))
    writer.release()
    return boxes


def _frame_threads():
    return [t for t in threading.enumerate() if t.name == "bregflax-frames" and t.is_alive()]


def test_video_faces_are_followed_and_the_frame_thread_changes_no_row(
    tmp_path, monkeypatch, fer2013_dir
):
    face = np.load(fer2013_dir / "val.npz")["images"][3]
    truth = _moving_face_video(tmp_path / "v.avi", face)
    whole = []
    search = detect.FaceTracker._search_whole
    monkeypatch.setattr(
        detect.FaceTracker, "_search_whole", lambda self, p: whole.append(1) or search(self, p)
    )
    runs = {}
    for k, overlap in ((10, True), (10, False), (1, True)):
        whole.clear()
        options = inference.Options(redetect_every=k, overlap=overlap, batch_size=16)
        runs[k, overlap] = list(
            inference.run(BrightnessModel(), [tmp_path / "v.avi"], options, progress=False)
        )
        assert len(whole) == (4 if k == 10 else 40)  # frames 0, 10, 20, 30 searched whole
    assert runs[10, True] == runs[10, False]  # rows do not depend on the thread
    rows = runs[10, True]
    assert [r["frame"] for r in rows] == list(range(40))
    for r, box in zip(rows, truth, strict=True):
        assert r["status"] == "ok" and detect.iou(r["box"], box) > 0.6, (r["frame"], r["box"])
    followed = np.array([r["box"] for r in rows])
    searched = np.array([r["box"] for r in runs[1, True]])
    assert np.abs(followed - searched).max() <= 8  # as a whole-frame search finds them
    assert not _frame_threads()


def test_an_error_in_the_frame_thread_is_the_files_error_row(tmp_path, monkeypatch):
    write_video(tmp_path / "a.avi", 20)
    cv2.imwrite(str(tmp_path / "b.png"), np.full((48, 48), 100, np.uint8))
    iterate = media.Video.__iter__

    def failing(self):
        for index, image in iterate(self):
            if index == 7:
                raise RuntimeError("decoder fell over")
            yield index, image

    monkeypatch.setattr(media.Video, "__iter__", failing)
    for overlap in (True, False):
        options = inference.Options(detect=False, overlap=overlap, batch_size=4)
        rows = list(inference.run(BrightnessModel(), [tmp_path], options, progress=False))
        got = [(Path(r["path"]).name, r["frame"], r["status"]) for r in rows]
        # Frames 0-3 were a full batch before the failure: their rows stand.
        assert got == [
            *[("a.avi", k, "ok") for k in range(4)],
            ("a.avi", None, "error"),
            ("b.png", None, "ok"),
        ]
        assert rows[4]["error"] == "RuntimeError: decoder fell over"
    assert not _frame_threads()


def test_stopping_early_stops_the_frame_thread(tmp_path):
    _long_video(tmp_path / "a.avi", 600)  # more frames than the thread may run ahead
    options = inference.Options(detect=False, batch_size=4)
    rows = inference.run(BrightnessModel(), [tmp_path / "a.avi"], options, progress=False)
    assert [next(rows)["frame"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert len(_frame_threads()) == 1
    rows.close()
    assert not _frame_threads()


def _peak_rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _peaks_of_run(predictor, path, options, at=1000):
    """Peak RSS and peak memory traced by tracemalloc (Python objects and numpy arrays), in
    MiB, when row ``at`` is written and when the last one is (rows go to /dev/null)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    tracemalloc.start()
    try:
        peaks = []
        with open(os.devnull, "w") as out:
            columns = predict.csv_columns(predictor.class_names, predictor.has_va)
            writer = predict.Writer(out, "csv", columns)
            rows = inference.run(predictor, [path], options, progress=False)
            for i, row in enumerate(rows, 1):
                writer.write(row)
                if i == at:
                    peaks.append((_peak_rss_mib(), tracemalloc.get_traced_memory()[1] / 2**20))
        peaks.append((_peak_rss_mib(), tracemalloc.get_traced_memory()[1] / 2**20))
        return peaks
    finally:
        tracemalloc.stop()


def _long_video(path, frames, size=(160, 120)):
    """An MJPG video whose frames differ (a moving bar), written fast."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    image = np.zeros((size[1], size[0], 3), np.uint8)
    for t in range(frames):
        image[:] = 40
        image[:, t % size[0]] = 220
        writer.write(image)
    writer.release()
    return path


def _tiny_predictor():
    """A one-block BReG-Net with random weights: the real Predictor path, compiled fast."""
    config = configs.get("demo")
    config.model.stage_sizes, config.model.widths = (1,), (8,)
    model = models.create_model(config.model)
    init = jax.jit(functools.partial(model.init, train=False))
    return Predictor.from_config(config, init(jax.random.key(0), np.zeros((1, 48, 48, 1))))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "frames", [3000, pytest.param(10000, marks=pytest.mark.slow)], ids=["3000", "10000"]
)
def test_memory_does_not_grow_with_the_videos_length(tmp_path, frames):
    """Over a 10,000-frame video, peak memory is the peak over its first 1,000 frames:
    frames are streamed and rows written as they come. Peak RSS within 10% (the allocators
    of XLA's threads grow in steps of about 20 MiB for a while in a fresh process); the
    memory Python and numpy allocate within 1 MiB (keeping each 160 x 120 frame would add
    56 KiB a frame, its crop 2.3 KiB, its row about 1 KiB: for 9,000 frames, 9 MiB or more).
    The default run checks 3,000 frames (2 MiB or more), the slow one 10,000.
    """
    long = _long_video(tmp_path / "long.avi", frames)
    predictor = _tiny_predictor()
    options = inference.Options(detect=False, batch_size=50)  # bucket 64 throughout
    _peaks_of_run(predictor, _long_video(tmp_path / "short.avi", 1000), options)  # compiles
    (rss_1000, traced_1000), (rss_all, traced_all) = _peaks_of_run(predictor, long, options)
    print(f"peak RSS {rss_1000:.1f} -> {rss_all:.1f} MiB, traced {traced_1000:.2f} -> "
          f"{traced_all:.2f} MiB (1,000 -> {frames} frames)")  # fmt: skip
    assert rss_all <= 1.10 * rss_1000
    assert traced_all - traced_1000 < 1.0, (traced_1000, traced_all)
