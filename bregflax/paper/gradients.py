"""Per-block gradient norms through training, as the depth study logs them
(``train/grad_norm/stage<i>_block<j>`` in each run's ``metrics.jsonl``): read, summarized
(tilt and span, per depth and shortcut, with paired intervals) and plotted."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from bregflax import paths
from bregflax.evaluation import diagnostics, plots
from bregflax.paper import stats
from bregflax.paper.cells import MAP_NAMES, mean_text, paired_text, runs_of

_BLOCK = re.compile(r"train/grad_norm/stage(\d+)_block(\d+)$")


def block_norms(metrics_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, norms[step, block]) of every residual block's logged gradient norm, blocks in
    order from the input to the output."""
    records = plots.read_metrics_jsonl(metrics_path) if paths.path(metrics_path).exists() else []
    rows = [r for r in records if any(_BLOCK.match(k) for k in r)]
    if not rows:
        return np.zeros(0), np.zeros((0, 0))
    keys = sorted(
        (k for k in rows[0] if _BLOCK.match(k)),
        key=lambda k: tuple(int(g) for g in _BLOCK.match(k).groups()),
    )
    by_step = {r["step"]: [r.get(k, math.nan) for k in keys] for r in rows}
    steps = np.array(sorted(by_step))
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def tilt(norms: np.ndarray) -> float:
    """Decades from the first block's gradient norm to the last block's: log10(first / last);
    > 0 when gradients shrink from the input towards the output. (How many decades they span
    in all is ``diagnostics.spread``.)"""
    return float(np.log10(norms[0] / norms[-1]))


def gradient_rows(results, depths) -> list[list[str]]:
    """Per depth and measure (tilt, span) of the block gradient norms at the first log and at
    the end of training: each shortcut's mean [95% CI] over seeds, and H3 − identity."""
    measures = {
        "tilt": tilt,
        "span": lambda n: diagnostics.spread(dict(enumerate(n))),
    }
    rows = []
    for d in depths:
        for name, measure in measures.items():
            per = {}
            for shortcut in ("h3", "identity"):
                first, last = {}, {}
                for seed, r in runs_of(results, shortcut, d).items():
                    steps, norms = block_norms(paths.path(r["workdir"]) / "metrics.jsonl")
                    if steps.size:
                        first[seed], last[seed] = measure(norms[0]), measure(norms[-1])
                per[shortcut] = (first, last)
            pairs = [stats.paired(per["h3"][i], per["identity"][i]) for i in (0, 1)]
            rows.append(
                [str(d), name]
                + [mean_text(list(per[s][i].values()), 2) for i in (0, 1)
                   for s in ("h3", "identity")]
                + [paired_text(p, 2) for p in pairs]
            )  # fmt: skip
    return rows


def gradients_png(results, depths, out: Path) -> Path:
    """Per depth (columns): block gradient norm against block index at the first log, the
    middle and the end (rows), H3 and identity, mean over seeds (log scale)."""
    panels = {}
    for d in depths:
        for phase in ("first log", "middle", "end"):
            series = {}
            for shortcut in ("h3", "identity"):
                profiles = []
                for r in runs_of(results, shortcut, d).values():
                    steps, norms = block_norms(paths.path(r["workdir"]) / "metrics.jsonl")
                    if steps.size:
                        i = {"first log": 0, "middle": len(steps) // 2, "end": -1}[phase]
                        profiles.append(norms[i])
                if profiles:
                    series[MAP_NAMES[shortcut]] = np.exp(np.mean(np.log(profiles), axis=0))
            panels[(phase, f"depth {d}")] = series
    return plots.profile_grid_png(
        panels, out / "depth_gradients.png", "block (input → output)",
        "gradient norm (log)", "Per-block gradient norms through training (geometric mean "
        "over seeds)",
    )  # fmt: skip
