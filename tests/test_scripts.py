"""scripts/: the FER2013 CSV writer, the shipped-weights packager, the montage and the claims'
two-queue runner."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bregflax import configs, rundir
from bregflax.configs import experiment
from bregflax.evaluation import report, shipped
from bregflax.inference import predictor
from scripts import make_montage, package_weights, prepare_fer2013


def test_prepare_fer2013_writes_the_kaggle_csv(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", images=images[:2], labels=np.array([6, 0]))
    np.savez(tmp_path / "val.npz", images=images[2:], labels=np.array([3]))
    out = tmp_path / "manual" / "fer2013.csv"
    assert prepare_fer2013.write_csv(tmp_path, out) == {"Training": 2, "PublicTest": 1}
    rows = list(csv.DictReader(out.open()))
    assert [(r["emotion"], r["Usage"]) for r in rows] == [
        ("6", "Training"),
        ("0", "Training"),
        ("3", "PublicTest"),
    ]
    pixels = [np.array(r["pixels"].split(), np.uint8).reshape(48, 48) for r in rows]
    np.testing.assert_array_equal(np.stack(pixels), images)


def test_prepare_fer2013_rejects_other_arrays(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train.npz"):
        prepare_fer2013.write_csv(tmp_path, tmp_path / "out.csv")
    np.savez(tmp_path / "train.npz", images=np.zeros((1, 48, 48)), labels=np.zeros(1))
    with pytest.raises(ValueError, match="expected uint8"):
        prepare_fer2013.write_csv(tmp_path, tmp_path / "out.csv")


def test_training_time_sums_each_logged_stretch_at_its_rate(tmp_path, demo_config):
    demo_config.batch_size = 10
    rundir.write_config(tmp_path, demo_config)
    records = [
        {"step": 4, "train/images_per_sec": 0.02},  # steps 1-4: 40 images, 2000 s
        {"step": 4, "val/loss": 1.0},
        {"step": 10, "train/images_per_sec": 0.05},  # steps 5-10: 60 images, 1200 s
    ]
    lines = [json.dumps(r) for r in records] + ['{"step": 11, "train/ima']  # cut by a kill
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert shipped.training_time(tmp_path) == {"train_step_hours": 0.889, "steps": 10}


@pytest.mark.slow
def test_package_weights_ships_what_the_run_predicts(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(predictor, "PRETRAINED_DIR", tmp_path)
    package_weights.main(["--workdir", str(trained_run), "--name=tiny", "--command=demo"])
    meta = json.loads((tmp_path / "tiny" / "meta.json").read_text())
    assert meta["command"] == "demo" and meta["class_names"][0] == "Angry"
    assert "| Accuracy |" in (tmp_path / "tiny" / "val_table.md").read_text()
    shipped = predictor.Predictor.from_pretrained("tiny")
    trained = predictor.Predictor.from_workdir(trained_run)
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1), dtype=np.uint8)
    np.testing.assert_array_equal(
        shipped.predict_faces(faces)["probs"], trained.predict_faces(faces)["probs"]
    )
    assert meta["checkpoint_step"] == trained.info["step"]


@pytest.mark.slow
def test_make_montage_writes_a_png(tmp_path):
    out = tmp_path / "montage.png"
    make_montage.main(["--out", str(out), "--per-class", "2"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_claims_script_trains_every_claims_run_once_in_two_queues(tmp_path, repo_root):
    workdir = tmp_path / "w"
    env = {**os.environ, "SCALE": "test", "EPOCHS": "1", "PYTHON": sys.executable}
    script = repo_root / "scripts" / "claims_cpu.sh"
    done = subprocess.run(["bash", str(script), str(workdir), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finished = sorted(p.parent.name for p in (workdir / "test").glob("*/result.json"))
    args = {f"{arm},test,seed={s}" for c in experiment.CLAIMS for arm in c.arms("test")
            for s in range(c.seeds)}  # fmt: skip
    want = {experiment.run_name(configs.get(experiment.CLAIM_CONFIG, a)) for a in args}
    assert finished == sorted(want) and len(finished) == 25
    trained = {
        q: [line.split()[-1] for line in (workdir / f"queue_{q}.log").read_text().splitlines()
            if line.startswith("  train:")]
        for q in "AB"
    }  # fmt: skip
    assert sorted(trained["A"] + trained["B"]) == finished  # each run by one queue, once
    assert all("_h3_" in n or "_h1_" in n or "_h2_" in n for n in trained["A"])  # the A arms
    assert not any("BReGNet" in n and "_h3_" in n for n in trained["B"])
    # the last call (every run skipped) wrote every claim: the test scale's 2 seeds each
    parsed = report.read_markdown_tables((workdir / "claims.md").read_text())[""]
    n = {r["Claim"]: r["n"] for r in parsed if r.get("Metric") == "accuracy"}
    assert n == {c.name: "2" for c in experiment.CLAIMS}
