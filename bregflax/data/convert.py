"""``python -m bregflax.data.convert SRC DST --format=webp|png|npz``: rewrites a folder of
``<split>.npz`` arrays in another format of the ``arrays`` source, checking that every image
reads back bit-exact (the format itself is ``bregflax.data.arrays``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bregflax import errors
from bregflax.data import DatasetNotFoundError
from bregflax.data.arrays import PER_IMAGE, _npz, read, write_split


def convert(src: Path, dst: Path, image_format: str, splits: Sequence[str] = ()) -> dict:
    """Rewrites every ``<split>.npz`` in ``src`` (or just ``splits``) under ``dst`` in
    ``image_format`` ("npz", "webp" or "png"), checking that each reads back bit-exact.
    Returns {split: bytes written}."""
    splits = list(splits) or sorted(p.stem for p in Path(src).glob("*.npz"))
    if not splits:
        raise DatasetNotFoundError(f"no <split>.npz files in {src}")
    targets = {s: Path(dst) / (f"{s}.npz" if image_format == "npz" else s) for s in splits}
    taken = [str(t) for t in targets.values() if os.path.lexists(t)]
    if taken:  # before anything is written; an input is never written over either
        raise FileExistsError(f"{', '.join(taken)} exist(s): choose another output folder")
    sizes = {}
    for split in splits:
        original = _npz(Path(src) / f"{split}.npz", ("images", *PER_IMAGE))
        target = targets[split]
        per_image = {k: v for k, v in original.items() if k != "images"}
        out = write_split(target, original["images"], image_format=image_format, **per_image)
        back = read(out)
        shape = original["images"].shape
        if not np.array_equal(back["images"].reshape(shape), original["images"]) or any(
            not np.array_equal(back[k], v) for k, v in original.items() if k != "images"
        ):
            raise AssertionError(f"{out} does not read back as {Path(src) / f'{split}.npz'}")
        files = list(out.iterdir()) if out.is_dir() else [out]
        sizes[split] = sum(f.stat().st_size for f in files)
    return sizes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert <split>.npz arrays for the arrays source")
    parser.add_argument("src", type=Path, help="folder with <split>.npz files")
    parser.add_argument("dst", type=Path, help="output folder (config.data.arrays.dir)")
    parser.add_argument("--format", default="webp", choices=["webp", "png", "npz"])
    parser.add_argument("--splits", default="", help="comma-separated; default: every .npz")
    args = parser.parse_args(argv)
    splits = [s for s in args.splits.split(",") if s]
    try:
        sizes = convert(args.src, args.dst, args.format, splits)
    except (DatasetNotFoundError, FileExistsError, ValueError) as e:
        errors.fail(str(e))
    except OSError as e:
        errors.fail(errors.resource_error(e) or errors.one_line(e))
    for split, size in sizes.items():
        print(f"{split}: {size / 2**20:.1f} MiB in {args.dst}")


if __name__ == "__main__":
    main()
