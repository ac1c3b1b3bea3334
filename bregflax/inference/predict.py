"""``bregflax predict PATH...``: the expression of every face in photos and videos.

    bregflax predict photo.jpg faces/ clip.mp4 --every 10 --out predictions.csv

Paths are image files, folders (searched recursively) and videos. Each face found by
YuNet (:mod:`bregflax.inference.yunet`, the default; ``--detector haar``: the Haar cascade), given
in ``--boxes FILE``, or the whole image (``--no-detect``) becomes a row: path, frame, time,
box, class probabilities, label, valence and arousal. An image with no face gets a
``no_face`` row; an unreadable file gets an ``error`` row and a line in the closing
summary, and the rest are still processed.

This module is the command line and the rows' output (CSV, JSON or JSON Lines, the closing
summary): the engine is :mod:`bregflax.inference.engine`, the model
:class:`bregflax.inference.predictor.Predictor` (also importable from here, as before).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from bregflax import compile_cache, errors, flags, hostile
from bregflax.data import media
from bregflax.inference import engine as inference
from bregflax.inference.annotate import Annotations
from bregflax.inference.boxes import read_boxes
from bregflax.inference.detect import FER2013_MARGIN, MIN_FACE, REDETECT_EVERY
from bregflax.inference.rows import (  # noqa: F401 - predict.Writer etc., as before
    Tally,
    Writer,
    args_text,
    check_out,
    closing,
    csv_columns,
    csv_row,
    earlier_output,
    format_of,
    looks_like_crop,
    open_out,
    show_progress,
)

__all__ = ["Predictor", "main", "parse_args"]  # noqa: F822 (Predictor: __getattr__)
FORMATS = ("csv", "json", "jsonl")


def __getattr__(name: str):
    if name == "Predictor":  # jax: loaded with the model, not for --help
        from bregflax.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PROG = "bregflax predict"
EPILOG = """\
files:
  Nothing is written over an input or a file of yours: --out naming an input (or the
  --boxes file) by any route, a symbolic link, or an existing file that is not an earlier
  predict output, is refused; an annotated copy is created only where no file, link or
  folder is (a name taken gets .annotated or -2 added; the summary lists them). Rows are
  written as each file is done, so a crash loses at most the file being processed; a
  second predict on the same --out is refused while the first runs. Names that are not
  UTF-8 are written with each such byte as \\xNN (bregflax.hostile.path_from_text reads
  them back); values that are not finite are written as null (CSV: empty), the error
  column says which. Image files over --max-file-size are error rows, refused unread.
  Annotated copies keep each input's path under its folder; inputs OpenCV cannot write in
  colour (.pgm, no suffix) are annotated as .png. The same file named twice is read once.

finding faces:
  --detector yunet (default): YuNet, a small CNN shipped in the package (Apache 2.0, its
  licence in bregflax/weights/yunet/), which also finds the eyes: each crop is turned so
  the eyes are level (--no-align: not turned). --detector haar: OpenCV's Haar cascade.
  Each image is searched scaled so that a --min-face face is 32 pixels for YuNet (chosen
  by measurement, docs/performance.md) or 24 for the cascade (its window): by default a
  640x480 frame is searched at 427x320 by YuNet and at 320x240 by the cascade. In a video
  the whole frame is searched every --redetect-every frames, and in between each face is
  looked for near where it was (the whole frame again as soon as one is not found, and on
  every frame while no face is followed): a face that comes into view while others are
  followed may be found up to K-1 frames late.

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
  2 a usage error, told in one line (--verbose adds the traceback), or --out or standard
  output could not be written (disk full, a file size limit, a closed pipe), one line too;
  130 Ctrl-C, 143 SIGTERM: the rows of the files done are kept."""


class _Parser(flags.Parser):
    pass


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


def _positive(x: float) -> float:
    if not x > 0:
        raise ValueError(f"must be above 0, got {x}")
    return x


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Facial expression (and valence/arousal) of every face in photos and videos.",
        epilog=EPILOG,
        formatter_class=flags.RawFormatter,
        allow_abbrev=True,
    )
    p.add_argument("paths", nargs="+", help="image files, folders (recursive) and videos")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="fer2013", help="shipped model name (default fer2013)")
    src.add_argument("--workdir", help="use a training run's checkpoint instead")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="with --workdir: prepared datasets, for a model whose class names come from its "
        "data (default: the one the run recorded)",
    )
    p.add_argument("--checkpoint", default="best", help="with --workdir: best | latest | STEP")
    p.add_argument(
        "--out",
        help="output file: .csv (CSV), .json (one JSON document: a list of rows) or .jsonl "
        "(JSON Lines, a row per line) (default: CSV on stdout)",
    )
    p.add_argument(
        "--format", choices=FORMATS, help="the output format (default: from --out's suffix)"
    )
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
    p.add_argument(
        "--detector",
        choices=("yunet", "haar"),
        default="yunet",
        help="yunet: a small CNN shipped in the package, with eye landmarks (default); "
        "haar: OpenCV's Haar cascade",
    )
    p.add_argument(
        "--no-align",
        action="store_true",
        help="do not turn YuNet's crops so the eyes are level (the cascade's are never turned)",
    )
    margin_help = (
        f"fraction of the box added on each side, 0 to {inference.MAX_MARGIN:g} "
        f"(default {FER2013_MARGIN}: FER2013's framing)"
    )
    p.add_argument("--margin", type=_checked(inference.check_margin), help=margin_help)
    min_face_help = (
        f"smallest face side in pixels (below 1: fraction of the shorter side; default "
        f"{MIN_FACE}, the model's input); images are searched scaled so that it is 32 pixels "
        "(YuNet) or 24 (the cascade)"
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
    p.add_argument(
        "--batch-size",
        type=_checked(_at_least_1, int),
        default=64,
        help="faces classified together",
    )
    p.add_argument(
        "--max-file-size",
        type=_checked(_positive),
        default=hostile.MAX_IMAGE_BYTES / hostile.MiB,
        metavar="MB",
        help="an image file larger than this (MiB) is an error row, refused before it is "
        f"read (default {hostile.MAX_IMAGE_BYTES // hostile.MiB})",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is on stderr, and off by itself when the rows go to a "
        "terminal's stdout)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="print the traceback of a usage error or a failed file",
    )
    return p


def _setup(args: argparse.Namespace):
    """Everything checked before a row is written: raises ValueError or OSError."""
    inputs = media.collect(args.paths)
    if args.out:
        check_out(args.out, inputs, args.boxes)
    if args.boxes and Path(args.boxes).is_file():
        hostile.check_size(args.boxes, int(args.max_file_size * hostile.MiB), "--max-file-size")
    boxes = read_boxes(args.boxes) if args.boxes else None
    annotate = None
    if args.annotate:
        if Path(args.annotate).exists() and not Path(args.annotate).is_dir():
            raise ValueError(f"--annotate {args.annotate} is a file: it needs a folder")
        protect = [p for p in (args.out, args.boxes) if p]
        annotate = Annotations(args.annotate, protect=protect)
    from bregflax.inference.predictor import Predictor

    predictor = Predictor.load(args.workdir, args.checkpoint, args.model, args.data_dir)
    if args.flip is not None and args.flip != predictor.flip:
        predictor = dataclasses.replace(predictor, flip=args.flip)
    options = inference.Options(
        detect=not args.no_detect,
        detector=args.detector,
        align=not args.no_align,
        margin=args.margin,
        min_face=args.min_face,
        redetect_every=args.redetect_every,
        boxes=boxes,
        boxes_fallback=args.boxes_fallback,
        annotate=annotate,
        batch_size=args.batch_size,
        verbose=args.verbose,
        max_file_bytes=int(args.max_file_size * hostile.MiB),
    )
    if annotate is not None:
        try:
            annotate.folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=annotate.folder).close()  # can files be made there?
        except OSError as e:
            raise ValueError(f"cannot write in --annotate {args.annotate}: {e.strerror}") from None
    out = open_out(args.out) if args.out else sys.stdout
    return inputs, predictor, options, out


def main(argv: Sequence[str] | None = None) -> int:
    errors.exit_on_signals()
    try:
        args = parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has printed
        return e.code if isinstance(e.code, int) else 2
    compile_cache.enable(compile_cache.default_dir())  # a second run starts uncompiled
    try:
        inputs, predictor, options, out = _setup(args)
    except (OSError, ValueError) as e:
        if args.verbose:
            traceback.print_exc()
        lines = str(e).strip().splitlines() or [type(e).__name__]
        more = " (--verbose for details)" if len(lines) > 1 and not args.verbose else ""
        print(f"{PROG}: error: {lines[0]}{more}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"{PROG}: interrupted before any file was read", file=sys.stderr)
        return errors.exit_code(e)
    fmt = args.format or format_of(args.out)
    tally = Tally(files=sum(not entry.skip for entry in inputs))
    try:
        columns = csv_columns(
            predictor.class_names, predictor.has_va, annotate=options.annotate is not None
        )
        writer = Writer(out, fmt, columns)
        progress = show_progress(args.no_progress, args.out, sys.stdout, sys.stderr)
        rows = inference.run(predictor, args.paths, options, args.every, progress, collected=inputs)
        for row in rows:
            writer.write(row)
            tally.add(row)
        writer.close()
    except KeyboardInterrupt as e:
        if args.out:
            out.close()
        where = f"; --out {args_text(args.out)} holds their rows" if args.out else ""
        print(tally.summary(), file=sys.stderr)
        print(
            f"{PROG}: interrupted ({e}) after {tally.done} file(s){where}; run again to redo",
            file=sys.stderr,
        )
        return errors.exit_code(e)
    except OSError as e:  # disk full, a file size limit, a closed pipe
        if args.out:
            out.cut()
            out.close()
        else:  # stdout is gone: nothing more can be written to it
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        target = f"--out {args_text(args.out)}" if args.out else "standard output"
        kept = f" ({target} holds the rows of the first {tally.done} file(s))" if args.out else ""
        print(
            f"{PROG}: error: cannot write {target}: {errors.write_error(e)}; stopped after "
            f"{tally.done} file(s){kept}",
            file=sys.stderr,
        )
        return 2
    finally:
        if args.out:
            out.close()
    tally.notes += _notes(options, args.paths)
    print(tally.summary(), file=sys.stderr)
    print(closing(args.out, fmt, options.annotate, tally), file=sys.stderr)
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
        shown = ", ".join(f"{args_text(src)} -> {args_text(dst)}" for src, dst in renamed[:3])
        notes.append(
            f"{len(renamed)} annotation(s) renamed so as not to replace an input, an existing "
            f"file or another annotation: {shown}{', ...' if len(renamed) > 3 else ''}"
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


if __name__ == "__main__":
    sys.exit(main())
