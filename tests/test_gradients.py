"""The depth study's gradient logs: block order, tilt against a hand computation."""

import json
import math

import pytest

from bregflax.paper import gradients


def _metrics_file(path, rows):
    path.write_text("\n".join(json.dumps(x) for x in rows) + "\n")
    return path


def test_block_norms_in_network_order_and_their_spread(tmp_path):
    rows = [
        {"step": 100, "epoch": 0.5, "train/grad_norm/stage0_block0": 1.0,
         "train/grad_norm/stage0_block10": 0.1, "train/grad_norm/stage0_block2": 0.5,
         "train/grad_norm/stage1_block0": 0.01, "train/grad_norm/stem_conv0": 9.0},
    ]  # fmt: skip
    validation = {"step": 10, "epoch": 1.0, "val/accuracy": 0.5}  # no block norms: skipped
    path = _metrics_file(tmp_path / "m.jsonl", [validation, *rows])
    steps, norms = gradients.block_norms(path)
    assert steps.tolist() == [100]
    assert norms[0].tolist() == [1.0, 0.5, 0.1, 0.01]  # block 2 before block 10; no stem
    assert gradients.tilt(norms[0]) == pytest.approx(math.log10(1.0 / 0.01))
    assert gradients.tilt(norms[0][::-1]) == pytest.approx(-2.0)
