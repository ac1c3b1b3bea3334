"""``bregflax predict --annotate DIR``: copies of the inputs with each face's box and label.

Copies keep each input's path under its folder (:class:`Annotations`), never replace an
input, ``--out``, ``--boxes``, an earlier copy of the same run or any file already there,
and are never written through a symbolic link (:func:`bregflax.safe_io.publish_new`); they
are written by the engine (:mod:`bregflax.inference.engine`) once a frame's rows are known.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from bregflax import errors, inputs, safe_io
from bregflax.data.media import Frame

# Annotations keep their input's suffix where OpenCV writes colour images in it, else .png.
COLOUR_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def draw(frame: Frame, rows: list[dict]) -> np.ndarray:
    """A BGR copy of the frame with each classified face's box and label (and landmarks,
    where the detector gave them: eyes blue, nose and mouth orange) drawn on it."""
    image = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for row in rows:
        if row.get("status") != "ok":
            continue
        x, y, w, h = (int(round(v)) for v in row["box"])
        text = row.get("name", "")
        if "probs" in row:
            text += f" {row['probs'][row['name']]:.2f}"
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
        self.protect(protect)

    def protect(self, paths: Iterable[str | Path]) -> None:
        self._protected.update(str(Path(p).resolve()) for p in paths)

    def path_for(self, frame: Frame) -> Path:
        rel = Path(frame.rel or Path(frame.path).name)
        if frame.frame is not None:
            name = f"{rel.stem}_f{frame.frame:06d}.jpg"
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
        """Draws ``rows`` on ``frame`` and writes it to a file that did not exist (a taken
        name, or a symbolic link or file where a folder goes, gets ``-2``...: listed in
        ``renamed``); OSError if it cannot be written."""
        want = self.path_for(frame)
        shown = inputs.text_path(want)
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
