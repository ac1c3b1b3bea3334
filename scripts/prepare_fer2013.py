"""Writes ``fer2013.csv`` (Kaggle format) from ``train.npz``/``val.npz`` arrays, then builds it.

    python scripts/prepare_fer2013.py --npz_dir=../shared/data/fer2013 --data_dir=DATA

The arrays hold the Training and PublicTest splits; each becomes CSV rows with that Usage, so
the TFDS builder sees exactly the Kaggle release's format. The build goes to
``DATA/fer2013/...``; pass ``--config.data.data_dir=DATA`` to training.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

USAGES = (("train", "Training"), ("val", "PublicTest"), ("test", "PrivateTest"))


def write_csv(npz_dir: Path, csv_path: Path) -> dict[str, int]:
    """Writes every ``<split>.npz`` found in ``npz_dir`` as rows of ``csv_path``."""
    counts = {}
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w") as f:
        f.write("emotion,pixels,Usage\n")
        for split, usage in USAGES:
            path = npz_dir / f"{split}.npz"
            if not path.exists():
                continue
            arrays = np.load(path)
            images, labels = arrays["images"], arrays["labels"]
            if images.shape[1:] != (48, 48) or images.dtype != np.uint8:
                raise ValueError(
                    f"{path}: expected uint8 (N, 48, 48), got {images.dtype} {images.shape}"
                )
            for image, label in zip(images, labels, strict=True):
                f.write(f"{int(label)},{' '.join(map(str, image.reshape(-1)))},{usage}\n")
            counts[usage] = len(labels)
    if not counts:
        raise FileNotFoundError(f"no train.npz / val.npz in {npz_dir}")
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz_dir", type=Path, default=Path("../shared/data/fer2013"))
    parser.add_argument("--data_dir", type=Path, required=True)
    args = parser.parse_args(argv)
    from bregflax import data
    from bregflax.configs import default

    config = default.get_config().data
    config.data_dir = str(args.data_dir.resolve())
    config.manual_dir = str(args.data_dir.resolve() / "downloads" / "manual" / "fer2013")
    start = time.perf_counter()
    counts = write_csv(args.npz_dir, Path(config.manual_dir) / "fer2013.csv")
    print(f"wrote fer2013.csv: {counts}")
    for split in ("train", "val"):
        print(f"{split}: {len(data.load('fer2013', split, config).source)} faces")
    print(f"built in {time.perf_counter() - start:.1f} s under {config.data_dir}")


if __name__ == "__main__":
    main()
