"""What face detection costs in accuracy: the shipped model on FER2013 PublicTest, given the
dataset's own crops against finding each face itself in a larger image, for each detector.

python benchmarks/detect_accuracy.py [--limit N] [--sides 64,96,192] [--detectors ...]
    [--cases ...] [--json PATH]
python benchmarks/detect_accuracy.py --framing [--limit 438]   # box against FER2013 crop
python benchmarks/detect_accuracy.py --sweep [--limit 300]     # YuNet threshold and scale

Each PublicTest face (``../shared/data/fer2013/val.npz``, 3,589, with its true label) is
classified by the shipped model (``Predictor.from_pretrained("fer2013")``, its default
mirror averaging) from its own 48 x 48 crop (``crop``, the README's validation figure), and
found in a 640 x 480 image where it is drawn upscaled (cubic) to ``side`` pixels:

- ``flat``: on a canvas of its own mean gray; ``scene``: blended (soft edge) into a
  synthetic colour scene (gradients, blobs, bars; ``predict_pipeline.background``);
- position ``any`` (a random place) or ``edge`` (touching a random side of the frame);
- turned in the image plane by ``angle`` degrees about its centre (the whole image turns,
  borders reflected, so no new edge is drawn);
- with ``faces=2``, a second PublicTest face of the same size elsewhere in the image.

Each image goes through the engine of :func:`bregflax.detect_emotions` (detector, FER2013
margin, crop, resize to 48 x 48, the model) once per detector mode: ``haar`` (the cascade),
``yunet`` (YuNet, crop as the box is) and ``yunet+align`` (YuNet, the crop turned so the
eyes are level); the YuNet modes share one detection per image. A face counts as found when
a returned box has IoU >= 0.5 with the drawn face (its unturned square); its label is that
box's. Printed per case and mode: faces found (recall), accuracy over all faces (a missed
face counts as wrong), accuracy over the faces found, and on those same faces the crop's
accuracy and the paired difference (detected minus crop) with a 95% normal interval over
faces, how often the two labels agree, and per image the false boxes (IoU < 0.5 with every
drawn face: a face boxed at the wrong scale counts as missed and as a false box, as before)
and the boxes on no face (whose centre lies in no drawn face).
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

from bregflax.inference import (  # noqa: E402
    detect,
    yunet,
)
from bregflax.inference import engine as inference  # noqa: E402
from bregflax.inference.predictor import Predictor  # noqa: E402

FER2013_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "val.npz"
CANVAS = (480, 640)  # height, width
SCENES = 16  # distinct synthetic scenes, reused in turn
IOU_FOUND = 0.5
MODES = {  # detector, align, refining passes (yunet.level_angle)
    "haar": ("haar", False, 0),
    "yunet": ("yunet", False, 0),
    "yunet+align0": ("yunet", True, 0),
    "yunet+align": ("yunet", True, yunet.REFINE_PASSES),
}
# setting/side/angle/position/faces; {side} is each of --sides
CASES = (
    "flat/{side}/0/any/1,scene/{side}/0/any/1,scene/96/-30/any/1,scene/96/30/any/1,"
    "scene/96/0/edge/1,scene/96/0/any/2"
)


def place(face: np.ndarray, side: int, setting: str, scene: np.ndarray | None, rng) -> tuple:
    """``face`` (48 x 48 gray) upscaled to ``side`` on a canvas; (RGB canvas, drawn box)."""
    canvas, boxes = draw([face], side, setting, scene, rng)
    return canvas, boxes[0]


def spot(side: int, position: str, taken: list, rng) -> tuple[int, int]:
    """A top-left corner for a ``side`` face, not overlapping ``taken`` where it can."""
    height, width = CANVAS
    for _ in range(50):
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        if position == "edge":
            edge = int(rng.integers(4))
            x, y = (0, y) if edge == 0 else (width - side, y) if edge == 1 else (x, 0) if (
                edge == 2) else (x, height - side)  # fmt: skip
        if all(detect.iou((x, y, side, side), b) == 0 for b in taken):
            break
    return x, y


def draw(
    faces: list, side: int, setting: str, scene, rng, angle: float = 0, position: str = "any"
) -> tuple[np.ndarray, list]:
    """``faces`` (48 x 48 gray) upscaled to ``side`` on one canvas, the first turned by
    ``angle`` degrees about its centre with the whole image; (RGB canvas, drawn boxes)."""
    height, width = CANVAS
    if setting == "flat":
        canvas = np.full((height, width, 3), int(round(faces[0].mean())), np.uint8)
    else:
        canvas = scene.copy()
    boxes: list = []
    for k, face in enumerate(faces):
        x, y = spot(side, position if k == 0 else "any", boxes, rng)
        if setting == "flat":
            big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
            canvas[y : y + side, x : x + side] = big[..., None]
        else:
            paste(canvas, face, x, y, side)
        boxes.append((x, y, side, side))
    if angle:
        x, y = boxes[0][:2]
        turn = cv2.getRotationMatrix2D((x + side / 2, y + side / 2), angle, 1.0)
        canvas = cv2.warpAffine(canvas, turn, (width, height), borderMode=cv2.BORDER_REFLECT)
    return canvas, boxes


def interval(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean of a paired difference and its 95% normal interval."""
    if len(diff) < 2:
        return float(diff.mean()) if len(diff) else math.nan, math.nan, math.nan
    half = 1.96 * diff.std(ddof=1) / math.sqrt(len(diff))
    return float(diff.mean()), float(diff.mean() - half), float(diff.mean() + half)


def classify(image, boxes, predictor, align: bool, refine: int) -> list:
    """Each box's label (or -1 for a box that gives no crop): the engine's crops and model."""
    frame = inference.Frame(path="<array>", image=image)
    passes, yunet.REFINE_PASSES = yunet.REFINE_PASSES, refine
    try:
        crops, errors = inference.crops(
            frame, boxes, "detector", predictor, detect.FER2013_MARGIN, align=align
        )
    finally:
        yunet.REFINE_PASSES = passes
    kept = [i for i, e in enumerate(errors) if not e]
    labels = [-1] * len(boxes)
    if kept:
        probs = predictor.predict_faces(np.stack([crops[i] for i in kept]))["probs"]
        for j, i in enumerate(kept):
            labels[i] = int(probs[j].argmax())
    return labels


def inside(box, face) -> bool:
    """Whether ``box``'s centre lies in ``face`` (a box on a face, however framed)."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return face[0] <= cx <= face[0] + face[2] and face[1] <= cy <= face[1] + face[3]


def parse_case(case: str) -> dict:
    setting, side, angle, position, count = case.split("/")
    return {"setting": setting, "side": int(side), "angle": float(angle),
            "position": position, "faces_per_image": int(count)}  # fmt: skip


def case_figures(images, labels, crop_pred, predictor, case: dict, modes, seed) -> list[dict]:
    """One dict of figures per detector mode, on the same drawn images."""
    rng = np.random.default_rng(seed)
    scenes = []
    if case["setting"] == "scene":
        scenes = [background(*CANVAS, np.random.default_rng(seed + k)) for k in range(SCENES)]
    detectors = {name: yunet.make_detector(name) for name in {MODES[m][0] for m in modes}}
    n, count = len(images), case["faces_per_image"]
    pred = {m: np.full((n, count), -1) for m in modes}
    found = {m: np.zeros((n, count), bool) for m in modes}
    false, away = dict.fromkeys(modes, 0), dict.fromkeys(modes, 0)
    seconds = dict.fromkeys(modes, 0.0)
    which = np.stack([(np.arange(n) + k * 997) % n for k in range(count)], 1)  # faces drawn
    name = "{setting}@{side}/{angle:g}/{position}/{faces_per_image}".format(**case)
    for i in tqdm(range(n), desc=name, file=sys.stderr, leave=False):
        scene = scenes[i % SCENES] if scenes else None
        faces = [images[j] for j in which[i]]
        canvas, drawn = draw(
            faces, case["side"], case["setting"], scene, rng, case["angle"], case["position"]
        )
        boxes_of = {}
        for det_name, detector in detectors.items():
            start = time.perf_counter()
            boxes_of[det_name] = detector(canvas)
            seconds_det = time.perf_counter() - start
            for m in modes:
                if MODES[m][0] == det_name:
                    seconds[m] += seconds_det
        for m in modes:
            det_name, align, refine = MODES[m]
            boxes = boxes_of[det_name]
            start = time.perf_counter()
            got = classify(canvas, boxes, predictor, align, refine) if boxes else []
            seconds[m] += time.perf_counter() - start
            used = set()
            for k, box in enumerate(drawn):
                overlaps = [detect.iou(box, b) if j not in used else 0 for j, b in enumerate(boxes)]
                best = int(np.argmax(overlaps)) if overlaps else -1
                if best >= 0 and overlaps[best] >= IOU_FOUND and got[best] >= 0:
                    found[m][i, k], pred[m][i, k] = True, got[best]
                    used.add(best)
            false[m] += sum(all(detect.iou(b, d) < IOU_FOUND for d in drawn) for b in boxes)
            away[m] += sum(not any(inside(b, d) for d in drawn) for b in boxes)
    out = []
    truth, crop = labels[which], crop_pred[which]
    for m in modes:
        f, p = found[m].ravel(), pred[m].ravel()
        correct, crop_correct = p == truth.ravel(), crop.ravel() == truth.ravel()
        mean, low, high = interval(correct[f].astype(float) - crop_correct[f])
        out.append({
            **case, "mode": m, "faces": int(f.size),
            "found": float(f.mean()),
            "accuracy_all": float(correct.mean()),
            "accuracy_found": float(correct[f].mean()) if f.any() else math.nan,
            "crop_accuracy_found": float(crop_correct[f].mean()) if f.any() else math.nan,
            "difference": mean, "difference_95": [low, high],
            "agreement": float((p[f] == crop.ravel()[f]).mean()) if f.any() else math.nan,
            "false_boxes_per_image": false[m] / n,
            "boxes_on_no_face_per_image": away[m] / n,
            "ms_per_image": 1e3 * seconds[m] / n,
        })  # fmt: skip
    return out


def format_report(results: dict) -> str:
    lines = [
        f"shipped model, FER2013 PublicTest, {results['faces']} faces: crop accuracy "
        f"{100 * results['crop_accuracy']:.2f}%",
        "| setting | face side | angle | position | faces / image | detector | found "
        "| accuracy (all) | accuracy (found) | crop (same faces) | detected - crop [95%] "
        "| labels agree | false boxes / image | on no face / image | ms / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["settings"]:
        low, high = r["difference_95"]
        lines.append(
            f"| {r['setting']} | {r['side']} | {r['angle']:+g} | {r['position']} | "
            f"{r['faces_per_image']} | {r['mode']} | {100 * r['found']:.1f}% | "
            f"{100 * r['accuracy_all']:.2f}% | {100 * r['accuracy_found']:.2f}% | "
            f"{100 * r['crop_accuracy_found']:.2f}% | {100 * r['difference']:+.2f} "
            f"[{100 * low:+.2f}, {100 * high:+.2f}] | {100 * r['agreement']:.1f}% | "
            f"{r['false_boxes_per_image']:.3f} | {r['boxes_on_no_face_per_image']:.3f} | "
            f"{r['ms_per_image']:.1f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- choosing


def framing(images, limit: int, search_pixels: float) -> str:
    """Each detector's box against the FER2013 crop, measured as the cascade's 0.96 was:
    faces upscaled 4x (192 px), padded in a 640 x 480 frame of their mean gray, one
    detection each (the box nearest the crop's centre, within half its side)."""
    side, x, y = 192, 224, 144
    haar, net = detect.FaceDetector(), yunet.YuNetDetector(search_pixels=search_pixels)
    figures = {"haar": [], "yunet": []}
    for face in tqdm(images[:limit], desc="framing", file=sys.stderr, leave=False):
        canvas = np.full((*CANVAS, 3), int(round(face.mean())), np.uint8)
        canvas[y : y + side, x : x + side] = cv2.resize(face, (side, side), cv2.INTER_CUBIC)[
            ..., None
        ]
        rows = [(*b[:4],) for b in haar(canvas)]
        raw = net.rows(net.prepare(canvas))
        for name, boxes in (("haar", rows), ("yunet", [r[:4] for r in raw])):
            near = [b for b in boxes if abs(b[0] + b[2] / 2 - x - side / 2) < side / 2
                    and abs(b[1] + b[3] / 2 - y - side / 2) < side / 2]  # fmt: skip
            if len(near) == 1:
                bx, by, bw, bh = near[0]
                figures[name].append((bw / side, bh / side, (bx + bw / 2 - x) / side - 0.5,
                                      (by + bh / 2 - y) / side - 0.5))  # fmt: skip
    lines = ["| detector | faces | width / crop | height / crop | centre x - crop's | "
             "centre y - crop's (of the crop's side) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, rows in figures.items():
        r = np.array(rows).reshape(-1, 4)
        q = np.percentile(r, [25, 50, 75], axis=0) if len(r) else np.full((3, 4), np.nan)
        cells = " | ".join(f"{q[1, k]:.4f} [{q[0, k]:.3f}, {q[2, k]:.3f}]" for k in range(4))
        lines.append(f"| {name} | {len(r)} | {cells} |")
    return "\n".join(lines)


def sweep(images, limit: int, seed: int, pixels=(12, 16, 24, 32, 48)) -> str:
    """YuNet's recall and false boxes by score threshold and search scale (``search_pixels``:
    the size of a ``MIN_FACE`` face in the searched image), against the cascade's."""
    thresholds, sides = (0.5, 0.6, 0.7, 0.8, 0.9), (48, 64, 96, 192)
    lines = ["| detector | search px | threshold | " + " | ".join(
        f"found @{s}" for s in sides) + " | false boxes / image | ms / image |",
        "|---|---|---|" + "---|" * (len(sides) + 2)]  # fmt: skip
    rng = np.random.default_rng(seed)
    scenes = [background(*CANVAS, np.random.default_rng(seed + k)) for k in range(SCENES)]
    drawn = []
    for i, face in enumerate(images[:limit]):
        for side in sides:
            for setting in ("flat", "scene"):
                canvas, boxes = draw([face], side, setting, scenes[i % SCENES], rng)
                drawn.append((side, canvas, boxes[0]))
    runs = [("haar", detect.FaceDetector(), [None])]
    runs += [(f"yunet {p}", yunet.YuNetDetector(score_threshold=min(thresholds),
             search_pixels=p), thresholds) for p in pixels]  # fmt: skip
    for name, detector, levels in tqdm(runs, desc="sweep", file=sys.stderr, leave=False):
        hits = {(t, s): 0 for t in levels for s in sides}
        false = dict.fromkeys(levels, 0)
        start = time.perf_counter()
        for side, canvas, box in drawn:
            faces = detector(canvas)
            for t in levels:
                kept = [f for f in faces if t is None or f.score >= t]
                hits[t, side] += any(detect.iou(box, f) >= IOU_FOUND for f in kept)
                false[t] += sum(detect.iou(box, f) < IOU_FOUND for f in kept)
        ms = 1e3 * (time.perf_counter() - start) / len(drawn)
        per_side = len(drawn) / len(sides)
        for t in levels:
            found = " | ".join(f"{100 * hits[t, s] / per_side:.1f}%" for s in sides)
            px = name.split()[-1] if t is not None else "-"
            lines.append(f"| {name.split()[0]} | {px} | {t if t is not None else '-'} | {found} "
                         f"| {false[t] / len(drawn):.3f} | {ms:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="first N faces only (0: all)")
    parser.add_argument("--sides", default="64,96,192", help="face sides for {side} in cases")
    parser.add_argument("--cases", default=CASES, help="setting/side/angle/position/faces,...")
    parser.add_argument("--detectors", default=",".join(MODES), help="of " + ", ".join(MODES))
    parser.add_argument("--framing", action="store_true", help="only measure box framing")
    parser.add_argument("--sweep", action="store_true", help="only sweep YuNet's settings")
    parser.add_argument("--search-pixels", type=float, default=yunet.SEARCH_PIXELS)
    parser.add_argument(
        "--sweep-pixels",
        type=lambda t: tuple(float(v) for v in t.split(",")),
        default=(12, 16, 24, 32, 48),
        help="with --sweep: search pixels to try",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not FER2013_VAL.exists():
        sys.exit(f"needs FER2013 PublicTest at {FER2013_VAL} (see ../shared/data/fer2013)")
    data = np.load(FER2013_VAL)
    images, labels = data["images"], data["labels"].astype(int)
    if args.framing or args.sweep:
        start = time.perf_counter()
        text = (framing(images, args.limit or 438, args.search_pixels) if args.framing
                else sweep(images, args.limit or 300, args.seed, args.sweep_pixels))  # fmt: skip
        print(text)
        print(f"({time.perf_counter() - start:.0f} s)")
        return {"table": text}
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    predictor = Predictor.from_pretrained("fer2013")
    crop_pred = np.concatenate(
        [
            predictor.predict_faces(images[k : k + 256, ..., None])["probs"].argmax(-1)
            for k in range(0, len(images), 256)
        ]
    )
    modes = [m for m in args.detectors.split(",") if m]
    cases = []
    for case in args.cases.split(","):
        for side in args.sides.split(",") if "{side}" in case else [None]:
            cases.append(parse_case(case.replace("{side}", side or "")))
    start = time.perf_counter()
    results = {
        "faces": len(images),
        "crop_accuracy": float((crop_pred == labels).mean()),
        "settings": [
            r
            for case in cases
            for r in case_figures(images, labels, crop_pred, predictor, case, modes, args.seed)
        ],
    }
    results["seconds"] = time.perf_counter() - start
    print(format_report(results))
    print(f"({results['seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
