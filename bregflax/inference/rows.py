"""The rows ``bregflax predict`` writes and the summary it ends with: CSV, one JSON document
or JSON Lines (chosen by ``--out``'s suffix), each row flushed as it is written, strict JSON
(no NaN), and the tally of files, frames, faces and problems."""

from __future__ import annotations

import contextlib
import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bregflax import hostile, safe_io
from bregflax.data import media

if TYPE_CHECKING:
    from bregflax.inference.annotate import Annotations


def show_progress(no_progress: bool, out: str | None, stdout, stderr) -> bool:
    """Whether to draw the bar (on stderr): not when asked not to, not when stderr is no
    terminal, and not when the rows go to stdout on the same terminal (they would mix)."""
    if no_progress or not _isatty(stderr):
        return False
    return out is not None or not _isatty(stdout)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_of(out: str | None) -> str:
    """The format an ``--out`` file's suffix asks for: .json, .jsonl, else CSV."""
    suffix = Path(out or "").suffix.lower()
    return {".json": "json", ".jsonl": "jsonl"}.get(suffix, "csv")


def csv_columns(class_names: Sequence[str], has_va: bool, annotate: bool = False) -> list[str]:
    cols = ["path", "frame", "time_s", "face", "x", "y", "width", "height", "source"]
    cols += ["label", "label_index", *[f"p_{n}" for n in class_names]] if class_names else []
    cols += ["valence", "arousal"] if has_va else []
    cols += ["annotation"] if annotate else []
    return [*cols, "status", "error"]


def csv_row(row: dict) -> dict:
    flat = {k: v for k, v in row.items() if k not in ("box", "probs")}
    if "box" in row:
        flat.update(zip(("x", "y", "width", "height"), row["box"], strict=True))
    for name, p in row.get("probs", {}).items():
        flat[f"p_{name}"] = p
    if flat.get("time_s") is not None and math.isfinite(flat["time_s"]):
        flat["time_s"] = round(flat["time_s"], 3)
    flat, bad = hostile.finite({k: hostile._texts(v) for k, v in flat.items()})
    if bad:  # an empty cell (pandas: NaN), and the reason in the error column
        note = f"not finite, written as empty: {', '.join(bad)}"
        flat["error"] = f"{flat['error']}; {note}" if flat.get("error") else note
    return flat


class Writer:
    """Rows to a CSV, JSON or JSON-lines file (or stdout), each flushed as it is written.

    ``json`` is one document, a list of rows: ``close`` ends it (until then the file holds
    the rows so far, and ``[``).
    """

    def __init__(self, out, fmt: str, columns: list[str]):
        self.out, self.fmt, self._rows = out, fmt, 0
        if fmt == "csv":
            self._csv = csv.DictWriter(out, columns, extrasaction="ignore")
            self._csv.writeheader()
        elif fmt == "json":
            out.write("[")
        out.flush()

    def write(self, row: dict) -> None:
        if self.fmt == "csv":
            self._csv.writerow(csv_row(row))
        elif self.fmt == "json":
            self.out.write(("," if self._rows else "") + "\n  " + hostile.strict_json(row, "error"))
        else:
            self.out.write(hostile.strict_json(row, reason_key="error") + "\n")
        self._rows += 1
        self.out.flush()

    def close(self) -> None:
        """Ends a JSON document (CSV and JSON lines need no end)."""
        if self.fmt == "json":
            self.out.write("\n]\n" if self._rows else "]\n")
            self.out.flush()


CROP_SIDE = 256  # a face crop is at most this many pixels on a side, and about square


def looks_like_crop(path: str) -> bool:
    """Whether the image at ``path`` looks like a face crop: about square (sides within
    1.25x) and at most ``CROP_SIDE`` pixels on a side. False if it cannot be read."""
    image = media.read_image(path)
    if image is None:
        return False
    h, w = image.shape[:2]
    return max(h, w) <= CROP_SIDE and max(h, w) <= 1.25 * min(h, w)


class Tally:
    """Counts rows as they are written, for the closing summary and the exit status."""

    def __init__(self, files: int):
        self.files, self.ok, self.no_face, self.unboxed = files, 0, 0, 0
        self.frames: set[tuple[str, int | None]] = set()
        self.paths: set[str] = set()  # files whose rows are written
        self.no_face_photos: list[str] = []  # photos the detector found no face in
        self.labels: dict[str, int] = {}  # faces per predicted class
        self.problems: list[dict] = []  # error, warning and skipped rows
        self.notes: list[str] = []  # more lines for the summary

    @property
    def done(self) -> int:
        return len(self.paths)

    def add(self, row: dict) -> None:
        self.paths.add(row["path"])
        if row["status"] not in ("skipped", "warning"):
            self.frames.add((row["path"], row["frame"]))
        self.ok += row["status"] == "ok"
        if row["status"] == "ok" and "label" in row:
            self.labels[row["label"]] = self.labels.get(row["label"], 0) + 1
        if row["status"] == "no_face":
            self.no_face += 1
            self.unboxed += row.get("source") == "user"
            if row.get("source") == "detector" and row["frame"] is None:
                self.no_face_photos.append(row["path"])
        if row["status"] in ("error", "warning", "skipped"):
            self.problems.append(row)

    def mostly_crops(self, sample: int = 100) -> bool:
        """Whether most frames read were photos with no face found that look like face
        crops (:func:`looks_like_crop`, judged on up to ``sample`` of them)."""
        photos = self.no_face_photos
        if not photos or 2 * len(photos) <= len(self.frames):
            return False
        step = max(len(photos) // sample, 1)
        seen = photos[::step][:sample]
        crops = sum(looks_like_crop(path) for path in seen) * len(photos) / len(seen)
        return 2 * crops > len(self.frames)

    @property
    def failed(self) -> bool:
        """Whether a file or face box could not be used (skipped files and warnings do not
        count)."""
        return any(p["status"] == "error" for p in self.problems)

    def summary(self) -> str:
        lines = [
            f"{self.files} file(s), {len(self.frames)} frame(s): {self.ok} face(s) "
            f"classified, {self.no_face} frame(s) with no face, {len(self.problems)} problem(s)"
        ]
        lines += [
            f"  {p['status']}: {args_text(p['path'])}: {hostile.text_path(p['error'])}"
            for p in self.problems
        ]
        if self.unboxed:
            lines.append(
                f"  {self.unboxed} frame(s) had no --boxes row and count as no face; "
                "--boxes-fallback runs the detector there (the whole image with --no-detect)"
            )
        if self.mostly_crops():
            lines.append("  (most images look like face crops already: pass --no-detect)")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def closing(out: str | None, fmt: str, annotate: Annotations | None, tally: Tally) -> str:
    """The end of the summary: where the rows and annotated copies are, and what next."""
    names = {"csv": "CSV", "json": "one JSON document", "jsonl": "JSON Lines"}
    lines = []
    if tally.labels:
        ranked = sorted(tally.labels.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("faces by label: " + ", ".join(f"{k} {n}" for k, n in ranked))
    lines.append(f"rows: {out or 'stdout'} ({names[fmt]}, one row per face)")
    if annotate is not None:
        lines.append(f"annotated copies: {annotate.folder}/")
        lines.append(f"next: look at {annotate.folder}/ to check the boxes and labels")
    elif tally.ok:
        lines.append("next: add --annotate DIR to draw each face's box and label on a copy")
    return "\n".join(lines)


def check_out(out: str, inputs: list[media.Input], boxes: str | None) -> None:
    """Refuses an ``--out`` that is a folder, a symbolic link, lies in no folder, or names
    an input (by any route)."""
    path = Path(out)
    if path.is_symlink():
        raise ValueError(
            f"--out {out} is a symbolic link (to {os.readlink(path)}): name the file itself"
        )
    if path.is_dir():
        raise ValueError(
            f"--out {out} is a folder: name a file in it, e.g. {path / 'predictions.csv'}"
        )
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist"
        raise ValueError(f"--out {out}: folder {path.parent} {what}; create it or choose another")
    key = media.identity(path)
    for entry in inputs:
        if not entry.skip and media.identity(entry.path) == key:
            raise ValueError(
                f"--out {out} is one of the inputs ({entry.path}): choose another file name"
            )
    if boxes and media.identity(boxes) == key:
        raise ValueError(f"--out {out} is the --boxes file: choose another file name")
    if path.is_file() and not earlier_output(path):
        raise ValueError(
            f"--out {out} exists and is not an earlier bregflax predict output: choose another "
            "file name (or delete it)"
        )


def earlier_output(path: Path) -> bool:
    """Whether a file is empty or starts as rows of this command do: ``--out`` replaces
    only those, never a file of the user's."""
    with open(path, "rb") as f:
        head = f.read(64)
    return not head or head.startswith((b"path,frame,time_s,", b'{"path": '))


class _Out:
    """``--out``, opened for rows: one writer at a time (:class:`safe_io.OutputLock`),
    never through a symbolic link, emptied only once the lock is held. ``good`` is the size
    after the last complete row: a failed write is cut back to it."""

    def __init__(self, path: str):
        self.path, self.lock, self.good, self.file = path, None, 0, None
        regular = not os.path.exists(path) or os.path.isfile(path)
        try:
            if regular:  # a device or pipe (/dev/stdout) is written as it is
                self.lock = safe_io.OutputLock(path).__enter__()
            flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(path, flags, 0o644)
            if regular:
                os.ftruncate(fd, 0)
        except OSError as e:
            self.close()
            raise ValueError(f"cannot write --out {args_text(path)}: {e.strerror}") from None
        self.file = os.fdopen(fd, "w", newline="", encoding="utf-8")
        self.regular = regular

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self) -> _Out:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def flush(self) -> None:
        self.file.flush()
        if self.regular:
            self.good = self.file.tell()

    def cut(self) -> None:
        """Drops a row a failed write left half-written."""
        with contextlib.suppress(OSError, ValueError):
            self.file.close()
        if self.regular:
            with contextlib.suppress(OSError):
                os.truncate(self.path, self.good)

    def close(self) -> None:
        try:
            if self.file is not None:
                self.file.close()
        finally:
            if self.lock is not None:
                self.lock.__exit__(None, None, None)
                self.lock = None


def args_text(path) -> str:
    return hostile.text_path(path)


def open_out(path: str) -> _Out:
    return _Out(path)
