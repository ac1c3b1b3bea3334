"""AffectNet (Mollahosseini et al. 2017) as a TensorFlow-free TFDS builder with three tasks.

Sources: ``affectnet`` (8 classes, codes 0-7), ``affectnet7`` (7 classes, no Contempt) and
``affectnet_va`` (valence/arousal). Expression codes: 0 Neutral, 1 Happy, 2 Sad,
3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt, 8 None, 9 Uncertain, 10 No-Face.
Categorical tasks exclude codes 8-10 (and 7 for ``cat7``); the dimensional task excludes
records whose valence or arousal is -2 (AffectNet's "not annotated"). Each exclusion is
counted by reason in the build report. Valence and arousal are in [-1, 1]; anything else
(other than -2) is bad input, as is a code outside 0-10. Categorical records carry
valence/arousal when annotated (else NaN); ``affectnet_va`` records carry the label when
the code is 0-7 (else -1).

Either release is accepted in the manual dir (the first wins if both are there):

(a) ``Manually_Annotated_file_lists/{training,validation}.csv`` with columns
    ``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
    expression, valence, arousal`` (``facial_landmarks``: 68 ``x;y`` pairs joined by ``;``;
    a file without its header row is read in this column order) and images under
    ``Manually_Annotated_Images/``. Faces are cropped by their box. ``source_id`` is
    ``Manually_Annotated_Images/<subDirectory_filePath>``.
(b) ``train_set/`` and ``val_set/``, each with ``images/<n>.jpg`` (already 224x224 face
    crops, used whole) and ``annotations/<n>_{exp,val,aro,lnd}.npy``. ``source_id`` is
    ``train_set/images/<n>.jpg``.

Splits: ``val`` is the official validation set (the paper reports on it); a seeded held-out
split stratified by expression code, ``affectnet_holdout_fraction`` of the official
training set, is ``holdout`` and the rest is ``train``. The held-out images are the same
for all three tasks (it is drawn before the task's exclusions).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from bregflax import hostile
from bregflax.data import SOURCES, Split, faces, media, tfds_base
from bregflax.data.fer2013 import parse_label
from bregflax.data.tfds_base import FaceConfig, check_range

NAME = "affectnet"
CODES = (
    "Neutral",
    "Happy",
    "Sad",
    "Surprise",
    "Fear",
    "Disgust",
    "Anger",
    "Contempt",
    "None",
    "Uncertain",
    "No-Face",
)
AFFECTNET_CLASSES = CODES[:8]
TASKS = {"cat8": 8, "cat7": 7, "va": 0}  # task -> number of categorical classes
SOURCE_TASKS = {"affectnet": "cat8", "affectnet7": "cat7", "affectnet_va": "va"}
NOT_ANNOTATED = -2.0
COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
LISTS = "Manually_Annotated_file_lists"
IMAGES = "Manually_Annotated_Images"
CSV_SPLITS = {"training.csv": "train", "validation.csv": "val"}
FOLDER_SPLITS = {"train_set": "train", "val_set": "val"}

INSTRUCTIONS = """\
AffectNet cannot be downloaded automatically (its licence forbids redistribution). A lab
manager or professor signs the licence agreement and sends the request form, both at
http://mohammadmahoor.com/affectnet/. Unpack either release here:
  * Manually_Annotated_file_lists/{training,validation}.csv and Manually_Annotated_Images/
  * or train_set/ and val_set/ (images/ and annotations/ in each).
"""


def detect(manual: Path) -> str | None:
    """``"csv"`` (release a), ``"npy"`` (release b) or None."""
    if any((manual / LISTS / n).is_file() for n in CSV_SPLITS):
        return "csv"
    if any((manual / d / "images").is_dir() for d in FOLDER_SPLITS):
        return "npy"
    return None


def parse_va(valence: str, arousal: str) -> tuple[float, float]:
    """Valence and arousal in [-1, 1], NaN for -2; raises ValueError(reason)."""
    out = []
    for name, text in (("valence", valence), ("arousal", arousal)):
        try:
            if float(text) == NOT_ANNOTATED:
                out.append(np.nan)
                continue
        except (TypeError, ValueError):
            pass
        out.append(check_range(text, -1.0, 1.0, name))
    return out[0], out[1]


def parse_landmarks(values: Iterable[str]) -> np.ndarray:
    """68 (x, y) points from 136 numbers; raises ValueError("landmarks_malformed")."""
    try:
        points = np.array([float(v) for v in values], np.float64)
    except (TypeError, ValueError):
        raise ValueError("landmarks_malformed") from None
    if points.size != 136 or not np.isfinite(points).all():
        raise ValueError("landmarks_malformed")
    return points.reshape(68, 2)


def parse_box(values: Iterable[str]) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError("box_not_numeric") from None


def npy_text(path: Path) -> str:
    """The single value in a .npy file (AffectNet stores them as strings) as text."""
    return str(hostile.load_npy(path).reshape(-1)[0])


def exclusion(task: str, code: int, valence: float, arousal: float) -> str | None:
    """Why ``task`` leaves this record out, or None to keep it."""
    if task == "va":
        return "va_not_annotated(-2)" if np.isnan(valence) or np.isnan(arousal) else None
    if code >= TASKS[task]:
        return f"code_{code}_{CODES[code].lower().replace('-', '_')}"
    return None


class Affectnet(tfds_base.FaceBuilder):
    """AffectNet: face crops with expression codes and valence/arousal; configs by task."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    DESCRIPTION = __doc__

    @property
    def class_names(self) -> tuple[str, ...]:
        return CODES[: TASKS[self.face_config.task] or 8]

    def plan(self, manual: Path) -> dict[str, Iterable[dict[str, Any]]]:
        rows = self._plan_csv(manual) if detect(manual) == "csv" else self._plan_npy(manual)
        config = self.face_config
        train = rows.pop("train", None)
        if train is not None:
            held = tfds_base.stratified_holdout(
                [r["code"] for r in train], config.holdout_fraction, config.seed
            )
            rows["train"] = [r for r, h in zip(train, held, strict=True) if not h]
            if held.any():
                rows["holdout"] = [r for r, h in zip(train, held, strict=True) if h]
        splits = {}
        for split in ("train", "holdout", "val"):
            if split not in rows:
                self.report.absent_splits.append(split)
                continue
            kept = []
            for r in rows[split]:
                reason = exclusion(config.task, r["code"], r["valence"], r["arousal"])
                if reason:
                    self.report.exclude(reason, r["where"])
                else:
                    kept.append(r)
            splits[split] = self._examples(kept)
        return splits

    def _row(self, where: str, source_id: str, path: Path, **fields: Any) -> dict | None:
        """Checks one record's fields; None (counted) if any is bad."""
        try:
            code = parse_label(fields["expression"], len(CODES))
            valence, arousal = parse_va(fields["valence"], fields["arousal"])
            box = parse_box(fields["box"]) if fields.get("box") is not None else None
            landmarks = None
            if self.face_config.align:
                landmarks = parse_landmarks(fields["landmarks"]())
        except (ValueError, OSError, MemoryError) as e:
            reason = str(e) if type(e) is ValueError else "unreadable_annotation"
            self.report.bad(reason, where)
            return None
        return {
            "where": where,
            "source_id": source_id,
            "path": path,
            "code": code,
            "valence": valence,
            "arousal": arousal,
            "box": box,
            "landmarks": landmarks,
        }

    def _plan_csv(self, manual: Path) -> dict[str, list]:
        self.report.source_format = f"{LISTS}/*.csv + {IMAGES}/"
        rows: dict[str, list] = {}
        for filename, split in CSV_SPLITS.items():
            path = manual / LISTS / filename
            if not path.is_file():
                continue
            name = f"{LISTS}/{filename}"
            out = rows.setdefault(split, [])
            hostile.csv_any_length()  # a field of any length is read, then judged
            with path.open(newline="", errors="replace") as f:
                reader = csv.reader(f)
                columns = list(COLUMNS)
                for row in reader:
                    where = f"{name}:line {reader.line_num}"
                    if not any(c.strip() for c in row):  # a blank line holds no record
                        continue
                    if reader.line_num == 1 and row and row[0].strip() == COLUMNS[0]:
                        columns = [c.strip() for c in row]
                        continue
                    if len(row) != len(columns) or not row[columns.index(COLUMNS[0])].strip():
                        self.report.bad("malformed_row", where, f"{len(row)} fields")
                        continue
                    field = dict(zip(columns, row, strict=True))
                    rel = field["subDirectory_filePath"].strip()
                    box = [field[c] for c in COLUMNS[1:5]]
                    landmarks = field["facial_landmarks"]
                    record = self._row(
                        where,
                        f"{IMAGES}/{rel}",
                        manual / IMAGES / rel,
                        expression=field["expression"],
                        valence=field["valence"],
                        arousal=field["arousal"],
                        box=box,
                        landmarks=lambda t=landmarks: t.strip().split(";"),
                    )
                    if record is not None:
                        out.append(record)
        return rows

    def _plan_npy(self, manual: Path) -> dict[str, list]:
        self.report.source_format = "train_set/ + val_set/ (images/ + annotations/*.npy)"
        rows: dict[str, list] = {}
        for folder, split in FOLDER_SPLITS.items():
            if not (manual / folder / "images").is_dir():
                continue
            out = rows.setdefault(split, [])
            images, annotations = manual / folder / "images", manual / folder / "annotations"
            by_stem = {}
            for path in tfds_base.list_files(images):
                rel = path.relative_to(manual).as_posix()
                if path.name.startswith("."):
                    self.report.exclude("hidden_file", rel)
                elif path.suffix.lower() not in media.IMAGE_SUFFIXES:
                    self.report.bad("not_an_image", rel)
                else:
                    by_stem[path.stem] = path
            stems = {p.name[: -len("_exp.npy")] for p in annotations.glob("*_exp.npy")}
            for stem in sorted(stems - by_stem.keys(), key=_natural):
                self.report.bad("missing_image", f"{folder}/annotations/{stem}_exp.npy")
            for stem in sorted(by_stem, key=_natural):
                path = by_stem[stem]
                rel = path.relative_to(manual).as_posix()
                exp = annotations / f"{stem}_exp.npy"
                if not exp.is_file():
                    self.report.bad(
                        "missing_annotation", rel, f"no {folder}/annotations/{exp.name}"
                    )
                    continue
                where = f"{folder}/annotations/{stem}_*.npy"
                try:
                    values = {
                        k: npy_text(annotations / f"{stem}_{k}.npy") for k in ("exp", "val", "aro")
                    }
                except FileNotFoundError as e:
                    self.report.bad("missing_annotation", rel, f"no {Path(e.filename).name}")
                    continue
                except (OSError, ValueError, IndexError, MemoryError):
                    self.report.bad("unreadable_annotation", where)
                    continue
                lnd = annotations / f"{stem}_lnd.npy"
                record = self._row(
                    where,
                    rel,
                    path,
                    expression=values["exp"],
                    valence=values["val"],
                    arousal=values["aro"],
                    box=None,
                    landmarks=lambda p=lnd: hostile.load_npy(p).reshape(-1),
                )
                if record is not None:
                    out.append(record)
        return rows

    def _examples(self, rows: list[dict]) -> Iterator[dict[str, Any]]:
        config = self.face_config
        task = config.task
        for r in rows:
            if not r["path"].is_file():
                self.report.bad("missing_image", r["where"], r["source_id"])
                continue
            image = media.read_image(r["path"])
            if image is None:
                self.report.bad("unreadable_image", r["where"], r["source_id"])
                continue
            box = r["box"] if r["box"] is not None else faces.full_image_box(image)
            try:
                face = faces.crop_face(
                    image,
                    box,
                    size=config.image_size,
                    channels=config.channels,
                    margin=config.margin,
                    landmarks=r["landmarks"],
                    align=config.align,
                )
            except faces.BadFaceBox as e:
                self.report.bad(e.reason, r["where"], str(e))
                continue
            label = r["code"] if r["code"] < (TASKS[task] or 8) else -1
            yield tfds_base.example(face, r["source_id"], label, r["valence"], r["arousal"])


def _natural(stem: str) -> tuple:
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def builder_config(config: ml_collections.ConfigDict, task: str) -> FaceConfig:
    size, channels = int(config.get("image_size", 64)), int(config.get("channels", 3))
    margin, align = float(config.get("face_margin", 0.0)), bool(config.get("face_align", False))
    fraction = float(config.get("affectnet_holdout_fraction", 0.05))
    seed = int(config.get("split_seed", 0))
    parts = (task, "aligned") if align else (task,)
    name = tfds_base.config_name(
        *parts, size=size, channels=channels, margin=margin, holdout=fraction, seed=seed
    )
    return FaceConfig(
        name=name,
        image_size=size,
        channels=channels,
        margin=margin,
        align=align,
        holdout_fraction=fraction,
        seed=seed,
        task=task,
    )


def builder(config: ml_collections.ConfigDict, task: str = "cat8") -> Affectnet:
    """The AffectNet builder for ``task`` (cat8, cat7 or va) and ``config.data``."""
    if task not in TASKS:
        raise ValueError(f"AffectNet task must be one of {sorted(TASKS)}, got {task!r}")
    return tfds_base.make_builder(Affectnet, builder_config(config, task), config)


def _loader(source: str):
    def load(split: str, config: ml_collections.ConfigDict) -> Split:
        b = builder(config, SOURCE_TASKS[source])
        return tfds_base.load_split(b, config, NAME, detect, INSTRUCTIONS, split)

    load.__doc__ = f"AffectNet {SOURCE_TASKS[source]} ``split`` (train, holdout or val)."
    return load


for _source in SOURCE_TASKS:
    SOURCES.register(_source)(_loader(_source))
