"""The depth study's report: intervals against scipy, the convergence and gradient summaries
against hand computations, and the whole table at the test scale (slow)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bregflax.configs import experiment, table1
from bregflax.evaluation import report
from bregflax.paper import cells, reproduce, stats
from bregflax.paper import depth as depth_study


def _result(shortcut, depth, seed, acc, f1=0.5, loss="regular", workdir="", **extra):
    return {
        "experiment": {"shortcut": shortcut, "depth": depth, "seed": seed, "loss": loss},
        "scores": {"categorical": {"accuracy": acc}, "skew_normalized": {"f1": [f1, 0.01]}},
        "per_class": [{"class": "Disgust", "recall": acc / 2}, {"class": "macro avg"}],
        "params": 1000,
        "seconds_per_epoch": 10.0 + seed,
        "workdir": str(workdir),
        **extra,
    }


def test_mean_interval_is_scipys_t_interval():
    vals = [60.1, 60.9, 59.7, 61.2]
    mean, low, high = stats.mean_interval(vals)
    ref = scipy_stats.t.interval(
        0.95, len(vals) - 1, loc=np.mean(vals), scale=scipy_stats.sem(vals)
    )
    assert mean == pytest.approx(np.mean(vals))
    assert (low, high) == pytest.approx(ref, rel=1e-9)
    assert stats.mean_interval([1.0])[1:] == (None, None)


def test_gap_growth_pairs_the_gaps_seed_by_seed():
    accs = {  # (shortcut, depth, seed) -> accuracy
        ("h3", 15, 0): 0.60, ("identity", 15, 0): 0.59,
        ("h3", 15, 1): 0.61, ("identity", 15, 1): 0.60,
        ("h3", 15, 2): 0.62, ("identity", 15, 2): 0.615,
        ("h3", 111, 0): 0.58, ("identity", 111, 0): 0.55,
        ("h3", 111, 1): 0.59, ("identity", 111, 1): 0.57,
        ("h3", 111, 2): 0.60, ("identity", 111, 2): 0.56,
    }  # fmt: skip
    results = [_result(s, d, seed, a) for (s, d, seed), a in accs.items()]
    p = depth_study.gap_growth(results, (15, 111))
    gap = {
        d: np.array([accs[("h3", d, s)] - accs[("identity", d, s)] for s in range(3)]) * 100
        for d in (15, 111)
    }
    growth = gap[111] - gap[15]
    ref = scipy_stats.t.interval(0.95, 2, loc=growth.mean(), scale=scipy_stats.sem(growth))
    assert p.n == 3 and p.diff == pytest.approx(growth.mean())
    assert (p.low, p.high) == pytest.approx(ref)
    assert p.verdict == ("held" if ref[0] > 0 else "inconclusive")


def test_a_diverged_run_counts_as_diverged_and_has_no_accuracy():
    results = [
        _result("cubic", 111, 0, 0.0, diverged={"step": 3, "message": "nan"}),
        _result("cubic", 111, 1, 0.0, diverged={"step": 5, "message": "nan"}),
        _result("h3", 111, 0, 0.6),
        _result("h3", 111, 1, 0.61),
        _result("cubic", 15, 0, 0.40),
        _result("cubic", 15, 1, 0.41),
        _result("h3", 15, 0, 0.60),
        _result("h3", 15, 1, 0.62),
    ]
    assert cells.study_value(results[0], "accuracy") is None
    rows = depth_study.unbounded_rows(results, (15, 111))
    assert rows[1][1:3] == ["2 of 2", "step 3, step 5"]
    assert rows[0][1] == "0 of 2"
    verdict = depth_study.unbounded_verdict(results, (15, 111))
    assert "depth 111: diverged in every run (2 of 2)" in verdict
    assert "depth 15: trains, but worse than H3" in verdict  # +19.5 and +20.5 points


def test_weighted_rows_pair_each_arm_with_the_others_seed_by_seed():
    acc = {  # loss -> accuracy of seeds 0, 1, 2
        "balanced": [0.48, 0.47, 0.50],
        "weighted": [0.47, 0.49, 0.52],
        "regular": [0.55, 0.54, 0.56],
    }
    results = [
        _result("h3", 15, s, a, loss=loss) for loss, v in acc.items() for s, a in enumerate(v)
    ]
    results.append(_result("h3", 39, 0, 0.9, loss="weighted"))  # another depth: not counted
    header = depth_study.weighted_header()
    rows = {
        r[0]: dict(zip(header, r, strict=True))
        for r in depth_study.weighted_rows(results, (15, 39), ["Disgust"])
    }
    assert set(rows) == {"accuracy", "norm/f1", "recall/Disgust"}
    for (a, b), column in zip(
        depth_study.WEIGHTED_PAIRS,
        ["rescaled − regular", "f_min / f_i − regular", "rescaled − f_min / f_i"],
        strict=True,
    ):
        diff = (np.array(acc[a]) - np.array(acc[b])) * 100
        low, high = scipy_stats.t.interval(0.95, 2, loc=diff.mean(), scale=scipy_stats.sem(diff))
        assert rows["accuracy"][column] == f"{diff.mean():+.2f} [{low:+.2f}, {high:+.2f}] (n=3)"
    disgust = (np.array(acc["balanced"]) - np.array(acc["weighted"])) / 2  # recall = acc / 2
    assert rows["recall/Disgust"]["rescaled − f_min / f_i"].startswith(f"{disgust.mean():+.3f} [")


def test_tables_iii_and_iv_show_the_original_metric_beside_the_skew_normalized_one():
    f1 = {"weighted": [0.40, 0.44], "regular": [0.45, 0.47]}
    norm = {"weighted": [0.42, 0.46], "regular": [0.41, 0.43]}
    results = []
    for loss in f1:
        for s in range(2):
            r = _result("h3", 15, s, 0.5, f1=norm[loss][s], loss=loss)
            r["scores"]["categorical"]["f1"] = f1[loss][s]
            results.append(r)
    text = depth_study.paper_tables(results, (15, 111))
    tables = report.read_markdown_tables(text.replace("### ", "## "))  # one section each
    by_table = {name: {row["Metric"]: row for row in rows} for name, rows in tables.items()}
    iii, iv = by_table["Table III: weighted loss"], by_table["Table IV: regular loss"]
    for rows, loss, paper_orig, paper_norm in (
        (iii, "weighted", 0.67, 0.67),
        (iv, "regular", 0.67, 0.68),
    ):
        row = rows["F1-score"]
        assert row["Orig ours"] == f"{np.mean(f1[loss]):.3f} ± {np.std(f1[loss], ddof=1):.3f} (n=2)"
        assert (
            row["Norm ours"]
            == f"{np.mean(norm[loss]):.3f} ± {np.std(norm[loss], ddof=1):.3f} (n=2)"
        )
        assert (float(row["Orig paper"]), float(row["Norm paper"])) == (paper_orig, paper_norm)
        assert float(row["Orig Δ"]) == pytest.approx(np.mean(f1[loss]) - paper_orig, abs=5e-4)
    assert float(iii["Accuracy (paper: Table II)"]["Orig paper"]) == 0.6949  # Table II, weighted


def test_every_claim_in_the_claims_form_against_scipy():
    acc = {  # (shortcut, depth) -> accuracy of seeds 0, 1, 2
        ("h3", 15): [0.55, 0.54, 0.56], ("identity", 15): [0.54, 0.55, 0.55],
        ("h3", 111): [0.25, 0.26, 0.25], ("identity", 111): [0.43, 0.44, 0.40],
    }  # fmt: skip
    results = [_result(m, d, s, a) for (m, d), v in acc.items() for s, a in enumerate(v)]
    for r in results:  # H3 at depth 111 predicts one class: it did not learn
        stuck = (r["experiment"]["shortcut"], r["experiment"]["depth"]) == ("h3", 111)
        r["scores"]["categorical"]["kappa"] = 0.0 if stuck else 0.3
    results += [_result("cubic", 15, s, 0.0, diverged={"step": 3}) for s in (0, 1)]
    rows = {(r[0], r[1]): dict(zip(cells.PAIRED_HEADER, r, strict=True))
            for r in depth_study.verdict_rows(results, (15, 111))}  # fmt: skip
    row = rows[("H3 vs identity, depth 111", "accuracy")]
    a, b = np.array(acc[("h3", 111)]) * 100, np.array(acc[("identity", 111)]) * 100
    low, high = scipy_stats.t.interval(0.95, 2, loc=(a - b).mean(), scale=scipy_stats.sem(a - b))
    assert row["n"] == "3" and row["B mean ± sd"] == f"{b.mean():.2f} ± {b.std(ddof=1):.2f}"
    assert row["A − B [95% CI]"] == f"{(a - b).mean():+.2f} [{low:+.2f}, {high:+.2f}]"
    assert row["Verdict"] == "not held"
    gaps = (a - b) - (np.array(acc[("h3", 15)]) - np.array(acc[("identity", 15)])) * 100
    assert rows[("gap at depth 111 vs at 15", "accuracy")]["A − B [95% CI]"].startswith(
        f"{gaps.mean():+.2f} ["
    )
    cubic = rows[("H3 vs x + x³/3, depth 15", "accuracy")]
    h3 = np.array(acc[("h3", 15)][:2]) * 100  # the seeds the unbounded map ran
    assert cubic["A mean ± sd"] == f"{h3.mean():.2f} ± {h3.std(ddof=1):.2f}"
    assert (cubic["B mean ± sd"], cubic["Verdict"]) == ("diverged in 2 of 2", "held")
    assert rows[("H3 vs x + x³/3, depth 111", "accuracy")]["Verdict"] == "not run"
    assert rows[("H3 vs identity, depth 111", "epochs_to_95%")]["Verdict"] == "H3 did not learn"
    assert rows[("H3 vs identity, depth 15", "epochs_to_95%")]["Verdict"] == "not run"


def _metrics_file(path, val_acc, grad_rows=()):
    lines = [
        {"step": 10 * (i + 1), "epoch": float(i + 1), "val/accuracy": a}
        for i, a in enumerate(val_acc)
    ]
    lines += list(grad_rows)
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_epochs_to_fraction_interpolates_between_validations(tmp_path):
    (tmp_path / "run").mkdir()
    path = _metrics_file(tmp_path / "run" / "metrics.jsonl", [0.30, 0.50, 0.58, 0.60])
    # 95% of 0.60 = 0.57, reached between epoch 2 (0.50) and 3 (0.58): 2 + 0.07 / 0.08
    assert cells.epochs_to_fraction(path) == pytest.approx(2 + 0.07 / 0.08)
    run = {"workdir": str(tmp_path / "run"), "scores": {"categorical": {"kappa": 0.3}}}
    assert cells.value(run, cells.CONVERGENCE) == pytest.approx(2 + 0.07 / 0.08)  # as read
    assert depth_study._learned(run)
    run["scores"]["categorical"]["kappa"] = 0.0  # one class predicted: it learned nothing
    assert not depth_study._learned(run)
    path = _metrics_file(tmp_path / "n.jsonl", [0.60, 0.50, 0.59])
    assert cells.epochs_to_fraction(path) == pytest.approx(1.0)  # first epoch already
    assert cells.epochs_to_fraction(tmp_path / "absent.jsonl") is None


def test_the_study_has_pairs_of_every_arm_seed_by_seed():
    names = reproduce.run_names_of("depth", "cpu")
    assert len(names) == len(set(names))
    depths, width, seeds, cubic_seeds = experiment.DEPTH_STUDY["cpu"]
    assert min(depths) <= 15 and max(depths) >= 111 and 39 in depths
    assert all((d - 3) % 6 == 0 for d in depths)
    for d in depths:
        for shortcut in ("h3", "identity"):
            assert sum(f"_d{d}_w{width}_{shortcut}_regular_" in n for n in names) == seeds
    assert sum("_cubic_" in n for n in names) == 2 * cubic_seeds
    # seed by seed: every seed-0 run comes before any seed-1 run
    seed_of = [int(n.rsplit("seed", 1)[1]) for n in names]
    assert seed_of == sorted(seed_of)


def test_study_arms_share_the_network_but_for_the_shortcut():
    h3 = table1.get_config("fer2013,bregnet,h3,depth=39,width=8,cpu")
    ident = table1.get_config("fer2013,resnet,identity,depth=39,width=8,cpu")
    cubic = table1.get_config("fer2013,cubic,depth=39,width=8,cpu")
    for c in (h3, ident, cubic):
        assert tuple(c.model.stage_sizes) == (6, 6, 6)
        assert tuple(c.model.widths) == (8, 16, 32)
        assert c.log_grad_norms
    assert (h3.model.shortcut, ident.model.shortcut, cubic.model.shortcut) == (
        "h3",
        "identity",
        "cubic",
    )
    balanced = table1.get_config("fer2013,bregnet,balanced,depth=15,width=8,cpu")
    assert balanced.loss.weighted and balanced.loss.weight_scale == "mean1"


def test_a_run_that_diverges_is_saved_as_a_finding(tmp_path):
    config = table1.get_config("fer2013,cubic,depth=9,width=8,test")
    config.optim.learning_rate = 1e30
    result = reproduce.run_experiment(config, tmp_path / "run", repeats=2, log=lambda *_: None)
    assert result["diverged"]["step"] >= 1
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["diverged"] == result["diverged"] and saved["scores"] == {}
    assert saved["params"] > 0
    again = reproduce.run_experiment(config, tmp_path / "run", repeats=2, log=lambda *_: None)
    assert again["diverged"] == result["diverged"]  # finished: not trained again


@pytest.mark.slow
def test_the_depth_table_at_the_test_scale(tmp_path):
    args = ["--table=depth", "--scale=test", "--repeats=3", f"--workdir={tmp_path}"]
    done = subprocess.run(
        [sys.executable, "-m", "bregflax.paper.reproduce", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = (tmp_path / "depth.md").read_text()
    tables = report.read_markdown_tables(text)
    rows = [r for t in tables.values() for r in t if r.get("Metric") == "accuracy" and "Depth" in r]
    assert {r["Depth"] for r in rows} >= {"9", "15"}
    for png in ("depth_sweep.png", "depth_gradients.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert "Does the gap grow with depth?" in text and "x + x³/3" in text
    claims = {(r["Claim"], r["Metric"]) for r in tables["Every claim of the study"]}
    assert ("f_min / f_i vs regular loss, depth 9", "recall/Disgust") in claims
    assert "### Table III: weighted loss" in text and "### Table IV: regular loss" in text


def test_a_field_added_later_does_not_unfinish_a_run():
    saved = {"seed": 0, "loss": {"weighted": False}}
    assert reproduce.differences(saved, {"seed": 0, "loss": {"weighted": False, "new": 1}}) == []
    assert reproduce.differences(saved, {"seed": 1, "loss": {"weighted": False}}) == [
        "seed: 0 -> 1"
    ]
    assert reproduce.differences(saved, {"seed": 0, "loss": {}}) == [
        "loss.weighted: False -> (absent)"
    ]
