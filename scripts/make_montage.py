"""Writes docs/img/synthetic_montage.png: 10 synthetic faces per class, with valence/arousal.

python scripts/make_montage.py [--out docs/img/synthetic_montage.png] [--seed 0]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bregflax.data import FER2013_CLASSES  # noqa: E402
from bregflax.data.synthetic import make_faces  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/img/synthetic_montage.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=10)
    args = parser.parse_args(argv)
    faces = make_faces(3000, args.seed)
    k = args.per_class
    fig, axes = plt.subplots(len(FER2013_CLASSES), k, figsize=(1.1 * k, 1.3 * len(FER2013_CLASSES)))
    for row, name in enumerate(FER2013_CLASSES):
        picks = np.flatnonzero(faces["label"] == row)[:k]
        for col in range(k):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(picks):
                i = picks[col]
                ax.imshow(faces["image"][i, ..., 0], cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{faces['valence'][i]:+.1f},{faces['arousal'][i]:+.1f}", fontsize=6)
        first = axes[row, 0]
        first.text(-0.15, 0.5, name, transform=first.transAxes, ha="right", va="center")
    fig.suptitle("bregflax synthetic faces (valence, arousal)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
