"""``bregflax predict --annotate DIR``: copies of the inputs with each face's box and label.

Copies keep each input's path under its folder (:class:`Annotations`), never replace an
input, ``--out``, ``--boxes``, an earlier copy of the same run or any file already there,
and are never written through a symbolic link (:func:`bregflax.safe_io.publish_new`); they
are written by the engine (:mod:`bregflax.inference.engine`) once a frame's rows are known.
A video's copy is a video (``cv2.VideoWriter``: ``.mp4`` with mp4v, else ``.avi`` with
MJPG) of the frames read, at the same size, and at the same frame rate when every frame is
read (``--every N``: 1/N of it, so that it lasts as long).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from bregflax import errors, hostile, safe_io
from bregflax.data.media import Frame

# Annotations keep their input's suffix where OpenCV writes colour images in it, else .png.
COLOUR_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))  # tried in turn for annotated videos
DEFAULT_FPS = 10.0  # for a video whose file gives no frame rate


def draw(frame: Frame, rows: list[dict]) -> np.ndarray:
    """A BGR copy of the frame with each classified face's box and label (and landmarks,
    where the detector gave them: eyes blue, nose and mouth orange) drawn on it."""
    image = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for row in rows:
        if row.get("status") != "ok":
            continue
        x, y, w, h = (int(round(v)) for v in row["box"])
        text = row.get("label", "")
        if "probs" in row:
            text += f" {row['probs'][row['label']]:.2f}"
        if "valence" in row:
            text += f" v{row['valence']:+.2f} a{row['arousal']:+.2f}"
        cv2.rectangle(image, (x, y), (x + w, y + h), (0, 255, 0), thickness)
        for k, (px, py) in enumerate(row.get("landmarks") or ()):  # eyes, nose, mouth
            colour = (255, 128, 0) if k < 2 else (0, 200, 255)
            cv2.circle(image, (int(round(px)), int(round(py))), 2 * thickness, colour, -1)
        origin, scale = (x, max(y - 4, 12)), max(0.4, h / 200)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(image, text, origin, font, scale, (0, 255, 0), thickness)
    return image


class Annotations:
    """Annotated copies under ``folder``, at each input's path relative to its folder.

    A video frame becomes ``<stem>_f<frame>.jpg``; an input whose suffix OpenCV cannot write
    in colour (``.pgm``, none) gets ``.png`` added. A copy never replaces a protected file
    (the inputs, ``--out``, ``--boxes``): it becomes ``<stem>.annotated<suffix>``; and never a
    copy written earlier in the same run: ``<stem>-2<suffix>``, ``-3``... ``renamed`` lists
    (input, written path) for each copy that did not get its plain name.
    """

    def __init__(self, folder: str | Path, protect: Iterable[str | Path] = ()):
        self.folder = Path(folder)
        self.renamed: list[tuple[str, Path]] = []
        self._protected: set[str] = set()
        self._used: set[str] = set()
        self._videos: dict[str, tuple[cv2.VideoWriter, Path]] = {}  # input -> open writer
        self.protect(protect)

    def protect(self, paths: Iterable[str | Path]) -> None:
        self._protected.update(str(Path(p).resolve()) for p in paths)

    def path_for(self, frame: Frame, suffix: str = ".mp4") -> Path:
        """Where the copy of ``frame``'s input goes (a video's: with ``suffix``)."""
        rel = Path(frame.rel or Path(frame.path).name)
        if frame.frame is not None:
            name = f"{rel.stem}{suffix}"
        elif rel.suffix.lower() in COLOUR_SUFFIXES:
            name = rel.name
        else:
            name = rel.name + ".png"
        want = path = self.folder / rel.parent / name
        if str(path.resolve()) in self._protected:
            path = path.with_name(f"{path.stem}.annotated{path.suffix}")
        base, k = path, 2
        while {str(path.resolve())} & (self._protected | self._used):
            path, k = base.with_name(f"{base.stem}-{k}{base.suffix}"), k + 1
        self._used.add(str(path.resolve()))
        if path != want:
            self.renamed.append((frame.path, path))
        return path

    def write(self, frame: Frame, rows: list[dict]) -> Path:
        """Draws ``rows`` on ``frame`` and writes it: a photo to a file that did not exist (a
        taken name, or a symbolic link or file where a folder goes, gets ``-2``...: listed in
        ``renamed``), a video frame to its input's annotated video (ended by :meth:`finish`);
        OSError if it cannot be written."""
        if frame.frame is not None:
            return self._write_video_frame(frame, rows)
        want = self.path_for(frame)
        shown = hostile.text_path(want)
        try:
            ok, data = cv2.imencode(want.suffix or ".png", draw(frame, rows))
        except cv2.error as e:
            raise OSError(f"cannot write {shown}: {errors.one_line(e)}") from None
        if not ok:
            raise OSError(f"cannot write {shown}")
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            rel = want.parent.relative_to(self.folder)
        except ValueError:
            rel = Path()
        parent, _ = safe_io.safe_folder(self.folder, rel)
        try:
            path = safe_io.publish_new(parent / want.name, data.tobytes())
        except OSError as e:
            raise OSError(f"cannot write {shown}: {errors.write_error(e)}") from None
        self._used.add(str(path.resolve()))
        if path != want:
            if self.renamed and self.renamed[-1] == (frame.path, want):
                self.renamed.pop()  # path_for renamed it already: the name written counts
            self.renamed.append((frame.path, path))
        return path

    def _write_video_frame(self, frame: Frame, rows: list[dict]) -> Path:
        if frame.path not in self._videos:
            self._videos[frame.path] = self._open_video(frame)
        writer, _, want = self._videos[frame.path]
        writer.write(draw(frame, rows))
        return want  # its name at finish(), unless a file takes it meanwhile

    def _open_video(self, frame: Frame) -> tuple[cv2.VideoWriter, Path, Path]:
        """A writer on a temporary file beside where the video goes (named at
        :meth:`finish`, never over an existing file), that file and the wanted path."""
        height, width = frame.image.shape[:2]
        fps = getattr(frame, "fps", 0.0) or DEFAULT_FPS
        for codec, suffix in VIDEO_CODECS:
            want = self.path_for(frame, suffix)
            try:
                rel = want.parent.relative_to(self.folder)
            except ValueError:
                rel = Path()
            parent, _ = safe_io.safe_folder(self.folder, rel)
            temp = parent / f".{want.stem}.{os.getpid()}.tmp{suffix}"
            fourcc = cv2.VideoWriter_fourcc(*codec)
            writer = cv2.VideoWriter(str(temp), fourcc, fps, (width, height))
            if writer.isOpened():
                return writer, temp, parent / want.name
            writer.release()
            temp.unlink(missing_ok=True)
        raise OSError(f"cannot write an annotated video for {frame.path}: no codec of "
                      f"{', '.join(c for c, _ in VIDEO_CODECS)} could be opened")  # fmt: skip

    def finish(self, path: str | Path | None = None) -> None:
        """Ends the annotated video of input ``path`` (of every input if None): it gets its
        name only now, a free one (``-2``... if taken: listed in ``renamed``)."""
        keys = list(self._videos) if path is None else [str(path)]
        for key in keys:
            entry = self._videos.pop(key, None)
            if entry is not None:
                writer, temp, want = entry
                writer.release()
                try:
                    final = safe_io.publish_file(temp, want)
                finally:
                    temp.unlink(missing_ok=True)
                if final != want:
                    self.renamed.append((key, final))
