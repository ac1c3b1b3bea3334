"""Inference: a :class:`Predictor` API and ``bregflax predict PATH...`` for photos and videos.

    bregflax predict photo.jpg faces/ clip.mp4 --every 10 --out predictions.csv

Paths are image files, folders (searched recursively) and videos. Each face found by the
Haar cascade (:mod:`bregflax.detect`), given in ``--boxes FILE``, or the whole image
(``--no-detect``) becomes a row: path, frame, time, box, class probabilities, label,
valence and arousal. An image with no face gets a ``no_face`` row; an unreadable file gets
an ``error`` row and a line in the closing summary, and the rest are still processed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import serialization
from tqdm.auto import tqdm

from bregflax import models
from bregflax.data import FER2013_CLASSES, faces, pipeline
from bregflax.detect import FER2013_MARGIN, FaceDetector

PRETRAINED_DIR = Path(__file__).resolve().parent / "weights"
BUCKETS = (1, 8, 32, 64, 128, 256)  # batch sizes compiled; larger batches run in chunks
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The class names of a run's dataset (``()`` for a valence/arousal-only model)."""
    if config.model.head == "va":
        return ()
    n = config.model.num_classes
    if config.data.source.startswith("affectnet"):
        from bregflax.data.affectnet import AFFECTNET_CLASSES

        return AFFECTNET_CLASSES[:n]
    return FER2013_CLASSES if n == len(FER2013_CLASSES) else tuple(f"class{i}" for i in range(n))


def bucket(n: int) -> int:
    """The smallest compiled batch size that holds ``n`` (``n`` at most the largest)."""
    return next(b for b in BUCKETS if b >= n)


def forward(
    model: nn.Module, variables: Any, images: jax.Array, flip: bool = False
) -> dict[str, jax.Array]:
    """uint8 (n, S, S, C) faces -> ``probs`` and/or ``va``, normalized as in training.

    With ``flip``, outputs are averaged over each face and its mirror image.
    """
    x = images.astype(jnp.float32) / 127.5 - 1.0
    views = [x, x[:, :, ::-1]] if flip else [x]
    outs = [model.apply(variables, v, train=False) for v in views]
    result = {}
    if "logits" in outs[0]:
        result["probs"] = sum(jax.nn.softmax(o["logits"], axis=-1) for o in outs) / len(outs)
    if "va" in outs[0]:
        result["va"] = sum(o["va"] for o in outs) / len(outs)
    return result


def as_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 unchanged; floating point in [0, 1] scaled to [0, 255]; anything else raises."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        if image.size and not (np.isfinite(image).all() and 0 <= image.min() <= image.max() <= 1):
            raise ValueError("a floating-point image must hold values in [0, 1]")
        return np.round(image * 255).astype(np.uint8)
    raise ValueError(f"images must be uint8 or floating point in [0, 1], got {image.dtype}")


@dataclasses.dataclass
class Predictor:
    """A trained model ready for inference on face images of any size, gray or colour."""

    model: nn.Module
    variables: Any
    class_names: tuple[str, ...]
    image_size: int = 48
    channels: int = 1
    info: dict = dataclasses.field(default_factory=dict)  # provenance and val metrics
    flip: bool = False  # average each face with its mirror image (2x the compute)

    def __post_init__(self):
        self.variables = jax.device_put(self.variables)
        self._forward = jax.jit(functools.partial(forward, self.model, flip=self.flip))
        self.compiled_batch_sizes: set[int] = set()

    @classmethod
    def from_config(
        cls,
        config: ml_collections.ConfigDict,
        variables: Any,
        info: dict | None = None,
        flip: bool = False,
    ) -> Predictor:
        return cls(
            model=models.create_model(config.model),
            variables=variables,
            class_names=class_names(config),
            image_size=int(config.data.image_size),
            channels=int(config.data.channels),
            info=info or {},
            flip=flip,
        )

    @classmethod
    def from_pretrained(cls, name: str = "fer2013") -> Predictor:
        """Weights shipped in the package (``bregflax/weights/<name>/``)."""
        folder = PRETRAINED_DIR / name
        if not (folder / "params.msgpack").is_file():
            have = [p.parent.name for p in PRETRAINED_DIR.glob("*/params.msgpack")]
            raise FileNotFoundError(f"no shipped model {name!r}; shipped: {sorted(have) or 'none'}")
        config = ml_collections.ConfigDict(json.loads((folder / "config.json").read_text()))
        variables = serialization.msgpack_restore((folder / "params.msgpack").read_bytes())
        info = json.loads((folder / "meta.json").read_text())
        predictor = cls.from_config(config, variables, info, flip=info.get("flip", False))
        predictor.class_names = tuple(info.get("class_names", predictor.class_names))
        return predictor

    @classmethod
    def from_workdir(cls, workdir: str | Path, checkpoint: str = "best") -> Predictor:
        """Checkpoint ``checkpoint`` (best | latest | STEP) of a training run."""
        from bregflax import train

        config, state, step = train.load_trained(workdir, checkpoint)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        info = {"workdir": str(workdir), "checkpoint": checkpoint, "step": int(step)}
        return cls.from_config(config, variables, info)

    @classmethod
    def load(
        cls, workdir: str | None, checkpoint: str = "best", model: str = "fer2013"
    ) -> Predictor:
        """A training run's checkpoint when ``workdir`` is given, else the shipped ``model``."""
        if workdir:
            return cls.from_workdir(workdir, checkpoint)
        return cls.from_pretrained(model)

    @property
    def has_va(self) -> bool:
        return "va_regressor" in self.variables["params"]

    def preprocess(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Images -> uint8 (n, S, S, C) at the model's size and channels (plain resize).

        A single ndarray is a batch, (n, H, W) gray or (n, H, W, C); a list may mix sizes.
        """
        if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
            raise ValueError(
                f"a batch array must be (n, H, W) or (n, H, W, C), got shape {images.shape}; "
                "pass a single image as [image]"
            )
        out = np.zeros((len(images), self.image_size, self.image_size, self.channels), np.uint8)
        for i, image in enumerate(images):
            try:
                out[i] = pipeline.to_shape(as_uint8(image), self.image_size, self.channels)
            except ValueError as e:
                raise ValueError(f"image {i}: {e}") from None
        return out

    def predict_faces(self, faces_uint8: np.ndarray) -> dict[str, np.ndarray]:
        """Model outputs for uint8 (n, S, S, C) faces, run in compiled bucket sizes."""
        n = len(faces_uint8)
        if n == 0:
            widths = {"probs": len(self.class_names)} if self.class_names else {}
            widths.update({"va": 2} if self.has_va else {})
            return {k: np.zeros((0, d), np.float32) for k, d in widths.items()}
        parts: dict[str, list] = {}
        for start in range(0, n, BUCKETS[-1]):
            chunk = faces_uint8[start : start + BUCKETS[-1]]
            size = bucket(len(chunk))
            padded = np.zeros((size, *chunk.shape[1:]), np.uint8)
            padded[: len(chunk)] = chunk
            self.compiled_batch_sizes.add(size)
            out = jax.device_get(self._forward(self.variables, padded))
            for k, v in out.items():
                parts.setdefault(k, []).append(np.asarray(v)[: len(chunk)])
        return {k: np.concatenate(v) for k, v in parts.items()}

    def predict(self, images: Sequence[np.ndarray] | np.ndarray) -> dict[str, Any]:
        """Class probabilities, top label and name, and valence/arousal where the model has them."""
        out = self.predict_faces(self.preprocess(images))
        result: dict[str, Any] = {}
        if "probs" in out:
            result["probs"] = out["probs"]
            result["label"] = out["probs"].argmax(-1).astype(np.int32)
            result["name"] = [self.class_names[i] for i in result["label"]]
        if "va" in out:
            result["valence"], result["arousal"] = out["va"][:, 0], out["va"][:, 1]
        return result


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class Frame:
    """One image to look for faces in: a photo, or a frame of a video."""

    path: str
    image: np.ndarray | None
    frame: int | None = None  # video frame number
    time_s: float | None = None
    error: str = ""
    rel: str = ""  # path under its input folder, for --annotate


def collect(paths: Sequence[str]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Inputs as (file, relative name) and the files skipped in folders (not image/video)."""
    files, skipped = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                if f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                    files.append((f, str(f.relative_to(path))))
                else:
                    skipped.append(str(f))
        else:
            files.append((path, path.name))
    return files, skipped


def frames(path: Path, rel: str, every: int) -> Iterator[Frame]:
    """The frames of one input: one for a photo, every ``every``-th for a video."""
    if not path.is_file():
        yield Frame(str(path), None, error="no such file")
        return
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        image = faces.read_image(path)
        error = "" if image is not None else "cannot decode image"
        yield Frame(str(path), image, error=error, rel=rel)
        return
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    index = decoded = 0
    try:
        while True:
            ok = capture.grab()
            if not ok:
                break
            if index % every == 0:
                ok, bgr = capture.retrieve()
                if ok:
                    decoded += 1
                    time_s = index / fps if fps > 0 else None
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    yield Frame(str(path), rgb, index, time_s, rel=rel)
            index += 1
    finally:
        capture.release()
    if decoded == 0:
        yield Frame(str(path), None, error="cannot decode video (no frames read)")


def read_boxes(path: str | Path) -> dict[tuple[str, int | None], list[tuple[float, ...]]]:
    """``--boxes`` CSV: columns path, x, y, width, height and an optional frame.

    Relative paths are taken from the current directory; a row without a frame applies to
    every frame of that file.
    """
    boxes: dict[tuple[str, int | None], list] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"path", "x", "y", "width", "height"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: needs columns {sorted(need)} (and optionally frame)")
        for line, row in enumerate(reader, start=2):
            try:
                box = tuple(float(row[k]) for k in ("x", "y", "width", "height"))
                frame = int(row["frame"]) if row.get("frame") not in (None, "") else None
            except ValueError as e:
                raise ValueError(f"{path}:{line}: {e}") from None
            key = (str(Path(row["path"]).resolve()), frame)
            boxes.setdefault(key, []).append(box)
    return boxes


# --------------------------------------------------------------------------- running


@dataclasses.dataclass
class Options:
    detect: bool = True
    margin: float = FER2013_MARGIN
    min_face: float = 24
    boxes: dict | None = None
    annotate: Path | None = None
    batch_size: int = 64


def face_boxes(frame: Frame, options: Options, detector) -> tuple[list, str]:
    """The boxes to classify in ``frame`` and where they came from."""
    if options.boxes is not None:
        key = str(Path(frame.path).resolve())
        given = options.boxes.get((key, frame.frame)) or options.boxes.get((key, None))
        if given:
            return given, "user"
    if not options.detect:
        return [faces.full_image_box(frame.image)], "full_image"
    return detector(frame.image), "detector"


def _rows_for(frame: Frame, boxes, source, outputs, names, errors) -> list[dict]:
    base = {"path": frame.path, "frame": frame.frame, "time_s": frame.time_s}
    if frame.error:
        return [{**base, "status": "error", "error": frame.error}]
    if not boxes:
        return [{**base, "status": "no_face", "error": ""}]
    rows = []
    for i, box in enumerate(boxes):
        row = {**base, "face": i, "box": [round(float(v), 1) for v in box], "source": source}
        if errors[i]:
            rows.append({**row, "status": "error", "error": errors[i]})
            continue
        row.update(status="ok", error="")
        if "probs" in outputs:
            probs = outputs["probs"][i]
            row["label"] = int(probs.argmax())
            row["name"] = names[row["label"]]
            row["probs"] = {n: round(float(p), 6) for n, p in zip(names, probs, strict=True)}
        if "va" in outputs:
            row["valence"], row["arousal"] = (round(float(v), 6) for v in outputs["va"][i])
        rows.append(row)
    return rows


def annotate(frame: Frame, rows: list[dict], outdir: Path) -> Path:
    """A copy of the frame with each face's box and label drawn on it."""
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
        scale = max(0.4, h / 200)
        cv2.putText(
            image,
            text,
            (x, max(y - 4, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 255, 0),
            thickness,
        )
    rel = Path(frame.rel or Path(frame.path).name)
    name = rel.name if frame.frame is None else f"{rel.stem}_f{frame.frame:06d}.jpg"
    out = outdir / rel.parent / name
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), image):
        raise OSError(f"cannot write {out}")
    return out


def run(
    predictor: Predictor,
    paths: Sequence[str],
    options: Options,
    every: int = 1,
    progress: bool = True,
    *,
    collected: tuple[list[tuple[Path, str]], list[str]] | None = None,
) -> Iterator[dict]:
    """Rows, in input order, for every face (or no-face / error) in ``paths``.

    ``collected``: ``collect(paths)`` when the caller already has it.
    """
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    detector = FaceDetector(min_size=options.min_face) if options.detect else None
    files, skipped = collected or collect(paths)
    for path in skipped:
        yield {
            "path": path,
            "frame": None,
            "time_s": None,
            "status": "skipped",
            "error": "not an image or video file",
        }
    pending: list[tuple[Frame, list, str, list, list]] = []

    def flush() -> Iterator[dict]:
        crops = [c for *_, cs, _ in pending for c in cs if c is not None]
        out = predictor.predict_faces(np.stack(crops)) if crops else {}
        at = 0
        for frame, boxes, source, cs, errors in pending:
            take = sum(c is not None for c in cs)
            mine = {k: v[at : at + take] for k, v in out.items()}
            at += take
            full = {k: _expand(v, cs) for k, v in mine.items()}
            rows = _rows_for(frame, boxes, source, full, predictor.class_names, errors)
            if options.annotate is not None and frame.image is not None:
                annotate(frame, rows, options.annotate)
            yield from rows
        pending.clear()

    bar = tqdm(files, desc="predict", unit="file", disable=not progress, file=sys.stderr)
    for path, rel in bar:
        for frame in frames(path, rel, every):
            boxes, source, crops, errors = [], "", [], []
            if frame.image is not None:
                boxes, source = face_boxes(frame, options, detector)
                for box in boxes:
                    try:
                        crop = faces.crop_face(
                            frame.image,
                            box,
                            size=predictor.image_size,
                            channels=predictor.channels,
                            margin=options.margin if source != "full_image" else 0.0,
                        )
                        crops.append(crop)
                        errors.append("")
                    except faces.BadFaceBox as e:
                        crops.append(None)
                        errors.append(str(e))
            if options.annotate is None:
                frame.image = None  # keep only the crops until the batch runs
            pending.append((frame, boxes, source, crops, errors))
            num_crops = sum(c is not None for *_, cs, _ in pending for c in cs)
            if num_crops >= options.batch_size or len(pending) >= options.batch_size:
                yield from flush()
    yield from flush()


def _expand(values: np.ndarray, crops: list) -> list:
    """Per-face outputs with None where a face had no crop (a bad box)."""
    it = iter(values)
    return [next(it) if c is not None else None for c in crops]


# --------------------------------------------------------------------------- writing


def csv_columns(class_names: Sequence[str], has_va: bool) -> list[str]:
    cols = ["path", "frame", "time_s", "face", "x", "y", "width", "height", "source"]
    cols += ["label", "name", *[f"p_{n}" for n in class_names]] if class_names else []
    cols += ["valence", "arousal"] if has_va else []
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
    """Rows to a CSV or JSON-lines file (or stdout)."""

    def __init__(self, out, fmt: str, columns: list[str]):
        self.out, self.fmt = out, fmt
        if fmt == "csv":
            self._csv = csv.DictWriter(out, columns, extrasaction="ignore")
            self._csv.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "csv":
            self._csv.writerow(csv_row(row))
        else:
            self.out.write(json.dumps(row) + "\n")


def summary(counts: dict[str, int], problems: list[dict]) -> str:
    lines = [
        f"{counts['files']} file(s), {counts['frames']} frame(s): {counts['ok']} face(s) "
        f"classified, {counts['no_face']} frame(s) with no face, {len(problems)} problem(s)"
    ]
    lines += [f"  {p['status']}: {p['path']}: {p['error']}" for p in problems]
    if counts["no_face"]:
        lines.append("  (images that are already face crops: pass --no-detect)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bregflax predict",
        description="Facial expression (and valence/arousal) of every face in photos and videos.",
        epilog="Exit status 1 when any file or face box could not be used (its rows say why).",
    )
    p.add_argument("paths", nargs="+", help="image files, folders (recursive) and videos")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="fer2013", help="shipped model name (default fer2013)")
    src.add_argument("--workdir", help="use a training run's checkpoint instead")
    p.add_argument("--checkpoint", default="best", help="with --workdir: best | latest | STEP")
    p.add_argument("--out", help="output file, .csv or .jsonl (default: CSV on stdout)")
    p.add_argument("--format", choices=("csv", "jsonl"), help="default: from --out's suffix")
    p.add_argument("--every", type=int, default=1, help="video: every N-th frame (default 1)")
    p.add_argument("--boxes", help="CSV of face boxes: path,x,y,width,height[,frame]")
    p.add_argument("--no-detect", action="store_true", help="each image is already a face crop")
    p.add_argument("--margin", type=float, default=None, help="box margin (default: FER2013's)")
    p.add_argument("--min-face", type=float, default=24, help="smallest face side in pixels")
    p.add_argument("--annotate", help="write copies with boxes and labels to this folder")
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average each face with its mirror image (default: as the model was validated)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    fmt = args.format or ("jsonl" if (args.out or "").endswith((".jsonl", ".json")) else "csv")
    try:
        predictor = Predictor.load(args.workdir, args.checkpoint, args.model)
        if args.flip is not None and args.flip != predictor.flip:
            predictor = dataclasses.replace(predictor, flip=args.flip)
        options = Options(
            detect=not args.no_detect,
            margin=FER2013_MARGIN if args.margin is None else args.margin,
            min_face=args.min_face,
            boxes=read_boxes(args.boxes) if args.boxes else None,
            annotate=Path(args.annotate) if args.annotate else None,
            batch_size=max(1, args.batch_size),
        )
        if args.every < 1:
            raise ValueError(f"--every must be >= 1, got {args.every}")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    collected = collect(args.paths)
    counts = {"files": len(collected[0]), "frames": 0, "ok": 0, "no_face": 0}
    problems: list[dict] = []
    seen_frames = set()
    try:
        writer = Writer(out, fmt, csv_columns(predictor.class_names, predictor.has_va))
        rows = run(
            predictor, args.paths, options, args.every, not args.no_progress, collected=collected
        )
        for row in rows:
            writer.write(row)
            if row["status"] != "skipped":
                seen_frames.add((row["path"], row["frame"]))
            counts["frames"] = len(seen_frames)
            counts["ok"] += row["status"] == "ok"
            counts["no_face"] += row["status"] == "no_face"
            if row["status"] in ("error", "skipped"):
                problems.append(row)
    finally:
        if args.out:
            out.close()
    print(summary(counts, problems), file=sys.stderr)
    return 1 if any(p["status"] == "error" for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
