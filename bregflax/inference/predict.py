"""``bregflax predict PATH...``: the expression of every face in photos and videos.

    bregflax predict photo.jpg faces/ clip.mp4 --every 10 --out predictions.csv

Paths are image files, folders (searched recursively) and videos. Each face found by the
Haar cascade (:mod:`bregflax.inference.detect`), given in ``--boxes FILE``, or the whole image
(``--no-detect``) becomes a row: path, frame, time, box, class probabilities, label,
valence and arousal. An image with no face gets a ``no_face`` row; an unreadable file gets
an ``error`` row and a line in the closing summary, and the rest are still processed.

This module is the command line and the rows' output (CSV or JSON lines, the closing
summary): the engine is :mod:`bregflax.inference.engine`, the model
:class:`bregflax.inference.predictor.Predictor` (also importable from here, as before).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from bregflax.data import media
from bregflax.inference import engine as inference
from bregflax.inference.annotate import Annotations
from bregflax.inference.boxes import read_boxes
from bregflax.inference.detect import FER2013_MARGIN, MIN_FACE, REDETECT_EVERY
from bregflax.inference.predictor import Predictor

__all__ = ["Predictor", "main", "parse_args"]

PROG = "bregflax predict"
EPILOG = """\
files:
  Nothing is written over an input: --out naming an input (or the --boxes file) is refused,
  and an annotated copy whose name is taken by an input or by an earlier copy of this run
  gets .annotated or -2 added (the summary lists them). Rows are written as each file is
  done, so a crash loses at most the file being processed. Annotated copies keep each
  input's path under its folder; inputs OpenCV cannot write in colour (.pgm, no suffix)
  are annotated as .png. The same file named twice is read once.

finding faces:
  Each image is searched scaled so that a --min-face face is 24 pixels (the cascade's
  window): a 640x480 frame is searched at 320x240 by default. In a video the whole frame is
  searched every --redetect-every frames, and in between each face is looked for near where
  it was (the whole frame again as soon as one is not found, and on every frame while no
  face is followed): a face that comes into view while others are followed may be found
  up to K-1 frames late.

sizes and damage:
  Photos over 4096x4096 pixels are searched for faces at reduced size (boxes are given in
  the full image); a --boxes box over 4x the image's longer side is an error row. A video
  that ends before the frames its header gives gets a warning row naming the missing ones.

--boxes:
  Paths in the CSV are relative to the CSV's folder. A frame with no row in it has no face
  (a no_face row) unless --boxes-fallback, which runs the detector there (the whole image
  with --no-detect). Rows that match no input are listed in the summary.

exit status:
  0 done; 1 some file, face box or annotation could not be used (its rows say why);
  2 a usage error, told in one line (--verbose adds the traceback)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _checked(check, kind=float):
    """An argparse type: ``text`` as ``kind``, then ``check``ed (its ValueError's message)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            number = "whole number" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"must be a {number}, got {text!r}") from None
        try:
            return check(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _at_least_1(n: int) -> int:
    if n < 1:
        raise ValueError(f"must be >= 1, got {n}")
    return n


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = _Parser(
        prog=PROG,
        description="Facial expression (and valence/arousal) of every face in photos and videos.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", help="image files, folders (recursive) and videos")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="fer2013", help="shipped model name (default fer2013)")
    src.add_argument("--workdir", help="use a training run's checkpoint instead")
    p.add_argument("--checkpoint", default="best", help="with --workdir: best | latest | STEP")
    p.add_argument("--out", help="output file, .csv or .jsonl (default: CSV on stdout)")
    p.add_argument("--format", choices=("csv", "jsonl"), help="default: from --out's suffix")
    p.add_argument(
        "--every",
        type=_checked(_at_least_1, int),
        default=1,
        help="video: every N-th frame (default 1)",
    )
    p.add_argument("--boxes", help="CSV of face boxes: path,x,y,width,height[,frame]")
    p.add_argument(
        "--boxes-fallback",
        action="store_true",
        help="with --boxes: frames that have no row are searched by the detector (the whole "
        "image with --no-detect) instead of having no face",
    )
    p.add_argument("--no-detect", action="store_true", help="each image is already a face crop")
    margin_help = (
        f"fraction of the box added on each side, 0 to {inference.MAX_MARGIN:g} "
        f"(default {FER2013_MARGIN}: FER2013's framing)"
    )
    p.add_argument("--margin", type=_checked(inference.check_margin), help=margin_help)
    min_face_help = (
        f"smallest face side in pixels (below 1: fraction of the shorter side; default "
        f"{MIN_FACE}, the model's input); images are searched scaled so that it is 24 pixels"
    )
    p.add_argument("--min-face", type=_checked(inference.check_min_face), help=min_face_help)
    p.set_defaults(margin=FER2013_MARGIN, min_face=MIN_FACE)
    p.add_argument(
        "--redetect-every",
        type=_checked(_at_least_1, int),
        default=REDETECT_EVERY,
        metavar="K",
        help=f"video: search the whole frame every K-th frame read (default {REDETECT_EVERY}), "
        "and in between look for each face near where it was; 1: the whole frame every time",
    )
    p.add_argument("--annotate", help="write copies with boxes and labels to this folder")
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average each face with its mirror image (default: as the model was validated)",
    )
    p.add_argument("--batch-size", type=_checked(_at_least_1, int), default=64)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="print the traceback of a usage error or a failed file",
    )
    return p.parse_args(argv)


def check_out(out: str, inputs: list[media.Input], boxes: str | None) -> None:
    """Refuses an ``--out`` that is a folder, lies in no folder, or names an input."""
    path = Path(out)
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


def _setup(args: argparse.Namespace):
    """Everything checked before a row is written: raises ValueError or OSError."""
    inputs = media.collect(args.paths)
    if args.out:
        check_out(args.out, inputs, args.boxes)
    boxes = read_boxes(args.boxes) if args.boxes else None
    annotate = None
    if args.annotate:
        if Path(args.annotate).exists() and not Path(args.annotate).is_dir():
            raise ValueError(f"--annotate {args.annotate} is a file: it needs a folder")
        protect = [p for p in (args.out, args.boxes) if p]
        annotate = Annotations(args.annotate, protect=protect)
    predictor = Predictor.load(args.workdir, args.checkpoint, args.model)
    if args.flip is not None and args.flip != predictor.flip:
        predictor = dataclasses.replace(predictor, flip=args.flip)
    options = inference.Options(
        detect=not args.no_detect,
        margin=args.margin,
        min_face=args.min_face,
        redetect_every=args.redetect_every,
        boxes=boxes,
        boxes_fallback=args.boxes_fallback,
        annotate=annotate,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    if annotate is not None:
        try:
            annotate.folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=annotate.folder).close()  # can files be made there?
        except OSError as e:
            raise ValueError(f"cannot write in --annotate {args.annotate}: {e.strerror}") from None
    try:
        out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
    except OSError as e:
        raise ValueError(f"cannot write --out {args.out}: {e.strerror}") from None
    return inputs, predictor, options, out


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has printed
        return e.code if isinstance(e.code, int) else 2
    try:
        inputs, predictor, options, out = _setup(args)
    except (OSError, ValueError) as e:
        if args.verbose:
            traceback.print_exc()
        lines = str(e).strip().splitlines() or [type(e).__name__]
        more = " (--verbose for details)" if len(lines) > 1 and not args.verbose else ""
        print(f"{PROG}: error: {lines[0]}{more}", file=sys.stderr)
        return 2
    fmt = args.format or ("jsonl" if (args.out or "").endswith((".jsonl", ".json")) else "csv")
    tally = Tally(files=sum(not entry.skip for entry in inputs))
    try:
        columns = csv_columns(
            predictor.class_names, predictor.has_va, annotate=options.annotate is not None
        )
        writer = Writer(out, fmt, columns)
        rows = inference.run(
            predictor, args.paths, options, args.every, not args.no_progress, collected=inputs
        )
        for row in rows:
            writer.write(row)
            tally.add(row)
    finally:
        if args.out:
            out.close()
    tally.notes += _notes(options, args.paths)
    print(tally.summary(), file=sys.stderr)
    return 1 if tally.failed else 0


def _notes(options: inference.Options, paths: Sequence[str]) -> list[str]:
    """Summary lines on --boxes rows no frame used and annotations given another name."""
    notes = []
    unmatched = options.boxes.unmatched() if options.boxes is not None else []
    if unmatched:
        notes.append(
            f"{len(unmatched)} --boxes row(s) matched no frame read: {', '.join(unmatched[:5])}"
            f"{', ...' if len(unmatched) > 5 else ''} (paths are relative to the CSV's folder)"
        )
    renamed = options.annotate.renamed if options.annotate is not None else []
    if renamed:
        shown = ", ".join(f"{src} -> {dst}" for src, dst in renamed[:3])
        notes.append(
            f"{len(renamed)} annotation(s) renamed so as not to replace an input or another "
            f"annotation: {shown}{', ...' if len(renamed) > 3 else ''}"
        )
    if options.annotate is not None:
        folder = options.annotate.folder.resolve()
        given = [Path(p).resolve() for p in paths if Path(p).is_dir()]
        if any(folder == d or d in folder.parents for d in given):
            notes.append(
                "the --annotate folder is inside an input folder: a later run over that "
                "folder will read the annotated copies as inputs"
            )
    return notes


# --------------------------------------------------------------------------- rows out


def csv_columns(class_names: Sequence[str], has_va: bool, annotate: bool = False) -> list[str]:
    cols = ["path", "frame", "time_s", "face", "x", "y", "width", "height", "source"]
    cols += ["label", "name", *[f"p_{n}" for n in class_names]] if class_names else []
    cols += ["valence", "arousal"] if has_va else []
    cols += ["annotation"] if annotate else []
    return [*cols, "status", "error"]


def csv_row(row: dict) -> dict:
    flat = {k: v for k, v in row.items() if k not in ("box", "probs")}
    if "box" in row:
        flat.update(zip(("x", "y", "width", "height"), row["box"], strict=True))
    for name, p in row.get("probs", {}).items():
        flat[f"p_{name}"] = p
    if flat.get("time_s") is not None:
        flat["time_s"] = round(flat["time_s"], 3)
    return flat


class Writer:
    """Rows to a CSV or JSON-lines file (or stdout), each flushed as it is written."""

    def __init__(self, out, fmt: str, columns: list[str]):
        self.out, self.fmt = out, fmt
        if fmt == "csv":
            self._csv = csv.DictWriter(out, columns, extrasaction="ignore")
            self._csv.writeheader()
            out.flush()

    def write(self, row: dict) -> None:
        if self.fmt == "csv":
            self._csv.writerow(csv_row(row))
        else:
            self.out.write(json.dumps(row) + "\n")
        self.out.flush()


class Tally:
    """Counts rows as they are written, for the closing summary and the exit status."""

    def __init__(self, files: int):
        self.files, self.ok, self.no_face, self.unboxed = files, 0, 0, 0
        self.frames: set[tuple[str, int | None]] = set()
        self.problems: list[dict] = []  # error, warning and skipped rows
        self.notes: list[str] = []  # more lines for the summary

    def add(self, row: dict) -> None:
        if row["status"] not in ("skipped", "warning"):
            self.frames.add((row["path"], row["frame"]))
        self.ok += row["status"] == "ok"
        if row["status"] == "no_face":
            self.no_face += 1
            self.unboxed += row.get("source") == "user"
        if row["status"] in ("error", "warning", "skipped"):
            self.problems.append(row)

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
        lines += [f"  {p['status']}: {p['path']}: {p['error']}" for p in self.problems]
        if self.unboxed:
            lines.append(
                f"  {self.unboxed} frame(s) had no --boxes row and count as no face; "
                "--boxes-fallback runs the detector there (the whole image with --no-detect)"
            )
        if self.no_face > self.unboxed:
            lines.append("  (images that are already face crops: pass --no-detect)")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
