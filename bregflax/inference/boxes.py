"""``bregflax predict --boxes FILE``: face boxes the user gives, read from a CSV.

Columns ``path, x, y, width, height`` and an optional ``frame``; paths are relative to the
CSV's own folder. :class:`Boxes` answers the engine's lookups (:mod:`bregflax.inference.engine`)
and remembers which rows were used, so the summary can name the rows no frame matched.
"""

from __future__ import annotations

import csv
from pathlib import Path

BOX_COLUMNS = ("path", "x", "y", "width", "height")


class Boxes(dict):
    """``--boxes``: {(resolved path, frame or None): [box, ...]} and which rows were used.

    A key with frame None applies to every frame of that file without its own rows.
    """

    def __init__(self, items=(), source: str | Path | None = None):
        super().__init__(items)
        self.source = str(source) if source is not None else "--boxes"
        self.lines: dict[tuple, list[int]] = {}  # key -> CSV line numbers
        self.names: dict[tuple, str] = {}  # key -> the path as the CSV wrote it
        self.used: set[tuple] = set()
        self.seen: set[str] = set()  # resolved paths of the frames looked up
        self._resolved: dict[str, str] = {}

    def lookup(self, path: str, frame: int | None) -> list | None:
        """The boxes given for ``frame`` of ``path`` (or for all its frames); None if none."""
        key = self._resolved.get(path)
        if key is None:
            key = self._resolved[path] = str(Path(path).resolve())
        self.seen.add(key)
        for k in ((key, frame), (key, None)):
            if k in self:
                self.used.add(k)
                return self[k]
        return None

    def unmatched(self) -> list[str]:
        """``file:line (path[, why])`` for each row no frame used, in CSV order."""
        out = []
        for key in sorted(self.keys() - self.used, key=lambda k: self.lines.get(k, [0])[0]):
            name = self.names.get(key, key[0])
            if key[0] not in self.seen:
                why = ""
            elif key[1] is None:
                why = ", every frame read has its own rows"
            else:
                why = f", frame {key[1]} was not read"
            out += [f"{self.source}:{line} ({name}{why})" for line in self.lines.get(key, [0])]
        return out


def read_boxes(path: str | Path) -> Boxes:
    """``--boxes`` CSV: columns path, x, y, width, height and an optional frame.

    Relative paths are taken from the CSV's own folder; a row without a frame applies to
    every frame of that file. The file may start with a UTF-8 byte-order mark. Raises
    ValueError naming the file (and line) for anything it cannot use.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--boxes {path} is a folder: give the CSV file inside it")
    if not path.is_file():
        raise ValueError(f"--boxes {path}: no such file")
    folder, boxes = path.resolve().parent, Boxes(source=path.name)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            names = [(n or "").strip().lower() for n in reader.fieldnames or ()]
            reader.fieldnames = names
            missing = [c for c in BOX_COLUMNS if c not in names]
            if missing:
                raise ValueError(
                    f"{path}: no column {', '.join(missing)}: --boxes needs columns "
                    f"{','.join(BOX_COLUMNS)} (and optionally frame); found "
                    f"{','.join(names) or 'an empty file'}"
                )
            for row in reader:
                key, box = _box_row(row, folder, f"{path}:{reader.line_num}")
                boxes.setdefault(key, []).append(box)
                boxes.lines.setdefault(key, []).append(reader.line_num)
                boxes.names[key] = row["path"]
    except UnicodeDecodeError as e:
        raise ValueError(
            f"--boxes {path} is not UTF-8 text ({e.reason}); save it as UTF-8 CSV"
        ) from None
    return boxes


def _box_row(row: dict, folder: Path, where: str) -> tuple[tuple, tuple[float, ...]]:
    empty = [k for k in BOX_COLUMNS if not (row.get(k) or "").strip()]
    if empty:
        raise ValueError(f"{where}: no value for {', '.join(empty)}")
    box = []
    for k in BOX_COLUMNS[1:]:
        try:
            box.append(float(row[k]))
        except ValueError:
            raise ValueError(f"{where}: {k} {row[k]!r} is not a number") from None
    frame = (row.get("frame") or "").strip()
    if frame and not frame.isdigit():
        raise ValueError(f"{where}: frame {frame!r} is not a whole number from 0")
    key = (str((folder / row["path"]).resolve()), int(frame) if frame else None)
    return key, tuple(box)
