"""FER2013 (Goodfellow et al. 2013) as a TensorFlow-free TFDS builder and the ``fer2013`` source.

Two raw formats are accepted in the manual dir (the CSV wins if both are there):

* ``fer2013.csv`` (Kaggle; also ``fer2013/fer2013.csv`` or ``icml_face_data.csv``) with
  columns ``emotion,pixels,Usage``: ``pixels`` is 2304 space-separated grey levels of a
  48x48 face. Usage ``Training`` -> ``train``, ``PublicTest`` -> ``val``, ``PrivateTest`` ->
  ``test``. ``source_id`` is ``fer2013.csv:line N`` (line 1 is the header).
* The Kaggle image-folder export: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg`` with
  class folders angry, disgust, fear, happy, sad, surprise, neutral. When every file name
  starts with ``Training_``, ``PublicTest_`` or ``PrivateTest_``, that prefix gives the
  split as above. Otherwise ``test/`` is ``test`` and a seeded, stratified ``val`` of
  ``fer2013_val_fraction`` is carved from ``train/``. ``source_id`` is the relative path.

Labels are the CSV codes: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise,
6 Neutral (``FER2013_CLASSES``). The images are already face crops: each is only resized to
``image_size`` and converted to ``channels``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from bregflax import hostile
from bregflax.data import FER2013_CLASSES, SOURCES, Split, faces, media, tfds_base
from bregflax.data.tfds_base import FaceConfig

NAME = "fer2013"
PIXELS = 48 * 48
CSV_NAMES = ("fer2013.csv", "fer2013/fer2013.csv", "icml_face_data.csv")
CLASS_FOLDERS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
USAGE_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SPLITS = ("train", "val", "test")

INSTRUCTIONS = """\
FER2013 cannot be downloaded automatically (its terms forbid redistribution). Get either
  * fer2013.csv: Kaggle "Challenges in Representation Learning: Facial Expression
    Recognition Challenge" (fer2013.tar.gz holds fer2013/fer2013.csv), or
  * the image-folder export: Kaggle dataset "msambare/fer2013" (train/ and test/ folders
    with one sub-folder per class: angry, disgust, fear, happy, sad, surprise, neutral).
"""


def find_csv(manual: Path) -> Path | None:
    return next((manual / n for n in CSV_NAMES if (manual / n).is_file()), None)


def detect(manual: Path) -> str | None:
    """``"csv"``, ``"folders"`` or None (no FER2013 files in ``manual``)."""
    if find_csv(manual) is not None:
        return "csv"
    if (manual / "train").is_dir() or (manual / "test").is_dir():
        return "folders"
    return None


def parse_label(text: str, num_classes: int) -> int:
    """An integer class code in [0, num_classes); raises ValueError(reason)."""
    text = text.strip()
    try:
        label = int(text)
    except ValueError:  # a number of more than 4300 digits is out of range too
        digits = text.lstrip("+-")
        reason = "label_out_of_range" if digits.isascii() and digits.isdigit() else None
        raise ValueError(reason or "label_not_numeric") from None
    if not 0 <= label < num_classes:
        raise ValueError("label_out_of_range")
    return label


def parse_pixels(text: str) -> np.ndarray:
    """2304 space-separated grey levels as uint8 (48, 48); raises ValueError(reason)."""
    values = text.split()
    if len(values) != PIXELS:
        raise ValueError("wrong_pixel_count")
    try:
        pixels = np.array(values, dtype=np.int64)
    except OverflowError:  # a value of 20 digits: out of range for any integer type
        raise ValueError("pixel_out_of_range") from None
    except ValueError:
        digits = [v.lstrip("+-") for v in values]
        if all(d.isascii() and d.isdigit() for d in digits):  # over 4300 digits
            raise ValueError("pixel_out_of_range") from None
        raise ValueError("pixels_not_numeric") from None
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("pixel_out_of_range")
    return pixels.astype(np.uint8).reshape(48, 48)


def usage_prefix(name: str) -> str | None:
    return next((u for u in USAGE_SPLITS if name.startswith(u + "_")), None)


class Fer2013(tfds_base.FaceBuilder):
    """FER2013: 48x48 grey faces, 7 expressions; splits train / val / test."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    CLASS_NAMES = FER2013_CLASSES
    DESCRIPTION = __doc__

    def plan(self, manual: Path) -> dict[str, Iterable[dict[str, Any]]]:
        path = find_csv(manual)
        items = self._plan_csv(path, manual) if path else self._plan_folders(manual)
        self.report.absent_splits = [s for s in SPLITS if s not in items]
        return {s: self._examples(v) for s, v in items.items()}

    def _face(self, image: np.ndarray) -> np.ndarray:
        config = self.face_config
        box = faces.full_image_box(image)
        return faces.crop_face(image, box, size=config.image_size, channels=config.channels)

    def _plan_csv(self, path: Path, manual: Path) -> dict[str, list]:
        """Parses and checks every row: {split: [(source_id, label, pixels or path)]}."""
        name = path.relative_to(manual).as_posix()
        self.report.source_format = name
        items: dict[str, list] = {}
        hostile.csv_any_length()  # a field of any length is read, then judged by its checks
        # A BOM is not a column name; a byte that is not UTF-8 fails that field's checks.
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            if not {"emotion", "pixels", "usage"} <= set(header):
                raise ValueError(f"{name}:line 1: header must name emotion, pixels, Usage")
            col = {h: header.index(h) for h in ("emotion", "pixels", "usage")}
            for row in reader:
                where = f"{name}:line {reader.line_num}"
                if not any(c.strip() for c in row):  # a blank line holds no record
                    continue
                if len(row) != len(header):
                    self.report.bad("malformed_row", where, f"{len(row)} fields")
                    continue
                split = USAGE_SPLITS.get(row[col["usage"]].strip())
                if split is None:
                    self.report.bad("unknown_usage", where, repr(row[col["usage"]][:30]))
                    continue
                rows = items.setdefault(split, [])
                try:
                    label = parse_label(row[col["emotion"]], len(FER2013_CLASSES))
                    pixels = parse_pixels(row[col["pixels"]])
                except ValueError as e:
                    self.report.bad(str(e), where)
                    continue
                rows.append((where, label, pixels))
        return items

    def _plan_folders(self, manual: Path) -> dict[str, list]:
        """Lists and checks the class folders: {split: [(source_id, label, path)]}."""
        files = []  # (top folder, class, path)
        for top in ("train", "test"):
            for path in tfds_base.list_files(manual / top):
                rel = path.relative_to(manual).as_posix()
                if path.name.startswith("."):
                    self.report.exclude("hidden_file", rel)
                elif path.suffix.lower() not in media.IMAGE_SUFFIXES:
                    self.report.bad("not_an_image", rel)
                elif path.parent.name.lower() not in CLASS_FOLDERS:
                    self.report.bad("unknown_class_folder", rel)
                else:
                    files.append((top, CLASS_FOLDERS.index(path.parent.name.lower()), path))
        prefixes = [usage_prefix(p.name) for _, _, p in files]
        by_prefix = bool(files) and all(prefixes)
        items: dict[str, list] = {}
        if by_prefix:
            self.report.source_format = "image folders (split by Usage file-name prefix)"
            for (_, label, path), usage in zip(files, prefixes, strict=True):
                rel = path.relative_to(manual).as_posix()
                items.setdefault(USAGE_SPLITS[usage], []).append((rel, label, path))
            return items
        self.report.source_format = "image folders (val carved from train/)"
        if any(prefixes):
            self.report.note("some_files_without_usage_prefix_so_folders_used", str(manual))
        train = [(p.relative_to(manual).as_posix(), y, p) for t, y, p in files if t == "train"]
        test = [(p.relative_to(manual).as_posix(), y, p) for t, y, p in files if t == "test"]
        config = self.face_config
        held = tfds_base.stratified_holdout(
            [y for _, y, _ in train], config.holdout_fraction, config.seed
        )
        val = [r for r, h in zip(train, held, strict=True) if h]
        if (manual / "train").is_dir():  # present: an empty train split is an error
            items["train"] = [r for r, h in zip(train, held, strict=True) if not h]
        if val:
            items["val"] = val
        if (manual / "test").is_dir():
            items["test"] = test
        return items

    def _examples(self, rows: list) -> Iterator[dict[str, Any]]:
        for source_id, label, data in rows:
            if isinstance(data, Path):
                image = media.read_image(data)
                if image is None:
                    self.report.bad("unreadable_image", source_id)
                    continue
            else:
                image = data
            yield tfds_base.example(self._face(image), source_id, label)


def builder_config(config: ml_collections.ConfigDict) -> FaceConfig:
    size, channels = int(config.get("image_size", 48)), int(config.get("channels", 1))
    fraction, seed = (
        float(config.get("fer2013_val_fraction", 0.1)),
        int(config.get("split_seed", 0)),
    )
    name = tfds_base.config_name(size=size, channels=channels, val=fraction, seed=seed)
    return FaceConfig(
        name=name, image_size=size, channels=channels, holdout_fraction=fraction, seed=seed
    )


def builder(config: ml_collections.ConfigDict) -> Fer2013:
    """The FER2013 builder for ``config.data`` (not prepared yet, perhaps)."""
    return tfds_base.make_builder(Fer2013, builder_config(config), config)


@SOURCES.register(NAME)
def load(split: str, config: ml_collections.ConfigDict) -> Split:
    """FER2013 ``split`` (train, val or test), prepared on first use."""
    return tfds_base.load_split(builder(config), config, NAME, detect, INSTRUCTIONS, split)
