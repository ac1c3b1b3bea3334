"""The PyTorch twin in benchmarks/ computes the flax model's function, and the throughput
harness that compares the two times what it says.

PyTorch is an optional extra (``pip install -e ".[bench]"``); without it the tests that need
it skip.
"""

import argparse

import jax
import numpy as np
import pytest

from benchmarks import throughput
from bregflax.nn import models


@pytest.fixture
def tr():
    """benchmarks/torch_reference.py, or a skip without PyTorch."""
    pytest.importorskip("torch", reason="PyTorch is the optional [bench] extra")
    from benchmarks import torch_reference

    return torch_reference


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
def test_torch_twin_matches_flax(tr, name, shortcut):
    model = models.MODELS.get(name)(shortcut=shortcut)
    images = np.random.default_rng(0).normal(size=(4, 48, 48, 1)).astype(np.float32)
    result = tr.check_equivalence(model, _variables(model, images), images)
    assert result["params_ok"], (result["flax_params"], result["torch_params"])
    assert result["eval_shape"] == ((4, 7), (4, 7))
    assert result["eval_ok"], result["eval_max_abs_diff"]
    assert result["train_ok"], result["train_max_abs_diff"]


@pytest.mark.parametrize("shortcut", ["h1", "h2"])
def test_other_shortcuts_and_strided_pooled_stem(tr, shortcut):
    model = models.BReGNetTiny(shortcut=shortcut, stem_stride=2, stem_pool=True, stem_convs=2)
    images = np.random.default_rng(2).normal(size=(3, 48, 48, 1)).astype(np.float32)
    assert tr.check_equivalence(model, _variables(model, images), images)["ok"]


def test_time_interleaved_times_each_runner_after_an_untimed_step_of_its_own():
    calls = []
    runners = [throughput.Runner(n, lambda n=n: calls.append(n), batch=4) for n in "ab"]
    results = throughput.time_interleaved(runners, repeats=2)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 2  # warm-ups, then (untimed, timed)
    assert [len(r.times) for r in runners] == [2, 2]
    assert set(results) == {"a", "b"} and results["a"]["images_per_s"] > 0
    alone = throughput.Runner("c", lambda: calls.append("c"), batch=4)
    calls.clear()
    throughput.time_interleaved([alone], repeats=3)
    assert calls == ["c"] * 4  # one runner: no untimed steps


def test_rows_compare_jax_with_the_faster_torch_layout():
    def timing(ips):
        return {"images_per_s": ips, "median_step_s": 1 / ips, "compile_s": 2.0}

    timings = {
        "jax:phased": timing(30.0),
        "torch_nchw": timing(10.0),
        "torch_channels_last": timing(20.0),
    }
    row = throughput._row("BReGNetTiny", "float32", "train", 8, timings, "jax:phased")
    assert (row["conv"], row["torch_best_layout"]) == ("phased", "channels_last")
    assert row["jax_over_torch"] == pytest.approx(1.5)
    line = throughput.format_table([row]).splitlines()[-1]
    assert "| phased | 30.0 | 2.00 | 10.0 | 20.0 | 1.50 |" in line


@pytest.mark.parametrize(
    "argv", [["--models=VGG16"], ["--dtypes=float64"], ["--convs=fast"], ["--repeats=0"]]
)
def test_harness_rejects_unknown_choices(argv, capsys):
    with pytest.raises(SystemExit):
        throughput.parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_quick_means_one_batch_of_64_in_float32():
    args = throughput.parse_args(["--quick", "--models=BReGNetTiny"])
    assert isinstance(args, argparse.Namespace)
    assert (args.batches, args.dtypes, args.repeats) == ([64], ["float32"], 3)


@pytest.mark.slow
@pytest.mark.parametrize("compare_torch", [False, True], ids=["jax", "torch"])
def test_harness_runs_tiny(tmp_path, compare_torch):
    if compare_torch:
        pytest.importorskip("torch", reason="PyTorch is the optional [bench] extra")
    out = tmp_path / "bench.json"
    argv = ["--models=BReGNetTiny", "--dtypes=float32", "--batches=8", "--infer-batch=8"]
    argv += ["--repeats=1", "--pipeline-examples=256", f"--json={out}"]
    results = throughput.main(argv + ["--compare-torch"] * compare_torch)
    assert out.exists()
    modes = {(r["mode"], r["batch"]) for r in results["rows"]}
    assert modes == {("infer", 8), ("train", 8)}
    for row in results["rows"]:
        assert row["images_per_s"] > 0
        if compare_torch:
            assert row["jax_over_torch"] > 0
            assert {"torch_nchw", "torch_channels_last"} <= row.keys()
    if compare_torch:
        assert results["equivalence"]["BReGNetTiny"]["ok"]
    assert results["pipeline"]["images_per_s"] > 0
    assert results["peak_rss_mib"] > 0
