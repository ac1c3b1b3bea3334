"""Inference speed: single-face latency, batch throughput, and face detection apart.

python benchmarks/inference.py [--models shipped,BReGNet39] [--repeats 30] [--json PATH]

Latency: ``Predictor.predict([face])`` end to end (resize, jit-compiled forward, copy
back) on one 48 x 48 face, median and 90th percentile of ``--repeats`` calls after a
warm-up. Throughput: ``Predictor.predict_faces`` on uint8 face crops at batch 1, 8, 64 and
256, images/s from the median call. ``shipped`` is the packaged FER2013 model; other names
are registry models with random weights (speed does not depend on the weights).
Detection: ``FaceDetector`` on a 640 x 480 photo with two faces, and the crop of each face.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bregflax import detect, models, predict  # noqa: E402
from bregflax.data import faces  # noqa: E402
from configs import default  # noqa: E402

BATCHES = (1, 8, 64, 256)
FER2013_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "val.npz"


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def load_predictor(name: str) -> predict.Predictor:
    if name == "shipped":
        return predict.Predictor.from_pretrained("fer2013")
    config = default.get_config()
    config.model.name = name
    model = models.create_model(config.model)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 1)), train=False)
    return predict.Predictor.from_config(config, variables)


def sample_faces(n: int) -> np.ndarray:
    """Real FER2013 val faces where present, else random pixels; uint8 (n, 48, 48, 1)."""
    if FER2013_VAL.exists():
        images = np.load(FER2013_VAL)["images"]
        return images[np.arange(n) % len(images), ..., None]
    return np.random.default_rng(0).integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)


def model_figures(name: str, repeats: int) -> dict:
    p = load_predictor(name)
    face = sample_faces(1)[0]
    lat = timed(lambda: p.predict([face]), repeats)
    out = {
        "params": models.num_params(p.variables["params"]),
        "latency_ms": {
            "median": 1e3 * statistics.median(lat),
            "p90": 1e3 * float(np.percentile(lat, 90)),
        },
        "images_per_s": {},
    }
    for batch in BATCHES:
        x = sample_faces(batch)
        times = timed(lambda x=x: p.predict_faces(x), max(3, repeats // max(1, batch // 8)))
        out["images_per_s"][batch] = batch / statistics.median(times)
    return out


def detection_figures(repeats: int) -> dict:
    import cv2

    yy, xx = np.mgrid[0:480, 0:640]
    photo = np.repeat((80 + 100 * xx / 640 + 40 * yy / 480).astype(np.uint8)[..., None], 3, -1)
    for face, (x, y) in zip(sample_faces(4)[2:4], [(60, 100), (380, 160)], strict=True):
        photo[y : y + 160, x : x + 160] = cv2.resize(face[..., 0], (160, 160))[..., None]
    detector = detect.FaceDetector()
    boxes = detector(photo)
    det = timed(lambda: detector(photo), repeats)
    crop = timed(
        lambda: [faces.crop_face(photo, b, size=48, channels=1, margin=0.02) for b in boxes],
        repeats,
    )
    return {
        "faces_found": len(boxes),
        "detect_ms": {"median": 1e3 * statistics.median(det), "p90": 1e3 * np.percentile(det, 90)},
        "crop_ms_per_photo": 1e3 * statistics.median(crop),
    }


def format_report(results: dict) -> str:
    head = "| model | params | latency median ms | p90 ms | " + " | ".join(
        f"b={b} img/s" for b in BATCHES
    )
    lines = [head + " |", "|" + " --- |" * (4 + len(BATCHES))]
    for name, r in results["models"].items():
        rates = " | ".join(f"{r['images_per_s'][b]:.0f}" for b in BATCHES)
        lines.append(
            f"| {name} | {r['params'] / 1e6:.2f}M | {r['latency_ms']['median']:.2f} | "
            f"{r['latency_ms']['p90']:.2f} | {rates} |"
        )
    d = results["detection"]
    lines.append(
        f"\nHaar detection, 640x480 photo ({d['faces_found']} faces found): median "
        f"{d['detect_ms']['median']:.1f} ms, p90 {d['detect_ms']['p90']:.1f} ms; "
        f"cropping them {d['crop_ms_per_photo']:.2f} ms."
    )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="shipped,BReGNet39")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    results = {
        "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})",
        "models": {m: model_figures(m, args.repeats) for m in args.models.split(",") if m},
        "detection": detection_figures(args.repeats),
    }
    print(format_report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


if __name__ == "__main__":
    main()
