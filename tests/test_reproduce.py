"""``bregflax reproduce`` at the tiny test scale: one command trains the paired runs of a
claim once (module fixture); the other tests read its outputs or reuse its runs."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bregflax import configs
from bregflax.configs import experiment
from bregflax.evaluation import plots, report
from bregflax.paper import reproduce

RUNS = (
    "fer2013_BReGNetTiny_h3_regular_seed0",
    "fer2013_BReGNetTiny_h3_regular_seed1",
    "fer2013_BReGNetTiny_identity_regular_seed0",
    "fer2013_BReGNetTiny_identity_regular_seed1",
)


def command(workdir, *args):
    return [sys.executable, "-m", "bregflax.paper.reproduce", f"--workdir={workdir}", *args]


@pytest.fixture(scope="module")
def claim(tmp_path_factory):
    """``--table=claims --claims=h3_vs_identity`` at the test scale: 4 runs, seeds 0 and 1,
    from outside the repository, with an override that every run must see."""
    workdir = tmp_path_factory.mktemp("repro")
    args = ["--table=claims", "--scale=test", "--claims=h3_vs_identity", "--repeats=5"]
    args += ["--set", "log_every_steps=1"]
    done = subprocess.run(
        command(workdir, *args), cwd=workdir, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return workdir, done.stdout


def results(workdir):
    return {
        name: json.loads((workdir / "test" / name / "result.json").read_text()) for name in RUNS
    }


def test_each_run_trained_once_and_saw_the_override(claim):
    workdir, stdout = claim
    assert sorted(p.parent.name for p in (workdir / "test").glob("*/result.json")) == list(RUNS)
    assert [line for line in stdout.splitlines() if line.startswith("  train:")] == [
        f"  train: {name}" for name in sorted(RUNS, key=lambda n: ("identity" in n, n))
    ]
    for name in RUNS:
        records = plots.read_metrics_jsonl(workdir / "test" / name / "metrics.jsonl")
        steps = [r["step"] for r in records if "train/loss" in r]
        assert steps == list(range(1, 9))  # log_every_steps=1 reached the run (default 2)
    assert any((workdir / "jax_cache").iterdir())  # the seeds of one arm share programs


def test_result_agrees_with_the_runs_own_files(claim):
    workdir, _ = claim
    for name, result in results(workdir).items():
        run = workdir / "test" / name
        with open(run / "eval" / "val_predictions.csv") as f:
            rows = list(csv.DictReader(f))
        accuracy = np.mean([r["label"] == r["pred"] for r in rows])
        assert result["scores"]["categorical"]["accuracy"] == pytest.approx(accuracy)
        records = plots.read_metrics_jsonl(run / "metrics.jsonl")
        val = {r["step"]: r["val/accuracy"] for r in records if "val/accuracy" in r}
        assert val[result["step"]] == max(val.values())  # evaluated at the best checkpoint
        rates = [r["train/images_per_sec"] for r in records if "train/images_per_sec" in r]
        assert result["seconds_per_epoch"] == pytest.approx(128 / np.median(rates))
        assert result["experiment"]["seed"] == int(name[-1]) == result["config"]["seed"]


def test_claims_table_holds_the_paired_interval(claim):
    workdir, _ = claim
    res = results(workdir)
    acc = {n: 100 * r["scores"]["categorical"]["accuracy"] for n, r in res.items()}
    diffs = np.array([acc[RUNS[s]] - acc[RUNS[2 + s]] for s in (0, 1)])
    half = scipy_stats.t.ppf(0.975, 1) * np.std(diffs, ddof=1) / np.sqrt(2)
    parsed = report.read_markdown_tables((workdir / "claims.md").read_text())[""]
    (row,) = [r for r in parsed if r["Claim"] == "h3_vs_identity" and r["Metric"] == "accuracy"]
    m = diffs.mean()
    assert row["n"] == "2"
    assert row["A − B [95% CI]"] == f"{m:+.2f} [{m - half:+.2f}, {m + half:+.2f}]"
    want = "held" if m - half > 0 else "not held" if m + half < 0 else "inconclusive"
    assert row["Verdict"] == want
    assert (row["Paper A"], row["Paper B"]) == ("68.74", "66.48")

    # Convergence speed: epochs to 95% of each run's final validation accuracy (interpolated
    # between validations), paired; fewer epochs is held.
    def epochs_to_95(name):
        records = plots.read_metrics_jsonl(workdir / "test" / name / "metrics.jsonl")
        curve = [(r["epoch"], r["val/accuracy"]) for r in records if "val/accuracy" in r]
        target, (e0, a0) = 0.95 * curve[-1][1], (0.0, None)
        for e, a in curve:
            if a >= target:
                return e if a0 is None or a == a0 else e0 + (target - a0) / (a - a0) * (e - e0)
            e0, a0 = e, a

    diffs = np.array([epochs_to_95(RUNS[s]) - epochs_to_95(RUNS[2 + s]) for s in (0, 1)])
    half, m = scipy_stats.t.ppf(0.975, 1) * np.std(diffs, ddof=1) / np.sqrt(2), diffs.mean()
    (row,) = [r for r in parsed if r.get("Metric") == "epochs_to_95%"]
    assert row["A − B [95% CI]"] == f"{m:+.2f} [{m - half:+.2f}, {m + half:+.2f}]"
    want = "held" if m + half < 0 else "not held" if m - half > 0 else "inconclusive"
    assert row["Verdict"] == want
    others = [r["Verdict"] for r in parsed if "Claim" in r and r["Claim"] != "h3_vs_identity"]
    assert others == []  # --claims ran and reported only the claim asked for
    text = (workdir / "claims.md").read_text()
    assert "![h3_vs_identity](claims_h3_vs_identity.png)" in text
    assert (workdir / "claims_h3_vs_identity.png").read_bytes()[:4] == b"\x89PNG"


def test_report_only_trains_nothing_and_names_the_missing_runs(claim, tmp_path):
    workdir, _ = claim
    for name in RUNS[:2]:  # H3's two seeds: the depth claim's A arm; its deep B arm never ran
        shutil.copytree(workdir / "test" / name, tmp_path / "test" / name)
    logs = []
    out = reproduce.reproduce("claims", "test", tmp_path, claims=["depth"], repeats=5,
                              log=logs.append, train_missing=False)  # fmt: skip
    assert not any(line.startswith("  train:") for line in logs)
    deep = [f"fer2013_BReGNetTiny_d15_identity_regular_seed{s}" for s in (0, 1)]
    assert [line for line in logs if "not finished" in line] == [
        f"  not finished: {name}" for name in deep
    ]
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == list(RUNS[:2])
    text = out.read_text()
    assert (
        f"**2 of 4 runs not finished**, left out of every figure below: {', '.join(deep)}" in text
    )
    rows = report.read_markdown_tables(text)[""]
    assert {r["Verdict"] for r in rows if r.get("Claim") == "depth"} == {"not run"}
    assert "Curves per arm" not in text and not (tmp_path / "claims_depth.png").exists()  # no pair
    assert reproduce.parse_args(["--table=2", "--workdir=w", "--report_only"]).report_only


def test_tables_reuse_finished_runs(claim):
    workdir, _ = claim
    stamps = {p: p.stat().st_mtime for p in (workdir / "test").glob("*/result.json")}
    logs = []
    out = reproduce.reproduce("2", "test", workdir, only="fer2013,regular", log=logs.append)
    for table, only in (("timing", "fer2013"), ("1", "fer2013,h3,regular"), ("4", "fer2013")):
        reproduce.reproduce(table, "test", workdir, only=only, log=logs.append)
    assert not any(line.startswith("  train:") for line in logs)
    assert sum("skip (finished)" in line for line in logs) == 2 + 2 + 1 + 1
    assert {p: p.stat().st_mtime for p in stamps} == stamps
    acc = 100 * results(workdir)[RUNS[0]]["scores"]["categorical"]["accuracy"]
    parsed = report.read_markdown_tables(out.read_text())[""]
    (row,) = [r for r in parsed if r["Network, loss"] == "BReG-Net (H3), regular"]
    assert row["FER2013 ours"] == f"{acc:.2f} (n=1)" and row["FER2013 paper"] == "68.74"
    assert row["FER2013 Δ"] == f"{acc - 68.74:+.2f}"
    timing = report.read_markdown_tables((workdir / "timing.md").read_text())[""]
    (bregnet,) = [r for r in timing if r["Run"] == "FER2013, BReG-Net (H3)"]
    assert bregnet["s / epoch ours"].endswith("(n=1)") and bregnet["s / epoch paper"] == "–"


def test_a_changed_config_is_not_silently_reused(claim):
    workdir, _ = claim
    with pytest.raises(reproduce.RunConflictError, match="different config"):
        reproduce.reproduce("2", "test", workdir, only="fer2013,bregnet,regular",
                            overrides={"num_epochs": "3"}, log=lambda _: None)  # fmt: skip


def test_unknown_override_fails_before_training(tmp_path):
    with pytest.raises(configs.ConfigError, match="did you mean num_epochs"):
        reproduce.reproduce("2", "test", tmp_path, overrides={"num_epoch": "3"}, log=print)
    assert not (tmp_path / "test").exists()


def test_missing_dataset_is_skipped_with_a_message(tmp_path):
    logs = []
    out = reproduce.reproduce(
        "2", "cpu", tmp_path, only="fer2013,bregnet,regular",
        overrides={"data.data_dir": str(tmp_path / "empty")}, log=logs.append,
    )  # fmt: skip
    assert "skip fer2013: not prepared" in "\n".join(logs)
    assert "**fer2013 skipped**" in out.read_text()
    assert not list(tmp_path.glob("cpu/*/checkpoints"))


def test_command_line_errors(tmp_path, capsys):
    args = reproduce.parse_args(["--table=claims", "--workdir=w", "--set", "a=1", "--set", "b.c=x"])
    assert args.scale == "cpu" and reproduce.parse_overrides(args.set) == {"a": "1", "b.c": "x"}
    with pytest.raises(configs.ConfigError, match="KEY=VALUE"):
        reproduce.parse_overrides(["progress_bar"])
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--table=8", "--workdir=w"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--table=claims", f"--workdir={tmp_path}", "--claims=nope"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: unknown claim") and err.count("\n") == 1


# --------------------------------------------------------------------------- the grid


def test_the_depth_family_has_one_source():
    from bregflax.nn import models

    assert experiment.FIG5_DEPTHS["paper"] == models.DEPTHS
    for scale in ("cpu", "test"):
        assert set(experiment.FIG5_DEPTHS[scale]) <= set(models.DEPTHS)
        base = configs.get("fig5", f"fer2013,{scale},depth={experiment.FIG5_DEPTHS[scale][-1]}")
        kwargs = models.MODELS.get(base.model.name).keywords
        assert tuple(base.model.widths) == tuple(kwargs["widths"])  # the scale's own widths


def test_shared_runs_have_one_name():
    def names(table, scale):
        return {experiment.run_name(configs.get(n, a)) for n, a in experiment.runs(table, scale)}

    # the depth sweep's base depth is Table II's run; the claims reuse Tables I and II's
    assert "fer2013_BReGNetTiny_h3_regular_seed0" in names("fig5", "test") & names("2", "test")
    claims = {experiment.run_name(configs.get(n, a)) for n, a in experiment.runs("claims", "cpu")}
    assert len(claims) == 5 + 5 + 3 + 3 + 3 + 3 + 3
    assert names("1", "cpu") & claims >= {"fer2013_BReGNetSmall_h1_regular_seed0"}


@pytest.mark.parametrize("scale", ["cpu", "test"])
def test_the_depth_claim_doubles_the_blocks_at_the_same_widths(scale):
    from bregflax.nn import models

    shallow, deep = (configs.get(experiment.CLAIM_CONFIG, f"{a},{scale}")
                     for a in experiment.CLAIMS[-1].arms(scale))  # fmt: skip
    s = models.MODELS.get(shallow.model.name).keywords
    assert tuple(deep.model.stage_sizes) == tuple(2 * n for n in s["stage_sizes"])
    assert tuple(deep.model.widths) == tuple(s["widths"])
    assert (deep.model.shortcut, shallow.model.shortcut) == ("identity", "h3")
    assert deep.optim.to_dict() == shallow.optim.to_dict()
    assert deep.num_epochs == shallow.num_epochs
    assert experiment.layers(deep) > 1.7 * experiment.layers(shallow)


# --------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_every_claim_and_fig6_at_the_test_scale(tmp_path):
    env = {**os.environ}
    for table in ("claims", "fig6"):
        args = [f"--table={table}", "--scale=test", "--repeats=5"]
        done = subprocess.run(command(tmp_path, *args), capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parsed = report.read_markdown_tables((tmp_path / "claims.md").read_text())[""]
    rows = [r for r in parsed if "Claim" in r]
    assert {r["Claim"] for r in rows} == {c.name for c in experiment.CLAIMS}
    assert all(r["n"] == "2" and r["Verdict"] in ("held", "not held", "inconclusive") for r in rows)
    assert (tmp_path / "fig6.png").read_bytes()[:4] == b"\x89PNG"
    fig6 = report.read_markdown_tables((tmp_path / "fig6.md").read_text())[""]
    assert {r["Run"] for r in fig6} == {
        "synthetic faces, ResNet (identity)",
        "synthetic faces, BReG-Net (H3)",
    }
