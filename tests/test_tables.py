"""bregflax.paper.tables on results made up here: ours, the paper's figure and the difference in
the right cells, claims with intervals checked against scipy, Fig. 6 from metric logs."""

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bregflax import configs
from bregflax.configs import experiment
from bregflax.evaluation import plots, report
from bregflax.paper import claims, tables
from bregflax.paper import published as paper


def result(arg, *, seed=0, scale="cpu", acc=None, norm_f1=None, dim=None, spe=100.0, workdir=""):
    """A ``result.json`` as ``reproduce.run_experiment`` returns it, with chosen scores."""
    name = (
        "table5"
        if any(d in arg for d in ("affectnet_va", "aff_wild", "synthetic_va"))
        else "table1"
    )
    config = configs.get(name, f"{arg},{scale},seed={seed}")
    scores = {}
    if acc is not None:
        scores["categorical"] = {"accuracy": acc}
        scores["skew_normalized"] = {"f1": [norm_f1 if norm_f1 is not None else acc, 0.01]}
    if dim is not None:
        scores["dimensional"] = dim
    return {
        "config": config.to_dict(),
        "experiment": config.experiment.to_dict(),
        "model": config.model.name,
        "params": 1234,
        "layers": experiment.layers(config),
        "split": "val",
        "repeats": 5,
        "seconds_per_epoch": spe,
        "scores": scores,
        "per_class": [],
        "hardware": "a test",
        "workdir": str(workdir),
    }


def rows(table, results, tmp_path, scale="cpu", section=""):
    return report.read_markdown_tables(tables.render(table, results, tmp_path, scale))[section]


def row(parsed, label):
    (found,) = [r for r in parsed if next(iter(r.values())) == label]
    return found


def test_table_i_ours_beside_the_paper(tmp_path):
    runs = [result("fer2013,h3,weighted", seed=s, acc=a) for s, a in ((0, 0.70), (1, 0.72))]
    runs.append(result("fer2013,h1,regular", acc=0.60))
    parsed = rows("1", runs, tmp_path)
    h3w = row(parsed, "H3, weighted")
    assert h3w["FER2013 ours"] == f"71.00 ± {np.std([70, 72], ddof=1):.2f} (n=2)"
    assert h3w["FER2013 paper"] == "69.49" and h3w["FER2013 Δ"] == "+1.51"
    assert row(parsed, "H1, regular")["FER2013 Δ"] == f"{60 - 65.80:+.2f}"
    assert row(parsed, "H3, regular")["FER2013 ours"] == "–"
    assert row(parsed, "H3, weighted")["AffectNet ours"] == "–"


def test_table_ii_keeps_arms_and_depths_apart(tmp_path):
    runs = [
        result("fer2013,resnet,regular", acc=0.50),
        result("fer2013,resnet,regular,depth=27", acc=0.90),  # the depth claim's deep arm
        result("fer2013,bregnet,regular", acc=0.55),
        result("fer2013,resnet,weighted", acc=0.40),
    ]
    parsed = rows("2", runs, tmp_path)
    assert row(parsed, "ResNet (identity), regular")["FER2013 ours"] == "50.00 (n=1)"
    assert row(parsed, "ResNet (identity), regular")["FER2013 Δ"] == f"{50 - 66.48:+.2f}"
    assert row(parsed, "ResNet (identity), weighted")["FER2013 ours"] == "40.00 (n=1)"
    assert row(parsed, "BReG-Net (H3), regular")["FER2013 ours"] == "55.00 (n=1)"


def test_table_iv_norm_columns(tmp_path):
    runs = [
        result("fer2013,bregnet,regular", seed=s, acc=0.6, norm_f1=f)
        for s, f in ((0, 0.5), (1, 0.7))
    ]
    section = "FER2013, BReG-Net (H3), regular loss (Table IV)"
    f1 = row(rows("4", runs, tmp_path, section=section), "F1-score")
    assert f1["Norm ours"].startswith("0.600 ± 0.141 (n=2)")
    assert f1["Norm paper"] == "0.68" and f1["Norm Δ"] == "-0.080"
    assert f1["Orig ours"] == "–" and f1["Orig paper"] == "0.67"


def _dim(v_rmse, a_rmse, ccc=0.5):
    return {"valence/rmse": v_rmse, "arousal/rmse": a_rmse, "valence/ccc": ccc, "arousal/ccc": ccc}


def test_dimensional_tables(tmp_path):
    runs = [
        result("aff_wild,bregnet", dim=_dim(0.30, 0.40, 0.5)),
        result("aff_wild,resnet", dim=_dim(0.35, 0.45, 0.2)),
    ]
    five = rows("5", runs, tmp_path)
    assert row(five, "Aff-Wild, BReG-Net (H3)")["valence RMSE Δ"] == f"{0.30 - 0.2661:+.4f}"
    assert row(five, "Aff-Wild, ResNet (identity)")["arousal RMSE ours"] == "0.4500 (n=1)"
    six, seven = rows("6", runs, tmp_path), rows("7", runs, tmp_path)
    assert row(six, "Aff-Wild CCC")["valence ours"] == "0.500 (n=1)"  # BReG-Net's run
    assert row(seven, "Aff-Wild CCC")["valence ours"] == "0.200 (n=1)"  # ResNet's run
    assert row(seven, "Aff-Wild CCC")["valence Δ"] == f"{0.2 - 0.38:+.3f}"


def test_timing_ratio(tmp_path):
    runs = [
        result("affectnet,bregnet,regular", acc=0.5, spe=90.0),
        result("affectnet,resnet,regular", acc=0.5, spe=100.0),
    ]
    ratio = row(rows("timing", runs, tmp_path), "AffectNet, BReG-Net / ResNet seconds")
    assert ratio["s / epoch ours"] == "0.900 (n=1)"
    assert ratio["s / epoch paper"] == f"{750.21 / 836.04:.3f}"


def _claim_row(parsed, claim, metric):
    (found,) = [r for r in parsed if r["Claim"] == claim and r["Metric"] == metric]
    return found


def test_claims_rows_match_scipy(tmp_path):
    h3 = [0.61, 0.58, 0.64, 0.60, 0.63]
    identity = [0.57, 0.57, 0.60, 0.59, 0.58]
    runs = [
        result("fer2013,bregnet,regular", seed=s, acc=a, workdir=tmp_path / f"h3_{s}")
        for s, a in enumerate(h3)
    ]
    runs += [
        result("fer2013,resnet,regular", seed=s, acc=a, workdir=tmp_path / f"id_{s}")
        for s, a in enumerate(identity)
    ]
    parsed = rows("claims", runs, tmp_path)
    every_run = report.read_markdown_tables(tables.render("claims", runs, tmp_path, "cpu"))
    assert [r["Run"] for r in every_run["Every run"]] == sorted(
        f"{a}_{s}" for a in ("h3", "id") for s in range(5)
    )
    assert row(every_run["Every run"], "h3_2")["Accuracy"] == "0.6400"
    r = _claim_row(parsed, "h3_vs_identity", "accuracy")
    diffs = 100 * (np.array(h3) - np.array(identity))
    low, high = scipy_stats.t.interval(0.95, 4, loc=diffs.mean(), scale=scipy_stats.sem(diffs))
    assert r["n"] == "5" and r["Verdict"] == "held"
    assert r["A − B [95% CI]"] == f"{diffs.mean():+.2f} [{low:+.2f}, {high:+.2f}]"
    assert r["A mean ± sd"] == f"{100 * np.mean(h3):.2f} ± {100 * np.std(h3, ddof=1):.2f}"
    assert (r["Paper A"], r["Paper B"], r["Paper A − B"]) == ("68.74", "66.48", "+2.26")
    # arms without runs say so; the H3 arm alone cannot make a pair
    assert _claim_row(parsed, "h3_vs_h1", "accuracy")["Verdict"] == "not run"


def test_claim_curves_take_the_paired_seeds_only(tmp_path, monkeypatch):
    runs = []
    for arg, seeds in (("fer2013,h3,weighted", (0, 1, 2)), ("fer2013,h3,regular", range(5))):
        for s in seeds:
            run = tmp_path / f"{arg}_{s}"
            run.mkdir()
            (run / "metrics.jsonl").write_text('{"step": 1, "epoch": 1, "val/loss": 1.0}\n')
            runs.append(result(arg, seed=s, acc=0.5, workdir=run))
    (tmp_path / "fer2013,h3,weighted_2" / "metrics.jsonl").unlink()  # a run without its log
    drawn = {}

    def draw(arms, path, keys, title):
        drawn[path.name] = arms
        return path

    monkeypatch.setattr(plots, "arm_curves_png", draw)
    text = claims.claim_figures(runs, tmp_path, "cpu", ["weighted_h3", "h3_vs_h1"])
    assert list(drawn) == ["claims_weighted_h3.png"]  # h3_vs_h1 has no H1 run: no pair
    (weighted, regular) = drawn["claims_weighted_h3.png"].values()
    assert [p.parent.name for p in weighted] == ["fer2013,h3,weighted_0", "fer2013,h3,weighted_1"]
    assert [p.parent.name for p in regular] == [f"fer2013,h3,regular_{s}" for s in (0, 1, 2)]
    assert text == "## Curves per arm\n\n![weighted_h3](claims_weighted_h3.png)\n\n"


def test_depth_claim_compares_seconds_lower_is_better(tmp_path):
    runs = []
    for s in range(3):
        runs.append(result("fer2013,bregnet,regular", seed=s, acc=0.6 + s / 100, spe=100 + s))
        runs.append(result("fer2013,resnet,regular,depth=27", seed=s, acc=0.5, spe=200 + 3 * s))
    parsed = rows("claims", runs, tmp_path)
    seconds = _claim_row(parsed, "depth", "seconds_per_epoch")
    assert seconds["Verdict"] == "held" and seconds["A − B [95% CI]"].startswith("-102.0 ")
    assert _claim_row(parsed, "depth", "accuracy")["Verdict"] == "held"
    # the plain ResNet arm (h3_vs_identity) does not take the deep runs
    assert _claim_row(parsed, "h3_vs_identity", "accuracy")["Verdict"] == "not run"


def test_fig6_panels_and_final_losses(tmp_path):
    runs = []
    for arch, scale_ in (("resnet", 1.0), ("bregnet", 0.8)):
        for seed in (0, 1):
            workdir = tmp_path / f"{arch}{seed}"
            workdir.mkdir()
            lines = []
            for epoch in (1, 2):
                mse = scale_ / epoch + seed / 100
                lines.append({"step": epoch * 4, "epoch": epoch, "train/va_mse": mse})
                lines.append({"step": epoch * 4, "epoch": epoch, "val/va_mse": 1.1 * mse})
            (workdir / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
            runs.append(
                result(
                    f"synthetic_va,{arch}",
                    seed=seed,
                    scale="test",
                    workdir=workdir,
                    dim=_dim(0.3, 0.3),
                )
            )
    text = tables.render("fig6", runs, tmp_path, "test")
    assert (tmp_path / "fig6.png").read_bytes()[:4] == b"\x89PNG"
    parsed = report.read_markdown_tables(text)[""]
    final = row(parsed, "synthetic faces, BReG-Net (H3)")
    assert (
        final["final train MSE"]
        == f"{np.mean([0.4, 0.41]):.4f} ± {np.std([0.4, 0.41], ddof=1):.4f} (n=2)"
    )
    assert row(parsed, "synthetic faces, ResNet (identity)")["final val MSE"].startswith(
        f"{1.1 * 0.505:.4f}"
    )


def test_header_settings_and_skipped_datasets():
    runs = [result("fer2013,bregnet,regular", seed=s, acc=0.5) for s in (0, 2)]
    text = tables.header("2", "cpu", runs, {"affectnet": "AffectNet is not prepared.\nmore"})
    assert "seeds [0, 2]" in text and "10 epochs" in text and "a test" in text
    assert "**affectnet skipped**, not prepared: AffectNet is not prepared." in text
    assert paper.PAPER in text


@pytest.mark.parametrize("table", experiment.TABLES)
def test_every_table_renders_without_runs(table, tmp_path):
    assert tables.render(table, [], tmp_path, "test")
