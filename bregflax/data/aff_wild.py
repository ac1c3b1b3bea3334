"""Aff-Wild (Zafeiriou et al., CVPR-W 2017) as a TensorFlow-free TFDS builder: ``aff_wild``.

Per-frame valence and arousal of YouTube videos. Frames are decoded with OpenCV every
``aff_wild_stride`` frames and cropped by the release's face box. Records have label -1.

Assumed layout of the release (``aff_wild_annotations_bboxes_landmarks_new``), as used by
public code that reads it; the official README was not available to check against::

    videos/{train,test}/<video>.{mp4,avi}
    annotations/train/{valence,arousal}/<video>.txt   one value per line, line k = frame k
    bboxes/{train,test}/<video>/<k>.pts                face box of frame k (4 corner points)
    landmarks/{train,test}/<video>/<k>.pts             68 landmarks of frame k (for align)

* Frames are numbered from 1 (the first decoded frame is frame 1, ``1.pts``, line 1).
* ``.pts`` files are iBUG point files: ``version: 1``, ``n_points: N``, ``{``, N lines
  ``x y``, ``}``. The box is the bounding rectangle of its points. ``bboxs/`` is accepted
  for ``bboxes/``, and an extra level ``bboxes/train/train/<video>`` (from unpacking the
  per-split archives) is also found.
* Valence and arousal are in [-1, 1]; other values are bad input.
* Frames without a box file have no detected face in the release: excluded (counted as
  ``no_face_box``), not bad input. Test videos have no annotations: valence/arousal NaN.

Splits are by video, never by frame: ``test`` = ``videos/test``; ``val`` is a seeded
``aff_wild_val_fraction`` of the training videos and ``train`` the rest. ``source_id`` is
``videos/train/105.avi#frame=30``. Video-level reasons (``unreadable_video``,
``missing_annotation``) count videos; the others count frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from bregflax.data import SOURCES, Split, faces, media, tfds_base
from bregflax.data.tfds_base import FaceConfig, check_range

NAME = "aff_wild"
BOX_DIRS = ("bboxes", "bboxs")
LANDMARK_DIRS = ("landmarks",)

INSTRUCTIONS = """\
Aff-Wild cannot be downloaded automatically (its licence forbids redistribution). Request
Aff-Wild (the CVPR-W 2017 / IJCV database, not Aff-Wild2) from its maintainers as described
at https://ibug.doc.ic.ac.uk/resources/first-affect-wild-challenge/ and unpack the archive
(aff_wild_annotations_bboxes_landmarks_new) so that videos/, annotations/, bboxes/ and
landmarks/ are directly in this folder.
"""


def detect(manual: Path) -> str | None:
    return "videos" if (manual / "videos").is_dir() else None


def read_pts(path: Path) -> np.ndarray:
    """Points (n, 2) of an iBUG .pts file; raises ValueError("malformed_pts")."""
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        count = next(int(ln.split(":")[1]) for ln in lines if ln.startswith("n_points"))
        body = lines[lines.index("{") + 1 : lines.index("}")]
        points = np.array([[float(v) for v in ln.split()] for ln in body], np.float64)
    except (OSError, ValueError, IndexError, StopIteration, UnicodeDecodeError):
        raise ValueError("malformed_pts") from None
    if points.shape != (count, 2) or not np.isfinite(points).all():
        raise ValueError("malformed_pts")
    return points


def points_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """The bounding rectangle (x, y, w, h) of ``points``."""
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def find_dir(manual: Path, kinds: Iterable[str], split: str, video: str) -> Path | None:
    """``<kind>/<split>/<video>`` (or ``<kind>/<split>/<split>/<video>``), if it exists."""
    for kind in kinds:
        for path in (manual / kind / split / video, manual / kind / split / split / video):
            if path.is_dir():
                return path
    return None


def list_videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if media.is_video(p))


def read_lines(path: Path) -> list[str]:
    """Stripped lines, line k at index k - 1; only trailing blank lines are dropped."""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


class AffWild(tfds_base.FaceBuilder):
    """Aff-Wild: per-frame face crops with valence/arousal; splits train / val / test."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    DESCRIPTION = __doc__

    def plan(self, manual: Path) -> dict[str, Iterable[dict[str, Any]]]:
        self.report.source_format = "videos/ + annotations/ + bboxes/ (+ landmarks/)"
        config = self.face_config
        present = {
            s: list_videos(manual / "videos" / s)
            for s in ("train", "test")
            if (manual / "videos" / s).is_dir()
        }
        splits: dict[str, list[tuple[str, Path]]] = {}
        if "train" in present:
            train = present["train"]
            held = tfds_base.stratified_holdout(
                np.zeros(len(train)), config.holdout_fraction, config.seed
            )
            splits["train"] = [("train", v) for v, h in zip(train, held, strict=True) if not h]
            if held.any():
                splits["val"] = [("train", v) for v, h in zip(train, held, strict=True) if h]
        if "test" in present:
            splits["test"] = [("test", v) for v in present["test"]]
        self.report.absent_splits = [s for s in ("train", "val", "test") if s not in splits]
        return {s: self._examples(manual, videos) for s, videos in splits.items()}

    def _annotations(self, manual: Path, video: Path) -> tuple[list[str], list[str]] | None:
        paths = [
            manual / "annotations" / "train" / k / f"{video.stem}.txt"
            for k in ("valence", "arousal")
        ]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            self.report.bad("missing_annotation", missing[0].relative_to(manual).as_posix())
            return None
        return read_lines(paths[0]), read_lines(paths[1])

    def _examples(self, manual: Path, videos: list[tuple[str, Path]]) -> Iterator[dict]:
        for folder, video in videos:
            annotations = None
            if folder == "train":
                annotations = self._annotations(manual, video)
                if annotations is None:
                    continue
            yield from self._video(manual, folder, video, annotations)

    def _video(
        self, manual: Path, folder: str, video: Path, annotations: tuple[list, list] | None
    ) -> Iterator[dict[str, Any]]:
        config = self.face_config
        rel = video.relative_to(manual).as_posix()
        boxes = find_dir(manual, BOX_DIRS, folder, video.stem)
        marks = find_dir(manual, LANDMARK_DIRS, folder, video.stem) if config.align else None
        frames = media.Video(video, every=max(config.stride, 1))
        for index, frame in frames:
            number = index + 1  # the release numbers frames from 1
            if frame is None:
                self.report.bad("undecodable_frame", f"{rel}#frame={number}")
                continue
            valence = arousal = np.nan
            if annotations is not None:
                try:
                    valence, arousal = self._va(annotations, number)
                except ValueError as e:
                    reason = str(e)
                    kind = reason.split("_")[0]  # valence or arousal
                    where = f"annotations/train/{kind}/{video.stem}.txt:line {number}"
                    if reason == "no_annotation_for_frame":
                        where = f"{rel}#frame={number}"
                    self.report.bad(reason, where)
                    continue
            face = self._crop(manual, frame, number, rel, boxes, marks)
            if face is not None:
                yield tfds_base.example(face, f"{rel}#frame={number}", -1, valence, arousal)
        last = frames.frames_read
        if last == 0:
            self.report.bad("unreadable_video", rel)
        elif annotations is not None and len(annotations[0]) > last:
            self.report.note(
                "annotation_lines_without_frame",
                f"annotations/train/valence/{video.stem}.txt: {len(annotations[0])} lines, "
                f"{last} frames",
            )

    @staticmethod
    def _va(annotations: tuple[list, list], number: int) -> tuple[float, float]:
        valence, arousal = annotations
        if number > len(valence) or number > len(arousal):
            raise ValueError("no_annotation_for_frame")
        return (
            check_range(valence[number - 1], -1.0, 1.0, "valence"),
            check_range(arousal[number - 1], -1.0, 1.0, "arousal"),
        )

    def _crop(
        self,
        manual: Path,
        frame: np.ndarray,
        number: int,
        rel: str,
        boxes: Path | None,
        marks: Path | None,
    ) -> np.ndarray | None:
        """The face of one frame, or None (counted)."""
        config = self.face_config
        box_file = boxes / f"{number}.pts" if boxes is not None else None
        if box_file is None or not box_file.is_file():
            self.report.exclude("no_face_box", f"{rel}#frame={number}")
            return None
        where = box_file.relative_to(manual).as_posix()
        landmarks = None
        try:
            box = points_box(read_pts(box_file))
            if config.align:
                mark_file = marks / f"{number}.pts" if marks is not None else None
                if mark_file is None or not mark_file.is_file():
                    self.report.exclude("no_landmarks", f"{rel}#frame={number}")
                    return None
                where = mark_file.relative_to(manual).as_posix()
                landmarks = read_pts(mark_file)
                if landmarks.shape != (68, 2):
                    raise ValueError("malformed_pts")
            return faces.crop_face(
                frame,
                box,
                size=config.image_size,
                channels=config.channels,
                margin=config.margin,
                landmarks=landmarks,
                align=config.align,
            )
        except faces.BadFaceBox as e:
            self.report.bad(e.reason, where, str(e))
        except ValueError as e:
            self.report.bad(str(e), where)
        return None


def builder_config(config: ml_collections.ConfigDict) -> FaceConfig:
    settings = {
        "image_size": int(config.get("image_size", 64)),
        "channels": int(config.get("channels", 3)),
        "margin": float(config.get("face_margin", 0.0)),
        "align": bool(config.get("face_align", False)),
        "stride": int(config.get("aff_wild_stride", 1)),
        "holdout_fraction": float(config.get("aff_wild_val_fraction", 0.1)),
        "seed": int(config.get("split_seed", 0)),
    }
    if settings["stride"] < 1:
        raise ValueError(f"aff_wild_stride must be >= 1, got {settings['stride']}")
    name = tfds_base.config_name(
        *(("aligned",) if settings["align"] else ()),
        size=settings["image_size"],
        channels=settings["channels"],
        margin=settings["margin"],
        stride=settings["stride"],
        val=settings["holdout_fraction"],
        seed=settings["seed"],
    )
    return FaceConfig(name=name, **settings)


def builder(config: ml_collections.ConfigDict) -> AffWild:
    """The Aff-Wild builder for ``config.data``."""
    return tfds_base.make_builder(AffWild, builder_config(config), config)


@SOURCES.register(NAME)
def load(split: str, config: ml_collections.ConfigDict) -> Split:
    """Aff-Wild ``split`` (train, val or test), prepared on first use."""
    return tfds_base.load_split(builder(config), config, NAME, detect, INSTRUCTIONS, split)
