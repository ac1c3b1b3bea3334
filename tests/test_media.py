"""Media files: suffixes, input discovery, image decoding, and the one video frame reader."""

import io
import json
import os
import struct
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import cv2
import numpy as np
import pytest

from bregflax.data import aff_wild, media


def write_video(path, values, fps=10):
    """An MJPG video whose frame k is a flat gray of ``values[k]``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (32, 24))
    for v in values:
        writer.write(np.full((24, 32, 3), v, np.uint8))
    writer.release()
    return path


def test_one_list_of_suffixes_for_builders_and_inference(tmp_path):
    assert {".jpg", ".png", ".webp", ".gif"} <= media.IMAGE_SUFFIXES
    assert {".mp4", ".avi", ".mkv"} <= media.VIDEO_SUFFIXES
    assert not media.IMAGE_SUFFIXES & media.VIDEO_SUFFIXES
    assert media.is_video("a/B.MP4") and not media.is_video("clip.mp4.png")
    for name in ("2.mkv", "1.AVI", "notes.txt", "x.png"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in aff_wild.list_videos(tmp_path)] == ["1.AVI", "2.mkv"]


def _entries(inputs, root):
    return [(Path(os.path.relpath(e.path, root)).as_posix(), e.rel, e.skip) for e in inputs]


def test_collect_walks_folders_and_keeps_given_files(tmp_path):
    folder = tmp_path / "in"
    (folder / "b").mkdir(parents=True)
    for name in ("b/z.JPG", "a.png", "clip.avi", "b/notes.txt", "b/y.webm", "g.gif"):
        (folder / name).write_bytes(name.encode())
    missing = tmp_path / "missing.jpg"
    assert _entries(media.collect([folder, str(missing)]), tmp_path) == [
        ("in/a.png", "a.png", ""),
        ("in/b/notes.txt", "b/notes.txt", "not an image or video file"),
        ("in/b/y.webm", "b/y.webm", ""),
        ("in/b/z.JPG", "b/z.JPG", ""),
        ("in/clip.avi", "clip.avi", ""),
        ("in/g.gif", "g.gif", ""),  # as a GIF named directly
        ("missing.jpg", "missing.jpg", ""),  # kept: reading it says what is wrong
    ]


def test_collect_follows_folder_links_once_and_lists_each_file_once(tmp_path):
    folder, other = tmp_path / "in", tmp_path / "other"
    (folder / "sub").mkdir(parents=True)
    other.mkdir()
    (folder / "a.png").write_bytes(b"a")
    (other / "o.png").write_bytes(b"o")
    (folder / "sub" / "linked").symlink_to(other, target_is_directory=True)
    (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)  # a loop
    (folder / "sub" / "same.png").symlink_to(folder / "a.png")
    (folder / "sub" / "dead.png").symlink_to(tmp_path / "gone.png")
    inputs = media.collect([folder, folder / "a.png", str(folder / "sub" / ".." / "a.png")])
    first = str(folder / "a.png")
    assert _entries(inputs, tmp_path) == [
        ("in/a.png", "a.png", ""),
        ("in/sub/dead.png", "sub/dead.png", "broken symbolic link"),
        ("in/sub/linked/o.png", "sub/linked/o.png", ""),
        ("in/sub/same.png", "sub/same.png", f"same file as {first} (processed once)"),
        ("in/sub/up", "sub/up", f"folder already searched as {folder}"),
        ("in/a.png", "a.png", f"same file as {first} (processed once)"),
        ("in/a.png", "a.png", f"same file as {first} (processed once)"),
    ]


def test_read_image(tmp_path):
    bgr = np.zeros((6, 5, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    image = media.read_image(tmp_path / "blue.png")
    assert image.shape == (6, 5, 3) and image.dtype == np.uint8
    assert (image == (0, 0, 255)).all()  # RGB
    cv2.imwrite(str(tmp_path / "gray.pgm"), np.full((4, 3), 77, np.uint8))
    assert (media.read_image(tmp_path / "gray.pgm") == 77).all()  # gray -> 3 channels
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert media.read_image(tmp_path / "broken.jpg") is None
    assert media.read_image(tmp_path / "empty.jpg") is None
    assert media.read_image(tmp_path / "missing.jpg") is None
    assert media.read_image(tmp_path) is None  # a folder


@pytest.mark.parametrize("every, want", [(1, list(range(7))), (3, [0, 3, 6]), (10, [0])])
def test_video_frames_every_nth(tmp_path, every, want):
    values = [20 * k + 10 for k in range(7)]
    video = media.Video(write_video(tmp_path / "v.avi", values), every=every)
    got = list(video)
    assert [i for i, _ in got] == want
    for index, rgb in got:
        assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8
        assert abs(float(rgb.mean()) - values[index]) < 3  # the right frame, decoded
    assert video.frames_read == 7 and video.fps == pytest.approx(10)
    assert video.frame_count == 7  # what the header says
    assert video.time_s(3) == pytest.approx(0.3)


def test_video_counts_as_it_reads_and_stops_early(tmp_path):
    video = media.Video(write_video(tmp_path / "v.avi", [0] * 9), every=4)
    for index, _ in video:
        assert video.frames_read == index + 1
        if index == 4:
            break
    assert video.frames_read == 5


def test_unreadable_video_yields_nothing(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 20)
    video = media.Video(tmp_path / "bad.mp4")
    assert list(video) == [] and video.frames_read == 0
    assert video.time_s(5) is None  # no frame rate known
    assert list(media.Video(tmp_path / "missing.mp4")) == []
    with pytest.raises(ValueError, match="every"):
        media.Video(tmp_path / "bad.mp4", every=0)


# --------------------------------------------------------------------------- issue 27: time


def _ebml_blocks(data: bytes, start: int, end: int, out: list) -> list:
    """Offsets of the 16-bit relative timestamps of every (Simple)Block of a Matroska file."""

    def number(i, keep_marker):
        n = 1
        while not data[i] & (0x80 >> (n - 1)):
            n += 1
        value = data[i] if keep_marker else data[i] & (0xFF >> n)
        for k in range(1, n):
            value = (value << 8) | data[i + k]
        return value, n

    i = start
    while i < end:
        element, n = number(i, True)
        size, m = number(i + n, False)
        body = i + n + m
        if size == (1 << (7 * m)) - 1:  # unknown size: to the end of the parent
            size = end - body
        if element in (0x18538067, 0x1F43B675, 0xA0):  # Segment, Cluster, BlockGroup
            _ebml_blocks(data, body, body + size, out)
        elif element in (0xA3, 0xA1):  # SimpleBlock, Block: track number, then the time
            out.append(body + number(body, False)[1])
        i = body + size
    return out


def _vfr_mkv(path, times_ms, duration_ms, fps=25):
    """An MJPG Matroska file whose frames carry ``times_ms`` (a variable frame rate) and
    whose header gives ``duration_ms``; OpenCV's frame count is then duration x fps."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 64))
    for k in range(len(times_ms)):
        writer.write(np.full((64, 64, 3), (k * 12) % 256, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    offsets = _ebml_blocks(data, 0, len(data), [])
    assert len(offsets) == len(times_ms)
    for at, ms in zip(offsets, times_ms, strict=True):
        data[at : at + 2] = struct.pack(">h", ms)
    at = data.index(b"\x44\x89")  # Info/Duration, a float in milliseconds
    size = data[at + 2] & 0x7F
    data[at + 3 : at + 3 + size] = struct.pack(">d" if size == 8 else ">f", duration_ms)
    path.write_bytes(bytes(data))


def _predict(*args):
    from bregflax.inference import predict

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = predict.main([*map(str, args), "--no-progress"])
    return code, out.getvalue(), err.getvalue()


def test_video_times_come_from_the_container_and_a_healthy_vfr_mkv_is_whole(tmp_path):
    """Issue 27: 10 frames at 25 fps, a 10 s pause, 10 more: frame 19 is at about 10.4 s
    (not 19 / 25 = 0.76 s), and the file, whose header gives 10.8 s (270 frames at the
    nominal rate), is not taken for a truncated one."""
    times = [40 * k for k in range(10)] + [10000 + 40 * k for k in range(10)]
    path = tmp_path / "vfr.mkv"
    _vfr_mkv(path, times, duration_ms=10400.0)
    video = media.Video(path)
    got = {index: video.time_s(index) for index, _ in video}
    assert len(got) == 20 and video.frame_count > 20  # the count is the duration's estimate
    assert got[9] == pytest.approx(0.36, abs=0.01) and got[10] == pytest.approx(10.0, abs=0.01)
    assert got[19] > 10.2 and all(got[k] < got[k + 1] for k in range(19))
    assert not video.ends_early()
    code, out, err = _predict(path, "--no-detect", "--every", "10", "--format", "jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["status"] for r in rows] == ["ok", "ok"], err
    assert [r["time_s"] for r in rows] == [0.0, pytest.approx(10.0, abs=0.01)]


def test_a_truncated_video_is_judged_from_its_timestamps(tmp_path):
    path = tmp_path / "clip.mkv"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for k in range(60):
        writer.write(np.full((64, 64, 3), (k * 4) % 256, np.uint8))
    writer.release()
    whole = media.Video(path)
    assert len(list(whole)) == 60 and not whole.ends_early()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    cut = media.Video(path)
    read = len(list(cut))
    assert 0 < read < 60 and cut.ends_early()
    assert "of the 6.00 s" in cut.time_note()
