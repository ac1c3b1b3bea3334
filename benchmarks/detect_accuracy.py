"""What face detection costs in accuracy: the shipped model on FER2013 PublicTest, given the
dataset's own crops against finding each face itself in a larger image.

python benchmarks/detect_accuracy.py [--limit N] [--sides 96,192] [--json PATH]

Each PublicTest face (``../shared/data/fer2013/val.npz``, 3,589, with its true label) is
classified three ways by the shipped model (``Predictor.from_pretrained("fer2013")``, its
default mirror averaging):

- ``crop``: the 48 x 48 crop itself, as the README's validation figure (no detection);
- ``flat``: the crop upscaled to ``side`` pixels (cubic) on a 640 x 480 canvas of its own
  mean gray, at a random place;
- ``scene``: the same, blended (soft edge) into a synthetic colour scene (gradients, blobs,
  bars; ``predict_pipeline.background``).

``flat`` and ``scene`` go through :func:`bregflax.detect_emotions` exactly as a user's photo
does (Haar cascade, FER2013 margin, crop, resize to 48 x 48). A face counts as found when a
returned box has IoU >= 0.5 with the drawn face; its label is that box's. Printed per
setting: faces found, accuracy over all faces (a missed face counts as wrong), accuracy over
the faces found, and on those same faces the crop's accuracy and the paired difference
(detected minus crop) with a 95% normal interval over faces, how often the two labels agree,
and boxes on no face per image.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from predict_pipeline import background, paste  # noqa: E402  (this folder)
from tqdm.auto import tqdm  # noqa: E402

import bregflax  # noqa: E402
from bregflax.inference import detect  # noqa: E402
from bregflax.inference.predictor import Predictor  # noqa: E402

FER2013_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "val.npz"
CANVAS = (480, 640)  # height, width
SCENES = 16  # distinct synthetic scenes, reused in turn
IOU_FOUND = 0.5


def place(face: np.ndarray, side: int, setting: str, scene: np.ndarray | None, rng) -> tuple:
    """``face`` (48 x 48 gray) upscaled to ``side`` on a canvas; (RGB canvas, drawn box)."""
    height, width = CANVAS
    x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    if setting == "flat":
        canvas = np.full((height, width), int(round(face.mean())), np.uint8)
        canvas[y : y + side, x : x + side] = big
        return np.repeat(canvas[..., None], 3, -1), (x, y, side, side)
    canvas = scene.copy()
    paste(canvas, face, x, y, side)
    return canvas, (x, y, side, side)


def interval(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean of a paired difference and its 95% normal interval."""
    if len(diff) < 2:
        return float(diff.mean()) if len(diff) else math.nan, math.nan, math.nan
    half = 1.96 * diff.std(ddof=1) / math.sqrt(len(diff))
    return float(diff.mean()), float(diff.mean() - half), float(diff.mean() + half)


def setting_figures(images, labels, crop_pred, predictor, side, setting, seed) -> dict:
    rng = np.random.default_rng(seed)
    scenes = []
    if setting == "scene":
        scenes = [background(*CANVAS, np.random.default_rng(seed + k)) for k in range(SCENES)]
    found = np.zeros(len(images), bool)
    pred = np.full(len(images), -1)
    false_boxes = 0
    names = list(predictor.class_names)
    start = time.perf_counter()
    for i in tqdm(range(len(images)), desc=f"{setting}@{side}", file=sys.stderr, leave=False):
        scene = scenes[i % SCENES] if scenes else None
        canvas, box = place(images[i], side, setting, scene, rng)
        rows = bregflax.detect_emotions(canvas, predictor=predictor)
        overlaps = [detect.iou(box, r["box"]) for r in rows]
        best = int(np.argmax(overlaps)) if overlaps else -1
        if best >= 0 and overlaps[best] >= IOU_FOUND:
            found[i], pred[i] = True, names.index(rows[best]["label"])
        false_boxes += sum(o < IOU_FOUND for o in overlaps)
    seconds = time.perf_counter() - start
    correct, crop_correct = pred == labels, crop_pred == labels
    mean, low, high = interval(correct[found].astype(float) - crop_correct[found])
    return {
        "setting": setting,
        "side": side,
        "faces": len(images),
        "found": float(found.mean()),
        "accuracy_all": float(correct.mean()),
        "accuracy_found": float(correct[found].mean()) if found.any() else math.nan,
        "crop_accuracy_found": float(crop_correct[found].mean()) if found.any() else math.nan,
        "difference": mean,
        "difference_95": [low, high],
        "agreement": float((pred[found] == crop_pred[found]).mean()) if found.any() else math.nan,
        "false_boxes_per_image": false_boxes / len(images),
        "ms_per_image": 1e3 * seconds / len(images),
    }


def format_report(results: dict) -> str:
    lines = [
        f"shipped model, FER2013 PublicTest, {results['faces']} faces: crop accuracy "
        f"{100 * results['crop_accuracy']:.2f}%",
        "| setting | face side | found | accuracy (all) | accuracy (found) | crop (same faces) "
        "| detected - crop [95%] | labels agree | false boxes / image | ms / image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["settings"]:
        low, high = r["difference_95"]
        lines.append(
            f"| {r['setting']} | {r['side']} | {100 * r['found']:.1f}% | "
            f"{100 * r['accuracy_all']:.2f}% | {100 * r['accuracy_found']:.2f}% | "
            f"{100 * r['crop_accuracy_found']:.2f}% | {100 * r['difference']:+.2f} "
            f"[{100 * low:+.2f}, {100 * high:+.2f}] | {100 * r['agreement']:.1f}% | "
            f"{r['false_boxes_per_image']:.3f} | {r['ms_per_image']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="first N faces only (0: all)")
    parser.add_argument("--sides", default="96,192", help="face sides in pixels, comma-separated")
    parser.add_argument("--settings", default="flat,scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not FER2013_VAL.exists():
        sys.exit(f"needs FER2013 PublicTest at {FER2013_VAL} (see ../shared/data/fer2013)")
    data = np.load(FER2013_VAL)
    images, labels = data["images"], data["labels"].astype(int)
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    predictor = Predictor.from_pretrained("fer2013")
    crop_pred = np.concatenate(
        [
            predictor.predict_faces(images[k : k + 256, ..., None])["probs"].argmax(-1)
            for k in range(0, len(images), 256)
        ]
    )
    results = {
        "faces": len(images),
        "crop_accuracy": float((crop_pred == labels).mean()),
        "settings": [
            setting_figures(images, labels, crop_pred, predictor, int(side), setting, args.seed)
            for setting in args.settings.split(",")
            for side in args.sides.split(",")
        ],
    }
    print(format_report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
