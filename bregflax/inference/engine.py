"""The engine behind ``bregflax predict``: frames -> face boxes -> crops -> batches -> rows.

Inputs are found and decoded by :mod:`bregflax.data.media`; each photo or sampled video
frame becomes a :class:`Frame`. Its faces come from YuNet (:mod:`bregflax.inference.yunet`;
its crops turned so the eyes are level) or the Haar cascade
(:mod:`bregflax.inference.detect`), from the user's ``--boxes`` file
(:mod:`bregflax.inference.boxes`), or are the whole image (``--no-detect``); they are
cropped as the training data were (:mod:`bregflax.data.faces`) and classified in batches by a
:class:`~bregflax.inference.predictor.Predictor`. Every face becomes a row: path, frame, time, box,
class probabilities, label, valence and arousal. A frame with no face gets a ``no_face`` row,
an unreadable file, unusable box or unwritable annotation an ``error`` row, a video that ends
before the frames its header gives a ``warning`` row, an entry :func:`media.collect` left out
a ``skipped`` row; rows come in input order. Annotated copies are drawn by
:mod:`bregflax.inference.annotate`; :mod:`bregflax.inference.predict` writes the rows out.

Each file is finished (its crops classified, its rows yielded) before the next one is read,
and an exception while reading or classifying a file becomes that file's ``error`` row, so a
consumer that writes rows as they come loses at most the file in progress.

In a video, faces are followed from frame to frame (:class:`~bregflax.inference.detect.FaceTracker`:
a whole-frame search every ``Options.redetect_every`` frames), and a thread of its own
decodes, searches and crops the next frames while the model classifies a batch; it runs at
most ``QUEUE_FRAMES`` frames ahead, so memory does not grow with the video's length.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from bregflax import hostile
from bregflax.data import faces, media
from bregflax.data.media import Frame
from bregflax.errors import one_line
from bregflax.inference import DECIMALS, detect, yunet
from bregflax.inference import frames as frames_lib
from bregflax.inference.annotate import Annotations
from bregflax.inference.boxes import Boxes
from bregflax.inference.detect import (  # noqa: F401 - FaceDetector: engine.FaceDetector, as ever
    FER2013_MARGIN,
    MIN_FACE,
    REDETECT_EVERY,
    FaceDetector,
)

if TYPE_CHECKING:  # jax comes with the model, so that `bregflax predict --help` is light
    from bregflax.inference.predictor import Predictor

MAX_MARGIN = 1.0  # margins run from 0 (the box itself) to 1 (a box 3x as wide)
QUEUE_FRAMES = 128  # video frames prepared ahead of the model (8 when annotating: whole images)


def check_margin(margin: float) -> float:
    if not (math.isfinite(margin) and 0 <= margin <= MAX_MARGIN):
        raise ValueError(
            f"must be from 0 to {MAX_MARGIN:g}, the fraction of the face box added on each "
            f"side (FER2013's framing is {FER2013_MARGIN}); got {margin}"
        )
    return margin


def check_min_face(min_face: float) -> float:
    if not (math.isfinite(min_face) and min_face > 0):
        raise ValueError(
            "must be above 0: the smallest face side in pixels, or below 1 a fraction of the "
            f"image's shorter side; got {min_face}"
        )
    return min_face


@dataclasses.dataclass
class Options:
    """How :func:`run` finds, crops and annotates faces; checked when made (ValueError)."""

    detect: bool = True  # False: the whole image is the face
    detector: str = "yunet"  # or "haar" (the Haar cascade)
    align: bool = True  # turn crops so the eyes are level (where the detector gives eyes)
    margin: float = FER2013_MARGIN  # from 0 to MAX_MARGIN
    min_face: float = MIN_FACE  # pixels (below 1: fraction of the shorter side)
    redetect_every: int = REDETECT_EVERY  # video: whole-frame search every N frames
    overlap: bool = True  # video: prepare the next frames in a thread while the model runs
    boxes: Boxes | dict | None = None  # read_boxes' result
    boxes_fallback: bool = False  # frames without a --boxes row: detect (or whole image)
    # Folder for annotated copies; a folder name starts afresh in each run, an Annotations
    # object keeps the names it gave out (and lists the renamed copies) across runs.
    annotate: Annotations | str | Path | None = None
    batch_size: int = 64
    verbose: bool = False  # print the traceback of a file that fails
    max_file_bytes: int = hostile.MAX_IMAGE_BYTES  # larger image files are refused unread

    def __post_init__(self):
        for name, check in (("margin", check_margin), ("min_face", check_min_face)):
            try:
                check(float(getattr(self, name)))
            except ValueError as e:
                raise ValueError(f"{name} {e}") from None
        for name in ("batch_size", "redetect_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.detector not in yunet.DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(yunet.DETECTORS)}")
        if self.boxes is not None and not isinstance(self.boxes, Boxes):
            self.boxes = Boxes(self.boxes)


def face_boxes(frame: Frame, options: Options, detector) -> tuple[list, str]:
    """The boxes to classify in ``frame`` and where they came from.

    With ``--boxes``, a frame without a row has no face (source ``user``) unless
    ``boxes_fallback``, which treats it as if there were no ``--boxes``.
    """
    if options.boxes is not None:
        given = options.boxes.lookup(frame.path, frame.frame)
        if given is not None:
            return given, "user"
        if not options.boxes_fallback:
            return [], "user"
    if not options.detect:
        return [faces.full_image_box(frame.image)], "full_image"
    return detector(frame.image), "detector"


def crops(
    frame: Frame, boxes: list, source: str, predictor: Predictor, margin: float, align=False
) -> tuple[list, list[str]]:
    """Each box's crop at the model's size (None for a bad box) and its error text;
    with ``align``, a box with landmarks (:class:`bregflax.inference.yunet.Face`) is cropped
    eye-level."""
    out, errors = [], []
    for box in boxes:
        try:
            if align and getattr(box, "landmarks", None) is not None:
                size, channels = predictor.image_size, predictor.channels
                crop = yunet.crop_aligned(
                    frame.image, box, size=size, channels=channels, margin=margin
                )
                out.append(crop)
                errors.append("")
                continue
            out.append(
                faces.crop_face(
                    frame.image,
                    box,
                    size=predictor.image_size,
                    channels=predictor.channels,
                    margin=margin if source != "full_image" else 0.0,
                )
            )
            errors.append("")
        except faces.BadFaceBox as e:
            out.append(None)
            errors.append(str(e))
    return out, errors


def face_fields(box, names: Sequence[str], probs=None, va=None) -> dict:
    """One face's fields, the same in every output (``bregflax predict``'s rows,
    ``detect_emotions``, ``video_emotions``): ``box`` (x, y, width, height) in whole pixels,
    ``label`` the likeliest class's name and ``label_index`` its index, ``probs`` each
    class's probability, ``valence`` and ``arousal``, rounded to ``DECIMALS``."""
    face: dict = {"box": [int(round(float(v))) for v in box]}
    if probs is not None:
        index = int(np.argmax(probs))
        face["label"], face["label_index"] = names[index], index
        face["probs"] = {n: round(float(p), DECIMALS) for n, p in zip(names, probs, strict=True)}
    if va is not None:
        face["valence"], face["arousal"] = (round(float(v), DECIMALS) for v in va)
    return face


def rows_for(frame: Frame, boxes, source, outputs, names, errors) -> list[dict]:
    """The rows of one frame; ``outputs`` hold one entry per box (None for a bad box)."""
    base = {"path": frame.path, "frame": frame.frame, "time_s": frame.time_s}
    if frame.error:
        return [{**base, "status": "error", "error": frame.error}]
    if frame.warning:
        return [{**base, "status": "warning", "error": frame.warning}]
    if not boxes:
        return [{**base, "source": source, "status": "no_face", "error": ""}]
    rows = []
    for i, box in enumerate(boxes):
        row = {**base, "face": i, "box": face_fields(box, names)["box"], "source": source}
        if getattr(box, "landmarks", None) is not None:
            row["landmarks"] = [[round(float(v), 1) for v in p] for p in box.landmarks]
        if errors[i]:
            rows.append({**row, "status": "error", "error": errors[i]})
            continue
        probs = outputs["probs"][i] if "probs" in outputs else None
        va = outputs["va"][i] if "va" in outputs else None
        row.update(face_fields(box, names, probs, va))
        row.update(status="ok", error="")
        rows.append(row)
    return rows


def run(
    predictor: Predictor,
    paths: Sequence[str],
    options: Options,
    every: int = 1,
    progress: bool = True,
    *,
    collected: list[media.Input] | None = None,
) -> Iterator[dict]:
    """Rows, in input order, for every face (or no-face / error / skipped entry) in ``paths``.

    A file's rows all come before the next file is read; the crops of one file (the frames
    of a video) are classified in batches of up to ``options.batch_size``.
    ``collected``: ``media.collect(paths)`` when the caller already has it.
    """
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    use_detector = options.detect and (options.boxes is None or options.boxes_fallback)
    detector = yunet.make_detector(options.detector, options.min_face) if use_detector else None
    inputs = collected if collected is not None else media.collect(paths)
    annotations = options.annotate
    if annotations is not None and not isinstance(annotations, Annotations):
        annotations = Annotations(annotations)
    if annotations is not None:
        annotations.protect(entry.path for entry in inputs)
    planned = [frames_lib.expected_frames(e, every) if progress else 1 for e in inputs]
    bar = tqdm(
        total=sum(planned),
        desc="predict",
        unit="frame",
        disable=not progress,
        file=sys.stderr,
    )
    for entry, plan in zip(inputs, planned, strict=True):
        base = {"path": str(entry.path), "frame": None, "time_s": None}
        if entry.skip:
            yield {**base, "status": "skipped", "error": entry.skip}
            continue
        start = bar.n
        try:
            for row in _file_rows(entry, predictor, options, every, detector, annotations):
                if row["status"] != "warning" and row.get("face", 0) == 0:
                    bar.update()  # a frame's first row
                yield row
        except Exception as e:  # one file's failure is its row, the others still run
            if options.verbose:
                traceback.print_exc()
            yield {**base, "status": "error", "error": one_line(e)}
        finally:
            if annotations is not None:
                annotations.finish(entry.path)  # a video's annotated copy, complete
        bar.update(max(start + plan - bar.n, 0))  # a file that ended early or failed
    bar.close()


def _file_rows(
    entry: media.Input,
    predictor,
    options: Options,
    every: int,
    detector,
    annotations: Annotations | None,
) -> Iterator[dict]:
    prepared = _prepared(entry, predictor, options, every, detector, annotations is not None)
    if options.overlap and media.is_video(entry.path):
        prepared = _ahead(prepared, 8 if annotations is not None else QUEUE_FRAMES)
    pending: list[tuple[Frame, list, str, list, list]] = []

    def flush() -> Iterator[dict]:
        batch = [c for *_, cs, _ in pending for c in cs if c is not None]
        out = predictor.predict_faces(np.stack(batch)) if batch else {}
        at = 0
        for frame, boxes, source, cs, errors in pending:
            take = sum(c is not None for c in cs)
            mine = {k: v[at : at + take] for k, v in out.items()}
            at += take
            full = {k: _expand(v, cs) for k, v in mine.items()}
            rows = rows_for(frame, boxes, source, full, predictor.class_names, errors)
            if annotations is not None and frame.image is not None:
                _annotate(annotations, frame, rows)
            yield from rows
        pending.clear()

    num_crops = 0
    try:
        for item in prepared:
            pending.append(item)
            num_crops += sum(c is not None for c in item[3])
            if num_crops >= options.batch_size or len(pending) >= options.batch_size:
                yield from flush()
                num_crops = 0
    finally:
        prepared.close()  # stops the frame thread if this file ends early
    yield from flush()


def _prepared(
    entry: media.Input, predictor, options: Options, every: int, detector, keep_images: bool
) -> Iterator[tuple[Frame, list, str, list, list]]:
    """(frame, boxes, source, crops, errors) for each frame of one file; a video's faces
    are followed from frame to frame by a tracker of its own."""
    if detector is not None and media.is_video(entry.path):
        detector = detect.FaceTracker(detector, options.redetect_every)
    too_large = frames_lib.too_large(entry.path, options.max_file_bytes)
    for frame in [too_large] if too_large else frames_lib.frames(entry.path, entry.rel, every):
        boxes, source, cs, errors = [], "", [], []
        if frame.image is not None:
            boxes, source = face_boxes(frame, options, detector)
            cs, errors = crops(frame, boxes, source, predictor, options.margin, options.align)
        if not keep_images:
            frame.image = None  # keep only the crops until the batch runs
        yield frame, boxes, source, cs, errors


def _ahead(items: Iterator, most: int) -> Iterator:
    """``items``, computed by a thread of their own up to ``most`` ahead of the consumer.

    An exception in the thread is raised here, in order; when the consumer stops early
    (an exception, or the generator closed), the thread stops after its current item.
    """
    buffer: queue.Queue = queue.Queue(most)
    stop, done = threading.Event(), object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((None, item)):
                    return
            put((done, None))
        except BaseException as e:  # handed to the consumer, which raises it
            put((e, None))
        finally:
            items.close()

    thread = threading.Thread(target=produce, name="bregflax-frames", daemon=True)
    thread.start()
    try:
        while True:
            error, item = buffer.get()
            if error is done:
                return
            if error is not None:
                raise error
            yield item
    finally:
        stop.set()
        thread.join()


def _annotate(annotations: Annotations, frame: Frame, rows: list[dict]) -> None:
    """Writes the frame's annotated copy; where it cannot, its rows become errors."""
    try:
        path = str(annotations.write(frame, rows))
    except OSError as e:
        for row in rows:
            text = f"annotation not written: {e}"
            row.update(status="error", error=f"{row['error']}; {text}" if row["error"] else text)
        return
    for row in rows:
        row["annotation"] = path


def _expand(values: np.ndarray, crops: list) -> list:
    """Per-face outputs with None where a face had no crop (a bad box)."""
    it = iter(values)
    return [next(it) if c is not None else None for c in crops]
