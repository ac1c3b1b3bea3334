"""Media files: suffixes, input discovery, image decoding, and the one video frame reader."""

import os
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
