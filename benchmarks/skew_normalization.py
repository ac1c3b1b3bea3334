"""Prints the time of skew normalization (balanced under-sampling, repeated) on a test set
with FER2013 PublicTest's class counts: 3,589 samples, 7 classes.

python benchmarks/skew_normalization.py [--repeats 200] [--trials 20] [--probs]
"""

import argparse
import time

import numpy as np

from bregflax.evaluation import metrics

PUBLIC_TEST_COUNTS = (467, 56, 496, 895, 653, 415, 607)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--probs", action="store_true", help="also AUC-ROC and AUC-PR")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(7), PUBLIC_TEST_COUNTS))
    preds = np.where(rng.random(labels.size) < 0.7, labels, rng.integers(0, 7, labels.size))
    probs = rng.dirichlet(np.ones(7), labels.size) if args.probs else None
    metrics.skew_normalized(labels, preds, 7, probs=probs, repeats=args.repeats)  # warm-up
    times = []
    for _ in range(args.trials):
        start = time.perf_counter()
        result = metrics.skew_normalized(labels, preds, 7, probs=probs, repeats=args.repeats)
        times.append(time.perf_counter() - start)
    what = "with AUC-ROC/AUC-PR" if args.probs else "confusion-matrix metrics"
    print(f"skew normalization, {args.repeats} repeats, {labels.size} samples, 7 classes, {what}")
    ms = 1e3 * np.array(times)
    print(f"  min {ms.min():.1f} ms, median {np.median(ms):.1f} ms over {args.trials} trials")
    for name, (mean, std) in result.items():
        print(f"  {name:9s} {mean:.4f} ± {std:.4f}")


if __name__ == "__main__":
    main()
