"""Every config in configs/ smoke-runs on synthetic data with its own model."""

import json

import pytest
from conftest import ROOT, load_config, tiny

from bregflax import models, train
from configs import experiment

NOT_CONFIGS = {"__init__.py", "experiment.py"}  # experiment.py builds the table configs
CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.py") if p.name not in NOT_CONFIGS)


def test_there_are_configs():
    assert {
        "default.py",
        "demo.py",
        "fer2013.py",
        "affectnet.py",
        "affectnet_va.py",
        "aff_wild.py",
    } <= set(CONFIGS)


# Table configs take a parameter string; their paper-scale models are covered by
# test_parameter_strings, and the smoke run uses the string's tiny ``test`` scale.
TABLES = sorted(n for n in CONFIGS if "experiment.build" in (ROOT / "configs" / n).read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_config_smoke_runs_on_synthetic_data(name, tmp_path):
    config = load_config(f"configs/{name}", "test" if name in TABLES else None)
    config = tiny(config, max_steps=2, batch_size=8, eval_batch_size=16)
    config.data.synthetic.num_val = 16
    train.train_and_evaluate(config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
    assert any(config.best_metric in r for r in records)


def test_table_configs_cover_the_paper():
    tables = {"table1.py", "table2.py", "table3.py", "table4.py", "table5.py", "fig5.py"}
    assert tables == set(TABLES)


@pytest.mark.parametrize(
    "file, arg, model, shortcut, weighted, source",
    [
        ("table1.py", "h1,weighted,affectnet", "BReGNet39", "h1", True, "affectnet"),
        ("table1.py", "weighted,h2,fer2013,cpu", "BReGNetSmall", "h2", True, "fer2013"),
        ("table2.py", "resnet,regular,fer2013", "ResNet110", "identity", False, "fer2013"),
        ("table2.py", "resnet,fer2013,cpu,seed=2", "ResNetSmall", "identity", False, "fer2013"),
        ("table3.py", "affectnet", "BReGNet39", "h3", True, "affectnet"),
        ("table4.py", "fer2013", "BReGNet39", "h3", False, "fer2013"),
        ("table5.py", "resnet,aff_wild", "ResNet110", "identity", False, "aff_wild"),
    ],
)
def test_parameter_strings(file, arg, model, shortcut, weighted, source):
    config = load_config(f"configs/{file}", arg)
    assert config.model.name == model
    assert config.model.shortcut == shortcut
    assert config.loss.weighted is weighted
    assert config.data.source == source
    assert config.seed == (2 if "seed=2" in arg else 0)


def test_cpu_scale_pair_differs_only_in_the_shortcut():
    def model_fields(arg):
        config = load_config("configs/table2.py", arg)
        m = dict(models.MODELS.get(config.model.name).keywords)
        m.pop("shortcut", None)
        return m, config.optim.to_dict(), config.num_epochs

    assert model_fields("bregnet,cpu") == model_fields("resnet,cpu")


def test_depth_and_run_names():
    config = load_config("configs/fig5.py", "fer2013,cpu,depth=21")
    assert tuple(config.model.stage_sizes) == (3, 3, 3)
    assert experiment.run_name(config) == "fer2013_BReGNetSmall_d21_h3_regular_seed0"
    base = load_config("configs/table2.py", "bregnet,regular,fer2013,cpu")
    assert experiment.run_name(base) == "fer2013_BReGNetSmall_h3_regular_seed0"
    same = load_config("configs/table1.py", "h3,regular,fer2013,cpu")
    assert same.to_dict() == base.to_dict()  # tables I and II share this run


@pytest.mark.parametrize("arg", ["h4", "seed", "lr=3", "depth=10", "bregnet,fer2013,cpu,depth=8"])
def test_bad_parameter_strings_raise(arg):
    with pytest.raises(ValueError):
        load_config("configs/fig5.py", arg)
