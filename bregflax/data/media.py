"""Image and video files: which suffixes count, finding them in folders, and decoding them.

One home for the dataset builders (:mod:`bregflax.data.fer2013`, :mod:`~.affectnet`,
:mod:`~.aff_wild`) and inference (:mod:`bregflax.inference.engine`). Decoded images and frames are
RGB uint8 (H, W, 3), whatever the file held (OpenCV decodes to BGR; these functions convert);
a GIF is an image (its first frame).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np


@dataclasses.dataclass
class Frame:
    """One image to look for faces in: a photo, or a frame of a video."""

    path: str
    image: np.ndarray | None
    frame: int | None = None  # video frame number, from 0
    time_s: float | None = None
    error: str = ""
    rel: str = ""  # path under its input folder, for --annotate
    warning: str = ""  # a frame-less note about the file (frames its video lacks)
    fps: float = 0.0  # video: frames read per second of video (its rate / every); 0 unknown


IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".gif"}
)
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
)


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video by its suffix (any case)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class Input(NamedTuple):
    """One entry of :func:`collect`: a file to read, or one left out and why."""

    path: Path
    rel: str  # name under the folder it was found in (its own name when given directly)
    skip: str = ""  # why it is not read; "" for a file to read


def collect(paths: Sequence[str | Path]) -> list[Input]:
    """The inputs named by ``paths``, in order, each file once.

    A folder is searched recursively, in sorted order, for image and video files, following
    symbolic links to folders; a folder reached a second time (a link back up, or two links
    to one folder) is not searched again. A path that is not a folder is kept as given, even
    if it does not exist or has another suffix (reading it says what is wrong). Entries with
    a ``skip`` reason are not read: files in folders that are neither image nor video, broken
    links, folders already searched, and a file already listed under another name.
    """
    out: list[Input] = []
    first: dict[tuple, Path] = {}  # file identity -> the path it was first listed as
    for given in paths:
        path = Path(given)
        found = _walk(path) if path.is_dir() else [Input(path, path.name)]
        for entry in found:
            key = None if entry.skip else identity(entry.path)
            if key in first:
                entry = entry._replace(skip=f"same file as {first[key]} (processed once)")
            elif key is not None:
                first[key] = entry.path
            out.append(entry)
    return out


def identity(path: str | Path) -> tuple:
    """What makes two paths one file: device and inode, or the resolved path if missing."""
    path = Path(path)
    try:
        stat = path.stat()
        return stat.st_dev, stat.st_ino
    except OSError:
        return ("missing", str(path.resolve()))


def _walk(folder: Path) -> list[Input]:
    """The media files under ``folder`` (symlinked folders followed once) and the rest."""
    found: list[Input] = []
    seen = {identity(folder): folder}
    for root, dirs, names in os.walk(folder, followlinks=True):
        base = Path(root)
        keep = []
        for name in sorted(dirs):
            sub = base / name
            key = identity(sub)
            if key in seen:
                reason = f"folder already searched as {seen[key]}"
                found.append(Input(sub, str(sub.relative_to(folder)), reason))
            else:
                seen[key] = sub
                keep.append(name)
        dirs[:] = keep
        for name in names:
            path = base / name
            rel, reason = str(path.relative_to(folder)), ""
            if not path.exists():
                reason = "broken symbolic link"
            elif not path.is_file():
                reason = "not a regular file"
            elif path.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                reason = "not an image or video file"
            found.append(Input(path, rel, reason))
    return sorted(found, key=lambda entry: Path(entry.rel))


@contextlib.contextmanager
def _utf8_name(path: Path) -> Iterator[str]:
    """A name OpenCV can open for ``path``: its own, or, where it is not valid UTF-8, a
    symbolic link with a plain name in a temporary folder."""
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        with tempfile.TemporaryDirectory(prefix="bregflax-") as folder:
            link = os.path.join(folder, "video" + path.suffix.encode("ascii", "replace").decode())
            os.symlink(os.path.abspath(path), link)
            yield link
        return
    yield name


def read_image(path: str | Path) -> np.ndarray | None:
    """Reads an image file as RGB uint8 (H, W, 3); None if missing or undecodable."""
    data = np.fromfile(str(path), np.uint8) if Path(path).is_file() else None
    if data is None or data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class Video:
    """Reads a video file's frames in order: ``for index, rgb in Video(path, every=10)``.

    Yields (index, image) for every ``every``-th frame, counting from 0 (frames 0, every,
    2 * every, ...); the image is None where that frame fails to decode. A file OpenCV cannot
    open yields nothing. While and after reading, ``frames_read`` counts every frame in the
    file up to there (decoded or not), ``fps`` is the rate the file gives (0 if none) and
    ``frame_count`` the number of frames its header gives (0 if none; for some containers,
    MKV among them, an estimate from the duration).

    Times come from the container's timestamps (OpenCV's position in milliseconds after each
    frame is grabbed), so a variable frame rate is timed right; ``index / fps`` only where
    the container gives none. Whether the file ends early is judged by :meth:`ends_early`
    from the timestamps, not from a frame count the container may not know.
    """

    def __init__(self, path: str | Path, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.path, self.every = Path(path), every
        self.fps, self.frames_read, self.frame_count = 0.0, 0, 0
        self.times: dict[int, float] = {}  # frame index -> container timestamp (s)
        self.last_time: float | None = None  # timestamp of the last frame grabbed
        self._stamped = True  # every frame so far had a timestamp that increased

    def time_s(self, index: int) -> float | None:
        """Seconds from the start to frame ``index``: its container timestamp where every
        frame so far had one, else ``index / fps``; None where the file gives neither. To the
        microsecond (the float of milliseconds / 1000 is not exact)."""
        if self._stamped and index in self.times:
            return round(self.times[index], 6)
        return round(index / self.fps, 6) if self.fps > 0 else None

    def _stamp(self, capture, index: int) -> None:
        msec = capture.get(cv2.CAP_PROP_POS_MSEC)
        ok = msec is not None and np.isfinite(msec) and msec >= 0
        if ok and index > 0 and self.last_time is not None and msec / 1000 <= self.last_time:
            ok = False
        if not ok or (index > 0 and self.last_time is None):
            self._stamped = False
            return
        self.last_time = msec / 1000
        if index % self.every == 0:
            self.times[index] = self.last_time

    def ends_early(self) -> bool:
        """Whether the file ended before the frames its header gives: judged from the
        timestamps (the last frame read ends more than two frames, and 0.1 s, before the
        duration the header gives) where the container has them, else from the count."""
        if self.frame_count <= self.frames_read:
            return False
        if not (self._stamped and self.last_time is not None and self.fps > 0):
            return True
        duration = self.frame_count / self.fps
        covered = self.last_time + 1 / self.fps
        return duration - covered > max(2 / self.fps, 0.1)

    def time_note(self) -> str:
        """`` (it ends at 1.4 s of 3.0 s)``, where the times are known."""
        if not (self._stamped and self.last_time is not None and self.fps > 0):
            return ""
        covered = self.last_time + 1 / self.fps
        return f" (it ends at {covered:.2f} s of the {self.frame_count / self.fps:.2f} s)"

    def __iter__(self) -> Iterator[tuple[int, np.ndarray | None]]:
        with _utf8_name(self.path) as name:
            yield from self._frames(cv2.VideoCapture(name))

    def _frames(self, capture) -> Iterator[tuple[int, np.ndarray | None]]:
        self.fps, self.frames_read = float(capture.get(cv2.CAP_PROP_FPS) or 0.0), 0
        self.frame_count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
        try:
            while capture.isOpened() and capture.grab():
                index = self.frames_read
                self.frames_read += 1
                self._stamp(capture, index)
                if index % self.every:
                    continue
                ok, bgr = capture.retrieve()
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok and bgr is not None else None
                yield index, rgb
        finally:
            capture.release()
