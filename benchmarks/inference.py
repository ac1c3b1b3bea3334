"""Inference speed: single-face latency, batch throughput, and face detection apart.

python benchmarks/inference.py [--models shipped,BReGNet39] [--repeats 30] [--batches 1,8,64,256]
    [--compare-torch [--torch-batch 256] [--torch-repeats 7]] [--json PATH]

Latency: ``Predictor.predict([face])`` end to end (resize, jit-compiled forward, copy
back) on one 48 x 48 face, median and 90th percentile of ``--repeats`` calls after a
warm-up. Throughput: ``Predictor.predict_faces`` on uint8 face crops at each of ``--batches``
(default 1, 8, 64 and 256), images/s from the median call. ``shipped`` is the packaged
FER2013 model; other names are registry models with random weights (speed does not depend
on the weights).
Detection: ``FaceDetector`` on a 640 x 480 photo with two faces, and the crop of each face:
the default (searched at 320 x 240, faces from 48 pixels) and at full resolution (faces from
24 pixels, as before).

``--compare-torch``: the network alone on float32 images at ``--torch-batch``, in JAX with
BatchNorm folded (as the Predictor runs it) and as trained, and in PyTorch 2 threads
(benchmarks/torch_reference.py's twin: NCHW, channels_last, and channels_last with
BatchNorm fused by ``torch.nn.utils.fusion.fuse_conv_bn_eval``), interleaved as in
benchmarks/throughput.py (its ``time_interleaved``); the ratio is JAX folded over the fastest
PyTorch setting. Needs torch (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import functools
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

from benchmarks import machine  # noqa: E402
from bregflax.configs import default  # noqa: E402
from bregflax.data import faces  # noqa: E402
from bregflax.inference.engine import detect  # noqa: E402
from bregflax.inference.predictor import Predictor  # noqa: E402
from bregflax.nn import fold, models

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


def load_predictor(name: str) -> Predictor:
    if name == "shipped":
        return Predictor.from_pretrained("fer2013")
    config = default.get_config()
    config.model.name = name
    model = models.create_model(config.model)
    init = jax.jit(functools.partial(model.init, train=False))
    variables = init(jax.random.key(0), jnp.zeros((1, 48, 48, 1)))
    return Predictor.from_config(config, variables)


def sample_faces(n: int) -> np.ndarray:
    """Real FER2013 val faces where present, else random pixels; uint8 (n, 48, 48, 1)."""
    if FER2013_VAL.exists():
        images = np.load(FER2013_VAL)["images"]
        return images[np.arange(n) % len(images), ..., None]
    return np.random.default_rng(0).integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)


def model_figures(name: str, repeats: int, batches=BATCHES) -> dict:
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
    for batch in batches:
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
    detector, full = detect.FaceDetector(), detect.FaceDetector(min_size=24)
    boxes = detector(photo)
    det = timed(lambda: detector(photo), repeats)
    det_full = timed(lambda: full(photo), repeats)
    crop = timed(
        lambda: [faces.crop_face(photo, b, size=48, channels=1, margin=0.02) for b in boxes],
        repeats,
    )
    return {
        "faces_found": len(boxes),
        "faces_found_full_resolution": len(full(photo)),
        "detect_ms": {"median": 1e3 * statistics.median(det), "p90": 1e3 * np.percentile(det, 90)},
        "detect_ms_full_resolution": {
            "median": 1e3 * statistics.median(det_full),
            "p90": 1e3 * np.percentile(det_full, 90),
        },
        "crop_ms_per_photo": 1e3 * statistics.median(crop),
    }


def torch_figures(name: str, batch: int, repeats: int) -> dict:
    """The network alone at ``batch``: JAX folded and as trained, PyTorch in three settings."""
    import copy

    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from benchmarks import torch_reference as tr
    from benchmarks.throughput import Runner, time_interleaved

    torch.set_num_threads(2)
    p = load_predictor(name)
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 48, 48, 1)).astype(np.float32)
    xj = jax.device_put(x)
    folded_vars = jax.device_put(fold.fold_batchnorm(p.model, p.variables, (1, 48, 48, 1)))
    plain = jax.jit(lambda v, z: p.model.apply(v, z, train=False)["logits"])
    folded = jax.jit(lambda v, z: fold.apply(p.model, v, z)["logits"])
    net = tr.copy_flax_to_torch(jax.device_get(p.variables), tr.from_flax(p.model)).eval()
    fused = copy.deepcopy(net)
    fused.stem = torch.nn.ModuleList(
        fuse_conv_bn_eval(c, b) for c, b in zip(fused.stem, fused.stem_bn, strict=True)
    )
    fused.stem_bn = torch.nn.ModuleList(torch.nn.Identity() for _ in fused.stem_bn)
    for block in fused.blocks:
        pairs = [("conv1", "bn1"), ("conv2", "bn2")] + [("proj_conv", "proj_bn")] * block.project
        for conv, bn in pairs:
            setattr(block, conv, fuse_conv_bn_eval(getattr(block, conv), getattr(block, bn)))
            setattr(block, bn, torch.nn.Identity())
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    cl = nchw.contiguous(memory_format=torch.channels_last)
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    fused = fused.to(memory_format=torch.channels_last)
    want = np.asarray(plain(p.variables, xj))
    check = {
        "jax_folded": np.abs(np.asarray(folded(folded_vars, xj)) - want).max(),
        "torch": np.abs(tr.infer_step(net, nchw).numpy() - want).max(),
        "torch_fused": np.abs(tr.infer_step(fused, cl).numpy() - want).max(),
    }
    runners = [
        Runner("jax_folded", lambda: folded(folded_vars, xj).block_until_ready(), batch),
        Runner("jax", lambda: plain(p.variables, xj).block_until_ready(), batch),
        Runner("torch_nchw", lambda: tr.infer_step(net, nchw), batch),
        Runner("torch_channels_last", lambda: tr.infer_step(net_cl, cl), batch),
        Runner("torch_channels_last_fused", lambda: tr.infer_step(fused, cl), batch),
    ]
    timings = time_interleaved(runners, repeats)
    rates = {k: v["images_per_s"] for k, v in timings.items()}
    best = max((k for k in rates if k.startswith("torch")), key=rates.get)
    return {
        "batch": batch,
        "images_per_s": rates,
        "max_abs_logit_diff": {k: float(v) for k, v in check.items()},
        "fastest_torch": best,
        "jax_folded_over_torch": rates["jax_folded"] / rates[best],
        "jax_over_torch": rates["jax"] / rates[best],
        "torch_version": torch.__version__,
    }


def format_report(results: dict) -> str:
    batches = results["batches"]
    head = "| model | params | latency median ms | p90 ms | " + " | ".join(
        f"b={b} img/s" for b in batches
    )
    lines = [head + " |", "|" + " --- |" * (4 + len(batches))]
    for name, r in results["models"].items():
        rates = " | ".join(f"{r['images_per_s'][b]:.0f}" for b in batches)
        lines.append(
            f"| {name} | {r['params'] / 1e6:.2f}M | {r['latency_ms']['median']:.2f} | "
            f"{r['latency_ms']['p90']:.2f} | {rates} |"
        )
    d = results["detection"]
    lines.append(
        f"\nHaar detection, 640x480 photo ({d['faces_found']} faces found): median "
        f"{d['detect_ms']['median']:.1f} ms, p90 {d['detect_ms']['p90']:.1f} ms; at full "
        f"resolution ({d['faces_found_full_resolution']} found) median "
        f"{d['detect_ms_full_resolution']['median']:.1f} ms; "
        f"cropping them {d['crop_ms_per_photo']:.2f} ms."
    )
    if results.get("torch"):
        lines += [
            "",
            "| model | batch | JAX folded | JAX as trained | torch NCHW | torch CL "
            "| torch CL fused | JAX folded / fastest torch | JAX as trained / fastest torch |",
            "|" + " --- |" * 9,
        ]
        for name, t in results["torch"].items():
            r = t["images_per_s"]
            lines.append(
                f"| {name} | {t['batch']} | {r['jax_folded']:.0f} | {r['jax']:.0f} "
                f"| {r['torch_nchw']:.0f} | {r['torch_channels_last']:.0f} "
                f"| {r['torch_channels_last_fused']:.0f} | {t['jax_folded_over_torch']:.2f} "
                f"| {t['jax_over_torch']:.2f} |"
            )
        for name, t in results["torch"].items():
            diffs = ", ".join(f"{k} {v:.1e}" for k, v in t["max_abs_logit_diff"].items())
            lines.append(f"{name}: largest logit difference from JAX as trained: {diffs}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="shipped,BReGNet39")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="throughput")
    parser.add_argument("--compare-torch", action="store_true", help="needs torch")
    parser.add_argument("--torch-batch", type=int, default=256)
    parser.add_argument("--torch-repeats", type=int, default=7)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(",") if b)
    names = [m for m in args.models.split(",") if m]
    print(machine.describe(), flush=True)
    results = {
        "machine": machine.describe(),
        "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})",
        "batches": batches,
        "models": {m: model_figures(m, args.repeats, batches) for m in names},
        "detection": detection_figures(args.repeats),
    }
    if args.compare_torch:
        results["torch"] = {
            m: torch_figures(m, args.torch_batch, args.torch_repeats) for m in names
        }
    print(format_report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


if __name__ == "__main__":
    main()
