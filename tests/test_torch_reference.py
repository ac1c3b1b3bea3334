"""The PyTorch twin in benchmarks/ computes the flax model's function, and the harness runs.

PyTorch is an optional extra (``pip install -e ".[bench]"``); without it these tests skip.
"""

import jax
import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is the optional [bench] extra")

from benchmarks import throughput  # noqa: E402
from benchmarks import torch_reference as tr  # noqa: E402
from bregflax import models  # noqa: E402


def _variables(model, images, seed=0):
    variables = model.init(jax.random.key(seed), images, train=False)
    # Non-trivial running statistics, so that eval mode exercises them.
    rng = np.random.default_rng(seed + 1)
    stats = jax.tree.map(
        lambda a: np.asarray(a) + rng.uniform(0.05, 0.3, a.shape).astype(np.float32),
        variables["batch_stats"],
    )
    return {"params": variables["params"], "batch_stats": stats}


@pytest.mark.parametrize("name", ["BReGNetTiny", "BReGNetCPU"])
@pytest.mark.parametrize("shortcut", ["h3", "identity"])
def test_torch_twin_matches_flax(name, shortcut):
    model = models.MODELS.get(name)(shortcut=shortcut)
    images = np.random.default_rng(0).normal(size=(4, 48, 48, 1)).astype(np.float32)
    result = tr.check_equivalence(model, _variables(model, images), images)
    assert result["params_ok"], (result["flax_params"], result["torch_params"])
    assert result["eval_shape"] == ((4, 7), (4, 7))
    assert result["eval_ok"], result["eval_max_abs_diff"]
    assert result["train_ok"], result["train_max_abs_diff"]


@pytest.mark.parametrize("shortcut", ["h1", "h2"])
def test_other_shortcuts_and_strided_pooled_stem(shortcut):
    model = models.BReGNetTiny(shortcut=shortcut, stem_stride=2, stem_pool=True, stem_convs=2)
    images = np.random.default_rng(2).normal(size=(3, 48, 48, 1)).astype(np.float32)
    assert tr.check_equivalence(model, _variables(model, images), images)["ok"]


def test_harness_runs_tiny(tmp_path):
    out = tmp_path / "bench.json"
    results = throughput.main(
        [
            "--models=BReGNetTiny",
            "--dtypes=float32",
            "--batches=8",
            "--infer-batch=8",
            "--repeats=1",
            "--compare-torch",
            "--pipeline-examples=256",
            f"--json={out}",
        ]
    )
    assert out.exists()
    modes = {(r["mode"], r["batch"]) for r in results["rows"]}
    assert modes == {("infer", 8), ("train", 8)}
    for row in results["rows"]:
        assert row["images_per_s"] > 0
        assert row["jax_over_torch"] > 0
        assert {"torch_nchw", "torch_channels_last"} <= row.keys()
    assert results["equivalence"]["BReGNetTiny"]["ok"]
    assert results["pipeline"]["images_per_s"] > 0
    assert results["peak_rss_mib"] > 0
