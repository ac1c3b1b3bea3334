"""The ``arrays`` source: your own preprocessed faces as plain arrays, no TensorFlow Datasets.

Settings, under ``config.data.arrays``::

    dir = ""             # folder holding one entry per split (below)
    train = ""           # per-split paths; each, when set, overrides <dir>/<split>
    val = ""
    test = ""
    class_names = ()     # () = FER2013's seven classes

A split is found as ``<dir>/<split>.npz``, else ``<dir>/<split>/`` (a sheets folder), and is
one of two formats:

* **npz** (``np.savez`` or ``np.savez_compressed``): ``images`` uint8 (N, H, W) or
  (N, H, W, C) with C 1 or 3 (RGB), and optionally ``labels`` (integers in
  [0, len(class_names)), -1 for "no label"), ``valence`` and ``arousal`` (floats in
  [-1, 1], NaN for "not annotated") and ``source_ids`` (strings), each of length N. The
  FER2013 ``train.npz`` / ``val.npz`` (``images``, ``labels``) are read as they are.
* **sheets** (lossless WebP or PNG, about 0.71 / 0.75 of the raw bytes on FER2013): the
  images tiled row-major into sheets of ``columns`` x ``rows`` tiles, the last sheet
  partly filled::

      <split>/sheets.json   {"count": N, "tile": [H, W, C], "columns": k, "rows": r,
                             "files": ["00000.webp", ...]}
      <split>/labels.npz    the optional per-image arrays above (no ``images``)
      <split>/00000.webp ...

  ``write_split(path, images, ...)`` writes either format (a path ending in ``.npz`` is
  npz), and ``python -m bregflax.data.convert SRC DST --format=webp`` converts a folder of
  ``<split>.npz`` files, checking that every image reads back bit-exact.

Images are resized and converted to ``config.data.image_size`` / ``channels`` once, at
load, as the dataset builders do. The training-split class counts (for the weighted loss)
come from the labels of split ``config.data.train_split``; they are empty when that split
is absent or unlabelled. Bad input is an error that names the file: a missing split
(``DatasetNotFoundError``), a wrong dtype or shape, arrays of different lengths, a label or
affect value out of range.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import ml_collections
import numpy as np

from bregflax import hostile
from bregflax.data import FER2013_CLASSES, SOURCES, DatasetNotFoundError, Split

NAME = "arrays"
SHEETS_FILE = "sheets.json"
LABELS_FILE = "labels.npz"
PER_IMAGE = ("labels", "valence", "arousal", "source_ids")
SHEET_FORMATS = {"webp": [cv2.IMWRITE_WEBP_QUALITY, 101], "png": [cv2.IMWRITE_PNG_COMPRESSION, 9]}
MAX_SHEET_SIDE = 16383  # WebP's limit on either side of an image
MAX_TILES_PER_SIDE = 64


# --------------------------------------------------------------------------- finding splits


def split_path(config: ml_collections.ConfigDict, split: str) -> Path:
    """Where split ``split`` is: its own path if set, else ``<dir>/<split>.npz`` or its folder."""
    settings = config.get("arrays", None) or ml_collections.ConfigDict()
    own = str(settings.get(split, "") or "") if split in ("train", "val", "test") else ""
    if own:
        path = Path(own).expanduser()
        if not path.exists():
            raise DatasetNotFoundError(f"config.data.arrays.{split}: {path} does not exist")
        return path
    folder = str(settings.get("dir", "") or "")
    if not folder:
        raise DatasetNotFoundError(
            f"the arrays source needs config.data.arrays.dir (a folder with {split}.npz or "
            f"{split}/{SHEETS_FILE}) or config.data.arrays.{split}"
        )
    root = Path(folder).expanduser()
    for path in (root / f"{split}.npz", root / split):
        if path.is_file() or (path / SHEETS_FILE).is_file():
            return path
    raise DatasetNotFoundError(
        f"split {split!r} not found: looked for {root / f'{split}.npz'} and "
        f"{root / split / SHEETS_FILE}"
    )


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """``config.arrays.class_names``, or FER2013's seven classes when unset."""
    settings = config.get("arrays", None) or ml_collections.ConfigDict()
    names = tuple(str(n) for n in (settings.get("class_names", None) or ()))
    return names or FER2013_CLASSES


# --------------------------------------------------------------------------- reading


def _npz(path: Path, keys: Sequence[str], only: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (just ``only`` when given), none outside ``keys``."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} does not exist")
    try:
        if zipfile.is_zipfile(path):
            hostile.check_npz(path)  # a header declaring petabytes: named, not a MemoryError
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as e:
        if isinstance(e, ValueError) and str(e).startswith(str(path)):
            raise
        why = str(e) or type(e).__name__
        raise ValueError(f"{path}: not a readable .npz file ({why})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single array, not an .npz file of named arrays")
    with f:
        unknown = sorted(set(f.files) - set(keys))
        if unknown:
            raise ValueError(f"{path}: unknown arrays {unknown}; expected some of {list(keys)}")
        try:
            return {k: f[k] for k in f.files if not only or k in only}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as e:
            why = str(e) or type(e).__name__
        raise ValueError(f"{path}: not a readable .npz file ({why})") from None


def _decode(path: Path, channels: int) -> np.ndarray:
    sheet = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if sheet is None:
        raise ValueError(f"{path}: missing or not a readable image")
    if sheet.ndim == 3 and sheet.shape[-1] == 4:
        sheet = sheet[..., :3]
    if channels == 1:
        return sheet if sheet.ndim == 2 else sheet[..., 0]
    if sheet.ndim == 2:
        return np.repeat(sheet[..., None], 3, axis=-1)
    return sheet[..., ::-1]  # OpenCV's BGR -> RGB


def _read_sheets(folder: Path) -> dict[str, np.ndarray]:
    """A sheets folder -> the npz-format arrays, images untiled."""
    if not (folder / SHEETS_FILE).is_file():
        raise DatasetNotFoundError(f"{folder} is a folder without {SHEETS_FILE}")
    try:
        layout = json.loads((folder / SHEETS_FILE).read_text())
        count, (h, w, c) = int(layout["count"]), (int(v) for v in layout["tile"])
        columns, rows, files = int(layout["columns"]), int(layout["rows"]), list(layout["files"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{folder / SHEETS_FILE}: malformed ({e!r})") from None
    per_sheet = columns * rows
    if c not in (1, 3) or min(h, w, columns, rows) < 1 or count < 0:
        raise ValueError(f"{folder / SHEETS_FILE}: bad tile {layout['tile']} or layout")
    if len(files) != -(-count // per_sheet):
        raise ValueError(
            f"{folder / SHEETS_FILE}: {count} images need {-(-count // per_sheet)} sheets of "
            f"{columns}x{rows}, but {len(files)} are listed"
        )
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        sheets = list(pool.map(lambda f: _decode(folder / f, c), files))
    tiles = []
    for name, sheet in zip(files, sheets, strict=True):
        if sheet.shape[:2] != (rows * h, columns * w):
            raise ValueError(
                f"{folder / name}: sheet is {sheet.shape[1]}x{sheet.shape[0]}, expected "
                f"{columns * w}x{rows * h} ({columns}x{rows} tiles of {w}x{h})"
            )
        grid = sheet.reshape(rows, h, columns, w, c).transpose(0, 2, 1, 3, 4)
        tiles.append(grid.reshape(per_sheet, h, w, c))
    images = np.concatenate(tiles)[:count] if tiles else np.zeros((0, h, w, c), np.uint8)
    arrays = {"images": images}
    if (folder / LABELS_FILE).is_file():
        arrays.update(_npz(folder / LABELS_FILE, PER_IMAGE))
    return arrays


def read(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """One split's arrays as stored (a ``.npz`` file or a sheets folder), unchecked."""
    path = Path(path)
    return _read_sheets(path) if path.is_dir() else _npz(path, ("images", *PER_IMAGE))


def _check(arrays: dict[str, np.ndarray], where: Path, num_classes: int) -> dict[str, np.ndarray]:
    """Validates the arrays of one split; images come back as (N, H, W, C)."""
    if "images" not in arrays:
        raise ValueError(f"{where}: no 'images' array (found {sorted(arrays)})")
    images = arrays["images"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            f"{where}: images must be uint8 (N, H, W) or (N, H, W, C), "
            f"got {images.dtype} {images.shape}"
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] not in (1, 3) or 0 in images.shape[1:]:
        raise ValueError(f"{where}: images must have 1 or 3 channels, got shape {images.shape}")
    n = len(images)
    if n == 0:
        raise ValueError(f"{where}: the split has no images")
    out = {"images": images}
    for key in PER_IMAGE:
        if key not in arrays:
            continue
        value = arrays[key]
        if value.shape != (n,):
            raise ValueError(f"{where}: {key} has shape {value.shape}, expected ({n},) as images")
        if key == "labels":
            if value.dtype.kind not in "iu":
                raise ValueError(f"{where}: labels must be integers, got {value.dtype}")
            bad = np.flatnonzero((value < -1) | (value >= num_classes))
            if len(bad):
                raise ValueError(
                    f"{where}: label {value[bad[0]]} at index {bad[0]} is out of range "
                    f"[0, {num_classes}) ({len(bad)} such; -1 marks an unlabelled image)"
                )
            value = value.astype(np.int32)
        elif key in ("valence", "arousal"):
            if value.dtype.kind != "f":
                raise ValueError(f"{where}: {key} must be floats, got {value.dtype}")
            bad = np.flatnonzero(~(np.isnan(value) | (np.abs(value) <= 1)))
            if len(bad):
                raise ValueError(
                    f"{where}: {key} {value[bad[0]]} at index {bad[0]} is outside [-1, 1] "
                    f"({len(bad)} such; NaN marks a missing value)"
                )
            value = value.astype(np.float32)
        elif value.dtype.kind in "US":
            value = value.astype(str)
        else:
            raise ValueError(f"{where}: source_ids must be strings, got {value.dtype}")
        out[key] = value
    return out


def _to_format(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(N, H, W, C) -> (N, size, size, channels), as the pipeline converts one image."""
    if images.shape[1:] == (size, size, channels):
        return images
    if images.shape[1:] == (size, size, 1) and channels == 3:
        return np.repeat(images, 3, axis=-1)
    from bregflax.data.pipeline import to_shape

    return np.stack([to_shape(image, size, channels) for image in images])


@functools.lru_cache(maxsize=8)
def _cached(path: str, stamp: tuple, size: int, channels: int, num_classes: int) -> dict:
    """One split's checked arrays in the training format, read once per process; read-only."""
    del stamp  # part of the key: a rewritten file is read again
    arrays = _check(read(path), Path(path), num_classes)
    arrays["images"] = np.ascontiguousarray(_to_format(arrays["images"], size, channels))
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def _stamp(path: Path) -> tuple:
    files = [path / SHEETS_FILE, path / LABELS_FILE] if path.is_dir() else [path]
    return tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())


def read_split(config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
    """Split ``split``'s checked arrays: ``images`` (N, size, size, channels) uint8 and the
    optional per-image arrays; cached in-process and read-only."""
    path = split_path(config, split).resolve()
    size, channels = int(config.get("image_size", 48)), int(config.get("channels", 1))
    if channels not in (1, 3):
        raise ValueError(f"config.data.channels must be 1 or 3, got {channels}")
    return _cached(str(path), _stamp(path), size, channels, len(class_names(config)))


class ArraysSource:
    """Records over one split's arrays; ``source_id`` is ``<file>#<index>`` unless given."""

    def __init__(self, arrays: dict[str, np.ndarray], name: str):
        self.arrays, self.name = arrays, name

    def __len__(self) -> int:
        return len(self.arrays["images"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        a, i = self.arrays, int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i %= len(self)
        return {
            "image": a["images"][i],
            "label": np.int32(a["labels"][i] if "labels" in a else -1),
            "valence": np.float32(a["valence"][i] if "valence" in a else np.nan),
            "arousal": np.float32(a["arousal"][i] if "arousal" in a else np.nan),
            "source_id": str(a["source_ids"][i]) if "source_ids" in a else f"{self.name}#{i}",
        }


def train_counts(config: ml_collections.ConfigDict) -> np.ndarray:
    """Label counts of split ``config.train_split`` (labels only, no images read); empty if
    that split is absent or has no labels."""
    try:
        path = split_path(config, str(config.get("train_split", "train")))
    except DatasetNotFoundError:
        return np.zeros(0, np.int64)
    file = path / LABELS_FILE if path.is_dir() else path
    if not file.is_file():
        return np.zeros(0, np.int64)
    labels = _npz(file, ("images", *PER_IMAGE), only=("labels",)).get("labels")
    if labels is None:
        return np.zeros(0, np.int64)
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise ValueError(f"{file}: labels must be integers (N,), got {labels.dtype} {labels.shape}")
    k = len(class_names(config))
    return np.bincount(labels[(labels >= 0) & (labels < k)], minlength=k).astype(np.int64)


@SOURCES.register(NAME)
def load(split: str, config: ml_collections.ConfigDict) -> Split:
    """Split ``split`` of the arrays under ``config.arrays`` (see the module docstring)."""
    arrays = read_split(config, split)
    source = ArraysSource(arrays, split_path(config, split).name)
    return Split(source, train_counts(config), class_names(config))


# --------------------------------------------------------------------------- writing


def _sheet_layout(n: int, h: int, w: int) -> tuple[int, int]:
    """Tiles per sheet row and sheet column: as many as fit, no more rows than ``n`` needs."""
    columns = max(1, min(MAX_TILES_PER_SIDE, MAX_SHEET_SIDE // w))
    rows = max(1, min(MAX_TILES_PER_SIDE, MAX_SHEET_SIDE // h, -(-n // columns)))
    return columns, rows


def write_split(
    path: str | os.PathLike,
    images: np.ndarray,
    *,
    image_format: str = "webp",
    **per_image: np.ndarray,
) -> Path:
    """Writes one split: ``<path>.npz`` when ``path`` ends in .npz, else a sheets folder in
    ``image_format`` (webp or png, both lossless). ``per_image``: labels, valence, arousal,
    source_ids. The arrays are checked as ``load`` checks them (labels against 1000 classes)."""
    path = Path(path)
    if os.path.lexists(path):
        raise FileExistsError(f"{hostile.text_path(path)} exists: remove it or choose another name")
    per_image = {k: np.asarray(v) for k, v in per_image.items() if v is not None}
    unknown = set(per_image) - set(PER_IMAGE)
    if unknown:
        raise ValueError(f"unknown per-image arrays {sorted(unknown)}; expected {PER_IMAGE}")
    checked = _check({"images": np.asarray(images), **per_image}, path, 1000)
    labels = {k: np.asarray(per_image[k]) for k in per_image}  # as given (e.g. int64 labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        ) as f:
            np.savez_compressed(f, images=np.asarray(images), **labels)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.link(f.name, path)  # only where nothing is
        return path
    if image_format not in SHEET_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(SHEET_FORMATS)}")
    tiles = checked["images"]
    n, h, w, c = tiles.shape
    columns, rows = _sheet_layout(n, h, w)
    per_sheet = columns * rows
    final, path = path, Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))

    def encode(k: int) -> str:
        chunk = tiles[k * per_sheet : (k + 1) * per_sheet]
        grid = np.zeros((per_sheet, h, w, c), np.uint8)
        grid[: len(chunk)] = chunk
        sheet = grid.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4)
        sheet = sheet.reshape(rows * h, columns * w, c)
        sheet = sheet[..., 0] if c == 1 else sheet[..., ::-1]  # RGB -> OpenCV's BGR
        name = f"{k:05d}.{image_format}"
        if not cv2.imwrite(os.fspath(path / name), sheet, SHEET_FORMATS[image_format]):
            raise OSError(f"could not write {path / name}")
        return name

    try:  # written in a temporary folder, renamed into place when whole
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            files = list(pool.map(encode, range(-(-n // per_sheet))))
        if labels:
            np.savez_compressed(path / LABELS_FILE, **labels)
        layout = {"count": n, "tile": [h, w, c], "columns": columns, "rows": rows, "files": files}
        (path / SHEETS_FILE).write_text(json.dumps(layout, indent=1) + "\n")
        os.chmod(path, 0o755)
        if os.path.lexists(final):  # made meanwhile: never replaced
            raise FileExistsError(errno.EEXIST, "exists", str(final))
        os.rename(path, final)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return final
