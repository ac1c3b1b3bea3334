"""`bregflax predict` end to end: frames/s and images/s, where the time goes, detection recall.

python benchmarks/predict_pipeline.py [--frames 300] [--photos 100] [--repeats 2]
    [--ks 10] [--media DIR] [--cli [--before-root DIR]] [--json PATH]

Generates media with faces: FER2013 PublicTest faces (``../shared/data/fer2013/val.npz``;
only faces both the cascade and YuNet find when the face is alone on a flat background, so
recall measures the pipeline rather than the detector) upscaled to 80-200 pixels and
blended into synthetic backgrounds (gradients, blobs, bars), moving on smooth paths:

- ``one_face_640x480.mp4``: one 160-pixel face, ``--frames`` frames at 30 frames/s (mp4v);
- ``three_faces_640x480.mp4``: three faces, the third coming into view a third of the way in;
- ``two_faces_1280x720.mp4``: two faces, ``--frames-720`` frames;
- ``photos/``: ``--photos`` 640x480 JPEG photos with one to three faces each.

Every batch size up to 64 is compiled first. Each input then goes through the engine of
``bregflax predict`` (``predict.parse_args`` and the CLI's own setup, then ``inference.run``
and its ``Writer`` to a CSV file, as ``predict.main`` does) ``--repeats`` times, in each
of ``--settings``, alternated so that machine noise hits all alike, each with and without
mirror averaging (``--flip`` / ``--no-flip``):

- ``before``: the pipeline before issue 19: the Haar cascade over the whole frame at full
  resolution (faces down to 24 pixels) on every frame, BatchNorm computed as trained, no
  overlap of stages;
- ``haar``: the Haar cascade with the engine's defaults: frames searched at the scale where
  a 48-pixel face fills the cascade's 24-pixel window, faces followed between whole-frame
  searches every ``K`` frames (each K in ``--ks``), BatchNorm folded, frames prepared in a
  thread while the model runs;
- ``yunet``: the same with YuNet (``--no-align``: crops as the box is);
- ``yunet+align``: the default ``bregflax predict``: YuNet, crops turned so the eyes are
  level.

Labels are compared with the first setting's.

Printed per input and setting: frames (or images) per second of the timed run (median),
the time each stage was busy per frame (decode, detect, crop, model, write; stages overlap
in ``after``, so they can add up to more than the wall time), peak RSS (VmHWM, reset before
the run), recall (drawn faces with a row box of IoU >= 0.5, over faces drawn), boxes on no
face, and for the faces both settings found: how many labels equal the ``before`` setting's,
and the mean over faces of the largest change of a class probability.

``--cli`` also times the whole command as a user runs it, start-up included
(``python -m bregflax.inference.predict VIDEO --out F.csv``, with its default YuNet and with
``--detector haar``), for this tree and, with
``--before-root``, for another checkout (e.g. ``git worktree add /tmp/before HEAD``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bregflax.data import media  # noqa: E402
from bregflax.inference import (  # noqa: E402
    detect,
    predict,
    yunet,
)
from bregflax.inference import engine as inference  # noqa: E402
from bregflax.inference.predictor import Predictor  # noqa: E402

FER2013_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "val.npz"
STAGES = ("decode", "detect", "crop", "model", "write")
FPS = 30


# --------------------------------------------------------------------------- media


def detectable_faces(n: int, seed: int = 0) -> np.ndarray:
    """``n`` FER2013 PublicTest faces the cascade and YuNet find alone (4x, on a flat pad)."""
    if not FER2013_VAL.exists():
        sys.exit(f"needs FER2013 faces at {FER2013_VAL}")
    images = np.load(FER2013_VAL)["images"]
    order = np.random.default_rng(seed).permutation(len(images))
    detectors, keep = (detect.FaceDetector(min_size=24), yunet.YuNetDetector(min_size=24)), []
    for i in order:
        pad = np.full((288, 288), 128, np.uint8)
        pad[48:240, 48:240] = cv2.resize(images[i], (192, 192), interpolation=cv2.INTER_CUBIC)
        if all(len(detector(pad)) == 1 for detector in detectors):
            keep.append(images[i])
            if len(keep) == n:
                break
    return np.stack(keep)


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A colour scene: a gradient, soft blobs and a few bars (RGB uint8)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(60, 140, 3) + rng.uniform(-50, 50, 3) * (xx / width)[..., None]
    image = base + rng.uniform(-30, 30, 3) * (yy / height)[..., None]
    for _ in range(12):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 120)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        image += blob * rng.uniform(-60, 60, 3)
    for _ in range(6):
        x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        w, h = int(rng.uniform(5, 60)), int(rng.uniform(40, 300))
        image[y : y + h, x : x + w] = rng.uniform(0, 255, 3)
    noise = rng.normal(0, 4, image.shape[:2])[..., None]
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def paste(image: np.ndarray, face: np.ndarray, x: int, y: int, side: int) -> None:
    """Blends ``face`` (gray 48 x 48), upscaled to ``side``, into ``image`` at (x, y); its
    outer eighth fades into the background, so no hard square edge is drawn."""
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    ramp = np.clip(np.minimum(np.arange(side), np.arange(side)[::-1]) / (side / 8), 0, 1)
    alpha = np.minimum.outer(ramp, ramp)[..., None]
    region = image[y : y + side, x : x + side].astype(np.float32)
    image[y : y + side, x : x + side] = np.round(
        alpha * big[..., None] + (1 - alpha) * region
    ).astype(np.uint8)


@dataclasses.dataclass
class Mover:
    face: np.ndarray
    side: int
    start: tuple[float, float]
    amplitude: tuple[float, float]
    period: tuple[float, float]
    first_frame: int = 0

    def box(self, t: int) -> tuple[int, int, int, int]:
        x = self.start[0] + self.amplitude[0] * np.sin(2 * np.pi * t / self.period[0])
        y = self.start[1] + self.amplitude[1] * np.sin(2 * np.pi * t / self.period[1] + 1)
        return int(round(x)), int(round(y)), self.side, self.side


def write_video(path: Path, size, movers: list[Mover], frames: int, seed: int) -> list[list]:
    """Writes an mp4v video; returns each frame's drawn face boxes."""
    width, height = size
    scene = background(height, width, np.random.default_rng(seed))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
    truth = []
    for t in range(frames):
        image = scene.copy()
        boxes = []
        for m in movers:
            if t >= m.first_frame:
                x, y, side, _ = m.box(t)
                x, y = min(max(x, 0), width - side), min(max(y, 0), height - side)
                paste(image, m.face, x, y, side)
                boxes.append((x, y, side, side))
        truth.append(boxes)
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    return truth


def write_photos(folder: Path, faces: np.ndarray, n: int, seed: int) -> dict[str, list]:
    """``n`` 640 x 480 JPEGs with 1-3 faces (80-200 px) each; their drawn boxes by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, truth = np.random.default_rng(seed), {}
    for i in range(n):
        image, boxes = background(480, 640, rng), []
        for _ in range(int(rng.integers(1, 4))):
            for _attempt in range(20):  # place without overlap
                side = int(rng.integers(80, 201))
                x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
                if all(detect.iou((x, y, side, side), b) == 0 for b in boxes):
                    paste(image, faces[int(rng.integers(len(faces)))], x, y, side)
                    boxes.append((x, y, side, side))
                    break
        name = f"photo_{i:03d}.jpg"
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        truth[name] = boxes
    return truth


def make_media(folder: Path, frames: int, photos: int, frames_720: int) -> dict:
    """The benchmark's inputs under ``folder`` and their drawn boxes."""
    faces = detectable_faces(64)
    folder.mkdir(parents=True, exist_ok=True)
    inputs = {}
    one = [Mover(faces[0], 160, (240, 160), (200, 120), (180, 140))]
    three = [
        Mover(faces[1], 170, (60, 40), (50, 60), (150, 110)),
        Mover(faces[2], 120, (420, 60), (60, 50), (130, 170)),
        Mover(faces[3], 90, (260, 330), (150, 20), (200, 90), first_frame=frames // 3),
    ]
    two = [
        Mover(faces[4], 200, (300, 200), (200, 120), (160, 200)),
        Mover(faces[5], 130, (900, 300), (150, 200), (220, 140)),
    ]
    for name, size, movers, seed, count in (
        ("one_face_640x480.mp4", (640, 480), one, 1, frames),
        ("three_faces_640x480.mp4", (640, 480), three, 2, frames),
        ("two_faces_1280x720.mp4", (1280, 720), two, 3, frames_720),
    ):
        truth = write_video(folder / name, size, movers, count, seed)
        inputs[name] = {"path": str(folder / name), "kind": "video", "truth": truth}
    truth = write_photos(folder / "photos", faces[6:], photos, seed=4)
    inputs["photos_640x480"] = {"path": str(folder / "photos"), "kind": "photos", "truth": truth}
    return inputs


# --------------------------------------------------------------------------- stage timing


class Stages:
    """Wraps the engine's stage functions to add up the time each one is busy."""

    def __init__(self):
        self.busy = dict.fromkeys(STAGES, 0.0)
        self._saved = []

    def _wrap(self, owner, name: str, stage: str) -> None:
        original = getattr(owner, name)
        busy = self.busy

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                busy[stage] += time.perf_counter() - start

        self._saved.append((owner, name, original))
        setattr(owner, name, timed)

    def _wrap_iter(self, owner, name: str, stage: str) -> None:
        original = getattr(owner, name)
        busy = self.busy

        def timed(*args, **kwargs):
            it = original(*args, **kwargs)
            try:
                while True:
                    start = time.perf_counter()
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                    finally:
                        busy[stage] += time.perf_counter() - start
                    yield item
            finally:
                it.close()

        self._saved.append((owner, name, original))
        setattr(owner, name, timed)

    def __enter__(self):
        self._wrap_iter(media.Video, "__iter__", "decode")
        self._wrap(media, "read_image", "decode")
        self._wrap(detect.FaceDetector, "__call__", "detect")
        self._wrap(detect.FaceTracker, "__call__", "detect")
        self._wrap(yunet.YuNetDetector, "__call__", "detect")
        self._wrap(inference, "crops", "crop")
        self._wrap(Predictor, "predict_faces", "model")
        self._wrap(predict.Writer, "write", "write")
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- runs


SETTINGS = {
    "before": {
        "args": ["--detector", "haar", "--min-face", "24", "--redetect-every", "1"],
        "fold": False,
    },
    "haar": {"args": ["--detector", "haar"], "fold": True},
    "yunet": {"args": ["--no-align"], "fold": True},
    "yunet+align": {"args": [], "fold": True},
}


def engine(path: str, out: Path, args: list[str], fold: bool, overlap: bool):
    """What ``predict.main`` sets up for ``path`` and ``args``: (rows iterator, writer, file)."""
    parsed = predict.parse_args([path, "--out", str(out), "--no-progress", *args])
    inputs, predictor, options, handle = predict._setup(parsed)
    if predictor.fold != fold:
        predictor = dataclasses.replace(predictor, fold=fold)
    options.overlap = overlap
    columns = predict.csv_columns(predictor.class_names, predictor.has_va)
    writer = predict.Writer(handle, "csv", columns)
    rows = inference.run(predictor, parsed.paths, options, parsed.every, False, collected=inputs)
    return rows, writer, handle


def run_once(path: str, out: Path, setting: dict, flip: bool, k: int | None) -> dict:
    args = [*setting["args"], "--flip" if flip else "--no-flip"]
    if k is not None:
        args += ["--redetect-every", str(k)]
    reset_peak_rss()
    with Stages() as stages:
        start = time.perf_counter()
        rows, writer, handle = engine(path, out, args, setting["fold"], setting["fold"])
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        with handle:
            for row in rows:
                writer.write(row)
        wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "setup_s": setup_s,
        "busy_s": stages.busy,
        "peak_rss_mib": peak_rss_mib(),
    }


def read_rows(out: Path) -> list[dict]:
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


def score(rows: list[dict], truth, kind: str) -> dict:
    """Recall, boxes on no face, and each drawn face's (label, probs) (None: not found)."""
    found: dict[tuple, list] = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        key = (os.path.basename(r["path"]), None) if kind == "photos" else (None, int(r["frame"]))
        box = tuple(float(r[c]) for c in ("x", "y", "width", "height"))
        probs = np.array([float(v) for k, v in r.items() if k.startswith("p_")])
        found.setdefault(key, []).append((box, (r.get("name", ""), probs)))
    items = truth.items() if kind == "photos" else enumerate(truth)
    drawn = hit = false = 0
    labels = []
    for name, boxes in items:
        key = (name, None) if kind == "photos" else (None, name)
        got = list(found.pop(key, []))
        for b in boxes:
            drawn += 1
            best = max(range(len(got)), key=lambda i: detect.iou(got[i][0], b), default=None)
            if best is not None and detect.iou(got[best][0], b) >= 0.5:
                hit += 1
                labels.append(got.pop(best)[1])
            else:
                labels.append(None)
        false += len(got)
    false += sum(len(v) for v in found.values())
    frames = len(truth)
    return {"drawn": drawn, "found": hit, "recall": hit / max(drawn, 1), "false_boxes": false,
            "frames": frames, "labels": labels}  # fmt: skip


def bench_input(name: str, spec: dict, settings, flips, ks, repeats: int, tmp: Path) -> list:
    results = []
    units = len(spec["truth"])
    configs = [
        (s, flip, k) for flip in flips for s in settings for k in (ks if s != "before" else [None])
    ]
    timings = {c: [] for c in configs}
    scores = {}
    for _ in range(repeats):
        for c in configs:
            out = tmp / f"{name}_{c[0]}_{c[1]}_{c[2]}.csv"
            timings[c].append(run_once(spec["path"], out, SETTINGS[c[0]], c[1], c[2]))
            scores[c] = score(read_rows(out), spec["truth"], spec["kind"])
    for c in configs:
        setting, flip, k = c
        runs = timings[c]
        wall = statistics.median(r["wall_s"] for r in runs)
        busy = {s: statistics.median(r["busy_s"][s] for r in runs) for s in STAGES}
        sc = scores[c]
        first = next(c for c in configs if c[0] == settings[0] and c[1] == flip)
        reference = scores[first]["labels"] if setting != settings[0] else []
        both = [(a, b) for a, b in zip(sc["labels"], reference, strict=False) if a and b]
        same = [a[0] == b[0] for a, b in both]
        moved = [float(np.abs(a[1] - b[1]).max()) for a, b in both]
        results.append({
            "input": name, "setting": setting, "flip": flip, "k": k, "units": units,
            "per_s": units / wall, "wall_s": wall,
            "setup_s": statistics.median(r["setup_s"] for r in runs),
            "ms_per_unit": {s: 1e3 * busy[s] / units for s in STAGES},
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "drawn": sc["drawn"], "found": sc["found"], "recall": sc["recall"],
            "false_boxes": sc["false_boxes"],
            "labels_as_before": (sum(same) / len(same)) if same else None,
            "mean_max_prob_change": statistics.mean(moved) if moved else None,
            "walls_s": [r["wall_s"] for r in runs],
        })  # fmt: skip
        print(format_table(results[-1:], header=False), flush=True)
    return results


def compile_buckets(settings, flips) -> None:
    """Compiles every batch size up to 64 for each setting and flip, before any timing."""
    shipped = Predictor.from_pretrained("fer2013")
    for flip in flips:
        for setting in settings:
            p = dataclasses.replace(shipped, flip=flip, fold=SETTINGS[setting]["fold"])
            for size in (1, 2, 4, 8, 16, 32, 64):
                p.predict_faces(np.zeros((size, 48, 48, 1), np.uint8))


def format_table(rows: list[dict], header: bool = True) -> str:
    head = (
        "| input | setting | flip | K | frames or images/s | decode | detect | crop | model "
        "| write (ms each) | peak RSS MiB | recall | false boxes | labels as before "
        "| mean max abs prob change |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)] if header else []
    for r in rows:
        ms = " | ".join(f"{r['ms_per_unit'][s]:.2f}" for s in STAGES)
        same = "-" if r["labels_as_before"] is None else f"{100 * r['labels_as_before']:.1f}%"
        moved = r["mean_max_prob_change"]
        same += " | -" if moved is None else f" | {moved:.3f}"
        lines.append(
            f"| {r['input']} | {r['setting']} | {'yes' if r['flip'] else 'no'} | {r['k'] or '-'} "
            f"| {r['per_s']:.1f} | {ms} | {r['peak_rss_mib']:.0f} "
            f"| {r['found']}/{r['drawn']} ({100 * r['recall']:.1f}%) | {r['false_boxes']} "
            f"| {same} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict]) -> str:
    """Each setting's frames (images) per second over the first setting's, same run, per
    input and flip."""
    first = rows[0]["setting"] if rows else ""
    lines = [f"| input | setting | flip | K | setting / {first} |", "|---|---|---|---|---|"]
    for r in rows:
        if r["setting"] == first:
            continue
        before = next(
            (b for b in rows if b["setting"] == first and b["input"] == r["input"]
             and b["flip"] == r["flip"]), None)  # fmt: skip
        if before:
            ratio = r["per_s"] / before["per_s"]
            lines.append(
                f"| {r['input']} | {r['setting']} | {'yes' if r['flip'] else 'no'} | {r['k']} "
                f"| {ratio:.2f} |"
            )
    return "\n".join(lines)


def cli_wall(root: Path, video: str, out: Path, extra: list[str]) -> float:
    """Seconds for ``python -m bregflax.inference.predict VIDEO --out OUT`` run from ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bregflax.inference.predict", video, "--out", str(out),
         "--no-progress", *extra],
        cwd=root, env=env, check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="frames per 640x480 video")
    parser.add_argument("--frames-720", type=int, default=150, help="frames, 1280x720 video")
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ks", default=str(detect.REDETECT_EVERY), help="K values for after")
    parser.add_argument("--settings", default="haar,yunet,yunet+align", help=", ".join(SETTINGS))
    parser.add_argument("--flips", default="no,yes")
    parser.add_argument("--inputs", default="", help="comma-separated names (default all)")
    parser.add_argument("--media", help="folder for the generated media (default: a temp one)")
    parser.add_argument("--cli", action="store_true", help="also time the whole command")
    parser.add_argument("--before-root", help="with --cli: another checkout to time")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    settings = [s for s in args.settings.split(",") if s]
    flips = [f == "yes" for f in args.flips.split(",") if f]
    ks = [int(k) for k in args.ks.split(",") if k]
    with contextlib.ExitStack() as stack:
        if args.media:
            folder = Path(args.media)
        else:
            import tempfile

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        start = time.perf_counter()
        inputs = make_media(folder / "media", args.frames, args.photos, args.frames_720)
        print(f"media: {time.perf_counter() - start:.1f} s to generate under {folder}", flush=True)
        if args.inputs:
            inputs = {k: v for k, v in inputs.items() if k in args.inputs.split(",")}
        start = time.perf_counter()
        compile_buckets(settings, flips)
        print(f"compiling: {time.perf_counter() - start:.1f} s", flush=True)
        results: dict = {"load_before": os.getloadavg(), "rows": [], "cli": {}}
        print(format_table([]), flush=True)
        for name, spec in inputs.items():
            results["rows"] += bench_input(name, spec, settings, flips, ks, args.repeats, folder)
        if args.cli:
            video = inputs.get("one_face_640x480.mp4", next(iter(inputs.values())))["path"]
            roots = {"this tree": Path(__file__).resolve().parents[1]}
            if args.before_root:
                roots["before"] = Path(args.before_root).resolve()
            for flip in ("--no-flip", "--flip"):
                for label, root in roots.items():
                    for detector in ("yunet", "haar"):
                        extra = [flip, "--detector", detector] if label != "before" else [flip]
                        cli_wall(root, video, folder / "cli.csv", extra)  # warm the file cache
                        wall = cli_wall(root, video, folder / "cli.csv", extra)
                        results["cli"][f"{label} {' '.join(extra)}"] = wall
                        if label == "before":
                            break
        results["load_after"] = os.getloadavg()
    print()
    print(format_table(results["rows"]))
    print()
    print(ratios(results["rows"]))
    for label, wall in results["cli"].items():
        print(f"whole command ({label}), {args.frames}-frame 640x480 video: {wall:.2f} s, "
              f"{args.frames / wall:.1f} frames/s with start-up")  # fmt: skip
    print(f"1-minute load average: {results['load_before'][0]:.2f} before, "
          f"{results['load_after'][0]:.2f} after")  # fmt: skip
    if args.json:
        for r in results["rows"]:
            r.pop("labels", None)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
