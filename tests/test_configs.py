"""Every config in configs/ smoke-runs on synthetic data with its own model."""

import json

import pytest
from conftest import ROOT, load_config, tiny

from bregflax import train

CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.py") if p.name != "__init__.py")


def test_there_are_configs():
    assert {
        "default.py",
        "demo.py",
        "fer2013.py",
        "affectnet.py",
        "affectnet_va.py",
        "aff_wild.py",
    } <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_smoke_runs_on_synthetic_data(name, tmp_path):
    config = tiny(load_config(f"configs/{name}"), max_steps=2, batch_size=8, eval_batch_size=16)
    config.data.synthetic.num_val = 16
    train.train_and_evaluate(config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
    assert any(config.best_metric in r for r in records)
